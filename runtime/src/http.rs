//! The REST API under `/api/v1` (documented in `docs/api.md`).
//!
//! Errors are JSON `{"error": {"status": N, "message": "…"}}` with a
//! fitting HTTP status; input from clients is validated like the compiler
//! validates config (force parameters by type, choices, required).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bbc_graph::{BuildResult, ParamType, Scalar, SchedulerKind};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::auth::{refuse_unless_admin, Control};
use crate::master::apply::{self, ApplyError};
use crate::state::config::AppliedRecord;
use crate::state::{now_ms, Shared};
use crate::store::{
    Build, BuildFilter, NewBuildSet, NewChange, Page, Properties, RequestFilter, RequestState,
    SourceStamp,
};

type S = State<Arc<Shared>>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"status": self.0.as_u16(), "message": self.1}})),
        )
            .into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

type R<T> = Result<T, ApiError>;

/// The API's routes, with `extra` ones (the change sources' receivers and
/// listing, which their service defines) and the web UI.
pub fn router(shared: Arc<Shared>, extra: Router<Arc<Shared>>) -> Router {
    Router::new()
        .route("/api/v1", get(index))
        .route("/api/v1/builders", get(builders))
        .route("/api/v1/builders/{name}", get(builder))
        .route("/api/v1/builders/{name}/force", post(force))
        .route("/api/v1/builds", get(builds))
        .route("/api/v1/builds/{id}", get(build))
        .route("/api/v1/builds/{id}/cancel", post(cancel_build))
        .route("/api/v1/builds/{id}/steps/{step}/log", get(log))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/requests/{id}/cancel", post(cancel_request))
        .route("/api/v1/changes", get(changes).post(add_change))
        .route("/api/v1/schedulers", get(schedulers))
        .route("/api/v1/events", get(events))
        .route("/api/v1/config", get(get_config).post(post_config))
        .merge(extra)
        .merge(crate::web::router())
        .fallback(|| async { not_found("no such API endpoint; see docs/api.md") })
        .with_state(shared)
}

pub async fn serve(shared: Arc<Shared>, listener: TcpListener, extra: Router<Arc<Shared>>) {
    if let Err(e) = axum::serve(listener, router(shared, extra)).await {
        tracing::error!("HTTP server stopped: {e}");
    }
}

async fn index(State(s): S) -> Json<Value> {
    let g = s.graph();
    Json(
        json!({"title": g.master.title, "url": g.master.url, "version": env!("CARGO_PKG_VERSION")}),
    )
}

#[derive(Deserialize)]
struct BuildersQuery {
    last_build: Option<bool>,
}

/// `GET /api/v1/builders[?last_build=true]`: with `last_build`, each
/// builder also carries its newest build (or null) and how many of its
/// builds are running — what an overview page needs, in one request and
/// one store trip (the by-builder index gives each newest build directly).
async fn builders(State(s): S, Query(q): Query<BuildersQuery>) -> R<Json<Value>> {
    let g = s.graph();
    let mut v: Vec<Value> = g
        .builders
        .iter()
        .map(|b| json!({"name": b.name, "description": b.description, "tags": b.tags, "workers": b.workers, "hash": b.hash}))
        .collect();
    if q.last_build.unwrap_or(false) {
        let names: Vec<String> = g.builders.iter().map(|b| b.name.clone()).collect();
        let last = s
            .db(move |st| {
                names
                    .iter()
                    .map(|n| {
                        let f = BuildFilter {
                            builder: Some(n.clone()),
                            ..BuildFilter::default()
                        };
                        Ok(st.builds(&f, page(None, Some(1)))?.pop())
                    })
                    .collect::<crate::store::Result<Vec<_>>>()
            })
            .await?;
        let mut running: std::collections::HashMap<String, usize> = Default::default();
        if let Ok(queue) = s.queue.lock() {
            for r in queue.running.values() {
                *running.entry(r.builder.clone()).or_default() += 1;
            }
        }
        for ((o, b), l) in v.iter_mut().zip(&g.builders).zip(last) {
            if let Some(o) = o.as_object_mut() {
                o.insert(
                    "last_build".into(),
                    l.map_or(Value::Null, |b| build_json(&b, None)),
                );
                o.insert(
                    "running".into(),
                    json!(running.get(b.name.as_str()).copied().unwrap_or(0)),
                );
            }
        }
    }
    Ok(Json(json!({ "builders": v })))
}

async fn builder(State(s): S, Path(name): Path<String>) -> R<Json<Value>> {
    let g = s.graph();
    let b = g
        .builder(&name)
        .ok_or_else(|| not_found(format!("no builder named `{name}`")))?;
    Ok(Json(json!({"builder": b})))
}

#[derive(Deserialize)]
struct BuildsQuery {
    builder: Option<String>,
    result: Option<String>,
    running: Option<bool>,
    before: Option<u64>,
    limit: Option<usize>,
}

fn parse_result(s: &str) -> R<BuildResult> {
    BuildResult::ALL
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, r)| *r)
        .ok_or_else(|| bad(format!("unknown result `{s}`; one of success, warnings, skipped, failure, exception, retry, cancelled")))
}

fn page(before: Option<u64>, limit: Option<usize>) -> Page {
    Page {
        before,
        limit: limit.unwrap_or(50).clamp(1, 1000),
    }
}

/// Expected duration of a builder's builds: the mean of its last ten
/// finished ones (and of each step's), as Buildbot estimates.
async fn history(s: &Arc<Shared>, builder: String) -> (Option<i64>, Vec<Option<i64>>) {
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

fn build_json(b: &Build, eta: Option<i64>) -> Value {
    let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("eta".into(), json!(eta));
        o.insert("complete".into(), json!(b.finished_at.is_some()));
    }
    v
}

async fn builds(State(s): S, Query(q): Query<BuildsQuery>) -> R<Json<Value>> {
    let f = BuildFilter {
        builder: q.builder,
        result: q.result.as_deref().map(parse_result).transpose()?,
        running: q.running.unwrap_or(false),
    };
    let p = page(q.before, q.limit);
    let list = s.db(move |st| st.builds(&f, p)).await?;
    let mut out = Vec::new();
    for b in &list {
        let eta = if b.finished_at.is_none() {
            history(&s, b.build.builder.clone())
                .await
                .0
                .map(|d| b.build.started_at + d)
        } else {
            None
        };
        out.push(build_json(b, eta));
    }
    Ok(Json(json!({ "builds": out })))
}

async fn build(State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
    let (b, steps) = s.db(move |st| Ok((st.build(id)?, st.steps(id)?))).await?;
    let b = b.ok_or_else(|| not_found(format!("no build {id}")))?;
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
    let mut v = build_json(&b, total.map(|d| b.build.started_at + d));
    if let Some(o) = v.as_object_mut() {
        o.insert("steps".into(), json!(steps));
    }
    Ok(Json(json!({ "build": v })))
}

#[derive(Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    limit: Option<usize>,
}

/// Raw log bytes from `offset`; headers say the total length and whether
/// the step is still running, so a client can follow a live log.
async fn log(
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
    let b = b.ok_or_else(|| not_found(format!("no build {id}")))?;
    let rec = steps
        .iter()
        .find(|x| x.index == step)
        .ok_or_else(|| not_found(format!("build {id} has no step {step} (yet)")))?;
    let complete = rec.finished_at.is_some() || b.finished_at.is_some();
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8"
            .parse()
            .map_err(|_| bad("header"))?,
    );
    h.insert("x-log-length", len.into());
    h.insert(
        "x-log-complete",
        if complete {
            "true".parse()
        } else {
            "false".parse()
        }
        .map_err(|_| bad("header"))?,
    );
    Ok((h, data).into_response())
}

async fn workers(State(s): S) -> R<Json<Value>> {
    let g = s.graph();
    let conns: Vec<String> = s
        .workers
        .lock()
        .map(|w| w.keys().cloned().collect())
        .unwrap_or_default();
    let running: Vec<(String, String, Option<u64>)> = s
        .queue
        .lock()
        .map(|q| {
            q.running
                .values()
                .map(|r| (r.worker.clone(), r.builder.clone(), r.build_id))
                .collect()
        })
        .unwrap_or_default();
    let records = s.db(|st| st.workers()).await?;
    let mut v: Vec<Value> = g
        .workers
        .iter()
        .map(|w| {
            let busy: Vec<Value> = running
                .iter()
                .filter(|r| r.0 == w.name)
                .map(|r| json!({"builder": r.1, "build": r.2}))
                .collect();
            let rec = records.iter().find(|r| r.name == w.name);
            json!({
                "name": w.name,
                "connected": conns.contains(&w.name),
                "state": if !conns.contains(&w.name) { "offline" } else if busy.is_empty() { "idle" } else { "busy" },
                "max_builds": w.max_builds,
                "running": busy,
                "in_downtime": crate::master::queue::in_downtime(&w.downtime, now_ms()),
                "last_connected": rec.map(|r| r.last_connected),
                "info": rec.map(|r| r.info.clone()),
            })
        })
        .collect();
    // Removed from the config but still connected: finishing their builds
    // before they are disconnected.
    for name in conns.iter().filter(|n| g.worker(n).is_none()) {
        let busy: Vec<Value> = running
            .iter()
            .filter(|r| &r.0 == name)
            .map(|r| json!({"builder": r.1, "build": r.2}))
            .collect();
        let rec = records.iter().find(|r| &r.name == name);
        v.push(json!({
            "name": name,
            "connected": true,
            "state": "removed",
            "running": busy,
            "last_connected": rec.map(|r| r.last_connected),
            "info": rec.map(|r| r.info.clone()),
        }));
    }
    Ok(Json(json!({ "workers": v })))
}

#[derive(Deserialize)]
struct RequestsQuery {
    builder: Option<String>,
    state: Option<String>,
    buildset: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

async fn requests(State(s): S, Query(q): Query<RequestsQuery>) -> R<Json<Value>> {
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => Some(RequestState::Pending),
        Some("claimed") => Some(RequestState::Claimed),
        Some("complete") => Some(RequestState::Complete),
        Some("cancelled") => Some(RequestState::Cancelled),
        Some(x) => {
            return Err(bad(format!(
                "unknown state `{x}`; one of pending, claimed, complete, cancelled"
            )))
        }
    };
    let f = RequestFilter {
        builder: q.builder,
        buildset: q.buildset,
        state,
    };
    let p = page(q.before, q.limit);
    let v = s.db(move |st| st.requests(&f, p)).await?;
    Ok(Json(json!({ "requests": v })))
}

async fn cancel_request(_: Control, State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
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

async fn cancel_build(_: Control, State(s): S, Path(id): Path<u64>) -> R<Json<Value>> {
    let found = s
        .queue
        .lock()
        .map(|q| {
            q.running
                .values()
                .find(|r| r.build_id == Some(id))
                .map(|r| r.cancel.send(true).is_ok())
                .is_some()
        })
        .unwrap_or(false);
    if !found {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("build {id} is not running"),
        ));
    }
    Ok(Json(json!({"cancelling": id})))
}

#[derive(Deserialize)]
struct PageQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

async fn changes(State(s): S, Query(q): Query<PageQuery>) -> R<Json<Value>> {
    let p = page(q.before, q.limit);
    let v = s.db(move |st| st.changes(p)).await?;
    Ok(Json(json!({ "changes": v })))
}

async fn add_change(
    _: Control,
    State(s): S,
    body: Result<Json<NewChange>, axum::extract::rejection::JsonRejection>,
) -> R<(StatusCode, Json<Value>)> {
    let Json(mut c) = body.map_err(|e| bad(format!("invalid change: {}", e.body_text())))?;
    if c.source.is_empty() {
        c.source = "api".into();
    }
    if c.when == 0 {
        c.when = now_ms();
    }
    let stored = s.add_change(c).await?;
    Ok((StatusCode::CREATED, Json(json!({ "change": stored }))))
}

async fn schedulers(State(s): S) -> Json<Value> {
    let g = s.graph();
    Json(json!({ "schedulers": g.schedulers }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForceBody {
    /// Which force scheduler (needed only when several name the builder).
    scheduler: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    branch: Option<String>,
    revision: Option<String>,
    repository: Option<String>,
}

/// Checks a force request's properties against the scheduler's typed
/// parameters: unknown names, types, choices, required; fills defaults.
fn validate_params(
    params: &[bbc_graph::ForceParam],
    given: &serde_json::Map<String, Value>,
) -> R<Properties> {
    let mut out = Properties::new();
    for k in given.keys() {
        if !params.iter().any(|p| &p.name == k) {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(format!(
                "unknown parameter `{k}`; this scheduler takes: {}",
                names.join(", ")
            )));
        }
    }
    for p in params {
        let v = match given.get(&p.name) {
            None | Some(Value::Null) => match &p.default {
                Some(d) => d.clone(),
                None if p.required => {
                    return Err(bad(format!("parameter `{}` is required", p.name)))
                }
                None => continue,
            },
            Some(v) => {
                let wrong =
                    |want: &str| bad(format!("parameter `{}` must be {want}, got {v}", p.name));
                match p.ty {
                    ParamType::String => {
                        Scalar::String(v.as_str().ok_or_else(|| wrong("a string"))?.to_string())
                    }
                    ParamType::Int => match v {
                        Value::Number(n) => {
                            Scalar::Int(n.as_i64().ok_or_else(|| wrong("an integer"))?)
                        }
                        Value::String(s) => {
                            Scalar::Int(s.trim().parse().map_err(|_| wrong("an integer"))?)
                        }
                        _ => return Err(wrong("an integer")),
                    },
                    ParamType::Bool => match v {
                        Value::Bool(b) => Scalar::Bool(*b),
                        Value::String(s) if s == "true" || s == "false" => {
                            Scalar::Bool(s == "true")
                        }
                        _ => return Err(wrong("a boolean")),
                    },
                    ParamType::Choice => {
                        let s = v.as_str().ok_or_else(|| wrong("a string"))?;
                        if !p.choices.iter().any(|c| c == s) {
                            return Err(bad(format!(
                                "parameter `{}` must be one of {}, got \"{s}\"",
                                p.name,
                                p.choices.join(", ")
                            )));
                        }
                        Scalar::String(s.to_string())
                    }
                }
            }
        };
        if p.required && matches!(&v, Scalar::String(s) if s.is_empty()) {
            return Err(bad(format!("parameter `{}` is required", p.name)));
        }
        out.insert(p.name.clone(), v);
    }
    Ok(out)
}

async fn force(
    _: Control,
    State(s): S,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> R<(StatusCode, Json<Value>)> {
    let body: ForceBody = match body {
        Some(Json(v)) => {
            serde_json::from_value(v).map_err(|e| bad(format!("invalid force request: {e}")))?
        }
        None => ForceBody::default(),
    };
    let g = s.graph();
    if g.builder(&name).is_none() {
        return Err(not_found(format!("no builder named `{name}`")));
    }
    let candidates: Vec<_> = g
        .schedulers
        .iter()
        .filter(|sc| matches!(sc.kind, SchedulerKind::Force { .. }) && sc.builders.contains(&name))
        .filter(|sc| body.scheduler.as_ref().is_none_or(|want| &sc.name == want))
        .collect();
    let sched = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                match &body.scheduler {
                    Some(w) => format!("force scheduler `{w}` does not exist or does not name builder `{name}`"),
                    None => format!("no force scheduler names builder `{name}`; add one to the config to allow forcing it"),
                },
            ))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
            return Err(bad(format!("several force schedulers name `{name}` ({}); say which with \"scheduler\"", names.join(", "))));
        }
    };
    let SchedulerKind::Force { params } = &sched.kind else {
        return Err(bad("not a force scheduler"));
    };
    let props = validate_params(params, &body.properties)?;
    let reason = body
        .reason
        .clone()
        .or_else(|| props.get("reason").map(|r| r.to_string()))
        .unwrap_or_else(|| "forced".into());
    let set = NewBuildSet {
        scheduler: sched.name.clone(),
        reason,
        source: SourceStamp {
            repository: body.repository.unwrap_or_default(),
            branch: body.branch.unwrap_or_default(),
            revision: body.revision.unwrap_or_default(),
        },
        changes: Vec::new(),
        properties: props,
        parent_build: None,
        submitted_at: now_ms(),
    };
    let (bs, reqs) = s.submit(set, vec![name]).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"buildset": bs, "requests": reqs})),
    ))
}

/// The largest graph `POST /api/v1/config` reads (a 10,000-builder graph is
/// about 30 MB). Read only after the token is checked.
const MAX_CONFIG_BODY: usize = 128 << 20;

/// `GET /api/v1/config`: the running graph (plain-text credentials
/// masked), its hash, when and how it was applied, what needs a restart and
/// the history of applied configs.
async fn get_config(State(s): S) -> R<Response> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        hash: &'a str,
        applied_at: crate::store::Millis,
        via: &'a str,
        restart_needed: &'a [String],
        history: &'a [AppliedRecord],
        graph: &'a bbc_graph::Graph,
    }
    let info = s.config_info();
    let history = apply::history(&s).await?;
    // Written straight to bytes (a large graph is megabytes of JSON: no
    // intermediate `Value`), off the async threads.
    let body = tokio::task::spawn_blocking(move || {
        let masked;
        let graph = if apply::has_plain_credentials(&info.graph) {
            let mut g = (*info.graph).clone();
            apply::redact_credentials(&mut g);
            masked = g;
            &masked
        } else {
            &*info.graph
        };
        serde_json::to_vec(&Out {
            hash: &info.hash,
            applied_at: info.applied_at,
            via: &info.via,
            restart_needed: &info.restart_needed,
            history: &history,
            graph,
        })
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The bearer token of a request, if it sent one.
/// `POST /api/v1/config`: applies the graph in the body (`bbc compile`'s
/// format). Admin token required; `If-Match: "HASH"` refuses (412) unless
/// the running config has that hash.
async fn post_config(State(s): S, headers: HeaderMap, body: axum::body::Body) -> Response {
    if let Some(r) = refuse_unless_admin(&s, &headers) {
        return r;
    }
    let bytes = match axum::body::to_bytes(body, MAX_CONFIG_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "cannot read the body (at most {} MiB): {e}",
                    MAX_CONFIG_BODY >> 20
                ),
            )
            .into_response()
        }
    };
    let parsed = tokio::task::spawn_blocking(move || {
        let text =
            std::str::from_utf8(&bytes).map_err(|e| format!("the body is not UTF-8 text: {e}"))?;
        bbc_graph::Graph::from_json(text)
    })
    .await;
    let graph = match parsed {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return bad(e).into_response(),
        Err(e) => {
            return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    };
    let expect = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_string());
    match s.apply(graph, "api", expect.as_deref()).await {
        Ok(report) => Json(json!({ "report": report })).into_response(),
        Err(e) => {
            let status = match &e {
                ApplyError::Invalid(_) | ApplyError::Secrets(_) => StatusCode::BAD_REQUEST,
                ApplyError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
                ApplyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            ApiError(status, e.to_string()).into_response()
        }
    }
}

/// `GET /api/v1/events`: Server-Sent Events, so a page (or a script) learns
/// at once that a build started or finished, a change arrived or a build
/// set was submitted, instead of polling. Each event carries
/// ids to fetch the details with; `lagged` says some were missed (a slow
/// reader) and everything should be read again.
async fn events(
    State(s): S,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let subs = (
        s.reporters.subscribe(),
        s.changes.subscribe(),
        s.buildsets.subscribe(),
    );
    let stream = futures_util::stream::unfold(subs, |(mut b, mut c, mut sets)| async move {
        let (kind, data) = tokio::select! {
            r = b.recv() => match r {
                Ok(e) => ("build", json!({
                    "phase": e.phase.name(),
                    "id": e.build.id,
                    "builder": e.build.build.builder,
                    "number": e.build.number,
                    "result": e.build.result,
                })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
            r = c.recv() => match r {
                Ok(ch) => ("change", json!({
                    "id": ch.id,
                    "branch": ch.change.branch,
                    "revision": ch.change.revision,
                })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
            r = sets.recv() => match r {
                Ok(bs) => ("buildset", json!({ "id": bs.id, "result": bs.result })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
        };
        let ev = Event::default().event(kind).data(data.to_string());
        Some((Ok(ev), (b, c, sets)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
