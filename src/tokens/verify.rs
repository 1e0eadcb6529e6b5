//! Checking a token in one pass.
//!
//! `jsonwebtoken::decode` parses the header three times, deserialises the
//! claims twice (into [`Claims`] and into its own validation struct) and keys a
//! new HMAC for every call; on the uncached path that was most of the cost of
//! a request. Here each piece is done once: the header is parsed once with
//! [`jsonwebtoken::decode_header`], the signature is checked once (HS256 with
//! an HMAC keyed at start-up, the asymmetric keys with
//! [`jsonwebtoken::crypto::verify`]), the claims are deserialised once into
//! [`Claims`], and [`check_claims`] applies the time, issuer and audience
//! rules of the key's [`Validation`] to them. The outcomes, and the
//! [`TokenError`] for each input, are those of `decode`; the tests below hold
//! the two side by side.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, Validation};
use sha2::Sha256;

use super::{check_kind, Claims, TokenError, TokenKind, TokenService, MAX_TOKEN_BYTES};
use crate::clock::now_unix;

/// The HS256 secret as an HMAC keyed once at start-up; each check clones it,
/// which is cheaper than keying a new one (two SHA-256 blocks) per token.
pub(super) type Hs256Key = Hmac<Sha256>;

/// Keys the HS256 verifier. `None` only if HMAC refused the key, which it never
/// does (any length is allowed); `decode` would then have refused every token,
/// and so does [`TokenService::verify`] without a key.
pub(super) fn hs256_key(secret: &[u8]) -> Option<Hs256Key> {
    Hs256Key::new_from_slice(secret).ok()
}

impl TokenService {
    /// Checks signature, algorithm, time and audience claims, and the token type.
    ///
    /// The key comes from the `kid` (or is the HS256 secret without one), and
    /// the algorithm from the key: a token whose `alg` is not its key's is
    /// refused (no key confusion). Every check of `jsonwebtoken::decode` is
    /// made, in its order, so the same tokens fail with the same error.
    pub fn verify(&self, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // `crit` names header extensions the verifier must understand (RFC 7515
        // section 4.1.11); Gatehouse understands none, so such a token is refused.
        if header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        // The same split as `decode_header`'s, which just succeeded.
        let (message, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let (_, payload) = message.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let validation = match &header.kid {
            Some(kid) => {
                let (key, validation) = self.keys.get(kid).ok_or(TokenError::Invalid)?;
                if !validation.algorithms.contains(&header.alg) {
                    return Err(TokenError::Invalid);
                }
                match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, header.alg) {
                    Ok(true) => validation,
                    _ => return Err(TokenError::Invalid),
                }
            }
            None => {
                let key = self.hmac.as_ref().ok_or(TokenError::Invalid)?;
                // `self.validation` pins HS256, the one algorithm `key` computes.
                if header.alg != Algorithm::HS256 || !self.validation.algorithms.contains(&header.alg) {
                    return Err(TokenError::Invalid);
                }
                verify_hs256(key, message, signature)?;
                &self.validation
            }
        };
        let claims = decode_claims(payload)?;
        check_claims(&claims, validation, now_unix())?;
        check_kind(expected, claims.kind)?;
        Ok(claims)
    }
}

/// The HS256 check of jsonwebtoken's RustCrypto verifier: the same base64
/// decoding of the signature and the same constant-time `verify_slice`.
fn verify_hs256(key: &Hs256Key, message: &str, signature: &str) -> Result<(), TokenError> {
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Invalid)?;
    let mut mac = key.clone();
    mac.update(message.as_bytes());
    mac.verify_slice(&signature).map_err(|_| TokenError::Invalid)
}

/// The claims as `decode` reads them: base64url without padding, then JSON.
/// Every claim `validation` requires is a required field of [`Claims`], and
/// `exp`/`nbf` are integers there, so a token `decode` would refuse as missing
/// or malformed a claim fails here.
fn decode_claims(payload: &str) -> Result<Claims, TokenError> {
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Invalid)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)
}

/// jsonwebtoken's claim validation, for [`Claims`] (one string `iss` and `aud`;
/// an array `aud` already failed to deserialise, as it does in `decode`) and
/// for the validations [`super::validation`] builds (no `sub` or early-expiry
/// rule; a test checks that). Same order, so an expired token from a wrong
/// issuer is still `Expired`: `exp` with leeway, `nbf` with leeway, `iss` in
/// the accepted set (none set: any), `aud` in the accepted set (none set:
/// refused, as `decode` does).
fn check_claims(claims: &Claims, validation: &Validation, now: u64) -> Result<(), TokenError> {
    let leeway = validation.leeway;
    if validation.validate_exp && claims.exp < now.saturating_sub(leeway) {
        return Err(TokenError::Expired);
    }
    if validation.validate_nbf && claims.nbf > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid);
    }
    if validation.iss.as_ref().is_some_and(|accepted| !accepted.contains(&claims.iss)) {
        return Err(TokenError::Invalid);
    }
    if validation.validate_aud
        && !validation.aud.as_ref().is_some_and(|accepted| accepted.contains(&claims.aud))
    {
        return Err(TokenError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{DecodingKey, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;
    use crate::config::{KeyAlgorithm, KeyConfig, SecretSource, TokenConfig};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const ISS: &str = "gatehouse";
    const AUD: &str = "gatehouse-api";
    const LEEWAY: u64 = 30;

    /// A service with the HS256 secret and, with `ed`, an EdDSA key `ed1` that signs.
    fn service(ed: bool, dir: &std::path::Path) -> TokenService {
        let path = dir.join("secret");
        std::fs::write(&path, SECRET).unwrap();
        let secret = SecretSource { env: None, file: Some(path), purpose: "test" }.load().unwrap();
        let mut keys = Vec::new();
        if ed {
            let files = crate::tokens::keygen::write_key_pair(KeyAlgorithm::EdDsa, "ed1", dir).unwrap();
            keys.push(KeyConfig {
                kid: "ed1".into(),
                algorithm: KeyAlgorithm::EdDsa,
                public_key: files.public,
                private_key: Some(files.private),
            });
        }
        let config = TokenConfig {
            secret: SecretSource { env: None, file: None, purpose: "test" },
            issuer: ISS.into(),
            audience: AUD.into(),
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            leeway: Duration::from_secs(LEEWAY),
            verified_cache_size: 0,
            signing_key: ed.then(|| "ed1".into()),
            keys,
        };
        TokenService::with_keys(&config, Some(&secret)).unwrap()
    }

    /// The verification as it was, straight through `jsonwebtoken::decode`: the oracle.
    fn reference(svc: &TokenService, token: &str, expected: TokenKind) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let hmac = DecodingKey::from_secret(SECRET.as_bytes());
        let (key, validation) = match &header.kid {
            Some(kid) => svc.keys.get(kid).map(|(k, v)| (k, v)).ok_or(TokenError::Invalid)?,
            None => (&hmac, &svc.validation),
        };
        if !validation.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            _ => TokenError::Invalid,
        })?;
        check_kind(expected, data.claims.kind)?;
        Ok(data.claims)
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A token with exactly this header and payload text, signed HS256 with the secret.
    fn raw(header: &str, payload: &str) -> String {
        let message = format!("{}.{}", b64(header), b64(payload));
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    fn claims(kind: &str) -> Value {
        let now = now_unix();
        json!({"sub": "7", "jti": "j", "iat": now, "nbf": now, "exp": now + 60, "iss": ISS, "aud": AUD,
               "type": kind, "fresh": false, "is_admin": false, "ver": 1, "fam": "f"})
    }

    /// Access claims with `changes` applied; a `null` change removes the claim.
    fn with(changes: Value) -> Value {
        let mut claims = claims("access");
        for (name, value) in changes.as_object().unwrap() {
            match value {
                Value::Null => claims.as_object_mut().unwrap().remove(name),
                v => claims.as_object_mut().unwrap().insert(name.clone(), v.clone()),
            };
        }
        claims
    }

    fn hs(alg: Algorithm, claims: &Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&Header::new(alg), claims, &key).unwrap()
    }

    fn hs256(claims: &Value) -> String {
        hs(Algorithm::HS256, claims)
    }

    /// Replaces the character at `at` (from the end if negative) with another.
    fn flip(token: &str, at: isize) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let i = if at < 0 { bytes.len() - at.unsigned_abs() } else { at.unsigned_abs() };
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    /// Checks the new path against `decode` and against the outcome stated.
    fn agree(svc: &TokenService, cases: &[(&str, String, TokenKind, Result<(), TokenError>)]) {
        for (label, token, kind, outcome) in cases {
            let new = svc.verify(token, *kind);
            assert_eq!(new, reference(svc, token, *kind), "{label}: differs from jsonwebtoken::decode");
            assert_eq!(new.map(|_| ()), *outcome, "{label}");
        }
    }

    #[test]
    fn agrees_with_jsonwebtoken_on_hs256_tokens() {
        use TokenError::*;
        use TokenKind::{Access as A, Refresh as R};
        let dir = tempfile::tempdir().unwrap();
        let svc = service(false, dir.path());
        let now = now_unix();
        let good = hs256(&claims("access"));
        let (sig_at, header_json) = (good.rfind('.').unwrap() + 1, r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = serde_json::to_string(&claims("access")).unwrap();
        let other = EncodingKey::from_secret(b"another-secret-another-secret-another");
        let mut refresh_expired = claims("refresh");
        refresh_expired["exp"] = json!(now - 100);
        let cases = [
            ("good access", good.clone(), A, Ok(())),
            ("access as refresh", good.clone(), R, Err(RefreshRequired)),
            ("refresh as access", hs256(&claims("refresh")), A, Err(AccessRequired)),
            ("good refresh", hs256(&claims("refresh")), R, Ok(())),
            ("unknown claim", hs256(&with(json!({"extra": [1]}))), A, Ok(())),
            ("expired", hs256(&with(json!({"exp": now - 100}))), A, Err(Expired)),
            ("expired within leeway", hs256(&with(json!({"exp": now - 10}))), A, Ok(())),
            ("not yet valid", hs256(&with(json!({"nbf": now + 100}))), A, Err(NotYetValid)),
            ("nbf within leeway", hs256(&with(json!({"nbf": now + 10}))), A, Ok(())),
            ("wrong iss", hs256(&with(json!({"iss": "evil"}))), A, Err(Invalid)),
            ("iss as array", hs256(&with(json!({"iss": [ISS]}))), A, Err(Invalid)),
            ("wrong aud", hs256(&with(json!({"aud": ISS}))), A, Err(Invalid)),
            ("aud as array", hs256(&with(json!({"aud": [AUD]}))), A, Err(Invalid)),
            ("aud array of two", hs256(&with(json!({"aud": [AUD, "x"]}))), A, Err(Invalid)),
            ("expired, wrong iss", hs256(&with(json!({"exp": now - 100, "iss": "x"}))), A, Err(Expired)),
            ("early, wrong aud", hs256(&with(json!({"nbf": now + 100, "aud": "x"}))), A, Err(NotYetValid)),
            ("expired refresh as access", hs256(&refresh_expired), A, Err(Expired)),
            ("exp as float", hs256(&with(json!({"exp": (now + 60) as f64 + 0.5}))), A, Err(Invalid)),
            ("exp as string", hs256(&with(json!({"exp": (now + 60).to_string()}))), A, Err(Invalid)),
            ("exp negative", hs256(&with(json!({"exp": -1}))), A, Err(Invalid)),
            ("sub as number", hs256(&with(json!({"sub": 7}))), A, Err(Invalid)),
            (
                "duplicate exp",
                raw(header_json, &payload.replacen('{', &format!("{{\"exp\":{},", now - 100), 1)),
                A,
                Err(Invalid),
            ),
            ("wrong alg HS384", hs(Algorithm::HS384, &claims("access")), A, Err(Invalid)),
            ("wrong alg HS512", hs(Algorithm::HS512, &claims("access")), A, Err(Invalid)),
            ("alg none", format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&payload)), A, Err(Invalid)),
            ("alg RS256 signed HS256", raw(r#"{"alg":"RS256"}"#, &payload), A, Err(Invalid)),
            ("kid unknown", raw(r#"{"alg":"HS256","kid":"nope"}"#, &payload), A, Err(Invalid)),
            ("crit", raw(r#"{"alg":"HS256","crit":["exp"]}"#, &payload), A, Err(Invalid)),
            ("bad typ", raw(r#"{"alg":"HS256","typ":5}"#, &payload), A, Err(Invalid)),
            ("header not json", raw("alg", &payload), A, Err(Invalid)),
            ("payload not json", raw(header_json, "{"), A, Err(Invalid)),
            (
                "other secret",
                jsonwebtoken::encode(&Header::default(), &claims("access"), &other).unwrap(),
                A,
                Err(Invalid),
            ),
            ("tampered payload", flip(&good, sig_at as isize - 3), A, Err(Invalid)),
            ("tampered header", flip(&good, 2), A, Err(Invalid)),
            ("tampered signature", flip(&good, (sig_at + 5) as isize), A, Err(Invalid)),
            ("tampered signature end", flip(&good, -1), A, Err(Invalid)),
            ("signature padded", format!("{good}="), A, Err(Invalid)),
            ("signature truncated", good[..good.len() - 4].to_owned(), A, Err(Invalid)),
            ("signature empty", good[..sig_at].to_owned(), A, Err(Invalid)),
            ("two parts", good[..sig_at - 1].to_owned(), A, Err(Invalid)),
            ("four parts", format!("{}.{good}", b64(header_json)), A, Err(Invalid)),
            ("empty", String::new(), A, Err(Invalid)),
            ("too long", format!("{good}{}", "A".repeat(MAX_TOKEN_BYTES)), A, Err(Invalid)),
        ];
        for name in
            ["sub", "jti", "iat", "nbf", "exp", "iss", "aud", "type", "fresh", "is_admin", "ver", "fam"]
        {
            let token = hs256(&with(json!({ name: null })));
            agree(&svc, &[(format!("missing {name}").as_str(), token, A, Err(Invalid))]);
        }
        agree(&svc, &cases);
    }

    #[test]
    fn agrees_with_jsonwebtoken_on_keyed_tokens() {
        use TokenError::*;
        let dir = tempfile::tempdir().unwrap();
        let svc = service(true, dir.path());
        let private = std::fs::read(dir.path().join("ed1.key.pem")).unwrap();
        let ed = |claims: &Value| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some("ed1".into());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(&private).unwrap()).unwrap()
        };
        let payload = serde_json::to_string(&claims("access")).unwrap();
        let good = ed(&claims("access"));
        let user = crate::store::User {
            id: 7,
            email: String::new(),
            username: String::new(),
            password_hash: String::new(),
            is_admin: false,
            roles: Vec::new(),
            blocked: false,
            created_at: 0,
            token_version: 1,
        };
        let cases = [
            (
                "issued",
                svc.issue(&user, TokenKind::Access, false, "f").unwrap().token,
                TokenKind::Access,
                Ok(()),
            ),
            ("good EdDSA", good.clone(), TokenKind::Access, Ok(())),
            ("EdDSA refresh as access", ed(&claims("refresh")), TokenKind::Access, Err(AccessRequired)),
            ("EdDSA expired", ed(&with(json!({"exp": now_unix() - 100}))), TokenKind::Access, Err(Expired)),
            ("EdDSA wrong aud", ed(&with(json!({"aud": "x"}))), TokenKind::Access, Err(Invalid)),
            (
                "EdDSA tampered payload",
                flip(&good, good.rfind('.').unwrap() as isize - 3),
                TokenKind::Access,
                Err(Invalid),
            ),
            ("EdDSA tampered signature", flip(&good, -2), TokenKind::Access, Err(Invalid)),
            (
                "HS256 with the EdDSA kid",
                raw(r#"{"alg":"HS256","kid":"ed1"}"#, &payload),
                TokenKind::Access,
                Err(Invalid),
            ),
            ("no kid: the secret", hs256(&claims("access")), TokenKind::Access, Ok(())),
            ("EdDSA without kid", raw(r#"{"alg":"EdDSA"}"#, &payload), TokenKind::Access, Err(Invalid)),
        ];
        agree(&svc, &cases);
    }

    /// [`check_claims`] implements only the rules these validations use.
    #[test]
    fn validations_use_only_the_rules_check_claims_implements() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(true, dir.path());
        assert_eq!(svc.validation.algorithms, [Algorithm::HS256]);
        for validation in svc.keys.values().map(|(_, v)| v).chain([&svc.validation]) {
            assert_eq!(validation.reject_tokens_expiring_in_less_than, 0);
            assert!(validation.sub.is_none());
            assert!(validation.validate_exp && validation.validate_nbf && validation.validate_aud);
            assert_eq!(validation.algorithms.len(), 1);
        }
    }

    #[test]
    fn claim_rules_at_their_edges() {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_audience(&[AUD]);
        let at = |exp: u64, nbf: u64, iss: &str, aud: &str| Claims {
            sub: "7".into(),
            jti: "j".into(),
            iat: 0,
            nbf,
            exp,
            iss: iss.into(),
            aud: aud.into(),
            kind: TokenKind::Access,
            fresh: false,
            is_admin: false,
            roles: Vec::new(),
            ver: 0,
            fam: "f".into(),
            csrf: None,
        };
        let check = |claims: Claims, validation: &Validation| check_claims(&claims, validation, 1000);
        assert_eq!(check(at(995, 1000, ISS, AUD), &validation), Ok(()));
        assert_eq!(check(at(994, 1000, ISS, AUD), &validation), Err(TokenError::Expired));
        assert_eq!(check(at(2000, 1005, ISS, AUD), &validation), Ok(()));
        assert_eq!(check(at(2000, 1006, ISS, AUD), &validation), Err(TokenError::NotYetValid));
        // No issuer set: any accepted, as in jsonwebtoken.
        assert_eq!(check(at(2000, 0, "anyone", AUD), &validation), Ok(()));
        validation.set_issuer(&[ISS]);
        assert_eq!(check(at(2000, 0, "anyone", AUD), &validation), Err(TokenError::Invalid));
        assert_eq!(check(at(2000, 0, ISS, "other"), &validation), Err(TokenError::Invalid));
        // No audience set: refused, as in jsonwebtoken.
        validation.aud = None;
        assert_eq!(check(at(2000, 0, ISS, AUD), &validation), Err(TokenError::Invalid));
    }
}
