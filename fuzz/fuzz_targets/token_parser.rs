//! Fuzzes token verification: any bytes as a bearer token must give a clean
//! `Err` (never a panic), and nothing but a token we signed may pass.
//!
//! Run: `cargo +nightly fuzz run token_parser` (see the README's fuzzing section).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use gatehouse::config::{SecretSource, TokenConfig};
use gatehouse::tokens::{TokenKind, TokenService};
use libfuzzer_sys::fuzz_target;

fn service() -> &'static TokenService {
    static SERVICE: OnceLock<TokenService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        std::env::set_var("GATEHOUSE_FUZZ_SECRET", "fuzzing-secret-fuzzing-secret-fuzzing");
        let source = SecretSource { env: Some("GATEHOUSE_FUZZ_SECRET".into()), file: None, purpose: "fuzz" };
        let secret = source.load().expect("fuzz secret");
        let config = TokenConfig {
            secret: source,
            issuer: "gatehouse".into(),
            audience: "gatehouse".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(5),
            verified_cache_size: 0,
            keys: Vec::new(),
            signing_key: None,
        };
        TokenService::with_keys(&config, Some(&secret)).expect("HS256 token service")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        for kind in [TokenKind::Access, TokenKind::Refresh] {
            // Random input can't carry a valid HMAC under our secret.
            assert!(service().verify(token, kind).is_err());
        }
    }
});
