//! Response framing on the upstream leg, against raw servers: bodyless
//! statuses, close-delimited bodies, `Connection: close`, informational
//! responses, an early answer to an upload, invalid responses, and a server
//! that closes a kept-alive connection right after answering.

use std::time::Duration;

use super::raw::{ok, RawServer, Reply, Then};
use super::{config, pattern, upstream_errors};
use crate::support::{client, Tandem};

async fn tandem_for(server: &RawServer) -> (Tandem, String) {
    let t = Tandem::start(&config(&[server.addr.to_string()])).await;
    let url = t.url("web", "/").await;
    (t, url)
}

/// GETs `url` and returns (status, body), the body read to its end.
async fn get(c: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test]
async fn no_content_and_not_modified_reuse_the_server_connection() {
    let server = RawServer::start(|n| {
        Reply::keep(match n {
            0 => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            1 => b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec(),
            _ => ok(b"after"),
        })
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    assert_eq!(get(&c, &url).await, (204, vec![]));
    let r = c
        .get(&url)
        .header("If-None-Match", "\"x\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"x\"");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(get(&c, &url).await, (200, b"after".to_vec()));
    assert_eq!(
        server.accepted(),
        1,
        "204 and 304 left the connection usable"
    );
    assert_eq!(upstream_errors(&t).await, 0.0);
}

#[tokio::test]
async fn close_delimited_bodies_arrive_whole_and_the_next_request_reconnects() {
    let body = pattern(100_000);
    let b = body.clone();
    let server = RawServer::start(move |n| match n {
        0 => Reply::close(with_body(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            &b,
        )),
        1 => Reply::close(with_body("HTTP/1.0 200 OK\r\n\r\n", &b)),
        _ => Reply::keep(ok(b"next")),
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    for (i, version) in ["HTTP/1.1", "HTTP/1.0"].iter().enumerate() {
        let (status, got) = get(&c, &url).await;
        assert_eq!(status, 200, "{version}");
        assert!(
            got == body,
            "{version}: {} bytes, not the 100000 sent",
            got.len()
        );
        assert_eq!(server.accepted(), i + 1);
    }
    assert_eq!(get(&c, &url).await, (200, b"next".to_vec()));
    assert_eq!(server.accepted(), 3);
    assert_eq!(upstream_errors(&t).await, 0.0);
}

#[tokio::test]
async fn a_response_with_connection_close_is_not_reused_even_if_the_server_keeps_it() {
    // The server leaves the socket open: only tandem honouring the header
    // makes the second request open a new connection.
    let server = RawServer::start(|n| match n {
        0 => Reply::keep(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst".to_vec(),
        ),
        _ => Reply::keep(ok(b"second")),
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    assert_eq!(get(&c, &url).await, (200, b"first".to_vec()));
    assert_eq!(get(&c, &url).await, (200, b"second".to_vec()));
    assert_eq!(server.accepted(), 2);
    assert_eq!(upstream_errors(&t).await, 0.0);
}

#[tokio::test]
async fn an_informational_100_before_the_response_is_skipped() {
    let server = RawServer::start(|n| match n {
        0 => Reply::keep(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        _ => Reply::keep(ok(b"again")),
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    assert_eq!(get(&c, &url).await, (200, b"hello".to_vec()));
    assert_eq!(get(&c, &url).await, (200, b"again".to_vec()));
    assert_eq!(server.accepted(), 1);
    assert_eq!(upstream_errors(&t).await, 0.0);
}

const TOO_LARGE: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large";

/// POSTs 8 MiB while the server answers 413 after the head alone, then `then`;
/// returns what the client saw (status and body, or the error) within a bound.
/// tandem and the server are handed back so that a failing assertion in the
/// caller still prints tandem's log.
async fn early_answer(then: Then) -> (Result<(u16, Vec<u8>), String>, Tandem, RawServer) {
    let server = RawServer::start(move |n| match n {
        0 => Reply::keep(TOO_LARGE).before_body().then(then),
        _ => Reply::keep(ok(b"fine")),
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    let upload = async {
        let r = c.post(&url).body(pattern(8 << 20)).send().await;
        let r = r.map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| format!("{e:?}"))?;
        Ok((status, body.to_vec()))
    };
    let seen = tokio::time::timeout(Duration::from_secs(20), upload)
        .await
        .expect("tandem hung on an early answer");
    // tandem stays healthy: a new request gets a new connection and its answer.
    let next = tokio::time::timeout(Duration::from_secs(10), get(&c, &url));
    assert_eq!(
        next.await.expect("next request hung"),
        (200, b"fine".to_vec())
    );
    (seen, t, server)
}

#[tokio::test]
async fn an_early_413_with_lingering_close_reaches_the_uploading_client() {
    let (seen, _t, _server) = early_answer(Then::Linger).await;
    assert_eq!(seen, Ok((413, b"too large".to_vec())));
}

#[tokio::test]
async fn an_early_413_and_abrupt_close_never_hangs_tandem() {
    // Unread upload bytes make the server's close a reset (RFC 9112 §9.6
    // warns of exactly this), so the 413 may be lost: tandem may answer it,
    // answer 502 for the reset, or the client's upload may be cut. tandem
    // keeps reading for the answer after a failed write, so the 413 usually
    // arrives.
    let (seen, _t, _server) = early_answer(Then::Close).await;
    if let Ok(answer) = seen {
        assert!(
            answer == (413, b"too large".to_vec()) || answer.0 == 502,
            "{} {:?}",
            answer.0,
            String::from_utf8_lossy(&answer.1)
        );
    }
}

/// Each invalid response gets 502 and is counted; the next request (a new
/// connection to the same server) succeeds.
async fn invalid_response_gets_502(what: &str, response: Vec<u8>) {
    let server = RawServer::start(move |n| match n {
        0 => Reply::close(response.clone()),
        _ => Reply::keep(ok(b"recovered")),
    })
    .await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    let (status, _) = get(&c, &url).await;
    assert_eq!(status, 502, "{what}");
    let counted = t
        .metric(
            "tandem_upstream_errors_total",
            &[("kind", "invalid_response")],
        )
        .await;
    assert_eq!(counted, 1.0, "{what}: {}", t.metrics().await);
    assert_eq!(get(&c, &url).await, (200, b"recovered".to_vec()), "{what}");
}

#[tokio::test]
async fn a_garbage_response_gets_502() {
    invalid_response_gets_502("garbage", b"HELLO\r\n\r\n".to_vec()).await;
}

#[tokio::test]
async fn differing_content_lengths_in_a_response_get_502() {
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    invalid_response_gets_502("two Content-Length values", r.to_vec()).await;
}

fn big_head(total: usize) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    let mut i = 0;
    while head.len() < total {
        head.extend_from_slice(format!("X-Fill-{i}: {}\r\n", "a".repeat(16 * 1024)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(b"\r\nok");
    head
}

#[tokio::test]
async fn a_response_head_over_100_kib_gets_502() {
    invalid_response_gets_502("a 100 KiB+ head", big_head(100 * 1024 + 1)).await;
}

#[tokio::test]
async fn a_response_head_over_1_mib_gets_502() {
    invalid_response_gets_502("a 1 MiB+ head", big_head(1024 * 1024 + 1)).await;
}

#[tokio::test]
async fn a_truncated_body_is_aborted_not_passed_off_as_complete() {
    let b = pattern(500);
    let server = RawServer::start(move |n| match n {
        0 => Reply::close(with_body(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            &b,
        )),
        _ => Reply::keep(ok(b"recovered")),
    })
    .await;
    let (_t, url) = tandem_for(&server).await;
    let c = client();
    // Either the 200 head goes out and the body breaks, or (when the whole
    // truncated response was already read) the connection breaks before the
    // head is flushed: never a complete-looking short response.
    if let Ok(r) = c.get(&url).send().await {
        assert_eq!(r.status(), 200);
        if let Ok(body) = r.bytes().await {
            panic!("a silent short 200: {} of 1000 bytes", body.len());
        }
    }
    assert_eq!(get(&c, &url).await, (200, b"recovered".to_vec()));
}

#[tokio::test]
async fn a_server_closing_right_after_a_keep_alive_response_is_no_failure() {
    // No `Connection: close`: the close comes right behind each response, as
    // when a server's keep-alive timer fires just after it answered.
    let server = RawServer::start(|n| Reply::close(ok(format!("n{n}").as_bytes()))).await;
    let (t, url) = tandem_for(&server).await;
    let c = client();
    for n in 0..20 {
        assert_eq!(get(&c, &url).await, (200, format!("n{n}").into_bytes()));
    }
    assert_eq!(server.accepted(), 20);
    assert_eq!(upstream_errors(&t).await, 0.0);
}
