//! The endpoints Gatehouse answers itself: register, login, refresh, logout
//! and the user resource. They are plain functions from a request to a
//! [`Reply`], so the proxy only has to read the body and write the answer.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, Registration, UserView};
use crate::auth::{bearer_token, Authenticator};
use crate::config::EndpointConfig;
use crate::error::ApiError;
use crate::http_io::{parse_json, Message, Reply};
use crate::limits::LoginLimiter;
use crate::metrics::Metrics;
use crate::store::UserChange;
use crate::store::UserId;
use crate::tokens::{new_family_id, TokenError, TokenKind};

/// Which built-in endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Register,
    Login,
    Refresh,
    Logout,
    /// `{users}/{id}`; `None` when the id is not a number.
    User(Option<UserId>),
    /// `{users}/{id}/tokens`: `DELETE` revokes every token of the user.
    UserTokens(Option<UserId>),
    /// The public keys that verify this gateway's tokens.
    Jwks,
}

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Register => "register",
            Endpoint::Login => "login",
            Endpoint::Refresh => "refresh",
            Endpoint::Logout => "logout",
            Endpoint::User(_) => "user",
            Endpoint::UserTokens(_) => "user_tokens",
            Endpoint::Jwks => "jwks",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub token_type: String,
    pub expires_in: u64,
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Deserialize, Default)]
struct LogoutRequest {
    refresh_token: Option<String>,
    /// Revoke every token of the user, on every device.
    #[serde(default)]
    everywhere: bool,
}

pub struct BuiltIns {
    paths: EndpointConfig,
    auth: Arc<Authenticator>,
    accounts: Accounts,
    limiter: Arc<LoginLimiter>,
    metrics: Arc<Metrics>,
}

impl BuiltIns {
    pub fn new(
        paths: EndpointConfig,
        auth: Arc<Authenticator>,
        accounts: Accounts,
        limiter: Arc<LoginLimiter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        BuiltIns { paths, auth, accounts, limiter, metrics }
    }

    pub fn max_body_bytes(&self) -> usize {
        self.paths.max_body_bytes
    }

    /// The longest a client may take to send a built-in endpoint's body.
    pub fn body_timeout(&self) -> std::time::Duration {
        self.paths.body_timeout
    }

    /// The built-in endpoint at the normalised `path`, if any. Built-ins take
    /// precedence over routes, and `/login/` is `/login`: a built-in's path is
    /// never forwarded upstream (with a password in its body) in any spelling.
    pub fn route(&self, path: &str) -> Option<Endpoint> {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        // Letter case doesn't matter either, as in route matching: `/LOGIN`
        // must not reach a case-insensitive upstream with a password.
        let p = &self.paths;
        let is = |built_in: &str| path.eq_ignore_ascii_case(built_in);
        if is(&p.login) {
            Some(Endpoint::Login)
        } else if is(&p.refresh) {
            Some(Endpoint::Refresh)
        } else if is(&p.logout) {
            Some(Endpoint::Logout)
        } else if is(&p.register) {
            Some(Endpoint::Register)
        } else if is(&p.jwks) {
            Some(Endpoint::Jwks)
        } else {
            let prefix = path.get(..p.users.len()).filter(|head| head.eq_ignore_ascii_case(&p.users))?;
            let rest = path[prefix.len()..].strip_prefix('/')?;
            match rest.split_once('/') {
                None if !rest.is_empty() => Some(Endpoint::User(rest.parse().ok())),
                Some((id, tokens)) if tokens.eq_ignore_ascii_case("tokens") => {
                    Some(Endpoint::UserTokens(id.parse().ok()))
                }
                _ => None,
            }
        }
    }

    pub async fn handle(
        &self,
        endpoint: Endpoint,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
        client: Option<IpAddr>,
    ) -> Reply {
        let allowed = match endpoint {
            Endpoint::User(_) => *method == Method::GET || *method == Method::DELETE,
            Endpoint::UserTokens(_) => *method == Method::DELETE,
            Endpoint::Jwks => *method == Method::GET || *method == Method::HEAD,
            _ => *method == Method::POST,
        };
        if !allowed {
            return Reply::error(&ApiError::MethodNotAllowed(method.to_string()));
        }
        // Every built-in endpoint but the key set reads the store for real (even
        // with `fail_open`, which only lets proxied requests use a cached copy).
        if endpoint != Endpoint::Jwks && !self.accounts.is_reachable() {
            return Reply::error(&ApiError::StoreUnavailable);
        }
        if matches!(endpoint, Endpoint::Register | Endpoint::Login) {
            if let Err(e) = self.limiter.check_ip(client).await {
                e.log();
                let e = ApiError::from(e);
                tracing::warn!(client = ?client, endpoint = endpoint.label(), "rate limited");
                if endpoint == Endpoint::Login {
                    self.metrics.logins.with_label_values(&[e.code()]).inc();
                }
                return Reply::error(&e);
            }
        }
        match endpoint {
            Endpoint::Jwks => Reply {
                status: StatusCode::OK,
                body: self.auth.tokens().jwks().to_vec(),
                headers: vec![(http::header::CACHE_CONTROL, "public, max-age=300".to_owned())],
                error_code: None,
            },
            Endpoint::UserTokens(id) => {
                Reply::from_result(StatusCode::OK, self.revoke_user_tokens(headers, id).await)
            }
            Endpoint::Register => Reply::from_result(StatusCode::CREATED, self.register(body).await),
            Endpoint::Login => {
                let result = self.login(body, client).await;
                self.metrics.logins.with_label_values(&[result_label(&result)]).inc();
                Reply::from_result(StatusCode::OK, result)
            }
            Endpoint::Refresh => {
                let result = self.refresh(headers).await;
                self.metrics.refreshes.with_label_values(&[result_label(&result)]).inc();
                if matches!(result, Err(ApiError::RefreshTokenReused)) {
                    self.metrics.revocations.with_label_values(&["session"]).inc();
                }
                Reply::from_result(StatusCode::OK, result)
            }
            Endpoint::Logout => Reply::from_result(StatusCode::OK, self.logout(headers, body).await),
            Endpoint::User(id) if *method == Method::GET => {
                Reply::from_result(StatusCode::OK, self.show_user(headers, id).await)
            }
            Endpoint::User(id) => Reply::from_result(StatusCode::OK, self.delete_user(headers, id).await),
        }
    }

    async fn register(&self, body: &[u8]) -> Result<UserView, ApiError> {
        if !self.paths.allow_registration {
            return Err(ApiError::RegistrationDisabled);
        }
        #[derive(Deserialize)]
        struct Public {
            email: String,
            username: String,
            password: String,
        }
        let Public { email, username, password } = parse_json(body)?;
        // Self-registration never creates administrators.
        self.accounts.create(Registration { email, username, password, is_admin: false }).await
    }

    async fn login(&self, body: &[u8], client: Option<IpAddr>) -> Result<TokenPair, ApiError> {
        let LoginRequest { email, password } = parse_json(body)?;
        let user = self.accounts.login(&self.limiter, &email, password, client).await?;
        let tokens = self.auth.tokens();
        let family = new_family_id();
        let access = tokens.issue(&user, TokenKind::Access, true, &family)?;
        let refresh = tokens.issue(&user, TokenKind::Refresh, false, &family)?;
        tracing::info!(user_id = user.id, "login succeeded");
        Ok(TokenPair {
            access_token: access.token,
            refresh_token: Some(refresh.token),
            token_type: "Bearer".into(),
            expires_in: tokens.access_ttl().as_secs(),
        })
    }

    async fn refresh(&self, headers: &HeaderMap) -> Result<TokenPair, ApiError> {
        let token = bearer_token(headers)?.ok_or(ApiError::MissingToken)?;
        let auth = self.auth.authenticate(token, TokenKind::Refresh).await?;
        // Rotation: the presented refresh token is used up. If another request
        // retired it first, this is a replay of a copied token.
        if !self.accounts.retire(&auth.claims).await? {
            return Err(self.auth.refresh_replayed(&auth.claims).await);
        }
        let tokens = self.auth.tokens();
        let access = tokens.issue(&auth.user, TokenKind::Access, false, &auth.claims.fam)?;
        let refresh = tokens.issue(&auth.user, TokenKind::Refresh, false, &auth.claims.fam)?;
        Ok(TokenPair {
            access_token: access.token,
            refresh_token: Some(refresh.token),
            token_type: "Bearer".into(),
            expires_in: tokens.access_ttl().as_secs(),
        })
    }

    async fn logout(&self, headers: &HeaderMap, body: &[u8]) -> Result<Message, ApiError> {
        let auth = self.auth.require_access(headers).await?;
        // The body is optional: empty, `null` and `{}` all mean "just this access token".
        let request: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
            LogoutRequest::default()
        } else {
            parse_json::<Option<LogoutRequest>>(body)?.unwrap_or_default()
        };
        // Check the refresh token before revoking anything, so a bad request changes nothing.
        let refresh_claims = match request.refresh_token {
            None => None,
            Some(token) => match self.auth.tokens().verify(&token, TokenKind::Refresh) {
                Ok(claims) if claims.sub == auth.claims.sub => Some(claims),
                Ok(_) => {
                    return Err(ApiError::InvalidRequest("refresh_token belongs to another account".into()))
                }
                // Already expired: nothing left to revoke.
                Err(TokenError::Expired) => None,
                Err(_) => {
                    return Err(ApiError::InvalidRequest("refresh_token is not a valid refresh token".into()))
                }
            },
        };
        if request.everywhere {
            self.accounts.change(auth.user.id, UserChange::RevokeAllTokens).await?;
            return Ok(Message::new("Logged out everywhere."));
        }
        self.accounts.revoke(&auth.claims).await?;
        if let Some(claims) = refresh_claims {
            self.accounts.revoke(&claims).await?;
        }
        Ok(Message::new("Logged out."))
    }

    /// `DELETE {users}/{id}/tokens`: the user themself, or a fresh admin.
    async fn revoke_user_tokens(&self, headers: &HeaderMap, id: Option<UserId>) -> Result<Message, ApiError> {
        let auth = self.auth.require_access(headers).await?;
        let id = id.ok_or(ApiError::UserNotFound)?;
        if id != auth.user.id {
            // Someone else's tokens: a non-admin is told they aren't theirs.
            auth.require(true, None, true).map_err(|e| match e {
                ApiError::AdminRequired => ApiError::NotYourAccount,
                other => other,
            })?;
        }
        self.accounts.change(id, UserChange::RevokeAllTokens).await?;
        Ok(Message::new("Every token of this user is revoked."))
    }

    async fn show_user(&self, headers: &HeaderMap, id: Option<UserId>) -> Result<UserView, ApiError> {
        let auth = self.auth.require_access(headers).await?;
        let id = id.ok_or(ApiError::UserNotFound)?;
        if id != auth.user.id && !auth.is_admin() {
            return Err(ApiError::NotYourAccount);
        }
        self.accounts.show(id).await
    }

    async fn delete_user(&self, headers: &HeaderMap, id: Option<UserId>) -> Result<Message, ApiError> {
        let auth = self.auth.require_access(headers).await?;
        auth.require(true, None, true)?;
        self.accounts.delete(id.ok_or(ApiError::UserNotFound)?).await?;
        Ok(Message::new("User deleted."))
    }
}

/// `success`, or the error code: the `result` label of the login and refresh counters.
fn result_label<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(e) => e.code(),
    }
}
