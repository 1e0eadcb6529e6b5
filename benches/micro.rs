//! Criterion micro benchmarks of the per-request hot path.
//!
//!   cargo bench --bench micro            # everything
//!   cargo bench --bench micro -- token   # one group
//!
//! Groups: `token` (HS256 verify + claim decode, and the same through the
//! verified-token cache), `policy` (route lookup with
//! 10 and 1,000 routes), `revocation` (lookup with 1,000,000 revoked tokens in
//! the sled store), `decision` (the whole per-request auth decision: the
//! canonical request (method, target, header plan and strip), route lookup,
//! verify, revocation and user check, identity injection). Numbers are only meaningful as ratios on
//! one machine; see BENCHMARKS.md.

// Benchmarks set up with unwrap: a panic is a broken bench.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::auth::Authenticator;
use gatehouse::config::Config;
use gatehouse::passwords::Passwords;
use gatehouse::proxy::{rewrite_upstream_headers, Live};
use gatehouse::request::{
    canonical_method, canonical_target, inspect_headers, HeaderRules, MethodOverride, UnderscoreHeaders,
};
use gatehouse::store::{NewUser, SledStore, Store};
use gatehouse::tokens::{new_family_id, TokenKind, TokenService};
use http::Method;
use pingora::http::RequestHeader;

const REVOKED: usize = 1_000_000;

fn config(routes: usize) -> Config {
    std::env::set_var("GATEHOUSE_BENCH_SECRET", "bench-secret-bench-secret-bench-secret-00");
    let mut text = String::from(
        "[upstream]\naddresses = [\"127.0.0.1:9\"]\nhealth_check = \"none\"\n\
         [tokens]\nsecret_env = \"GATEHOUSE_BENCH_SECRET\"\n[passwords]\nmemory_kib = 64\niterations = 1\n",
    );
    for i in 0..routes.saturating_sub(1) {
        text.push_str(&format!(
            "[[routes]]\npath = \"/svc{i}/items/{{id}}\"\nmethods = [\"GET\"]\npolicy = \"any\"\n"
        ));
    }
    text.push_str("[[routes]]\npath = \"/api/**\"\npolicy = \"any\"\n");
    Config::parse(&text, Path::new("bench.toml")).unwrap()
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    tokens: Arc<TokenService>,
    auth: Authenticator,
    store: Arc<SledStore>,
    access_token: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let config = config(10);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    eprintln!("loading {REVOKED} revocations...");
    store.import_revocations((0..REVOKED).map(|i| (format!("revoked-token-{i:012}"), u64::MAX))).unwrap();
    let passwords = Passwords::new(&config.passwords).unwrap();
    let hash = passwords.hash_blocking("bench-password").unwrap();
    let user = runtime
        .block_on(store.create_user(NewUser {
            email: "bench@example.com".into(),
            username: "bench".into(),
            password_hash: hash,
            is_admin: true,
        }))
        .unwrap();
    let secret = config.tokens.secret.load().unwrap();
    let tokens = Arc::new(TokenService::with_keys(&config.tokens, Some(&secret)).unwrap());
    let access_token = tokens.issue(&user, TokenKind::Access, true, &new_family_id()).unwrap().token;
    let auth =
        Authenticator::new(Arc::clone(&tokens), Arc::clone(&store) as Arc<dyn Store>, config.cookies.clone());
    Fixture { runtime, tokens, auth, store, access_token, _dir: dir }
}

fn benches(c: &mut Criterion) {
    let f = fixture();

    let mut group = c.benchmark_group("token");
    group.bench_function("hs256_verify_and_decode", |b| {
        b.iter(|| f.tokens.verify(black_box(&f.access_token), TokenKind::Access).unwrap())
    });
    group.bench_function("cached_verify", |b| {
        b.iter(|| f.auth.verify(black_box(&f.access_token), TokenKind::Access).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("policy");
    for routes in [10, 1_000] {
        let table = config(routes).routes;
        group.bench_function(format!("lookup_{routes}_routes_last_match"), |b| {
            b.iter(|| table.lookup(&Method::GET, black_box("/api/v1/things")))
        });
        group.bench_function(format!("lookup_{routes}_routes_param_match"), |b| {
            b.iter(|| table.lookup(&Method::GET, black_box("/svc5/items/42")))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("revocation");
    group.bench_function("lookup_miss_1m_revoked", |b| {
        b.to_async(&f.runtime)
            .iter(|| async { f.store.revocation(black_box("not-revoked-token-x")).await.unwrap() })
    });
    group.bench_function("lookup_hit_1m_revoked", |b| {
        b.to_async(&f.runtime)
            .iter(|| async { f.store.revocation(black_box("revoked-token-000000500000")).await.unwrap() })
    });
    group.finish();

    let mut group = c.benchmark_group("decision");
    let config = config(10);
    let live = Live::new(config.routes.clone(), config.upstream.clone()).unwrap();
    let mut request = RequestHeader::build("GET", b"/api/v1/things?x=1", None).unwrap();
    request.insert_header("host", "gateway").unwrap();
    request.insert_header("authorization", format!("Bearer {}", f.access_token)).unwrap();
    request.insert_header("x-auth-user-id", "spoofed").unwrap();
    request.insert_header("user-agent", "bench").unwrap();
    let rules = HeaderRules {
        identity_prefix: &live.upstream_settings.identity_prefix,
        underscores: UnderscoreHeaders::Drop,
        trusted_peer: false,
    };
    group.bench_function("any_policy_full", |b| {
        b.to_async(&f.runtime).iter(|| async {
            // The canonical request first, as the proxy makes it (src/proxy/canonical.rs `canonicalise`).
            canonical_method(&request.method).unwrap();
            let target = canonical_target(request.raw_path(), MethodOverride::Refuse).unwrap();
            let plan = inspect_headers(&request.method, request.version, &request.headers, rules).unwrap();
            let mut upstream = request.clone();
            for name in &plan.remove {
                upstream.remove_header(name);
            }
            let matched = live.routes.lookup(&request.method, &target.path);
            let taken = gatehouse::cookies::take_credentials(f.auth.cookies(), &upstream.headers);
            let presented = gatehouse::auth::Presented {
                headers: &upstream.headers,
                method: &request.method,
                credentials: &taken.credentials,
            };
            let identity = f.auth.decide(presented, matched.rule).await.unwrap();
            rewrite_upstream_headers(&live, &mut upstream, identity.as_ref(), "req-1").unwrap();
            upstream
        })
    });
    group.finish();
}

criterion_group!(micro, benches);
criterion_main!(micro);
