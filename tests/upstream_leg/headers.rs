//! Headers across the upstream leg, read byte for byte at both ends: what a
//! server's response head becomes for the client, and what a client's request
//! head becomes for the server.

use super::config;
use super::raw::{header_lines, ok, RawClient, RawServer, Reply};
use crate::support::Tandem;

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

#[tokio::test]
async fn response_headers_keep_repeats_and_raw_bytes_and_lose_hop_by_hop() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Set-Cookie: a=1; Path=/\r\n\
        Set-Cookie: b=2\r\n\
        X-Obs: caf\xe9 \x80\xff\r\n\
        Keep-Alive: timeout=5\r\n\
        Connection: x-foo\r\n\
        X-Foo: bar\r\n\
        X-Keep: yes\r\n\
        Content-Length: 2\r\n\r\nok";
    let server = RawServer::start(move |_| Reply::keep(head)).await;
    let t = Tandem::start(&config(&[server.addr.to_string()])).await;
    let mut rc = RawClient::connect(t.listener_addr("web").await).await;
    rc.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = rc.response(false).await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    let h = &r.headers;
    assert_eq!(
        values(h, "set-cookie"),
        [&b"a=1; Path=/"[..], b"b=2"],
        "two Set-Cookie lines, in order"
    );
    assert_eq!(values(h, "x-obs"), [&b"caf\xe9 \x80\xff"[..]]);
    assert_eq!(values(h, "x-keep"), [&b"yes"[..]]);
    assert!(values(h, "keep-alive").is_empty(), "{h:?}");
    assert!(values(h, "x-foo").is_empty(), "{h:?}");
    for c in values(h, "connection") {
        assert!(!c.eq_ignore_ascii_case(b"x-foo"), "{h:?}");
    }
}

#[tokio::test]
async fn the_request_head_reaching_the_server_is_exact_and_forwarded() {
    let server = RawServer::start(|_| Reply::keep(ok(b"ok"))).await;
    let t = Tandem::start(&config(&[server.addr.to_string()])).await;
    let mut rc = RawClient::connect(t.listener_addr("web").await).await;
    rc.send(
        b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.test\r\nX-Dup: 1\r\nX-Dup: 2\r\n\
          Connection: x-secret\r\nX-Secret: s\r\n\r\n",
    )
    .await;
    assert_eq!(rc.response(false).await.status, 200);

    let heads = server.heads();
    assert_eq!(heads.len(), 1);
    let head = &heads[0];
    let text = String::from_utf8_lossy(head);
    assert!(
        text.starts_with("GET /a/b?x=1&y=%20 HTTP/1.1\r\n"),
        "{text}"
    );
    let h = header_lines(head);
    assert_eq!(values(&h, "host"), [&b"shop.test"[..]], "{text}");
    // Two lines or one comma-joined line are the same field (RFC 9110 §5.3).
    let dup: Vec<String> = values(&h, "x-dup")
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(dup, ["1", "2"], "{text}");
    assert!(values(&h, "x-secret").is_empty(), "{text}");
    for c in values(&h, "connection") {
        assert!(
            !String::from_utf8_lossy(c)
                .to_ascii_lowercase()
                .contains("x-secret"),
            "{text}"
        );
    }
    let xff = values(&h, "x-forwarded-for");
    assert_eq!(xff.len(), 1, "{text}");
    assert!(xff[0].ends_with(b"127.0.0.1"), "{text}");
    assert_eq!(values(&h, "x-forwarded-proto"), [&b"http"[..]], "{text}");
    let id = values(&h, "x-request-id");
    assert!(id.len() == 1 && !id[0].is_empty(), "{text}");
}

/// An HTTP/1.0 client may omit Host; forwarded as HTTP/1.1 the request still
/// needs one (strict servers such as nginx answer 400 without it).
#[tokio::test]
async fn an_http10_request_without_host_reaches_the_server_with_one() {
    let server = RawServer::start(|_| Reply::keep(ok(b"ok"))).await;
    let t = Tandem::start(&config(&[server.addr.to_string()])).await;
    let mut rc = RawClient::connect(t.listener_addr("web").await).await;
    rc.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(rc.response(false).await.status, 200);
    let heads = server.heads();
    let text = String::from_utf8_lossy(&heads[0]);
    assert!(text.starts_with("GET /old HTTP/1.1\r\n"), "{text}");
    assert_eq!(
        values(&header_lines(&heads[0]), "host"),
        [&b""[..]],
        "{text}"
    );
}
