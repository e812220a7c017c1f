//! The connection loop's framing, property-tested: heads ([`parse`]) and
//! bodies ([`BodyDecoder`]) read from one buffer in turn, as `conn.rs` does.
//!
//! [`drive`] is that loop without its IO. Requests are generated as in the
//! parent module, each with a body (none, by length, or chunked with random
//! sizes in either hex case, leading zeros, extensions and trailers).
//! Properties: arbitrary bytes never panic in the loop, and its outcome does
//! not depend on the read split; 1 to 7 pipelined requests in one stream
//! come out exactly, in order, with nothing left over, whatever the split; a
//! malformed chunk in request k stops the loop at k, so no later request is
//! ever read out of the bytes of a broken body (the anti-smuggling property);
//! so does a refused head in request k, its body bytes left behind it.

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::{build, config, expected, head_bytes, parts, splits, value, Frame, Parts, Spec};
use super::{parse, HeadError, RequestHead, MAX_HEAD};
use crate::listener::h1::decode::{BodyDecoder, Piece};

/// How [`drive`] ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The input ended between requests.
    Clean,
    /// The input ended inside a head or a body.
    Incomplete,
    /// A request that does not keep the connection; nothing after it is read.
    Closed,
    Head(HeadError),
    Body,
}

/// Each request the loop read, with the body data it handed out.
type Requests = Vec<(RequestHead, Vec<u8>)>;

/// What the connection loop made of a stream: each request with the body
/// data it handed out, how it ended, and the bytes it did not consume.
#[derive(Debug, PartialEq)]
struct Driven {
    requests: Requests,
    end: End,
    left: Vec<u8>,
}

/// The connection loop's framing without its IO: parse a head from the front
/// of the read buffer (only when it holds bytes, as `conn.rs` does), decode
/// its body from the same buffer until it ends, then the next head; reads
/// happen only when the buffer cannot go further, in pieces of `splits`.
fn drive(wire: &[u8], splits: &[usize]) -> Driven {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut steps = splits.iter().cycle();
    let mut read = |buf: &mut BytesMut, fed: &mut usize| {
        if *fed == wire.len() {
            return false;
        }
        let end = (*fed + steps.next().copied().unwrap_or(1)).min(wire.len());
        buf.extend_from_slice(&wire[*fed..end]);
        *fed = end;
        true
    };
    let mut requests = Vec::new();
    let end = 'conn: loop {
        let head = loop {
            if !buf.is_empty() {
                match parse(&mut buf) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => break 'conn End::Head(e),
                }
            }
            if !read(&mut buf, &mut fed) {
                break 'conn if buf.is_empty() {
                    End::Clean
                } else {
                    End::Incomplete
                };
            }
        };
        let mut body = Vec::new();
        let mut decoder = BodyDecoder::new(head.body);
        let failed = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Piece::Data(d))) => body.extend_from_slice(&d),
                Ok(Some(Piece::End)) => break None,
                Ok(None) if read(&mut buf, &mut fed) => {}
                Ok(None) => break Some(End::Incomplete),
                Err(_) => break Some(End::Body),
            }
        };
        let keep_alive = head.keep_alive;
        requests.push((head, body));
        if let Some(end) = failed {
            break end;
        }
        if !keep_alive {
            break End::Closed;
        }
    };
    Driven {
        requests,
        end,
        left: [&buf[..], &wire[fed..]].concat(),
    }
}

/// One chunk's size: hex in either case, leading zeros, an extension.
#[derive(Debug, Clone)]
struct Size {
    len: usize,
    upper: bool,
    zeros: usize,
    ext: String,
}

fn size() -> impl Strategy<Value = Size> {
    let ext = prop_oneof![
        2 => Just(String::new()),
        1 => "(;[a-z]{1,6}(=[a-z0-9]{0,6})?){1,3}",
        1 => "[ \t]{1,3}(;[ \t]*[a-z]{1,4}=\"[a-z ]{0,6}\"){0,2}",
    ];
    (1usize..80, any::<bool>(), 0usize..4, ext).prop_map(|(len, upper, zeros, ext)| Size {
        len,
        upper,
        zeros,
        ext,
    })
}

fn size_line(len: usize, s: &Size) -> Vec<u8> {
    let hex = if s.upper {
        format!("{len:X}")
    } else {
        format!("{len:x}")
    };
    let pad = s.zeros.min(16usize.saturating_sub(hex.len()));
    format!("{}{hex}{}\r\n", "0".repeat(pad), s.ext).into_bytes()
}

/// `data` as chunks cut by `sizes` (cycled), without the last chunk.
fn chunks(data: &[u8], sizes: &[Size]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for s in sizes.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + s.len).min(data.len());
        out.extend(size_line(end - at, s));
        out.extend_from_slice(&data[at..end]);
        out.extend_from_slice(b"\r\n");
        at = end;
    }
    out
}

/// A request body and how its head frames it.
#[derive(Debug, Clone)]
enum Plan {
    Empty {
        zero_length: bool,
    },
    Length {
        data: Vec<u8>,
        copies: u8,
        listed: bool,
    },
    Chunked {
        data: Vec<u8>,
        sizes: Vec<Size>,
        last: Size,
        trailers: Vec<(String, Vec<u8>)>,
    },
}

fn plan() -> impl Strategy<Value = Plan> {
    let data = || proptest::collection::vec(any::<u8>(), 0..200);
    let trailers = proptest::collection::vec(("[Xx]-[a-zA-Z0-9-]{1,8}", value()), 0..3);
    prop_oneof![
        any::<bool>().prop_map(|zero_length| Plan::Empty { zero_length }),
        (data(), 1u8..=2, any::<bool>()).prop_map(|(data, copies, listed)| Plan::Length {
            data,
            copies,
            listed
        }),
        (
            data(),
            proptest::collection::vec(size(), 1..5),
            size(),
            trailers
        )
            .prop_map(|(data, sizes, last, trailers)| Plan::Chunked {
                data,
                sizes,
                last,
                trailers
            }),
    ]
}

/// One request of a pipeline: its bytes, what its head must parse to and
/// the body data it carries.
struct Sent {
    wire: Vec<u8>,
    head: Spec,
    data: Vec<u8>,
}

fn sent(p: &Parts, plan: &Plan, keep_open: bool) -> Sent {
    let (frame, body, data) = match plan {
        Plan::Empty { zero_length } => {
            let frame = if *zero_length {
                Frame::Length {
                    n: 0,
                    copies: 1,
                    listed: false,
                }
            } else {
                Frame::None
            };
            (frame, Vec::new(), Vec::new())
        }
        Plan::Length {
            data,
            copies,
            listed,
        } => {
            let n = data.len() as u64;
            (
                Frame::Length {
                    n,
                    copies: *copies,
                    listed: *listed,
                },
                data.clone(),
                data.clone(),
            )
        }
        Plan::Chunked {
            data,
            sizes,
            last,
            trailers,
        } => {
            let mut body = chunks(data, sizes);
            body.extend(size_line(0, last));
            for (n, v) in trailers {
                body.extend_from_slice(n.as_bytes());
                body.extend_from_slice(b": ");
                body.extend_from_slice(v);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            (Frame::Chunked("chunked"), body, data.clone())
        }
    };
    let head = build(p, &frame, keep_open);
    let wire = [head_bytes(&head, Vec::new(), &[]), body].concat();
    Sent { wire, head, data }
}

/// Chunked framing the decoder must refuse: the shared decoder's own cases,
/// and trailer sections that are not ones.
fn malformed() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => crate::upstream::h1::chunked::fuzz::malformed(),
        1 => "0\r\n[a-z]{1,5} [a-z]{1,5}: v\r\n\r\n".prop_map(String::into_bytes),
        1 => Just(b"0\r\nX-T: a\r\n folded\r\n\r\n".to_vec()),
    ]
}

/// Request-shaped soup: a request line, fields that matter to framing
/// (valid or not) or arbitrary bytes, usually the blank line, then bytes
/// shaped like bodies; or a loose fragment. Most heads end, so the framing
/// checks and the bodies are reached, not only httparse.
fn soup() -> impl Strategy<Value = Vec<u8>> {
    let any_bytes = || proptest::collection::vec(any::<u8>(), 0..24);
    let lines: Vec<&'static [u8]> = vec![
        b"GET / HTTP/1.1\r\n",
        b"POST /u?q=1 HTTP/1.1\r\n",
        b"PUT / HTTP/1.0\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
    ];
    let fields: Vec<&'static [u8]> = vec![
        b"Host: a\r\n",
        b"Host: b\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Content-Length: 18446744073709551616\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"Expect: 100-continue\r\n",
        b"X-A: \xff\x80\r\n",
        b"X-Fold: a\r\n  b\r\n",
        b"X-B : v\r\n",
        b": v\r\n",
        b"\n",
        b"\r",
    ];
    let bodies: Vec<&'static [u8]> = vec![
        b"5;x=y\r\nhello\r\n",
        b"0\r\n\r\n",
        b"0\r\nT: v\r\n\r\n",
        b"ffffffffffffffffff\r\n",
        b"hello",
        b"\r\n",
        b"\n",
    ];
    let field = prop_oneof![4 => select(fields).prop_map(<[u8]>::to_vec), 1 => any_bytes()];
    let body = prop_oneof![4 => select(bodies.clone()).prop_map(<[u8]>::to_vec), 1 => any_bytes()];
    let request = (
        select(lines),
        proptest::collection::vec(field, 0..6),
        proptest::bool::weighted(0.9),
        proptest::collection::vec(body, 0..4),
    )
        .prop_map(|(line, fields, end, body)| {
            let blank: &[u8] = if end { b"\r\n" } else { b"" };
            [
                line.to_vec(),
                fields.concat(),
                blank.to_vec(),
                body.concat(),
            ]
            .concat()
        });
    prop_oneof![
        4 => request,
        1 => select(bodies).prop_map(<[u8]>::to_vec),
        1 => any_bytes(),
    ]
}

/// [`drive`]'s outcome with a refused head reduced to its status: which 400
/// reason a broken head gets can depend on how much of the stream was read
/// (see `the_refusal_reason_does_not_depend_on_the_read_split`).
fn by_status(d: Driven) -> (Requests, Result<End, u16>, Vec<u8>) {
    let end = match d.end {
        End::Head(e) => Err(e.status()),
        other => Ok(other),
    };
    (d.requests, end, d.left)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_in_the_loop(
        raw in proptest::collection::vec(any::<u8>(), 0..400),
        splits in splits(),
    ) {
        let _ = drive(&raw, &splits);
    }

    #[test]
    fn request_soup_never_panics_and_splits_agree(
        parts in proptest::collection::vec(soup(), 0..8),
        splits in splits(),
    ) {
        let wire = parts.concat();
        let whole = drive(&wire, &[wire.len().max(1)]);
        prop_assert_eq!(by_status(drive(&wire, &splits)), by_status(whole));
    }

    #[test]
    fn pipelined_requests_come_out_in_order_whatever_the_split(
        reqs in proptest::collection::vec((parts(), plan()), 1..8),
        splits in splits(),
    ) {
        let last = reqs.len() - 1;
        let sent: Vec<Sent> = reqs.iter().enumerate().map(|(i, (p, plan))| sent(p, plan, i < last)).collect();
        let wire: Vec<u8> = sent.iter().flat_map(|s| s.wire.iter().copied()).collect();
        let got = drive(&wire, &splits);
        let want: Requests = sent.iter().map(|s| (expected(&s.head), s.data.clone())).collect();
        prop_assert_eq!(&got.requests, &want);
        let end = if sent[last].head.keep_alive { End::Clean } else { End::Closed };
        prop_assert_eq!(got.end, end);
        prop_assert_eq!(got.left, Vec::<u8>::new());
    }

    #[test]
    fn a_refused_head_stops_the_loop_at_its_request(
        reqs in proptest::collection::vec((parts(), plan()), 1..8),
        k in any::<Index>(),
        bad in select(vec![
            &b"Content-Length: 6\r\nTransfer-Encoding: chunked"[..],
            b"Transfer-Encoding: chunked\r\nContent-Length: 6",
            b"Content-Length: 5\r\nContent-Length: 6",
            b"Transfer-Encoding: gzip, chunked",
            b"Transfer-Encoding : chunked",
            b"X-A: a\r\n b",
            b"X-A: a\nX-B: b",
        ]),
        at in any::<usize>(),
        splits in splits(),
    ) {
        let k = k.index(reqs.len());
        let mut sent: Vec<Sent> = reqs.iter().map(|(p, plan)| sent(p, plan, true)).collect();
        // The bad line goes into request k's head; its body stays behind it,
        // as a smuggler's would.
        let s = &mut sent[k];
        let body = s.wire.split_off(head_bytes(&s.head, Vec::new(), &[]).len());
        s.wire = [head_bytes(&s.head, vec![bad.to_vec()], &[at]), body].concat();
        let wire: Vec<u8> = sent.iter().flat_map(|s| s.wire.iter().copied()).collect();
        let got = drive(&wire, &splits);
        prop_assert!(matches!(got.end, End::Head(e) if e.status() == 400), "{:?}", got.end);
        let want: Requests = sent[..k].iter().map(|s| (expected(&s.head), s.data.clone())).collect();
        prop_assert_eq!(got.requests, want);
    }

    #[test]
    fn a_malformed_chunk_stops_the_loop_at_its_request(
        reqs in proptest::collection::vec((parts(), plan()), 1..8),
        k in any::<Index>(),
        data in proptest::collection::vec(any::<u8>(), 0..100),
        sizes in proptest::collection::vec(size(), 1..4),
        bad in malformed(),
        splits in splits(),
    ) {
        let k = k.index(reqs.len());
        let mut sent: Vec<Sent> = reqs.iter().map(|(p, plan)| sent(p, plan, true)).collect();
        let head = build(&reqs[k].0, &Frame::Chunked("chunked"), true);
        let valid = chunks(&data, &sizes);
        sent[k] = Sent {
            wire: [head_bytes(&head, Vec::new(), &[]), valid, bad].concat(),
            head,
            data: data.clone(),
        };
        let wire: Vec<u8> = sent.iter().flat_map(|s| s.wire.iter().copied()).collect();
        let got = drive(&wire, &splits);
        prop_assert_eq!(got.end, End::Body);
        prop_assert_eq!(got.requests.len(), k + 1);
        for (i, (s, (head, body))) in sent.iter().zip(&got.requests).enumerate() {
            prop_assert_eq!(head, &expected(&s.head));
            if i < k {
                prop_assert_eq!(body, &s.data);
            } else {
                prop_assert!(body.starts_with(&data), "{:?}", body);
            }
        }
    }
}

/// Found by `request_soup_never_panics_and_splits_agree` when it compared
/// refusal reasons too: a refused head's reason (and so the `reason` label of
/// the refusal metric), and for a head over 64 KiB even its status, depend on
/// how much of the stream had arrived when the head was refused. On a parse
/// error `parse` looks for a bare LF in the whole buffer, past the bad byte;
/// a head over the limit is 431 only if it was still incomplete when more
/// than 64 KiB had arrived, 400 if its bad byte arrived in the same read.
#[test]
fn the_refusal_reason_does_not_depend_on_the_read_split() {
    let bad_then_lf = b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\nX\n".to_vec();
    assert_eq!(
        drive(&bad_then_lf, &[2]).end,
        drive(&bad_then_lf, &[bad_then_lf.len()]).end
    );
    let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(MAX_HEAD + 5000, b'a');
    big.extend_from_slice(b"\x00\r\n\r\n");
    assert_eq!(drive(&big, &[1000]).end, drive(&big, &[big.len()]).end);
}
