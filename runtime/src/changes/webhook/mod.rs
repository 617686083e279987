//! Webhook receivers: `POST /change_hook/{name}` for the GitHub, GitLab,
//! Gitea, Bitbucket (Cloud and Server) and generic JSON change sources (`docs/changes.md`); the JSON
//! kind also takes Buildbot's form-encoded base hook (`base`).
//!
//! A delivery is authenticated before its body is parsed: when the source
//! has a secret, a missing signature is 401 and a wrong one 403, and
//! nothing is stored. Payloads are read as untyped JSON and every field
//! used is looked up by path, so a malformed delivery gets a 400 naming the
//! field instead of a panic or a generic decode error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bbc_graph::{ChangeSource, ChangeSourceKind};
use serde_json::{json, Value};

use crate::api_error::ApiError;
// Named here as well: the integration tests sign deliveries with it.
pub use crate::auth::hmac_sha256_hex;
use crate::state::metrics::WebhookResult;
use crate::state::{now_ms, Shared};

use crate::api_error::ApiResult as R;

mod base;
mod bitbucket;
mod github;
mod gitlab;
mod json;
mod payload;
mod signature;

// Named here as well: the fuzz target `base_hook` feeds them.
pub use base::{base_change, is_form};
pub use bitbucket::{bitbucket_cloud, bitbucket_server};
pub use github::{gitea, github};
pub use gitlab::gitlab;
pub use json::{json_changes, MAX_JSON_CHANGES};
pub use payload::Outcome;
use signature::{header, verify, Auth};

// --- the route

fn event_header(headers: &HeaderMap, names: &[&str]) -> R<String> {
    for n in names {
        if let Some(v) = header(headers, n) {
            if !v.is_empty() {
                return Ok(v.to_string());
            }
        }
    }
    let first = names.first().copied().unwrap_or("event");
    Err(ApiError::bad(format!("missing header {first}")))
}

/// The body as JSON, whatever the content type says (`curl -d` labels
/// JSON as a form); a real form delivery gets a hint about the setting.
fn parse_json(headers: &HeaderMap, body: &[u8]) -> R<Value> {
    serde_json::from_slice(body).map_err(|e| {
        let form = header(headers, "content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form && body.starts_with(b"payload=") {
            ApiError::bad(
                "form-encoded deliveries are not supported: set the webhook's content type to application/json",
            )
        } else {
            ApiError::bad(format!("invalid JSON: {e}"))
        }
    })
}

/// `POST /change_hook/{name}`. Deliveries to a configured source are
/// counted by how they were answered (`bbc_webhook_deliveries_total`);
/// those to a name the config lacks are not, so that no client can make
/// up label values.
pub(crate) async fn receive(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> R<(StatusCode, Json<Value>)> {
    let src = super::source::find_source(&s, &name)?;
    let r = deliver(&s, &src, &name, &headers, body).await;
    let status = match &r {
        Ok((st, _)) => *st,
        Err(e) => e.0,
    };
    s.metrics
        .webhook(&name, WebhookResult::of_status(status.as_u16()));
    r
}

async fn deliver(
    s: &Arc<Shared>,
    src: &ChangeSource,
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> R<(StatusCode, Json<Value>)> {
    // Too large or unreadable: answered in the API's error shape too.
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let (secret, auth) = match &src.kind {
        ChangeSourceKind::GithubWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-Hub-Signature-256"],
                prefix: "sha256=",
            },
        ),
        ChangeSourceKind::GiteaWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-Gitea-Signature", "X-Forgejo-Signature"],
                prefix: "",
            },
        ),
        ChangeSourceKind::GitlabWebhook { secret } => (
            secret,
            Auth::Token {
                header: "X-Gitlab-Token",
            },
        ),
        // Both Bitbucket flavours sign as GitHub's older header did.
        ChangeSourceKind::BitbucketCloudWebhook { secret }
        | ChangeSourceKind::BitbucketServerWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-Hub-Signature"],
                prefix: "sha256=",
            },
        ),
        ChangeSourceKind::JsonWebhook { secret } => (
            secret,
            Auth::BasicOrHmac {
                headers: &["X-BBC-Signature-256"],
                prefix: "sha256=",
            },
        ),
        ChangeSourceKind::GitPoller { .. } => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("change source `{name}` is a git poller, not a webhook"),
            ))
        }
    };
    if let Some(cred) = secret {
        // Fail closed: a secret the master could not resolve accepts nothing.
        let secrets = s.secrets();
        let Some(value) = secrets.get(cred) else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the secret of change source `{name}` is not available to the master"),
            ));
        };
        if let Err(e) = verify(&auth, value, headers, &body) {
            tracing::warn!(source = %name, "webhook delivery refused: {}", e.1);
            return Err(e);
        }
    }
    let outcome = match &src.kind {
        ChangeSourceKind::GithubWebhook { .. } => {
            let ev = event_header(headers, &["X-GitHub-Event"])?;
            github(&ev, &parse_json(headers, &body)?)?
        }
        ChangeSourceKind::GiteaWebhook { .. } => {
            let ev = event_header(headers, &["X-Gitea-Event", "X-Forgejo-Event"])?;
            gitea(&ev, &parse_json(headers, &body)?)?
        }
        ChangeSourceKind::GitlabWebhook { .. } => {
            let ev = event_header(headers, &["X-Gitlab-Event"])?;
            gitlab(&ev, &parse_json(headers, &body)?)?
        }
        ChangeSourceKind::BitbucketCloudWebhook { .. } => {
            let ev = event_header(headers, &["X-Event-Key"])?;
            bitbucket_cloud(&ev, &parse_json(headers, &body)?)?
        }
        ChangeSourceKind::BitbucketServerWebhook { .. } => {
            let ev = event_header(headers, &["X-Event-Key"])?;
            bitbucket_server(&ev, &parse_json(headers, &body)?)?
        }
        // Buildbot's base hook posts a form; anything else is JSON.
        _ if base::is_form(header(headers, "content-type"), &body) => base::base_change(&body)?,
        _ => json_changes(&parse_json(headers, &body)?)?,
    };
    match outcome {
        Outcome::Changes(changes) => {
            let mut ids = Vec::new();
            for mut c in changes {
                c.source = name.to_string();
                // The source's codebase, unless the delivery named one.
                if c.codebase.is_empty() {
                    c.codebase = src.codebase.clone();
                }
                if c.when == 0 {
                    c.when = now_ms();
                }
                ids.push(s.add_change(c).await?.id);
            }
            tracing::info!(source = %name, "webhook delivery: {} change(s)", ids.len());
            Ok((
                StatusCode::CREATED,
                Json(json!({"source": name, "changes": ids})),
            ))
        }
        Outcome::Nothing(why) => Ok((
            StatusCode::OK,
            Json(json!({"source": name, "changes": [], "ignored": why})),
        )),
        Outcome::Ignored(why) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"source": name, "changes": [], "ignored": why})),
        )),
    }
}

#[cfg(test)]
mod tests;
