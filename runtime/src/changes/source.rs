//! Looking up a configured change source by name, and naming its kind, for
//! every route of the change sources.

use axum::http::StatusCode;
use bbc_graph::{ChangeSource, ChangeSourceKind};

use crate::api_error::ApiError;
use crate::state::Shared;

/// The source `name` of the running config, or a 404 naming it.
pub(crate) fn find_source(shared: &Shared, name: &str) -> Result<ChangeSource, ApiError> {
    shared
        .graph()
        .change_sources
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no change source named `{name}`"),
            )
        })
}

pub(crate) fn kind_name(k: &ChangeSourceKind) -> &'static str {
    match k {
        ChangeSourceKind::GitPoller { .. } => "git-poller",
        ChangeSourceKind::GithubWebhook { .. } => "github-webhook",
        ChangeSourceKind::GitlabWebhook { .. } => "gitlab-webhook",
        ChangeSourceKind::GiteaWebhook { .. } => "gitea-webhook",
        ChangeSourceKind::BitbucketCloudWebhook { .. } => "bitbucket-cloud-webhook",
        ChangeSourceKind::BitbucketServerWebhook { .. } => "bitbucket-server-webhook",
        ChangeSourceKind::JsonWebhook { .. } => "json-webhook",
    }
}
