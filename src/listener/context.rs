//! The per-worker context: what every task of one worker thread shares.
//!
//! Owns the [`Worker`] struct handed (as `Rc<Worker>`) to the accept loops and
//! every connection of one worker: its index, the snapshot handle, its server
//! connection [`Pool`], and the counters of open client connections and running
//! accept loops that shutdown waits on. Does not own the thread, the runtime or
//! the control-plane commands (`crate::worker`), nor accepting and serving
//! (`listener`). It sits below both, so `worker` -> `listener` -> `context` has
//! no import circle.
//!
//! Invariants: one `Worker` per worker thread, never sent to another thread
//! (`Cell` counters, no locks); every `conn_opened` is paired with one
//! `conn_finished`, every `loop_started` with one `loop_finished`, and each
//! finish wakes [`Worker::drained`]. Tested end to end by
//! `tests/lifecycle/drain.rs`.

use std::cell::Cell;

use tokio::sync::Notify;

use crate::bufpool::BufPool;
use crate::snapshot::SnapshotHandle;
use crate::upstream::pool::Pool;

/// Per-thread context shared by every task of one worker.
pub struct Worker {
    pub index: usize,
    pub snapshot: SnapshotHandle,
    pub pool: Pool,
    /// Read buffers of this worker's HTTP/1.1 client connections.
    pub bufs: BufPool,
    /// Client connections open on this worker.
    conns: Cell<usize>,
    /// Accept loops still running. A stopped loop hands the connections the
    /// kernel already queued over before it ends, so the drain must wait for
    /// it too, not only for `conns` to reach zero.
    loops: Cell<usize>,
    /// Signalled whenever a connection or an accept loop ends.
    conn_closed: Notify,
}

impl Worker {
    /// The context of worker `index`, with no connections or loops yet.
    pub fn new(index: usize, snapshot: SnapshotHandle) -> Self {
        Self {
            index,
            snapshot,
            pool: Pool::default(),
            bufs: BufPool::default(),
            conns: Cell::new(0),
            loops: Cell::new(0),
            conn_closed: Notify::new(),
        }
    }

    pub fn conn_opened(&self) {
        self.conns.set(self.conns.get() + 1);
    }

    pub fn conn_finished(&self) {
        self.conns.set(self.conns.get().saturating_sub(1));
        self.conn_closed.notify_waiters();
    }

    /// Client connections open on this worker now.
    pub fn open_conns(&self) -> usize {
        self.conns.get()
    }

    pub fn loop_started(&self) {
        self.loops.set(self.loops.get() + 1);
    }

    pub fn loop_finished(&self) {
        self.loops.set(self.loops.get().saturating_sub(1));
        self.conn_closed.notify_waiters();
    }

    /// Returns once no connection is open and no accept loop runs.
    pub async fn drained(&self) {
        loop {
            let notified = self.conn_closed.notified();
            if self.conns.get() == 0 && self.loops.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}
