//! The writer thread: the only place access log lines meet the destination.
//!
//! Workers hand it batches of formatted lines through a bounded channel
//! ([`Msg::Batch`]) and never wait for it: when the channel is full the
//! worker drops the batch and counts its lines. The control plane changes
//! the destination or asks for a reopen through [`Control`] (a flag and a
//! small record, read between batches), followed by a [`Msg::Wake`] that is
//! itself dropped when the channel is full (the writer then sees the change
//! after its current batch). Emptied buffers go back to the worker that sent
//! them, so steady logging allocates nothing.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sink::Sink;
use crate::config::types::LogTarget;

/// Batches waiting for the writer, at most (each up to a few tens of KiB).
pub const QUEUE: usize = 64;

pub enum Msg {
    /// Whole lines; `home` takes the emptied buffer back.
    Batch {
        buf: Vec<u8>,
        lines: u64,
        home: SyncSender<Vec<u8>>,
    },
    /// Look at [`Control`].
    Wake,
}

/// Requests from the control plane, applied by the writer between batches.
#[derive(Default)]
pub struct Control {
    dirty: AtomicBool,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The destination wanted now (`None`: logging is off).
    target: Option<LogTarget>,
    /// Set by SIGUSR1: open the same path again.
    reopen: bool,
    /// Write what is queued, then end the thread.
    closing: bool,
}

impl Control {
    pub fn set_target(&self, target: Option<LogTarget>) {
        self.update(|p| p.target = target);
    }

    pub fn reopen(&self) {
        self.update(|p| p.reopen = true);
    }

    pub fn close(&self) {
        self.update(|p| p.closing = true);
    }

    fn update(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.dirty.store(true, Ordering::Release);
    }

    /// What changed since the last call, if anything.
    fn take(&self) -> Option<(Option<LogTarget>, bool, bool)> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let reopen = std::mem::take(&mut p.reopen);
        Some((p.target.clone(), reopen, p.closing))
    }
}

/// The writer's state: what it writes to and why it may not.
struct Writer {
    target: Option<LogTarget>,
    sink: Sink,
    last_error_log: Option<Instant>,
}

/// Runs the writer until the control plane closes it; `done` is signalled
/// at the end.
pub fn run(rx: Receiver<Msg>, control: Arc<Control>, done: SyncSender<()>) {
    let mut w = Writer {
        target: None,
        sink: Sink::Closed,
        last_error_log: None,
    };
    let mut closing = false;
    while !closing {
        let msg = rx.recv();
        if let Some((target, reopen, close)) = control.take() {
            w.apply(target, reopen);
            closing = close;
        }
        match msg {
            Ok(Msg::Batch { buf, lines, home }) => w.write(buf, lines, &home),
            Ok(Msg::Wake) => {}
            Err(_) => break,
        }
    }
    // What the workers queued before the close.
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Batch { buf, lines, home } = msg {
            w.write(buf, lines, &home);
        }
    }
    let _ = done.send(());
}

impl Writer {
    fn apply(&mut self, target: Option<LogTarget>, reopen: bool) {
        if target == self.target && !reopen {
            return;
        }
        let Some(t) = &target else {
            self.sink = Sink::Closed;
            self.target = None;
            return;
        };
        match Sink::open(t) {
            Ok(s) => {
                self.sink = s;
                self.target = target;
            }
            Err(e) => {
                // Keep writing where we could before (nothing is lost there);
                // the next reload or SIGUSR1 tries the new destination again.
                let previous = match &self.sink {
                    Sink::Closed => "lines are dropped until it can be opened",
                    _ => "lines keep going to the previous destination",
                };
                tracing::error!(path = %describe(t), error = %e,
                    "access log: cannot open the destination; {previous}");
            }
        }
    }

    fn write(&mut self, mut buf: Vec<u8>, lines: u64, home: &SyncSender<Vec<u8>>) {
        if let Err(e) = self.sink.write_all(&buf) {
            crate::metrics::global().access_log_dropped.inc_by(lines);
            // Without a target the log was turned off by a reload: these are
            // the last lines of requests that began before it, not an error.
            if self.target.is_some() {
                self.log_error(&e);
            }
        }
        buf.clear();
        // The worker keeps a few spare buffers; more are freed here.
        let _ = home.try_send(buf);
    }

    /// Write errors are logged at most every 10 s (a full disk fails every
    /// batch); the dropped counter has the full count.
    fn log_error(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.last_error_log = Some(now);
            let path = self.target.as_ref().map_or_else(String::new, describe);
            tracing::error!(%path, error = %e, "access log: write failed; lines are dropped");
        }
    }
}

fn describe(t: &LogTarget) -> String {
    match t {
        LogTarget::File(p) => p.display().to_string(),
        LogTarget::Stdout => "stdout".to_string(),
        LogTarget::Stderr => "stderr".to_string(),
    }
}
