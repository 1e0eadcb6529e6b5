//! Asymmetric signing keys: keygen, EdDSA/ES256/RS256 tokens with a `kid`,
//! the published JWK set, key rotation without logging anyone out, and no
//! key confusion between the HS256 secret and the key pairs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse::config::file::{KeyEntry, Word};
use gatehouse::config::KeyAlgorithm;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;
use toml::Spanned;

use crate::common::config::{spanned, text};
use crate::common::{binary, Gateway, Options, Upstream};

fn keygen(dir: &Path, algorithm: &str, kid: &str) {
    let out = Command::new(binary())
        .args(["keygen", "--algorithm", algorithm, "--kid", kid, "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A `[[tokens.keys]]` entry for a key `keygen` wrote to `dir`.
fn key_entry(dir: &Path, kid: &str, algorithm: &str, private: bool) -> Spanned<KeyEntry> {
    let file = |suffix: &str| dir.join(format!("{kid}.{suffix}")).display().to_string();
    spanned(KeyEntry {
        kid: spanned(kid.to_owned()),
        algorithm: Word(KeyAlgorithm::parse(algorithm).unwrap()),
        public_key: file("pub.pem"),
        private_key: private.then(|| file("key.pem")),
    })
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

fn jwks(gw: &Gateway) -> Value {
    let (status, body) = gw.get("/.well-known/jwks.json", None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "EdDSA", "k1");
    let private = std::fs::metadata(dir.path().join("k1.key.pem")).unwrap();
    assert_eq!(private.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(dir.path().join("k1.pub.pem")).unwrap().contains("BEGIN PUBLIC KEY"));
    // It never overwrites a key.
    let again =
        Command::new(binary()).args(["keygen", "--kid", "k1", "--out"]).arg(dir.path()).output().unwrap();
    assert!(!again.status.success());
}

#[test]
fn every_algorithm_signs_tokens_that_the_published_keys_verify() {
    for algorithm in ["EdDSA", "ES256", "RS256"] {
        let upstream = Upstream::start();
        let keys = tempfile::tempdir().unwrap();
        let kid = format!("{}-1", algorithm.to_lowercase());
        keygen(keys.path(), algorithm, &kid);
        let (dir, signer) = (keys.path().to_owned(), kid.clone());
        let gw = Gateway::start(
            &upstream,
            Options::default().config(move |c| {
                c.tokens.signing_key = text(&signer);
                c.tokens.keys.push(key_entry(&dir, &signer, algorithm, true));
            }),
        );
        let (access, _) = gw.admin_login();
        let header = header_of(&access);
        assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some(algorithm), Some(kid.as_str())));
        assert_eq!(gw.get("/item/chair", Some(&access)).0, 200, "{algorithm}");

        // The JWK set holds the public key and nothing private.
        let set = jwks(&gw);
        let text = set.to_string();
        for private_member in ["\"d\"", "\"p\"", "\"q\"", "\"dp\"", "\"dq\"", "\"qi\"", "PRIVATE"] {
            assert!(!text.contains(private_member), "{algorithm}: private material in the JWKS: {text}");
        }
        // An independent check: verify the token with the published key.
        let set: JwkSet = serde_json::from_value(set).unwrap();
        let jwk = set.find(&kid).unwrap();
        let alg: Algorithm = algorithm.parse().unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&["gatehouse"]);
        let claims =
            jsonwebtoken::decode::<Value>(&access, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
                .unwrap();
        assert_eq!(claims.claims["sub"], "1");
    }
}

#[test]
fn rotating_the_signing_key_logs_nobody_out_and_retiring_a_key_refuses_its_tokens() {
    let upstream = Upstream::start();
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), "EdDSA", "old");
    keygen(keys.path(), "EdDSA", "new");
    let dir = keys.path().to_owned();
    let mut gw = Gateway::start(
        &upstream,
        Options::default().config(move |c| {
            c.tokens.signing_key = text("old");
            c.tokens.keys.push(key_entry(&dir, "old", "EdDSA", true));
        }),
    );
    let (old_token, old_refresh) = gw.admin_login();

    // Step 1: add the new key and make it the signer; the old one only verifies.
    gw.rewrite_config(|c| {
        c.tokens.signing_key = text("new");
        c.tokens.keys =
            vec![key_entry(keys.path(), "old", "EdDSA", false), key_entry(keys.path(), "new", "EdDSA", true)];
    });
    gw.kill();
    gw.spawn().unwrap();
    assert_eq!(gw.get("/item/chair", Some(&old_token)).0, 200, "a token from the old key still works");
    let (new_token, _) = gw.admin_login();
    assert_eq!(header_of(&new_token)["kid"], "new");
    let kids: Vec<String> =
        jwks(&gw)["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kids, vec!["old", "new"]);

    // Step 2: once old tokens have expired, retire the old key.
    gw.rewrite_config(|c| c.tokens.keys.retain(|key| key.get_ref().kid.get_ref() != "old"));
    gw.kill();
    gw.spawn().unwrap();
    let (status, body) = gw.get("/item/chair", Some(&old_token));
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")));
    assert_eq!(gw.post("/refresh", Some(&old_refresh), Value::Null).0, 401);
    assert_eq!(gw.get("/item/chair", Some(&new_token)).0, 200);
}

#[test]
fn an_alg_that_does_not_match_the_kids_key_is_refused() {
    let upstream = Upstream::start();
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), "EdDSA", "ed");
    keygen(keys.path(), "ES256", "ec");
    let dir = keys.path().to_owned();
    let gw = Gateway::start(
        &upstream,
        Options::default().config(move |c| {
            c.tokens.signing_key = text("ed");
            c.tokens.keys = vec![key_entry(&dir, "ed", "EdDSA", true), key_entry(&dir, "ec", "ES256", true)];
        }),
    );
    let (good, _) = gw.admin_login();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(good.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let sign = |alg: Algorithm, kid: Option<&str>, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    // HMAC keyed with the public key's bytes, claiming the Ed25519 kid.
    let public_pem = std::fs::read(keys.path().join("ed.pub.pem")).unwrap();
    let forged = sign(Algorithm::HS256, Some("ed"), &EncodingKey::from_secret(&public_pem));
    // The ES256 key used under the EdDSA key's kid.
    let ec_private = std::fs::read(keys.path().join("ec.key.pem")).unwrap();
    let swapped = sign(Algorithm::ES256, Some("ed"), &EncodingKey::from_ec_pem(&ec_private).unwrap());
    // A kid no key has, and an HS256 token without kid signed with the (valid) HS256 secret still works.
    let unknown = sign(Algorithm::ES256, Some("nope"), &EncodingKey::from_ec_pem(&ec_private).unwrap());
    let hs = sign(Algorithm::HS256, None, &EncodingKey::from_secret(gw.jwt_secret.as_bytes()));
    for (name, token) in
        [("hmac with public key", &forged), ("swapped key", &swapped), ("unknown kid", &unknown)]
    {
        let (status, body) = gw.get("/item/chair", Some(token));
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{name}");
    }
    assert_eq!(gw.get("/item/chair", Some(&hs)).0, 200, "kid-less HS256 tokens still verify with the secret");
    // The ES256 key signs validly under its own kid.
    let own = sign(Algorithm::ES256, Some("ec"), &EncodingKey::from_ec_pem(&ec_private).unwrap());
    assert_eq!(gw.get("/item/chair", Some(&own)).0, 200);
}
