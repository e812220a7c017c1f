//! Chunked body decoder (`upstream::h1::chunked`): arbitrary bytes, fed in
//! fuzzer-chosen pieces, never panic, and the data and outcome do not depend on
//! the pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tandem::upstream::h1::chunked::{Chunk, Decoder};

/// Decoded data, whether the end was reached, and whether it failed.
fn decode(input: &[u8], step: usize) -> (Vec<u8>, bool, bool) {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => data.extend_from_slice(&d),
                Ok(Some(Chunk::End(_))) => return (data, true, false),
                Ok(None) => break,
                Err(_) => return (data, false, true),
            }
        }
    }
    (data, false, false)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, body)) = input.split_first() else {
        return;
    };
    let whole = decode(body, body.len());
    let pieces = decode(body, usize::from(split % 13) + 1);
    // Data handed out before an error may differ in length; the verdict may not.
    assert_eq!(
        (whole.1, whole.2),
        (pieces.1, pieces.2),
        "verdict depends on the pieces"
    );
    if whole.1 {
        assert_eq!(whole.0, pieces.0, "decoded data depends on the pieces");
    }
});
