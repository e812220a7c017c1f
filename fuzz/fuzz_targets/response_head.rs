//! Upstream response head parser (`upstream::h1::response`): arbitrary server
//! bytes never panic; a parsed head consumes exactly its own bytes, and a
//! chunked body after it goes through the chunked decoder.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tandem::upstream::h1::chunked::{Chunk, Decoder};
use tandem::upstream::h1::{response, Framing};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, bytes)) = input.split_first() else {
        return;
    };
    let head_request = flags & 1 != 0;
    let upgrade_request = flags & 2 != 0;
    let mut buf = BytesMut::from(bytes);
    let Ok(Some(head)) = response::parse(&mut buf, head_request, upgrade_request) else {
        return;
    };
    assert!(buf.len() < bytes.len(), "a head was parsed from no bytes");
    if head.framing == Framing::Chunked {
        let mut dec = Decoder::default();
        while let Ok(Some(Chunk::Data(_))) = dec.decode(&mut buf) {}
    }
});
