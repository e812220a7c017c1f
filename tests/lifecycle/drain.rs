//! SIGTERM: stop accepting, let in-flight requests finish for up to
//! `shutdown_timeout`, close idle keep-alive connections, exit 0.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, eventually, web_config, Express, Tandem};

fn config(server: &Express, shutdown_timeout: &str) -> String {
    format!(
        "shutdown_timeout: {shutdown_timeout}\n{}",
        web_config("", "", &[server.addr()])
    )
}

/// Reads one whole `Content-Length` response off a keep-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())
                        .flatten()
                })
                .expect("content-length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_long_requests_finish_and_exits_zero() {
    let a = Express::start("drain-a");
    let mut t = Tandem::start(&config(&a, "10s")).await;
    let addr = t.listener_addr("web").await;
    let slow_url = format!("http://{addr}/delay/2000");

    // An idle keep-alive connection that has served one request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let slow: Vec<_> = (0..3)
        .map(|_| {
            let url = slow_url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let r = client().get(&url).send().await;
                (r.map(|r| r.status().as_u16()), started.elapsed())
            })
        })
        .collect();
    // And one over HTTP/2 (h2c): GOAWAY must let its stream finish.
    let h2 = {
        let url = slow_url.clone();
        tokio::spawn(async move {
            let c = reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            c.get(&url).send().await.map(|r| r.status().as_u16())
        })
    };
    eventually(Duration::from_secs(5), "4 requests in flight", || async {
        t.server_field("app", &a.addr(), "active_requests").await == "4"
    })
    .await;

    let term_at = Instant::now();
    t.signal("TERM");

    // The idle keep-alive connection is closed at once, politely (EOF).
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "idle keep-alive connection not closed: {closed:?} {rest:?}"
    );
    let idle_closed_after = term_at.elapsed();

    // The listener closes: new connections are refused while the slow
    // requests are still running; the admin API still answers meanwhile.
    eventually(Duration::from_secs(2), "listener closed", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    let refused_after = term_at.elapsed();
    assert!(
        refused_after < Duration::from_millis(1500),
        "listener must close before the in-flight requests end"
    );
    let h = client().get(t.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200, "/healthz answers during the drain");
    let r = client().get(t.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready while draining");
    assert!(r.text().await.unwrap().contains("shutting down"));
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client().post(t.admin_url("/reload")).send(),
    )
    .await
    .expect("POST /reload answers during the drain")
    .unwrap();
    assert_eq!(r.status(), 503, "no reload while draining");

    for s in slow {
        let (status, took) = s.await.unwrap();
        assert_eq!(
            status.map_err(|e| e.to_string()),
            Ok(200),
            "in-flight request"
        );
        assert!(took >= Duration::from_millis(1900), "{took:?}");
    }
    let h2 = h2.await.unwrap();
    assert_eq!(
        h2.map_err(|e| e.to_string()),
        Ok(200),
        "in-flight h2 stream"
    );
    let status = t.wait_exit(Duration::from_secs(10)).await;
    let exited_after = term_at.elapsed();
    println!(
        "drain: idle keep-alive closed after {idle_closed_after:?}, new connections \
         refused after {refused_after:?}, 3 HTTP/1.1 and 1 h2c in-flight requests answered 200, exit {status} \
         after {exited_after:?}"
    );
    assert_eq!(status.code(), Some(0));
    assert!(exited_after < Duration::from_secs(5), "{exited_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_shorter_than_a_request_exits_zero_at_the_deadline() {
    let a = Express::start("deadline-a");
    let mut t = Tandem::start(&config(&a, "500ms")).await;
    let url = t.url("web", "/delay/5000").await;
    let slow = tokio::spawn(async move { client().get(&url).send().await.map(|r| r.status()) });
    eventually(Duration::from_secs(5), "request in flight", || async {
        t.server_field("app", &a.addr(), "active_requests").await == "1"
    })
    .await;
    let term_at = Instant::now();
    t.signal("TERM");
    let status = t.wait_exit(Duration::from_secs(4)).await;
    let took = term_at.elapsed();
    println!("deadline: exit {status} {took:?} after SIGTERM with shutdown_timeout 500ms");
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(450),
        "left before the deadline: {took:?}"
    );
    assert!(took < Duration::from_millis(2000), "{took:?}");
    let r = slow.await.unwrap();
    assert!(r.is_err(), "the cut request cannot have succeeded: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sent_a_byte_does_not_hold_up_shutdown() {
    let a = Express::start("silent-a");
    let mut t = Tandem::start(&config(&a, "10s")).await;
    let addr = t.listener_addr("web").await;
    // Accepted (the worker counts it) but silent, as a browser's preconnect.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    eventually(Duration::from_secs(5), "connection accepted", || async {
        t.metric("tandem_connections_active", &[("listener", "web")])
            .await
            == 1.0
    })
    .await;
    let term_at = Instant::now();
    t.signal("TERM");
    let status = t.wait_exit(Duration::from_secs(8)).await;
    let took = term_at.elapsed();
    println!("silent connection: exit {status} {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(2),
        "a silent client held the drain: {took:?}"
    );
    let mut buf = Vec::new();
    let _ = silent.read_to_end(&mut buf).await;
}

#[tokio::test]
async fn sigint_stops_like_sigterm() {
    let a = Express::start("int-a");
    let mut t = Tandem::start(&config(&a, "10s")).await;
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = t.stop_with("INT", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

/// Clients opening a connection per request while SIGTERM arrives: each one
/// is either answered or refused at connect; none is accepted and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_or_refuses_never_drops() {
    let a = Express::start("term-load-a");
    let mut t = Tandem::start(&config(&a, "10s")).await;
    let url = t.url("web", "/").await;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (url, refused) = (url.clone(), refused.clone());
            tokio::spawn(async move {
                let (mut ok, mut other) = (0u64, Vec::new());
                loop {
                    match super::raw_get(&url).await {
                        Ok(()) => ok += 1,
                        Err(e) if e.contains("Connection refused") => {
                            refused.store(true, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                        Err(e) => other.push(e),
                    }
                }
                (ok, other)
            })
        })
        .collect();
    eventually(Duration::from_secs(5), "load flowing", || async {
        t.metric("tandem_requests_total", &[]).await > 200.0
    })
    .await;
    t.signal("TERM");
    let status = t.wait_exit(Duration::from_secs(10)).await;
    let (mut ok, mut other) = (0, Vec::new());
    for task in tasks {
        let (o, e) = task.await.unwrap();
        ok += o;
        other.extend(e);
    }
    println!(
        "sigterm under load: {} requests, {ok} answered, {} dropped ({:?}), then refused; exit {status}",
        ok + other.len() as u64,
        other.len(),
        other.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(status.code(), Some(0));
    assert!(other.is_empty(), "accepted and dropped: {other:?}");
}
