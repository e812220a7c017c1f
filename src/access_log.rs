//! The access log: one line per HTTP request and per TCP connection, written
//! without ever making a worker wait.
//!
//! Owns the path from a finished request to the destination:
//! - [`record`]: what a line says (borrowed data) and the facts a request
//!   gathers on its way ([`record::RequestFacts`]);
//! - [`format`]: JSON or text (logfmt) bytes, pure;
//! - `batch`: each worker formats into its own reused buffer and hands
//!   batches over through a bounded channel, dropping (and counting in
//!   `tandem_access_log_dropped_total`) what does not fit;
//! - `writer` and `sink`: one thread that owns the file (or stdout/stderr),
//!   reopens it on SIGUSR1 and switches it on reload.
//!
//! Does not decide *what* is logged about a request: the listener code fills
//! the records (`listener/http/body.rs`, `listener/tcp.rs`). Whether a line is
//! written at all, and in which format, follows the request's own snapshot;
//! without `access_log` no record is built and no thread runs. The writer
//! thread starts with the first [`configure`] that names a destination.
//!
//! Tested by the unit tests of `format` and `record`, and end to end by
//! `tests/access_log.rs` (every field against what client and server saw,
//! SIGUSR1 after a rename, a FIFO nobody reads).

pub mod format;
pub mod record;

mod batch;
mod sink;
mod writer;

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::config::types::{AccessLog, AccessLogFormat};
use record::{HttpRecord, TcpRecord};

pub use batch::flusher;

/// The writer thread's handles, set by the first [`configure`] with a
/// destination and kept for the process's life.
struct Shared {
    tx: SyncSender<writer::Msg>,
    control: Arc<writer::Control>,
    /// Signalled when the writer thread ends; taken by [`shutdown`].
    done: Mutex<Option<Receiver<()>>>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn sender() -> Option<&'static SyncSender<writer::Msg>> {
    SHARED.get().map(|s| &s.tx)
}

/// Points the log at `config`'s destination (control plane: at start and
/// after every successful reload). A changed destination is opened by the
/// writer thread; the same one is left open as it is.
pub fn configure(config: Option<&AccessLog>) -> std::io::Result<()> {
    let target = config.map(|c| c.target.clone());
    let shared = match SHARED.get() {
        Some(s) => s,
        None if target.is_none() => return Ok(()),
        None => start()?,
    };
    shared.control.set_target(target);
    let _ = shared.tx.try_send(writer::Msg::Wake);
    Ok(())
}

fn start() -> std::io::Result<&'static Shared> {
    let (tx, rx) = mpsc::sync_channel(writer::QUEUE);
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let control = Arc::new(writer::Control::default());
    let c = control.clone();
    std::thread::Builder::new()
        .name("tandem-access-log".to_string())
        .spawn(move || writer::run(rx, c, done_tx))?;
    Ok(SHARED.get_or_init(|| Shared {
        tx,
        control,
        done: Mutex::new(Some(done_rx)),
    }))
}

/// SIGUSR1: the writer opens its file again (after logrotate renamed it).
pub fn reopen() {
    if let Some(s) = SHARED.get() {
        s.control.reopen();
        let _ = s.tx.try_send(writer::Msg::Wake);
    }
}

/// Writes what the workers handed over, for at most `within` (a destination
/// that blocks must not hold the exit), and stops the writer. Call after the
/// workers have stopped.
pub fn shutdown(within: Duration) {
    let Some(s) = SHARED.get() else {
        return;
    };
    s.control.close();
    let _ = s.tx.try_send(writer::Msg::Wake);
    let done = s.done.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(done) = done {
        if done.recv_timeout(within).is_err() {
            tracing::warn!("access log: the destination did not take the last lines in time");
        }
    }
}

/// Logs one HTTP request (on a worker thread).
pub fn http(format: AccessLogFormat, record: &HttpRecord<'_>) {
    batch::append(|buf| format::http(format, record, buf));
}

/// Logs one TCP connection (on a worker thread).
pub fn tcp(format: AccessLogFormat, record: &TcpRecord<'_>) {
    batch::append(|buf| format::tcp(format, record, buf));
}

/// Sends this worker's pending lines now (a worker that stops).
pub fn flush_local() {
    batch::flush();
}

/// The failover tier of `server` in `upstream`, for the log (0 if it is not
/// one of its servers).
pub fn server_tier(
    upstream: &crate::upstream::Upstream,
    server: &std::sync::Arc<crate::upstream::ServerState>,
) -> u32 {
    upstream
        .servers
        .iter()
        .position(|s| std::sync::Arc::ptr_eq(s, server))
        .and_then(|i| upstream.config.servers.get(i))
        .map_or(0, crate::upstream::state::tier)
}
