//! GitLab deliveries: pushes, tag pushes and merge requests.

use serde_json::Value;

use super::payload::*;
use crate::api_error::{ApiError, ApiResult as R};
use crate::store::NewChange;

pub fn gitlab(event: &str, v: &Value) -> R<Outcome> {
    match event {
        "Push Hook" | "Tag Push Hook" => gitlab_push(v),
        "Merge Request Hook" => gitlab_mr(v),
        other => Ok(Outcome::Ignored(format!(
            "GitLab event `{other}` is not handled"
        ))),
    }
}

fn gitlab_push(v: &Value) -> R<Outcome> {
    let (r, ctx, after) = push_head(
        v,
        &["project.git_http_url", "repository.git_http_url"],
        "project.path_with_namespace",
    )?;
    if is_zero_sha(&after) {
        return Ok(Outcome::Nothing(format!("`{r}` was deleted")));
    }
    let mut changes = listed_commits(v)?;
    if changes.is_empty() {
        // A tag push, or a branch made at an existing commit.
        let rev = first_str(v, &["checkout_sha", "after"])?;
        changes.push(NewChange {
            revision: rev,
            author: person(&opt_str(v, "user_name"), &opt_str(v, "user_email")),
            comments: opt_str(v, "message"),
            ..NewChange::default()
        });
    }
    Ok(finish_push(&ctx, changes))
}

fn gitlab_mr(v: &Value) -> R<Outcome> {
    let base = "object_attributes";
    let oa =
        object_at(v, base).ok_or_else(|| ApiError::bad("missing object `object_attributes`"))?;
    let action = opt_str(oa, "action");
    let state = opt_str(oa, "state");
    // Older GitLab versions send no action: the state tells.
    let building = match action.as_str() {
        "open" | "reopen" | "update" => true,
        "" => state == "opened",
        _ => false,
    };
    if !building {
        let what = if action.is_empty() { &state } else { &action };
        return Ok(Outcome::Nothing(format!(
            "merge request action `{what}` does not change what to build"
        )));
    }
    let number = req_int(oa, base, "iid")?;
    let revision = req_str(oa, base, "last_commit.id")?;
    let branch = req_str(oa, base, "source_branch")?;
    let target = req_str(oa, base, "target_branch")?;
    let repository = first_str(
        v,
        &[
            "object_attributes.target.git_http_url",
            "project.git_http_url",
        ],
    )?;
    let title = opt_str(oa, "title");
    let description = opt_str(oa, "description");
    let mut labels = names_of(v, "labels", "title");
    if labels.is_empty() {
        labels = names_of(oa, "labels", "title");
    }
    let username = opt_str(v, "user.username");
    let p = PullRequest {
        number,
        title: &title,
        author: &username,
        labels: labels.join(","),
        target,
        action: if action.is_empty() { &state } else { &action },
        head_repository: opt_str(oa, "source.git_http_url"),
        url: opt_str(oa, "url"),
    }
    .properties();
    let mut when = timestamp(oa, "updated_at");
    if when == 0 {
        when = timestamp(oa, "last_commit.timestamp");
    }
    Ok(Outcome::Changes(vec![NewChange {
        repository,
        branch,
        revision,
        author: username,
        comments: if description.is_empty() {
            title
        } else {
            format!("{title}\n\n{description}")
        },
        project: opt_str(v, "project.path_with_namespace"),
        when,
        properties: p,
        ..NewChange::default()
    }]))
}
