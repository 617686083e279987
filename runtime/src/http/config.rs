//! The running config: reading it (credentials masked) with its
//! history, and applying a new one (admin token).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api_error::{ApiError, ApiResult as R};
use crate::auth;
use crate::master::apply::{self, ApplyError};
use crate::state::config::AppliedRecord;
use crate::state::Shared;

type S = State<Arc<Shared>>;

/// The largest graph `POST /api/v1/config` reads (a 10,000-builder graph is
/// about 30 MB). Read only after the token is checked.
pub(super) const MAX_CONFIG_BODY: usize = 128 << 20;

/// `GET /api/v1/config`: the running graph (plain-text credentials
/// masked), its hash, when and how it was applied, what needs a restart and
/// the history of applied configs.
pub(super) async fn get_config(State(s): S) -> R<Response> {
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
pub(super) async fn post_config(
    State(s): S,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let _caller = match auth::admin(&s, &headers, "applying a config") {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
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
        Ok(Err(e)) => return ApiError::bad(e).into_response(),
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
