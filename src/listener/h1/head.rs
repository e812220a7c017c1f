//! Request heads from clients: parse, check, frame.
//!
//! [`parse`] turns the bytes at the front of a connection's read buffer into a
//! [`RequestHead`] once the whole head is there, on `httparse`, and refuses
//! everything whose framing could be read two ways (RFC 9112 §6.3, §11.2):
//! a line ended by LF alone, both `Content-Length` and `Transfer-Encoding`,
//! `Content-Length` values that differ or are not plain decimal, a
//! `Transfer-Encoding` other than exactly `chunked` (or any on HTTP/1.0),
//! obsolete line folding, white space before a colon, differing `Host`
//! headers. A head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines is
//! refused as too large. Header values are slices of the frozen head bytes,
//! not copies of each value (the head is copied out of the read buffer once). Pure: unit tests below, property tests in `head/fuzz.rs`.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// Largest request head accepted, request line included.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 100;

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (neither header, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed, checked request head.
#[derive(Debug, PartialEq)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodyKind,
    /// The client keeps the connection open after this exchange (HTTP/1.1
    /// without `Connection: close`, HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
}

/// Why a head was refused; each maps to an answer and a refusal reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines: 431.
    TooLarge,
    /// A line ended by LF without CR: 400.
    BareLf,
    /// Both `Content-Length` and `Transfer-Encoding`: 400.
    LengthAndEncoding,
    /// Anything else malformed or ambiguous: 400.
    Malformed,
}

impl HeadError {
    /// The `reason` label of `tandem_rejected_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "head_too_large",
            HeadError::BareLf => "bare_lf",
            HeadError::LengthAndEncoding => "cl_and_te",
            HeadError::Malformed => "malformed_head",
        }
    }

    /// The status the client is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            _ => 400,
        }
    }
}

/// What the header lines said about framing and the connection, read while
/// the header map is built.
#[derive(Default)]
struct Framing<'a> {
    length: Option<u64>,
    lengths: usize,
    chunked: bool,
    encodings: usize,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    /// The first `Host` value, and whether another one differs from it.
    host: Option<&'a [u8]>,
    hosts: usize,
    hosts_differ: bool,
}

/// Parses a head from the front of `buf`. `Ok(None)`: not complete yet (and
/// not over the limit). On success the head's bytes are removed from `buf`;
/// what follows (a body, or pipelined requests) stays.
pub fn parse(buf: &mut BytesMut) -> Result<Option<RequestHead>, HeadError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut lines);
    // httparse sees at most one byte past the limit, so what lies beyond it
    // (and so how the stream was split into reads) never changes the answer.
    let visible = buf.get(..buf.len().min(MAX_HEAD + 1)).unwrap_or_default();
    let len = match req.parse(visible) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(refusal_of(visible)),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    if has_bare_lf(buf.get(..len).unwrap_or_default()) {
        return Err(HeadError::BareLf);
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Malformed),
    };
    let method = req.method.ok_or(HeadError::Malformed)?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    if method == Method::CONNECT {
        // A reverse proxy has no tunnel to open to an arbitrary authority.
        return Err(HeadError::Malformed);
    }
    let path = req.path.ok_or(HeadError::Malformed)?;
    let base = buf.as_ptr() as usize;
    let path_at = path.as_ptr() as usize - base;
    let path_range = path_at..path_at + path.len();

    let mut f = Framing::default();
    let mut fields: [(Option<HeaderName>, std::ops::Range<usize>); MAX_HEADERS] =
        std::array::from_fn(|_| (None, 0..0));
    let n = req.headers.len();
    for (line, slot) in req.headers.iter().zip(fields.iter_mut()) {
        let name =
            HeaderName::from_bytes(line.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = line.value;
        let at = value.as_ptr() as usize - base;
        read_framing(&name, value, &mut f)?;
        *slot = (Some(name), at..at + value.len());
    }
    if f.lengths > 0 && f.encodings > 0 {
        return Err(HeadError::LengthAndEncoding);
    }
    if f.encodings > 0 && (version == Version::HTTP_10 || !f.chunked) {
        return Err(HeadError::Malformed);
    }
    if f.hosts_differ {
        return Err(HeadError::Malformed);
    }
    let keep_alive = if version == Version::HTTP_11 {
        !f.close
    } else {
        f.keep_alive && !f.close
    };
    let body = match f.length {
        _ if f.chunked => BodyKind::Chunked,
        Some(0) | None => BodyKind::None,
        Some(n) => BodyKind::Length(n),
    };
    let (length, hosts) = (f.length, f.hosts);
    let expect_continue = f.expect_continue && version == Version::HTTP_11;

    // Copied out (one small exact allocation): the read buffer then goes
    // back to the worker's pool at once instead of living as long as the
    // request's header values point into it.
    let head = Bytes::copy_from_slice(buf.get(..len).unwrap_or_default());
    buf.advance(len);
    let uri = Uri::from_maybe_shared(head.slice(path_range)).map_err(|_| HeadError::Malformed)?;
    if uri.authority().is_some() && uri.scheme().is_none() {
        // Authority-form belongs to CONNECT alone.
        return Err(HeadError::Malformed);
    }
    let mut headers = HeaderMap::with_capacity(n);
    let mut kept_length = false;
    for (name, range) in fields.iter_mut().take(n) {
        let Some(name) = name.take() else { continue };
        if name == header::CONTENT_LENGTH {
            // Equal duplicates are one length: the server sees it once.
            if std::mem::replace(&mut kept_length, true) {
                continue;
            }
            if let Some(len) = length {
                headers.append(name, HeaderValue::from(len));
                continue;
            }
        }
        // Equal duplicate Host lines are one Host.
        if name == header::HOST && hosts > 1 && headers.contains_key(header::HOST) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(range.clone()))
            .map_err(|_| HeadError::Malformed)?;
        headers.append(name, value);
    }
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// Notes what one header line says about framing; refuses values that
/// cannot be read one way only.
fn read_framing<'a>(
    name: &HeaderName,
    value: &'a [u8],
    f: &mut Framing<'a>,
) -> Result<(), HeadError> {
    if *name == header::CONTENT_LENGTH {
        f.lengths += 1;
        for item in value.split(|&b| b == b',') {
            let n = parse_decimal(trim(item)).ok_or(HeadError::Malformed)?;
            if f.length.is_some_and(|seen| seen != n) {
                return Err(HeadError::Malformed);
            }
            f.length = Some(n);
        }
    } else if *name == header::TRANSFER_ENCODING {
        // Exactly one coding, `chunked`, over all lines: anything else
        // (`gzip`, `chunked, gzip`, `chunked` twice) is refused, because
        // the body would be framed or coded in a way the server cannot be
        // told after the chunked coding is taken off here.
        for item in value.split(|&b| b == b',') {
            f.encodings += 1;
            f.chunked = f.encodings == 1 && trim(item).eq_ignore_ascii_case(b"chunked");
        }
    } else if *name == header::CONNECTION {
        for item in value.split(|&b| b == b',') {
            let t = trim(item);
            f.close |= t.eq_ignore_ascii_case(b"close");
            f.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
        }
    } else if *name == header::EXPECT {
        f.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
    } else if *name == header::HOST {
        // Two Host lines that say different things could route one way here
        // and another at the server.
        f.hosts += 1;
        match f.host {
            None => f.host = Some(value),
            Some(first) => f.hosts_differ |= !first.eq_ignore_ascii_case(value),
        }
    }
    Ok(())
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or_default()
}

/// Why httparse refused `head`: a bare LF when one comes before the byte
/// httparse stumbled on (httparse reads a lone LF as a line end, so the LF
/// itself is never the error), else malformed. Decided by the bytes up to
/// the first bare LF only, so the answer does not depend on read splits.
fn refusal_of(head: &[u8]) -> HeadError {
    let Some(lf) = first_bare_lf(head) else {
        return HeadError::Malformed;
    };
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let before = head.get(..lf).unwrap_or_default();
    match httparse::Request::new(&mut lines).parse(before) {
        Err(httparse::Error::TooManyHeaders) => HeadError::TooLarge,
        Err(_) => HeadError::Malformed,
        Ok(_) => HeadError::BareLf,
    }
}

/// A plain decimal length: digits only, at most 19 of them (fits a u64).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
    )
}

/// True when a line of `head` ends in LF without a CR before it.
fn has_bare_lf(head: &[u8]) -> bool {
    first_bare_lf(head).is_some()
}

fn first_bare_lf(head: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', head).find(|&i| i == 0 || head.get(i - 1) != Some(&b'\r'))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
