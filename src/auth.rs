//! The per-request authentication decision: from the `Authorization` header
//! (or, with `[cookies]` on, the access cookie) and the matched route's rule
//! to either an identity (or anonymity) to forward, or an [`ApiError`] to
//! answer with.
//!
//! A token from a cookie is sent by the browser on its own, also on requests
//! another site makes it send, so it comes with one more rule: a request with
//! a state-changing method ([`CookieConfig::csrf_methods`]) must carry the
//! token's `csrf` claim in the CSRF header (see [`crate::cookies`]). A bearer
//! header can't be added by another site, so it needs no such check. A request
//! carrying two different tokens is refused: the gateway would judge one while
//! the upstream might read the other.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, Method};
use quick_cache::sync::Cache;
use subtle::ConstantTimeEq;

use crate::clock::now_unix;
use crate::config::CookieConfig;
use crate::cookies::{Credentials, Sent};
use crate::error::ApiError;
use crate::policy::{Policy, Rule};
use crate::roles::{self, Role, RoleRequirement};
use crate::store::{Revocation, Store, StoreError, User};
use crate::tokens::{Claims, TokenError, TokenKind, TokenService};

/// Who the caller is, as forwarded to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: u64,
    pub username: String,
    pub email: String,
    pub is_admin: bool,
    /// Every role the account holds now (`admin` when `is_admin`), sorted.
    pub roles: Vec<Role>,
    pub fresh: bool,
    pub token_id: String,
    /// When the token expires (Unix seconds): a WebSocket tunnel it opened closes then.
    pub expires_at: u64,
}

/// What a request presents to be authenticated: its headers (for
/// `Authorization`), its method (for the CSRF rule) and the credentials
/// taken from its cookies when it was made canonical.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub credentials: &'a Credentials,
}

impl Presented<'_> {
    /// Where the request's access token comes from, by the same rule the
    /// decision used ([`presented_token`]); `None` when it presents none, or
    /// presents them in a way the decision refused.
    pub fn access_source(&self) -> Option<Source> {
        let header = bearer_token(self.headers).ok()?;
        presented_token(header, &self.credentials.access).ok().flatten().map(|(_, source)| source)
    }
}

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie,
}

/// A verified token together with the current account behind it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub claims: Arc<Claims>,
    pub user: Arc<User>,
}

impl Authenticated {
    /// Admin rights need both the token's claim and the account's current flag,
    /// so demoting an admin takes effect at once.
    pub fn is_admin(&self) -> bool {
        self.claims.is_admin && self.user.is_admin
    }

    /// Whether the caller may do what needs admin rights, roles and/or a
    /// fresh token: the one place they are decided, for routes and for
    /// built-in endpoints alike. Admin rights are checked first, then roles
    /// (the account's current ones, so a withdrawn role counts at once),
    /// then freshness: a caller who lacks the rights is not sent to log in
    /// again for nothing.
    pub fn require(&self, admin: bool, roles: Option<&RoleRequirement>, fresh: bool) -> Result<(), ApiError> {
        if admin && !self.is_admin() {
            return Err(ApiError::AdminRequired);
        }
        if roles.is_some_and(|needed| !needed.is_met_by(&self.user.roles, self.is_admin())) {
            return Err(ApiError::RoleRequired);
        }
        if fresh && !self.claims.fresh {
            return Err(ApiError::FreshTokenRequired);
        }
        Ok(())
    }

    pub fn identity(&self) -> Identity {
        Identity {
            user_id: self.user.id,
            username: self.user.username.clone(),
            email: self.user.email.clone(),
            is_admin: self.is_admin(),
            roles: roles::held(&self.user.roles, self.is_admin()),
            fresh: self.claims.fresh,
            token_id: self.claims.jti.clone(),
            expires_at: self.claims.exp,
        }
    }
}

pub struct Authenticator {
    tokens: Arc<TokenService>,
    store: Arc<dyn Store>,
    /// Tokens whose signature and claims were verified before, by exact
    /// token string. Time claims are re-checked on every hit; revocation and
    /// the account are always checked against the store.
    verified: Option<Cache<String, Arc<Claims>>>,
    /// `[cookies]`: whether tokens are read from cookies, and the CSRF rule.
    cookies: CookieConfig,
}

impl Authenticator {
    pub fn new(tokens: Arc<TokenService>, store: Arc<dyn Store>, cookies: CookieConfig) -> Self {
        let capacity = tokens.verified_cache_size();
        let verified = (capacity > 0).then(|| Cache::new(capacity));
        Authenticator { tokens, store, verified, cookies }
    }

    pub fn cookies(&self) -> &CookieConfig {
        &self.cookies
    }

    /// Signature and claim checks, skipped for a token verified before.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Arc<Claims>, TokenError> {
        let Some(cache) = &self.verified else {
            return self.tokens.verify(token, kind).map(Arc::new);
        };
        if let Some(claims) = cache.get(token) {
            self.tokens.check_cached(&claims, kind)?;
            return Ok(claims);
        }
        let claims = Arc::new(self.tokens.verify(token, kind)?);
        cache.insert(token.to_owned(), Arc::clone(&claims));
        Ok(claims)
    }

    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.tokens
    }

    /// Verifies a token and checks it against revocations and the account.
    pub async fn authenticate(&self, token: &str, kind: TokenKind) -> Result<Authenticated, ApiError> {
        let claims = self.verify(token, kind)?;
        match self.store.revocation(&claims.jti).await.inspect_err(StoreError::log)? {
            None => {}
            Some(Revocation::Revoked) => return Err(ApiError::TokenRevoked),
            Some(Revocation::Retired) => return Err(self.refresh_replayed(&claims).await),
        }
        if self.store.is_family_revoked(&claims.fam).await.inspect_err(StoreError::log)? {
            return Err(ApiError::TokenRevoked);
        }
        let user = self
            .store
            .user(claims.user_id()?)
            .await
            .inspect_err(StoreError::log)?
            .ok_or(ApiError::AccountNotFound)?;
        if user.blocked {
            return Err(ApiError::AccountBlocked);
        }
        if claims.ver != user.token_version {
            return Err(ApiError::TokenRevoked);
        }
        Ok(Authenticated { claims, user })
    }

    /// A retired refresh token came back: it was copied. Revoke its whole
    /// login session so neither the thief nor the owner keeps using it.
    pub async fn refresh_replayed(&self, claims: &Claims) -> ApiError {
        let until = now_unix() + self.tokens.refresh_ttl().as_secs();
        tracing::warn!(
            user_id = %claims.sub,
            token_id = %claims.jti,
            family = %claims.fam,
            "refresh token reuse detected: revoking its whole login session (a sign of a stolen token)"
        );
        match self.store.revoke_family(&claims.fam, until).await {
            Ok(()) => ApiError::RefreshTokenReused,
            Err(e) => {
                e.log();
                e.into()
            }
        }
    }

    /// Authenticates the token of `kind` the request presents, from the
    /// `Authorization` header or its cookie, CSRF-checked when from a cookie.
    /// `Ok(None)` when it presents none.
    pub async fn authenticate_request(
        &self,
        request: Presented<'_>,
        kind: TokenKind,
    ) -> Result<Option<(Authenticated, Source)>, ApiError> {
        let cookie = match kind {
            TokenKind::Access => &request.credentials.access,
            TokenKind::Refresh => &request.credentials.refresh,
        };
        let Some((token, source)) = presented_token(bearer_token(request.headers)?, cookie)? else {
            return Ok(None);
        };
        let auth = self.authenticate(token, kind).await?;
        if source == Source::Cookie {
            self.check_csrf(request, &auth.claims)?;
        }
        Ok(Some((auth, source)))
    }

    /// The double-submit check of a cookie-authenticated request: with a
    /// method in `csrf_methods`, the CSRF header must equal the token's
    /// `csrf` claim (compared in constant time). A token without the claim
    /// was not issued as a cookie and never passes.
    fn check_csrf(&self, request: Presented<'_>, claims: &Claims) -> Result<(), ApiError> {
        if !self.cookies.csrf_methods.contains(request.method) {
            return Ok(());
        }
        match (&request.credentials.csrf, &claims.csrf) {
            (Some(sent), Some(bound)) if bool::from(sent.as_bytes().ct_eq(bound.as_bytes())) => Ok(()),
            _ => Err(ApiError::CsrfFailed),
        }
    }

    /// Authenticates the request's access token (bearer header or access
    /// cookie), which must be present.
    pub async fn require_access(&self, request: Presented<'_>) -> Result<Authenticated, ApiError> {
        let (auth, _) =
            self.authenticate_request(request, TokenKind::Access).await?.ok_or(ApiError::MissingToken)?;
        Ok(auth)
    }

    /// Applies a route's rule. `Ok(None)` forwards the request anonymously.
    /// On `optional` routes an invalid token, from a header or a cookie, is
    /// refused, never taken for no token.
    pub async fn decide(&self, request: Presented<'_>, rule: &Rule) -> Result<Option<Identity>, ApiError> {
        match rule.policy {
            Policy::Deny => Err(ApiError::AccessDenied),
            Policy::Public => Ok(None),
            Policy::Optional => Ok(self
                .authenticate_request(request, TokenKind::Access)
                .await?
                .map(|(auth, _)| auth.identity())),
            Policy::Any | Policy::Fresh | Policy::Admin => {
                let auth = self.require_access(request).await?;
                auth.require(
                    rule.policy == Policy::Admin,
                    rule.roles.as_deref(),
                    rule.policy == Policy::Fresh || rule.require_fresh,
                )?;
                Ok(Some(auth.identity()))
            }
        }
    }
}

/// The one token a request presents: the bearer header's, or the cookie's
/// when there is no header. Both, with different tokens, or the cookie twice
/// with different values, is refused; the same token in both is the header's.
pub fn presented_token<'a>(
    header: Option<&'a str>,
    cookie: &'a Sent,
) -> Result<Option<(&'a str, Source)>, ApiError> {
    match (header, cookie) {
        (_, Sent::Conflicting) => Err(ApiError::ConflictingCredentials),
        (Some(header), Sent::One(cookie)) if header != cookie => Err(ApiError::ConflictingCredentials),
        (Some(header), _) => Ok(Some((header, Source::Header))),
        (None, Sent::One(cookie)) => Ok(Some((cookie.as_str(), Source::Cookie))),
        (None, Sent::Absent) => Ok(None),
    }
}

/// The bearer token of a request, if it sent an `Authorization` header.
///
/// Two headers are refused (which one would the upstream believe?), and so is
/// any scheme but `Bearer` or an empty token.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::DuplicateAuthorization);
    }
    let value = value.to_str().map_err(|_| ApiError::MalformedAuthorization)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::MalformedAuthorization)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(ApiError::MalformedAuthorization);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearer abc.def.ghi"])), Ok(Some("abc.def.ghi")));
        assert_eq!(bearer_token(&headers(&["bearer   abc"])), Ok(Some("abc")));
        for bad in ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "abc.def.ghi", "Bearer a b"] {
            assert_eq!(bearer_token(&headers(&[bad])), Err(ApiError::MalformedAuthorization), "{bad:?}");
        }
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])), Err(ApiError::DuplicateAuthorization));
    }

    #[test]
    fn one_token_is_presented_or_the_request_is_refused() {
        let one = |v: &str| Sent::One(v.to_owned());
        assert_eq!(presented_token(None, &Sent::Absent), Ok(None));
        assert_eq!(presented_token(Some("h"), &Sent::Absent), Ok(Some(("h", Source::Header))));
        assert_eq!(presented_token(None, &one("c")), Ok(Some(("c", Source::Cookie))));
        assert_eq!(presented_token(Some("t"), &one("t")), Ok(Some(("t", Source::Header))), "the same token");
        assert_eq!(presented_token(Some("h"), &one("c")), Err(ApiError::ConflictingCredentials));
        assert_eq!(presented_token(None, &Sent::Conflicting), Err(ApiError::ConflictingCredentials));
        assert_eq!(presented_token(Some("h"), &Sent::Conflicting), Err(ApiError::ConflictingCredentials));
    }
}
