use bytes::BytesMut;
use http::{header, Method, Version};

use super::{parse, BodyKind, HeadError, RequestHead, MAX_HEAD, MAX_HEADERS};

fn ok(s: &str) -> (RequestHead, Vec<u8>) {
    let mut buf = BytesMut::from(s.as_bytes());
    let head = parse(&mut buf).expect("valid").expect("complete");
    (head, buf.to_vec())
}

fn refused(s: &[u8]) -> HeadError {
    let mut buf = BytesMut::from(s);
    parse(&mut buf).expect_err(&String::from_utf8_lossy(s))
}

#[test]
fn a_simple_get_parses_and_leaves_the_rest() {
    let (h, rest) = ok("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next");
    assert_eq!(h.method, Method::GET);
    assert_eq!(h.uri.path(), "/a");
    assert_eq!(h.uri.query(), Some("b=1"));
    assert_eq!(h.version, Version::HTTP_11);
    assert_eq!(h.headers.get(header::HOST).unwrap(), "x");
    let xa: Vec<_> = h.headers.get_all("x-a").iter().collect();
    assert_eq!(xa, ["1", "2"]);
    assert_eq!(h.body, BodyKind::None);
    assert!(h.keep_alive);
    assert!(!h.expect_continue);
    assert_eq!(rest, b"GET /next");
}

#[test]
fn partial_heads_wait_and_oversized_ones_are_too_large() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..]);
    assert_eq!(parse(&mut buf), Ok(None));
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_HEAD + 10, b'a');
    assert_eq!(refused(&big), HeadError::TooLarge);
    let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
    long.resize(MAX_HEAD + 10, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(refused(&long), HeadError::TooLarge);
}

#[test]
fn at_most_100_header_lines() {
    let mut at = String::from("GET / HTTP/1.1\r\n");
    for i in 0..MAX_HEADERS {
        at.push_str(&format!("X-{i}: 1\r\n"));
    }
    let over = format!("{at}X-last: 1\r\n\r\n");
    at.push_str("\r\n");
    assert_eq!(ok(&at).0.headers.len(), MAX_HEADERS);
    assert_eq!(refused(over.as_bytes()), HeadError::TooLarge);
}

#[test]
fn framing_is_read_from_length_or_chunked() {
    assert_eq!(
        ok("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").0.body,
        BodyKind::Length(5)
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0.body,
        BodyKind::None
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .0
            .body,
        BodyKind::Chunked
    );
    // Equal duplicates are one length, sent on once.
    let (h, _) = ok("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n");
    assert_eq!(h.body, BodyKind::Length(5));
    assert_eq!(h.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
}

#[test]
fn ambiguous_framing_is_refused() {
    let cases: &[(&[u8], HeadError)] = &[
        (
            b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::LengthAndEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n",
            HeadError::LengthAndEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 4, 5\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"GET / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            HeadError::Malformed,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            HeadError::Malformed,
        ),
        (b"GET / HTTP/1.1\nHost: x\n\n", HeadError::BareLf),
        (
            b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
            HeadError::BareLf,
        ),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", HeadError::Malformed),
        (
            b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            HeadError::Malformed,
        ),
        (b"G\x01T / HTTP/1.1\r\n\r\n", HeadError::Malformed),
        (
            b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
            HeadError::Malformed,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(refused(input), *want, "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn connection_reuse_follows_version_and_connection_header() {
    assert!(
        !ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
    assert!(
        ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .0
            .keep_alive
    );
    assert!(
        !ok("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n")
            .0
            .keep_alive
    );
}

#[test]
fn expect_continue_is_noticed_on_1_1_only() {
    assert!(
        ok("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .0
            .expect_continue
    );
    assert!(
        !ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .0
            .expect_continue
    );
}

#[test]
fn equal_host_lines_are_one_host() {
    let (h, _) = ok("GET / HTTP/1.1\r\nHost: a\r\nHost: A\r\n\r\n");
    assert_eq!(h.headers.get_all(header::HOST).iter().count(), 1);
}

#[test]
fn absolute_and_asterisk_targets_parse() {
    let (h, _) = ok("GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(h.uri.host(), Some("example.com"));
    assert_eq!(h.uri.path_and_query().unwrap().as_str(), "/p?q");
    let (h, _) = ok("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.method, Method::OPTIONS);
}

#[test]
fn obs_text_values_pass_through() {
    let (h, _) = ok("GET / HTTP/1.1\r\nX-Name: caf\u{e9}\r\n\r\n");
    assert_eq!(
        h.headers.get("x-name").unwrap().as_bytes(),
        "caf\u{e9}".as_bytes()
    );
}
