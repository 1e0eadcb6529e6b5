//! Configuration: the file model ([`file`]) is parsed, then converted once into
//! the validated [`Config`] the gateway runs on.
//!
//! Every problem is reported as a [`ConfigError`] with the file, line and
//! column, so `gatehouse check-config` and a refused reload point at the fix.
//! Secrets are not part of the file: it names where they come from (an
//! environment variable or a file), and [`SecretSource::load`] reads them.
//!
//! One module per file section converts that section into its validated
//! model; each model's `Default` is the one place its defaults are written.

mod admin;
mod cookies;
mod endpoints;
pub mod file;
mod limits;
mod logging;
mod passwords;
mod routes;
mod secrets;
mod server;
mod signin;
mod store;
mod tokens;
mod upstream;
mod values;

use std::path::{Path, PathBuf};

pub use admin::AdminConfig;
pub use cookies::{is_cookie_name, CookieConfig, SameSite, SetOnLogin};
pub use endpoints::EndpointConfig;
pub use file::FileConfig;
pub use limits::LimitsConfig;
pub use logging::{LogConfig, LogFormat};
pub use passwords::PasswordConfig;
pub use secrets::{Secret, SecretError, SecretSource, MIN_SECRET_BYTES};
pub use server::{Alpn, RequestRules, ServerConfig, TlsConfig};
pub use signin::SigninConfig;
pub use store::{
    check_redis_url, RedisConfig, RedisTarget, RedisUrlError, StoreBackend, StoreConfig, WhenUnreachable,
};
pub use tokens::{is_valid_kid, KeyAlgorithm, KeyConfig, TokenConfig};
pub use upstream::{HealthCheckKind, Selection, UpstreamConfig, UpstreamProtocol, UpstreamTls};

use crate::policy::RouteTable;
use values::Invalid;

/// A config problem, located in its file: `file:line:column: message`, or
/// `file: message` when it has no position (the file cannot be read, or the
/// parser named no place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position in the text.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.message),
            line => write!(f, "{}:{line}:{}: {}", self.file.display(), self.column, self.message),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub tokens: TokenConfig,
    pub store: StoreConfig,
    pub passwords: PasswordConfig,
    pub endpoints: EndpointConfig,
    /// `[cookies]`: tokens in cookies for browsers (off by default).
    pub cookies: CookieConfig,
    /// `[signin]`: the HTML sign-in page (off by default; needs `[cookies]`).
    pub signin: SigninConfig,
    pub limits: LimitsConfig,
    pub routes: RouteTable,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let locate = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_and_column(text, s.start));
            ConfigError { file: path.to_owned(), line, column, message }
        };
        let model: FileConfig = toml::from_str(text).map_err(|e| locate(e.span(), e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_file_model(model, path, base)
            .map_err(|Invalid { span, message }| locate(Some(span), message))
    }

    /// Each section in file order; relative paths are relative to `base`.
    fn from_file_model(model: FileConfig, path: &Path, base: &Path) -> Result<Config, Invalid> {
        let FileConfig {
            server,
            log,
            admin,
            upstream,
            tokens,
            store,
            passwords,
            endpoints,
            cookies,
            signin,
            limits,
            policy,
            cors,
            routes,
        } = model;
        let server = ServerConfig::from_file(server, base)?;
        let log = LogConfig::from_file(log);
        let admin = AdminConfig::from_file(admin, base)?;
        let upstream = UpstreamConfig::from_file(upstream, base)?;
        let tokens = TokenConfig::from_file(tokens, base)?;
        let store = StoreConfig::from_file(store, base)?;
        let limits = LimitsConfig::from_file(limits)?;
        let passwords = PasswordConfig::from_file(passwords)?;
        let endpoints = EndpointConfig::from_file(endpoints)?;
        let cookies = CookieConfig::from_file(cookies, &endpoints.refresh)?;
        let signin = SigninConfig::from_file(signin, &cookies, &endpoints)?;
        let routes = routes::route_table(policy, &cors, routes, &upstream, signin.enabled)?;
        Ok(Config {
            source: path.to_owned(),
            server,
            log,
            admin,
            upstream,
            tokens,
            store,
            passwords,
            endpoints,
            cookies,
            signin,
            limits,
            routes,
        })
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::Policy;

    #[test]
    fn an_unreadable_file_is_named_without_a_made_up_position() {
        let err = Config::load(Path::new("/nonexistent/gatehouse.toml")).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/gatehouse.toml: cannot read the config file: "),
            "{err}"
        );
    }

    const MINIMAL: &str = r#"
[upstream]
addresses = ["127.0.0.1:8000"]

[tokens]
access_ttl = "15m"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/gatehouse/test.toml"))
    }

    #[test]
    fn token_leeway_is_clock_skew_and_bounded() {
        let with_leeway = |leeway: &str| parse(&format!("{MINIMAL}leeway = \"{leeway}\"\n"));
        assert_eq!(with_leeway("5m").unwrap().tokens.leeway, Duration::from_secs(300));
        let err = with_leeway("1h").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (7, "tokens.leeway must be between 0s and 5m"));
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(c.tokens.refresh_ttl, Duration::from_secs(30 * 86400));
        assert_eq!(c.tokens.secret.env.as_deref(), Some("GATEHOUSE_JWT_SECRET"));
        assert!(!c.upstream.pass_authorization);
        assert_eq!(c.upstream.identity_prefix, "x-auth-");
        assert!(
            matches!(&c.store.backend, StoreBackend::Sled { path } if path == Path::new("/etc/gatehouse/gatehouse-data"))
        );
        assert_eq!(c.routes.lookup(&http::Method::GET, "/x").rule.policy, Policy::Deny);
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a\"\npolicy = \"anyone\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!((err.line, err.column), (10, 10), "{err}");
        assert!(err.message.contains("unknown policy `anyone`"), "{err}");

        let err = parse("[upstream]\naddresses = [\"localhost\"]\n[tokens]\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 14), "{err}");

        let err = parse("[upstream]\naddresses = [\"127.0.0.1:1\"]\n[tokens]\nbogus = 1\n").unwrap_err();
        assert_eq!(err.line, 4, "{err}");
        assert!(err.to_string().starts_with("/etc/gatehouse/test.toml:4:"), "{err}");
    }

    #[test]
    fn lifecycle_durations_are_whole_seconds() {
        let server = |extra: &str| parse(&format!("[server]\n{extra}{MINIMAL}"));
        assert_eq!(server("grace_period = \"2s\"\n").unwrap().server.grace_period, Duration::from_secs(2));
        for key in ["grace_period", "shutdown_timeout"] {
            let err = server(&format!("{key} = \"100ms\"\n")).unwrap_err();
            assert_eq!(err.line, 2, "{err}");
            assert!(err.message.contains("must be whole seconds"), "{err}");
        }
    }

    #[test]
    fn protocols_are_checked_together_with_tls() {
        let upstream = |extra: &str| parse(&MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{extra}")));
        let c = upstream("").unwrap();
        assert_eq!((c.upstream.protocol, c.upstream.tls.as_ref()), (UpstreamProtocol::Http1, None));
        assert!(!c.server.h2c && c.server.tls.is_none());
        assert_eq!(upstream("protocol = \"h2c\"\n").unwrap().upstream.protocol, UpstreamProtocol::H2c);
        let tls = upstream(
            "protocol = \"h2\"\ntls = true\ntls_server_name = \"api.internal\"\ntls_ca_file = \"ca.pem\"\n",
        )
        .unwrap()
        .upstream;
        assert_eq!(tls.protocol, UpstreamProtocol::H2);
        let expected =
            UpstreamTls { server_name: "api.internal".into(), ca_file: Some("/etc/gatehouse/ca.pem".into()) };
        assert_eq!(tls.tls, Some(expected));
        for (extra, says) in [
            ("protocol = \"h2\"\n", "set upstream.tls = true"),
            ("protocol = \"h2c\"\ntls = true\ntls_server_name = \"a\"\n", "is cleartext HTTP/2"),
            ("protocol = \"http3\"\n", "expected \"http1\", \"h2\" or \"h2c\""),
            ("tls = true\n", "needs upstream.tls_server_name"),
            ("tls_server_name = \"a\"\n", "need upstream.tls = true"),
            ("tls = true\ntls_server_name = \"a b\"\n", "must be a host name"),
            ("tls = true\ntls_server_name = \"api.internal:8443\"\n", "must be a host name"),
            ("tls = true\ntls_server_name = \"me@api.internal\"\n", "must be a host name"),
        ] {
            let err = upstream(extra).unwrap_err();
            assert!(err.message.contains(says), "{extra:?}: {err}");
        }
        let websocket = "protocol = \"h2c\"\n";
        let text = format!(
            "{}\n[[routes]]\npath = \"/ws\"\npolicy = \"any\"\nwebsocket = true\n",
            MINIMAL.replace("[upstream]\n", &format!("[upstream]\n{websocket}"))
        );
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("needs upstream.protocol = \"http1\""), "{err}");
        let server = |extra: &str| parse(&format!("[server]\n{extra}{MINIMAL}"));
        assert!(server("h2c = true\n").unwrap().server.h2c);
        let err = server("tls_alpn = [\"h2\"]\n").unwrap_err();
        assert!(err.message.contains("needs TLS listeners"), "{err}");
        let tls = "tls_listen = [\"127.0.0.1:8443\"]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        assert_eq!(server(tls).unwrap().server.tls.unwrap().alpn, Alpn::H2AndHttp1);
        let alpn =
            |list: &str| server(&format!("{tls}tls_alpn = {list}\n")).map(|c| c.server.tls.unwrap().alpn);
        assert_eq!(alpn("[\"http/1.1\"]").unwrap(), Alpn::Http1Only);
        assert_eq!(alpn("[\"h2\"]").unwrap(), Alpn::H2Only);
        assert_eq!(alpn("[\"h2\", \"http/1.1\"]").unwrap(), Alpn::H2AndHttp1);
        let err = alpn("[\"http/1.1\", \"spdy/3\"]").unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        assert!(err.message.contains("server.tls_alpn must be"), "{err}");
    }

    #[test]
    fn bad_durations_and_patterns_are_refused() {
        assert!(parse(&MINIMAL.replace("15m", "fifteen")).is_err());
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a/**/b\"\npolicy = \"any\"\n");
        assert!(parse(&text).unwrap_err().message.contains("**"));
        let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a\"\npolicy = \"any\"\nfresh = true\n");
        assert!(parse(&text).unwrap_err().message.contains("only applies to admin"));
    }

    #[test]
    fn secrets_are_checked_for_length_and_hidden_from_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let source = SecretSource { env: None, file: Some(path.clone()), purpose: "token signing secret" };
        assert!(matches!(source.load(), Err(SecretError::Unreadable { .. })));
        std::fs::write(&path, "short\n").unwrap();
        let err = source.load().unwrap_err().to_string();
        assert!(err.contains("at least 32") && err.contains("/dev/urandom"), "{err}");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let secret = source.load().unwrap();
        assert_eq!(secret.expose().len(), 32);
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn the_redis_store_is_validated() {
        let with = |store: &str| parse(&format!("{MINIMAL}\n[store]\n{store}\n"));
        let c = with("backend = \"redis\"\n[store.redis]\nurl = \"redis://127.0.0.1:6379/0\"").unwrap();
        let StoreBackend::Redis(redis) = &c.store.backend else { panic!("not redis") };
        assert_eq!(redis.target, RedisTarget::Url("redis://127.0.0.1:6379/0".into()));
        assert_eq!((redis.key_prefix.as_str(), redis.pool_size), ("gatehouse:", 4));
        assert_eq!(redis.when_unreachable, WhenUnreachable::FailClosed);
        assert!(redis.password.is_none());

        let sentinel = "backend = \"redis\"\n[store.redis]\nsentinels = [\"redis://10.0.0.1:26379\"]\nmaster_name = \"gh\"";
        let c = with(sentinel).unwrap();
        let StoreBackend::Redis(redis) = &c.store.backend else { panic!("not redis") };
        assert!(matches!(&redis.target, RedisTarget::Sentinel { master_name, .. } if master_name == "gh"));

        for (store, complaint) in [
            ("backend = \"redis\"", "needs a [store.redis] section"),
            ("backend = \"etcd\"", "expected \"sled\" or \"redis\""),
            ("[store.redis]\nurl = \"redis://h:1\"", "store.backend is not \"redis\""),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://:hunter2@h:1/0\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://u:hunter2@h:1/0\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis+unix:///r.sock?pass=hunter2\"", "not in the URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"hunter2@h:1\"", "not a URL"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"http://h:1\"", "expected redis://"),
            ("backend = \"redis\"\n[store.redis]\nsentinels = [\"redis://h:1\"]", "`master_name`"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nkey_prefix = \"a*\"", "key_prefix"),
            ("backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nwhen_unreachable = \"open\"", "fail_open"),
            (
                "backend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\nwait_replicas = 1\nwait_timeout = \"1s\"",
                "shorter than command_timeout",
            ),
        ] {
            let err = with(store).unwrap_err();
            assert!(err.message.contains(complaint), "{store}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn errors_point_at_the_value_to_fix() {
        let zero_ttl = parse(&MINIMAL.replace("15m", "0s")).unwrap_err();
        assert_eq!((zero_ttl.line, zero_ttl.column), (6, 14), "{zero_ttl}");
        for (extra, column, complaint) in [
            ("[server]\nlisten = []", 10, "at least one address"),
            ("[server]\nthreads = 0", 11, "at least 1"),
            ("[server]\ntls_cert = \"c.pem\"", 12, "TLS needs all"),
            ("[store]\npurge_interval = \"0s\"", 18, "longer than zero"),
            ("[log]\nformat = \"xml\"", 10, "log.format `xml`: expected \"text\" or \"json\""),
            ("[store]\nbackend = \"etcd\"", 11, "expected \"sled\" or \"redis\""),
        ] {
            let err = parse(&format!("{MINIMAL}\n{extra}\n")).unwrap_err();
            assert_eq!((err.line, err.column), (9, column), "{extra}: {err}");
            assert!(err.message.contains(complaint), "{extra}: {err}");
        }
    }

    #[test]
    fn route_budgets_are_refused_at_the_value_to_fix() {
        let with = |policy: &str, extra: &str| {
            parse(&format!("{MINIMAL}\n[[routes]]\npath = \"/a\"\npolicy = \"{policy}\"\n{extra}\n"))
        };
        let budget = |c: &Config| {
            let route = c.routes.lookup(&http::Method::GET, "/a").route.map(|r| r.budget.clone());
            route.flatten().map(|b| (b.rate.to_string(), b.burst.get()))
        };
        assert_eq!(budget(&with("any", "rate = \"100/m\"").unwrap()), Some(("100/m".into(), 100)));
        assert_eq!(budget(&with("public", "rate = \"3/s\"\nburst = 10").unwrap()), Some(("3/s".into(), 10)));
        assert_eq!(budget(&with("any", "").unwrap()), None);
        for (policy, extra, line, column, complaint) in [
            ("any", "rate = \"100/d\"", 11, 8, "rate `100/d`: unknown unit `d`; expected s, m or h"),
            ("any", "rate = \"0/m\"", 11, 8, "the count must be at least 1"),
            ("any", "rate = \"lots/m\"", 11, 8, "`lots` is not a whole number"),
            ("any", "rate = \"100\"", 11, 8, "not a rate like \"100/m\""),
            ("any", "rate = \"3/m\"\nburst = 0", 12, 9, "`burst` must be at least 1"),
            ("any", "burst = 5", 11, 9, "`burst` needs a `rate` on the same route"),
            ("deny", "rate = \"3/m\"", 11, 8, "a `deny` route forwards nothing, so it can't have a `rate`"),
            ("any", "rate = 100", 11, 8, "invalid type"),
            ("any", "rate = \"3/m\"\nburst = -1", 12, 9, "invalid value"),
        ] {
            let err = with(policy, extra).unwrap_err();
            assert_eq!((err.line, err.column), (line, column), "{extra}: {err}");
            assert!(err.message.contains(complaint), "{extra}: {err}");
        }
    }

    #[test]
    fn cookies_are_off_by_default_with_safe_settings() {
        let c = parse(MINIMAL).unwrap().cookies;
        assert!(!c.enabled && c.secure);
        assert_eq!(c.samesite, SameSite::Lax);
        assert_eq!(
            [c.access_cookie.as_str(), &c.refresh_cookie, &c.csrf_access_cookie, &c.csrf_refresh_cookie],
            ["access_token_cookie", "refresh_token_cookie", "csrf_access_token", "csrf_refresh_token"]
        );
        assert_eq!((c.path.as_str(), c.refresh_path.as_str(), c.domain.as_deref()), ("/", "/refresh", None));
        assert_eq!(c.csrf_header.as_str(), "x-csrf-token");
        assert_eq!(
            c.csrf_methods,
            [http::Method::POST, http::Method::PUT, http::Method::PATCH, http::Method::DELETE]
        );
        assert_eq!(c.set_on_login, SetOnLogin::WhenAsked);

        // The refresh cookie follows the refresh endpoint unless told otherwise.
        let moved = parse(&format!("{MINIMAL}\n[endpoints]\nrefresh = \"/auth/refresh\"\n")).unwrap();
        assert_eq!(moved.cookies.refresh_path, "/auth/refresh");
        let c = parse(&format!(
            "{MINIMAL}\n[cookies]\nenabled = true\nsamesite = \"None\"\ndomain = \".Example.com\"\ncsrf_header = \"X-XSRF-Token\"\ncsrf_methods = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\", \"PROPFIND\"]\nset_on_login = \"always\"\naccess_cookie = \"__Host-at\"\n"
        ))
        .unwrap()
        .cookies;
        assert!(c.enabled);
        assert_eq!(
            (c.samesite, c.domain.as_deref(), c.csrf_header.as_str()),
            (SameSite::None, Some("example.com"), "x-xsrf-token")
        );
        assert_eq!(c.csrf_methods.len(), 5, "more methods may be checked");
        assert_eq!((c.set_on_login, c.access_cookie.as_str()), (SetOnLogin::Always, "__Host-at"));
    }

    #[test]
    fn bad_cookie_settings_are_refused_at_their_value() {
        for (extra, column, complaint) in [
            ("secure = false\nsamesite = \"None\"", 12, "needs cookies.secure = true"),
            ("samesite = \"lax\"", 12, "expected \"Lax\", \"Strict\" or \"None\""),
            ("access_cookie = \"my token\"", 17, "is not a cookie name"),
            ("csrf_refresh_cookie = \"a;b\"", 23, "is not a cookie name"),
            ("refresh_cookie = \"csrf_access_token\"", 18, "names another of the four cookies"),
            ("path = \"api\"", 8, "must be a path starting with `/`"),
            ("refresh_path = \"/r; x\"", 16, "must be a path"),
            ("domain = \"exa mple.com\"", 10, "is not a host name"),
            ("csrf_header = \"X_CSRF\"", 15, "is not a header name"),
            ("csrf_header = \"Cookie\"", 15, "reads that header for something else"),
            ("csrf_methods = [\"post\"]", 17, "is not an upper-case method"),
            ("csrf_methods = [\"POST\", \"PUT\", \"PATCH\"]", 17, "must keep POST, PUT, PATCH and DELETE"),
            ("set_on_login = \"sometimes\"", 16, "expected \"never\", \"when_asked\" or \"always\""),
            ("httponly = false", 1, "unknown field"),
        ] {
            let text = format!("{MINIMAL}\n[cookies]\n{extra}\n");
            let err = parse(&text).unwrap_err();
            let line = 9 + extra.matches('\n').count();
            assert_eq!((err.line, err.column), (line, column), "{extra}: {err}");
            assert!(err.message.contains(complaint), "{extra}: {err}");
        }
    }

    #[test]
    fn signin_is_off_by_default_and_needs_cookies() {
        let s = parse(MINIMAL).unwrap().signin;
        assert!(!s.enabled);
        assert_eq!(
            (s.path.as_str(), s.title.as_str(), s.default_redirect.as_str()),
            ("/signin", "Sign in", "/")
        );
        assert!(s.redirect_allowlist.is_empty());

        let err = parse(&format!("{MINIMAL}\n[signin]\nenabled = true\n")).unwrap_err();
        assert_eq!((err.line, err.column), (9, 11), "{err}");
        assert!(err.message.contains("needs [cookies] enabled = true"), "{err}");

        let s = parse(&format!(
            "{MINIMAL}\n[cookies]\nenabled = true\n[signin]\nenabled = true\npath = \"/auth/signin\"\ntitle = \"Acme\"\nredirect_allowlist = [\"https://app.example.com\", \"http://localhost:3000/\"]\ndefault_redirect = \"https://app.example.com/home\"\n"
        ))
        .unwrap()
        .signin;
        assert!(s.enabled);
        assert_eq!((s.path.as_str(), s.title.as_str()), ("/auth/signin", "Acme"));
        assert_eq!(s.redirect_allowlist, ["https://app.example.com", "http://localhost:3000"]);
        assert_eq!(s.default_redirect, "https://app.example.com/home");
    }

    #[test]
    fn failures_before_backoff_is_a_count_and_0_turns_backoff_off() {
        let limits =
            |value: &str| parse(&format!("{MINIMAL}\n[limits]\nfailures_before_backoff = {value}\n"));
        assert_eq!(parse(MINIMAL).unwrap().limits.failures_before_backoff, 5);
        assert_eq!(limits("0").unwrap().limits.failures_before_backoff, 0);
        assert_eq!(limits("3").unwrap().limits.failures_before_backoff, 3);
        for refused in ["-1", "\"off\"", "1.5"] {
            let err = limits(refused).unwrap_err();
            assert_eq!((err.line, err.column), (9, 27), "{refused}: {err}");
        }
    }

    #[test]
    fn bad_signin_settings_are_refused_at_their_value() {
        for (extra, column, complaint) in [
            ("path = \"signin\"", 8, "is a plain path"),
            ("path = \"/signin/\"", 8, "is a plain path"),
            ("path = \"/Login\"", 8, "already a built-in endpoint's path"),
            ("title = \"\"", 9, "between 1 and 200 characters"),
            ("redirect_allowlist = [\"https://app.example.com/x\"]", 23, "is not an origin"),
            ("redirect_allowlist = [\"HTTPS://App.example.com\"]", 23, "is not an origin"),
            ("redirect_allowlist = [\"javascript:alert(1)\"]", 23, "is not an origin"),
            ("default_redirect = \"//evil.com\"", 20, "must be a path starting with a single `/`"),
            ("default_redirect = \"https://evil.com/\"", 20, "redirect_allowlist"),
        ] {
            let text = format!("{MINIMAL}\n[cookies]\nenabled = true\n[signin]\n{extra}\n");
            let err = parse(&text).unwrap_err();
            assert_eq!((err.line, err.column), (11, column), "{extra}: {err}");
            assert!(err.message.contains(complaint), "{extra}: {err}");
        }
    }

    #[test]
    fn signin_redirect_routes_need_the_signin_page() {
        let route = "\n[[routes]]\npath = \"/app/**\"\npolicy = \"any\"\nsignin_redirect = true\n";
        let err = parse(&format!("{MINIMAL}{route}")).unwrap_err();
        assert_eq!((err.line, err.column), (11, 19), "{err}");
        assert!(err.message.contains("needs [signin] enabled = true"), "{err}");
        let on = "\n[cookies]\nenabled = true\n[signin]\nenabled = true\n";
        assert!(parse(&format!("{MINIMAL}{on}{route}")).is_ok());
    }

    #[test]
    fn redis_defaults_are_the_same_with_and_without_a_file() {
        let c = parse(&format!(
            "{MINIMAL}\n[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"redis://h:1\"\n"
        ))
        .unwrap();
        let StoreBackend::Redis(from_file) = c.store.backend else { panic!("not redis") };
        let bare = RedisConfig::for_url("redis://h:1");
        assert_eq!(format!("{from_file:?}"), format!("{bare:?}"));
    }
}
