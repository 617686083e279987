//! Changes: listing and submitting one through the API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::builds::page;
use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{Control, Scope};
use crate::change_json;
use crate::state::{now_ms, Shared};
use bbc_graph::Grant;

type S = State<Arc<Shared>>;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn changes(State(s): S, Query(q): Query<PageQuery>) -> R<Json<Value>> {
    let p = page(q.before, q.limit)?;
    let v = s.db(move |st| st.changes(p)).await?;
    Ok(Json(json!({ "changes": v })))
}

/// `POST /api/v1/changes`: read exactly as the JSON webhook reads a change
/// (unknown fields, NUL bytes and empty changes refused, each error naming
/// its path); its source is always `api`, so a client cannot pass a
/// change off as one a signed webhook delivered.
pub(super) async fn add_change(
    ctl: Control,
    State(s): S,
    body: Result<Bytes, BytesRejection>,
) -> R<(StatusCode, Json<Value>)> {
    ctl.allow(&s, Grant::Force, Scope::Everything)?;
    // Too large (413) or unreadable: the rejection's own status.
    let body = body.map_err(|e| {
        let why = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
            _ => "invalid change",
        };
        ApiError::new(e.status(), format!("{why}: {}", e.body_text()))
    })?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("invalid change: invalid JSON: {e}")))?;
    let mut c = change_json::read(&v, "", "`api` for a change submitted through the API")?;
    c.source = "api".into();
    if c.when == 0 {
        c.when = now_ms();
    }
    let stored = s.add_change(c).await?;
    Ok((StatusCode::CREATED, Json(json!({ "change": stored }))))
}
