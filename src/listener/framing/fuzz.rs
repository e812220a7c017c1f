//! Property tests of the framing inspector: fuzzing on stable with proptest.
//!
//! Streams are built from fragments that matter to request framing (request
//! lines, `Content-Length`, `Transfer-Encoding`, chunk lines, bare LF, folds)
//! mixed with arbitrary bytes, then fed in arbitrary splits. Properties: the
//! inspector never panics, and its verdicts do not depend on the split. The
//! head limit is small here so the over-limit paths are reached too.
//! Cases default to 2,000 per property; `PROPTEST_CASES=100000 cargo test
//! framing::fuzz` runs longer.

use proptest::prelude::*;

use super::{FramingInspector, Verdict};

const MAX_HEAD: usize = 160;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"GET / HTTP/1.1\r\n",
        b"POST /echo HTTP/1.1\r\n",
        b"GET /ws HTTP/1.1\r\n",
        b"CONNECT x:443 HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"content-length: 18446744073709551615\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Upgrade: websocket\r\n",
        b"X-Fold: a\r\n  b\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"5\r\nhello\r\n",
        b"0\r\n\r\n",
        b"zz\r\n",
        b"ffffffffffffffffff\r\n",
        b"3;ext=1\r\nabc\r\n",
        b"hello",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

/// Feeds `input` cut at `cuts` (positions taken modulo the length).
fn verdicts(input: &[u8], cuts: &[usize]) -> (Vec<Verdict>, bool) {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if input.is_empty() { 0 } else { c % input.len() })
        .collect();
    points.sort_unstable();
    let mut f = FramingInspector::new(MAX_HEAD);
    let mut at = 0;
    for p in points.into_iter().chain(std::iter::once(input.len())) {
        f.feed(input.get(at..p).unwrap_or_default());
        at = at.max(p);
    }
    let v = std::iter::from_fn(|| f.take_verdict()).collect();
    (v, f.head_in_progress())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_in_arbitrary_splits_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let _ = verdicts(&input, &cuts);
    }

    #[test]
    fn verdicts_do_not_depend_on_how_reads_split_the_stream(
        input in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..32),
    ) {
        let whole = verdicts(&input, &[]);
        let split = verdicts(&input, &cuts);
        prop_assert_eq!(&whole, &split);
        let bytewise: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&whole, &verdicts(&input, &bytewise));
    }
}
