//! `GET /metrics`: the master's metrics in the Prometheus text format
//! (version 0.0.4), for a Prometheus server to scrape (`docs/operations.md`
//! lists them).
//!
//! Open, like the `GET /api/v1` routes: counts and durations by builder,
//! worker, reporter and change-source names, which any API client reads
//! already, and never a secret. A master exposed beyond a trusted network
//! puts its HTTP port behind a proxy for both.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api_error::ApiError;
use crate::state::metrics::CONTENT_TYPE;
use crate::state::Shared;

pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match s.metrics_text().await {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        // Writing into a String fails only if a metric's encoder does.
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )
        .into_response(),
    }
}
