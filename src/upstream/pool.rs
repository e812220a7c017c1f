//! Per-thread keep-alive connections to servers.
//!
//! Each worker thread owns one [`Pool`] (behind `Rc`, no locks): idle HTTP/1.1
//! client connections keyed by the server's process-unique id. A connection goes
//! back to the pool the moment its response body reports end of stream (see
//! `listener::http::body`), not when a trailing empty frame arrives — waiting for
//! that opened a new connection per request in the design probe.
//!
//! Idle connections expire after `timeouts.idle`, or sooner when the server's
//! `Keep-Alive: timeout=N` says so; [`Pool::sweep`] drops expired ones so their
//! sockets close. The race of a server closing an idle connection just as a
//! request is written is handled by the caller: `try_send_request` hands the
//! request back when nothing was written, and it goes out on a fresh connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::attempt::Failure;

/// The body type of requests sent to servers: the client's streamed body, or
/// nothing (for retries of bodyless requests).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// A client connection to one server.
pub type Sender = SendRequest<UpstreamBody>;

struct Idle {
    tx: Sender,
    expires: Instant,
}

/// Idle connections of one worker thread.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<u64, Vec<Idle>>>,
}

impl Pool {
    /// The most recently returned live connection to `server`, if any.
    pub fn take(&self, server: u64) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&server)?;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if c.expires > now && !c.tx.is_closed() {
                return Some(c.tx);
            }
        }
        None
    }

    /// Returns a connection after a complete response. `keep_for` is the idle
    /// time this connection may stay pooled.
    pub fn put(&self, server: u64, tx: Sender, keep_for: Duration, max_idle: usize) {
        if max_idle == 0 || keep_for.is_zero() || tx.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(server).or_default();
        if list.len() >= max_idle {
            // Drop the oldest: the freshest connection is the least likely to
            // be closed by the server.
            list.remove(0);
        }
        list.push(Idle {
            tx,
            expires: Instant::now() + keep_for,
        });
    }

    /// Drops expired and closed connections; empty server entries go too.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|c| c.expires > now && !c.tx.is_closed());
            !list.is_empty()
        });
    }

    /// Drops every idle connection of servers not in `keep`.
    pub fn retain_servers(&self, keep: impl Fn(u64) -> bool) {
        self.idle.borrow_mut().retain(|id, _| keep(*id));
    }

    /// Idle connections held now (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// Connects to the first address that accepts, in order, within `timeout` in
/// total. A name resolving to several addresses (`localhost` -> ::1 and
/// 127.0.0.1) only fails when none of them accepts.
pub async fn connect_tcp(
    addrs: impl Iterator<Item = SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    let attempt = async {
        let mut failure = Failure::NoAddress;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(_) => failure = Failure::ConnectError,
            }
        }
        Err(failure)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(r) => r,
    }
}

/// Opens a new HTTP/1.1 connection and spawns its driver on this thread.
pub async fn connect(
    addrs: impl Iterator<Item = SocketAddr>,
    timeout: Duration,
) -> Result<Sender, Failure> {
    let stream = connect_tcp(addrs, timeout).await?;
    // Small request/response exchanges: Nagle would add a round trip of delay.
    let _ = stream.set_nodelay(true);
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::ConnectError)?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "server connection closed with error");
        }
    });
    Ok(tx)
}

/// The idle time a server allows, from its `Keep-Alive: timeout=N` header.
/// Half a second is taken off so our close always comes first.
pub fn server_keep_alive(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("keep-alive")?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (k, val) = part.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = val.trim().parse().ok()?;
        Some(Duration::from_millis(
            secs.saturating_mul(1000).saturating_sub(500),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_tries_every_address_before_failing() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let closed_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let addrs = [closed_addr, open_addr];
        let s = connect_tcp(addrs.into_iter(), Duration::from_secs(2)).await;
        assert!(s.is_ok(), "the second address accepts");
        let only_closed = connect_tcp([closed_addr].into_iter(), Duration::from_secs(2)).await;
        assert_eq!(only_closed.err(), Some(Failure::ConnectError));
        let none = connect_tcp(std::iter::empty(), Duration::from_secs(2)).await;
        assert_eq!(none.err(), Some(Failure::NoAddress));
    }

    #[test]
    fn keep_alive_timeout_is_parsed_and_shortened() {
        let mut h = http::HeaderMap::new();
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        assert_eq!(server_keep_alive(&h), Some(Duration::from_millis(4500)));
        h.insert("keep-alive", "max=100, Timeout = 2".parse().unwrap());
        assert_eq!(server_keep_alive(&h), Some(Duration::from_millis(1500)));
        h.insert("keep-alive", "max=100".parse().unwrap());
        assert_eq!(server_keep_alive(&h), None);
        h.insert("keep-alive", "timeout=0".parse().unwrap());
        assert_eq!(server_keep_alive(&h), Some(Duration::ZERO));
    }
}
