//! Builders: listing (with each one's newest build), forcing a build
//! with validated parameters, and the schedulers.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bbc_graph::{ParamType, Scalar, SchedulerKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::builds::build_json;
use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{Control, Scope};
use crate::state::{now_ms, Shared};
use crate::store::{BuildFilter, NewBuildSet, Properties, SourceStamp};
use bbc_graph::Grant;

type S = State<Arc<Shared>>;

#[derive(Deserialize)]
pub(super) struct BuildersQuery {
    last_build: Option<bool>,
}

/// `GET /api/v1/builders[?last_build=true]`: with `last_build`, each
/// builder also carries its newest build (or null) and how many of its
/// builds are running — what an overview page needs, in one request and
/// one store trip (the by-builder index gives each newest build directly).
pub(super) async fn builders(State(s): S, Query(q): Query<BuildersQuery>) -> R<Json<Value>> {
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
                let mut sets = super::origin::Sets::default();
                names
                    .iter()
                    .map(|n| {
                        let f = BuildFilter {
                            builder: Some(n.clone()),
                            ..BuildFilter::default()
                        };
                        let newest = crate::store::Page {
                            before: None,
                            limit: 1,
                        };
                        match st.builds(&f, newest)?.pop() {
                            Some(b) => {
                                let o = super::origin::origin(st, &mut sets, &b)?;
                                Ok(Some((b, o)))
                            }
                            None => Ok(None),
                        }
                    })
                    .collect::<crate::store::Result<Vec<_>>>()
            })
            .await?;
        let mut running: std::collections::HashMap<String, usize> = Default::default();
        if let Ok(queue) = s.queue.lock() {
            for r in queue.running() {
                *running.entry(r.builder.clone()).or_default() += 1;
            }
        }
        for ((o, b), l) in v.iter_mut().zip(&g.builders).zip(last) {
            if let Some(o) = o.as_object_mut() {
                o.insert(
                    "last_build".into(),
                    l.map_or(Value::Null, |(b, origin)| build_json(&b, None, origin)),
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

pub(super) async fn builder(State(s): S, Path(name): Path<String>) -> R<Json<Value>> {
    let g = s.graph();
    let b = g
        .builder(&name)
        .ok_or_else(|| ApiError::not_found(format!("no builder named `{name}`")))?;
    Ok(Json(json!({"builder": b})))
}

/// The disk a builder's stored builds take (docs/api.md): counted when
/// asked, on a blocking thread, from the builder's index and its builds'
/// log directories.
pub(super) async fn usage(State(s): S, Path(name): Path<String>) -> R<Json<Value>> {
    let g = s.graph();
    let key = name.clone();
    let u = s.db(move |st| st.builder_usage(&key)).await?;
    // A builder the config dropped still has its builds until retention
    // deletes them.
    if u.builds == 0 && g.builder(&name).is_none() {
        return Err(ApiError::not_found(format!("no builder named `{name}`")));
    }
    Ok(Json(json!({
        "builder": name,
        "builds": u.builds,
        "logs": u.logs,
        "log_bytes": u.log_bytes,
        "log_bytes_stored": u.log_bytes_stored,
        "retention": g.master.retention,
    })))
}

/// The configured schedulers, each with its timers as the scheduler task
/// last computed them (`timer`: next firing, last slot, changes waiting;
/// null before the task first looked at it).
pub(super) async fn schedulers(State(s): S) -> Json<Value> {
    let g = s.graph();
    let timers = s
        .scheduler_timers
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    let list: Vec<Value> = g
        .schedulers
        .iter()
        .map(|sc| {
            let mut v = serde_json::to_value(sc).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("timer".into(), json!(timers.get(&sc.name)));
            }
            v
        })
        .collect();
    Json(json!({ "schedulers": list }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ForceBody {
    /// Which force scheduler (needed only when several name the builder).
    scheduler: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    properties: serde_json::Map<String, Value>,
    branch: Option<String>,
    revision: Option<String>,
    repository: Option<String>,
    /// The request's priority (higher starts first); the force
    /// scheduler's `priority` when absent.
    priority: Option<i64>,
}

/// The range of a request priority, as the compiler takes a scheduler's
/// or builder's `priority`.
const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1_000_000..=1_000_000;

/// Checks a force request's properties against the scheduler's typed
/// parameters: unknown names, types, choices, required; fills defaults.
pub(super) fn validate_params(
    params: &[bbc_graph::ForceParam],
    given: &serde_json::Map<String, Value>,
) -> R<Properties> {
    let mut out = Properties::new();
    for k in given.keys() {
        if !params.iter().any(|p| &p.name == k) {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            return Err(ApiError::bad(format!(
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
                    return Err(ApiError::bad(format!("parameter `{}` is required", p.name)))
                }
                None => continue,
            },
            Some(v) => {
                let wrong = |want: &str| {
                    ApiError::bad(format!("parameter `{}` must be {want}, got {v}", p.name))
                };
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
                            return Err(ApiError::bad(format!(
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
            return Err(ApiError::bad(format!("parameter `{}` is required", p.name)));
        }
        out.insert(p.name.clone(), v);
    }
    Ok(out)
}

pub(super) async fn force(
    ctl: Control,
    State(s): S,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> R<(StatusCode, Json<Value>)> {
    ctl.allow(&s, Grant::Force, Scope::Builder(&name))?;
    let body: ForceBody = match body {
        Some(Json(v)) => serde_json::from_value(v)
            .map_err(|e| ApiError::bad(format!("invalid force request: {e}")))?,
        None => ForceBody::default(),
    };
    let g = s.graph();
    if g.builder(&name).is_none() {
        return Err(ApiError::not_found(format!("no builder named `{name}`")));
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
            return Err(ApiError::bad(format!("several force schedulers name `{name}` ({}); say which with \"scheduler\"", names.join(", "))));
        }
    };
    let SchedulerKind::Force { params } = &sched.kind else {
        return Err(ApiError::bad("not a force scheduler"));
    };
    let props = validate_params(params, &body.properties)?;
    let priority = body.priority.unwrap_or(sched.priority);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(ApiError::bad(format!(
            "invalid force request: priority {priority} is out of range ({} to {})",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        )));
    }
    let reason = body
        .reason
        .clone()
        .or_else(|| props.get("reason").map(|r| r.to_string()))
        .unwrap_or_else(|| "forced".into());
    let set = NewBuildSet {
        priority,
        scheduler: sched.name.clone(),
        reason,
        source: SourceStamp {
            codebase: String::new(),
            repository: body.repository.unwrap_or_default(),
            branch: body.branch.unwrap_or_default(),
            revision: body.revision.unwrap_or_default(),
        },
        sources: Vec::new(),
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
