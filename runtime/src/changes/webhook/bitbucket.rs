//! Bitbucket deliveries: Cloud (`repo:push`, `pullrequest:*`) and
//! Server / Data Center (`repo:refs_changed`, `pr:*`).
//!
//! Neither lists the files a commit touched, and Server lists no commits
//! at all, so a push is one change per ref it moved, for the ref's new
//! head commit (as Buildbot's Bitbucket hooks do).

use serde_json::Value;

use super::payload::*;
use crate::api_error::{ApiError, ApiResult as R};
use crate::store::{NewChange, Properties};

pub fn bitbucket_cloud(event: &str, v: &Value) -> R<Outcome> {
    match event {
        "repo:push" => cloud_push(v),
        "pullrequest:created" | "pullrequest:updated" => cloud_pr(v, event),
        "pullrequest:fulfilled" | "pullrequest:rejected" => Ok(Outcome::Nothing(
            "the pull request was merged or declined".into(),
        )),
        other => Ok(Outcome::Ignored(format!(
            "Bitbucket Cloud event `{other}` is not handled"
        ))),
    }
}

pub fn bitbucket_server(event: &str, v: &Value) -> R<Outcome> {
    match event {
        "diagnostics:ping" => Ok(Outcome::Nothing("ping".into())),
        "repo:refs_changed" => server_push(v),
        "pr:opened" | "pr:from_ref_updated" => server_pr(v, event),
        "pr:merged" | "pr:declined" | "pr:deleted" => Ok(Outcome::Nothing(
            "the pull request was merged, declined or deleted".into(),
        )),
        other => Ok(Outcome::Ignored(format!(
            "Bitbucket Server event `{other}` is not handled"
        ))),
    }
}

/// `branch` / `named_branch` → push; `tag` / `annotated_tag` → tag.
fn cloud_event(kind: &str) -> &'static str {
    if kind.ends_with("tag") {
        "tag"
    } else {
        "push"
    }
}

/// A Cloud repository object's web page (git clones it); `base` is the
/// object's path in the payload, for the error.
fn cloud_repository(r: &Value, base: &str) -> R<String> {
    let url = req_str(r, base, "links.html.href")?;
    Ok(url.trim_end_matches('/').to_string())
}

/// A Cloud commit object (`hash`, `message`, `date`, `author.raw`).
fn cloud_commit(c: &Value, base: &str) -> R<NewChange> {
    let mut author = opt_str(c, "author.raw");
    if author.is_empty() {
        author = opt_str(c, "author.user.display_name");
    }
    Ok(NewChange {
        revision: req_str(c, base, "hash")?,
        comments: opt_str(c, "message"),
        author,
        when: timestamp(c, "date"),
        ..NewChange::default()
    })
}

fn cloud_push(v: &Value) -> R<Outcome> {
    let repository = req_str(v, "", "repository.links.html.href")?
        .trim_end_matches('/')
        .to_string();
    let project = opt_str(v, "repository.full_name");
    let mut out = Vec::new();
    let mut deleted = Vec::new();
    let list = match at(v, "push.changes") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad("field `push.changes` must be an array")),
        None => return Err(ApiError::bad("missing field `push.changes`")),
    };
    for (i, ch) in list.iter().enumerate() {
        let base = format!("push.changes[{i}]");
        if !ch.is_object() {
            return Err(ApiError::bad(format!("`{base}` must be an object")));
        }
        let Some(new) = object_at(ch, "new") else {
            // A deleted branch or tag: `new` is null.
            deleted.push(opt_str(ch, "old.name"));
            continue;
        };
        let nb = join(&base, "new");
        let name = req_str(new, &nb, "name")?;
        let kind = req_str(new, &nb, "type")?;
        let target = object_at(new, "target")
            .ok_or_else(|| ApiError::bad(format!("missing object `{nb}.target`")))?;
        let mut c = cloud_commit(target, &join(&nb, "target"))?;
        c.repository = repository.clone();
        c.project = project.clone();
        c.branch = name;
        prop(&mut c.properties, "event", cloud_event(&kind));
        out.push(c);
    }
    Ok(push_outcome(out, &deleted))
}

fn cloud_pr(v: &Value, event: &str) -> R<Outcome> {
    let base = "pullrequest";
    let pr = object_at(v, base).ok_or_else(|| ApiError::bad("missing object `pullrequest`"))?;
    let state = opt_str(pr, "state");
    if !state.is_empty() && state != "OPEN" {
        return Ok(Outcome::Nothing(format!(
            "the pull request is {}",
            state.to_lowercase()
        )));
    }
    let number = req_int(pr, base, "id")?;
    // Cloud sends a short commit id here (12 hex digits): git resolves it
    // once the branch is fetched.
    let revision = req_str(pr, base, "source.commit.hash")?;
    let branch = req_str(pr, base, "source.branch.name")?;
    let target = req_str(pr, base, "destination.branch.name")?;
    let repository = match object_at(pr, "destination.repository") {
        Some(r) => cloud_repository(r, "pullrequest.destination.repository")?,
        None => req_str(v, "", "repository.links.html.href")?
            .trim_end_matches('/')
            .to_string(),
    };
    let title = opt_str(pr, "title");
    let description = opt_str(pr, "description");
    let mut author = opt_str(pr, "author.nickname");
    if author.is_empty() {
        author = opt_str(pr, "author.display_name");
    }
    let head_repository = match object_at(pr, "source.repository") {
        Some(r) => opt_str(r, "links.html.href"),
        None => String::new(),
    };
    let p = PullRequest {
        number,
        title: &title,
        author: &author,
        labels: String::new(),
        target,
        action: event.trim_start_matches("pullrequest:"),
        head_repository,
        url: opt_str(pr, "links.html.href"),
    }
    .properties();
    let project = match opt_str(pr, "destination.repository.full_name") {
        s if s.is_empty() => opt_str(v, "repository.full_name"),
        s => s,
    };
    Ok(Outcome::Changes(vec![NewChange {
        repository,
        branch,
        revision,
        author,
        comments: if description.is_empty() {
            title
        } else {
            format!("{title}\n\n{description}")
        },
        project,
        when: timestamp(pr, "updated_on"),
        properties: p,
        ..NewChange::default()
    }]))
}

/// A Server repository's clone URL: the `http` clone link, else any
/// clone link, else the web page (`…/browse` stripped). `base` is its
/// path in the payload.
fn server_repository(r: &Value, base: &str) -> R<String> {
    let clones = opt_array(r, base, "links.clone")?;
    let href = |x: &Value| x.get("href").and_then(Value::as_str).map(str::to_string);
    let http = clones
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("http"))
        .and_then(href);
    if let Some(u) = http.or_else(|| clones.iter().find_map(href)) {
        return Ok(u);
    }
    if let Some(u) = opt_array(r, base, "links.self")?.iter().find_map(href) {
        let u = u.trim_end_matches('/');
        return Ok(u.strip_suffix("/browse").unwrap_or(u).to_string());
    }
    Err(ApiError::bad(format!(
        "missing field `{base}.links.clone` (or `{base}.links.self`)"
    )))
}

fn server_project(r: &Value) -> String {
    let key = opt_str(r, "project.key");
    let slug = opt_str(r, "slug");
    if key.is_empty() || slug.is_empty() {
        slug
    } else {
        format!("{key}/{slug}")
    }
}

fn server_actor(v: &Value) -> String {
    let mut name = opt_str(v, "actor.displayName");
    if name.is_empty() {
        name = opt_str(v, "actor.name");
    }
    person(&name, &opt_str(v, "actor.emailAddress"))
}

fn server_push(v: &Value) -> R<Outcome> {
    let repo =
        object_at(v, "repository").ok_or_else(|| ApiError::bad("missing object `repository`"))?;
    let repository = server_repository(repo, "repository")?;
    let project = server_project(repo);
    let author = server_actor(v);
    let when = timestamp(v, "date");
    let list = match at(v, "changes") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad("field `changes` must be an array")),
        None => return Err(ApiError::bad("missing field `changes`")),
    };
    let mut out = Vec::new();
    let mut deleted = Vec::new();
    for (i, ch) in list.iter().enumerate() {
        let base = format!("changes[{i}]");
        if !ch.is_object() {
            return Err(ApiError::bad(format!("`{base}` must be an object")));
        }
        let kind = opt_str(ch, "type");
        let to = req_str(ch, &base, "toHash")?;
        let display = opt_str(ch, "ref.displayId");
        let (name, event) = if display.is_empty() {
            let id = first_str(ch, &["ref.id", "refId"])
                .map_err(|_| ApiError::bad(format!("missing field `{base}.ref.displayId`")))?;
            split_ref(&id)
        } else {
            let event = if opt_str(ch, "ref.type") == "TAG" {
                "tag"
            } else {
                "push"
            };
            (display, event)
        };
        if kind == "DELETE" || is_zero_sha(&to) {
            deleted.push(name);
            continue;
        }
        let mut p = Properties::new();
        prop(&mut p, "event", event);
        out.push(NewChange {
            repository: repository.clone(),
            project: project.clone(),
            branch: name,
            revision: to,
            author: author.clone(),
            when,
            properties: p,
            ..NewChange::default()
        });
    }
    Ok(push_outcome(out, &deleted))
}

fn server_pr(v: &Value, event: &str) -> R<Outcome> {
    let base = "pullRequest";
    let pr = object_at(v, base).ok_or_else(|| ApiError::bad("missing object `pullRequest`"))?;
    let number = req_int(pr, base, "id")?;
    let revision = req_str(pr, base, "fromRef.latestCommit")?;
    let branch = req_str(pr, base, "fromRef.displayId")?;
    let target = req_str(pr, base, "toRef.displayId")?;
    let to_repo = object_at(pr, "toRef.repository")
        .ok_or_else(|| ApiError::bad("missing object `pullRequest.toRef.repository`"))?;
    let repository = server_repository(to_repo, "pullRequest.toRef.repository")?;
    let title = opt_str(pr, "title");
    let description = opt_str(pr, "description");
    let mut author = opt_str(pr, "author.user.name");
    if author.is_empty() {
        author = opt_str(v, "actor.name");
    }
    let head_repository = object_at(pr, "fromRef.repository")
        .and_then(|r| server_repository(r, "pullRequest.fromRef.repository").ok())
        .unwrap_or_default();
    let url = opt_array(pr, base, "links.self")?
        .iter()
        .find_map(|x| x.get("href").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let p = PullRequest {
        number,
        title: &title,
        author: &author,
        labels: String::new(),
        target,
        action: event.trim_start_matches("pr:"),
        head_repository,
        url,
    }
    .properties();
    let when = match at(pr, "updatedDate").and_then(Value::as_i64) {
        Some(ms) if ms > 0 => ms,
        _ => timestamp(v, "date"),
    };
    Ok(Outcome::Changes(vec![NewChange {
        repository,
        branch,
        revision,
        author,
        comments: if description.is_empty() {
            title
        } else {
            format!("{title}\n\n{description}")
        },
        project: server_project(to_repo),
        when,
        properties: p,
        ..NewChange::default()
    }]))
}

/// What a push of either flavour comes to: its changes, or why there are
/// none (nothing listed, or only deleted refs, which build nothing).
fn push_outcome(out: Vec<NewChange>, deleted: &[String]) -> Outcome {
    if !out.is_empty() {
        return Outcome::Changes(out);
    }
    Outcome::Nothing(match deleted {
        [] => "the push lists no change".to_string(),
        d => format!("`{}` was deleted", d.join("`, `")),
    })
}
