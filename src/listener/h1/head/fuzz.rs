//! Property tests of [`parse`]: fuzzing on stable with proptest.
//!
//! Heads are generated from a set of methods, origin-form targets (and some
//! absolute-form ones), HTTP/1.0 or 1.1, end-to-end fields (repeated names,
//! obs-text in values), equal `Host` lines, and every valid mix of
//! `Content-Length`, `Transfer-Encoding: chunked`, `Connection` and `Expect`.
//! Properties:
//! - arbitrary bytes never panic;
//! - a valid head parses to exactly what it was built from (method, target,
//!   version, fields, body framing, reuse, `100-continue`), is incomplete on
//!   every shorter prefix and gives the same answer whatever the read split;
//! - every refusal (both a length and a coding, bare LF, obs-fold, differing
//!   or unparsable lengths, a coding other than exactly `chunked`, any coding
//!   on HTTP/1.0, white space before a colon, differing `Host`, over 100
//!   lines or 64 KiB) holds wherever the bad line sits among valid ones.
//!
//! [`pipeline`] drives heads and bodies as the connection loop does
//! (pipelining, chunked bodies, the anti-smuggling property). Cases default
//! to 256 per property; `PROPTEST_CASES=100000 cargo test --lib head::fuzz`
//! runs longer.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::{parse, BodyKind, HeadError, RequestHead, MAX_HEAD, MAX_HEADERS};
use crate::upstream::h1::response::fuzz::value;

mod pipeline;

/// Lengths are read as at most 19 decimal digits.
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

/// What a `Connection` token means for reuse.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Close,
    KeepAlive,
    Other,
}

/// The parts of a request head besides its body framing.
#[derive(Debug, Clone)]
struct Parts {
    method: &'static str,
    target: String,
    minor: u8,
    /// What follows each field name: the colon and optional white space.
    sep: &'static str,
    fields: Vec<(String, Vec<u8>)>,
    /// A `Host` value, and whether a second line repeats it in upper case.
    host: Option<(String, bool)>,
    connection: Vec<(&'static str, Token)>,
    expect: Option<&'static str>,
    /// Where the host, connection, expect and framing lines go.
    at: Vec<usize>,
}

/// How the head frames its body.
#[derive(Debug, Clone)]
enum Frame {
    None,
    /// `copies` lines of `n`, each as `n, n` when `listed`.
    Length {
        n: u64,
        copies: u8,
        listed: bool,
    },
    /// `Transfer-Encoding` with this spelling of `chunked`.
    Chunked(&'static str),
}

/// A head to put on the wire and what [`parse`] must make of it.
#[derive(Debug, Clone)]
struct Spec {
    method: &'static str,
    target: String,
    minor: u8,
    sep: &'static str,
    /// Every field line, in wire order.
    lines: Vec<(String, Vec<u8>)>,
    length: Option<u64>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
}

/// Builds the head `p` and `frame` describe. A chunked request is HTTP/1.1
/// (a coding on 1.0 is refused); `keep_open` makes the request keep the
/// connection (what every request before the last of a pipeline does).
fn build(p: &Parts, frame: &Frame, keep_open: bool) -> Spec {
    let minor = if matches!(frame, Frame::Chunked(_)) {
        1
    } else {
        p.minor
    };
    let mut connection = p.connection.clone();
    if keep_open {
        connection.retain(|(_, t)| *t != Token::Close);
        if minor == 0 {
            connection.push(("keep-alive", Token::KeepAlive));
        }
    }
    let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some((host, repeated)) = &p.host {
        extra.push(("Host".into(), host.clone().into_bytes()));
        if *repeated {
            extra.push(("host".into(), host.to_ascii_uppercase().into_bytes()));
        }
    }
    if !connection.is_empty() {
        let tokens: Vec<&str> = connection.iter().map(|(t, _)| *t).collect();
        extra.push(("Connection".into(), tokens.join(", ").into_bytes()));
    }
    if let Some(e) = p.expect {
        extra.push(("Expect".into(), e.as_bytes().to_vec()));
    }
    let (length, body) = match *frame {
        Frame::None => (None, BodyKind::None),
        Frame::Length { n, copies, listed } => {
            for _ in 0..copies {
                let v = if listed {
                    format!("{n}, {n}")
                } else {
                    n.to_string()
                };
                extra.push(("Content-Length".into(), v.into_bytes()));
            }
            (
                Some(n),
                if n == 0 {
                    BodyKind::None
                } else {
                    BodyKind::Length(n)
                },
            )
        }
        Frame::Chunked(spelling) => {
            extra.push(("Transfer-Encoding".into(), spelling.as_bytes().to_vec()));
            (None, BodyKind::Chunked)
        }
    };
    let mut lines = p.fields.clone();
    for (i, line) in extra.into_iter().enumerate() {
        let pos = p.at.get(i).copied().unwrap_or(0) % (lines.len() + 1);
        lines.insert(pos, line);
    }
    let close = connection.iter().any(|(_, t)| *t == Token::Close);
    let keep = connection.iter().any(|(_, t)| *t == Token::KeepAlive);
    Spec {
        method: p.method,
        target: p.target.clone(),
        minor,
        sep: p.sep,
        lines,
        length,
        body,
        keep_alive: if minor == 1 { !close } else { keep && !close },
        expect_continue: minor == 1
            && p.expect
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue")),
    }
}

/// The head's bytes, with `raw` lines (already formatted, without CRLF)
/// inserted among the field lines at the positions `at` says.
fn head_bytes(spec: &Spec, raw: Vec<Vec<u8>>, at: &[usize]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = spec
        .lines
        .iter()
        .map(|(n, v)| [n.as_bytes(), spec.sep.as_bytes(), v].concat())
        .collect();
    for (i, line) in raw.into_iter().enumerate() {
        let pos = at.get(i).copied().unwrap_or(0) % (lines.len() + 1);
        lines.insert(pos, line);
    }
    let mut out = format!("{} {} HTTP/1.{}\r\n", spec.method, spec.target, spec.minor).into_bytes();
    for line in lines {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What [`parse`] must return for `spec`: every line, in order, except that
/// the length is one normalised field and a repeated equal `Host` is one.
fn expected(spec: &Spec) -> RequestHead {
    let mut headers = HeaderMap::new();
    for (n, v) in &spec.lines {
        let name = HeaderName::from_bytes(n.as_bytes()).expect("generated names are tokens");
        if name == http::header::CONTENT_LENGTH {
            if !headers.contains_key(&name) {
                headers.append(name, HeaderValue::from(spec.length.expect("a length line")));
            }
            continue;
        }
        if name == http::header::HOST && headers.contains_key(&name) {
            continue;
        }
        headers.append(
            name,
            HeaderValue::from_bytes(v).expect("generated values are valid"),
        );
    }
    RequestHead {
        method: Method::from_bytes(spec.method.as_bytes()).expect("generated methods are tokens"),
        uri: spec
            .target
            .parse::<Uri>()
            .expect("generated targets are URIs"),
        version: if spec.minor == 1 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        },
        headers,
        body: spec.body,
        keep_alive: spec.keep_alive,
        expect_continue: spec.expect_continue,
    }
}

/// End-to-end fields; names drawn from a small set so repeats are common.
fn fields() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        select(vec!["X-A", "x-a", "Accept", "Cookie", "User-Agent"]).prop_map(str::to_owned),
        "[Xx]-[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,12}",
    ];
    proptest::collection::vec((name, value()), 0..12)
}

fn parts() -> impl Strategy<Value = Parts> {
    let method = select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PURGE", "M-SEARCH",
    ]);
    // Origin-form mostly, absolute-form (what a client talking to a proxy
    // sends) sometimes.
    let target = (
        proptest::option::weighted(0.2, "https?://[a-z0-9]{1,8}(\\.[a-z]{2,4})?(:[0-9]{1,4})?"),
        "(/[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,8}|/%[0-9A-F]{2}){1,4}",
        proptest::option::of("[a-zA-Z0-9._~!$&'()*+,;=:@/?-]{0,12}"),
    )
        .prop_map(|(origin, path, query)| {
            let origin = origin.unwrap_or_default();
            match query {
                Some(q) => format!("{origin}{path}?{q}"),
                None => format!("{origin}{path}"),
            }
        });
    let token = select(vec![
        ("close", Token::Close),
        ("Close", Token::Close),
        ("keep-alive", Token::KeepAlive),
        ("Keep-Alive", Token::KeepAlive),
        ("upgrade", Token::Other),
        ("x-trace", Token::Other),
    ]);
    (
        (
            method,
            target,
            0u8..=1,
            select(vec![": ", ":", ":\t", ":  "]),
        ),
        fields(),
        proptest::option::of(("[a-z0-9]{1,8}(\\.[a-z]{2,4})?(:[0-9]{1,5})?", any::<bool>())),
        proptest::collection::vec(token, 0..3),
        proptest::option::of(select(vec!["100-continue", "100-Continue", "200-ok"])),
        proptest::collection::vec(any::<usize>(), 8),
    )
        .prop_map(
            |((method, target, minor, sep), fields, host, connection, expect, at)| Parts {
                method,
                target,
                minor,
                sep,
                fields,
                host,
                connection,
                expect,
                at,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::None),
        (0..MAX_LENGTH, 1u8..=3, any::<bool>()).prop_map(|(n, copies, listed)| Frame::Length {
            n,
            copies,
            listed
        }),
        select(vec!["chunked", "Chunked", "CHUNKED"]).prop_map(Frame::Chunked),
    ]
}

fn splits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

fn positions(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(any::<usize>(), n)
}

type Parsed = Result<Option<RequestHead>, HeadError>;

/// Parses `wire` fed in pieces of the given sizes (cycled), calling the
/// parser after every read as a connection does; returns the answer and the
/// bytes after the head (left in the buffer or not read yet).
fn parse_split(wire: &[u8], splits: &[usize]) -> (Parsed, Vec<u8>) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for &step in splits.iter().cycle() {
        let end = (fed + step).min(wire.len());
        buf.extend_from_slice(&wire[fed..end]);
        fed = end;
        match parse(&mut buf) {
            Ok(None) if fed < wire.len() => continue,
            other => return (other, [&buf[..], &wire[fed..]].concat()),
        }
    }
    (Ok(None), wire.to_vec())
}

fn refusal(wire: &[u8]) -> Result<bool, HeadError> {
    parse(&mut BytesMut::from(wire)).map(|h| h.is_some())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        raw in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = parse(&mut BytesMut::from(&raw[..]));
    }

    #[test]
    fn valid_heads_parse_to_what_they_were_built_from_whatever_the_split(
        p in parts(),
        frame in frame(),
        body in proptest::collection::vec(any::<u8>(), 0..40),
        splits in splits(),
    ) {
        let spec = build(&p, &frame, false);
        let head = head_bytes(&spec, Vec::new(), &[]);
        let wire = [&head[..], &body[..]].concat();
        for cut in 0..head.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(parse(&mut buf), Ok(None), "prefix of {} bytes", cut);
            prop_assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(parse(&mut buf), Ok(Some(expected(&spec))));
        prop_assert_eq!(&buf[..], &body[..]);
        prop_assert_eq!(parse_split(&wire, &splits), (Ok(Some(expected(&spec))), body));
    }

    #[test]
    fn length_and_encoding_together_are_refused_whatever_else_is_there(
        p in parts(),
        n in 0..MAX_LENGTH,
        copies in 1usize..=2,
        te in proptest::collection::vec(select(vec!["chunked", "Chunked", "gzip", "gzip, chunked"]), 1..3),
        at in positions(4),
    ) {
        let spec = build(&p, &Frame::None, false);
        let mut raw: Vec<Vec<u8>> = vec![format!("Content-Length: {n}").into_bytes(); copies];
        raw.extend(te.iter().map(|t| format!("Transfer-Encoding: {t}").into_bytes()));
        prop_assert_eq!(refusal(&head_bytes(&spec, raw, &at)), Err(HeadError::LengthAndEncoding));
    }

    #[test]
    fn a_bare_lf_anywhere_in_the_head_is_refused(
        p in parts(),
        frame in frame(),
        pick in any::<Index>(),
        insert in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let spec = build(&p, &frame, false);
        let mut head = head_bytes(&spec, Vec::new(), &[]);
        if insert {
            // Before any byte but the final LF: inserted there, the LF would
            // follow the last CR and push the old one into the body.
            head.insert(pick.index(head.len() - 1), b'\n');
        } else {
            let crs: Vec<usize> = (0..head.len()).filter(|&i| head[i] == b'\r').collect();
            head.remove(crs[pick.index(crs.len())]);
        }
        head.extend_from_slice(&body);
        prop_assert_eq!(refusal(&head), Err(HeadError::BareLf));
    }

    #[test]
    fn obs_fold_and_white_space_before_a_colon_are_refused_whatever_else_is_there(
        p in parts(),
        frame in frame(),
        bad in prop_oneof![
            select(vec![&b" b"[..], b"\tb", b"  ", b" \xff", b" Host: x"]).prop_map(<[u8]>::to_vec),
            (
                prop_oneof![
                    select(vec!["Host", "Content-Length", "Transfer-Encoding", "X-A"]).prop_map(str::to_owned),
                    "[Xx]-[a-z]{1,8}",
                ],
                select(vec![" ", "\t", "  "]),
                value(),
            )
                .prop_map(|(n, ws, v)| [n.as_bytes(), ws.as_bytes(), b": ", &v].concat()),
        ],
        at in positions(1),
    ) {
        let spec = build(&p, &frame, false);
        prop_assert_eq!(refusal(&head_bytes(&spec, vec![bad], &at)), Err(HeadError::Malformed));
    }

    #[test]
    fn differing_or_bad_lengths_are_refused_whatever_else_is_there(
        p in parts(),
        good in 0..MAX_LENGTH,
        other in 0..MAX_LENGTH,
        bad in prop_oneof![
            select(vec!["", "-1", "+1", "0x10", "1 2", ",", "5,", "18446744073709551616"]).prop_map(str::to_owned),
            "[0-9]{20,24}",
            "[0-9]{0,5}[^0-9, \t\r\n][0-9]{0,5}",
        ],
        how in 0u8..3,
        at in positions(2),
    ) {
        prop_assume!(good != other);
        let spec = build(&p, &Frame::None, false);
        let raw: Vec<String> = match how {
            0 => vec![good.to_string(), other.to_string()],
            1 => vec![format!("{good}, {other}")],
            _ => vec![good.to_string(), bad],
        };
        let raw = raw.into_iter().map(|v| format!("Content-Length: {v}").into_bytes()).collect();
        prop_assert_eq!(refusal(&head_bytes(&spec, raw, &at)), Err(HeadError::Malformed));
    }

    #[test]
    fn codings_other_than_exactly_chunked_are_refused_whatever_else_is_there(
        p in parts(),
        te in proptest::collection::vec(
            select(vec!["chunked", "Chunked", "gzip", "chunked, gzip", "gzip, chunked", "identity",
                        "xchunked", "chunked, chunked", "", ", chunked", "chunked,", "chunked;q=1"]),
            1..3,
        ),
        at in positions(2),
    ) {
        prop_assume!(!(te.len() == 1 && te[0].eq_ignore_ascii_case("chunked")));
        let mut p = p;
        p.minor = 1;
        let spec = build(&p, &Frame::None, false);
        let raw = te.iter().map(|t| format!("Transfer-Encoding: {t}").into_bytes()).collect();
        prop_assert_eq!(refusal(&head_bytes(&spec, raw, &at)), Err(HeadError::Malformed));
    }

    #[test]
    fn any_coding_on_http_1_0_is_refused_whatever_else_is_there(
        p in parts(),
        te in select(vec!["chunked", "Chunked", "gzip"]),
        at in positions(1),
    ) {
        let mut p = p;
        p.minor = 0;
        let spec = build(&p, &Frame::None, false);
        let raw = vec![format!("Transfer-Encoding: {te}").into_bytes()];
        prop_assert_eq!(refusal(&head_bytes(&spec, raw, &at)), Err(HeadError::Malformed));
    }

    #[test]
    fn differing_hosts_are_refused_whatever_else_is_there(
        p in parts(),
        frame in frame(),
        a in "[a-z0-9.-]{1,10}",
        b in "[a-z0-9.-]{1,10}",
        again in any::<bool>(),
        at in positions(3),
    ) {
        prop_assume!(!a.eq_ignore_ascii_case(&b));
        let mut p = p;
        p.host = None;
        let spec = build(&p, &frame, false);
        let mut raw = vec![format!("Host: {a}").into_bytes(), format!("Host: {b}").into_bytes()];
        if again {
            raw.push(format!("HOST: {}", a.to_ascii_uppercase()).into_bytes());
        }
        prop_assert_eq!(refusal(&head_bytes(&spec, raw, &at)), Err(HeadError::Malformed));
    }

    #[test]
    fn over_100_lines_is_too_large_whatever_else_is_there(
        p in parts(),
        frame in frame(),
        over in 1usize..30,
        at in positions(MAX_HEADERS + 30),
    ) {
        let spec = build(&p, &frame, false);
        let fill = (MAX_HEADERS + over).saturating_sub(spec.lines.len()).max(1);
        let raw = (0..fill).map(|i| format!("X-Fill-{i}: 1").into_bytes()).collect();
        let head = head_bytes(&spec, raw, &at);
        prop_assert_eq!(refusal(&head), Err(HeadError::TooLarge));
        // Before the head is complete too.
        prop_assert_eq!(refusal(&head[..head.len() - 2]), Err(HeadError::TooLarge));
    }

    #[test]
    fn over_64_kib_is_too_large_whatever_else_is_there(
        p in parts(),
        frame in frame(),
        over in 0usize..2000,
        at in positions(1),
    ) {
        let spec = build(&p, &frame, false);
        let base = head_bytes(&spec, vec![b"X-Big: ".to_vec()], &at).len();
        // A head of exactly MAX_HEAD bytes is accepted; one byte more is not.
        let fill = |len: usize| vec![[&b"X-Big: "[..], &vec![b'a'; len - base]].concat()];
        let at_limit = head_bytes(&spec, fill(MAX_HEAD), &at);
        prop_assert_eq!(at_limit.len(), MAX_HEAD);
        prop_assert_eq!(refusal(&at_limit), Ok(true));
        let head = head_bytes(&spec, fill(MAX_HEAD + 1 + over), &at);
        prop_assert_eq!(refusal(&head), Err(HeadError::TooLarge));
        // Before the head is complete, once more than MAX_HEAD bytes wait.
        prop_assert_eq!(refusal(&head[..MAX_HEAD + 1]), Err(HeadError::TooLarge));
        prop_assert_eq!(refusal(&head[..MAX_HEAD]), Ok(false));
    }
}
