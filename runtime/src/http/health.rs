//! `GET /api/v1/health`: whether the master can do its work, for monitors
//! and the web UI's banner. Today that is whether the store can write
//! (`Store::health`, cheap while it can; a full disk makes it fail).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api_error::ErrorMessage;
use crate::state::Shared;

pub(super) async fn health(State(s): State<Arc<Shared>>) -> Response {
    match s.db(|st| st.health()).await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            let reason = e.to_string();
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "failing", "store": reason})),
            )
                .into_response();
            r.extensions_mut()
                .insert(ErrorMessage(format!("the store is failing: {reason}")));
            r
        }
    }
}
