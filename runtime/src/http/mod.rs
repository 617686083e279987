//! The REST API under `/api/v1` (documented in `docs/api.md`) and the
//! metrics at `/metrics`.
//!
//! Errors are JSON `{"error": {"status": N, "message": "…"}}` with a
//! fitting HTTP status; input from clients is validated like the compiler
//! validates config (force parameters by type, choices, required).

mod audit;
mod badges;
mod builders;
mod builds;
mod changes;
mod charts;
mod config;
mod connections;
mod events;
mod files;
mod health;
mod login;
mod masters;
mod metrics;
mod oauth;
mod origin;
mod rebuild;
mod series;
mod views;
mod workers;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use builders::{builder, builders, force, schedulers, usage};
use builds::{build, builds, cancel_build, cancel_request, log, requests};
use changes::{add_change, change, changes};
use config::{get_config, post_config};
use events::events;
use workers::workers;

pub use crate::api_error::ApiError;
use crate::api_error::{ErrorMessage, LoggedByRoute};
use crate::state::{HttpLimits, Shared};

/// The API's routes, with `extra` ones (the change sources' receivers and
/// listing, which their service defines) and the web UI.
pub fn router(shared: Arc<Shared>, extra: Router<Arc<Shared>>) -> Router {
    Router::new()
        .route("/api/v1", get(index))
        .route("/api/v1/builders", get(builders))
        .route("/api/v1/builders/{name}", get(builder))
        .route("/api/v1/builders/{name}/force", post(force))
        .route("/api/v1/builders/{name}/usage", get(usage))
        .route("/api/v1/builders/{name}/series", get(series::series))
        .route("/api/v1/builders/{name}/charts/{chart}", get(charts::chart))
        .route("/api/v1/builds", get(builds))
        .route("/api/v1/builds/{id}", get(build))
        .route("/api/v1/builds/{id}/cancel", post(cancel_build))
        .route("/api/v1/builds/{id}/rebuild", post(rebuild::rebuild))
        .route("/api/v1/builds/{id}/steps/{step}/log", get(log))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/requests/{id}/cancel", post(cancel_request))
        .route("/api/v1/changes", get(changes).post(add_change))
        .route("/api/v1/changes/{id}", get(change))
        .route("/api/v1/schedulers", get(schedulers))
        .route("/api/v1/views/waterfall", get(views::waterfall))
        .route("/api/v1/views/console", get(views::console))
        .route("/api/v1/views/pending", get(views::pending))
        .route("/badges/{file}", get(badges::builder))
        .route("/badges/tag/{file}", get(badges::tag))
        .route("/files/{*path}", get(files::file))
        .route("/api/v1/events", get(events))
        .route("/api/v1/config", get(get_config).post(post_config))
        .route("/api/v1/masters", get(masters::masters))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/whoami", get(login::whoami))
        .route("/api/v1/login", post(login::login))
        .route("/api/v1/logout", post(login::logout))
        .route("/api/v1/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .merge(oauth::router())
        .merge(extra)
        .merge(crate::web::router())
        .fallback(|| async { ApiError::not_found("no such API endpoint; see docs/api.md") })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            crate::auth::private_reads,
        ))
        // Outside the routes, inside the audit log: a forged request is
        // refused before any handler runs, and the refusal is recorded.
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            crate::auth::csrf::layer,
        ))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            audit::record,
        ))
        .layer(middleware::from_fn(crate::api_error::json_errors))
        .layer(middleware::from_fn(log_server_errors))
        .with_state(shared)
}

/// Logs every 5xx answer, of every route, in this one place: a client
/// that gets one (a force refused by a full disk) may not say, and the
/// operator needs to know.
async fn log_server_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let r = next.run(req).await;
    if r.status().is_server_error() && r.extensions().get::<LoggedByRoute>().is_none() {
        let why = r
            .extensions()
            .get::<ErrorMessage>()
            .map_or("(no message)", |m| m.0.as_str());
        tracing::error!(%method, %path, status = r.status().as_u16(), "{method} {path} answered {}: {why}", r.status());
    }
    r
}

pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    extra: Router<Arc<Shared>>,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    connections::serve(listener, router(shared, extra), limits, tls).await
}

async fn index(State(s): State<Arc<Shared>>) -> Json<Value> {
    let g = s.graph();
    Json(
        json!({"title": g.master.title, "url": g.master.url, "version": env!("CARGO_PKG_VERSION")}),
    )
}
