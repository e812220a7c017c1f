//! Per-thread keep-alive connections to servers.
//!
//! Each worker thread owns one [`Pool`] (behind `Rc`, no locks): idle HTTP/1.1
//! connections ([`Conn`]) keyed by the server's process-unique id. A
//! connection goes back to the pool the moment its response body has been
//! read to the end (see `upstream::h1::body`), so the next request on this
//! thread reuses it.
//!
//! Idle connections expire after `timeouts.idle`, or sooner when the server's
//! `Keep-Alive: timeout=N` says so; [`Pool::sweep`] drops expired ones so their
//! sockets close. A connection the server closed while idle is noticed when it
//! is taken (its socket turned readable: EOF) and dropped; the race of a close
//! arriving just as a request is written is handled by the caller, which
//! replays a request the server never answered on a fresh connection.
//!
//! Each pool entry holds the server's `Arc<ServerState>` beside its idle
//! connections, so the pool itself sees the operator's admin state: a server
//! that is drained or in maintenance has its idle connections closed when the
//! pool next touches them (take, put) and at the latest by the next sweep,
//! without a message to each worker thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use std::sync::Arc;

use super::attempt::Failure;
use super::h1::Conn;
use super::ServerState;

struct Idle {
    conn: Conn,
    expires: Instant,
}

/// One server's idle connections, with the server's live state.
struct Slot {
    server: Arc<ServerState>,
    conns: Vec<Idle>,
}

/// Idle connections of one worker thread.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<u64, Slot, BuildIdHasher>>,
}

/// Server ids are process-unique counters chosen by us, not input from
/// outside: a multiplicative hash spreads them well enough and costs a
/// fraction of the default SipHash on every take and put.
#[derive(Default, Clone, Copy)]
struct BuildIdHasher;

impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Pool {
    /// The most recently returned live connection to `server`, if any. A
    /// server the operator took out of rotation has its idle connections closed.
    pub fn take(&self, server: &ServerState) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        if !server.admits_traffic() {
            idle.remove(&server.id);
            return None;
        }
        let list = &mut idle.get_mut(&server.id)?.conns;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if c.expires > now && c.conn.is_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    /// Returns a connection after a complete response. `keep_for` is the idle
    /// time this connection may stay pooled. The connection of a server being
    /// drained (or in maintenance) is closed instead, with the others it had.
    pub fn put(
        &self,
        server: &Arc<ServerState>,
        mut conn: Conn,
        keep_for: Duration,
        max_idle: usize,
    ) {
        if !server.admits_traffic() {
            self.idle.borrow_mut().remove(&server.id);
            return;
        }
        if max_idle == 0 || keep_for.is_zero() {
            return;
        }
        conn.park();
        let mut idle = self.idle.borrow_mut();
        let list = &mut idle
            .entry(server.id)
            .or_insert_with(|| Slot {
                server: server.clone(),
                conns: Vec::new(),
            })
            .conns;
        if list.len() >= max_idle {
            // Drop the oldest: the freshest connection is the least likely to
            // be closed by the server.
            list.remove(0);
        }
        list.push(Idle {
            conn,
            expires: Instant::now() + keep_for,
        });
    }

    /// Drops expired and closed connections and every connection of a server
    /// out of rotation; empty server entries go too.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.idle.borrow_mut().retain(|_, slot| {
            if !slot.server.admits_traffic() {
                return false;
            }
            slot.conns.retain(|c| c.expires > now && c.conn.is_usable());
            !slot.conns.is_empty()
        });
    }

    /// Idle connections held now (for tests and status).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(|s| s.conns.len()).sum()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::breaker::BreakerConfig;
    use crate::upstream::runtime::AdminState;
    use crate::upstream::ServerKey;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_server_out_of_rotation_loses_its_idle_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Arc::new(ServerState::new(
            9_001,
            ServerKey {
                upstream: "pool-test".into(),
                address: addr.to_string(),
            },
            vec![addr],
            BreakerConfig {
                failure_threshold: 5,
                reset_timeout: Duration::from_secs(30),
                monitor_interval: Duration::from_secs(5),
            },
            Arc::new(crate::upstream::queue::Waiters::new("pool-test")),
            Arc::new(crate::upstream::event::EventHooks::new("pool-test")),
        ));
        let pool = Pool::default();
        let keep = Duration::from_secs(60);
        let mut accepted = Vec::new();
        for _ in 0..2 {
            let c = Conn::connect(
                [addr].into_iter(),
                "127.0.0.1",
                None,
                Duration::from_secs(2),
            )
            .await
            .unwrap();
            accepted.push(listener.accept().await.unwrap().0);
            pool.put(&server, c, keep, 8);
        }
        assert_eq!(pool.idle_count(), 2);
        pool.sweep();
        assert_eq!(pool.idle_count(), 2, "a ready server keeps its connections");

        server.set_admin_state(AdminState::Drain);
        pool.sweep();
        assert_eq!(pool.idle_count(), 0, "the sweep closes a drained server's");
        for s in &mut accepted {
            let mut b = [0u8; 1];
            assert_eq!(
                s.read(&mut b).await.unwrap(),
                0,
                "the server sees the close"
            );
        }
        let c = Conn::connect(
            [addr].into_iter(),
            "127.0.0.1",
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let _held = listener.accept().await.unwrap().0;
        pool.put(&server, c, keep, 8);
        assert_eq!(
            pool.idle_count(),
            0,
            "a drained server's connection is not pooled"
        );

        server.set_admin_state(AdminState::Ready);
        let c = Conn::connect(
            [addr].into_iter(),
            "127.0.0.1",
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let _held2 = listener.accept().await.unwrap().0;
        pool.put(&server, c, keep, 8);
        assert_eq!(pool.idle_count(), 1);
        server.set_admin_state(AdminState::Maint);
        assert!(pool.take(&server).is_none(), "nothing handed out in maint");
        assert_eq!(pool.idle_count(), 0, "and the idle one is closed");
    }

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
}
