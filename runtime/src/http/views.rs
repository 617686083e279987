//! What the web UI's overview pages need, one request each (docs/api.md,
//! "Views"): the waterfall (each builder's recent builds), the console
//! and grid (recent changes with the builds that included them) and the
//! pending requests. Every scan is bounded, whatever the store holds: a
//! page of builds per builder through the by-builder index, a page of
//! changes, and the change → builds search of [`super::origin::builds_of`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use bbc_graph::{Builder, Graph};
use serde::Deserialize;
use serde_json::{json, Value};

use super::origin::builds_of;
use crate::api_error::{ApiError, ApiResult as R};
use crate::change_json::link;
use crate::state::{now_ms, Shared};
use crate::store::{Build, BuildFilter, Change, Page};

type S = State<Arc<Shared>>;

/// The most builds per builder (waterfall) or changes (console) a view
/// answers with: the pages show a screenful, and the bound keeps each
/// answer's work fixed on a master with a long history.
const MAX_ROWS: usize = 200;

/// How many changes the console reads at most to find `limit` on a branch.
const CHANGE_SCAN: usize = 2000;

fn rows(limit: Option<usize>, default: usize) -> R<usize> {
    match limit.unwrap_or(default) {
        n @ 1..=MAX_ROWS => Ok(n),
        n => Err(ApiError::bad(format!(
            "limit={n} is out of range: a view shows 1 to {MAX_ROWS} rows"
        ))),
    }
}

/// The builders a view shows: all, or those carrying `tag`.
fn builders_of<'g>(g: &'g Graph, tag: Option<&str>) -> Vec<&'g Builder> {
    g.builders
        .iter()
        .filter(|b| tag.is_none_or(|t| b.tags.iter().any(|x| x == t)))
        .collect()
}

/// A build as the overview pages draw it: no steps, no origin.
fn cell(b: &Build) -> Value {
    json!({
        "id": b.id,
        "builder": b.build.builder,
        "number": b.number,
        "worker": b.build.worker,
        "started_at": b.build.started_at,
        "finished_at": b.finished_at,
        "result": b.result,
        "state_string": b.state_string,
        "complete": b.finished_at.is_some(),
    })
}

#[derive(Deserialize)]
pub(super) struct WaterfallQuery {
    limit: Option<usize>,
    tag: Option<String>,
}

/// `GET /api/v1/views/waterfall[?limit=N][&tag=T]`: each builder's newest
/// `limit` builds (default 20), newest first, with how many of its builds
/// run and wait now. One page of the by-builder index per builder.
pub(super) async fn waterfall(State(s): S, Query(q): Query<WaterfallQuery>) -> R<Json<Value>> {
    let limit = rows(q.limit, 20)?;
    let g = s.graph();
    let shown = builders_of(&g, q.tag.as_deref());
    let names: Vec<String> = shown.iter().map(|b| b.name.clone()).collect();
    let builds = s
        .db(move |st| {
            names
                .iter()
                .map(|n| {
                    let f = BuildFilter {
                        builder: Some(n.clone()),
                        ..BuildFilter::default()
                    };
                    st.builds(
                        &f,
                        Page {
                            before: None,
                            limit,
                        },
                    )
                })
                .collect::<crate::store::Result<Vec<_>>>()
        })
        .await?;
    let (mut running, mut pending) = (HashMap::new(), HashMap::new());
    if let Ok(queue) = s.queue.lock() {
        for r in queue.running() {
            *running.entry(r.builder.clone()).or_insert(0usize) += 1;
        }
        for e in queue.pending() {
            *pending.entry(e.req.builder.clone()).or_insert(0usize) += 1;
        }
    }
    let v: Vec<Value> = shown
        .iter()
        .zip(builds)
        .map(|(b, list)| {
            json!({
                "name": b.name,
                "description": b.description,
                "tags": b.tags,
                "running": running.get(&b.name).copied().unwrap_or(0),
                "pending": pending.get(&b.name).copied().unwrap_or(0),
                "builds": list.iter().map(cell).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({"now": now_ms(), "builders": v})))
}

#[derive(Deserialize)]
pub(super) struct ConsoleQuery {
    limit: Option<usize>,
    branch: Option<String>,
    tag: Option<String>,
}

/// `GET /api/v1/views/console[?limit=N][&branch=B][&tag=T]`: the newest
/// `limit` changes (default 20; on `branch` only, looked for among the
/// newest 2000), each with its author, message and the builds that
/// included it (of the builders carrying `tag`), and the builders to draw
/// as columns. The grid draws the same answer transposed.
pub(super) async fn console(State(s): S, Query(q): Query<ConsoleQuery>) -> R<Json<Value>> {
    let limit = rows(q.limit, 20)?;
    let g = s.graph();
    let shown = builders_of(&g, q.tag.as_deref());
    let names: HashSet<String> = shown.iter().map(|b| b.name.clone()).collect();
    let branch = q.branch.filter(|b| !b.is_empty());
    let (changes, found, complete, branches) = s
        .db(move |st| {
            let mut picked: Vec<Change> = Vec::new();
            let mut branches: Vec<String> = Vec::new();
            let mut before = None;
            let mut scanned = 0;
            while picked.len() < limit && scanned < CHANGE_SCAN {
                let page = st.changes(Page { before, limit: 200 })?;
                let Some(last) = page.last() else { break };
                before = Some(last.id);
                for c in page {
                    scanned += 1;
                    if !branches.contains(&c.change.branch) && branches.len() < 100 {
                        branches.push(c.change.branch.clone());
                    }
                    let on = branch.as_ref().is_none_or(|b| *b == c.change.branch);
                    if on && picked.len() < limit {
                        picked.push(c);
                    }
                }
            }
            let refs: Vec<&Change> = picked.iter().collect();
            let (found, complete) = builds_of(st, &refs)?;
            Ok((picked, found, complete, branches))
        })
        .await?;
    let rows: Vec<Value> = changes
        .iter()
        .map(|c| {
            let builds: Vec<&Value> = found
                .get(&c.id)
                .into_iter()
                .flatten()
                .filter(|b| {
                    b.get("builder")
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.contains(n))
                })
                .collect();
            json!({
                "id": c.id,
                "author": c.change.author,
                "revision": c.change.revision,
                "branch": c.change.branch,
                "repository": c.change.repository,
                "comments": c.change.comments,
                "when": c.change.when,
                "received_at": c.received_at,
                "link": link(c),
                "builds": builds,
            })
        })
        .collect();
    let builders: Vec<Value> = shown
        .iter()
        .map(|b| json!({"name": b.name, "tags": b.tags}))
        .collect();
    let mut tags: Vec<&str> = g
        .builders
        .iter()
        .flat_map(|b| b.tags.iter().map(String::as_str))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    Ok(Json(json!({
        "builders": builders,
        "changes": rows,
        "branches": branches,
        "tags": tags,
        "complete": complete,
    })))
}

/// `GET /api/v1/views/pending`: the requests waiting for a worker, in
/// the queue's order, with what their build set says (reason, scheduler,
/// source). Read from the queue in memory: no store trip.
pub(super) async fn pending(State(s): S) -> R<Json<Value>> {
    let list: Vec<Value> = match s.queue.lock() {
        Ok(q) => q
            .pending_in_order(1000)
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.req.id,
                    "builder": e.req.builder,
                    "priority": e.req.priority,
                    "request_priority": e.req.request_priority,
                    "submitted_at": e.req.submitted_at,
                    "buildset": e.set.id,
                    "scheduler": e.set.set.scheduler,
                    "reason": e.set.set.reason,
                    "branch": e.set.set.source.branch,
                    "revision": e.set.set.source.revision,
                    "changes": e.set.set.changes.len(),
                })
            })
            .collect(),
        Err(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the queue's lock is poisoned",
            ))
        }
    };
    Ok(Json(json!({"now": now_ms(), "requests": list})))
}
