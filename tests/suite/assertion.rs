//! Signed identity assertions for backends: the gateway adds
//! `X-Auth-Assertion` (a short-lived JWT for exactly this request), and
//! upstream-mock in verify mode checks it against the gateway's JWK set and
//! refuses anything else, forged identity headers included.

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::config::file::{HealthCheck, KeyEntry, Word};
use gatehouse::config::KeyAlgorithm;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use upstream_mock::{MockOptions, VerifyOptions};

use crate::common::config::{spanned, text};
use crate::common::{binary, Gateway, Options, Upstream};

struct Setup {
    upstream: Upstream,
    gw: Gateway,
    keys: tempfile::TempDir,
    direct: reqwest::blocking::Client,
}

/// A verifying upstream-mock behind a gateway that signs with Ed25519.
fn setup() -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let out =
        Command::new(binary()).args(["keygen", "--kid", "ed1", "--out"]).arg(keys.path()).output().unwrap();
    assert!(out.status.success());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    // The gateway's address goes into the mock's options, so start the gateway
    // first, pointed at the mock's (already bound) address.
    let placeholder = Upstream::start();
    let key_dir = keys.path().display().to_string();
    let gw = Gateway::start(
        &placeholder,
        Options { upstreams: Some(vec![upstream_addr.to_string()]), ..Options::default() }.config(move |c| {
            let upstream = c.upstream.get_mut();
            upstream.name = Some("items".into());
            upstream.assertion = Some(true);
            upstream.health_check = Some(Word(HealthCheck::None));
            c.tokens.signing_key = text("ed1");
            c.tokens.keys.push(spanned(KeyEntry {
                kid: spanned("ed1".into()),
                algorithm: Word(KeyAlgorithm::EdDsa),
                public_key: format!("{key_dir}/ed1.pub.pem"),
                private_key: Some(format!("{key_dir}/ed1.key.pem")),
            }));
        }),
    );
    let verify = VerifyOptions { jwks_url: gw.url("/.well-known/jwks.json"), audience: "items".into() };
    let upstream =
        Upstream::start_on(listener, MockOptions { verify: Some(verify), ..MockOptions::default() });
    let direct = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    Setup { upstream, gw, keys, direct }
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[test]
fn requests_through_the_gateway_carry_a_verifiable_assertion() {
    let s = setup();
    let (access, _) = s.gw.admin_login();
    let (status, body) = s.gw.get("/item/chair", Some(&access));
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.gw.post("/item/lamp", Some(&access), json!({"price": 3}));
    assert_eq!(status, 201, "{body}");
    // Anonymous requests on optional routes carry one too, without identity.
    let (status, body) = s.gw.get("/items", None);
    assert_eq!((status, body["items"][0].as_str()), (200, Some("chair")), "{body}");

    // What the upstream received: the assertion's claims match the request.
    let (status, echo) = s.gw.get("/debug/echo/any/x", Some(&access));
    assert_eq!(status, 200, "{echo}");
    let assertion = echo["headers"]["x-auth-assertion"][0].as_str().unwrap();
    let claims = claims_of(assertion);
    assert_eq!(claims["aud"], "items");
    assert_eq!(claims["sub"], "1");
    assert_eq!(claims["username"], "admin");
    assert_eq!((claims["admin"].as_bool(), claims["fresh"].as_bool()), (Some(true), Some(true)));
    assert_eq!(
        (claims["method"].as_str(), claims["path"].as_str()),
        (Some("GET"), Some("/debug/echo/any/x"))
    );
    assert_eq!(claims["token_jti"], echo["headers"]["x-auth-token-id"][0]);
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!((1..=60).contains(&lifetime), "{lifetime}");
}

#[test]
fn calling_the_upstream_directly_with_forged_headers_is_refused() {
    let s = setup();
    let url = format!("http://{}/item/chair", s.upstream.addr);
    let resp =
        s.direct.get(&url).header("X-Auth-User-Id", "1").header("X-Auth-Admin", "true").send().unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().unwrap()["error"], "assertion_missing");
    let resp = s.direct.get(&url).header("X-Auth-Assertion", "not.a.jwt").send().unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn assertions_for_another_request_audience_or_time_are_refused() {
    let s = setup();
    let (access, _) = s.gw.admin_login();
    let (_, echo) = s.gw.get("/debug/echo/any/x", Some(&access));
    let real = echo["headers"]["x-auth-assertion"][0].as_str().unwrap().to_owned();
    let base = format!("http://{}", s.upstream.addr);
    let send = |method: reqwest::Method, path: &str, assertion: &str| {
        let resp = s
            .direct
            .request(method, format!("{base}{path}"))
            .header("X-Auth-Assertion", assertion)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap()["error"].as_str().unwrap_or("").to_owned())
    };
    // The real assertion, replayed for another path or method.
    assert_eq!(send(reqwest::Method::GET, "/item/chair", &real), (401, "assertion_mismatch".into()));
    assert_eq!(send(reqwest::Method::DELETE, "/debug/echo/any/x", &real), (401, "assertion_mismatch".into()));

    // Signed with the gateway's own key, but for another audience, or expired.
    let private = std::fs::read(s.keys.path().join("ed1.key.pem")).unwrap();
    let key = EncodingKey::from_ed_pem(&private).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed1".into());
    let sign = |claims: &Value| jsonwebtoken::encode(&header, claims, &key).unwrap();
    let mut other_aud = claims_of(&real);
    other_aud["aud"] = json!("billing");
    assert_eq!(send(reqwest::Method::GET, "/debug/echo/any/x", &sign(&other_aud)).0, 401);
    let mut expired = claims_of(&real);
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 120);
    assert_eq!(send(reqwest::Method::GET, "/debug/echo/any/x", &sign(&expired)).0, 401);
    // An unknown kid makes the mock fetch the key set again, and still refuse.
    let mut unknown = Header::new(Algorithm::EdDSA);
    unknown.kid = Some("other".into());
    let forged = jsonwebtoken::encode(&unknown, &claims_of(&real), &key).unwrap();
    assert_eq!(send(reqwest::Method::GET, "/debug/echo/any/x", &forged).0, 401);
    // And the genuine one, for its own request, passes.
    assert_eq!(send(reqwest::Method::GET, "/debug/echo/any/x", &real).0, 200);
}

/// An independent implementation (Python's PyJWT with its JWKS client)
/// verifies the gateway's access tokens and assertions. `.ci/run` installs it.
#[test]
fn pyjwt_verifies_tokens_and_assertions_with_the_published_keys() {
    let s = setup();
    let (access, _) = s.gw.admin_login();
    let (_, echo) = s.gw.get("/debug/echo/any/x", Some(&access));
    let assertion = echo["headers"]["x-auth-assertion"][0].as_str().unwrap().to_owned();
    let script = r#"
import sys, jwt
url, token, assertion = sys.argv[1:4]
client = jwt.PyJWKClient(url)
for value, audience in ((token, "gatehouse"), (assertion, "items")):
    key = client.get_signing_key_from_jwt(value)
    claims = jwt.decode(value, key.key, algorithms=["EdDSA"], audience=audience)
    print(audience, claims["sub"], claims.get("path", "-"))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &s.gw.url("/.well-known/jwks.json"), &access, &assertion])
        .env("NO_PROXY", "*")
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "PyJWT refused: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("gatehouse 1 -") && stdout.contains("items 1 /debug/echo/any/x"), "{stdout}");
}
