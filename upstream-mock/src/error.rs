//! The one error shape every endpoint answers with.
//!
//! Gateway tests assert on upstream failures the same way whatever went
//! wrong, so every non-2xx answer (including axum's own extractor
//! rejections, unknown routes and wrong methods) is
//! `{"error": "<snake_case_code>", "message": "<readable sentence>"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answer: HTTP status, machine-readable code and human message.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "No such resource on the upstream.")
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This resource does not support that method.",
        )
    }

    pub(crate) fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// Fallback for paths no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Fallback for known paths asked with a method they do not serve.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
