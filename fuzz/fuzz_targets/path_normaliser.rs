//! Fuzzes the path normaliser: no panic, and every accepted path is already
//! normal (normalising it again changes nothing), starts with `/`, and holds
//! no dot segment, empty segment, backslash, `;` or encoded separator.
//!
//! Run: `cargo +nightly fuzz run path_normaliser`.
#![no_main]

use gatehouse::path::normalise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Ok(normal) = normalise(input) else { return };
    assert!(normal.starts_with('/'));
    assert_eq!(normalise(&normal).as_deref(), Ok(&*normal), "not idempotent for {input:?}");
    let lower = normal.to_ascii_lowercase();
    assert!(!lower.contains("%2f") && !lower.contains("%5c") && !lower.contains('\\') && !lower.contains(';'));
    let inner = normal.trim_end_matches('/');
    for segment in inner.split('/').skip(1) {
        assert!(segment != "." && segment != ".." && !segment.is_empty(), "{input:?} -> {normal:?}");
    }
});
