//! The error answer of every HTTP route (the API, the change sources'
//! routes, the token checks): JSON `{"error": {"status": N, "message": "…"}}`
//! with a fitting HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The message of an error answer, attached to the response so that the
/// HTTP layer that logs every 5xx (`http::log_server_errors`) can say what
/// went wrong without parsing the body.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

/// Set on a 5xx answer whose route logs its failures itself (the health
/// check logs when it starts and stops failing, not at every poll), so the
/// HTTP layer does not log it again.
#[derive(Debug, Clone, Copy)]
pub struct LoggedByRoute;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            Json(json!({"error": {"status": self.0.as_u16(), "message": self.1}})),
        )
            .into_response();
        r.extensions_mut().insert(ErrorMessage(self.1));
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}
