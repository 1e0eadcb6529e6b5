//! Account operations shared by the public endpoints, the admin API and the
//! CLI: one implementation of "create a user", "block a user", "revoke a
//! token", whichever door the request came through.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::limits::{LimitError, LoginLimiter};
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::roles::{Role, MAX_ROLES_PER_USER};
use crate::store::{EmailLookup, Identifiers, Store, StoreError, User, UserChange, UserId};
use crate::tokens::{Claims, TokenError, TokenKind, TokenService};

/// A user as shown to clients and operators: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub username: String,
    pub is_admin: bool,
    pub blocked: bool,
    pub created_at: u64,
    /// Every role held, `admin` included when `is_admin`, sorted.
    #[serde(default)]
    pub roles: Vec<Role>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            email: u.email.clone(),
            username: u.username.clone(),
            is_admin: u.is_admin,
            blocked: u.blocked,
            created_at: u.created_at,
            roles: u.held_roles(),
        }
    }
}

/// Input to create an account.
#[derive(Debug, Clone, Deserialize)]
pub struct Registration {
    pub email: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub is_admin: bool,
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    passwords: Passwords,
    metrics: Arc<Metrics>,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, passwords: Passwords, metrics: Arc<Metrics>) -> Self {
        Accounts { store, passwords, metrics }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether the store answered last time, without asking again.
    pub fn is_reachable(&self) -> bool {
        self.store.is_reachable()
    }

    /// Checks an email and password under the login limits, and answers the
    /// account they open. Every way to fail but a blocked account looks the
    /// same to the client, and takes as long (the dummy hash included).
    pub async fn login(
        &self,
        limiter: &LoginLimiter,
        email: &str,
        password: String,
        client: Option<IpAddr>,
    ) -> Result<Arc<User>, ApiError> {
        // Malformed emails are not refused here, only found by no account. An
        // email too long for any account is not even normalised: it is
        // answered like an unknown email (the dummy hash included), its
        // attempts counted under the key of the empty email, also no account's.
        let lookup = EmailLookup::new(email);
        let account = lookup.as_ref().map_or("", |lookup| lookup.key());
        limiter.check_account(account, client).await.inspect_err(LimitError::log)?;
        let user = match &lookup {
            Some(lookup) => self.store.user_by_email(lookup).await.inspect_err(StoreError::log)?,
            None => None,
        };
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        if !self.passwords.verify(password, stored_hash).await {
            limiter.record_failure(account, client).await.inspect_err(LimitError::log)?;
            tracing::info!(
                outcome = "invalid_credentials",
                client = client.map(tracing::field::display),
                "login refused"
            );
            return Err(ApiError::InvalidCredentials);
        }
        limiter.record_success(account, client).await.inspect_err(LimitError::log)?;
        let user = user.ok_or(ApiError::InvalidCredentials)?;
        if user.blocked {
            tracing::info!(user_id = user.id, outcome = "blocked", "login refused");
            return Err(ApiError::AccountBlocked);
        }
        Ok(user)
    }

    /// Uses up a refresh token (rotation): false if it was used up before.
    pub async fn retire(&self, claims: &Claims) -> Result<bool, ApiError> {
        Ok(self.store.retire(&claims.jti, claims.exp).await.inspect_err(StoreError::log)?)
    }

    /// Creates an account. The email and username are checked and
    /// normalised by [`Identifiers::check`] (once: the store takes them as
    /// checked) before the password is hashed; the store refuses an email or
    /// username whose comparison key is taken.
    pub async fn create(&self, registration: Registration) -> Result<UserView, ApiError> {
        let identifiers = Identifiers::check(&registration.email, &registration.username)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        self.passwords.check_policy(&registration.password)?;
        let password_hash = self.passwords.hash(registration.password).await?;
        let user =
            self.store.create_checked(identifiers, password_hash, registration.is_admin).await.map_err(
                |e| match e {
                    StoreError::EmailTaken => ApiError::EmailTaken,
                    StoreError::UsernameTaken => ApiError::UsernameTaken,
                    other => {
                        other.log();
                        other.into()
                    }
                },
            )?;
        tracing::info!(user_id = user.id, admin = user.is_admin, "account created");
        Ok(UserView::from(&user))
    }

    /// How many users and revocation entries the store holds (`/admin/stats`).
    pub async fn stats(&self) -> Result<(usize, usize), ApiError> {
        let users = self.store.users().await.inspect_err(StoreError::log)?.len();
        let revocations = self.store.revoked_count().await.inspect_err(StoreError::log)?;
        Ok((users, revocations))
    }

    pub async fn list(&self) -> Result<Vec<UserView>, ApiError> {
        Ok(self.store.users().await.inspect_err(StoreError::log)?.iter().map(UserView::from).collect())
    }

    pub async fn show(&self, id: UserId) -> Result<UserView, ApiError> {
        let user = self.store.user(id).await.inspect_err(StoreError::log)?.ok_or(ApiError::UserNotFound)?;
        Ok(UserView::from(user.as_ref()))
    }

    pub async fn find_by_email(&self, email: &str) -> Result<UserView, ApiError> {
        let lookup = EmailLookup::new(email).ok_or(ApiError::UserNotFound)?;
        let user = self
            .store
            .user_by_email(&lookup)
            .await
            .inspect_err(StoreError::log)?
            .ok_or(ApiError::UserNotFound)?;
        Ok(UserView::from(user.as_ref()))
    }

    pub async fn change(&self, id: UserId, change: UserChange) -> Result<UserView, ApiError> {
        let user = self
            .store
            .change_user(id, change.clone())
            .await
            .inspect_err(StoreError::log)?
            .ok_or(ApiError::UserNotFound)?;
        if let UserChange::AddRole(role) = &change {
            // The store leaves a full role list as it was.
            if !role.is_admin() && user.roles.binary_search(role).is_err() {
                return Err(ApiError::InvalidRequest(format!(
                    "an account can hold at most {MAX_ROLES_PER_USER} roles besides admin"
                )));
            }
        }
        tracing::info!(user_id = id, ?change, "account changed");
        if matches!(change, UserChange::RevokeAllTokens | UserChange::SetBlocked(true)) {
            self.metrics.revocations.with_label_values(&["user"]).inc();
        }
        Ok(UserView::from(&user))
    }

    pub async fn delete(&self, id: UserId) -> Result<(), ApiError> {
        if !self.store.delete_user(id).await.inspect_err(StoreError::log)? {
            return Err(ApiError::UserNotFound);
        }
        tracing::info!(user_id = id, "account deleted");
        self.metrics.revocations.with_label_values(&["user"]).inc();
        Ok(())
    }

    /// Revokes every token of one login session (refresh family) until `until`.
    pub async fn revoke_session(&self, family: &str, until: u64) -> Result<(), ApiError> {
        self.store.revoke_family(family, until).await.inspect_err(StoreError::log)?;
        tracing::info!(family, "login session revoked");
        self.metrics.revocations.with_label_values(&["session"]).inc();
        Ok(())
    }

    /// Revokes one token (given its verified claims) until it would have expired.
    pub async fn revoke(&self, claims: &Claims) -> Result<(), ApiError> {
        self.store.revoke(&claims.jti, claims.exp).await.inspect_err(StoreError::log)?;
        tracing::info!(user_id = %claims.sub, token_id = %claims.jti, kind = ?claims.kind, "token revoked");
        self.metrics.revocations.with_label_values(&["token"]).inc();
        Ok(())
    }

    /// Revokes a token presented as a string: its signature must be ours.
    /// An expired token needs no revocation and is reported as such.
    pub async fn revoke_token(&self, tokens: &TokenService, token: &str) -> Result<Claims, ApiError> {
        let claims = tokens.verify(token, TokenKind::Access).or_else(|e| match e {
            TokenError::AccessRequired => tokens.verify(token, TokenKind::Refresh),
            other => Err(other),
        })?;
        self.revoke(&claims).await?;
        Ok(claims)
    }
}
