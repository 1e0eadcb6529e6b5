//! The admin listener: health checks and the operator API.
//!
//! sled lets one process open the store at a time, so while the gateway runs
//! the CLI manages users and revocations through this API instead. It listens
//! on its own address (localhost by default) and every `/admin/` call needs
//! the admin token as a bearer token.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::accounts::{Accounts, Registration};
use crate::auth::bearer_token;
use crate::config::Secret;
use crate::endpoints::{parse_json, Reply};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::proxy::Live;
use crate::store::{UserChange, UserId};
use crate::tokens::TokenService;

/// Largest body the admin API reads.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// The longest a caller may take to send an admin request body.
const ADMIN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct AdminApi {
    accounts: Accounts,
    /// Checks tokens presented for revocation; absent when the CLI works on a
    /// store directly without the signing secret.
    tokens: Option<Arc<TokenService>>,
    /// Absent for in-process use by the CLI, which needs no HTTP authentication.
    admin_token: Option<Secret>,
    /// The running gateway's metrics and live config, for `/metrics` and `/readyz`.
    operations: Option<(Arc<Metrics>, Arc<ArcSwap<Live>>)>,
}

#[derive(Deserialize)]
struct UserPatch {
    is_admin: Option<bool>,
    blocked: Option<bool>,
}

#[derive(Deserialize)]
struct RevokeRequest {
    token: String,
}

impl AdminApi {
    pub fn new(accounts: Accounts, tokens: Option<Arc<TokenService>>, admin_token: Option<Secret>) -> Self {
        AdminApi { accounts, tokens, admin_token, operations: None }
    }

    /// Adds `/metrics` and upstream readiness (the running gateway's admin listener).
    pub fn with_operations(mut self, metrics: Arc<Metrics>, live: Arc<ArcSwap<Live>>) -> Self {
        self.operations = Some((metrics, live));
        self
    }

    /// Ready: the store answers and at least one upstream passes its health check.
    async fn readiness(&self) -> Reply {
        let store_ok = match self.accounts.store().health().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "readiness: store check failed");
                false
            }
        };
        let upstreams: Vec<(String, bool)> = match &self.operations {
            Some((_, live)) => {
                live.load().upstreams.health().into_iter().map(|(a, ok)| (a.to_string(), ok)).collect()
            }
            None => Vec::new(),
        };
        let ready = store_ok && upstreams.iter().any(|(_, ok)| *ok);
        let upstream_states: serde_json::Map<String, serde_json::Value> = upstreams
            .into_iter()
            .map(|(addr, ok)| (addr, serde_json::Value::from(if ok { "healthy" } else { "unhealthy" })))
            .collect();
        let body = serde_json::json!({
            "status": if ready { "ready" } else { "not_ready" },
            "store": if store_ok { "ok" } else { "failing" },
            "upstreams": upstream_states,
        });
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        Reply::json(status, &body)
    }

    fn authorised(&self, headers: &http::HeaderMap) -> Result<(), ApiError> {
        let presented = bearer_token(headers)?.ok_or(ApiError::MissingToken)?;
        let Some(expected) = self.admin_token.as_ref().map(Secret::expose) else {
            return Err(ApiError::InvalidToken);
        };
        if presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::InvalidToken)
        }
    }

    /// Runs one admin operation. The HTTP listener authenticates before calling
    /// this; the CLI calls it directly when it holds the store itself.
    pub async fn call(&self, method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Reply {
        self.route(method, path, query, body).await.unwrap_or_else(|e| Reply::error(&e))
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["admin", "users"]) => match query.and_then(email_param) {
                Some(email) => ok(&vec![self.accounts.find_by_email(&email).await?]),
                None => ok(&self.accounts.list().await?),
            },
            (&Method::POST, ["admin", "users"]) => {
                let registration: Registration = parse_json(body)?;
                let user = self.accounts.create(registration).await?;
                Ok(Reply::json(StatusCode::CREATED, &user))
            }
            (&Method::GET, ["admin", "users", id]) => ok(&self.accounts.show(user_id(id)?).await?),
            (&Method::DELETE, ["admin", "users", id]) => {
                self.accounts.delete(user_id(id)?).await?;
                ok(&serde_json::json!({"message": "User deleted."}))
            }
            (&Method::PATCH, ["admin", "users", id]) => {
                let id = user_id(id)?;
                let patch: UserPatch = parse_json(body)?;
                let mut user = self.accounts.show(id).await?;
                if let Some(admin) = patch.is_admin {
                    user = self.accounts.change(id, UserChange::SetAdmin(admin)).await?;
                }
                if let Some(blocked) = patch.blocked {
                    user = self.accounts.change(id, UserChange::SetBlocked(blocked)).await?;
                }
                ok(&user)
            }
            (&Method::POST, ["admin", "users", id, "revoke-tokens"]) => {
                let user = self.accounts.change(user_id(id)?, UserChange::RevokeAllTokens).await?;
                ok(&user)
            }
            (&Method::POST, ["admin", "revoke"]) => {
                let RevokeRequest { token } = parse_json(body)?;
                let tokens = self.tokens.as_ref().ok_or_else(|| {
                    ApiError::InvalidRequest(
                        "the token signing secret is not available to check this token".into(),
                    )
                })?;
                let claims = self.accounts.revoke_token(tokens, &token).await?;
                ok(
                    &serde_json::json!({"message": "Token revoked.", "token_id": claims.jti, "user_id": claims.sub}),
                )
            }
            (&Method::GET, ["admin", "stats"]) => {
                let store = self.accounts.store();
                let users = store.users().await?.len();
                let revocations = store.revoked_count().await?;
                ok(&serde_json::json!({"users": users, "revocations": revocations}))
            }
            _ => Err(ApiError::NotFound),
        }
    }

    async fn respond(&self, session: &mut ServerSession) -> Reply {
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_owned();
        let query = header.uri.query().map(str::to_owned);
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => {
                return Reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
            }
            (&Method::GET, "/readyz") => return self.readiness().await,
            (&Method::GET, "/metrics") => {
                if let Some((metrics, _)) = &self.operations {
                    let store = self.accounts.store();
                    if let Ok(count) = store.revoked_count().await {
                        metrics.revocation_entries.set(i64::try_from(count).unwrap_or(i64::MAX));
                    }
                    metrics.store_up.set(i64::from(store.health().await.is_ok()));
                    return Reply {
                        status: StatusCode::OK,
                        body: metrics.render(),
                        headers: vec![(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT.to_owned())],
                        error_code: None,
                    };
                }
            }
            _ => {}
        }
        if let Err(e) = self.authorised(&session.req_header().headers) {
            return Reply::error(&e);
        }
        let body = match crate::proxy::read_body(session, MAX_ADMIN_BODY, ADMIN_BODY_TIMEOUT).await {
            Ok(body) => body,
            Err(e) => return Reply::error(&e),
        };
        self.call(&method, &path, query.as_deref(), &body).await
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let reply = self.respond(session).await;
        let mut builder = Response::builder()
            .status(reply.status)
            .header(http::header::CONTENT_LENGTH, reply.body.len())
            .header(http::header::CACHE_CONTROL, "no-store");
        if !reply.headers.iter().any(|(name, _)| name == http::header::CONTENT_TYPE) {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &reply.headers {
            builder = builder.header(name, value);
        }
        builder.body(reply.body).unwrap_or_else(|_| Response::new(ApiError::Internal.body()))
    }
}

fn email_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "email").map(|(_, v)| v.into_owned())
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::UserNotFound)
}

fn ok<T: serde::Serialize>(value: &T) -> Result<Reply, ApiError> {
    Ok(Reply::json(StatusCode::OK, value))
}
