//! Property tests of [`parse`]: fuzzing on stable with proptest.
//!
//! Heads are generated from random statuses, reasons (obs-text included),
//! end-to-end fields (repeated names, obs-text in values) and every mix of
//! `Content-Length`, `Transfer-Encoding` and `Connection`, then followed by
//! body bytes. Properties: arbitrary bytes never panic; a valid head parses
//! to exactly the fields and framing it was built from, is incomplete on
//! every shorter prefix and gives the same answer whatever the read split;
//! an obs-fold or a conflicting or unparsable `Content-Length` (where the
//! length decides the framing) is refused whatever else the head holds.
//! Bare LF line endings are accepted by httparse for responses, so they are
//! not a refusal property here. Cases default to 256 per property;
//! `PROPTEST_CASES=100000 cargo test response::fuzz` runs longer.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::{parse, Framing, Head, HeadError};

/// Lengths are read as at most 19 decimal digits (no overflow check
/// needed); 20 digits and more are refused as a bad length.
const MAX_LENGTH: u64 = 10_000_000_000_000_000_000;

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

/// What a parse produced, in a comparable form.
type Outcome = Result<Option<(u16, http::Version, HeaderMap, Framing, bool, BytesMut)>, HeadError>;

fn outcome(buf: &mut BytesMut, head_request: bool, upgrade_request: bool) -> Outcome {
    parse(buf, head_request, upgrade_request).map(|o| {
        o.map(|h: Head| {
            (
                h.status.as_u16(),
                h.version,
                h.headers,
                h.framing,
                h.keep_alive,
                buf.clone(),
            )
        })
    })
}

/// Parses `wire` fed in pieces of the given sizes (cycled), calling the
/// parser after every read as a connection does.
fn parse_split(
    wire: &[u8],
    splits: &[usize],
    head_request: bool,
    upgrade_request: bool,
) -> Outcome {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for &step in splits.iter().cycle() {
        let end = (fed + step).min(wire.len());
        buf.extend_from_slice(wire.get(fed..end).unwrap_or_default());
        fed = end;
        match outcome(&mut buf, head_request, upgrade_request) {
            Ok(None) if fed < wire.len() => continue,
            // What was not read yet follows what the parser left.
            Ok(Some(mut h)) => {
                h.5.extend_from_slice(wire.get(fed..).unwrap_or_default());
                return Ok(Some(h));
            }
            other => return other,
        }
    }
    Ok(None)
}

/// Reason phrase bytes: HTAB, SP, VCHAR and obs-text.
fn reason() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            8 => 0x21u8..=0x7e,
            1 => Just(b' '),
            1 => Just(b'\t'),
            2 => 0x80u8..=0xff,
        ],
        0..20,
    )
}

/// A field value without leading or trailing whitespace (httparse trims it;
/// also used by the request-head properties of `listener::h1`).
pub(crate) fn value() -> impl Strategy<Value = Vec<u8>> {
    let inner = proptest::collection::vec(
        prop_oneof![
            8 => 0x21u8..=0x7e,
            1 => Just(b' '),
            1 => Just(b'\t'),
            2 => 0x80u8..=0xff,
        ],
        0..16,
    );
    let edge = || prop_oneof![0x21u8..=0x7e, 0x80u8..=0xff];
    proptest::option::of((edge(), inner, edge())).prop_map(|v| match v {
        None => Vec::new(),
        Some((first, inner, last)) => [vec![first], inner, vec![last]].concat(),
    })
}

/// End-to-end fields; names drawn from a small set so repeats are common.
fn fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        proptest::sample::select(vec!["X-A", "x-a", "Server", "Set-Cookie", "ETag"])
            .prop_map(str::to_owned),
        "[Xx]-[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}",
    ];
    proptest::collection::vec((name, value()), 0..10)
}

#[derive(Debug, Clone)]
struct Framed {
    version: u8,
    status: u16,
    head_request: bool,
    length: Option<(u64, u8, bool)>,
    te: Option<&'static str>,
    connection: Option<&'static str>,
}

fn framed() -> impl Strategy<Value = Framed> {
    (
        0u8..=1,
        prop_oneof![
            1 => Just(100u16),
            1 => 102u16..=103,
            8 => 200u16..=599,
        ],
        proptest::bool::weighted(0.1),
        proptest::option::of((0..MAX_LENGTH, 1u8..=3, any::<bool>())),
        proptest::option::of(proptest::sample::select(vec![
            "chunked",
            "Chunked",
            "gzip, chunked",
            "chunked, gzip",
            "gzip",
        ])),
        proptest::option::of(proptest::sample::select(vec![
            "close",
            "keep-alive",
            "Keep-Alive",
            "close, keep-alive",
        ])),
    )
        .prop_map(
            |(version, status, head_request, length, te, connection)| Framed {
                version,
                status,
                head_request,
                length,
                te,
                connection,
            },
        )
}

/// Inserts each framing field at the position `at` says (modulo length).
fn place(fields: &mut Vec<(String, Vec<u8>)>, extra: Vec<(String, Vec<u8>)>, at: &[usize]) {
    for (i, f) in extra.into_iter().enumerate() {
        let pos = at.get(i).copied().unwrap_or(0) % (fields.len() + 1);
        fields.insert(pos, f);
    }
}

fn head_bytes(version: u8, status: u16, reason: &[u8], fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.{version} {status} ").into_bytes();
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (n, v) in fields {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The framing fields a [`Framed`] asks for.
fn framing_fields(f: &Framed) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some((n, copies, listed)) = f.length {
        for _ in 0..copies {
            let v = if listed {
                format!("{n}, {n}")
            } else {
                n.to_string()
            };
            out.push(("Content-Length".to_owned(), v.into_bytes()));
        }
    }
    if let Some(te) = f.te {
        out.push(("Transfer-Encoding".to_owned(), te.as_bytes().to_vec()));
    }
    if let Some(c) = f.connection {
        out.push(("Connection".to_owned(), c.as_bytes().to_vec()));
    }
    out
}

/// RFC 9112 §6.3, written out independently of the parser.
fn expected_framing(f: &Framed) -> (Framing, bool) {
    let bodyless = f.head_request || f.status < 200 || f.status == 204 || f.status == 304;
    let (framing, ka) = if bodyless {
        (Framing::Empty, true)
    } else if let Some(te) = f.te {
        let chunked_last = te.to_ascii_lowercase().ends_with("chunked");
        if chunked_last && f.version == 1 {
            (Framing::Chunked, f.length.is_none())
        } else {
            (Framing::Close, false)
        }
    } else if let Some((n, _, _)) = f.length {
        (Framing::Length(n), true)
    } else {
        (Framing::Close, false)
    };
    let close = f.connection.is_some_and(|c| c.contains("close"));
    let keep = f
        .connection
        .is_some_and(|c| c.to_ascii_lowercase().contains("keep-alive"));
    let persistent = if f.version == 1 {
        !close
    } else {
        keep && !close
    };
    (framing, ka && persistent)
}

/// The end-to-end fields the client should see, in order.
fn expected_headers(all: &[(String, Vec<u8>)], te: bool) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in all {
        let lower = n.to_ascii_lowercase();
        if lower == "transfer-encoding" || lower == "connection" {
            continue;
        }
        if lower == "content-length" && te {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Fragments that matter to response framing, mixed with arbitrary bytes.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 204 \r\n",
        b"HTTP/1.1 101 Switching\r\n",
        b"HTTP/1.1 999 Odd\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 18446744073709551616\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close, x-a\r\n",
        b"Keep-Alive: timeout=99999999999999999999\r\n",
        b"Keep-Alive: timeout=18446744073709551615\r\n",
        b"X-A: \xff\x80\r\n",
        b"X-Fold: a\r\n  b\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b": v\r\n",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        raw in proptest::collection::vec(any::<u8>(), 0..300),
        head_request in any::<bool>(),
        upgrade_request in any::<bool>(),
    ) {
        let _ = parse(&mut BytesMut::from(&raw[..]), head_request, upgrade_request);
    }

    #[test]
    fn framing_fragments_never_panic_and_splits_agree(
        parts in proptest::collection::vec(fragment(), 0..30),
        head_request in any::<bool>(),
        upgrade_request in any::<bool>(),
        splits in splits(),
    ) {
        let wire = parts.concat();
        let whole = outcome(&mut BytesMut::from(&wire[..]), head_request, upgrade_request);
        let split = parse_split(&wire, &splits, head_request, upgrade_request);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn valid_heads_parse_to_their_fields_whatever_the_split(
        f in framed(),
        reason in reason(),
        mut all in fields(),
        at in proptest::collection::vec(any::<usize>(), 6),
        body in proptest::collection::vec(any::<u8>(), 0..40),
        splits in splits(),
    ) {
        place(&mut all, framing_fields(&f), &at);
        let head = head_bytes(f.version, f.status, &reason, &all);
        let mut wire = head.clone();
        wire.extend_from_slice(&body);

        for cut in 0..head.len() {
            let mut buf = BytesMut::from(wire.get(..cut).unwrap_or_default());
            prop_assert_eq!(parse(&mut buf, f.head_request, false).map(|h| h.is_none()), Ok(true), "prefix {}", cut);
        }
        let whole = outcome(&mut BytesMut::from(&wire[..]), f.head_request, false);
        let Ok(Some((status, version, headers, framing, keep_alive, rest))) = whole.clone() else {
            return Err(TestCaseError::fail(format!("{whole:?}")));
        };
        prop_assert_eq!(status, f.status);
        prop_assert_eq!(version, if f.version == 1 { http::Version::HTTP_11 } else { http::Version::HTTP_10 });
        prop_assert_eq!(headers, expected_headers(&all, f.te.is_some()));
        prop_assert_eq!((framing, keep_alive), expected_framing(&f));
        prop_assert_eq!(&rest[..], &body[..]);
        prop_assert_eq!(parse_split(&wire, &splits, f.head_request, false), whole);
    }

    #[test]
    fn obs_fold_is_refused_whatever_else_is_there(
        f in framed(),
        mut all in fields(),
        at in proptest::collection::vec(any::<usize>(), 7),
        fold in proptest::sample::select(vec![&b" b"[..], b"\tb", b"  ", b" \xff"]),
    ) {
        let mut extra = framing_fields(&f);
        let mut folded = b"a\r\n".to_vec();
        folded.extend_from_slice(fold);
        extra.push(("X-Fold".to_owned(), folded));
        place(&mut all, extra, &at);
        let wire = head_bytes(f.version, f.status, b"OK", &all);
        prop_assert_eq!(
            parse(&mut BytesMut::from(&wire[..]), f.head_request, false).map(|h| h.is_some()),
            Err(HeadError::Syntax)
        );
    }

    #[test]
    fn conflicting_or_bad_lengths_are_refused_whatever_else_is_there(
        version in 0u8..=1,
        status in (200u16..=599).prop_filter("bodyless", |s| *s != 204 && *s != 304),
        mut all in fields(),
        at in proptest::collection::vec(any::<usize>(), 4),
        good in 0..MAX_LENGTH,
        other in 0..MAX_LENGTH,
        bad in prop_oneof![
            Just(String::new()),
            Just("-1".to_owned()),
            Just("+1".to_owned()),
            Just("0x10".to_owned()),
            Just("1 2".to_owned()),
            Just("18446744073709551616".to_owned()),
            "[0-9]{20,24}",
            "[0-9]{0,5}[^0-9, \t\r\n][0-9]{0,5}",
        ],
        how in 0u8..3,
        connection in proptest::option::of(proptest::sample::select(vec!["close", "keep-alive"])),
    ) {
        prop_assume!(good != other);
        let lengths: Vec<String> = match how {
            0 => vec![good.to_string(), other.to_string()],
            1 => vec![format!("{good}, {other}")],
            _ => vec![good.to_string(), bad],
        };
        let mut extra: Vec<(String, Vec<u8>)> = lengths
            .into_iter()
            .map(|v| ("Content-Length".to_owned(), v.into_bytes()))
            .collect();
        if let Some(c) = connection {
            extra.push(("Connection".to_owned(), c.as_bytes().to_vec()));
        }
        place(&mut all, extra, &at);
        let wire = head_bytes(version, status, b"OK", &all);
        let got = parse(&mut BytesMut::from(&wire[..]), false, false).map(|h| h.is_some());
        // A bad value that httparse itself refuses is a syntax error.
        prop_assert!(
            got == Err(HeadError::BadLength) || got == Err(HeadError::Syntax),
            "{:?}", got
        );
        if how < 2 {
            prop_assert_eq!(got, Err(HeadError::BadLength));
        }
    }

    #[test]
    fn unrequested_upgrades_are_refused(
        mut all in fields(),
        f in framed(),
        at in proptest::collection::vec(any::<usize>(), 6),
    ) {
        place(&mut all, framing_fields(&f), &at);
        let wire = head_bytes(1, 101, b"Switching Protocols", &all);
        prop_assert_eq!(
            parse(&mut BytesMut::from(&wire[..]), f.head_request, false).map(|h| h.is_some()),
            Err(HeadError::UnexpectedUpgrade)
        );
    }
}
