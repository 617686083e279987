//! Changes: listing and submitting one through the API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::builds::page;
use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::Control;
use crate::state::{now_ms, Shared};
use crate::store::NewChange;

type S = State<Arc<Shared>>;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn changes(State(s): S, Query(q): Query<PageQuery>) -> R<Json<Value>> {
    let p = page(q.before, q.limit);
    let v = s.db(move |st| st.changes(p)).await?;
    Ok(Json(json!({ "changes": v })))
}

pub(super) async fn add_change(
    _: Control,
    State(s): S,
    body: Result<Json<NewChange>, axum::extract::rejection::JsonRejection>,
) -> R<(StatusCode, Json<Value>)> {
    let Json(mut c) =
        body.map_err(|e| ApiError::bad(format!("invalid change: {}", e.body_text())))?;
    if c.source.is_empty() {
        c.source = "api".into();
    }
    if c.when == 0 {
        c.when = now_ms();
    }
    let stored = s.add_change(c).await?;
    Ok((StatusCode::CREATED, Json(json!({ "change": stored }))))
}
