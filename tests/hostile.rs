//! Hostile client input over raw sockets (docs/security.md): each request gets an exact
//! answer, nothing refused reaches a server, and refusals are counted in
//! `tandem_rejected_requests_total`. Resource attacks (clients that never
//! read, thousands of idle connections, HTTP/2 floods) are in submodules.

mod h2_flood;
mod h2_limits;
mod resources;
mod slow_clients;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, web_config, Express, Tandem};

fn config(server: &Express) -> String {
    web_config(
        "    timeouts:\n      client_header: 2s\n",
        "    retries: 0\n",
        &[server.addr()],
    )
}

/// What one raw request got: the bytes until the connection closed (or 3 s
/// passed), and whether it closed.
struct Answer {
    text: String,
    closed: bool,
}

impl Answer {
    fn status_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .is_ok();
    Answer {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Asserts the exact status line and that tandem closed the connection.
async fn refused(addr: SocketAddr, request: &[u8], status: &str) {
    let a = exchange(addr, request).await;
    assert_eq!(
        a.status_line(),
        status,
        "request {:?} got {:?}",
        String::from_utf8_lossy(&request[..request.len().min(120)]),
        &a.text[..a.text.len().min(300)]
    );
    assert!(a.closed, "connection left open after {status}");
    assert_eq!(
        a.text.matches("HTTP/1.1 ").count(),
        1,
        "more than one response: {}",
        a.text
    );
}

const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request";

#[tokio::test]
async fn request_smuggling_attempts_are_refused_with_400_and_never_forwarded() {
    let server = Express::start("smuggle");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    let before = server.requests().await;

    let cases: &[&[u8]] = &[
        // CL.TE and TE.CL, both header orders, with a smuggled request behind.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // Obfuscated TE: not ending in chunked, or chunked not last.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        // Differing duplicate Content-Length, as two lines and as a list.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
        // Obsolete line folding.
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        // Whitespace between the field name and the colon.
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        // HTTP/1.0 cannot carry Transfer-Encoding (RFC 9112 §6.1).
        b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for case in cases {
        refused(addr, case, BAD_REQUEST).await;
    }
    assert_eq!(
        server.requests().await,
        before,
        "a refused request reached the server"
    );
    let counted = t
        .metric("tandem_rejected_requests_total", &[("listener", "web")])
        .await;
    assert!(
        counted >= cases.len() as f64,
        "{counted} refusals counted for {} refused requests",
        cases.len()
    );
}

#[tokio::test]
async fn bare_lf_line_endings_get_400_and_close() {
    let server = Express::start("bare-lf");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    let before = server.requests().await;
    refused(addr, b"GET / HTTP/1.1\nHost: x\n\n", BAD_REQUEST).await;
    refused(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        BAD_REQUEST,
    )
    .await;
    // A bare LF in the second request of a keep-alive connection: the first
    // is answered, the second refused, the connection closed.
    let a = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\nHost: x\n\n",
    )
    .await;
    assert!(a.text.starts_with("HTTP/1.1 200 OK"), "{}", a.text);
    assert!(a.text.contains(BAD_REQUEST), "{}", a.text);
    assert!(a.closed);
    assert_eq!(server.requests().await, before + 1);
    assert_eq!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "bare_lf")]
        )
        .await,
        3.0
    );
}

#[tokio::test]
async fn an_invalid_chunk_size_gets_400_and_never_opens_the_servers_breaker() {
    let server = Express::start("bad-chunk");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    let before = server.requests().await;
    // Six malformed bodies: more than the breaker's failure threshold (5).
    let bad_sizes = [
        &b"zz"[..],
        b"-1",
        b"1 2",
        b"ffffffffffffffffffff",
        b"0x5",
        b"g",
    ];
    for bad in bad_sizes {
        let mut req =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        // The head is already on its way to the server when the body turns
        // out to be malformed: that server connection is dropped mid-request
        // (so nothing behind it is ever parsed there) and the client gets 400.
        let a = exchange(addr, &req).await;
        assert_eq!(
            a.status_line(),
            BAD_REQUEST,
            "chunk size {bad:?}: {}",
            a.text
        );
        assert!(a.closed, "connection left open for chunk size {bad:?}");
        assert_eq!(a.text.matches("HTTP/1.1 ").count(), 1, "{}", a.text);
    }
    // At most the cut-off POST itself reached the server, never the smuggled GET.
    let seen = server.requests().await - before;
    assert!(
        seen <= bad_sizes.len() as u64,
        "the server saw {seen} requests"
    );
    // The client's broken bodies say nothing about the server.
    assert_eq!(
        t.server_field("app", &server.addr(), "breaker").await,
        "closed"
    );
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "bad_body")]
        )
        .await,
        bad_sizes.len() as f64
    );
}

#[tokio::test]
async fn http_1_0_with_a_content_length_body_is_forwarded_with_its_body() {
    let server = Express::start("http10");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    let a = exchange(
        addr,
        b"POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(a.text.starts_with("HTTP/1.0 200 OK"), "{}", a.text);
    let body = a.text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["bodyBytes"], 5);
    assert_eq!(v["method"], "POST");
    // HTTP/1.0 without keep-alive: closed after the response.
    assert!(a.closed);
}

fn head_with(extra: &[u8]) -> Vec<u8> {
    let mut r = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    r.extend_from_slice(extra);
    r.extend_from_slice(b"\r\n");
    r
}

#[tokio::test]
async fn oversized_heads_get_431_and_a_huge_uri_gets_431() {
    let server = Express::start("big-heads");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    let before = server.requests().await;
    const TOO_LARGE: &str = "HTTP/1.1 431 Request Header Fields Too Large";

    // Over 64 KiB of headers.
    let mut big = Vec::new();
    for i in 0..70 {
        big.extend_from_slice(format!("X-Fill-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    refused(addr, &head_with(&big), TOO_LARGE).await;

    // More than 100 header lines, each tiny (hyper's limit is 100).
    let mut many = Vec::new();
    for i in 0..101 {
        many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    refused(addr, &head_with(&many), TOO_LARGE).await;
    // 99 + Host is exactly 100: served.
    let mut at_limit = Vec::new();
    for i in 0..99 {
        at_limit.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
    }
    let a = exchange(addr, &head_with(&at_limit)).await;
    assert!(a.text.starts_with("HTTP/1.1 200"), "{}", a.status_line());

    // A 100 KB request target overflows the 64 KiB head buffer before hyper's
    // own URI limit (65,534 bytes, 414) applies, so it is 431 too.
    let uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(100_000));
    refused(addr, uri.as_bytes(), TOO_LARGE).await;

    assert_eq!(server.requests().await, before + 1);
    // Counted when the refused connection ends, which can trail the answer.
    crate::support::eventually(Duration::from_secs(3), "3 refusals counted", || async {
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "head_too_large")],
        )
        .await
            == 3.0
    })
    .await;
    // Other clients are unaffected.
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_slow_head_is_answered_408_and_counted() {
    let server = Express::start("slow-head");
    let t = Tandem::start(&config(&server)).await;
    let addr = t.listener_addr("web").await;
    // client_header is 2s here; the head never completes.
    let a = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(a.status_line(), "HTTP/1.1 408 Request Timeout");
    assert!(a.closed);
    crate::support::eventually(Duration::from_secs(2), "408 counted", || async {
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "client_header")],
        )
        .await
            == 1.0
    })
    .await;
}
