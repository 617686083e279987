//! Buildbot's generic change hook, `POST /change_hook/base`: one change
//! as form fields (`application/x-www-form-urlencoded`), as Buildbot's
//! `buildbot/www/hooks/base.py` reads them, so commit hooks written for a
//! Buildbot master keep working against a `json-webhook` change source
//! named `base`. The fields become a change object in `NewChange`'s JSON
//! shape and go through the same reader as JSON deliveries
//! ([`crate::change_json`]), so both accept and refuse the same values.

use serde_json::{Map, Value};

use super::payload::Outcome;
use crate::api_error::{ApiError, ApiResult as R};
use crate::change_json;

/// Fields Buildbot's hook accepts that bbc's changes have no place for.
const DROPPED: &[&str] = &["category", "revlink", "links", "project_url"];

/// Is this delivery a form (Buildbot's hooks)? Its content type says so
/// and the body is not JSON: `curl -d '{…}'` labels JSON as a form, and a
/// form's first field name never starts with `{` or `[`.
pub fn is_form(content_type: Option<&str>, body: &[u8]) -> bool {
    let labelled = content_type.is_some_and(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    labelled && !json
}

/// The change of a form delivery. As in Buildbot, a field given twice
/// counts with its first value; `files` and `properties` are JSON;
/// `when_timestamp` (or `when`) is seconds since the epoch; `who` is the
/// author when `author` is absent. Unknown fields are refused, naming
/// them, except those Buildbot reads and bbc has no place for.
pub fn base_change(body: &[u8]) -> R<Outcome> {
    let mut fields: Map<String, Value> = Map::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut who = None;
    for (k, v) in form_urlencoded::parse(body) {
        if !seen.insert(k.to_string()) {
            continue;
        }
        let k = k.as_ref();
        let json = |what: &str| -> R<Value> {
            serde_json::from_str(&v)
                .map_err(|e| ApiError::bad(format!("form field `{k}` must be {what} in JSON: {e}")))
        };
        match k {
            "repository" | "branch" | "revision" | "author" | "committer" | "comments"
            | "project" | "codebase" => {
                fields.insert(k.to_string(), Value::String(v.to_string()));
            }
            "who" => who = Some(v.to_string()),
            "files" => {
                fields.insert("files".into(), json("a list of strings")?);
            }
            "properties" => {
                fields.insert("properties".into(), json("an object")?);
            }
            "when_timestamp" | "when" => {
                if fields.contains_key("when") {
                    continue;
                }
                let secs: f64 = v.trim().parse().map_err(|_| {
                    ApiError::bad(format!("form field `{k}` must be seconds since the epoch"))
                })?;
                if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
                    return Err(ApiError::bad(format!(
                        "form field `{k}` is out of range: {secs}"
                    )));
                }
                fields.insert("when".into(), Value::from((secs * 1000.0) as i64));
            }
            k if DROPPED.contains(&k) => {}
            other => {
                return Err(ApiError::bad(format!(
                    "unknown form field `{other}`; Buildbot's base hook fields are: revision, branch, repository, project, codebase, comments, author (or who), committer, files, properties, when_timestamp, category, revlink"
                )))
            }
        }
    }
    if let Some(w) = who {
        fields.entry("author").or_insert(Value::String(w));
    }
    if fields.is_empty() {
        return Err(ApiError::bad(
            "an empty form: Buildbot's base hook needs at least a `branch` or a `revision`",
        ));
    }
    let change = change_json::read(&Value::Object(fields), "", "the change source's name")?;
    Ok(Outcome::Changes(vec![change]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> crate::store::NewChange {
        match base_change(body.as_bytes()).unwrap() {
            Outcome::Changes(mut c) => c.remove(0),
            _ => panic!("no change"),
        }
    }

    #[test]
    fn reads_buildbot_form_fields() {
        let c = one("revision=abc123&branch=main&who=Ann+%3Cann%40x.org%3E&comments=fix%0Athe+bug&files=%5B%22a.c%22%2C%22b%2Fc.h%22%5D&properties=%7B%22k%22%3A%22v%22%7D&when_timestamp=1700000000.5&repository=https%3A%2F%2Fx.org%2Fr.git&category=c&revlink=http%3A%2F%2Fx&branch=ignored");
        assert_eq!(c.revision, "abc123");
        assert_eq!(c.branch, "main");
        assert_eq!(c.author, "Ann <ann@x.org>");
        assert_eq!(c.comments, "fix\nthe bug");
        assert_eq!(c.files, ["a.c", "b/c.h"]);
        assert_eq!(c.when, 1_700_000_000_500);
        assert_eq!(c.repository, "https://x.org/r.git");
        assert_eq!(
            c.properties.get("k"),
            Some(&bbc_graph::Scalar::String("v".into()))
        );
    }

    #[test]
    fn mangled_forms_are_errors_never_panics() {
        let form = b"revision=abc&branch=main&who=A&files=%5B%22a%22%5D&properties=%7B%22k%22%3A1%7D&when_timestamp=1700000000.5";
        let mut tried = 0;
        for cut in 0..=form.len() {
            let _ = base_change(&form[..cut]);
            tried += 1;
        }
        for i in 0..form.len() {
            for b in [b'%', b'=', b'&', b'+', 0xff, 0, b'[', b'{', b'-', b'e'] {
                let mut m = form.to_vec();
                m[i] = b;
                let _ = base_change(&m);
                tried += 1;
            }
        }
        for when in ["1e300", "-1", "NaN", "inf", "99999999999999999999"] {
            assert!(base_change(format!("branch=b&when={when}").as_bytes()).is_err());
        }
        assert!(tried > 1000);
    }

    #[test]
    fn json_labelled_as_a_form_stays_json() {
        let form = Some("application/x-www-form-urlencoded; charset=utf-8");
        assert!(is_form(form, b"branch=main"));
        assert!(!is_form(form, b" [{\"branch\": \"a\"}]"));
        assert!(!is_form(form, b"{}"));
        assert!(!is_form(Some("application/json"), b"branch=main"));
        assert!(!is_form(None, b"branch=main"));
    }

    #[test]
    fn author_wins_over_who_and_bad_fields_are_named() {
        assert_eq!(one("branch=b&author=A&who=W").author, "A");
        assert_eq!(one("branch=b&who=W&author=A").author, "A");
        assert_eq!(one("branch=b&who=W").author, "W");
        let err = |b: &str| base_change(b.as_bytes()).err().unwrap().1;
        assert!(err("branch=b&files=nope").contains("`files`"));
        assert!(err("branch=b&colour=red").contains("`colour`"));
        assert!(err("branch=b&when=soon").contains("`when`"));
        assert!(err("who=x").contains("`branch` or a `revision`"));
        assert!(err("").contains("empty form"));
    }
}
