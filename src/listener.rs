//! Listeners: sockets, accept loops and per-connection dispatch.
//!
//! The control plane binds one `SO_REUSEPORT` socket per worker for each
//! listener ([`bind_sockets`]), with `IP_FREEBIND` so an address the node does
//! not hold yet (the VIP on a backup) binds anyway. Each worker's
//! [`accept_loop`] honours `max_connections` (connections beyond it wait: one
//! per worker accepted but unserved, the rest in the kernel backlog) and hands
//! each connection to the HTTP server ([`http`]) or the TCP relay ([`tcp`]) by
//! the listener's mode, after the TLS handshake ([`tls`]) when the listener
//! terminates TLS.
//! The listener's identity across reloads is its configured `bind`. A
//! connection looks its listener up once, at accept, and keeps that
//! generation's listener (mode, timeouts, TLS acceptor, HTTP/2 limits) for its
//! whole life: a reload applies to the next connection.

pub mod context;
pub mod h1;
pub mod http;
pub mod io;
pub mod ratelog;
pub mod tcp;
pub mod tls;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::types::ListenerMode;
use crate::listener::context::Worker;
use crate::snapshot::{Listener, ListenerState, Snapshot};

/// Binds `count` sockets for `addr` sharing the port with `SO_REUSEPORT`.
/// With port 0 the first socket picks the port and the others follow it.
pub fn bind_sockets(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut target = addr;
    for _ in 0..count.max(1) {
        let s = bind_one(target)?;
        target = s.local_addr()?;
        out.push(s);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv4() {
        socket.set_freebind(true)?;
    } else {
        socket.set_freebind_ipv6(true)?;
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Accepts connections for `bind` until `stop` flips or its sender drops.
pub async fn accept_loop(
    worker: Rc<Worker>,
    bind: SocketAddr,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_error_log: Option<tokio::time::Instant> = None;
    loop {
        // Accept first, then wait for a slot: a slot taken before `accept`
        // would sit reserved by a worker whose own SO_REUSEPORT queue is
        // empty while another worker's queue waits, so fewer than
        // `max_connections` would be served. At most one accepted connection
        // per worker waits here; the rest wait in the kernel backlog.
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // The one look-up of this connection's listener: it keeps
                // this generation's settings for its whole life.
                let Some(resolved) = Resolved::now(&worker, bind) else {
                    break;
                };
                // Biased: with a slot free, an accepted connection is always
                // served, even when the stop fired at the same moment (an
                // unbiased select dropped it half the time: a reset client).
                tokio::select! {
                    biased;
                    _ = resolved.listener.state.limit.acquire() => {}
                    _ = stop.changed() => break,
                }
                spawn_connection(&worker, resolved, stream, peer, &stop);
            }
            Err(e) => accept_failed(bind, &e, &mut last_error_log).await,
        }
    }
    drain_backlog(&worker, bind, listener, &stop);
}

/// What every accept loop (listeners and the admin API) does when `accept`
/// fails: log at most once per 5 s, then back off. Out of file descriptors and
/// similar errors repeat on the next accept, so retrying at once would spin.
pub async fn accept_failed(
    bind: SocketAddr,
    e: &std::io::Error,
    last_log: &mut Option<tokio::time::Instant>,
) {
    let now = tokio::time::Instant::now();
    if last_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(5)) {
        tracing::error!(%bind, error = %e, "accept failed");
        *last_log = Some(now);
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// An accepted connection's listener, looked up once at accept. HTTP
/// connections keep only `listener` (mode, timeouts, TLS acceptor, HTTP/2
/// limits); each request loads the snapshot again for its routes and
/// upstreams. TCP relays keep `snapshot` too, because the listener's upstream
/// index points into it.
struct Resolved {
    snapshot: Arc<Snapshot>,
    listener: Arc<Listener>,
}

impl Resolved {
    /// The listener bound at `bind` in the current snapshot; `None` when a
    /// reload removed it.
    fn now(worker: &Worker, bind: SocketAddr) -> Option<Self> {
        let snapshot = worker.snapshot.load();
        let listener = snapshot.listener(bind)?.clone();
        Some(Self { snapshot, listener })
    }
}

/// Counts an accepted connection (its slot is already taken) and serves it
/// on this thread.
fn spawn_connection(
    worker: &Rc<Worker>,
    resolved: Resolved,
    stream: TcpStream,
    peer: SocketAddr,
    stop: &watch::Receiver<bool>,
) {
    worker.conn_opened();
    connection(worker.clone(), resolved, stream, peer, stop.clone());
}

/// Serves the connections the kernel completed before the listener stopped:
/// closing the socket would reset them, and their clients were never refused.
/// They are answered once, with `Connection: close` (the stop already fired).
/// A listener that a reload removed has no configuration left to serve with:
/// its queue is dropped. Connections beyond `max_connections` are dropped too.
fn drain_backlog(
    worker: &Rc<Worker>,
    bind: SocketAddr,
    listener: TcpListener,
    stop: &watch::Receiver<bool>,
) {
    let Ok(std_listener) = listener.into_std() else {
        return;
    };
    // Still non-blocking: accept until the queue is empty.
    while let Ok((stream, peer)) = std_listener.accept() {
        let Some(resolved) = Resolved::now(worker, bind) else {
            return;
        };
        let limit = &resolved.listener.state.limit;
        if limit.acquire().now_or_never().is_none() {
            continue;
        }
        let Ok(stream) = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        else {
            limit.release();
            continue;
        };
        spawn_connection(worker, resolved, stream, peer, stop);
    }
}

/// Releases the connection's slot and counts it closed, however it ends.
struct ConnGuard {
    state: Arc<ListenerState>,
    worker: Rc<Worker>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.metrics.connections_active.dec();
        self.state.limit.release();
        self.worker.conn_finished();
    }
}

/// Counts the connection open and spawns its task. The task holds its
/// future for the connection's whole life, so every idle connection costs
/// that future's size: each kind of connection gets a future of its own that
/// owns what it needs (the guard included), with the TLS and TCP paths boxed
/// and the plain HTTP one small until bytes arrive.
fn connection(
    worker: Rc<Worker>,
    resolved: Resolved,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let Resolved { snapshot, listener } = resolved;
    let state = listener.state.clone();
    state.metrics.connections_total.inc();
    state.metrics.connections_active.inc();
    let guard = ConnGuard {
        state,
        worker: worker.clone(),
    };
    let started = tokio::time::Instant::now();
    let _ = stream.set_nodelay(true);
    // An HTTP connection does not hold the generation: idle keep-alive
    // connections would keep every old snapshot alive.
    match (listener.tls.clone(), listener.config.mode) {
        (None, ListenerMode::Http) => {
            tokio::task::spawn_local(plain_http(
                worker, listener, stream, peer, started, stop, guard,
            ));
        }
        (None, ListenerMode::Tcp) => {
            tokio::task::spawn_local(Box::pin(async move {
                let _guard = guard;
                tcp::relay(snapshot, listener, stream, peer).await;
            }));
        }
        (Some(acceptor), mode) => {
            let tls = TlsStart {
                acceptor,
                snapshot: (mode == ListenerMode::Tcp).then_some(snapshot),
                started,
                deadline: started + listener.config.timeouts.client_header,
            };
            tokio::task::spawn_local(Box::pin(async move {
                let _guard = guard;
                serve_tls(worker, listener, stream, peer, tls, stop).await;
            }));
        }
    }
}

/// A plain-text HTTP connection: until its first byte it holds only this
/// small wait; the HTTP state is allocated (boxed) once there is work.
async fn plain_http(
    worker: Rc<Worker>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    started: tokio::time::Instant,
    stop: watch::Receiver<bool>,
    _guard: ConnGuard,
) {
    let deadline = started + listener.config.timeouts.client_header;
    match http::first_bytes(&worker, &stream, deadline, &stop).await {
        http::First::Bytes(first) => {
            http::serve(worker, listener, stream, peer, first, started, stop).await;
        }
        http::First::Gone => {}
        http::First::TimedOut => Box::pin(http::answer_timeout(&listener, peer, stream)).await,
    }
}

/// What a TLS connection starts from: the listener's acceptor, the
/// generation a TCP relay keeps (`None` for HTTP), and the accept time; the
/// handshake and the first request head share the `client_header` budget,
/// which ends at `deadline`.
struct TlsStart {
    acceptor: tokio_rustls::TlsAcceptor,
    snapshot: Option<Arc<Snapshot>>,
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
}

/// The TLS handshake, then the listener's protocol over the TLS stream.
/// Boxed by the caller, like the TCP relay: only the plain HTTP/1 state
/// machine stays inline in every connection's task, which is what most idle
/// keep-alive connections hold.
async fn serve_tls(
    worker: Rc<Worker>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: TlsStart,
    stop: watch::Receiver<bool>,
) {
    let Some(tls_stream) = tls::handshake(&tls.acceptor, stream, tls.deadline).await else {
        return;
    };
    match tls.snapshot {
        None => {
            let is_h2 = tls::negotiated_h2(&tls_stream);
            let version = tls::version_name(&tls_stream);
            http::serve_tls(
                worker,
                listener,
                tls_stream,
                peer,
                is_h2,
                version,
                tls.started,
                stop,
            )
            .await;
        }
        Some(snapshot) => tcp::relay(snapshot, listener, tls_stream, peer).await,
    }
}

#[cfg(test)]
mod tests;
