//! The audit log: every mutating request of the API (force, cancel,
//! rebuild, changes, poll, config), who sent it, from where and what it was
//! answered, recorded in the store; `GET /api/v1/audit` reads it (admins).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::builds::page;
use crate::api_error::ApiError;
use crate::auth::{self, identify};
use crate::state::{now_ms, Shared};
use crate::store::NewAuditEntry;

/// Records each request that may change something: every method but
/// GET, HEAD and OPTIONS under `/api/v1/` (the webhooks, under
/// `/change_hook/`, are signed and recorded as changes). Requests refused
/// with 403 (an identified caller without the grant) are recorded too:
/// they are what an audit looks for. 401s are not: an unidentified client
/// changed nothing, and recording its every request would let anyone
/// fill the state disk with durable writes. The caller is named, never
/// its token.
pub(super) async fn record(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || !req.uri().path().starts_with("/api/v1/")
        // The login records its own entries: the user it was for (the
        // request identifies no one yet), successes and failures alike.
        || req.uri().path() == crate::auth::csrf::LOGIN_PATH
    {
        return next.run(req).await;
    }
    let who = {
        let (g, secrets) = (s.graph(), s.secrets());
        match identify(&g, &secrets, &s.sessions, req.headers()) {
            Ok(c) => c.name().to_string(),
            Err(_) => "wrong-token".to_string(),
        }
    };
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let (builder, build) = target(&path);
    let r = next.run(req).await;
    if r.status() == axum::http::StatusCode::UNAUTHORIZED {
        return r;
    }
    let entry = NewAuditEntry {
        who,
        method,
        path,
        builder,
        build,
        peer,
        status: r.status().as_u16(),
    };
    // Awaited, so an action's entry is readable once its answer is; a
    // failed write does not undo the action, but is said.
    let (m, p) = (entry.method.clone(), entry.path.clone());
    if let Err(e) = s.db(move |st| st.add_audit(entry, now_ms())).await {
        tracing::warn!("the audit log could not record {m} {p}: {e}");
    }
    r
}

/// The builder or build a path names.
fn target(path: &str) -> (Option<String>, Option<u64>) {
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    match parts.as_slice() {
        ["builders", name, "force"] => (Some(percent_decode(name)), None),
        ["builds", id, "cancel" | "rebuild"] => (None, id.parse().ok()),
        _ => (None, None),
    }
}

/// Builder names may hold characters a client escapes in the path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit?limit=N&before=ID`: newest first; admins only.
pub(super) async fn audit(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Err(e) = auth::admin(&s, &headers, "reading the audit log") {
        return e.into_response();
    }
    let p = match page(q.before, q.limit) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match s.db(move |st| st.audit(p)).await {
        Ok(v) => Json(json!({ "audit": v })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn target_names_the_builder_or_build() {
        use super::target;
        assert_eq!(
            target("/api/v1/builders/core%20linux/force"),
            (Some("core linux".into()), None)
        );
        assert_eq!(target("/api/v1/builds/12/cancel"), (None, Some(12)));
        assert_eq!(target("/api/v1/builds/x/cancel"), (None, None));
        assert_eq!(target("/api/v1/builds/7/rebuild"), (None, Some(7)));
        assert_eq!(target("/api/v1/changes"), (None, None));
        assert_eq!(
            target("/api/v1/builders/%zz/force").0.as_deref(),
            Some("%zz")
        );
    }
}
