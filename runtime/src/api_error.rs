//! The error answer of every HTTP route (the API, the change sources'
//! routes, the token checks): JSON `{"error": {"status": N, "message": "…"}}`
//! with a fitting HTTP status.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
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
        if self.0 == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 says how to authenticate.
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"bbc\""),
            );
        }
        r.extensions_mut().insert(ErrorMessage(self.1));
        r
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

/// The longest message kept from a framework's error answer: its
/// rejections are one line, and nothing unbounded is buffered here.
const MAX_MESSAGE: usize = 16 << 10;

/// Puts every error answer in the shape above, whoever made it: the
/// routes answer with [`ApiError`] already, but the framework's own
/// rejections (415 without a JSON content type, 413 over the body limit,
/// 405, a path or query parameter of the wrong type, JSON syntax) are plain
/// text. Their status is kept and their text becomes the message; headers
/// such as `WWW-Authenticate` are kept too.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        // The router adds `Allow` after this layer has run.
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            format!("{method} is not allowed on {path} (the `Allow` header lists what is)")
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!("the request body is too large: {text}"),
        (_, false) => text,
        (_, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut out = ApiError(status, message).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}
