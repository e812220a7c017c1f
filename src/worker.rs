//! Worker threads: one current-thread tokio runtime per core.
//!
//! Each worker owns, on its own thread and without locks: one `SO_REUSEPORT`
//! socket per listener (the kernel spreads connections over them), the client
//! connections it accepted, and a [`Pool`] of server connections. Nothing it
//! does on the request path wakes another thread. The control plane talks to it
//! through a [`WorkerHandle`]: start or stop a listener, shut down.
//!
//! Shutdown: stop every accept loop, ask connections to finish (idle keep-alive
//! connections close, in-flight requests complete), then wait until every
//! accept loop has ended (each serves what the kernel had already queued, so
//! no accepted connection is reset) and the last connection is gone, or the
//! deadline passes.
//!
//! Tested end to end by `tests/lifecycle/drain.rs`.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::snapshot::SnapshotHandle;
use crate::upstream::pool::Pool;

/// Per-thread context shared by every task of one worker.
pub struct Worker {
    pub index: usize,
    pub snapshot: SnapshotHandle,
    pub pool: Pool,
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
    pub fn conn_opened(&self) {
        self.conns.set(self.conns.get() + 1);
    }

    pub fn conn_finished(&self) {
        self.conns.set(self.conns.get().saturating_sub(1));
        self.conn_closed.notify_waiters();
    }

    fn loop_finished(&self) {
        self.loops.set(self.loops.get().saturating_sub(1));
        self.conn_closed.notify_waiters();
    }

    async fn drained(&self) {
        loop {
            let notified = self.conn_closed.notified();
            if self.conns.get() == 0 && self.loops.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Control-plane commands to a worker.
pub enum Command {
    /// Start accepting on this worker's socket for `bind` (the config key).
    Listen {
        bind: SocketAddr,
        socket: std::net::TcpListener,
    },
    /// Stop accepting for `bind`; its connections drain.
    Unlisten { bind: SocketAddr },
    /// Stop everything and exit once drained or at `deadline`.
    Shutdown { deadline: Instant },
}

/// The control plane's side of one worker.
pub struct WorkerHandle {
    tx: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_err() {
            tracing::error!("worker thread is gone");
        }
    }

    /// Waits for the thread to exit.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("worker thread panicked");
            }
        }
    }
}

/// Starts worker thread `index`.
pub fn spawn(index: usize, snapshot: SnapshotHandle) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name(format!("tandem-worker-{index}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "worker runtime failed to start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(index, snapshot, rx));
        })?;
    Ok(WorkerHandle {
        tx,
        thread: Some(thread),
    })
}

async fn run(index: usize, snapshot: SnapshotHandle, mut rx: mpsc::UnboundedReceiver<Command>) {
    let worker = Rc::new(Worker {
        index,
        snapshot,
        pool: Pool::default(),
        conns: Cell::new(0),
        loops: Cell::new(0),
        conn_closed: Notify::new(),
    });
    let sweeper = {
        let w = worker.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                w.pool.sweep();
            }
        })
    };
    // Parked until this worker writes an access log line.
    let log_flusher = tokio::task::spawn_local(crate::access_log::flusher());
    let mut listeners: HashMap<SocketAddr, watch::Sender<bool>> = HashMap::new();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Listen { bind, socket } => match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => {
                    let (stop_tx, stop_rx) = watch::channel(false);
                    worker.loops.set(worker.loops.get() + 1);
                    let w = worker.clone();
                    tokio::task::spawn_local(async move {
                        crate::listener::accept_loop(w.clone(), bind, l, stop_rx).await;
                        w.loop_finished();
                    });
                    if let Some(old) = listeners.insert(bind, stop_tx) {
                        let _ = old.send(true);
                    }
                }
                Err(e) => tracing::error!(%bind, error = %e, "listener socket unusable"),
            },
            Command::Unlisten { bind } => {
                if let Some(stop) = listeners.remove(&bind) {
                    let _ = stop.send(true);
                }
            }
            Command::Shutdown { deadline } => {
                for stop in listeners.values() {
                    let _ = stop.send(true);
                }
                if tokio::time::timeout_at(deadline, worker.drained())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        worker = index,
                        open = worker.conns.get(),
                        "shutdown timeout: closing connections still open"
                    );
                }
                break;
            }
        }
    }
    sweeper.abort();
    log_flusher.abort();
    crate::access_log::flush_local();
}
