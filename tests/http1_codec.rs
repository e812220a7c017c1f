//! tandem's own HTTP/1.1 server codec, over raw sockets: pipelined requests
//! answered in order, `Expect: 100-continue`, HTTP/1.0 keep-alive, chunked and
//! close-delimited responses, HEAD, and a request read to its end when the
//! server answered before the upload was over.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{web_config, Express, Tandem};

async fn start(name: &str) -> (Express, Tandem, SocketAddr) {
    let server = Express::start(name);
    let t = Tandem::start(&web_config("", "    retries: 0\n", &[server.addr()])).await;
    let addr = t.listener_addr("web").await;
    (server, t, addr)
}

/// Reads one response (head and a body framed by Content-Length or chunked)
/// off `s`, given what was read ahead in `buf`; returns (head, body).
async fn read_response(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> (String, Vec<u8>) {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if head_request || head.starts_with("HTTP/1.1 100") || head.starts_with("HTTP/1.1 204") {
        return (head, body);
    }
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap())
    {
        while buf.len() < len {
            fill(s, buf).await;
        }
        body.extend(buf.drain(..len));
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(s, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(s, buf).await;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    } else {
        // Until close.
        s.read_to_end(buf).await.unwrap();
        body.append(buf);
    }
    (head, body)
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
        .await
        .expect("response within 5 s")
        .unwrap();
    assert!(
        n > 0,
        "connection closed mid-response: {}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (server, _t, addr) = start("pipeline").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Five requests in one write: GETs, a POST with a length, a chunked POST.
    let batch = b"GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /echo/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        GET /echo/3 HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /echo/4 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n\
        HEAD /echo/5 HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /echo/6 HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(batch).await.unwrap();
    let mut buf = Vec::new();
    let expected = [("GET", 1, 0), ("POST", 2, 5), ("GET", 3, 0), ("POST", 4, 7)];
    for (method, n, bytes) in expected {
        let (head, body) = read_response(&mut s, &mut buf, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let v = json(&body);
        assert_eq!(v["url"], format!("/echo/{n}"));
        assert_eq!(v["method"], method);
        assert_eq!(v["bodyBytes"], bytes);
    }
    let (head, body) = read_response(&mut s, &mut buf, true).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty());
    let (_, body) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(json(&body)["url"], "/echo/6");
    assert!(buf.is_empty(), "bytes after the last response: {buf:?}");
    assert_eq!(server.requests().await, 6);
}

#[tokio::test]
async fn trailers_of_a_chunked_upload_reach_the_server() {
    let (_server, _t, addr) = start("trailers").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
          3\r\nabc\r\n0\r\nX-Sum: 294\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v = json(&body);
    assert_eq!(v["bodyBytes"], 3);
    assert_eq!(v["trailers"]["x-sum"], "294", "{v}");
}

#[tokio::test]
async fn expect_100_continue_gets_continue_before_the_body_is_sent() {
    let (_server, _t, addr) = start("continue").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    // The client sends nothing more until it is told to.
    let (interim, _) = read_response(&mut s, &mut buf, false).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    s.write_all(b"hello world").await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["bytes"], 11);
}

#[tokio::test]
async fn http_1_0_keep_alive_is_honoured_and_unknown_lengths_close() {
    let (_server, _t, addr) = start("http10").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..2 {
        s.write_all(
            format!("GET /echo/{i} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let (head, body) = read_response(&mut s, &mut buf, false).await;
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: keep-alive"),
            "{head}"
        );
        assert_eq!(json(&body)["url"], format!("/echo/{i}"));
    }
    // A body of unknown length cannot be chunked for HTTP/1.0: it runs to the close.
    s.write_all(b"GET /chunked/70000 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body.len(), 70000);
}

#[tokio::test]
async fn unknown_lengths_are_chunked_for_http_1_1_and_the_connection_stays() {
    let (_server, _t, addr) = start("chunked").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for n in [0usize, 1, 100_000] {
        s.write_all(format!("GET /chunked/{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = read_response(&mut s, &mut buf, false).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), n, "{head}");
    }
}

#[tokio::test]
async fn a_body_the_server_did_not_wait_for_is_read_off_and_the_connection_reused() {
    let (_server, _t, addr) = start("early").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The catch-all route answers without reading the body: the rest of the
    // upload arrives after the answer and must not be taken for a request.
    s.write_all(b"POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(&vec![b'G'; 200_000]).await.unwrap();
    s.write_all(b"GET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["url"], "/echo/next");
}

#[tokio::test]
async fn responses_carry_a_date() {
    let (_server, _t, addr) = start("date").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf, false).await;
    assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
}

#[tokio::test]
async fn differing_hosts_and_connect_are_refused() {
    let (server, t, addr) = start("refused").await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
            .await
            .expect("closed after the refusal")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    }
    assert_eq!(server.requests().await, 0);
    assert_eq!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "malformed_head")]
        )
        .await,
        2.0
    );
}
