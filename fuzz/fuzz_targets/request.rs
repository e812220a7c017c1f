//! Client request codec (`listener::h1`): request heads (`head::parse`) and
//! their bodies (`decode::BodyDecoder`) driven as the connection loop drives
//! them — parse a head from the front of the read buffer, decode its body from
//! the same buffer, go for the next (pipelined) head, stop after a request that
//! does not keep the connection open. Arbitrary client bytes, split into reads
//! at a fuzzer-chosen size, never panic; the requests, their bodies and how the
//! stream ends do not depend on the read boundaries.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tandem::listener::h1::decode::{BodyDecoder, Piece};
use tandem::listener::h1::head::{self, RequestHead};

/// How the stream ended. A refused head is compared by its status: which
/// 400 reason a broken head gets may depend on how much of the stream was
/// read (a bare LF after the first bad byte), the status may not.
#[derive(Debug, PartialEq)]
enum End {
    /// The input ended between requests.
    Clean,
    /// The input ended inside a head or a body.
    Incomplete,
    /// A request that closes the connection; what follows is not read.
    Closed,
    Head(u16),
    Body,
}

fn feed(buf: &mut BytesMut, stream: &[u8], fed: &mut usize, step: usize) -> bool {
    if *fed >= stream.len() {
        return false;
    }
    let end = (*fed + step).min(stream.len());
    buf.extend_from_slice(stream.get(*fed..end).unwrap_or_default());
    *fed = end;
    true
}

fn drive(stream: &[u8], step: usize) -> (Vec<(RequestHead, Vec<u8>)>, End) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut requests = Vec::new();
    loop {
        let head = loop {
            if !buf.is_empty() {
                let before = buf.len();
                match head::parse(&mut buf) {
                    Ok(Some(h)) => {
                        assert!(buf.len() < before, "a head was parsed from no bytes");
                        break h;
                    }
                    Ok(None) => assert_eq!(buf.len(), before, "an incomplete head ate bytes"),
                    Err(e) => return (requests, End::Head(e.status())),
                }
            }
            if !feed(&mut buf, stream, &mut fed, step) {
                let end = if buf.is_empty() {
                    End::Clean
                } else {
                    End::Incomplete
                };
                return (requests, end);
            }
        };
        let mut body = Vec::new();
        let mut dec = BodyDecoder::new(head.body);
        let expected = match head.body {
            head::BodyKind::Length(n) => Some(n),
            _ => None,
        };
        let done = loop {
            match dec.decode(&mut buf) {
                Ok(Some(Piece::Data(d))) => body.extend_from_slice(&d),
                Ok(Some(Piece::End)) => break None,
                Ok(None) => {
                    if !feed(&mut buf, stream, &mut fed, step) {
                        break Some(End::Incomplete);
                    }
                }
                Err(_) => break Some(End::Body),
            }
        };
        if done.is_none() {
            if let Some(n) = expected {
                assert_eq!(
                    body.len() as u64,
                    n,
                    "a length body ended at another length"
                );
            }
        }
        let keep_alive = head.keep_alive;
        requests.push((head, body));
        if let Some(end) = done {
            return (requests, end);
        }
        if !keep_alive {
            return (requests, End::Closed);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else {
        return;
    };
    let whole = drive(stream, stream.len().max(1));
    let pieces = drive(stream, usize::from(split % 17) + 1);
    assert_eq!(whole, pieces, "the requests depend on the read boundaries");
});
