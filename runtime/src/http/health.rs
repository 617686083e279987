//! `GET /api/v1/health`: whether the master can do its work, for monitors
//! and the web UI's banner. Today that is whether the store can write
//! (`Store::health`, cheap while it can; a full disk makes it fail).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api_error::LoggedByRoute;
use crate::state::Shared;

pub(super) async fn health(State(s): State<Arc<Shared>>) -> Response {
    let r = s.db(|st| st.health()).await;
    // Logged when the failure starts, changes or ends: a monitor or an
    // open web page asks every few seconds.
    if let Ok(mut last) = s.health_logged.lock() {
        match &r {
            Err(e) => {
                let reason = e.to_string();
                if last.as_deref() != Some(reason.as_str()) {
                    tracing::error!(
                        "GET /api/v1/health answers 503: the store is failing: {reason}"
                    );
                    *last = Some(reason);
                }
            }
            Ok(()) => {
                if last.take().is_some() {
                    tracing::info!("GET /api/v1/health answers 200 again: the store can write");
                }
            }
        }
    }
    match r {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "failing", "store": e.to_string()})),
            )
                .into_response();
            r.extensions_mut().insert(LoggedByRoute);
            r
        }
    }
}
