//! A client's behaviour never counts against a server, and a server's stall
//! never holds a client: slow, aborted and stalled uploads (HTTP/1.1 and
//! HTTP/2) leave every breaker closed and no upstream error counted; a
//! response body that makes no progress for `timeouts.read` is cut and
//! counted against its server, one that trickles is not; an HTTP/2 stream
//! whose client never opens its window is ended after `client_idle`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, eventually, web_config, Express, Tandem};

async fn upstream_errors(t: &Tandem) -> f64 {
    t.metric("tandem_upstream_errors_total", &[("upstream", "app")])
        .await
}

async fn breaker(t: &Tandem, server: &Express) -> String {
    t.server_field("app", &server.addr(), "breaker").await
}

/// Reads until the peer closes or `within` passes; `(bytes, closed)`.
async fn read_all(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .is_ok();
    (out, closed)
}

/// One HTTP/1.1 upload of `pieces` x `piece` bytes, one piece per `gap`;
/// returns the raw answer.
async fn slow_upload(addr: SocketAddr, pieces: usize, piece: usize, gap: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        pieces * piece
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut ticker = tokio::time::interval(gap);
    for _ in 0..pieces {
        ticker.tick().await;
        s.write_all(&vec![b'u'; piece]).await.unwrap();
    }
    let (out, _) = read_all(&mut s, Duration::from_secs(20)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Regression: `timeouts.response` ran while the client was still uploading,
/// and the resulting 504s opened the breaker of a server that was fine.
#[tokio::test]
async fn slow_uploads_longer_than_the_response_timeout_succeed_and_leave_the_breaker_closed() {
    let server = Express::start("slow-upload");
    let t = Tandem::start(&web_config(
        "",
        "    retries: 0\n    timeouts:\n      response: 1s\n",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;
    // Eight HTTP/1.1 uploads and four h2 streams on one connection, at about
    // 2 KB/s each, 3 s long (three times `response`).
    let uploads: Vec<_> = (0..8)
        .map(|_| tokio::spawn(slow_upload(addr, 12, 512, Duration::from_millis(250))))
        .collect();
    let mut h2 = h2c(addr, 65_535).await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        h2 = h2.ready().await.unwrap();
        let (resp, mut body) = h2
            .send_request(request("POST", addr, "/upload", Some(6144)), false)
            .unwrap();
        streams.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            for i in 0..12 {
                ticker.tick().await;
                body.send_data(Bytes::from(vec![b'u'; 512]), i == 11)
                    .unwrap();
            }
            let r = resp.await.unwrap();
            let status = r.status();
            let mut b = r.into_body();
            let mut text = Vec::new();
            while let Some(d) = b.data().await {
                let d = d.unwrap();
                let _ = b.flow_control().release_capacity(d.len());
                text.extend_from_slice(&d);
            }
            (status, String::from_utf8_lossy(&text).into_owned())
        }));
    }
    for u in uploads {
        let answer = u.await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 "),
            "a slow upload got {answer:?}"
        );
        assert!(answer.contains("\"bytes\":6144"), "{answer}");
    }
    for s in streams {
        let (status, text) = s.await.unwrap();
        assert_eq!(status, 200, "a slow h2 upload got {text:?}");
        assert!(text.contains("\"bytes\":6144"), "{text}");
    }
    assert_eq!(upstream_errors(&t).await, 0.0);
    assert_eq!(breaker(&t, &server).await, "closed");
}

/// An h2c connection on `addr`, driven in the background.
async fn h2c(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    h2c_with(addr, window, false).await
}

/// [`h2c`]; with `alive`, the client also sends a PING every 500 ms (at most
/// 120): a live connection whose streams stall, which the connection's own
/// idle rule must not close before the streams' answers are out.
async fn h2c_with(addr: SocketAddr, window: u32, alive: bool) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    if alive {
        let mut pings = conn.ping_pong().unwrap();
        tokio::spawn(async move {
            for _ in 0..120 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if pings.ping(h2::Ping::opaque()).await.is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

fn request(method: &str, addr: SocketAddr, path: &str, length: Option<usize>) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(n) = length {
        b = b.header("content-length", n.to_string());
    }
    b.body(()).unwrap()
}

/// Regression: uploads the client never finished ran into
/// `timeouts.response`, and their 504s opened every server's breaker.
/// Now the client's silence is the client's failure: 408 after `client_idle`
/// on both protocols, and the servers are untouched.
#[tokio::test]
async fn stalled_uploads_get_408_after_client_idle_and_never_open_a_breaker() {
    let server = Express::start("stalled-upload");
    let t = Tandem::start(&web_config(
        "    timeouts:\n      client_idle: 2s\n",
        "    retries: 0\n    timeouts:\n      response: 500ms\n",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;

    // HTTP/2: one live connection, twenty POSTs that send 1,000 of 100,000
    // bytes.
    let mut h2 = h2c_with(addr, 65_535, true).await;
    let mut answers = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        h2 = h2.ready().await.unwrap();
        let (resp, mut body) = h2
            .send_request(request("POST", addr, "/upload", Some(100_000)), false)
            .unwrap();
        body.send_data(Bytes::from(vec![b'x'; 1000]), false)
            .unwrap();
        answers.push(resp);
        bodies.push(body);
    }
    // HTTP/1.1: three uploads that stop after 1,000 bytes.
    let mut h1 = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'x'; 1000]).await.unwrap();
        h1.push(s);
    }

    let started = Instant::now();
    for resp in answers {
        let r = tokio::time::timeout(Duration::from_secs(20), resp)
            .await
            .expect("an h2 stalled upload was never answered")
            .unwrap();
        assert_eq!(r.status(), 408);
    }
    for mut s in h1 {
        let (out, closed) = read_all(&mut s, Duration::from_secs(20)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
        assert!(closed, "the stalled HTTP/1.1 upload was left open");
    }
    // Not before `client_idle` (the server's 500 ms limit had not started).
    assert!(started.elapsed() >= Duration::from_millis(1500));
    drop(bodies);

    assert_eq!(upstream_errors(&t).await, 0.0);
    assert_eq!(breaker(&t, &server).await, "closed");
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Regression: a client that aborted its upload was counted as a hostile
/// `bad_body` refusal. An abort (HTTP/1.1 close, HTTP/2 reset) is neither a
/// refusal nor a server failure.
#[tokio::test]
async fn aborted_uploads_are_not_refusals_and_leave_the_breaker_closed() {
    let server = Express::start("aborted-upload");
    let t = Tandem::start(&web_config(
        "",
        "    retries: 0\n    circuit_breaker:\n      failure_threshold: 1\n",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;
    let answered = || async {
        t.metric(
            "tandem_requests_total",
            &[("listener", "web"), ("code", "400")],
        )
        .await
    };

    // Each upload is abandoned once the server has its head, so tandem is
    // mid-upload when the client goes away.
    let server_has = |n: u64| {
        let server = &server;
        async move {
            eventually(
                Duration::from_secs(10),
                "the server has the upload",
                || async { server.requests().await >= n },
            )
            .await
        }
    };
    for i in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&[b'x'; 1000]).await.unwrap();
        server_has(i + 1).await;
        drop(s);
    }
    let mut h2 = h2c(addr, 65_535).await;
    for i in 0..5 {
        h2 = h2.ready().await.unwrap();
        let (_resp, mut body) = h2
            .send_request(request("POST", addr, "/upload", Some(100_000)), false)
            .unwrap();
        body.send_data(Bytes::from(vec![b'x'; 1000]), false)
            .unwrap();
        server_has(6 + i).await;
        body.send_reset(h2::Reason::CANCEL);
    }
    // Every aborted exchange has ended.
    eventually(
        Duration::from_secs(10),
        "tandem ended the uploads",
        || async {
            t.server_field("app", &server.addr(), "active_requests")
                .await
                == "0"
        },
    )
    .await;
    assert_eq!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "bad_body")]
        )
        .await,
        0.0,
        "aborted uploads counted as refusals ({} answered 400)",
        answered().await
    );
    assert_eq!(upstream_errors(&t).await, 0.0);
    assert_eq!(breaker(&t, &server).await, "closed");
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Regression: a server that sent its head and part of the body, then
/// stalled, held the client forever with nothing counted. A body that
/// trickles for longer than `timeouts.read` must still complete.
#[tokio::test]
async fn a_body_that_stalls_is_cut_after_the_read_timeout_and_a_trickling_one_completes() {
    // A breaker that opens on two failures: a good head must not count as a
    // success that resets the count before its body stalls.
    let server = Express::start("stall-body");
    let t = Tandem::start(&web_config(
        "",
        "    retries: 0\n    timeouts:\n      read: 1s\n    circuit_breaker:\n      failure_threshold: 2\n",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;
    let read_timeouts = || async {
        t.metric(
            "tandem_upstream_errors_total",
            &[("upstream", "app"), ("kind", "read_timeout")],
        )
        .await
    };

    // Trickling: 12 chunks, 250 ms apart (3 s, three times `read`).
    let r = client()
        .get(t.url("web", "/trickle/12/250").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 1200);
    assert_eq!(upstream_errors(&t).await, 0.0);

    // HTTP/1.1: head + 1,000 bytes, then the server stalls.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /stall/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (out, closed) = read_all(&mut s, Duration::from_secs(15)).await;
    assert!(closed, "the stalled body held the client");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(text.contains("content-length: 1001000"), "{text:?}");
    let body = out.len() - text.find("\r\n\r\n").unwrap() - 4;
    assert_eq!(body, 1000, "the client must see an incomplete body");
    eventually(
        Duration::from_secs(5),
        "one read_timeout counted",
        || async { read_timeouts().await == 1.0 },
    )
    .await;
    assert_eq!(breaker(&t, &server).await, "closed");

    // HTTP/2: the stream is reset, and the second stall opens the breaker.
    let mut h2 = h2c(addr, 65_535).await;
    h2 = h2.ready().await.unwrap();
    let (resp, _) = h2
        .send_request(request("GET", addr, "/stall/1000", None), true)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0;
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match body.data().await {
                Some(Ok(d)) => got += d.len(),
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stalled h2 stream was never reset");
    let e = end.expect("the stalled h2 body ended as if complete");
    assert!(e.is_reset(), "{e}");
    assert_eq!(got, 1000);
    assert_eq!(read_timeouts().await, 2.0);
    assert_eq!(breaker(&t, &server).await, "open");
}

/// An HTTP/2 stream whose client never opens its window pinned its server
/// connection for as long as the client liked. The stream is now reset after
/// `client_idle` while the connection's other streams are served.
#[tokio::test]
async fn an_h2_stream_whose_window_stays_closed_is_reset_after_client_idle() {
    let server = Express::start("zero-window");
    let t = Tandem::start(&web_config(
        "    timeouts:\n      client_idle: 1s\n",
        "    retries: 0\n",
        &[server.addr()],
    ))
    .await;
    let addr = t.listener_addr("web").await;
    // A 1 KiB window per stream that is never released: ten streams, each
    // holding a server connection, stall at once.
    let mut h2 = h2c(addr, 1024).await;
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..10 {
        h2 = h2.ready().await.unwrap();
        let (resp, _) = h2
            .send_request(request("GET", addr, "/bytes/10000000", None), true)
            .unwrap();
        stalled.push(tokio::spawn(async move {
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            loop {
                match body.data().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Some(e),
                    None => return None,
                }
            }
        }));
    }
    for s in stalled {
        let end = tokio::time::timeout(Duration::from_secs(15), s)
            .await
            .expect("a stalled h2 stream was never reset")
            .unwrap();
        let e = end.expect("a stalled stream cannot have completed");
        assert!(e.is_reset(), "{e}");
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The server connections the streams held are gone with them.
    eventually(
        Duration::from_secs(5),
        "the server request ended",
        || async {
            t.server_field("app", &server.addr(), "active_requests")
                .await
                == "0"
        },
    )
    .await;
    // The connection itself lives on: another stream on it is served.
    h2 = h2.ready().await.unwrap();
    let (resp, _) = h2
        .send_request(request("GET", addr, "/echo", None), true)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(upstream_errors(&t).await, 0.0);
}
