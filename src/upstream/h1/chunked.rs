//! Incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1).
//!
//! The decoder eats bytes from the front of a read buffer and hands out the
//! data as `Bytes` split off that buffer (no copy). Framing lines are strict:
//! hex size, optional extensions (ignored, bounded), CRLF; data; CRLF; after
//! the last chunk an optional trailer section, then CRLF. Trailer fields are
//! returned as a header map.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line (size + extensions) accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Most hex digits in a chunk size (a u64).
const MAX_DIGITS: u32 = 16;

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// The body ended; trailers (possibly empty) follow nothing.
    End(Option<HeaderMap>),
}

/// Malformed chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` so far.
    Size {
        size: u64,
        digits: u32,
    },
    /// White space after the size: only more of it, `;` or CR may follow.
    Bws {
        size: u64,
    },
    /// In the extensions (after `;`): anything until CR.
    Ext {
        size: u64,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// Reading the trailer section, `len` bytes of it kept in `trailers`.
    Trailers,
    Done,
}

/// Decoder state for one body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    line: usize,
    trailers: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
            trailers: Vec::new(),
        }
    }
}

impl Decoder {
    /// True once the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`. `Ok(None)`: all of `buf` was used
    /// and more input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        loop {
            if let State::Data { left } = self.state {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                self.state = if n as u64 == left {
                    State::DataCr
                } else {
                    State::Data {
                        left: left - n as u64,
                    }
                };
                return Ok(Some(Chunk::Data(buf.split_to(n).freeze())));
            }
            if self.state == State::Trailers {
                return self.trailers(buf);
            }
            if self.state == State::Done {
                return Ok(Some(Chunk::End(None)));
            }
            let Some(&b) = buf.first() else {
                return Ok(None);
            };
            let _ = buf.split_to(1);
            self.step(b)?;
            if self.state == State::Done {
                return Ok(Some(Chunk::End(None)));
            }
        }
    }

    /// One framing byte outside data and trailers.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(ChunkError("chunk size line too long"));
        }
        self.state = match self.state {
            State::Size { size, digits } => match hex(b) {
                Some(d) if digits < MAX_DIGITS => State::Size {
                    size: size << 4 | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(ChunkError("chunk size overflows")),
                None if digits == 0 => return Err(ChunkError("chunk size missing")),
                None => match b {
                    b'\r' => State::SizeLf { size },
                    b';' => State::Ext { size },
                    b' ' | b'\t' => State::Bws { size },
                    _ => return Err(ChunkError("bad chunk size")),
                },
            },
            // `1 2` must not pass for a size with an extension: a lenient
            // reader in front could take it for 0x12 (RFC 9112 §7.1.1).
            State::Bws { size } => match b {
                b' ' | b'\t' => State::Bws { size },
                b';' => State::Ext { size },
                b'\r' => State::SizeLf { size },
                _ => return Err(ChunkError("bad chunk size")),
            },
            State::Ext { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkError("bare LF in chunk size line")),
                _ => State::Ext { size },
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err(ChunkError("expected LF after chunk size"));
                }
                self.line = 0;
                if size == 0 {
                    State::Trailers
                } else {
                    State::Data { left: size }
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("expected CRLF after chunk data"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("expected CRLF after chunk data"));
                }
                self.line = 0;
                State::Size { size: 0, digits: 0 }
            }
            // Handled in `decode`.
            s @ (State::Data { .. } | State::Trailers | State::Done) => s,
        };
        Ok(())
    }

    /// Collects the trailer section up to its empty line.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        // Common case: no trailers, the body ends with CRLF right away.
        if self.trailers.is_empty() {
            if buf.starts_with(b"\r\n") {
                let _ = buf.split_to(2);
                self.state = State::Done;
                return Ok(Some(Chunk::End(None)));
            }
            if buf.len() < 2 && (buf.is_empty() || buf.first() == Some(&b'\r')) {
                return Ok(None);
            }
        }
        let old = self.trailers.len();
        self.trailers.extend_from_slice(buf);
        let end = find_end(&self.trailers, old.saturating_sub(3));
        let Some(end) = end else {
            let _ = buf.split_to(buf.len());
            if self.trailers.len() > MAX_TRAILERS {
                return Err(ChunkError("trailer section too large"));
            }
            return Ok(None);
        };
        // Consume only the trailer bytes that came from this buffer.
        let _ = buf.split_to(end - old);
        self.trailers.truncate(end);
        if self.trailers.len() > MAX_TRAILERS {
            return Err(ChunkError("trailer section too large"));
        }
        self.state = State::Done;
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let parsed = match httparse::parse_headers(&self.trailers, &mut storage) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            _ => return Err(ChunkError("bad trailer section")),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for f in parsed {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(f.name.as_bytes()),
                HeaderValue::from_bytes(f.value),
            ) {
                map.append(n, v);
            }
        }
        Ok(Some(Chunk::End((!map.is_empty()).then_some(map))))
    }
}

/// The index just past the first CRLFCRLF at or after `from`, or a bare
/// leading CRLF (an empty trailer section is handled before).
fn find_end(b: &[u8], from: usize) -> Option<usize> {
    b.windows(4)
        .enumerate()
        .skip(from)
        .find(|(_, w)| *w == b"\r\n\r\n")
        .map(|(i, _)| i + 4)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes the size line of a chunk of `len` bytes into `out`.
pub fn size_line(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        if let Some(slot) = digits.get_mut(i) {
            *slot = HEX.get(n & 0xf).copied().unwrap_or(b'0');
        }
        n >>= 4;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces of `step` bytes; returns data + trailers.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, usize), ChunkError> {
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Some(Chunk::Data(b)) => out.extend_from_slice(&b),
                Some(Chunk::End(t)) => return Ok((out, t, buf.len())),
                None => {
                    let Some(piece) = input.get(fed..(fed + step).min(input.len())) else {
                        return Err(ChunkError("eof"));
                    };
                    if piece.is_empty() {
                        return Err(ChunkError("eof"));
                    }
                    fed += piece.len();
                    buf.extend_from_slice(piece);
                }
            }
        }
    }

    fn encode(chunks: &[Vec<u8>], trailers: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            size_line(c.len(), &mut out);
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        out.extend_from_slice(trailers.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5;name=val\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 42\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (data, trailers, rest) = run(body, step).unwrap();
            assert_eq!(data, b"hello world");
            assert_eq!(trailers.unwrap()["x-sum"], "42");
            // Bytes after the body belong to the next response.
            assert!(rest <= 4);
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut d = Decoder::default();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200"[..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Chunk::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Chunk::End(None)));
        assert!(d.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1 200");
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\nb\r\n",
        ] {
            assert!(run(bad, 1).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_LINE));
        assert!(run(long_ext.as_bytes(), 512).is_err());
    }

    #[test]
    fn size_lines_are_lower_hex() {
        for (n, s) in [
            (0usize, "0\r\n"),
            (1, "1\r\n"),
            (255, "ff\r\n"),
            (65536, "10000\r\n"),
        ] {
            let mut out = Vec::new();
            size_line(n, &mut out);
            assert_eq!(out, s.as_bytes());
        }
    }

    proptest! {
        #[test]
        fn any_split_decodes_what_was_encoded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            step in 1usize..64,
            trailer in proptest::option::of("[a-z]{1,8}"),
        ) {
            let t = trailer.as_ref().map(|v| format!("x-t: {v}\r\n")).unwrap_or_default();
            let wire = encode(&chunks, &t);
            let (data, trailers, rest) = run(&wire, step).unwrap();
            prop_assert_eq!(data, chunks.concat());
            prop_assert_eq!(rest, 0);
            prop_assert_eq!(trailers.map(|m| m["x-t"].to_str().unwrap().to_owned()), trailer);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = run(&input, 7);
        }
    }
}
