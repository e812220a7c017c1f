//! Property tests of the config parser: fuzzing on stable with proptest.
//!
//! Inputs are arbitrary text, YAML-shaped token soup, and the full golden
//! fixture with random byte edits (delete, insert, replace). Property: `parse`
//! returns `Ok` or located errors and never panics, and every error it reports
//! carries the file label. Cases default to 1,000 per property (a valid
//! config reads and parses its TLS files, so a case costs milliseconds);
//! `PROPTEST_CASES=100000 cargo test config::fuzz` runs longer.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::parse;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config")
}

fn full_fixture() -> String {
    std::fs::read_to_string(golden_dir().join("full.yaml")).unwrap_or_default()
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = proptest::sample::select(vec![
        &b":"[..],
        b"-",
        b"\n",
        b"  ",
        b"\t",
        b"[",
        b"{",
        b"'",
        b"\"",
        b"*",
        b"&a",
        b"*a",
        b"!!binary",
        b"0s",
        b"99999999999999999999",
        b"-1",
        b"~",
        b"\xff",
        b"listeners:",
        b"upstreams:",
    ]);
    prop_oneof![
        (any::<usize>(), 1usize..16).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), token).prop_map(|(a, t)| Edit::Insert(a, t.to_vec())),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Edit::Replace(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
            Edit::Insert(at, t) => {
                let at = (at % (b.len() + 1)).min(b.len());
                b.splice(at..at, t.iter().copied());
            }
            Edit::Replace(at, v) => {
                if let Some(x) = b.get_mut(at % len) {
                    *x = *v;
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(errors) = parse(text, "fuzz.yaml", &golden_dir()) {
        let rendered = errors.to_string();
        prop_assert!(!rendered.is_empty());
        for line in rendered.lines() {
            prop_assert!(line.starts_with("fuzz.yaml"), "unlocated error: {}", line);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text)?;
    }

    #[test]
    fn yaml_shaped_text_never_panics(
        text in "([a-z_]{1,12}|[:\\-\\[\\]{},&*!|>#'\"]|[0-9]{1,6}|\n {0,6}| ){0,120}",
    ) {
        check(&text)?;
    }

    #[test]
    fn mutated_full_config_never_panics(edits in proptest::collection::vec(edit(), 1..6)) {
        check(&apply(&full_fixture(), &edits))?;
    }
}
