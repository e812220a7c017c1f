//! The per-server cap (`max_requests_per_server`) and the upstream's wait queue.
//!
//! Owns: the FIFO of requests waiting for a capped server, the hand-off of a freed
//! slot to the oldest waiter, and the queue's metrics. Does not own the in-flight
//! count itself (an atomic in [`ServerState`], reserved by compare-and-swap in
//! `Upstream::select`) nor which server a request gets (the balancer).
//!
//! One [`Waiters`] per upstream name, shared by every worker thread and kept across
//! reloads. The request path without a cap never touches it; with a cap, releasing
//! a slot reads one atomic (`len`) and takes the lock only when someone waits.
//!
//! Invariants:
//! - A freed slot is never lost: the releaser either hands it (the in-flight count
//!   unchanged) to the oldest waiter still listening, or decrements the count and
//!   then, if a waiter appeared meanwhile, reserves a slot for it under the lock.
//!   An enqueuer raises `len` before its last try under the same lock, so with
//!   sequentially consistent operations one of the two always sees the other.
//! - A waiter is removed when it is dropped (its client went away, it timed out),
//!   and a slot already handed to it is released again, so nobody waits past its
//!   client and no slot leaks.
//!
//! Tested by the unit tests below (hand-off order, cancellation, no leak) and the
//! queue tests in `tests/queue.rs` against a slow Express server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::ServerState;
use crate::metrics::QueueMetrics;

/// One upstream's waiting requests.
pub struct Waiters {
    /// Entries in `queue`; read without the lock on every release.
    len: AtomicUsize,
    /// `max_requests_per_server` of the latest snapshot (0 = off).
    cap: AtomicU64,
    next_id: AtomicU64,
    queue: Mutex<VecDeque<Entry>>,
    pub metrics: QueueMetrics,
}

struct Entry {
    id: u64,
    tx: oneshot::Sender<Arc<ServerState>>,
}

/// Why a request left the queue without a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `queue.size` requests were already waiting.
    Full,
    /// `queue.timeout` passed.
    Timeout,
}

impl Waiters {
    pub fn new(upstream: &str) -> Self {
        Self {
            len: AtomicUsize::new(0),
            cap: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            queue: Mutex::new(VecDeque::new()),
            metrics: QueueMetrics::new(upstream),
        }
    }

    pub fn cap(&self) -> u64 {
        self.cap.load(Ordering::Relaxed)
    }

    pub fn set_cap(&self, cap: u32) {
        self.cap.store(u64::from(cap), Ordering::Relaxed);
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        // A panic while holding this lock leaves a consistent queue (every
        // mutation is a single push or pop), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the queue unless `size` are waiting; `try_now` runs under the lock
    /// after `len` was raised and only when nobody is ahead, so a slot freed since
    /// the caller's last try is not missed. `Ok(Err(t))`: `try_now` succeeded.
    pub fn enqueue<T>(
        self: &Arc<Self>,
        size: usize,
        try_now: impl FnOnce() -> Option<T>,
    ) -> Result<Result<Waiter, T>, Rejected> {
        let mut q = self.lock();
        if q.len() >= size {
            self.metrics.rejected_full.inc();
            return Err(Rejected::Full);
        }
        self.len.fetch_add(1, Ordering::SeqCst);
        if q.is_empty() {
            if let Some(t) = try_now() {
                self.len.fetch_sub(1, Ordering::SeqCst);
                return Ok(Err(t));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        q.push_back(Entry { id, tx });
        self.metrics.length.set(gauge(q.len()));
        Ok(Ok(Waiter {
            waiters: self.clone(),
            id,
            rx: Some(rx),
        }))
    }

    /// Gives `server`'s slot (still counted) to the oldest waiter still listening.
    /// False when nobody took it: the caller still owns the slot.
    fn hand_off(&self, server: &Arc<ServerState>) -> bool {
        let mut q = self.lock();
        while let Some(e) = q.pop_front() {
            self.len.fetch_sub(1, Ordering::SeqCst);
            self.metrics.length.set(gauge(q.len()));
            if e.tx.send(server.clone()).is_ok() {
                return true;
            }
        }
        false
    }

    /// After a decrement: a waiter that joined meanwhile gets a slot on `server`
    /// if one is free.
    fn dispatch(&self, server: &Arc<ServerState>) {
        let mut q = self.lock();
        while !q.is_empty() {
            if !server.try_reserve(self.cap()) {
                return;
            }
            let mut given = false;
            while let Some(e) = q.pop_front() {
                self.len.fetch_sub(1, Ordering::SeqCst);
                if e.tx.send(server.clone()).is_ok() {
                    given = true;
                    break;
                }
            }
            self.metrics.length.set(gauge(q.len()));
            if !given {
                // The queue emptied under us: the reservation goes back quietly
                // (the queue is empty and we hold its lock, so no one waits).
                server.unreserve();
            }
        }
    }

    /// Takes `id` out of the queue; false when it was popped already.
    fn remove(&self, id: u64) -> bool {
        let mut q = self.lock();
        let Some(pos) = q.iter().position(|e| e.id == id) else {
            return false;
        };
        q.remove(pos);
        self.len.fetch_sub(1, Ordering::SeqCst);
        self.metrics.length.set(gauge(q.len()));
        true
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Ends one in-flight request on `server`: its slot goes to the oldest waiter,
/// or back to the server. The only way a counted request ends.
pub(super) fn release(server: &Arc<ServerState>) {
    let w = server.waiters();
    if !w.is_empty() && w.hand_off(server) {
        return;
    }
    server.unreserve();
    if !w.is_empty() {
        w.dispatch(server);
    }
}

/// A request's place in the queue. Dropping it leaves the queue; a slot that was
/// handed to it already is released again.
pub struct Waiter {
    waiters: Arc<Waiters>,
    id: u64,
    rx: Option<oneshot::Receiver<Arc<ServerState>>>,
}

impl Waiter {
    /// Waits for a slot for at most `timeout`; the server comes with its slot
    /// counted (the caller owns it: wrap it in an [`super::state::ActiveGuard`]).
    pub async fn wait(
        mut self,
        timeout: std::time::Duration,
    ) -> Result<Arc<ServerState>, Rejected> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(Rejected::Timeout);
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(server)) => {
                self.rx = None;
                Ok(server)
            }
            // The sender is only dropped unsent when the queue itself goes away.
            Ok(Err(_)) | Err(_) => {
                self.waiters.metrics.rejected_timeout.inc();
                Err(Rejected::Timeout)
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        if self.waiters.remove(self.id) {
            return;
        }
        // Popped already: the hand-off sent (under the lock, so it is complete
        // now) a slot that nobody will use. Give it on.
        rx.close();
        if let Ok(server) = rx.try_recv() {
            release(&server);
        }
    }
}

#[cfg(test)]
mod tests;
