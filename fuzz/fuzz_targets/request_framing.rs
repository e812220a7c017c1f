//! Request framing inspector (`listener::framing`): arbitrary client bytes, split
//! into reads at fuzzer-chosen points, never panic, and the verdicts do not
//! depend on how the stream was split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::listener::framing::FramingInspector;

fn verdicts(data: &[u8], step: usize) -> Vec<tandem::listener::framing::Verdict> {
    let mut inspector = FramingInspector::new(64 * 1024);
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        inspector.feed(piece);
        while let Some(v) = inspector.take_verdict() {
            out.push(v);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = verdicts(stream, stream.len());
    let pieces = verdicts(stream, usize::from(split % 17) + 1);
    assert_eq!(whole, pieces, "verdicts depend on the read boundaries");
});
