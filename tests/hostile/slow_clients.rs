//! HTTP/1.1 clients that are slow on purpose: readers that do not take a
//! large body (each may cost tandem one relay buffer's worth, not hundreds of
//! KB: RSS read from `/proc`), and keep-alive connections that go idle after
//! a response (closed at `client_idle`, whatever `client_header` is; a client
//! that starts its next head is under `client_header`).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h2_limits::settled_rss;
use super::resources::{active, rss_kib};
use crate::support::{client, eventually, web_config, Express, Tandem};

#[tokio::test]
async fn slow_http1_readers_cost_a_relay_buffer_each_not_hundreds_of_kb() {
    let server = Express::start("slow-readers");
    let t = Tandem::start(&web_config("", "", &[server.addr()])).await;
    let addr = t.listener_addr("web").await;
    // Warm up so the baseline includes a streamed body's allocations.
    let _ = client()
        .get(t.url("web", "/bytes/1000000").await)
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    let before = rss_kib(t.pid());
    let requests_before = server.requests().await;

    let readers = 200u32;
    let mut socks = Vec::new();
    for _ in 0..readers {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /bytes/100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    eventually(
        Duration::from_secs(20),
        "every slow reader's request reached the server",
        || async { server.requests().await >= requests_before + u64::from(readers) },
    )
    .await;
    let peak = settled_rss(t.pid(), Duration::from_secs(15)).await;
    let per_reader = peak.saturating_sub(before) * 1024 / u64::from(readers);
    println!(
        "{readers} slow HTTP/1.1 readers: RSS {before} KiB -> {peak} KiB, {} KiB per reader",
        per_reader / 1024
    );
    // Before the bound: about 385 KB per reader.
    assert!(
        per_reader < 192 * 1024,
        "{per_reader} bytes of RSS per slow reader"
    );
    drop(socks);
    eventually(Duration::from_secs(10), "the readers are gone", || async {
        active(&t, "web").await == 0.0
    })
    .await;
    // Memory is given back once they left, not kept at the peak: all but an
    // eighth of what they added (the allocator is trimmed every few seconds;
    // without the trim about a quarter of it stayed).
    let grew = peak.saturating_sub(before);
    let started = Instant::now();
    eventually(
        Duration::from_secs(20),
        "all but an eighth of the readers' memory given back",
        || async { rss_kib(t.pid()) <= before + grew / 8 },
    )
    .await;
    println!(
        "after the readers left: RSS {} KiB within {:?}",
        rss_kib(t.pid()),
        started.elapsed()
    );
}

/// Sends one GET and reads its whole response (a JSON body with a length).
async fn one_request(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed before the response ended");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("content-length")
                .trim()
                .parse()
                .unwrap();
            if body.len() >= len {
                return;
            }
        }
    }
}

/// Reads until tandem closes the connection; what it sent, and when.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("still open after {within:?}"))
        .unwrap();
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_at_client_idle_not_client_header() {
    let server = Express::start("idle-after-response");
    let t = Tandem::start(&web_config(
        "    timeouts:\n      client_idle: 1s\n      client_header: 10s\n",
        "",
        &[server.addr()],
    ))
    .await;
    let mut s = TcpStream::connect(t.listener_addr("web").await)
        .await
        .unwrap();
    one_request(&mut s).await;
    // Before the fix it stayed open for client_header (10 s).
    let (rest, after) = until_closed(&mut s, Duration::from_secs(8)).await;
    println!("idle keep-alive connection closed {after:?} after its response");
    assert!(rest.is_empty(), "{rest}");
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
}

#[tokio::test]
async fn a_next_head_started_after_an_idle_spell_is_under_client_header() {
    let server = Express::start("next-head");
    let t = Tandem::start(&web_config(
        "    timeouts:\n      client_idle: 20s\n      client_header: 1s\n",
        "",
        &[server.addr()],
    ))
    .await;
    let mut s = TcpStream::connect(t.listener_addr("web").await)
        .await
        .unwrap();
    one_request(&mut s).await;
    // The client idles (well within client_idle, past client_header), then
    // starts a head it never finishes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /next HT").await.unwrap();
    // Before the fix it waited for client_idle (20 s).
    let (answer, after) = until_closed(&mut s, Duration::from_secs(12)).await;
    println!("unfinished head answered {after:?} after it started");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(after < Duration::from_secs(6), "answered after {after:?}");
}
