//! The destination the writer thread writes to: a file opened for appending,
//! stdout or stderr.
//!
//! Only the writer thread opens and writes a [`Sink`], so a destination that
//! blocks (a full pipe, a FIFO without a reader, a slow disk) blocks that
//! thread alone. Opening a file creates it if needed; reopening (SIGUSR1)
//! opens the path again, so after a rename by logrotate lines go to a new file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use crate::config::types::LogTarget;

pub enum Sink {
    /// Nothing configured, or the file could not be opened.
    Closed,
    File(File),
    Stdout,
    Stderr,
}

impl Sink {
    pub fn open(target: &LogTarget) -> io::Result<Sink> {
        Ok(match target {
            LogTarget::Stdout => Sink::Stdout,
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::File(path) => {
                Sink::File(OpenOptions::new().create(true).append(true).open(path)?)
            }
        })
    }

    /// Writes a batch of whole lines.
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Closed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the access log destination is not open",
            )),
            Sink::File(f) => f.write_all(buf),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::Stderr => io::stderr().lock().write_all(buf),
        }
    }
}
