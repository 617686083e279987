//! Builds and build requests: listing, one build with its steps and
//! estimates, step logs, cancelling.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bbc_graph::BuildResult;
use serde::Deserialize;
use serde_json::{json, Value};

use super::origin::{origin, Sets};
use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{Control, Scope};
use crate::state::{now_ms, Shared};
use crate::store::{Build, BuildFilter, Page, RequestFilter, RequestState};
use bbc_graph::Grant;

type S = State<Arc<Shared>>;

#[derive(Deserialize)]
pub(super) struct BuildsQuery {
    builder: Option<String>,
    result: Option<String>,
    running: Option<bool>,
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) fn parse_result(s: &str) -> R<BuildResult> {
    BuildResult::ALL
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, r)| *r)
        .ok_or_else(|| ApiError::bad(format!("unknown result `{s}`; one of success, warnings, skipped, failure, exception, retry, cancelled")))
}

/// Expected duration of a builder's builds: the mean of its last ten
/// finished ones (and of each step's), as Buildbot estimates.
pub(super) async fn history(s: &Arc<Shared>, builder: String) -> (Option<i64>, Vec<Option<i64>>) {
    let r = s
        .db(move |st| {
            let f = BuildFilter {
                builder: Some(builder),
                result: Some(BuildResult::Success),
                running: false,
            };
            let builds = st.builds(
                &f,
                Page {
                    before: None,
                    limit: 10,
                },
            )?;
            let mut steps: Vec<Vec<i64>> = Vec::new();
            let mut totals = Vec::new();
            for b in &builds {
                if let Some(end) = b.finished_at {
                    totals.push(end - b.build.started_at);
                }
                for step in st.steps(b.id)? {
                    if let (Some(a), Some(e)) = (step.started_at, step.finished_at) {
                        let i = step.index as usize;
                        if steps.len() <= i {
                            steps.resize(i + 1, Vec::new());
                        }
                        steps[i].push(e - a);
                    }
                }
            }
            Ok((totals, steps))
        })
        .await;
    let mean = |v: &[i64]| (!v.is_empty()).then(|| v.iter().sum::<i64>() / v.len() as i64);
    match r {
        Ok((t, st)) => (mean(&t), st.iter().map(|v| mean(v)).collect()),
        Err(_) => (None, Vec::new()),
    }
}

pub(super) fn build_json(b: &Build, eta: Option<i64>, origin: Value) -> Value {
    let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("eta".into(), json!(eta));
        o.insert("complete".into(), json!(b.finished_at.is_some()));
        o.insert("origin".into(), origin);
    }
    v
}

pub(super) async fn builds(State(s): S, Query(q): Query<BuildsQuery>) -> R<Json<Value>> {
    let f = BuildFilter {
        builder: q.builder,
        result: q.result.as_deref().map(parse_result).transpose()?,
        running: q.running.unwrap_or(false),
    };
    let p = page(q.before, q.limit)?;
    let (list, origins) = s
        .db(move |st| {
            let list = st.builds(&f, p)?;
            let mut sets = Sets::default();
            let origins = list
                .iter()
                .map(|b| origin(st, &mut sets, b))
                .collect::<crate::store::Result<Vec<_>>>()?;
            Ok((list, origins))
        })
        .await?;
    let mut out = Vec::new();
    for (b, origin) in list.iter().zip(origins) {
        let eta = if b.finished_at.is_none() {
            history(&s, b.build.builder.clone())
                .await
                .0
                .map(|d| b.build.started_at + d)
        } else {
            None
        };
        out.push(build_json(b, eta, origin));
    }
    Ok(Json(json!({ "builds": out })))
}

pub(super) async fn build(State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
    let (b, steps, origin, uploads) = s
        .db(move |st| {
            let b = st.build(id)?;
            let origin = match &b {
                Some(b) => origin(st, &mut Sets::default(), b)?,
                None => Value::Null,
            };
            let uploads: Vec<String> = st
                .get_state(&crate::store::uploads_key(id))?
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or_default();
            Ok((b, st.steps(id)?, origin, uploads))
        })
        .await?;
    let b = b.ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
    let (total, per_step) = if b.finished_at.is_none() {
        history(&s, b.build.builder.clone()).await
    } else {
        (None, Vec::new())
    };
    let steps: Vec<Value> = steps
        .iter()
        .map(|st| {
            let mut v = serde_json::to_value(st).unwrap_or(Value::Null);
            let eta = match (
                st.started_at,
                st.finished_at,
                per_step.get(st.index as usize).copied().flatten(),
            ) {
                (Some(a), None, Some(d)) => Some(a + d),
                _ => None,
            };
            if let Some(o) = v.as_object_mut() {
                o.insert("eta".into(), json!(eta));
            }
            v
        })
        .collect();
    let mut v = build_json(&b, total.map(|d| b.build.started_at + d), origin);
    if let Some(o) = v.as_object_mut() {
        o.insert("steps".into(), json!(steps));
        // Paths under `STATE/files`, served at `/files/PATH`.
        o.insert("uploads".into(), json!(uploads));
    }
    Ok(Json(json!({ "build": v })))
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    offset: Option<u64>,
    limit: Option<usize>,
}

/// Raw log bytes from `offset`; headers say the total length and whether
/// the step is still running, so a client can follow a live log.
pub(super) async fn log(
    State(s): S,
    Path((id, step)): Path<(u64, u32)>,
    Query(q): Query<LogQuery>,
) -> R<Response> {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(1 << 20).clamp(1, 8 << 20);
    let (b, steps, data, len) = s
        .db(move |st| {
            let b = st.build(id)?;
            let steps = st.steps(id)?;
            let len = st.log_len(id, step)?;
            let data = st.read_log(id, step, offset, limit)?;
            Ok((b, steps, data, len))
        })
        .await?;
    let b = b.ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
    let rec = steps
        .iter()
        .find(|x| x.index == step)
        .ok_or_else(|| ApiError::not_found(format!("build {id} has no step {step} (yet)")))?;
    let complete = rec.finished_at.is_some() || b.finished_at.is_some();
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8"
            .parse()
            .map_err(|_| ApiError::bad("header"))?,
    );
    h.insert("x-log-length", len.into());
    h.insert(
        "x-log-complete",
        if complete {
            "true".parse()
        } else {
            "false".parse()
        }
        .map_err(|_| ApiError::bad("header"))?,
    );
    Ok((h, data).into_response())
}

#[derive(Deserialize)]
pub(super) struct RequestsQuery {
    builder: Option<String>,
    state: Option<String>,
    buildset: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn requests(State(s): S, Query(q): Query<RequestsQuery>) -> R<Json<Value>> {
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => Some(RequestState::Pending),
        Some("claimed") => Some(RequestState::Claimed),
        Some("complete") => Some(RequestState::Complete),
        Some("cancelled") => Some(RequestState::Cancelled),
        Some(x) => {
            return Err(ApiError::bad(format!(
                "unknown state `{x}`; one of pending, claimed, complete, cancelled"
            )))
        }
    };
    let f = RequestFilter {
        builder: q.builder,
        buildset: q.buildset,
        state,
    };
    let p = page(q.before, q.limit)?;
    let v = s.db(move |st| st.requests(&f, p)).await?;
    Ok(Json(json!({ "requests": v })))
}

pub(super) async fn cancel_request(
    ctl: Control,
    State(s): S,
    Path(id): Path<u64>,
) -> R<Json<Value>> {
    let req = s.db(move |st| st.request(id)).await?;
    match &req {
        Some(r) => ctl.allow(&s, Grant::Cancel, Scope::Builder(&r.builder))?,
        None => ctl.allow(&s, Grant::Cancel, Scope::SomeBuilder)?,
    }
    let ok = s.db(move |st| st.cancel_request(id, now_ms())).await?;
    if !ok {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("request {id} is not pending (or does not exist)"),
        ));
    }
    if let Ok(mut q) = s.queue.lock() {
        q.remove(id);
    }
    s.build_finished.notify_waiters();
    Ok(Json(json!({"cancelled": id})))
}

pub(super) async fn cancel_build(ctl: Control, State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
    let builder = s.queue.lock().ok().and_then(|q| {
        q.running()
            .find(|r| r.build_id == Some(id))
            .map(|r| r.builder.clone())
    });
    let elsewhere = builder.is_none() && s.store.shared();
    // Not running here, on a store other masters share: it may run on
    // one of them, whose builder decides the grant.
    let builder = match builder {
        Some(b) => Some(b),
        None if elsewhere => s
            .db(move |st| st.build(id))
            .await?
            .filter(|b| b.finished_at.is_none())
            .map(|b| b.build.builder),
        None => None,
    };
    match &builder {
        Some(b) => ctl.allow(&s, Grant::Cancel, Scope::Builder(b))?,
        None => ctl.allow(&s, Grant::Cancel, Scope::SomeBuilder)?,
    }
    // Looked up again: the build may have ended meanwhile.
    let mut found = crate::master::peers::cancel_here(&s, id);
    if !found && elsewhere {
        // The master running it hears this and cancels it.
        found = s.db(move |st| st.request_cancel(id)).await?;
    }
    if !found {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("build {id} is not running"),
        ));
    }
    Ok(Json(json!({"cancelling": id})))
}

/// The largest page a list answers.
const MAX_LIMIT: usize = 1000;

/// A page of a list: `limit` 1–1000 (default 50); anything else is refused
/// rather than quietly changed, so a client learns the bound.
pub(super) fn page(before: Option<u64>, limit: Option<usize>) -> R<Page> {
    match limit.unwrap_or(50) {
        limit @ 1..=MAX_LIMIT => Ok(Page { before, limit }),
        n => Err(ApiError::bad(format!(
            "limit={n} is out of range: a page holds 1 to {MAX_LIMIT} items"
        ))),
    }
}
