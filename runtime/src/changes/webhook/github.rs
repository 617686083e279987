//! GitHub and Gitea deliveries (Gitea's payloads follow GitHub's):
//! pushes and pull requests.

use serde_json::Value;

use super::payload::*;
use crate::api_error::{ApiError, ApiResult as R};
use crate::store::NewChange;

/// A GitHub or Gitea push: one change per listed commit; a push listing
/// none (a new branch or a tag at an existing commit) is one change for
/// `head_commit`, or for `after`.
fn github_like_push(v: &Value, repo_paths: &[&str]) -> R<Outcome> {
    let (r, ctx, after) = push_head(v, repo_paths, "repository.full_name")?;
    if at(v, "deleted").and_then(Value::as_bool) == Some(true) || is_zero_sha(&after) {
        return Ok(Outcome::Nothing(format!("`{r}` was deleted")));
    }
    let mut changes = listed_commits(v)?;
    if changes.is_empty() {
        if let Some(head) = object_at(v, "head_commit") {
            changes.push(commit_change(head, "head_commit")?);
        } else if !after.is_empty() {
            changes.push(NewChange {
                revision: after,
                author: person(&opt_str(v, "pusher.name"), &opt_str(v, "pusher.email")),
                ..NewChange::default()
            });
        } else {
            return Ok(Outcome::Nothing(format!(
                "the push to `{r}` lists no commit"
            )));
        }
    }
    Ok(finish_push(&ctx, changes))
}

/// A GitHub or Gitea pull request: one change for its head commit, with
/// the pull request's number, title, author, labels and target branch as
/// properties.
fn github_like_pr(v: &Value, accepted: &[&str]) -> R<Outcome> {
    let action = req_str(v, "", "action")?;
    if action == "closed" {
        return Ok(Outcome::Nothing("the pull request was closed".into()));
    }
    if !accepted.contains(&action.as_str()) {
        return Ok(Outcome::Nothing(format!(
            "pull request action `{action}` does not change what to build"
        )));
    }
    let pr = object_at(v, "pull_request")
        .ok_or_else(|| ApiError::bad("missing object `pull_request`"))?;
    let number = match at(v, "number") {
        Some(_) => req_int(v, "", "number")?,
        None => req_int(pr, "pull_request", "number")?,
    };
    let revision = req_str(pr, "pull_request", "head.sha")?;
    let branch = req_str(pr, "pull_request", "head.ref")?;
    let target = req_str(pr, "pull_request", "base.ref")?;
    let repository = first_str(
        v,
        &[
            "repository.clone_url",
            "repository.html_url",
            "pull_request.base.repo.clone_url",
        ],
    )?;
    let title = opt_str(pr, "title");
    let body = opt_str(pr, "body");
    let login = opt_str(pr, "user.login");
    let p = PullRequest {
        number,
        title: &title,
        author: &login,
        labels: names_of(pr, "labels", "name").join(","),
        target,
        action: &action,
        head_repository: opt_str(pr, "head.repo.clone_url"),
        url: opt_str(pr, "html_url"),
    }
    .properties();
    Ok(Outcome::Changes(vec![NewChange {
        repository,
        branch,
        revision,
        author: login,
        comments: if body.is_empty() {
            title
        } else {
            format!("{title}\n\n{body}")
        },
        project: opt_str(v, "repository.full_name"),
        when: timestamp(pr, "updated_at"),
        properties: p,
        ..NewChange::default()
    }]))
}

pub fn github(event: &str, v: &Value) -> R<Outcome> {
    match event {
        "ping" => Ok(Outcome::Nothing("ping".into())),
        "push" => github_like_push(v, &["repository.clone_url", "repository.html_url"]),
        "pull_request" => github_like_pr(
            v,
            &["opened", "synchronize", "reopened", "labeled", "edited"],
        ),
        other => Ok(Outcome::Ignored(format!(
            "GitHub event `{other}` is not handled"
        ))),
    }
}

pub fn gitea(event: &str, v: &Value) -> R<Outcome> {
    match event {
        "push" => github_like_push(v, &["repository.clone_url", "repository.html_url"]),
        // Gitea reports label and push updates of a pull request under
        // these names too (its X-Gitea-Event-Type is more specific).
        "pull_request" | "pull_request_sync" | "pull_request_label" => github_like_pr(
            v,
            &[
                "opened",
                "reopened",
                "synchronized",
                "edited",
                "label_updated",
                "label_cleared",
            ],
        ),
        other => Ok(Outcome::Ignored(format!(
            "Gitea event `{other}` is not handled"
        ))),
    }
}
