//! Config loader: any text either parses to a valid `Config` or yields located
//! errors that all carry the file label; it never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative certificate paths resolve against the golden fixtures, so a
    // mutated valid file still reaches the TLS checks.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/config");
    if let Err(errors) = tandem::config::parse(text, "fuzz.yaml", &base) {
        let shown = errors.to_string();
        assert!(
            shown.lines().all(|l| l.starts_with("fuzz.yaml")),
            "an error without its location: {shown}"
        );
    }
});
