//! The admin operations, typed once for both of their callers.
//!
//! The HTTP router and the CLI used to agree on paths, bodies and answers
//! only through strings and `serde_json::Value`; a renamed field broke one
//! side silently. Each operation here is a type that knows its HTTP form,
//! its request body and its answer, so the router, the CLI's HTTP client and
//! the CLI's in-process path run and read the very same thing. [`Request`]
//! maps HTTP back to operations, next to the forward mapping so the two are
//! read (and tested) together.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, Registration, UserView};
use crate::error::ApiError;
use crate::http_io::{parse_json, Message};
use crate::roles::Role;
use crate::store::{Store, UserChange, UserId};
use crate::tokens::TokenService;

/// What the admin operations run against: the accounts, and the token
/// service to check a token presented for revocation.
pub struct Operator {
    accounts: Accounts,
    /// Absent when the CLI works on a store directly without the signing secret.
    tokens: Option<Arc<TokenService>>,
}

impl Operator {
    pub fn new(accounts: Accounts, tokens: Option<Arc<TokenService>>) -> Self {
        Operator { accounts, tokens }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.accounts.store()
    }
}

/// One admin operation: its HTTP form, its body and its answer.
#[async_trait]
pub trait Operation: Send + Sync {
    /// The JSON body of a successful answer.
    type Answer: Serialize + DeserializeOwned + Send;
    /// The status of a successful answer.
    const STATUS: StatusCode = StatusCode::OK;
    /// The method and the path with its query.
    fn target(&self) -> (Method, String);
    /// The JSON request body; empty when the operation takes none.
    fn body(&self) -> Result<Vec<u8>, serde_json::Error> {
        Ok(Vec::new())
    }
    async fn run(&self, operator: &Operator) -> Result<Self::Answer, ApiError>;
}

/// `GET /admin/users`: every user.
pub struct ListUsers;

/// `GET /admin/users?email=E`: the user with this email, as a list of one.
pub struct FindUser {
    pub email: String,
}

/// `POST /admin/users`: creates a user (the body is this type). Unknown
/// fields are refused, not ignored: `roles` is not set here.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// `GET /admin/users/{id}`.
pub struct ShowUser {
    pub id: UserId,
}

/// `PATCH /admin/users/{id}`: applies `patch`, admin flag first.
pub struct UpdateUser {
    pub id: UserId,
    pub patch: UserPatch,
}

/// The body of [`UpdateUser`]: each field present is changed. Unknown fields
/// are refused: roles change through [`ChangeRole`], not a patch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_admin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
}

/// `DELETE /admin/users/{id}`.
pub struct DeleteUser {
    pub id: UserId,
}

/// `POST /admin/users/{id}/revoke-tokens`: revokes every token issued to the
/// user before now.
pub struct RevokeUserTokens {
    pub id: UserId,
}

/// `POST /admin/revoke`: revokes one access or refresh token (the body is this type).
#[derive(Serialize, Deserialize)]
pub struct RevokeToken {
    pub token: String,
}

/// `GET /admin/stats`.
pub struct Stats;

/// `GET /admin/users/{id}/roles`: the roles the user holds, `admin` included.
pub struct ListRoles {
    pub id: UserId,
}

/// `PUT /admin/users/{id}/roles/{role}` (grant, `add: true`) or
/// `DELETE /admin/users/{id}/roles/{role}` (withdraw). Both are idempotent;
/// routes see the change at the next request, except a granted `admin`,
/// which also needs a token issued after it (as `is_admin` always has).
pub struct ChangeRole {
    pub id: UserId,
    pub role: Role,
    pub add: bool,
}

/// The answer to [`ListRoles`] and [`ChangeRole`].
#[derive(Debug, Serialize, Deserialize)]
pub struct UserRoles {
    pub user_id: UserId,
    /// Sorted; `admin` when the user is an administrator.
    pub roles: Vec<Role>,
}

impl From<UserView> for UserRoles {
    fn from(user: UserView) -> Self {
        UserRoles { user_id: user.id, roles: user.roles }
    }
}

/// The answer to [`RevokeToken`].
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub message: String,
    pub token_id: String,
    pub user_id: String,
}

/// The answer to [`Stats`]. Fields in alphabetical order, the order the
/// body has always had.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreStats {
    pub revocations: usize,
    pub users: usize,
}

/// `/admin/users/{id}`.
fn user_path(id: UserId) -> String {
    format!("/admin/users/{id}")
}

#[async_trait]
impl Operation for ListUsers {
    type Answer = Vec<UserView>;
    fn target(&self) -> (Method, String) {
        (Method::GET, "/admin/users".to_owned())
    }
    async fn run(&self, operator: &Operator) -> Result<Vec<UserView>, ApiError> {
        operator.accounts.list().await
    }
}

#[async_trait]
impl Operation for FindUser {
    type Answer = Vec<UserView>;
    fn target(&self) -> (Method, String) {
        let query =
            form_urlencoded::Serializer::new(String::new()).append_pair("email", &self.email).finish();
        (Method::GET, format!("/admin/users?{query}"))
    }
    async fn run(&self, operator: &Operator) -> Result<Vec<UserView>, ApiError> {
        Ok(vec![operator.accounts.find_by_email(&self.email).await?])
    }
}

#[async_trait]
impl Operation for CreateUser {
    type Answer = UserView;
    const STATUS: StatusCode = StatusCode::CREATED;
    fn target(&self) -> (Method, String) {
        (Method::POST, "/admin/users".to_owned())
    }
    fn body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
    async fn run(&self, operator: &Operator) -> Result<UserView, ApiError> {
        let registration = Registration {
            email: self.email.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            is_admin: self.is_admin,
        };
        operator.accounts.create(registration).await
    }
}

#[async_trait]
impl Operation for ShowUser {
    type Answer = UserView;
    fn target(&self) -> (Method, String) {
        (Method::GET, user_path(self.id))
    }
    async fn run(&self, operator: &Operator) -> Result<UserView, ApiError> {
        operator.accounts.show(self.id).await
    }
}

#[async_trait]
impl Operation for UpdateUser {
    type Answer = UserView;
    fn target(&self) -> (Method, String) {
        (Method::PATCH, user_path(self.id))
    }
    fn body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&self.patch)
    }
    async fn run(&self, operator: &Operator) -> Result<UserView, ApiError> {
        let accounts = &operator.accounts;
        let mut user = accounts.show(self.id).await?;
        if let Some(admin) = self.patch.is_admin {
            user = accounts.change(self.id, UserChange::SetAdmin(admin)).await?;
        }
        if let Some(blocked) = self.patch.blocked {
            user = accounts.change(self.id, UserChange::SetBlocked(blocked)).await?;
        }
        Ok(user)
    }
}

#[async_trait]
impl Operation for DeleteUser {
    type Answer = Message;
    fn target(&self) -> (Method, String) {
        (Method::DELETE, user_path(self.id))
    }
    async fn run(&self, operator: &Operator) -> Result<Message, ApiError> {
        operator.accounts.delete(self.id).await?;
        Ok(Message::new("User deleted."))
    }
}

#[async_trait]
impl Operation for RevokeUserTokens {
    type Answer = UserView;
    fn target(&self) -> (Method, String) {
        (Method::POST, format!("{}/revoke-tokens", user_path(self.id)))
    }
    async fn run(&self, operator: &Operator) -> Result<UserView, ApiError> {
        operator.accounts.change(self.id, UserChange::RevokeAllTokens).await
    }
}

#[async_trait]
impl Operation for RevokeToken {
    type Answer = TokenRevoked;
    fn target(&self) -> (Method, String) {
        (Method::POST, "/admin/revoke".to_owned())
    }
    fn body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
    async fn run(&self, operator: &Operator) -> Result<TokenRevoked, ApiError> {
        let tokens = operator.tokens.as_ref().ok_or_else(|| {
            ApiError::InvalidRequest("the token signing secret is not available to check this token".into())
        })?;
        let claims = operator.accounts.revoke_token(tokens, &self.token).await?;
        Ok(TokenRevoked { message: "Token revoked.".into(), token_id: claims.jti, user_id: claims.sub })
    }
}

#[async_trait]
impl Operation for Stats {
    type Answer = StoreStats;
    fn target(&self) -> (Method, String) {
        (Method::GET, "/admin/stats".to_owned())
    }
    async fn run(&self, operator: &Operator) -> Result<StoreStats, ApiError> {
        let (users, revocations) = operator.accounts.stats().await?;
        Ok(StoreStats { revocations, users })
    }
}

#[async_trait]
impl Operation for ListRoles {
    type Answer = UserRoles;
    fn target(&self) -> (Method, String) {
        (Method::GET, format!("{}/roles", user_path(self.id)))
    }
    async fn run(&self, operator: &Operator) -> Result<UserRoles, ApiError> {
        Ok(operator.accounts.show(self.id).await?.into())
    }
}

#[async_trait]
impl Operation for ChangeRole {
    type Answer = UserRoles;
    fn target(&self) -> (Method, String) {
        let method = if self.add { Method::PUT } else { Method::DELETE };
        (method, format!("{}/roles/{}", user_path(self.id), self.role))
    }
    async fn run(&self, operator: &Operator) -> Result<UserRoles, ApiError> {
        let change = if self.add {
            UserChange::AddRole(self.role.clone())
        } else {
            UserChange::RemoveRole(self.role.clone())
        };
        Ok(operator.accounts.change(self.id, change).await?.into())
    }
}

/// An admin request as it arrived over HTTP: which operation it names.
pub enum Request {
    ListUsers(ListUsers),
    FindUser(FindUser),
    CreateUser(CreateUser),
    ShowUser(ShowUser),
    UpdateUser(UpdateUser),
    DeleteUser(DeleteUser),
    RevokeUserTokens(RevokeUserTokens),
    RevokeToken(RevokeToken),
    Stats(Stats),
    ListRoles(ListRoles),
    ChangeRole(ChangeRole),
}

impl Request {
    /// The operation `method` and `path` name, with its body parsed; the
    /// inverse of [`Operation::target`] and [`Operation::body`].
    pub fn parse(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Result<Request, ApiError> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Ok(match (method, segments.as_slice()) {
            (&Method::GET, ["admin", "users"]) => match query.and_then(email_param) {
                Some(email) => Request::FindUser(FindUser { email }),
                None => Request::ListUsers(ListUsers),
            },
            (&Method::POST, ["admin", "users"]) => Request::CreateUser(parse_json(body)?),
            (&Method::GET, ["admin", "users", id]) => Request::ShowUser(ShowUser { id: user_id(id)? }),
            (&Method::DELETE, ["admin", "users", id]) => Request::DeleteUser(DeleteUser { id: user_id(id)? }),
            (&Method::PATCH, ["admin", "users", id]) => {
                let id = user_id(id)?;
                Request::UpdateUser(UpdateUser { id, patch: parse_json(body)? })
            }
            (&Method::POST, ["admin", "users", id, "revoke-tokens"]) => {
                Request::RevokeUserTokens(RevokeUserTokens { id: user_id(id)? })
            }
            (&Method::POST, ["admin", "revoke"]) => Request::RevokeToken(parse_json(body)?),
            (&Method::GET, ["admin", "stats"]) => Request::Stats(Stats),
            (&Method::GET, ["admin", "users", id, "roles"]) => {
                Request::ListRoles(ListRoles { id: user_id(id)? })
            }
            (&Method::PUT | &Method::DELETE, ["admin", "users", id, "roles", role]) => {
                let id = user_id(id)?;
                let role = Role::parse(role).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
                Request::ChangeRole(ChangeRole { id, role, add: method == Method::PUT })
            }
            _ => return Err(ApiError::NotFound),
        })
    }
}

fn email_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "email").map(|(_, v)| v.into_owned())
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::UserNotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an operation sends: method, path and query, body.
    fn wire(op: &impl Operation) -> (Method, String, Vec<u8>) {
        let (method, target) = op.target();
        (method, target, op.body().unwrap())
    }

    /// An operation parsed back from its HTTP form, once its method and path
    /// are found in the OpenAPI document (`src/openapi.json`): an operation
    /// the router takes but the document doesn't describe fails here.
    fn parsed(op: &impl Operation) -> (Method, String, Vec<u8>) {
        let (method, target, body) = wire(op);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target.as_str(), None),
        };
        assert_documented(&method, path);
        match Request::parse(&method, path, query, &body).unwrap() {
            Request::ListUsers(op) => wire(&op),
            Request::FindUser(op) => wire(&op),
            Request::CreateUser(op) => wire(&op),
            Request::ShowUser(op) => wire(&op),
            Request::UpdateUser(op) => wire(&op),
            Request::DeleteUser(op) => wire(&op),
            Request::RevokeUserTokens(op) => wire(&op),
            Request::RevokeToken(op) => wire(&op),
            Request::Stats(op) => wire(&op),
            Request::ListRoles(op) => wire(&op),
            Request::ChangeRole(op) => wire(&op),
        }
    }

    fn assert_documented(method: &Method, path: &str) {
        let document: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
        let mut after_roles = false;
        let template: Vec<String> = path
            .split('/')
            .map(|segment| {
                let templated = if after_roles {
                    "{role}".to_owned()
                } else if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                    "{id}".to_owned()
                } else {
                    segment.to_owned()
                };
                after_roles = segment == "roles";
                templated
            })
            .collect();
        let template = template.join("/");
        let method = method.as_str().to_ascii_lowercase();
        assert!(
            document["paths"][&template][&method].is_object(),
            "{method} {template} is not in src/openapi.json"
        );
    }

    #[test]
    fn every_operation_parses_back_to_itself() {
        let create =
            CreateUser { email: "a@b.c".into(), username: "a".into(), password: "pw".into(), is_admin: true };
        assert_eq!(parsed(&create), wire(&create));
        let find = FindUser { email: "a+b@c.d".into() };
        assert_eq!(parsed(&find), wire(&find));
        let patch = UpdateUser { id: 3, patch: UserPatch { is_admin: None, blocked: Some(true) } };
        assert_eq!(parsed(&patch), wire(&patch));
        assert_eq!(parsed(&ListUsers), wire(&ListUsers));
        assert_eq!(parsed(&ShowUser { id: 4 }), wire(&ShowUser { id: 4 }));
        assert_eq!(parsed(&DeleteUser { id: 5 }), wire(&DeleteUser { id: 5 }));
        assert_eq!(parsed(&RevokeUserTokens { id: 6 }), wire(&RevokeUserTokens { id: 6 }));
        let revoke = RevokeToken { token: "t".into() };
        assert_eq!(parsed(&revoke), wire(&revoke));
        assert_eq!(parsed(&Stats), wire(&Stats));
        assert_eq!(parsed(&ListRoles { id: 7 }), wire(&ListRoles { id: 7 }));
        for add in [true, false] {
            let change = ChangeRole { id: 8, role: Role::parse("billing:write").unwrap(), add };
            assert_eq!(parsed(&change), wire(&change));
        }
    }

    #[test]
    fn a_role_in_the_path_must_be_a_valid_name() {
        let refused = Request::parse(&Method::PUT, "/admin/users/1/roles/Editor", None, b"");
        assert!(matches!(refused, Err(ApiError::InvalidRequest(m)) if m.contains("not a valid role name")));
    }

    #[test]
    fn answers_keep_their_json_shape() {
        let stats = serde_json::to_string(&StoreStats { revocations: 2, users: 1 }).unwrap();
        assert_eq!(stats, r#"{"revocations":2,"users":1}"#);
        let revoked = TokenRevoked { message: "m".into(), token_id: "j".into(), user_id: "7".into() };
        assert_eq!(
            serde_json::to_string(&revoked).unwrap(),
            r#"{"message":"m","token_id":"j","user_id":"7"}"#
        );
        let patch = serde_json::to_string(&UserPatch { is_admin: Some(true), blocked: None }).unwrap();
        assert_eq!(patch, r#"{"is_admin":true}"#);
    }
}
