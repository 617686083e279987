//! The generic JSON webhook: changes in `NewChange`'s own shape.

use bbc_graph::Scalar;
use serde_json::Value;

use super::payload::*;
use crate::api_error::{ApiError, ApiResult as R};
use crate::store::NewChange;

/// At most this many changes per JSON delivery: each is a durable write.
pub const MAX_JSON_CHANGES: usize = 1000;

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
            return Err(ApiError::bad(
                "the body must be a change object or an array of change objects",
            ))
        }
    };
    if items.len() > MAX_JSON_CHANGES {
        return Err(ApiError::bad(format!(
            "{} changes in one delivery; at most {MAX_JSON_CHANGES}",
            items.len()
        )));
    }
    let mut out = Vec::new();
    for (at_, item) in items {
        out.push(json_change(item).map_err(|e| ApiError::bad(format!("{at_}{}", e.1)))?);
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
        return Err(ApiError::bad("a change must be a JSON object"));
    };
    for k in o.keys() {
        if k == "source" {
            return Err(ApiError::bad(
                "`source` is not accepted: it is always the change source's name",
            ));
        }
        if !JSON_FIELDS.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown field `{k}`; the fields are: {}",
                JSON_FIELDS.join(", ")
            )));
        }
    }
    let s = |k: &str| -> R<String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::bad(format!("field `{k}` must be a string"))),
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
        return Err(ApiError::bad(
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
                        return Err(ApiError::bad(format!(
                            "field `files[{i}]` must be a string"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::bad("field `files` must be an array of strings")),
    }
    match o.get("when") {
        None | Some(Value::Null) => {}
        Some(w) => {
            c.when = w.as_i64().ok_or_else(|| {
                ApiError::bad("field `when` must be an integer (milliseconds since the epoch)")
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
                        return Err(ApiError::bad(format!(
                            "property `{k}` must be a string, a number or a boolean"
                        )))
                    }
                };
                c.properties.insert(k.clone(), v);
            }
        }
        Some(_) => return Err(ApiError::bad("field `properties` must be an object")),
    }
    Ok(c)
}
