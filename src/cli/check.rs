//! `gatehouse check-config`: loads a config as `serve` would and reports
//! what it found, so a deployment can validate a file before using it.

use std::path::Path;

use crate::config::{Config, RedisTarget, StoreBackend};

pub(super) fn check_config(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    say!(
        "{}: ok ({} routes, default policy {}, upstreams {:?})",
        path.display(),
        config.routes.len(),
        config.routes.default_rule().policy,
        config.upstream.addresses
    );
    match &config.store.backend {
        StoreBackend::Sled { path } => say!("store: sled at {}", path.display()),
        StoreBackend::Redis(redis) => {
            match &redis.target {
                RedisTarget::Url(url) => say!("store: redis at {url}, key prefix {:?}", redis.key_prefix),
                RedisTarget::Sentinel { sentinels, master_name, .. } => say!(
                    "store: redis master {master_name:?} via Sentinels {sentinels:?}, key prefix {:?}",
                    redis.key_prefix
                ),
            }
            if let Some(Err(e)) = redis.password.as_ref().map(|p| p.load_any_length()) {
                say!("note: store.redis: {e} (needed by `gatehouse serve`)");
            }
        }
    }
    for (what, source) in [("tokens", &config.tokens.secret), ("admin", &config.admin.token)] {
        // With an asymmetric signing key the HS256 secret is optional.
        let optional = what == "tokens" && config.tokens.signing_key.is_some();
        if let (Err(e), false) = (source.load(), optional) {
            say!("note: {what}: {e} (needed by `gatehouse serve`)");
        }
    }
    Ok(())
}
