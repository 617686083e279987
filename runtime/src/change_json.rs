//! A change submitted as JSON, in `NewChange`'s own shape (without its
//! `source`): the one reader of it, for the generic JSON webhook and for
//! `POST /api/v1/changes`, so both accept and refuse the same things.
//! Every error names the JSON path of what it refuses.

use bbc_graph::Scalar;
use serde_json::{Map, Value};

use crate::api_error::{ApiError, ApiResult as R};
use crate::store::NewChange;

/// The fields a change object may have.
pub const FIELDS: &[&str] = &[
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

/// `base.key`, or `key` at the top.
fn path(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Text goes into git commands, environment variables and file names,
/// none of which can hold a NUL byte.
fn checked(s: &str, at: impl FnOnce() -> String) -> R<String> {
    if s.contains('\0') {
        return Err(ApiError::bad(format!(
            "field `{}` contains a NUL byte",
            at()
        )));
    }
    Ok(s.to_string())
}

/// Reads one change object found at JSON path `at` ("" for the body
/// itself, "[3]" for an array's fourth item). `source_is` says what the
/// change's source is instead, for the refusal of a `source` field.
pub fn read(v: &Value, at: &str, source_is: &str) -> R<NewChange> {
    let Some(o) = v.as_object() else {
        let what = if at.is_empty() {
            "the body".to_string()
        } else {
            format!("`{at}`")
        };
        return Err(ApiError::bad(format!("{what} must be a change object")));
    };
    for k in o.keys() {
        if k == "source" {
            return Err(ApiError::bad(format!(
                "field `{}` is not accepted: the source is always {source_is}",
                path(at, k)
            )));
        }
        if !FIELDS.contains(&k.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown field `{}`; the fields are: {}",
                path(at, k),
                FIELDS.join(", ")
            )));
        }
    }
    let s = |k: &str| -> R<String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => checked(s, || path(at, k)),
            Some(_) => Err(ApiError::bad(format!(
                "field `{}` must be a string",
                path(at, k)
            ))),
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
        let what = if at.is_empty() {
            "a change".to_string()
        } else {
            format!("change `{at}`")
        };
        return Err(ApiError::bad(format!(
            "{what} needs a `branch` or a `revision` (or both)"
        )));
    }
    c.files = files(o, at)?;
    match o.get("when") {
        None | Some(Value::Null) => {}
        Some(w) => {
            c.when = w.as_i64().ok_or_else(|| {
                ApiError::bad(format!(
                    "field `{}` must be an integer (milliseconds since the epoch)",
                    path(at, "when")
                ))
            })?
        }
    }
    properties(o, at, &mut c)?;
    Ok(c)
}

fn files(o: &Map<String, Value>, at: &str) -> R<Vec<String>> {
    let mut out = Vec::new();
    match o.get("files") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, f) in a.iter().enumerate() {
                let at_i = || format!("{}[{i}]", path(at, "files"));
                match f.as_str() {
                    Some(f) => out.push(checked(f, at_i)?),
                    None => {
                        return Err(ApiError::bad(format!(
                            "field `{}` must be a string",
                            at_i()
                        )))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad(format!(
                "field `{}` must be an array of strings",
                path(at, "files")
            )))
        }
    }
    Ok(out)
}

fn properties(o: &Map<String, Value>, at: &str, c: &mut NewChange) -> R<()> {
    let base = path(at, "properties");
    match o.get("properties") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) => {
            for (k, x) in m {
                let at_k = || path(&base, k);
                if k.contains('\0') {
                    return Err(ApiError::bad(format!(
                        "a property name in `{base}` contains a NUL byte"
                    )));
                }
                let v = match x {
                    Value::Bool(b) => Scalar::Bool(*b),
                    Value::String(s) => Scalar::String(checked(s, at_k)?),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => Scalar::Int(i),
                        None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
                    },
                    _ => {
                        return Err(ApiError::bad(format!(
                            "field `{}` must be a string, a number or a boolean",
                            at_k()
                        )))
                    }
                };
                c.properties.insert(k.clone(), v);
            }
            Ok(())
        }
        Some(_) => Err(ApiError::bad(format!("field `{base}` must be an object"))),
    }
}

/// A web page for a revision, when one is known: the pull request's
/// page, else `/commit/REV` under an http(s) repository (the path GitHub,
/// GitLab and Gitea all answer). Nothing for other repositories: a path
/// or an ssh address has no page.
pub fn link(c: &crate::store::Change) -> Option<String> {
    let web = |u: &str| u.starts_with("https://") || u.starts_with("http://");
    if let Some(bbc_graph::Scalar::String(u)) = c.change.properties.get("pr_url") {
        // Only a web address: a client must be able to put it in a link.
        return web(u).then(|| u.clone());
    }
    let repo = c.change.repository.trim_end_matches('/');
    let rev = &c.change.revision;
    let is_web = web(repo);
    let hex = !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_hexdigit());
    (is_web && hex).then(|| format!("{}/commit/{rev}", repo.trim_end_matches(".git")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(v: Value, at: &str) -> String {
        match read(&v, at, "`api`") {
            Err(e) => e.1,
            Ok(c) => panic!("accepted {v}: {c:?}"),
        }
    }

    #[test]
    fn every_refusal_names_its_path() {
        for (v, at, msg) in [
            (
                json!({"branch": "a", "source": "github"}),
                "",
                "field `source` is not accepted: the source is always `api`",
            ),
            (
                json!({"branch": "a", "colour": 1}),
                "[2]",
                "unknown field `[2].colour`",
            ),
            (json!({}), "", "a change needs a `branch` or a `revision`"),
            (
                json!({"branch": "", "revision": null}),
                "[1]",
                "change `[1]` needs a `branch`",
            ),
            (
                json!({"branch": "a\u{0}b"}),
                "",
                "field `branch` contains a NUL byte",
            ),
            (
                json!({"branch": "a", "files": ["x", "y\u{0}"]}),
                "[0]",
                "field `[0].files[1]` contains a NUL byte",
            ),
            (
                json!({"branch": "a", "files": [1]}),
                "",
                "field `files[0]` must be a string",
            ),
            (
                json!({"branch": "a", "properties": {"p": "\u{0}"}}),
                "",
                "field `properties.p` contains a NUL byte",
            ),
            (
                json!({"branch": "a", "properties": {"p\u{0}": 1}}),
                "",
                "a property name in `properties` contains a NUL byte",
            ),
            (
                json!({"branch": "a", "properties": {"p": [1]}}),
                "",
                "field `properties.p` must be",
            ),
            (
                json!({"branch": "a", "when": "now"}),
                "",
                "field `when` must be an integer",
            ),
            (
                json!({"branch": 3}),
                "[1]",
                "field `[1].branch` must be a string",
            ),
            (json!([]), "", "the body must be a change object"),
        ] {
            let got = refused(v.clone(), at);
            assert!(got.contains(msg), "{v}: {got}");
        }
    }

    #[test]
    fn a_full_change_is_read() {
        let c = read(
            &json!({"branch": "main", "revision": "abc", "files": ["a"], "when": 5,
                    "properties": {"n": 1, "b": true, "s": "x"}}),
            "",
            "`api`",
        )
        .unwrap();
        assert_eq!(
            (c.branch.as_str(), c.revision.as_str(), c.when),
            ("main", "abc", 5)
        );
        assert_eq!(c.files, vec!["a".to_string()]);
        assert_eq!(c.properties.len(), 3);
        assert!(c.source.is_empty());
    }
}
