//! The L4 relay: bytes both ways between a client and one server.
//!
//! The snapshot is loaded once at accept and held for the connection. A server
//! that refuses (or times out on connect) is recorded as a breaker failure and
//! the next one is tried before the client sees a byte; with no server
//! available the client connection is closed at once. Half-close is honoured
//! (EOF from one side shuts down the write side of the other, the other
//! direction keeps flowing), and `client_idle` without a byte either way ends
//! the connection.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::upstream::{log_breaker_transition, Tried};
use crate::worker::Worker;

/// Buffer size per direction of a relay.
const RELAY_BUF: usize = 64 * 1024;

/// Relays one accepted connection.(plain TCP, or the decrypted side of TLS).
pub async fn relay<C>(worker: Rc<Worker>, bind: SocketAddr, client: C, peer: SocketAddr)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let snapshot = worker.snapshot.load();
    let Some(listener) = snapshot.listener(bind) else {
        return;
    };
    let idle = listener.config.timeouts.client_idle;
    let Some(upstream) = snapshot.upstreams.get(listener.default_upstream) else {
        return;
    };
    let t = upstream.config.timeouts;
    let mut tried = Tried::default();
    let mut server_conn = None;
    for attempt in 0..=upstream.config.retries {
        // The first attempt may wait in the queue (max_requests_per_server):
        // a relayed connection is one request in flight for its whole life.
        let picked = if attempt == 0 {
            upstream.acquire(None).await.ok()
        } else {
            upstream.select(tried, None)
        };
        let Some(sel) = picked else {
            break;
        };
        if attempt > 0 {
            upstream.metrics.retries.inc();
        }
        tried.insert(sel.index);
        let host = upstream.host(sel.index);
        let connect = crate::upstream::tls::connect(
            sel.server.connect_order(),
            host,
            upstream.tls(),
            t.connect,
        );
        let result = connect.await;
        let now = Instant::now();
        match result {
            Ok(s) => {
                if let Some(tr) = sel.server.breaker.record_success(now) {
                    log_breaker_transition(&sel.server, &tr);
                }
                server_conn = Some((s, sel));
                break;
            }
            Err(f) => {
                sel.server.metrics.error(f.kind());
                if let Some(tr) = sel.server.breaker.record_failure(now) {
                    log_breaker_transition(&sel.server, &tr);
                }
            }
        }
    }
    let Some((server, mut sel)) = server_conn else {
        tracing::info!(target: "tandem::access", listener = %listener.config.name, %peer,
            upstream = %upstream.config.name, "tcp connection closed: no server available");
        return;
    };
    let _active = sel.begin();
    let last = Rc::new(Cell::new(Instant::now()));
    let mut client = Activity {
        inner: client,
        last: last.clone(),
    };
    let mut server = Activity {
        inner: server,
        last: last.clone(),
    };
    let started = Instant::now();
    // 64 KiB per direction: bulk transfers take an eighth of the syscalls of
    // the 8 KiB default, at 128 KiB of memory per open relay.
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, RELAY_BUF, RELAY_BUF);
    let watchdog = async {
        loop {
            let deadline = last.get() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let outcome = tokio::select! {
        r = copy => match r {
            Ok((up, down)) => format!("closed (up {up} B, down {down} B)"),
            Err(e) => format!("error: {e}"),
        },
        () = watchdog => "idle timeout".to_owned(),
    };
    tracing::info!(target: "tandem::access", listener = %listener.config.name, %peer,
        upstream = %upstream.config.name, server = %sel.server.key.address,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0, outcome = %outcome,
        "tcp connection");
}

/// A stream that stamps the time of every byte moved, for the idle timeout.
struct Activity<S> {
    inner: S,
    last: Rc<Cell<Instant>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
