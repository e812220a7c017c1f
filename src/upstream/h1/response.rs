//! Response heads from servers: parse, frame, filter.
//!
//! [`parse`] turns the bytes at the front of a connection's read buffer into a
//! [`Head`] once the whole head is there: status, version, the headers a
//! client may see (hop-by-hop ones are dropped on the way, so nothing strips
//! them later), how the body is framed and whether the connection may be used
//! again afterwards. Header values are slices of the frozen head bytes, not
//! copies.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use super::{MAX_HEAD, MAX_HEADERS};

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD requests, 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    Close,
    /// 101 Switching Protocols: the connection becomes a tunnel.
    Upgrade,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// End-to-end headers only.
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once the body has ended.
    pub keep_alive: bool,
    /// The idle time the server allows (`Keep-Alive: timeout=N`), minus half
    /// a second so our close comes first.
    pub keep_alive_timeout: Option<Duration>,
}

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, a bad status, bad header syntax, too many headers.
    Syntax,
    /// Larger than [`MAX_HEAD`].
    TooLarge,
    /// Conflicting or unparsable `Content-Length`.
    BadLength,
    /// 101 without having asked to upgrade.
    UnexpectedUpgrade,
}

/// What the head said about hop-by-hop matters, read in a first pass.
#[derive(Default)]
struct Hop {
    close: bool,
    keep_alive: bool,
    /// Names listed in `Connection` (other than close/keep-alive/upgrade).
    named: Vec<Range<usize>>,
    chunked_last: Option<bool>,
    length: Option<Result<u64, ()>>,
    timeout: Option<Duration>,
}

/// Parses a head from the front of `buf`. `Ok(None)`: not complete yet.
/// On success the head's bytes are removed from `buf`; what follows (the
/// start of the body) stays.
pub fn parse(
    buf: &mut BytesMut,
    head_request: bool,
    upgrade_request: bool,
) -> Result<Option<Head>, HeadError> {
    // Uninitialised storage: a zeroed 3 KiB array per response showed up as
    // a memset of 15 % of the proxy's instructions.
    let mut storage = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut storage,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Syntax),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let version = match res.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Syntax),
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Syntax)?;
    let base = buf.as_ptr() as usize;
    let range_of = |s: &[u8]| {
        let start = (s.as_ptr() as usize).saturating_sub(base);
        start..start + s.len()
    };

    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    if upgrade && !upgrade_request {
        return Err(HeadError::UnexpectedUpgrade);
    }

    // One pass: each name is classified once (a standard name is an enum,
    // so the comparisons below are integer compares); hop-by-hop fields are
    // read for what they say and left out; the rest are noted by position,
    // inline for the usual few, on the heap beyond. Values become slices of
    // the head once it is frozen (parsed slices borrow it until then).
    let mut hop = Hop::default();
    let mut inline: [Option<Field>; 24] = [const { None }; 24];
    let mut spill: Vec<Field> = Vec::new();
    let mut n = 0;
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Syntax)?;
        if name == header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    hop.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    hop.keep_alive = true;
                } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"upgrade") {
                    hop.named.push(range_of(t));
                }
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .next();
            hop.chunked_last = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
            continue;
        }
        if name == header::CONTENT_LENGTH {
            hop.length = Some(merge_length(hop.length, h.value));
        } else if name == KEEP_ALIVE {
            hop.timeout = keep_alive_timeout(h.value).or(hop.timeout);
            continue;
        } else if name == header::TE
            || name == header::TRAILER
            || name == PROXY_CONNECTION
            || (name == header::UPGRADE && !upgrade)
        {
            continue;
        }
        let field = Field {
            name,
            value: range_of(h.value),
        };
        match inline.get_mut(n) {
            Some(slot) => *slot = Some(field),
            None => spill.push(field),
        }
        n += 1;
    }

    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let (framing, mut keep_alive) = if upgrade {
        (Framing::Upgrade, false)
    } else if bodyless {
        (Framing::Empty, true)
    } else if let Some(chunked) = hop.chunked_last {
        // Transfer-Encoding wins over Content-Length; a message with both
        // may have been smuggled, so the connection is not reused.
        let both = hop.length.is_some();
        if chunked && version == Version::HTTP_11 {
            (Framing::Chunked, !both)
        } else {
            (Framing::Close, false)
        }
    } else {
        match hop.length {
            Some(Ok(n)) => (Framing::Length(n), true),
            Some(Err(())) => return Err(HeadError::BadLength),
            None => (Framing::Close, false),
        }
    };
    keep_alive &= if version == Version::HTTP_11 {
        !hop.close
    } else {
        hop.keep_alive && !hop.close
    };

    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(n + usize::from(upgrade));
    // Taken out in place: moving the whole inline array costs a copy.
    let fields = inline.iter_mut().filter_map(Option::take).chain(spill);
    // With Transfer-Encoding the body is decoded (or read to close), so a
    // Content-Length that came along no longer describes what the client gets
    // (RFC 9112 §6.3: it must not be forwarded).
    let drop_length = hop.chunked_last.is_some();
    for f in fields {
        if !hop.named.is_empty() && is_named(&f.name, &hop.named, &head) {
            continue;
        }
        if drop_length && f.name == header::CONTENT_LENGTH {
            continue;
        }
        let value =
            HeaderValue::from_maybe_shared(head.slice(f.value)).map_err(|_| HeadError::Syntax)?;
        headers.append(f.name, value);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
        keep_alive_timeout: hop.timeout,
    }))
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// An end-to-end field: its name, and where its value sits in the head.
struct Field {
    name: HeaderName,
    value: Range<usize>,
}

/// True when `Connection` named this header (it concerns this hop only).
fn is_named(name: &HeaderName, named: &[Range<usize>], head: &Bytes) -> bool {
    named.iter().any(|r| {
        head.get(r.clone())
            .is_some_and(|t| name.as_str().as_bytes().eq_ignore_ascii_case(t))
    })
}

/// Folds one `Content-Length` field into what was seen so far: every value
/// (several fields, or a comma-separated list) must be the same number.
fn merge_length(seen: Option<Result<u64, ()>>, value: &[u8]) -> Result<u64, ()> {
    let mut current = match seen {
        Some(Err(())) => return Err(()),
        Some(Ok(n)) => Some(n),
        None => None,
    };
    for part in value.split(|&b| b == b',') {
        let n = parse_decimal(part.trim_ascii()).ok_or(())?;
        match current {
            Some(c) if c != n => return Err(()),
            _ => current = Some(n),
        }
    }
    current.ok_or(())
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

/// `Keep-Alive: timeout=N[, max=M]` -> N seconds less half a second.
fn keep_alive_timeout(value: &[u8]) -> Option<Duration> {
    value.split(|&b| b == b',').find_map(|part| {
        let mut kv = part.splitn(2, |&b| b == b'=');
        let k = kv.next()?.trim_ascii();
        let v = kv.next()?.trim_ascii();
        if !k.eq_ignore_ascii_case(b"timeout") {
            return None;
        }
        let secs = parse_decimal(v)?;
        Some(Duration::from_millis(
            secs.saturating_mul(1000).saturating_sub(500),
        ))
    })
}

/// The head bytes the parser kept, for tests.
#[cfg(test)]
fn parse_str(s: &str, head_request: bool) -> Result<Option<(Head, Bytes)>, HeadError> {
    let mut buf = BytesMut::from(s.as_bytes());
    Ok(parse(&mut buf, head_request, false)?.map(|h| (h, buf.freeze())))
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Head, Bytes) {
        parse_str(s, false).unwrap().unwrap()
    }

    #[test]
    fn content_length_response_keeps_its_body_bytes_in_the_buffer() {
        let (h, rest) = ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(h.headers["content-length"], "5");
        assert_eq!(&rest[..], b"hello");
    }

    #[test]
    fn partial_heads_wait_for_more_and_oversized_ones_fail() {
        assert!(parse_str("HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none());
        let big = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse_str(&big, false).err(), Some(HeadError::TooLarge));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let s = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(parse_str(&s, false).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn garbage_is_a_syntax_error() {
        assert_eq!(
            parse_str("HELLO\r\n\r\n", false).err(),
            Some(HeadError::Syntax)
        );
        assert_eq!(
            parse_str("HTTP/2.0 200 OK\r\n\r\n", false).err(),
            Some(HeadError::Syntax)
        );
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let f = |s: &str, head: bool| parse_str(s, head).unwrap().unwrap().0;
        assert_eq!(
            f("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 304 NM\r\nContent-Length: 9\r\n\r\n", false).framing,
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).framing,
            Framing::Empty
        );
        assert_eq!(
            f("HTTP/1.1 100 Continue\r\n\r\n", false).framing,
            Framing::Empty
        );
        let chunked = f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(chunked.keep_alive);
        assert!(!chunked.headers.contains_key("transfer-encoding"));
        let both = f(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.keep_alive, "CL + TE: never reuse");
        assert!(
            !both.headers.contains_key("content-length"),
            "the length of a chunked body is not forwarded"
        );
        let not_last = f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false,
        );
        assert_eq!(
            (not_last.framing, not_last.keep_alive),
            (Framing::Close, false)
        );
        let until_close = f("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(
            (until_close.framing, until_close.keep_alive),
            (Framing::Close, false)
        );
    }

    #[test]
    fn content_length_values_must_agree() {
        let f = |s: &str| parse_str(s, false).map(|o| o.unwrap().0.framing);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::Length(3))
        );
        for bad in ["3, 4", "-1", "", "1x", "99999999999999999999"] {
            let s = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(f(&s), Err(HeadError::BadLength), "{bad:?}");
        }
        let s = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(f(s), Err(HeadError::BadLength));
    }

    #[test]
    fn connection_reuse_follows_version_and_connection_header() {
        let ka = |s: &str| parse_str(s, false).unwrap().unwrap().0.keep_alive;
        assert!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        let h = parse_str(
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_others_kept_in_order() {
        let (h, _) = ok(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Connection: keep-alive, X-Secret\r\n",
            "X-Secret: 1\r\nKeep-Alive: timeout=5, max=100\r\n",
            "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            "Proxy-Connection: x\r\nTrailer: x\r\nUpgrade: h2c\r\n",
            "Content-Length: 0\r\n\r\n"
        ));
        let names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["set-cookie", "content-length"]);
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.keep_alive_timeout, Some(Duration::from_millis(4500)));
    }

    #[test]
    fn obs_text_values_pass_through() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n"[..]);
        let h = parse(&mut buf, false, false).unwrap().unwrap();
        assert_eq!(h.headers["x-name"].as_bytes(), b"caf\xe9");
    }

    #[test]
    fn switching_protocols_only_when_asked_and_keeps_upgrade() {
        let s =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let mut buf = BytesMut::from(s.as_bytes());
        assert_eq!(
            parse(&mut buf, false, false).err(),
            Some(HeadError::UnexpectedUpgrade)
        );
        let mut buf = BytesMut::from(s.as_bytes());
        let h = parse(&mut buf, false, true).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Upgrade);
        assert_eq!(h.headers["upgrade"], "websocket");
        assert_eq!(h.headers["connection"], "upgrade");
    }

    #[test]
    fn keep_alive_timeout_is_parsed_and_shortened() {
        assert_eq!(
            keep_alive_timeout(b"timeout=5"),
            Some(Duration::from_millis(4500))
        );
        assert_eq!(
            keep_alive_timeout(b"max=100, Timeout = 2"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(keep_alive_timeout(b"max=100"), None);
        assert_eq!(keep_alive_timeout(b"timeout=0"), Some(Duration::ZERO));
    }
}
