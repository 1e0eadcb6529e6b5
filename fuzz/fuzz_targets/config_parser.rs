//! Fuzzes config parsing and validation: any text gives a config or a located
//! error, never a panic; an error's line and column lie inside the text.
//!
//! Run: `cargo +nightly fuzz run config_parser`.
#![no_main]

use std::path::Path;

use gatehouse::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::parse(text, Path::new("fuzz.toml")) {
        assert!(e.line <= text.lines().count() + 1, "{e}");
    }
});
