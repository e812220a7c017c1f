//! Request bodies from clients, decoded from a connection's read buffer.
//!
//! A [`BodyDecoder`] follows one request body by its framing
//! ([`BodyKind`]): a length counted down, or the chunked coding (the strict
//! decoder shared with the server leg, `upstream::h1::chunked`). It eats
//! bytes from the front of the read buffer and hands out data as `Bytes`
//! split off it (no copy); whatever follows the body (a pipelined request)
//! stays in the buffer. Trailers of a chunked body are kept for the body to
//! hand on ([`BodyDecoder::take_trailers`]).
//! Pure: tested below and by the pipelining property test in `head/fuzz.rs`.

use bytes::{Bytes, BytesMut};

use super::head::BodyKind;
use crate::upstream::h1::chunked::{self, Chunk};

/// One step of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Data(Bytes),
    /// The body ended; the buffer now starts at the next request.
    End,
}

/// A body whose chunked framing is broken: the request is refused with 400
/// and the connection closed (nothing after it can be found reliably).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(chunked::Decoder),
    Done,
    Failed,
}

/// Decoder state for one request body.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    /// The trailer fields of a chunked body that has ended, until taken
    /// (boxed: rare, and a header map is larger than the rest of the state).
    trailers: Option<Box<http::HeaderMap>>,
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::Chunked(chunked::Decoder::default()),
        };
        Self {
            state,
            trailers: None,
        }
    }

    /// A decoder for no body at all.
    pub fn done() -> Self {
        Self {
            state: State::Done,
            trailers: None,
        }
    }

    /// The trailer fields of an ended chunked body, once.
    pub fn take_trailers(&mut self) -> Option<http::HeaderMap> {
        self.trailers.take().map(|t| *t)
    }

    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// True once the body turned out malformed.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Body bytes still expected, when the framing says (a length).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decodes from the front of `buf`. `Ok(None)`: more input is needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, Malformed> {
        match &mut self.state {
            State::Done => Ok(Some(Piece::End)),
            State::Failed => Err(Malformed("body already failed")),
            State::Length(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Done;
                }
                Ok(Some(Piece::Data(buf.split_to(n).freeze())))
            }
            State::Chunked(d) => loop {
                match d.decode(buf) {
                    Ok(None) => return Ok(None),
                    Ok(Some(Chunk::Data(data))) if data.is_empty() => continue,
                    Ok(Some(Chunk::Data(data))) => return Ok(Some(Piece::Data(data))),
                    Ok(Some(Chunk::End(trailers))) => {
                        self.state = State::Done;
                        self.trailers = trailers.filter(|t| !t.is_empty()).map(Box::new);
                        return Ok(Some(Piece::End));
                    }
                    Err(e) => {
                        self.state = State::Failed;
                        return Err(Malformed(e.0));
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(kind: BodyKind, input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
        let mut d = BodyDecoder::new(kind);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Some(Piece::Data(b)) => out.extend_from_slice(&b),
                Some(Piece::End) => return Ok((out, buf.to_vec())),
                None => return Err(Malformed("incomplete")),
            }
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_leaves_the_next_request() {
        let (body, rest) = all(BodyKind::Length(5), b"helloGET / HTTP/1.1\r\n").unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn a_chunked_body_is_decoded_and_trailers_end_it() {
        let (body, rest) = all(
            BodyKind::Chunked,
            b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(body, b"hello!");
        assert_eq!(rest, b"NEXT");
    }

    #[test]
    fn trailers_are_kept_for_the_body_to_hand_on() {
        let mut d = BodyDecoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\nX-Sum: 7\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Piece::Data(_)))));
        assert_eq!(d.decode(&mut buf), Ok(Some(Piece::End)));
        let t = d.take_trailers().expect("trailers");
        assert_eq!(t.get("x-sum").unwrap(), "7");
        assert!(d.take_trailers().is_none());
        let mut plain = BodyDecoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
        assert_eq!(plain.decode(&mut buf), Ok(Some(Piece::End)));
        assert!(plain.take_trailers().is_none());
    }

    #[test]
    fn bad_chunk_sizes_fail_and_stay_failed() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"1 2\r\n",
            b"ffffffffffffffffffff\r\n",
            b"0x5\r\n",
        ] {
            let mut d = BodyDecoder::new(BodyKind::Chunked);
            // As a client sends it: the bad size line, data, the last chunk.
            let mut buf = BytesMut::from(bad);
            buf.extend_from_slice(b"abc\r\n0\r\n\r\n");
            let failed = loop {
                match d.decode(&mut buf) {
                    Err(_) => break true,
                    Ok(Some(Piece::Data(_))) => continue,
                    Ok(_) => break false,
                }
            };
            assert!(failed, "{bad:?}");
            assert!(d.is_failed());
            assert!(d.decode(&mut buf).is_err());
        }
    }

    /// After a chunk size, white space may only lead to an extension (`;`,
    /// RFC 9112 §7.1.1): `1 2` read as size 1 followed by junk would let a
    /// lenient parser in front of tandem read 0x12 and find the end of the
    /// body somewhere else.
    #[test]
    fn junk_after_a_chunk_size_is_refused() {
        for bad in [&b"1 2\r\nx\r\n0\r\n\r\n"[..], b"1\tz\r\nx\r\n0\r\n\r\n"] {
            let shown = String::from_utf8_lossy(bad);
            assert!(
                all(BodyKind::Chunked, bad).is_err(),
                "{}",
                shown.escape_debug()
            );
        }
    }

    #[test]
    fn no_body_is_done_at_once() {
        let mut d = BodyDecoder::new(BodyKind::None);
        assert!(d.is_done());
        let mut buf = BytesMut::from(&b"GET"[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Piece::End)));
        assert_eq!(&buf[..], b"GET");
    }

    #[test]
    fn a_length_body_waits_for_more_input() {
        let mut d = BodyDecoder::new(BodyKind::Length(4));
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Some(Piece::Data(Bytes::from_static(b"ab"))))
        );
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.remaining(), Some(2));
    }
}
