//! `gatehouse check-config`: loads a config as `serve` would and reports
//! what it found, so a deployment can validate a file before using it.

use std::path::Path;

use super::CliError;
use crate::config::{Config, RedisTarget, StoreBackend};
use crate::startup::{self, Secrets};

pub(super) fn check_config(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    // Everything `serve` builds, but the store (a running gateway may hold it)
    // and the sockets: key files, TLS certificates, the token service. A
    // secret this machine lacks is a note, with a stand-in used for the rest.
    let (secrets, mut missing) = Secrets::load_or_stand_in(&config);
    startup::prepare_with(&config, secrets)?;
    say!(
        "{}: ok ({} routes, default policy {}, upstreams {:?})",
        path.display(),
        config.routes.len(),
        config.routes.default_rule().policy,
        config.upstream.addresses
    );
    match &config.store.backend {
        StoreBackend::Sled { path } => say!("store: sled at {}", path.display()),
        StoreBackend::Redis(redis) => match &redis.target {
            RedisTarget::Url(url) => say!("store: redis at {url}, key prefix {:?}", redis.key_prefix),
            RedisTarget::Sentinel { sentinels, master_name, .. } => say!(
                "store: redis master {master_name:?} via Sentinels {sentinels:?}, key prefix {:?}",
                redis.key_prefix
            ),
        },
    }
    // The store's note first, right under the store line.
    missing.sort_by_key(|(section, _)| *section != "store.redis");
    for (section, problem) in missing {
        say!("note: {section}: {problem} (needed by `gatehouse serve`)");
    }
    Ok(())
}
