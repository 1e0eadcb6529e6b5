//! Verify mode: the mock stops trusting plain identity headers and demands
//! the gateway's signed identity assertion on every request, as a careful
//! backend would.
//!
//! Keys come from the gateway's JWK set, cached by `kid` and fetched again
//! when an assertion names a `kid` the cache doesn't know (at most once a
//! second, so junk `kid`s can't make the mock hammer the gateway).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use crate::VerifyOptions;

const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Verifier {
    options: VerifyOptions,
    header: String,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

/// The assertion claims the mock checks against the request.
#[derive(Deserialize)]
struct Claims {
    method: String,
    path: String,
}

fn refuse(code: &'static str, message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"error": code, "message": message}))).into_response()
}

impl Verifier {
    pub(crate) fn new(options: VerifyOptions, identity_prefix: &str) -> Self {
        Verifier {
            options,
            header: format!("{}assertion", identity_prefix.to_ascii_lowercase()),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: Mutex::new(Keys::default()),
        }
    }

    pub(crate) async fn check(&self, req: Request, next: Next) -> Response {
        if req.uri().path() == "/healthz" {
            return next.run(req).await;
        }
        let mut values = req.headers().get_all(self.header.as_str()).iter();
        let token = match (values.next().and_then(|v| v.to_str().ok()), values.next()) {
            (Some(token), None) => token.to_owned(),
            (None, _) => {
                return refuse("assertion_missing", "This service needs the gateway's identity assertion.")
            }
            (Some(_), Some(_)) => {
                return refuse("assertion_invalid", "More than one identity assertion was sent.")
            }
        };
        let claims = match self.verify(&token).await {
            Ok(claims) => claims,
            Err(message) => return refuse("assertion_invalid", &message),
        };
        if claims.method != req.method().as_str() || claims.path != req.uri().path() {
            return refuse("assertion_mismatch", "The identity assertion was issued for another request.");
        }
        next.run(req).await
    }

    async fn verify(&self, token: &str) -> Result<Claims, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("The assertion is malformed: {e}."))?;
        let kid = header.kid.ok_or("The assertion names no key.")?;
        let (key, algorithm) = match self.key(&kid) {
            Some(found) => found,
            None => {
                self.refresh().await?;
                self.key(&kid).ok_or("The assertion is signed with a key the gateway does not publish.")?
            }
        };
        if header.alg != algorithm {
            return Err("The assertion's algorithm does not match its key.".into());
        }
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[&self.options.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| format!("The assertion is not valid: {e}."))
    }

    fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).by_kid.get(kid).cloned()
    }

    async fn refresh(&self) -> Result<(), String> {
        {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.fetched.is_some_and(|at| at.elapsed() < REFETCH_AT_MOST_EVERY) {
                return Ok(());
            }
        }
        let set: JwkSet = self
            .http
            .get(&self.options.jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("The gateway's keys could not be fetched: {e}."))?
            .json()
            .await
            .map_err(|e| format!("The gateway's key set is not valid: {e}."))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (&jwk.common.key_id, jwk.common.key_algorithm) else { continue };
            let Ok(algorithm) = alg.to_string().parse::<Algorithm>() else { continue };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(kid.clone(), (key, algorithm));
            }
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }
}
