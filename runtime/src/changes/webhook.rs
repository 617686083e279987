//! Webhook receivers: `POST /change_hook/{name}` for the GitHub, GitLab,
//! Gitea and generic JSON change sources (`docs/changes.md`).
//!
//! A delivery is authenticated before its body is parsed: when the source
//! has a secret, a missing signature is 401 and a wrong one 403, and
//! nothing is stored. Payloads are read as untyped JSON and every field
//! used is looked up by path, so a malformed delivery gets a 400 naming the
//! field instead of a panic or a generic decode error.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bbc_graph::{ChangeSourceKind, Scalar};
use serde_json::{json, Value};

use super::HookError;
// Named here as well: the integration tests sign deliveries with it.
pub use crate::auth::hmac_sha256_hex;
use crate::auth::{constant_time_eq, hmac_matches};
use crate::state::{now_ms, Shared};
use crate::store::{Millis, NewChange, Properties};

type R<T> = Result<T, HookError>;

/// At most this many changes per JSON delivery: each is a durable write.
pub const MAX_JSON_CHANGES: usize = 1000;

// --- signatures: which header carries what, per forge (the checks
// themselves are in `crate::auth`)

enum Auth {
    /// HMAC of the body in this header, hex, after an optional prefix.
    Hmac {
        headers: &'static [&'static str],
        prefix: &'static str,
    },
    /// The secret itself in this header.
    Token { header: &'static str },
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or(""))
}

fn verify(auth: &Auth, secret: &str, headers: &HeaderMap, body: &[u8]) -> R<()> {
    let (name, given) = match auth {
        Auth::Hmac { headers: names, .. } => {
            let found = names
                .iter()
                .find_map(|n| header(headers, n).map(|v| (*n, v)));
            match found {
                Some(x) => x,
                None => {
                    return Err(missing_signature(
                        names.first().copied().unwrap_or("signature"),
                    ))
                }
            }
        }
        Auth::Token { header: n } => match header(headers, n) {
            Some(v) => (*n, v),
            None => return Err(missing_signature(n)),
        },
    };
    let ok = match auth {
        Auth::Hmac { prefix, .. } => match given.strip_prefix(prefix) {
            Some(hex) => hmac_matches(secret, body, hex),
            None => false,
        },
        Auth::Token { .. } => constant_time_eq(secret, given),
    };
    if ok {
        Ok(())
    } else {
        Err(HookError::new(
            StatusCode::FORBIDDEN,
            format!("the {name} header does not match this change source's secret"),
        ))
    }
}

fn missing_signature(h: &str) -> HookError {
    HookError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "missing {h} header: this change source has a secret, so deliveries must be signed"
        ),
    )
}

// --- payload access

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

fn object_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    at(v, path).filter(|x| x.is_object())
}

fn join(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_string()
    } else {
        format!("{base}.{path}")
    }
}

/// A required string field; the error names the field's full path.
fn req_str(v: &Value, base: &str, path: &str) -> R<String> {
    match at(v, path) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(HookError::bad(format!(
            "field `{}` is empty",
            join(base, path)
        ))),
        Some(_) => Err(HookError::bad(format!(
            "field `{}` must be a string",
            join(base, path)
        ))),
        None => Err(HookError::bad(format!(
            "missing field `{}`",
            join(base, path)
        ))),
    }
}

/// The first of several string fields present.
fn first_str(v: &Value, paths: &[&str]) -> R<String> {
    for p in paths {
        if let Some(Value::String(s)) = at(v, p) {
            if !s.is_empty() {
                return Ok(s.clone());
            }
        }
    }
    let names: Vec<String> = paths.iter().map(|p| format!("`{p}`")).collect();
    let msg = match names.split_first() {
        Some((first, [])) => format!("missing field {first}"),
        Some((first, rest)) => format!("missing field {first} (or {})", rest.join(", ")),
        None => "missing field".to_string(),
    };
    Err(HookError::bad(msg))
}

/// An optional string field (absent or not a string: empty).
fn opt_str(v: &Value, path: &str) -> String {
    match at(v, path) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn req_int(v: &Value, base: &str, path: &str) -> R<i64> {
    match at(v, path) {
        Some(x) => x.as_i64().ok_or_else(|| {
            HookError::bad(format!("field `{}` must be an integer", join(base, path)))
        }),
        None => Err(HookError::bad(format!(
            "missing field `{}`",
            join(base, path)
        ))),
    }
}

/// An optional array field; present but not an array is an error.
fn opt_array<'a>(v: &'a Value, base: &str, path: &str) -> R<&'a [Value]> {
    match at(v, path) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(HookError::bad(format!(
            "field `{}` must be an array",
            join(base, path)
        ))),
    }
}

/// The strings at `key` of each object of an array (label names).
fn names_of(v: &Value, path: &str, key: &str) -> Vec<String> {
    match at(v, path) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.get(key).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn person(name: &str, email: &str) -> String {
    match (name.is_empty(), email.is_empty()) {
        (_, true) => name.to_string(),
        (true, false) => format!("<{email}>"),
        (false, false) => format!("{name} <{email}>"),
    }
}

/// RFC 3339 (forges), or GitLab's older "2013-12-03 17:23:34 UTC";
/// anything else is 0 (the receiver then uses the delivery time).
fn timestamp(v: &Value, path: &str) -> Millis {
    let s = opt_str(v, path);
    let s = s.trim();
    if s.is_empty() {
        return 0;
    }
    let parse = |t: &str| t.parse::<jiff::Timestamp>().ok();
    let alt = s.replacen(' ', "T", 1).replace(" UTC", "Z");
    parse(s)
        .or_else(|| parse(&alt))
        .map(|t| t.as_millisecond())
        .unwrap_or(0)
}

fn is_zero_sha(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '0')
}

/// `refs/heads/X` → (X, "push"); `refs/tags/X` → (X, "tag").
fn split_ref(r: &str) -> (String, &'static str) {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        (b.to_string(), "push")
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        (t.to_string(), "tag")
    } else {
        (r.to_string(), "push")
    }
}

fn prop(p: &mut Properties, k: &str, v: impl Into<String>) {
    p.insert(k.to_string(), Scalar::String(v.into()));
}

/// One commit of a push payload (GitHub, GitLab and Gitea share the shape:
/// id, message, timestamp, author/committer {name, email}, added/modified/
/// removed). `base` is its path in the payload, for error messages.
fn commit_change(c: &Value, base: &str) -> R<NewChange> {
    if !c.is_object() {
        return Err(HookError::bad(format!("`{base}` must be an object")));
    }
    let mut files: Vec<String> = Vec::new();
    for key in ["added", "modified", "removed"] {
        for f in opt_array(c, base, key)? {
            if let Some(f) = f.as_str() {
                if !files.iter().any(|x| x == f) {
                    files.push(f.to_string());
                }
            }
        }
    }
    Ok(NewChange {
        revision: req_str(c, base, "id")?,
        comments: opt_str(c, "message"),
        author: person(&opt_str(c, "author.name"), &opt_str(c, "author.email")),
        committer: person(
            &opt_str(c, "committer.name"),
            &opt_str(c, "committer.email"),
        ),
        when: timestamp(c, "timestamp"),
        files,
        ..NewChange::default()
    })
}

/// What a delivery amounts to.
#[derive(Debug)]
pub enum Outcome {
    /// Changes to store (201).
    Changes(Vec<NewChange>),
    /// A known event that changes nothing to build (200), e.g. a deleted
    /// branch or a closed pull request.
    Nothing(String),
    /// An event this receiver does not handle (202).
    Ignored(String),
}

/// Fields common to every change of a push.
struct PushCtx {
    repository: String,
    project: String,
    branch: String,
    event: &'static str,
}

fn finish_push(ctx: &PushCtx, mut changes: Vec<NewChange>) -> Outcome {
    for c in &mut changes {
        c.repository = ctx.repository.clone();
        c.project = ctx.project.clone();
        c.branch = ctx.branch.clone();
        prop(&mut c.properties, "event", ctx.event);
    }
    Outcome::Changes(changes)
}

/// A GitHub or Gitea push: one change per listed commit; a push listing
/// none (a new branch or a tag at an existing commit) is one change for
/// `head_commit`, or for `after`.
fn github_like_push(v: &Value, repo_paths: &[&str]) -> R<Outcome> {
    let r = req_str(v, "", "ref")?;
    let repository = first_str(v, repo_paths)?;
    let (branch, event) = split_ref(&r);
    let after = opt_str(v, "after");
    if at(v, "deleted").and_then(Value::as_bool) == Some(true) || is_zero_sha(&after) {
        return Ok(Outcome::Nothing(format!("`{r}` was deleted")));
    }
    let ctx = PushCtx {
        repository,
        project: opt_str(v, "repository.full_name"),
        branch,
        event,
    };
    let mut changes = Vec::new();
    for (i, c) in opt_array(v, "", "commits")?.iter().enumerate() {
        changes.push(commit_change(c, &format!("commits[{i}]"))?);
    }
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
        .ok_or_else(|| HookError::bad("missing object `pull_request`"))?;
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
    let mut p = Properties::new();
    p.insert("pr_number".into(), Scalar::Int(number));
    prop(&mut p, "pr_title", title.clone());
    prop(&mut p, "pr_author", login.clone());
    prop(
        &mut p,
        "pr_labels",
        names_of(pr, "labels", "name").join(","),
    );
    prop(&mut p, "pr_target_branch", target);
    prop(&mut p, "pr_action", action);
    prop(&mut p, "event", "pull_request");
    let head_repo = opt_str(pr, "head.repo.clone_url");
    if !head_repo.is_empty() {
        prop(&mut p, "pr_head_repository", head_repo);
    }
    let url = opt_str(pr, "html_url");
    if !url.is_empty() {
        prop(&mut p, "pr_url", url);
    }
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
    let r = req_str(v, "", "ref")?;
    let repository = first_str(v, &["project.git_http_url", "repository.git_http_url"])?;
    let (branch, event) = split_ref(&r);
    let after = opt_str(v, "after");
    if is_zero_sha(&after) {
        return Ok(Outcome::Nothing(format!("`{r}` was deleted")));
    }
    let ctx = PushCtx {
        repository,
        project: opt_str(v, "project.path_with_namespace"),
        branch,
        event,
    };
    let mut changes = Vec::new();
    for (i, c) in opt_array(v, "", "commits")?.iter().enumerate() {
        changes.push(commit_change(c, &format!("commits[{i}]"))?);
    }
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
        object_at(v, base).ok_or_else(|| HookError::bad("missing object `object_attributes`"))?;
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
    let mut p = Properties::new();
    p.insert("pr_number".into(), Scalar::Int(number));
    prop(&mut p, "pr_title", title.clone());
    prop(&mut p, "pr_author", username.clone());
    prop(&mut p, "pr_labels", labels.join(","));
    prop(&mut p, "pr_target_branch", target);
    prop(
        &mut p,
        "pr_action",
        if action.is_empty() { state } else { action },
    );
    prop(&mut p, "event", "pull_request");
    let head_repo = opt_str(oa, "source.git_http_url");
    if !head_repo.is_empty() {
        prop(&mut p, "pr_head_repository", head_repo);
    }
    let url = opt_str(oa, "url");
    if !url.is_empty() {
        prop(&mut p, "pr_url", url);
    }
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

/// The generic JSON webhook: one change object or an array of them, with
/// `NewChange`'s fields (all optional but a `branch` or a `revision`).
pub fn json_changes(v: &Value) -> R<Outcome> {
    let items: Vec<(String, &Value)> = match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("change {i}: "), x))
            .collect(),
        Value::Object(_) => vec![(String::new(), v)],
        _ => {
            return Err(HookError::bad(
                "the body must be a change object or an array of change objects",
            ))
        }
    };
    if items.len() > MAX_JSON_CHANGES {
        return Err(HookError::bad(format!(
            "{} changes in one delivery; at most {MAX_JSON_CHANGES}",
            items.len()
        )));
    }
    let mut out = Vec::new();
    for (at_, item) in items {
        out.push(json_change(item).map_err(|e| HookError::bad(format!("{at_}{}", e.1)))?);
    }
    Ok(Outcome::Changes(out))
}

const JSON_FIELDS: &[&str] = &[
    "repository",
    "branch",
    "revision",
    "author",
    "committer",
    "comments",
    "files",
    "project",
    "codebase",
    "when",
    "properties",
];

fn json_change(v: &Value) -> R<NewChange> {
    let Some(o) = v.as_object() else {
        return Err(HookError::bad("a change must be a JSON object"));
    };
    for k in o.keys() {
        if k == "source" {
            return Err(HookError::bad(
                "`source` is not accepted: it is always the change source's name",
            ));
        }
        if !JSON_FIELDS.contains(&k.as_str()) {
            return Err(HookError::bad(format!(
                "unknown field `{k}`; the fields are: {}",
                JSON_FIELDS.join(", ")
            )));
        }
    }
    let s = |k: &str| -> R<String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(HookError::bad(format!("field `{k}` must be a string"))),
        }
    };
    let mut c = NewChange {
        repository: s("repository")?,
        branch: s("branch")?,
        revision: s("revision")?,
        author: s("author")?,
        committer: s("committer")?,
        comments: s("comments")?,
        project: s("project")?,
        codebase: s("codebase")?,
        ..NewChange::default()
    };
    if c.branch.is_empty() && c.revision.is_empty() {
        return Err(HookError::bad(
            "a change needs a `branch` or a `revision` (or both)",
        ));
    }
    match o.get("files") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, f) in a.iter().enumerate() {
                match f.as_str() {
                    Some(f) => c.files.push(f.to_string()),
                    None => {
                        return Err(HookError::bad(format!(
                            "field `files[{i}]` must be a string"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(HookError::bad("field `files` must be an array of strings")),
    }
    match o.get("when") {
        None | Some(Value::Null) => {}
        Some(w) => {
            c.when = w.as_i64().ok_or_else(|| {
                HookError::bad("field `when` must be an integer (milliseconds since the epoch)")
            })?
        }
    }
    match o.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, x) in m {
                let v = match x {
                    Value::Bool(b) => Scalar::Bool(*b),
                    Value::String(s) => Scalar::String(s.clone()),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => Scalar::Int(i),
                        None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
                    },
                    _ => {
                        return Err(HookError::bad(format!(
                            "property `{k}` must be a string, a number or a boolean"
                        )))
                    }
                };
                c.properties.insert(k.clone(), v);
            }
        }
        Some(_) => return Err(HookError::bad("field `properties` must be an object")),
    }
    Ok(c)
}

// --- the route

fn event_header(headers: &HeaderMap, names: &[&str]) -> R<String> {
    for n in names {
        if let Some(v) = header(headers, n) {
            if !v.is_empty() {
                return Ok(v.to_string());
            }
        }
    }
    let first = names.first().copied().unwrap_or("event");
    Err(HookError::bad(format!("missing header {first}")))
}

/// The body as JSON, whatever the content type says (`curl -d` labels
/// JSON as a form); a real form delivery gets a hint about the setting.
fn parse_json(headers: &HeaderMap, body: &[u8]) -> R<Value> {
    serde_json::from_slice(body).map_err(|e| {
        let form = header(headers, "content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form && body.starts_with(b"payload=") {
            HookError::bad(
                "form-encoded deliveries are not supported: set the webhook's content type to application/json",
            )
        } else {
            HookError::bad(format!("invalid JSON: {e}"))
        }
    })
}

/// `POST /change_hook/{name}`.
pub(crate) async fn receive(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> R<(StatusCode, Json<Value>)> {
    // Too large or unreadable: answered in the API's error shape too.
    let body = body.map_err(|e| HookError::new(e.status(), e.body_text()))?;
    let src = super::find_source(&s, &name)?;
    let (secret, auth) = match &src.kind {
        ChangeSourceKind::GithubWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-Hub-Signature-256"],
                prefix: "sha256=",
            },
        ),
        ChangeSourceKind::GiteaWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-Gitea-Signature", "X-Forgejo-Signature"],
                prefix: "",
            },
        ),
        ChangeSourceKind::GitlabWebhook { secret } => (
            secret,
            Auth::Token {
                header: "X-Gitlab-Token",
            },
        ),
        ChangeSourceKind::JsonWebhook { secret } => (
            secret,
            Auth::Hmac {
                headers: &["X-BBC-Signature-256"],
                prefix: "sha256=",
            },
        ),
        ChangeSourceKind::GitPoller { .. } => {
            return Err(HookError::new(
                StatusCode::NOT_FOUND,
                format!("change source `{name}` is a git poller, not a webhook"),
            ))
        }
    };
    if let Some(cred) = secret {
        // Fail closed: a secret the master could not resolve accepts nothing.
        let secrets = s.secrets();
        let Some(value) = secrets.get(cred) else {
            return Err(HookError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the secret of change source `{name}` is not available to the master"),
            ));
        };
        if let Err(e) = verify(&auth, value, &headers, &body) {
            tracing::warn!(source = %name, "webhook delivery refused: {}", e.1);
            return Err(e);
        }
    }
    let outcome = match &src.kind {
        ChangeSourceKind::GithubWebhook { .. } => {
            let ev = event_header(&headers, &["X-GitHub-Event"])?;
            github(&ev, &parse_json(&headers, &body)?)?
        }
        ChangeSourceKind::GiteaWebhook { .. } => {
            let ev = event_header(&headers, &["X-Gitea-Event", "X-Forgejo-Event"])?;
            gitea(&ev, &parse_json(&headers, &body)?)?
        }
        ChangeSourceKind::GitlabWebhook { .. } => {
            let ev = event_header(&headers, &["X-Gitlab-Event"])?;
            gitlab(&ev, &parse_json(&headers, &body)?)?
        }
        _ => json_changes(&parse_json(&headers, &body)?)?,
    };
    match outcome {
        Outcome::Changes(changes) => {
            let mut ids = Vec::new();
            for mut c in changes {
                c.source = name.clone();
                if c.when == 0 {
                    c.when = now_ms();
                }
                ids.push(s.add_change(c).await?.id);
            }
            tracing::info!(source = %name, "webhook delivery: {} change(s)", ids.len());
            Ok((
                StatusCode::CREATED,
                Json(json!({"source": name, "changes": ids})),
            ))
        }
        Outcome::Nothing(why) => Ok((
            StatusCode::OK,
            Json(json!({"source": name, "changes": [], "ignored": why})),
        )),
        Outcome::Ignored(why) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"source": name, "changes": [], "ignored": why})),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for v in [
            json!(null),
            json!([]),
            json!({"ref": 3}),
            json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": [1]}),
            json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": "no"}),
            json!({"action": "opened", "pull_request": []}),
            json!({"action": "opened", "number": "7", "pull_request": {}}),
        ] {
            for ev in ["push", "pull_request"] {
                let _ = github(ev, &v);
                let _ = gitea(ev, &v);
            }
            for ev in ["Push Hook", "Merge Request Hook", "Tag Push Hook"] {
                let _ = gitlab(ev, &v);
            }
            let _ = json_changes(&v);
        }
        let e = github("push", &json!({"ref": "refs/heads/x"})).unwrap_err();
        assert!(e.1.contains("repository.clone_url"), "{}", e.1);
        let e = github(
            "push",
            &json!({"ref": "refs/heads/x", "repository": {"clone_url": "u"}, "commits": [{"message": "m"}]}),
        )
        .unwrap_err();
        assert_eq!(e.1, "missing field `commits[0].id`");
    }

    /// Every value of every fixture replaced by every other JSON type:
    /// the receivers answer (an outcome or a 400), they never panic.
    #[test]
    fn mutated_fixtures_never_panic() {
        fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
            out.push(at.clone());
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        let mut p = at.clone();
                        p.push(k.clone());
                        paths(x, p, out);
                    }
                }
                Value::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        let mut p = at.clone();
                        p.push(i.to_string());
                        paths(x, p, out);
                    }
                }
                _ => {}
            }
        }
        fn slot<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
            path.iter().try_fold(v, |v, k| match v {
                Value::Object(m) => m.get_mut(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            })
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/webhooks");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let original: Value = serde_json::from_str(&text).unwrap();
            let mut all = Vec::new();
            paths(&original, Vec::new(), &mut all);
            let replacements = [
                json!(null),
                json!(7),
                json!("x"),
                json!([]),
                json!({}),
                json!(true),
            ];
            for p in &all {
                for r in &replacements {
                    let mut v = original.clone();
                    if let Some(x) = slot(&mut v, p) {
                        *x = r.clone();
                    }
                    for ev in ["push", "pull_request"] {
                        let _ = github(ev, &v);
                        let _ = gitea(ev, &v);
                    }
                    for ev in ["Push Hook", "Tag Push Hook", "Merge Request Hook"] {
                        let _ = gitlab(ev, &v);
                    }
                    let _ = json_changes(&v);
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn timestamps() {
        let v = json!({"a": "2015-05-05T19:40:15-04:00", "b": "2013-12-03 17:23:34 UTC", "c": "x"});
        assert_eq!(timestamp(&v, "a"), 1_430_869_215_000);
        assert_eq!(timestamp(&v, "b"), 1_386_091_414_000);
        assert_eq!(timestamp(&v, "c"), 0);
    }
}
