//! Reading deliveries: every field is looked up by path in untyped JSON,
//! so a malformed delivery gets a 400 naming the field, and what a
//! delivery amounts to ([`Outcome`]).

use bbc_graph::Scalar;
use serde_json::Value;

use crate::api_error::{ApiError, ApiResult as R};
use crate::store::{Millis, NewChange, Properties};

pub(super) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

pub(super) fn object_at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    at(v, path).filter(|x| x.is_object())
}

pub(super) fn join(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_string()
    } else {
        format!("{base}.{path}")
    }
}

/// A required string field; the error names the field's full path.
pub(super) fn req_str(v: &Value, base: &str, path: &str) -> R<String> {
    match at(v, path) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::bad(format!(
            "field `{}` is empty",
            join(base, path)
        ))),
        Some(_) => Err(ApiError::bad(format!(
            "field `{}` must be a string",
            join(base, path)
        ))),
        None => Err(ApiError::bad(format!(
            "missing field `{}`",
            join(base, path)
        ))),
    }
}

/// The first of several string fields present.
pub(super) fn first_str(v: &Value, paths: &[&str]) -> R<String> {
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
    Err(ApiError::bad(msg))
}

/// An optional string field (absent or not a string: empty).
pub(super) fn opt_str(v: &Value, path: &str) -> String {
    match at(v, path) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

pub(super) fn req_int(v: &Value, base: &str, path: &str) -> R<i64> {
    match at(v, path) {
        Some(x) => x.as_i64().ok_or_else(|| {
            ApiError::bad(format!("field `{}` must be an integer", join(base, path)))
        }),
        None => Err(ApiError::bad(format!(
            "missing field `{}`",
            join(base, path)
        ))),
    }
}

/// An optional array field; present but not an array is an error.
pub(super) fn opt_array<'a>(v: &'a Value, base: &str, path: &str) -> R<&'a [Value]> {
    match at(v, path) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad(format!(
            "field `{}` must be an array",
            join(base, path)
        ))),
    }
}

/// The strings at `key` of each object of an array (label names).
pub(super) fn names_of(v: &Value, path: &str, key: &str) -> Vec<String> {
    match at(v, path) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.get(key).and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn person(name: &str, email: &str) -> String {
    match (name.is_empty(), email.is_empty()) {
        (_, true) => name.to_string(),
        (true, false) => format!("<{email}>"),
        (false, false) => format!("{name} <{email}>"),
    }
}

/// RFC 3339 (forges), or GitLab's older "2013-12-03 17:23:34 UTC";
/// anything else is 0 (the receiver then uses the delivery time).
pub(super) fn timestamp(v: &Value, path: &str) -> Millis {
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

pub(super) fn is_zero_sha(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c == '0')
}

/// `refs/heads/X` → (X, "push"); `refs/tags/X` → (X, "tag").
pub(super) fn split_ref(r: &str) -> (String, &'static str) {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        (b.to_string(), "push")
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        (t.to_string(), "tag")
    } else {
        (r.to_string(), "push")
    }
}

pub(super) fn prop(p: &mut Properties, k: &str, v: impl Into<String>) {
    p.insert(k.to_string(), Scalar::String(v.into()));
}

/// What every forge's pull-request (merge-request) change carries as
/// properties, under the same names whichever forge sent it, so a builder
/// reads `pr_number` without knowing where the hook came from. Empty
/// `head_repository` and `url` are left out (not every payload has them).
pub(super) struct PullRequest<'a> {
    pub number: i64,
    pub title: &'a str,
    pub author: &'a str,
    /// Comma-separated; empty where the forge has no labels (Bitbucket).
    pub labels: String,
    pub target: String,
    pub action: &'a str,
    pub head_repository: String,
    pub url: String,
}

impl PullRequest<'_> {
    pub(super) fn properties(self) -> Properties {
        let mut p = Properties::new();
        p.insert("pr_number".into(), Scalar::Int(self.number));
        prop(&mut p, "pr_title", self.title);
        prop(&mut p, "pr_author", self.author);
        prop(&mut p, "pr_labels", self.labels);
        prop(&mut p, "pr_target_branch", self.target);
        prop(&mut p, "pr_action", self.action);
        prop(&mut p, "event", "pull_request");
        if !self.head_repository.is_empty() {
            prop(&mut p, "pr_head_repository", self.head_repository);
        }
        if !self.url.is_empty() {
            prop(&mut p, "pr_url", self.url);
        }
        p
    }
}

/// One commit of a push payload (GitHub, GitLab and Gitea share the shape:
/// id, message, timestamp, author/committer {name, email}, added/modified/
/// removed). `base` is its path in the payload, for error messages.
pub(super) fn commit_change(c: &Value, base: &str) -> R<NewChange> {
    if !c.is_object() {
        return Err(ApiError::bad(format!("`{base}` must be an object")));
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
pub(super) struct PushCtx {
    pub(super) repository: String,
    pub(super) project: String,
    pub(super) branch: String,
    pub(super) event: &'static str,
}

/// What every forge's push starts with: its ref, where it went (`repo_paths`
/// and `project_path` name the forge's fields) and the commit it moved the
/// ref to (`after`, all zeros when the ref was deleted).
pub(super) fn push_head(
    v: &Value,
    repo_paths: &[&str],
    project_path: &str,
) -> R<(String, PushCtx, String)> {
    let r = req_str(v, "", "ref")?;
    let repository = first_str(v, repo_paths)?;
    let (branch, event) = split_ref(&r);
    let after = opt_str(v, "after");
    let ctx = PushCtx {
        repository,
        project: opt_str(v, project_path),
        branch,
        event,
    };
    Ok((r, ctx, after))
}

/// One change per commit a push lists.
pub(super) fn listed_commits(v: &Value) -> R<Vec<NewChange>> {
    let mut changes = Vec::new();
    for (i, c) in opt_array(v, "", "commits")?.iter().enumerate() {
        changes.push(commit_change(c, &format!("commits[{i}]"))?);
    }
    Ok(changes)
}

pub(super) fn finish_push(ctx: &PushCtx, mut changes: Vec<NewChange>) -> Outcome {
    for c in &mut changes {
        c.repository = ctx.repository.clone();
        c.project = ctx.project.clone();
        c.branch = ctx.branch.clone();
        prop(&mut c.properties, "event", ctx.event);
    }
    Outcome::Changes(changes)
}
