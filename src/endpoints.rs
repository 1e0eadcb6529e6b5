//! The endpoints Gatehouse answers itself: register, login, refresh, logout
//! and the user resource. They are plain functions from a request to a
//! [`Reply`], so the proxy only has to read the body and write the answer.
//!
//! With `[cookies]` on, a login or refresh can answer with the tokens in
//! HttpOnly cookies (and their CSRF values in readable ones) instead of in
//! the body: the body then carries no token, because HttpOnly is there so the
//! page's scripts (and whatever is injected into them) can't read the tokens,
//! and a body hands them to the very script that asked. Logout clears them.
//!
//! The sign-in page (`[signin]`, [`crate::signin`]) is one of them too: its
//! post signs in through the very code `/login` does (limits, argon2,
//! blocked accounts, the same cookies), only with a form for a body.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, Registration, UserView};
use crate::auth::{Authenticator, Presented, Source};
use crate::config::{EndpointConfig, SetOnLogin};
use crate::cookies::{new_csrf_value, set_cookie, Sent, Which};
use crate::error::ApiError;
use crate::http_io::{parse_json, Message, Reply};
use crate::limits::LoginLimiter;
use crate::metrics::Metrics;
use crate::signin::{SigninForm, SigninPage};
use crate::store::{User, UserChange, UserId};
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
    /// `[signin] path`: the HTML sign-in page (`GET`) and its form (`POST`).
    Signin,
    /// `{signin}/out`: the sign-out button (`GET`) and its post (`POST`).
    Signout,
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
            Endpoint::Signin => "signin",
            Endpoint::Signout => "signout",
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

/// The body of a login or refresh that set cookies: no token (see the
/// module docs), only when the access token expires and the CSRF values the
/// page's scripts send back (the same as in the CSRF cookies, for a page
/// that can't read the gateway's cookies).
#[derive(Debug, Serialize, Deserialize)]
pub struct CookieSession {
    pub token_type: String,
    pub expires_in: u64,
    pub csrf_access_token: String,
    pub csrf_refresh_token: String,
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
    /// Answer with cookies (`[cookies] set_on_login` when absent).
    #[serde(default)]
    set_cookies: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RefreshRequest {
    #[serde(default)]
    set_cookies: Option<bool>,
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
    signin: SigninPage,
}

impl BuiltIns {
    pub fn new(
        paths: EndpointConfig,
        auth: Arc<Authenticator>,
        accounts: Accounts,
        limiter: Arc<LoginLimiter>,
        metrics: Arc<Metrics>,
        signin: SigninPage,
    ) -> Self {
        BuiltIns { paths, auth, accounts, limiter, metrics, signin }
    }

    /// The sign-in page's path, when `[signin]` is on.
    pub fn signin_path(&self) -> Option<&str> {
        self.signin.enabled().then(|| self.signin.path())
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
        } else if self.signin_path().is_some_and(is) {
            Some(Endpoint::Signin)
        } else if self.signin.enabled() && is(&self.signin.signout_path()) {
            Some(Endpoint::Signout)
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
        request: Presented<'_>,
        query: Option<&str>,
        body: &[u8],
        client: Option<IpAddr>,
    ) -> Reply {
        let method = request.method;
        let allowed = match endpoint {
            Endpoint::User(_) => *method == Method::GET || *method == Method::DELETE,
            Endpoint::UserTokens(_) => *method == Method::DELETE,
            Endpoint::Jwks => *method == Method::GET || *method == Method::HEAD,
            Endpoint::Signin | Endpoint::Signout => {
                *method == Method::GET || *method == Method::HEAD || *method == Method::POST
            }
            _ => *method == Method::POST,
        };
        if !allowed {
            return Reply::error(&ApiError::MethodNotAllowed(method.to_string()));
        }
        // Every built-in endpoint but the key set reads the store for real (even
        // with `fail_open`, which only lets proxied requests use a cached copy).
        // The sign-in page itself needs nothing from the store; its post does.
        let page_only = endpoint == Endpoint::Signin && *method != Method::POST;
        if page_only {
            return self.signin.serve(query);
        }
        if endpoint != Endpoint::Jwks && !self.accounts.is_reachable() {
            return self.answer_error(endpoint, &ApiError::StoreUnavailable, body);
        }
        if matches!(endpoint, Endpoint::Register | Endpoint::Login | Endpoint::Signin) {
            if let Err(e) = self.limiter.check_ip(client).await {
                e.log();
                let e = ApiError::from(e);
                tracing::warn!(
                    client = client.map(tracing::field::display),
                    endpoint = endpoint.label(),
                    "rate limited"
                );
                if endpoint != Endpoint::Register {
                    self.metrics.logins.with_label_values(&[e.code()]).inc();
                }
                return self.answer_error(endpoint, &e, body);
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
                Reply::from_result(StatusCode::OK, self.revoke_user_tokens(request, id).await)
            }
            Endpoint::Register => Reply::from_result(StatusCode::CREATED, self.register(body).await),
            Endpoint::Login => {
                let result = self.login(request.headers, body, client).await;
                self.metrics.logins.with_label_values(&[result_label(&result)]).inc();
                result.unwrap_or_else(|e| Reply::error(&e))
            }
            Endpoint::Refresh => {
                let result = self.refresh(request, body).await;
                self.metrics.refreshes.with_label_values(&[result_label(&result)]).inc();
                if matches!(result, Err(ApiError::RefreshTokenReused)) {
                    self.metrics.revocations.with_label_values(&["session"]).inc();
                }
                result.unwrap_or_else(|e| Reply::error(&e))
            }
            Endpoint::Signin => {
                let form = SigninForm::parse(request.headers, body);
                let result = match &form {
                    Ok(form) => self.sign_in(request, form, client).await,
                    Err(e) => Err(e.clone()),
                };
                self.metrics.logins.with_label_values(&[result_label(&result)]).inc();
                result.unwrap_or_else(|e| self.answer_error(endpoint, &e, body))
            }
            Endpoint::Signout => self.sign_out(request, body).await,
            Endpoint::Logout => self.logout(request, body).await.unwrap_or_else(|e| Reply::error(&e)),
            Endpoint::User(id) if *method == Method::GET => {
                Reply::from_result(StatusCode::OK, self.show_user(request, id).await)
            }
            Endpoint::User(id) => Reply::from_result(StatusCode::OK, self.delete_user(request, id).await),
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

    async fn login(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        client: Option<IpAddr>,
    ) -> Result<Reply, ApiError> {
        let LoginRequest { email, password, set_cookies } = parse_json(body)?;
        // Before the password work: a request the gateway can't answer is refused first.
        let cookies = self.wants_cookies(set_cookies)?;
        // Login CSRF: a cross-site form can post JSON-looking text (`text/plain`)
        // and the browser keeps the cookies of the answer, signing the victim
        // into the attacker's account. A JSON content type needs a CORS
        // preflight, which the built-in endpoints never grant.
        if cookies && !is_json(headers) {
            return Err(ApiError::InvalidRequest(
                "a login that sets cookies must be sent with Content-Type: application/json".into(),
            ));
        }
        self.log_in(&email, password, client, cookies).await
    }

    /// The one way in by password, for `/login` and the sign-in page alike:
    /// the login limits, the password check and blocked accounts
    /// ([`Accounts::login`]), then a fresh session's tokens ([`Self::issue`]).
    async fn log_in(
        &self,
        email: &str,
        password: String,
        client: Option<IpAddr>,
        cookies: bool,
    ) -> Result<Reply, ApiError> {
        let user = self.accounts.login(&self.limiter, email, password, client).await?;
        let reply = self.issue(&user, true, &new_family_id(), cookies)?;
        tracing::info!(user_id = user.id, "login succeeded");
        Ok(reply)
    }

    /// `POST {signin}`: the form token first (login CSRF), then [`Self::log_in`]
    /// with cookies, then 303 to the form's `rd` if it may be followed.
    async fn sign_in(
        &self,
        request: Presented<'_>,
        form: &SigninForm,
        client: Option<IpAddr>,
    ) -> Result<Reply, ApiError> {
        if !self.signin.form_token_matches(request.headers, &form.form_token) {
            return Err(ApiError::SigninFormRefused);
        }
        let session = self.log_in(&form.email, form.password.clone(), client, true).await?;
        if session.status != StatusCode::OK {
            return Err(ApiError::Internal);
        }
        let cookies =
            session.headers.into_iter().filter(|(name, _)| *name == SET_COOKIE).map(|(_, line)| line);
        Ok(self.signin.signed_in(&self.signin.redirect_target(&form.rd), cookies.collect()))
    }

    /// `{signin}/out`: a `GET` shows the button (with the access token's
    /// CSRF value to post back), a `POST` is `/logout` with the posted value
    /// as the CSRF header. Not signed in: off to the sign-in page.
    async fn sign_out(&self, request: Presented<'_>, body: &[u8]) -> Reply {
        if *request.method != Method::POST {
            return match self.auth.require_access(request).await {
                Ok(auth) => self.signin.signout_page(auth.claims.csrf.as_deref().unwrap_or(""), None),
                Err(_) => self.signin.to_signin(Vec::new()),
            };
        }
        let form = match SigninForm::parse(request.headers, body) {
            Ok(form) => form,
            Err(e) => return self.signin.signout_page("", Some(&e)),
        };
        let credentials =
            crate::cookies::Credentials { csrf: Some(form.csrf.clone()), ..request.credentials.clone() };
        let posted = Presented { credentials: &credentials, ..request };
        match self.logout(posted, b"").await {
            Ok(reply) => {
                let cleared =
                    reply.headers.into_iter().filter(|(name, _)| *name == SET_COOKIE).map(|(_, l)| l);
                self.signin.to_signin(cleared.collect())
            }
            // Nobody (still) signed in: nothing to sign out of.
            Err(e) if e.status() == StatusCode::UNAUTHORIZED => self.signin.to_signin(Vec::new()),
            Err(e) => self.signin.signout_page(&form.csrf, Some(&e)),
        }
    }

    /// A refusal: JSON, or for the sign-in form the page again with the error.
    fn answer_error(&self, endpoint: Endpoint, error: &ApiError, body: &[u8]) -> Reply {
        if endpoint != Endpoint::Signin {
            return Reply::error(error);
        }
        // What the form carried, to keep the email and `rd` (never the password).
        let content_type = http::HeaderMap::from_iter([(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        )]);
        let form = SigninForm::parse(&content_type, body).unwrap_or_default();
        self.signin.refused(error, &form)
    }

    async fn refresh(&self, request: Presented<'_>, body: &[u8]) -> Result<Reply, ApiError> {
        // The body is optional: empty, `null` and `{}` all mean "as configured".
        let RefreshRequest { set_cookies } = if body.iter().all(u8::is_ascii_whitespace) {
            RefreshRequest::default()
        } else {
            parse_json::<Option<RefreshRequest>>(body)?.unwrap_or_default()
        };
        let asked = self.wants_cookies(set_cookies)?;
        // The refresh token from the header, or (CSRF-checked) from its cookie.
        let (auth, source) = self
            .auth
            .authenticate_request(request, TokenKind::Refresh)
            .await?
            .ok_or(ApiError::MissingToken)?;
        // Rotation: the presented refresh token is used up. If another request
        // retired it first, this is a replay of a copied token.
        if !self.accounts.retire(&auth.claims).await? {
            return Err(self.auth.refresh_replayed(&auth.claims).await);
        }
        // A token from a cookie is used up: its replacement goes where it came from.
        self.issue(&auth.user, false, &auth.claims.fam, asked || source == Source::Cookie)
    }

    /// Whether a login or refresh answers with cookies: the request's
    /// `set_cookies`, else `[cookies] set_on_login`.
    fn wants_cookies(&self, asked: Option<bool>) -> Result<bool, ApiError> {
        let config = self.auth.cookies();
        match (config.enabled, config.set_on_login, asked) {
            (false, _, Some(true)) => {
                Err(ApiError::InvalidRequest("set_cookies: cookies are not enabled on this gateway".into()))
            }
            (true, SetOnLogin::Never, Some(true)) => {
                Err(ApiError::InvalidRequest("set_cookies: this gateway never sets token cookies".into()))
            }
            (false, _, _) | (true, SetOnLogin::Never, _) => Ok(false),
            (true, SetOnLogin::WhenAsked, asked) => Ok(asked == Some(true)),
            (true, SetOnLogin::Always, asked) => Ok(asked != Some(false)),
        }
    }

    /// A new access and refresh token of one login session: in the body, or
    /// in cookies (each token then carries its own CSRF value).
    fn issue(&self, user: &User, fresh: bool, family: &str, cookies: bool) -> Result<Reply, ApiError> {
        let tokens = self.auth.tokens();
        let expires_in = tokens.access_ttl().as_secs();
        if !cookies {
            let access = tokens.issue(user, TokenKind::Access, fresh, family)?;
            let refresh = tokens.issue(user, TokenKind::Refresh, false, family)?;
            return Ok(Reply::json(
                StatusCode::OK,
                &TokenPair {
                    access_token: access.token,
                    refresh_token: Some(refresh.token),
                    token_type: "Bearer".into(),
                    expires_in,
                },
            ));
        }
        let (csrf_access, csrf_refresh) = (new_csrf_value(), new_csrf_value());
        let access = tokens.issue_with_csrf(user, TokenKind::Access, fresh, family, Some(&csrf_access))?;
        let refresh = tokens.issue_with_csrf(user, TokenKind::Refresh, false, family, Some(&csrf_refresh))?;
        let config = self.auth.cookies();
        let refresh_ttl = tokens.refresh_ttl().as_secs();
        let lines = [
            set_cookie(config, Which::Access, Some(&access.token), expires_in),
            set_cookie(config, Which::CsrfAccess, Some(&csrf_access), expires_in),
            set_cookie(config, Which::Refresh, Some(&refresh.token), refresh_ttl),
            set_cookie(config, Which::CsrfRefresh, Some(&csrf_refresh), refresh_ttl),
        ];
        let session = CookieSession {
            token_type: "Cookie".into(),
            expires_in,
            csrf_access_token: csrf_access,
            csrf_refresh_token: csrf_refresh,
        };
        let mut reply = Reply::json(StatusCode::OK, &session);
        if reply.status == StatusCode::OK {
            reply.headers.extend(lines.into_iter().map(|line| (SET_COOKIE, line)));
        }
        Ok(reply)
    }

    async fn logout(&self, request: Presented<'_>, body: &[u8]) -> Result<Reply, ApiError> {
        let auth = self.auth.require_access(request).await?;
        // The body is optional: empty, `null` and `{}` all mean "just this access token".
        let logout: LogoutRequest = if body.iter().all(u8::is_ascii_whitespace) {
            LogoutRequest::default()
        } else {
            parse_json::<Option<LogoutRequest>>(body)?.unwrap_or_default()
        };
        // Check the refresh token before revoking anything, so a bad request changes nothing.
        let refresh_claims = match logout.refresh_token {
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
        // A refresh cookie (sent here when its path allows) is revoked too
        // when it is this account's; one that isn't is only cleared.
        let cookie_claims = match &request.credentials.refresh {
            Sent::One(token) => self
                .auth
                .tokens()
                .verify(token, TokenKind::Refresh)
                .ok()
                .filter(|claims| claims.sub == auth.claims.sub),
            _ => None,
        };
        let message = if logout.everywhere {
            self.accounts.change(auth.user.id, UserChange::RevokeAllTokens).await?;
            Message::new("Logged out everywhere.")
        } else {
            self.accounts.revoke(&auth.claims).await?;
            for claims in refresh_claims.iter().chain(cookie_claims.iter()) {
                self.accounts.revoke(claims).await?;
            }
            if request.access_source() == Some(Source::Cookie) {
                // The refresh cookie's path keeps it from /logout, and a page
                // can't read it to send it: end the whole login session, so
                // the refresh token stays in the browser but works nowhere.
                let until = crate::clock::now_unix() + self.auth.tokens().refresh_ttl().as_secs();
                self.accounts.revoke_session(&auth.claims.fam, until).await?;
            }
            Message::new("Logged out.")
        };
        let mut reply = Reply::json(StatusCode::OK, &message);
        let config = self.auth.cookies();
        if config.enabled && reply.status == StatusCode::OK {
            for which in [Which::Access, Which::CsrfAccess, Which::Refresh, Which::CsrfRefresh] {
                reply.headers.push((SET_COOKIE, set_cookie(config, which, None, 0)));
            }
        }
        Ok(reply)
    }

    /// `DELETE {users}/{id}/tokens`: the user themself, or a fresh admin.
    async fn revoke_user_tokens(
        &self,
        request: Presented<'_>,
        id: Option<UserId>,
    ) -> Result<Message, ApiError> {
        let auth = self.auth.require_access(request).await?;
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

    async fn show_user(&self, request: Presented<'_>, id: Option<UserId>) -> Result<UserView, ApiError> {
        let auth = self.auth.require_access(request).await?;
        let id = id.ok_or(ApiError::UserNotFound)?;
        if id != auth.user.id && !auth.is_admin() {
            return Err(ApiError::NotYourAccount);
        }
        self.accounts.show(id).await
    }

    async fn delete_user(&self, request: Presented<'_>, id: Option<UserId>) -> Result<Message, ApiError> {
        let auth = self.auth.require_access(request).await?;
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

/// Whether the body is declared JSON (`application/json`, any parameters).
fn is_json(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}
