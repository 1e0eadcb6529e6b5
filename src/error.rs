//! Every way a request can be refused, and the one place that turns a refusal
//! into HTTP.
//!
//! Clients (and the people reading their logs) get a stable snake_case `error`
//! code to branch on and a `message` sentence to read. Keeping the mapping here
//! means a status code or wording can't drift between the proxy path, the
//! built-in endpoints and the admin API.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// A refusal that is answered to the client as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("this route needs a bearer token in the Authorization header")]
    MissingToken,
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedAuthorization,
    #[error("more than one Authorization header was sent")]
    DuplicateAuthorization,
    #[error("the request carries two different tokens (the Authorization header and a cookie, or the same cookie twice); send one")]
    ConflictingCredentials,
    #[error("the CSRF check failed: a request authenticated by a cookie must send the CSRF cookie's value in the CSRF header")]
    CsrfFailed,
    /// A sign-in form post without the form token its page was served with
    /// (login CSRF: another site signing the browser in as someone else).
    #[error("this sign-in form has expired or was not sent from this site; reload the page and try again")]
    SigninFormRefused,
    #[error("the token is malformed, has a bad signature, or was not issued by this gateway")]
    InvalidToken,
    #[error("the token has expired; log in again or use your refresh token")]
    TokenExpired,
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    #[error("the token has been revoked; log in again")]
    TokenRevoked,
    #[error("a refresh token was sent where an access token is needed")]
    AccessTokenRequired,
    #[error("an access token was sent where a refresh token is needed")]
    RefreshTokenRequired,
    #[error("this action needs a fresh token: log in with your password again")]
    FreshTokenRequired,
    #[error("this route is for administrators only")]
    AdminRequired,
    #[error("your account does not hold a role this route requires")]
    RoleRequired,
    #[error("a WebSocket may only be opened from this site or an origin the route allows")]
    WebSocketOriginRefused,
    #[error("the account this token belongs to no longer exists")]
    AccountNotFound,
    #[error("this account is blocked; contact an administrator")]
    AccountBlocked,
    #[error("the gateway's policy does not allow this route")]
    AccessDenied,
    /// A CORS preflight the route's `cors_*` settings don't allow.
    #[error("the cross-origin request is not allowed: {0}")]
    CorsRefused(crate::cors::CorsRefusal),
    #[error("you may only read or change your own account")]
    NotYourAccount,
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("an account with this username already exists")]
    UsernameTaken,
    #[error("registration is switched off on this gateway")]
    RegistrationDisabled,
    #[error("no such user")]
    UserNotFound,
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the request is not valid: {0}")]
    InvalidRequest(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("this endpoint does not accept {0} requests")]
    MethodNotAllowed(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("this refresh token was already used; every token of its login session is now revoked")]
    RefreshTokenReused,
    #[error("the request path can't be accepted: {0}")]
    InvalidPath(crate::path::PathError),
    #[error("the method must be an upper-case HTTP method such as GET or POST")]
    InvalidMethod,
    #[error(
        "a `_method` parameter or form field is not accepted: it would change the method the gateway checked"
    )]
    MethodOverrideRefused,
    #[error("the request headers can't be accepted: {0}")]
    InvalidHeader(crate::request::HeaderError),
    #[error("the request took too long to arrive")]
    RequestTimeout,
    #[error(
        "a form body on this route needs a Content-Length (the gateway checks it for a `_method` field)"
    )]
    LengthRequired,
    #[error("the request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// A login limit or a route's request budget (`[[routes]] rate`).
    #[error("too many requests; try again in {retry_after} second{}", if *retry_after == 1 { "" } else { "s" })]
    RateLimited { retry_after: u64 },
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable,
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    #[error("the gateway's store failed; try again shortly")]
    StoreUnavailable,
    #[error("the gateway failed unexpectedly; try again shortly")]
    Internal,
}

/// The JSON body of every refusal, `{"error": "<code>", "message": "<sentence>"}`:
/// written by [`ApiError::body`], read back by the CLI from a running gateway.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingToken
            | MalformedAuthorization
            | InvalidToken
            | TokenExpired
            | TokenNotYetValid
            | TokenRevoked
            | AccessTokenRequired
            | RefreshTokenRequired
            | FreshTokenRequired
            | AccountNotFound
            | InvalidCredentials
            | RefreshTokenReused => StatusCode::UNAUTHORIZED,
            ConflictingCredentials => StatusCode::BAD_REQUEST,
            DuplicateAuthorization
            | InvalidJson(_)
            | InvalidRequest(_)
            | InvalidPath(_)
            | InvalidMethod
            | MethodOverrideRefused
            | InvalidHeader(_) => StatusCode::BAD_REQUEST,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            LengthRequired => StatusCode::LENGTH_REQUIRED,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            AdminRequired
            | RoleRequired
            | WebSocketOriginRefused
            | AccountBlocked
            | AccessDenied
            | CorsRefused(_)
            | NotYourAccount
            | RegistrationDisabled
            | CsrfFailed
            | SigninFormRefused => StatusCode::FORBIDDEN,
            UserNotFound | NotFound => StatusCode::NOT_FOUND,
            EmailTaken | UsernameTaken => StatusCode::CONFLICT,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status a gRPC client is answered with instead of the HTTP
    /// status (the README's table lists both): 16 UNAUTHENTICATED when the
    /// caller is not known, 7 PERMISSION_DENIED when they are but may not
    /// (a fresh token is a permission here, as in OAuth's `insufficient_scope`),
    /// 8 RESOURCE_EXHAUSTED over a limit.
    pub fn grpc_status(&self) -> GrpcStatus {
        use ApiError::*;
        match self {
            FreshTokenRequired | CsrfFailed => GrpcStatus::PermissionDenied,
            // Which token is the caller's can't be told: nobody is authenticated.
            ConflictingCredentials => GrpcStatus::Unauthenticated,
            _ if self.status() == StatusCode::UNAUTHORIZED => GrpcStatus::Unauthenticated,
            _ if self.status() == StatusCode::FORBIDDEN => GrpcStatus::PermissionDenied,
            RateLimited { .. } | HeadersTooLarge { .. } | BodyTooLarge { .. } => {
                GrpcStatus::ResourceExhausted
            }
            RequestTimeout | UpstreamTimeout => GrpcStatus::DeadlineExceeded,
            UpstreamUnavailable | StoreUnavailable => GrpcStatus::Unavailable,
            NotFound | MethodNotAllowed(_) => GrpcStatus::Unimplemented,
            Internal => GrpcStatus::Internal,
            _ => GrpcStatus::InvalidArgument,
        }
    }

    /// The stable, machine-readable code. Documented in the README's table.
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Which refusal this is, without its details: what the access log and
    /// the request context keep.
    pub fn kind(&self) -> ErrorCode {
        use ApiError::*;
        match self {
            MissingToken => ErrorCode::MissingToken,
            MalformedAuthorization => ErrorCode::MalformedAuthorization,
            DuplicateAuthorization => ErrorCode::DuplicateAuthorization,
            ConflictingCredentials => ErrorCode::ConflictingCredentials,
            CsrfFailed => ErrorCode::CsrfFailed,
            SigninFormRefused => ErrorCode::SigninFormRefused,
            InvalidToken => ErrorCode::InvalidToken,
            TokenExpired => ErrorCode::TokenExpired,
            TokenNotYetValid => ErrorCode::TokenNotYetValid,
            TokenRevoked => ErrorCode::TokenRevoked,
            AccessTokenRequired => ErrorCode::AccessTokenRequired,
            RefreshTokenRequired => ErrorCode::RefreshTokenRequired,
            FreshTokenRequired => ErrorCode::FreshTokenRequired,
            AdminRequired => ErrorCode::AdminRequired,
            RoleRequired => ErrorCode::RoleRequired,
            WebSocketOriginRefused => ErrorCode::WebSocketOriginRefused,
            AccountNotFound => ErrorCode::AccountNotFound,
            AccountBlocked => ErrorCode::AccountBlocked,
            AccessDenied => ErrorCode::AccessDenied,
            CorsRefused(_) => ErrorCode::CorsRefused,
            NotYourAccount => ErrorCode::NotYourAccount,
            InvalidCredentials => ErrorCode::InvalidCredentials,
            EmailTaken => ErrorCode::EmailTaken,
            UsernameTaken => ErrorCode::UsernameTaken,
            RegistrationDisabled => ErrorCode::RegistrationDisabled,
            UserNotFound => ErrorCode::UserNotFound,
            InvalidJson(_) => ErrorCode::InvalidJson,
            InvalidRequest(_) => ErrorCode::InvalidRequest,
            BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            NotFound => ErrorCode::NotFound,
            RefreshTokenReused => ErrorCode::RefreshTokenReused,
            InvalidPath(_) => ErrorCode::InvalidPath,
            InvalidMethod => ErrorCode::InvalidMethod,
            MethodOverrideRefused => ErrorCode::MethodOverrideRefused,
            InvalidHeader(_) => ErrorCode::InvalidHeader,
            HeadersTooLarge { .. } => ErrorCode::HeadersTooLarge,
            RequestTimeout => ErrorCode::RequestTimeout,
            LengthRequired => ErrorCode::LengthRequired,
            RateLimited { .. } => ErrorCode::RateLimited,
            UpstreamUnavailable => ErrorCode::UpstreamUnavailable,
            UpstreamTimeout => ErrorCode::UpstreamTimeout,
            StoreUnavailable => ErrorCode::StoreUnavailable,
            Internal => ErrorCode::Internal,
        }
    }

    /// The human-readable sentence: the `Display` text with a capital and a full stop.
    pub fn message(&self) -> String {
        let text = self.to_string();
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
            None => text,
        }
    }

    /// The JSON body sent to the client.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody { error: self.code().to_owned(), message: self.message() })
            .unwrap_or_else(|_| br#"{"error":"internal_error","message":"Unexpected failure."}"#.to_vec())
    }

    /// Seconds for a `Retry-After` header, on 429s.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Extra response headers this refusal carries (RFC 6750 on 401s).
    pub fn www_authenticate(&self) -> Option<String> {
        if self.status() != StatusCode::UNAUTHORIZED {
            return None;
        }
        let error = match self {
            ApiError::MissingToken | ApiError::InvalidCredentials => return Some("Bearer".into()),
            ApiError::MalformedAuthorization => "invalid_request",
            ApiError::FreshTokenRequired => "insufficient_scope",
            _ => "invalid_token",
        };
        Some(format!("Bearer error=\"{error}\", error_description=\"{}\"", self.message().replace('"', "'")))
    }
}

/// The gRPC status codes a refusal can carry (the numbers are gRPC's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcStatus {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl GrpcStatus {
    /// The `grpc-status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcStatus::InvalidArgument => "3",
            GrpcStatus::DeadlineExceeded => "4",
            GrpcStatus::PermissionDenied => "7",
            GrpcStatus::ResourceExhausted => "8",
            GrpcStatus::Unimplemented => "12",
            GrpcStatus::Internal => "13",
            GrpcStatus::Unavailable => "14",
            GrpcStatus::Unauthenticated => "16",
        }
    }
}

/// The code of an [`ApiError`]: a closed set, so the request context and the
/// access log carry a value rather than a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingToken,
    MalformedAuthorization,
    DuplicateAuthorization,
    ConflictingCredentials,
    CsrfFailed,
    SigninFormRefused,
    InvalidToken,
    TokenExpired,
    TokenNotYetValid,
    TokenRevoked,
    AccessTokenRequired,
    RefreshTokenRequired,
    FreshTokenRequired,
    AdminRequired,
    RoleRequired,
    WebSocketOriginRefused,
    AccountNotFound,
    AccountBlocked,
    AccessDenied,
    CorsRefused,
    NotYourAccount,
    InvalidCredentials,
    EmailTaken,
    UsernameTaken,
    RegistrationDisabled,
    UserNotFound,
    InvalidJson,
    InvalidRequest,
    BodyTooLarge,
    MethodNotAllowed,
    NotFound,
    RefreshTokenReused,
    InvalidPath,
    InvalidMethod,
    MethodOverrideRefused,
    InvalidHeader,
    HeadersTooLarge,
    RequestTimeout,
    LengthRequired,
    RateLimited,
    UpstreamUnavailable,
    UpstreamTimeout,
    StoreUnavailable,
    Internal,
}

impl ErrorCode {
    /// The stable, machine-readable code. Documented in the README's table.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::MalformedAuthorization => "malformed_authorization",
            ErrorCode::DuplicateAuthorization => "duplicate_authorization",
            ErrorCode::ConflictingCredentials => "conflicting_credentials",
            ErrorCode::CsrfFailed => "csrf_failed",
            ErrorCode::SigninFormRefused => "signin_form_refused",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenNotYetValid => "token_not_yet_valid",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::AccessTokenRequired => "access_token_required",
            ErrorCode::RefreshTokenRequired => "refresh_token_required",
            ErrorCode::FreshTokenRequired => "fresh_token_required",
            ErrorCode::AdminRequired => "admin_required",
            ErrorCode::RoleRequired => "role_required",
            ErrorCode::WebSocketOriginRefused => "websocket_origin_refused",
            ErrorCode::AccountNotFound => "account_not_found",
            ErrorCode::AccountBlocked => "account_blocked",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::CorsRefused => "cors_refused",
            ErrorCode::NotYourAccount => "not_your_account",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::RegistrationDisabled => "registration_disabled",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RefreshTokenReused => "refresh_token_reused",
            ErrorCode::InvalidPath => "invalid_path",
            ErrorCode::InvalidMethod => "invalid_method",
            ErrorCode::MethodOverrideRefused => "method_override_refused",
            ErrorCode::InvalidHeader => "invalid_header",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal_error",
        }
    }
}

impl From<crate::request::RequestError> for ApiError {
    fn from(err: crate::request::RequestError) -> Self {
        use crate::request::RequestError;
        match err {
            RequestError::InvalidMethod => ApiError::InvalidMethod,
            RequestError::Connect => ApiError::MethodNotAllowed("CONNECT".into()),
            RequestError::Path(e) => ApiError::InvalidPath(e),
            RequestError::MethodOverride => ApiError::MethodOverrideRefused,
            RequestError::Header(e) => ApiError::InvalidHeader(e),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// Only the answer: whoever handles the failure logs it
    /// ([`crate::store::StoreError::log`]).
    fn from(_: crate::store::StoreError) -> Self {
        ApiError::StoreUnavailable
    }
}

impl From<crate::tokens::TokenError> for ApiError {
    fn from(err: crate::tokens::TokenError) -> Self {
        use crate::tokens::TokenError;
        match err {
            TokenError::Invalid => ApiError::InvalidToken,
            TokenError::Expired => ApiError::TokenExpired,
            TokenError::NotYetValid => ApiError::TokenNotYetValid,
            TokenError::AccessRequired => ApiError::AccessTokenRequired,
            TokenError::RefreshRequired => ApiError::RefreshTokenRequired,
            TokenError::Signing => ApiError::Internal,
        }
    }
}

impl From<crate::passwords::PasswordError> for ApiError {
    fn from(err: crate::passwords::PasswordError) -> Self {
        use crate::passwords::PasswordError;
        match err {
            PasswordError::TooShort { .. } | PasswordError::TooLong { .. } => {
                ApiError::InvalidRequest(err.to_string())
            }
            PasswordError::Hashing => ApiError::Internal,
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(err: crate::limits::LimitError) -> Self {
        use crate::limits::LimitError;
        match err {
            LimitError::Limited { retry_after } => ApiError::RateLimited { retry_after },
            LimitError::Store(e) => e.into(),
        }
    }
}
