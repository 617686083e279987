//! Change sources: git pollers and webhook receivers. Every change goes
//! through `Shared::add_change`, which stores it before any scheduler sees it.
//!
//! Routes (merged into the API router, documented in `docs/changes.md`):
//!
//! - `POST /change_hook/{name}`: a webhook delivery for a webhook source;
//! - `GET /api/v1/change_sources` and `GET /api/v1/change_sources/{name}`:
//!   the configured sources, with each poller's last poll and error;
//! - `POST /api/v1/change_sources/{name}/poll`: polls a git poller now and
//!   answers with the changes it found (admins and tests use it instead of
//!   waiting for the poll interval).

pub mod poller;
mod source;
pub mod webhook;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bbc_graph::{ChangeSource, ChangeSourceKind};
use serde_json::{json, Value};

use source::{find_source, kind_name};

use crate::api_error::ApiError;
use crate::state::Shared;

/// Forges send at most a few MiB (GitHub caps deliveries at 25 MB, but a
/// push lists at most 20 commits); anything larger is refused before it is
/// buffered, so a client cannot make the master hold huge bodies.
const MAX_BODY: usize = 16 << 20;

/// Routes for the change sources: webhook receivers, the source listing and
/// the poll trigger. `pollers` is the registry the poller task keeps.
pub fn router(pollers: Arc<poller::Pollers>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/change_hook/{name}", post(webhook::receive))
        .route("/api/v1/change_sources", get(list))
        .route("/api/v1/change_sources/{name}", get(show))
        .route("/api/v1/change_sources/{name}/poll", post(poller::poll_now))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(Extension(pollers))
}

/// What the API shows of a source. Secrets are never shown, not even a
/// plain-text one: only whether deliveries must be signed.
fn describe(pollers: &poller::Pollers, c: &ChangeSource) -> Value {
    let mut v = json!({"name": c.name, "kind": kind_name(&c.kind), "hash": c.hash});
    let o = match v.as_object_mut() {
        Some(o) => o,
        None => return v,
    };
    match &c.kind {
        ChangeSourceKind::GitPoller {
            repo,
            branches,
            poll_interval_ms,
            only_tags,
        } => {
            o.insert("repo".into(), json!(repo));
            o.insert("branches".into(), json!(branches));
            o.insert("poll_interval_ms".into(), json!(poll_interval_ms));
            o.insert("only_tags".into(), json!(only_tags));
            o.insert("status".into(), poller::status_json(pollers, &c.name));
        }
        ChangeSourceKind::GithubWebhook { secret }
        | ChangeSourceKind::GitlabWebhook { secret }
        | ChangeSourceKind::GiteaWebhook { secret }
        | ChangeSourceKind::BitbucketCloudWebhook { secret }
        | ChangeSourceKind::BitbucketServerWebhook { secret }
        | ChangeSourceKind::JsonWebhook { secret } => {
            o.insert("hook".into(), json!(format!("/change_hook/{}", c.name)));
            o.insert("signed".into(), json!(secret.is_some()));
        }
    }
    v
}

async fn list(
    State(s): State<Arc<Shared>>,
    Extension(pollers): Extension<Arc<poller::Pollers>>,
) -> Json<Value> {
    let g = s.graph();
    let v: Vec<Value> = g
        .change_sources
        .iter()
        .map(|c| describe(&pollers, c))
        .collect();
    Json(json!({ "change_sources": v }))
}

async fn show(
    State(s): State<Arc<Shared>>,
    Extension(pollers): Extension<Arc<poller::Pollers>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = find_source(&s, &name)?;
    let mut v = describe(&pollers, &c);
    if matches!(c.kind, ChangeSourceKind::GitPoller { .. }) {
        // What the poller last saw (null before its first poll): which
        // branches it tracks and where it will report from.
        let heads = poller::stored_heads(&s, &name).await?;
        if let Some(o) = v.as_object_mut() {
            o.insert("heads".into(), json!(heads));
        }
    }
    Ok(Json(json!({ "change_source": v })))
}
