//! Changes: listing and submitting one through the API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::builds::page;
use super::origin::builds_of;
use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{Control, Scope};
use crate::change_json;
use crate::change_json::link;
use crate::state::{now_ms, Shared};
use crate::store::Change;
use bbc_graph::Grant;

type S = State<Arc<Shared>>;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

/// Each change carries `builds`, the builds that included it (see
/// `origin::builds_of`), and `link`, its web page when known.
pub(super) async fn changes(State(s): S, Query(q): Query<PageQuery>) -> R<Json<Value>> {
    let p = page(q.before, q.limit)?;
    let v = s
        .db(move |st| {
            let list = st.changes(p)?;
            let refs: Vec<&Change> = list.iter().collect();
            let (builds, complete) = builds_of(st, &refs)?;
            let out: Vec<Value> = list
                .iter()
                .map(|c| with_builds(c, builds.get(&c.id), complete))
                .collect();
            Ok(out)
        })
        .await?;
    Ok(Json(json!({ "changes": v })))
}

/// `GET /api/v1/changes/{id}`: one change and the builds that included it.
pub(super) async fn change(State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
    let v = s
        .db(move |st| {
            let Some(c) = st.change(id)? else {
                return Ok(None);
            };
            let (builds, complete) = builds_of(st, &[&c])?;
            Ok(Some(with_builds(&c, builds.get(&c.id), complete)))
        })
        .await?;
    let v = v.ok_or_else(|| ApiError::not_found(format!("no change {id}")))?;
    Ok(Json(json!({ "change": v })))
}

fn with_builds(c: &Change, builds: Option<&Vec<Value>>, complete: bool) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("builds".into(), json!(builds.cloned().unwrap_or_default()));
        o.insert("builds_complete".into(), json!(complete));
        o.insert("link".into(), json!(link(c)));
    }
    v
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
