//! The L4 relay: bytes both ways between a client and one server.
//!
//! The snapshot and the listener are looked up once at accept and held for
//! the connection. A server
//! that refuses (or times out on connect) is recorded as a breaker failure and
//! the next one is tried before the client sees a byte; with no server
//! available the client connection is closed at once. Half-close is honoured
//! (EOF from one side shuts down the write side of the other, the other
//! direction keeps flowing), and `client_idle` without a byte either way ends
//! the connection. Each connection is one access log line at its end: bytes
//! relayed each way (counted as written), and who closed first or what failed.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::access_log::record::{TcpEnd, TcpRecord};
use crate::snapshot::{Listener, Snapshot};
use crate::upstream::attempts::Outcome;

/// Buffer size per direction of a relay.
const RELAY_BUF: usize = 64 * 1024;

/// Relays one accepted connection (plain TCP, or the decrypted side of TLS)
/// for `listener`, as `snapshot` (the generation it was looked up in at
/// accept) has it.
pub async fn relay<C>(snapshot: Arc<Snapshot>, listener: Arc<Listener>, client: C, peer: SocketAddr)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let accepted = Instant::now();
    let idle = listener.config.timeouts.client_idle;
    let Some(upstream) = snapshot.upstreams.get(listener.default_upstream) else {
        return;
    };
    let t = upstream.config.timeouts;
    let mut attempts = upstream.attempts(None, false);
    // The first attempt may wait in the queue (max_requests_per_server):
    // a relayed connection is one request in flight for its whole life.
    attempts.queued(upstream.acquire(None).await);
    let mut server_conn = None;
    while let Some(sel) = attempts.next() {
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
                attempts.report(&sel, Outcome::Connected, now);
                server_conn = Some((s, sel));
                break;
            }
            // Every connect failure is before anything was sent: the next
            // server is tried while the budget lasts.
            Err(f) => {
                attempts.report(&sel, Outcome::Failed(f), now);
            }
        }
    }
    let stats = Rc::new(RelayStats::new());
    let Some((server, mut sel)) = server_conn else {
        let end = Ended {
            server: None,
            end: TcpEnd::NoServer,
            accepted,
        };
        log_end(
            &snapshot,
            &listener,
            peer,
            &upstream.config.name,
            &stats,
            end,
        );
        return;
    };
    let _active = sel.begin();
    let mut client = Activity {
        inner: client,
        side: Side::Client,
        stats: stats.clone(),
    };
    let mut server = Activity {
        inner: server,
        side: Side::Server,
        stats: stats.clone(),
    };
    // 64 KiB per direction: bulk transfers take an eighth of the syscalls of
    // the 8 KiB default, at 128 KiB of memory per open relay.
    let copy =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, RELAY_BUF, RELAY_BUF);
    let watchdog = async {
        loop {
            let deadline = stats.last.get() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        r = copy => match r {
            Ok(_) => stats.closed.get().unwrap_or(TcpEnd::ClientClosed),
            Err(e) => stats
                .error
                .get()
                .unwrap_or(TcpEnd::ClientError(e.kind())),
        },
        () = watchdog => TcpEnd::IdleTimeout,
    };
    let end = Ended {
        server: Some(&sel.server.key.address),
        end,
        accepted,
    };
    log_end(
        &snapshot,
        &listener,
        peer,
        &upstream.config.name,
        &stats,
        end,
    );
}

/// How a relay ended, for its log line.
struct Ended<'a> {
    server: Option<&'a str>,
    end: TcpEnd,
    accepted: Instant,
}

/// Writes the connection's access log line, when the access log is on.
fn log_end(
    snapshot: &Snapshot,
    listener: &Listener,
    client: SocketAddr,
    upstream: &str,
    stats: &RelayStats,
    e: Ended<'_>,
) {
    let Some(config) = snapshot.config.access_log.as_ref() else {
        return;
    };
    let duration = e.accepted.elapsed();
    let record = TcpRecord {
        time: SystemTime::now()
            .checked_sub(duration)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        listener: &listener.config.name,
        client,
        upstream,
        server: e.server,
        bytes_in: stats.to_server.get(),
        bytes_out: stats.to_client.get(),
        duration,
        end: e.end,
    };
    crate::access_log::tcp(config.format, &record);
}

/// What both directions of one relay share: activity for the idle timeout,
/// bytes delivered each way, and how it ended.
struct RelayStats {
    last: Cell<Instant>,
    /// Bytes written to the server (from the client).
    to_server: Cell<u64>,
    /// Bytes written to the client (from the server).
    to_client: Cell<u64>,
    /// The first side that sent EOF.
    closed: Cell<Option<TcpEnd>>,
    /// The first IO error, and on which side.
    error: Cell<Option<TcpEnd>>,
}

impl RelayStats {
    fn new() -> Self {
        Self {
            last: Cell::new(Instant::now()),
            to_server: Cell::new(0),
            to_client: Cell::new(0),
            closed: Cell::new(None),
            error: Cell::new(None),
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl<S> Activity<S> {
    fn failed(&self, e: &std::io::Error) {
        if self.stats.error.get().is_none() {
            self.stats.error.set(Some(match self.side {
                Side::Client => TcpEnd::ClientError(e.kind()),
                Side::Server => TcpEnd::ServerError(e.kind()),
            }));
        }
    }
}

/// One side of a relay: stamps the time of every byte moved (for the idle
/// timeout) and records bytes written, EOF and errors in [`RelayStats`].
struct Activity<S> {
    inner: S,
    side: Side,
    stats: Rc<RelayStats>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.stats.last.set(Instant::now());
            }
            Poll::Ready(Ok(())) if room && self.stats.closed.get().is_none() => {
                self.stats.closed.set(Some(match self.side {
                    Side::Client => TcpEnd::ClientClosed,
                    Side::Server => TcpEnd::ServerClosed,
                }));
            }
            Poll::Ready(Err(e)) => self.failed(e),
            _ => {}
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
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        match &r {
            Poll::Ready(Ok(n)) => {
                let count = match self.side {
                    Side::Client => &self.stats.to_client,
                    Side::Server => &self.stats.to_server,
                };
                count.set(count.get() + *n as u64);
            }
            Poll::Ready(Err(e)) => self.failed(e),
            Poll::Pending => {}
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        if let Poll::Ready(Err(e)) = &r {
            self.failed(e);
        }
        r
    }
}
