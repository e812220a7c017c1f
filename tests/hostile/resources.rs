//! Resource attacks: a client that never reads its response, and thousands of
//! idle connections. tandem's memory must stay bounded (read from
//! `/proc/PID/status`), `max_connections` must hold, and other listeners must
//! still be served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, eventually, free_port, web_config, Express, Tandem};

/// Resident memory of `pid` in KiB.
pub(super) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub(super) async fn active(t: &Tandem, listener: &str) -> f64 {
    t.metric("tandem_connections_active", &[("listener", listener)])
        .await
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_by_the_write_stall_timeout() {
    let server = Express::start("never-read");
    let t = Tandem::start(&web_config(
        "    timeouts:\n      client_idle: 1s\n",
        "",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;
    // Warm up so the baseline includes the first request's allocations.
    let _ = client()
        .get(t.url("web", "/bytes/100000").await)
        .send()
        .await;
    let before = rss_kib(t.pid());

    let mut socks = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /bytes/200000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    eventually(
        Duration::from_secs(3),
        "the four requests started",
        || async { active(&t, "web").await >= 4.0 },
    )
    .await;
    let started = Instant::now();
    eventually(
        Duration::from_secs(10),
        "stalled connections closed by client_idle",
        || async { active(&t, "web").await == 0.0 },
    )
    .await;
    let closed_after = started.elapsed();
    let after = rss_kib(t.pid());
    println!(
        "never-reading clients: closed after {closed_after:?}; RSS {before} KiB -> {after} KiB"
    );
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Each client gets what was in flight, then the end of the connection,
    // far short of the 200 MB it asked for.
    for mut s in socks {
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let read_all = async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("connection ends");
        assert!(total < 200_000_000, "got the whole body: {total}");
    }
    // tandem still serves.
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.unwrap());
    }
    v
}

#[tokio::test]
async fn ten_thousand_idle_connections_and_max_connections() {
    // 10,000 client sockets here, as many in tandem. Explicit ports: several
    // listeners on `127.0.0.1:0` share one identity (their `bind`) in tandem.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let server = Express::start("idle-conns");
    let t = Tandem::start(&format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: many
    bind: 127.0.0.1:{many}
    upstream: app
    max_connections: 20000
    timeouts:
      client_header: 60s
  - name: capped
    bind: 127.0.0.1:{capped}
    upstream: app
    max_connections: 1000
    timeouts:
      client_header: 60s
  - name: other
    bind: 127.0.0.1:{other}
    upstream: app
upstreams:
  - name: app
    servers:
      - address: {server}
"#,
        server = server.addr(),
        many = free_port(),
        capped = free_port(),
        other = free_port(),
    ))
    .await;
    let many = t.listener_addr("many").await;
    let capped = t.listener_addr("capped").await;
    let _ = client().get(t.url("other", "/").await).send().await;
    let before = rss_kib(t.pid());

    // 10,000 idle connections (accepted; nothing sent): memory per connection.
    let held = open_idle(many, 10_000).await;
    eventually(
        Duration::from_secs(20),
        "10,000 connections accepted",
        || async { active(&t, "many").await == 10_000.0 },
    )
    .await;
    let after = rss_kib(t.pid());
    let per_conn = (after.saturating_sub(before) as f64) * 1024.0 / 10_000.0;
    println!(
        "10,000 idle connections: RSS {before} KiB -> {after} KiB, {per_conn:.0} bytes per connection"
    );
    assert!(
        per_conn < 32.0 * 1024.0,
        "{per_conn} bytes per idle connection"
    );

    // max_connections: 1000 held, the 1001st waits in the backlog unserved.
    let mut capped_held = open_idle(capped, 1000).await;
    eventually(
        Duration::from_secs(10),
        "1000 capped connections accepted",
        || async { active(&t, "capped").await == 1000.0 },
    )
    .await;
    let mut extra = TcpStream::connect(capped).await.unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(700), extra.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the 1001st connection was served: {early:?}"
    );
    assert_eq!(active(&t, "capped").await, 1000.0);

    // Meanwhile another listener is served.
    let r = client()
        .get(t.url("other", "/").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // One held connection closes: the waiting one is accepted and answered.
    capped_held.truncate(999);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer))
        .await
        .expect("the waiting connection is served once a slot frees")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(held);
}
