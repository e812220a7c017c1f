//! The worker side: lines are formatted into this thread's buffer and handed
//! to the writer in batches.
//!
//! A worker never waits for the writer. A batch goes out when it reaches
//! [`SEND_AT`] bytes, or [`FLUSH_AFTER`] after its first line (the worker's
//! [`flusher`] task, woken only when a batch starts, so an idle worker or one
//! without an access log does no work at all). When the writer's queue is
//! full the batch is dropped and its lines counted in
//! `tandem_access_log_dropped_total`; the buffer is kept for the next lines.
//! Buffers come back from the writer through this thread's `home` channel.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::Notify;

use super::writer::Msg;

/// A batch is sent once it holds this many bytes (about 80 JSON lines).
pub const SEND_AT: usize = 32 * 1024;
/// Longest time a line waits in a worker's buffer.
pub const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Spare buffers a worker keeps.
const SPARE: usize = 4;

struct Local {
    buf: Vec<u8>,
    lines: u64,
    /// A flush is due (the flusher was woken for the current batch).
    scheduled: bool,
    wake: Rc<Notify>,
    home_tx: SyncSender<Vec<u8>>,
    home_rx: Receiver<Vec<u8>>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::new());
}

impl Local {
    fn new() -> Self {
        let (home_tx, home_rx) = mpsc::sync_channel(SPARE);
        Self {
            buf: Vec::new(),
            lines: 0,
            scheduled: false,
            wake: Rc::new(Notify::new()),
            home_tx,
            home_rx,
        }
    }

    fn send(&mut self) {
        self.scheduled = false;
        if self.lines == 0 {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        let Some(tx) = super::sender() else {
            self.drop_lines(lines);
            return;
        };
        let batch = Msg::Batch {
            buf: std::mem::take(&mut self.buf),
            lines,
            home: self.home_tx.clone(),
        };
        match tx.try_send(batch) {
            Ok(()) => {
                self.buf = self
                    .home_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(SEND_AT + SEND_AT / 4));
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                if let Msg::Batch { buf, .. } = m {
                    self.buf = buf;
                }
                self.drop_lines(lines);
            }
        }
    }

    fn drop_lines(&mut self, lines: u64) {
        self.buf.clear();
        crate::metrics::global().access_log_dropped.inc_by(lines);
    }
}

impl Drop for Local {
    /// A worker thread that ends hands over what it still holds.
    fn drop(&mut self) {
        self.send();
    }
}

/// Appends one line written by `write` to this thread's batch.
pub fn append(write: impl FnOnce(&mut Vec<u8>)) {
    let _ = LOCAL.try_with(|cell| {
        // Never re-entered (`write` only formats), so the borrow is free;
        // should it not be, the line is skipped rather than panicking.
        let Ok(mut l) = cell.try_borrow_mut() else {
            return;
        };
        write(&mut l.buf);
        l.lines += 1;
        if l.buf.len() >= SEND_AT {
            l.send();
        } else if !l.scheduled {
            l.scheduled = true;
            l.wake.notify_one();
        }
    });
}

/// Sends this thread's batch now (a worker that stops).
pub fn flush() {
    let _ = LOCAL.try_with(|cell| {
        if let Ok(mut l) = cell.try_borrow_mut() {
            l.send();
        }
    });
}

/// Runs on each worker: sends a started batch [`FLUSH_AFTER`] after its
/// first line. Parked (no timer, no wake-up) while no line is written.
pub async fn flusher() {
    let wake = LOCAL.try_with(|cell| cell.try_borrow().ok().map(|l| l.wake.clone()));
    let Ok(Some(wake)) = wake else {
        return;
    };
    loop {
        wake.notified().await;
        tokio::time::sleep(FLUSH_AFTER).await;
        flush();
    }
}
