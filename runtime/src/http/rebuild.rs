//! `POST /api/v1/builds/{id}/rebuild`: Buildbot's rebuild — a new build
//! request on the same builder, with the original build set's source and
//! properties (docs/api.md).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bbc_graph::{Grant, Scalar};
use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{Control, Scope};
use crate::state::{now_ms, Shared};
use crate::store::{Build, BuildSet, NewBuildSet, SourceStamp};

/// The scheduler a rebuild's build set names, as in Buildbot. Not the
/// original's: a rebuild must not fire that scheduler's dependents (a
/// caller with `rebuild` on one builder would otherwise start builds on
/// others it holds no grant for).
pub(crate) const SCHEDULER: &str = "rebuild";

pub(super) async fn rebuild(
    ctl: Control,
    State(s): State<Arc<Shared>>,
    Path(id): Path<u64>,
) -> R<(StatusCode, Json<Value>)> {
    let found = s
        .db(move |st| {
            let Some(b) = st.build(id)? else {
                return Ok(None);
            };
            // The set of the first request: the one the build took its
            // properties from (master/queue.rs); requests collapsed into
            // it share its source.
            let set = match b.build.requests.first() {
                Some(r) => match st.request(*r)? {
                    Some(req) => st.buildset(req.buildset)?,
                    None => None,
                },
                None => None,
            };
            Ok(Some((b, set)))
        })
        .await?;
    let Some((b, set)) = found else {
        // "You may not" before "no such build", as for cancel.
        ctl.allow(&s, Grant::Rebuild, Scope::SomeBuilder)?;
        return Err(ApiError::not_found(format!("no build {id}")));
    };
    let builder = b.build.builder.clone();
    ctl.allow(&s, Grant::Rebuild, Scope::Builder(&builder))?;
    let what = format!("build {id} ({builder} #{})", b.number);
    if b.finished_at.is_none() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{what} is still running: only a finished build can be rebuilt"),
        ));
    }
    if s.graph().builder(&builder).is_none() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{what} cannot be rebuilt: builder `{builder}` is no longer in the config"),
        ));
    }
    let set = NewBuildSet {
        scheduler: SCHEDULER.into(),
        reason: format!("rebuild of {builder} #{}", b.number),
        ..original(&b, set)
    };
    let (bs, reqs) = s.submit(set, vec![builder]).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"buildset": bs, "requests": reqs, "rebuild_of": id})),
    ))
}

/// What the build ran on: its set's source, changes and properties, with
/// the revision pinned to the commit a git step checked out
/// (`got_revision`), so that a rebuild of "the latest" builds the same
/// commit, not a newer one. A set that is gone (never, today: retention
/// keeps sets) falls back on the build's own properties.
fn original(b: &Build, set: Option<BuildSet>) -> NewBuildSet {
    let prop = |name: &str| match b.build.properties.get(name) {
        Some(Scalar::String(v)) => v.clone(),
        _ => String::new(),
    };
    let (stamps, changes, properties, priority) = match set {
        Some(set) => (
            set.set.stamps().to_vec(),
            set.set.changes,
            set.set.properties,
            set.set.priority,
        ),
        None => (
            vec![SourceStamp {
                codebase: prop("codebase"),
                repository: prop("repository"),
                branch: prop("branch"),
                revision: prop("revision"),
            }],
            Vec::new(),
            Default::default(),
            0,
        ),
    };
    // Every codebase is pinned: to `got_revision.CODEBASE` when a git
    // step checked it out, the first one also to `got_revision` (a git
    // step naming no codebase checks the first out).
    let got = prop("got_revision");
    let sources: Vec<SourceStamp> = stamps
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let own = if st.codebase.is_empty() {
                String::new()
            } else {
                prop(&format!("got_revision.{}", st.codebase))
            };
            let pin = match (own.is_empty(), i) {
                (false, _) => own,
                (true, 0) => got.clone(),
                (true, _) => String::new(),
            };
            SourceStamp {
                revision: if pin.is_empty() { st.revision } else { pin },
                ..st
            }
        })
        .collect();
    NewBuildSet {
        priority,
        scheduler: String::new(),
        reason: String::new(),
        source: sources.first().cloned().unwrap_or_default(),
        sources,
        changes,
        properties,
        parent_build: None,
        submitted_at: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewBuild;

    fn build(props: &[(&str, &str)]) -> Build {
        Build {
            id: 7,
            number: 3,
            build: NewBuild {
                builder: "b".into(),
                builder_hash: String::new(),
                worker: "w".into(),
                requests: vec![1],
                properties: props
                    .iter()
                    .map(|(k, v)| (k.to_string(), Scalar::String(v.to_string())))
                    .collect(),
                started_at: 1,
            },
            finished_at: Some(2),
            result: None,
            state_string: String::new(),
            logs_deleted_at: None,
            master: None,
        }
    }

    fn set(revision: &str) -> BuildSet {
        BuildSet {
            id: 1,
            set: NewBuildSet {
                priority: 0,
                scheduler: "force".into(),
                reason: "forced".into(),
                source: SourceStamp {
                    codebase: String::new(),
                    repository: "r".into(),
                    branch: "main".into(),
                    revision: revision.into(),
                },
                sources: Vec::new(),
                changes: vec![4],
                properties: [("p".to_string(), Scalar::Int(1))].into(),
                parent_build: Some(9),
                submitted_at: 1,
            },
            result: None,
            completed_at: None,
        }
    }

    #[test]
    fn a_rebuild_pins_the_revision_the_build_checked_out() {
        let n = original(&build(&[("got_revision", "abc")]), Some(set("")));
        assert_eq!(n.source.revision, "abc");
        assert_eq!(
            (n.source.repository.as_str(), n.source.branch.as_str()),
            ("r", "main")
        );
        assert_eq!(n.changes, [4]);
        assert_eq!(n.properties.get("p"), Some(&Scalar::Int(1)));
        assert_eq!(n.parent_build, None, "a rebuild is nobody's trigger");
        // Without a git step: the set's own revision, empty or not.
        assert_eq!(
            original(&build(&[]), Some(set("def"))).source.revision,
            "def"
        );
        assert_eq!(original(&build(&[]), Some(set(""))).source.revision, "");
        // No set: the build's properties say what it ran on.
        let n = original(&build(&[("branch", "dev"), ("revision", "r1")]), None);
        assert_eq!(
            (n.source.branch.as_str(), n.source.revision.as_str()),
            ("dev", "r1")
        );
    }

    #[test]
    fn a_rebuild_pins_every_codebase() {
        let stamp = |cb: &str, rev: &str| SourceStamp {
            codebase: cb.into(),
            repository: format!("https://example.org/{cb}.git"),
            branch: "main".into(),
            revision: rev.into(),
        };
        let mut s = set("");
        s.set.sources = vec![stamp("app", "a1"), stamp("lib", ""), stamp("doc", "")];
        s.set.source = s.set.sources[0].clone();
        let b = build(&[
            ("got_revision", "a2"),
            ("got_revision.app", "a2"),
            ("got_revision.lib", "l7"),
        ]);
        let n = original(&b, Some(s));
        let revs: Vec<(&str, &str)> = n
            .sources
            .iter()
            .map(|s| (s.codebase.as_str(), s.revision.as_str()))
            .collect();
        // `doc` was never checked out: it stays at its branch's head.
        assert_eq!(revs, [("app", "a2"), ("lib", "l7"), ("doc", "")]);
        assert_eq!(n.source, n.sources[0]);
    }
}
