//! The proxy -> server HTTP/1.1 leg as a user sees it: framing of responses
//! and requests, connection reuse, informational and early responses, invalid
//! responses, and the headers that cross. These tests pin today's behaviour so
//! that a rewrite of the leg (its client codec and pool) can be checked
//! against them.
//!
//! Cases a real server produces run against Express; everything else against
//! a [`raw::RawServer`] that writes exact bytes and counts the connections it
//! accepted. tandem runs with one worker, so every request of a test shares
//! one server-connection pool and a reused connection is observable, and with
//! `retries: 0`, so each failure reaches the client as is.
//!
//! - this file: Express bodies both ways (chunked, HEAD, uploads, Expect)
//! - `framing`: bodyless, close-delimited, informational, early and invalid
//!   responses, and connections the server closes
//! - `headers`: what tandem forwards in each direction, byte for byte

mod framing;
mod headers;
mod raw;

use sha2::{Digest, Sha256};

use crate::support::{client, web_config, Express, Tandem};
use raw::RawClient;

/// One worker and no retries; see the module docs.
fn config(servers: &[String]) -> String {
    format!(
        "workers: 1\n{}",
        web_config("", "    retries: 0\n", servers)
    )
}

/// The bytes Express's `/bytes/N` and `/chunked/N` send: byte i is i % 251.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn upstream_errors(t: &Tandem) -> f64 {
    t.metric("tandem_upstream_errors_total", &[]).await
}

/// The local port of tandem's connection to Express that carried this request.
async fn server_conn_port(c: &reqwest::Client, url: &str) -> u64 {
    let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
    v["remotePort"].as_u64().unwrap()
}

#[tokio::test]
async fn chunked_responses_arrive_intact_and_the_connection_is_reused_after_them() {
    let server = Express::start("upleg-chunked");
    let t = Tandem::start(&config(&[server.addr()])).await;
    let base = t.url("web", "").await;
    let c = client();
    let port = server_conn_port(&c, &format!("{base}/echo")).await;
    for round in 0..3 {
        for n in [0, 1, 100_000, 3 * 1024 * 1024] {
            let r = c.get(format!("{base}/chunked/{n}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            assert!(
                body == pattern(n),
                "round {round}: /chunked/{n} gave {} differing bytes",
                body.len()
            );
            assert_eq!(
                server_conn_port(&c, &format!("{base}/echo")).await,
                port,
                "round {round}: a new server connection after /chunked/{n}"
            );
        }
    }
    assert_eq!(upstream_errors(&t).await, 0.0);
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_both_connections_in_sync() {
    let server = Express::start("upleg-head");
    let t = Tandem::start(&config(&[server.addr()])).await;
    let mut rc = RawClient::connect(t.listener_addr("web").await).await;
    let mut port = None;
    for path in ["/bytes/1000", "/chunked/1000"] {
        rc.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let head = rc.response(true).await;
        assert_eq!(head.status, 200, "HEAD {path}");
        if path == "/bytes/1000" {
            assert_eq!(head.header("content-length"), Some(&b"1000"[..]));
        }
        // Any body bytes after the HEAD response would break this parse.
        rc.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let get = rc.response(false).await;
        assert_eq!(get.status, 200, "GET {path} after HEAD");
        assert!(get.body == pattern(1000), "GET {path} after HEAD: body");

        rc.send(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let echo: serde_json::Value = serde_json::from_slice(&rc.response(false).await.body)
            .expect("echo json: the connection is out of step");
        let p = echo["remotePort"].as_u64().unwrap();
        assert_eq!(
            *port.get_or_insert(p),
            p,
            "one server connection throughout"
        );
    }
    assert_eq!(upstream_errors(&t).await, 0.0);
}

async fn upload(c: &reqwest::Client, url: &str, body: reqwest::Body) -> serde_json::Value {
    let r = c.post(url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn uploads_with_a_length_or_chunked_arrive_intact() {
    let server = Express::start("upleg-upload");
    let t = Tandem::start(&config(&[server.addr()])).await;
    let url = t.url("web", "/upload").await;
    let c = client();
    for n in [0, 10, 5 * 1024 * 1024] {
        let body = pattern(n);
        let v = upload(&c, &url, body.clone().into()).await;
        assert_eq!(v["bytes"], n, "{n} bytes with Content-Length");
        assert_eq!(v["sha256"], sha256_hex(&body));
    }
    // No length: the request goes out chunked.
    let body = pattern(1024 * 1024);
    let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let v = upload(&c, &url, reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(v["bytes"], body.len());
    assert_eq!(v["sha256"], sha256_hex(&body));
    assert_eq!(upstream_errors(&t).await, 0.0);
}

#[tokio::test]
async fn an_expect_100_continue_upload_gets_its_final_200() {
    let server = Express::start("upleg-expect");
    let t = Tandem::start(&config(&[server.addr()])).await;
    let mut rc = RawClient::connect(t.listener_addr("web").await).await;
    let body = pattern(300_000);
    rc.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    // tandem may answer 100 or just wait for the body, as curl allows for.
    if let Ok((status, _)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), rc.head()).await
    {
        assert_eq!(status, 100, "a final answer before the body was sent");
    }
    rc.send(&body).await;
    let r = rc.response(false).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["bytes"], body.len());
    assert_eq!(v["sha256"], sha256_hex(&body));
}
