//! Response heads to clients: framing decided, head written.
//!
//! [`framing`] decides how a response body is delimited on the client's
//! connection (RFC 9112 §6): none for HEAD, 1xx, 204 and 304; the length
//! when the server said it or the body knows it; chunked for an HTTP/1.1
//! client otherwise; until close for an HTTP/1.0 one. [`write_head`] writes
//! the status line in the client's version, the end-to-end headers the
//! response carries (the server leg already dropped hop-by-hop ones), the
//! framing header, `Connection` when the connection closes (or stays open
//! for HTTP/1.0), and a `Date` when there is none. Pure: tested below.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{StatusCode, Version};

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes at all.
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// What the response head depends on besides the response itself.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// The request's version: an HTTP/1.0 client gets an HTTP/1.0 answer.
    pub version: Version,
    pub head_request: bool,
}

/// The framing of a response with `status` and `headers` whose body knows
/// its exact length (`exact`) or not.
pub fn framing(
    ex: Exchange,
    status: StatusCode,
    headers: &HeaderMap,
    exact: Option<u64>,
) -> Framing {
    if ex.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::Empty;
    }
    if let Some(n) = exact.or_else(|| content_length(headers)) {
        return Framing::Length(n);
    }
    if ex.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Writes the response head. `close`: the connection closes after this
/// response (said with `Connection: close`); otherwise an HTTP/1.0 client is
/// told `Connection: keep-alive`. A 101 head goes out as the server sent it.
pub fn write_head(
    out: &mut Vec<u8>,
    ex: Exchange,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(if ex.version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut has_length = false;
    for (name, value) in headers {
        if *name == header::CONNECTION && !upgrade {
            continue;
        }
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if matches!(framing, Framing::Chunked | Framing::Close) {
                continue;
            }
            has_length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) if !has_length => {
            out.extend_from_slice(b"content-length: ");
            let mut digits = itoa_buf();
            out.extend_from_slice(format_u64(n, &mut digits));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    if !upgrade {
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if ex.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, written at the end of `buf`.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second
    /// per worker thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Calls `f` with the current IMF-fixdate.
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            cached
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cached.0 = secs;
        }
        f(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const H11: Exchange = Exchange {
        version: Version::HTTP_11,
        head_request: false,
    };

    fn head(
        ex: Exchange,
        status: u16,
        headers: &[(&str, &str)],
        exact: Option<u64>,
        close: bool,
    ) -> String {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let status = StatusCode::from_u16(status).unwrap();
        let f = framing(ex, status, &map, exact);
        let mut out = Vec::new();
        write_head(&mut out, ex, status, &map, f, close);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_known_length_is_said_once() {
        let h = head(
            H11,
            200,
            &[("content-length", "5"), ("date", "x")],
            Some(5),
            false,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: x\r\n\r\n");
        let h = head(H11, 503, &[("date", "x")], Some(12), true);
        assert_eq!(
            h,
            "HTTP/1.1 503 Service Unavailable\r\ndate: x\r\ncontent-length: 12\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_for_1_1_and_close_delimited_for_1_0() {
        let h = head(H11, 200, &[("date", "x")], None, false);
        assert!(h.contains("transfer-encoding: chunked\r\n"), "{h}");
        let h10 = Exchange {
            version: Version::HTTP_10,
            head_request: false,
        };
        let ex = head(h10, 200, &[("date", "x")], None, true);
        assert_eq!(
            ex,
            "HTTP/1.0 200 OK\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        let kept = head(h10, 200, &[("date", "x")], Some(2), false);
        assert!(kept.ends_with("connection: keep-alive\r\n\r\n"), "{kept}");
    }

    #[test]
    fn bodyless_answers_get_no_framing() {
        let head_req = Exchange {
            version: Version::HTTP_11,
            head_request: true,
        };
        // A HEAD answer keeps the server's length of the body it did not send.
        let h = head(
            head_req,
            200,
            &[("content-length", "99"), ("date", "x")],
            Some(0),
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ncontent-length: 99\r\ndate: x\r\n\r\n"
        );
        for status in [204, 304] {
            let h = head(H11, status, &[("date", "x")], None, false);
            assert!(
                !h.contains("content-length") && !h.contains("transfer-encoding"),
                "{h}"
            );
        }
    }

    #[test]
    fn a_switching_protocols_head_keeps_its_connection_header() {
        let h = head(
            H11,
            101,
            &[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("date", "x"),
            ],
            None,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\ndate: x\r\n\r\n"
        );
    }

    #[test]
    fn a_date_is_added_when_missing() {
        let h = head(H11, 200, &[], Some(0), false);
        let date = h.lines().find(|l| l.starts_with("date: ")).unwrap();
        assert!(
            httpdate::parse_http_date(&date["date: ".len()..]).is_ok(),
            "{date}"
        );
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        let mut b = itoa_buf();
        assert_eq!(format_u64(0, &mut b), b"0");
        let mut b = itoa_buf();
        assert_eq!(format_u64(u64::MAX, &mut b), b"18446744073709551615");
    }
}
