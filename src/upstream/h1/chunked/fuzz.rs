//! Property tests of the chunked [`Decoder`]: fuzzing on stable with proptest.
//!
//! Bodies are encoded with random chunk sizes, size lines in either hex case
//! with leading zeros, random extensions and trailer fields (obs-text in
//! values), followed by the next response's bytes, then fed in random read
//! splits. Properties: the decoder gives back exactly the body, the trailers
//! and the bytes after the body whatever the split; a malformed size line or
//! missing CRLF after data is an error whatever comes before or after it;
//! arbitrary bytes never panic. Cases default to 256 per property;
//! `PROPTEST_CASES=100000 cargo test chunked::fuzz` runs longer.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::{Chunk, ChunkError, Decoder};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// What decoding `wire` in the given read sizes (cycled) produced: the data,
/// the trailers, and the bytes after the body (left in the buffer or unread).
type Decoded = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

fn decode_split(wire: &[u8], splits: &[usize]) -> Result<Decoded, ChunkError> {
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    let mut steps = splits.iter().cycle();
    loop {
        match d.decode(&mut buf)? {
            Some(Chunk::Data(b)) => data.extend_from_slice(&b),
            Some(Chunk::End(t)) => {
                let mut rest = buf.to_vec();
                rest.extend_from_slice(wire.get(fed..).unwrap_or_default());
                return Ok((data, t, rest));
            }
            None => {
                if fed == wire.len() {
                    return Err(ChunkError("eof"));
                }
                let end = (fed + steps.next().copied().unwrap_or(1)).min(wire.len());
                buf.extend_from_slice(wire.get(fed..end).unwrap_or_default());
                fed = end;
            }
        }
    }
}

/// One size line: hex in random case, padded with zeros up to 16 digits.
fn size_line(len: usize, upper: bool, zeros: usize, ext: &str) -> Vec<u8> {
    let hex = if upper {
        format!("{len:X}")
    } else {
        format!("{len:x}")
    };
    let pad = zeros.min(16usize.saturating_sub(hex.len()));
    format!("{}{hex}{ext}\r\n", "0".repeat(pad)).into_bytes()
}

fn extension() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        1 => "(;[a-z]{1,6}(=[a-z0-9]{0,6})?){1,3}",
        1 => "[ \t]{1,3}(;[ \t]*[a-z]{1,4}=\"[a-z ]{0,6}\"){0,2}",
    ]
}

#[derive(Debug, Clone)]
struct Piece {
    len: usize,
    upper: bool,
    zeros: usize,
    ext: String,
}

fn piece() -> impl Strategy<Value = Piece> {
    (1usize..200, any::<bool>(), 0usize..4, extension()).prop_map(|(len, upper, zeros, ext)| {
        Piece {
            len,
            upper,
            zeros,
            ext,
        }
    })
}

fn trailer_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = || prop_oneof![4 => 0x21u8..=0x7e, 1 => 0x80u8..=0xff];
    (
        byte(),
        proptest::collection::vec(prop_oneof![byte(), Just(b' ')], 0..10),
        byte(),
    )
        .prop_map(|(a, mid, b)| [vec![a], mid, vec![b]].concat())
}

fn trailers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(("[Xx]-[a-zA-Z0-9-]{1,8}", trailer_value()), 0..4)
}

/// Encodes `body` cut into `pieces` (cycled; the last one takes the rest).
fn encode(body: &[u8], pieces: &[Piece], last: &Piece, trailers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for p in pieces.iter().cycle() {
        if at >= body.len() {
            break;
        }
        let end = (at + p.len).min(body.len());
        out.extend(size_line(end - at, p.upper, p.zeros, &p.ext));
        out.extend_from_slice(body.get(at..end).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        at = end;
    }
    out.extend(size_line(0, last.upper, last.zeros, &last.ext));
    for (n, v) in trailers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn expected_trailers(trailers: &[(String, Vec<u8>)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (n, v) in trailers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            map.append(n, v);
        }
    }
    (!map.is_empty()).then_some(map)
}

/// A size line or data terminator the decoder must refuse (also used by
/// the request-stream properties of `listener::h1`).
pub(crate) fn malformed() -> impl Strategy<Value = Vec<u8>> {
    let not_size = proptest::sample::select(
        (0u8..=255)
            .filter(|b| !b.is_ascii_hexdigit() && !b";\r\t ".contains(b))
            .collect::<Vec<u8>>(),
    );
    prop_oneof![
        // No digits at all.
        not_size.clone().prop_map(|b| vec![b]),
        // Digits, then a byte that cannot follow them (bare LF included).
        ("[0-9a-fA-F]{1,8}", not_size).prop_map(|(h, b)| [h.into_bytes(), vec![b]].concat()),
        // More than 16 hex digits, leading zeros included.
        "[0-9a-fA-F]{17,24}".prop_map(String::into_bytes),
        // Bare LF ending an extension.
        "[1-9];[a-z]{0,4}".prop_map(|s| [s.into_bytes(), b"\n".to_vec()].concat()),
        // CR not followed by LF.
        ("[1-9]", any::<u8>().prop_filter("LF", |b| *b != b'\n')).prop_map(|(h, b)| [
            h.into_bytes(),
            vec![b'\r', b]
        ]
        .concat()),
        // Data not followed by CRLF.
        (any::<u8>().prop_filter("CR", |b| *b != b'\r')).prop_map(|b| [
            b"1\r\nx".to_vec(),
            vec![b]
        ]
        .concat()),
        (any::<u8>().prop_filter("LF", |b| *b != b'\n')).prop_map(|b| [
            b"1\r\nx\r".to_vec(),
            vec![b]
        ]
        .concat()),
    ]
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..64, 1..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bodies_decode_to_what_was_encoded_whatever_the_split(
        body in proptest::collection::vec(any::<u8>(), 0..1200),
        pieces in proptest::collection::vec(piece(), 1..6),
        last in piece(),
        trailers in trailers(),
        next in proptest::collection::vec(any::<u8>(), 0..40),
        splits in splits(),
    ) {
        let mut wire = encode(&body, &pieces, &last, &trailers);
        wire.extend_from_slice(&next);
        let (data, got, rest) = decode_split(&wire, &splits)?;
        prop_assert_eq!(data, body);
        prop_assert_eq!(got, expected_trailers(&trailers));
        prop_assert_eq!(rest, next);
    }

    #[test]
    fn malformed_framing_is_an_error_whatever_the_split(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        pieces in proptest::collection::vec(piece(), 1..4),
        bad in malformed(),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        splits in splits(),
    ) {
        // Valid chunks first (without the last chunk), then the bad line.
        let mut wire = encode(&body, &pieces, &pieces[0], &[]);
        let cut = wire.len() - size_line(0, pieces[0].upper, pieces[0].zeros, &pieces[0].ext).len() - 2;
        wire.truncate(cut);
        wire.extend_from_slice(&bad);
        wire.extend_from_slice(&tail);
        prop_assert!(decode_split(&wire, &splits).is_err());
        // Nothing past the bad bytes is needed to see it.
        let mut short = wire.clone();
        short.truncate(cut + bad.len());
        let err = decode_split(&short, &splits);
        prop_assert!(matches!(err, Err(e) if e != ChunkError("eof")), "{:?}", err);
    }

    #[test]
    fn arbitrary_bytes_never_panic_whatever_the_split(
        raw in proptest::collection::vec(any::<u8>(), 0..400),
        splits in splits(),
    ) {
        let _ = decode_split(&raw, &splits);
    }
}
