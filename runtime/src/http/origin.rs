//! What caused a build, and which builds a change caused: a build's
//! build set (reason, source stamp, scheduler) and the changes it lists,
//! and the reverse, read from the records the store already keeps
//! (build → requests → build sets → change ids), so no new index has to
//! be kept in step. Runs inside `Shared::db` (blocking store reads).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use crate::change_json::link;
use crate::store::{Build, BuildFilter, BuildSet, Change, Millis, Page, Result, Store};

/// How many builds the change → builds search reads at most: builds are
/// scanned newest first back to the oldest change asked about, and this
/// bounds the work of one request on a master with a long history.
const SCAN_LIMIT: usize = 2000;

/// Build sets read while answering one request, each once.
#[derive(Default)]
pub(crate) struct Sets(HashMap<u64, Option<BuildSet>>);

impl Sets {
    fn get(&mut self, st: &dyn Store, id: u64) -> Result<Option<&BuildSet>> {
        let s = match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(st.buildset(id)?),
        };
        Ok(s.as_ref())
    }

    /// The build sets of a build's requests (several when collapsed),
    /// the first request's first.
    fn of_build(&mut self, st: &dyn Store, b: &Build) -> Result<Vec<BuildSet>> {
        let mut out: Vec<BuildSet> = Vec::new();
        for r in &b.build.requests {
            let Some(req) = st.request(*r)? else { continue };
            if out.iter().any(|s| s.id == req.buildset) {
                continue;
            }
            if let Some(s) = self.get(st, req.buildset)? {
                out.push(s.clone());
            }
        }
        Ok(out)
    }
}

/// A change as a build shows it: who, what, which revision; the
/// comments' first line only (the change itself has the rest).
pub(crate) fn change_summary(c: &Change) -> Value {
    let title = c.change.comments.lines().next().unwrap_or("");
    json!({
        "id": c.id,
        "author": c.change.author,
        "revision": c.change.revision,
        "branch": c.change.branch,
        "repository": c.change.repository,
        "title": title,
        "link": link(c),
    })
}

/// The `origin` object of a build: its (first) build set's reason,
/// scheduler and source stamp, the revision a git step checked out, and
/// the changes of all its build sets.
pub(crate) fn origin(st: &dyn Store, sets: &mut Sets, b: &Build) -> Result<Value> {
    let list = sets.of_build(st, b)?;
    let got = match b.build.properties.get("got_revision") {
        Some(bbc_graph::Scalar::String(s)) => Some(s.clone()),
        _ => None,
    };
    let mut ids: Vec<u64> = list
        .iter()
        .flat_map(|s| s.set.changes.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut changes = Vec::new();
    for id in ids {
        if let Some(c) = st.change(id)? {
            changes.push(change_summary(&c));
        }
    }
    let first = list.first();
    // Every codebase's stamp, with the commit a git step checked out of it
    // (`got_revision.CODEBASE`; `got_revision` for the one codebase "").
    let sources: Vec<Value> = first
        .map(|s| {
            s.set
                .stamps()
                .iter()
                .map(|st| {
                    let key = if st.codebase.is_empty() {
                        "got_revision".to_string()
                    } else {
                        format!("got_revision.{}", st.codebase)
                    };
                    let got = match b.build.properties.get(&key) {
                        Some(bbc_graph::Scalar::String(s)) => Some(s.as_str()),
                        _ => None,
                    };
                    json!({
                        "codebase": st.codebase,
                        "repository": st.repository,
                        "branch": st.branch,
                        "revision": st.revision,
                        "got_revision": got,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "buildset": first.map(|s| s.id),
        "scheduler": first.map(|s| s.set.scheduler.as_str()),
        "reason": first.map(|s| s.set.reason.as_str()),
        "repository": first.map(|s| s.set.source.repository.as_str()),
        "branch": first.map(|s| s.set.source.branch.as_str()),
        "revision": first.map(|s| s.set.source.revision.as_str()),
        "got_revision": got,
        "sources": sources,
        "parent_build": first.and_then(|s| s.set.parent_build),
        "changes": changes,
    }))
}

/// The builds that included each of `changes`, newest first: builds
/// started since the oldest of them was received, read newest first (at
/// most [`SCAN_LIMIT`]). A change older than the scan reaches answers
/// with what was found, and `complete` says whether the scan went back
/// far enough.
pub(crate) fn builds_of(
    st: &dyn Store,
    changes: &[&Change],
) -> Result<(BTreeMap<u64, Vec<Value>>, bool)> {
    let mut out: BTreeMap<u64, Vec<Value>> = changes.iter().map(|c| (c.id, Vec::new())).collect();
    let Some(oldest) = changes.iter().map(|c| c.received_at).min() else {
        return Ok((out, true));
    };
    let mut sets = Sets::default();
    let mut before = None;
    let mut scanned = 0usize;
    loop {
        let page = st.builds(&BuildFilter::default(), Page { before, limit: 200 })?;
        let Some(last) = page.last() else {
            return Ok((out, true));
        };
        before = Some(last.id);
        for b in &page {
            if older(b.build.started_at, oldest) {
                return Ok((out, true));
            }
            scanned += 1;
            for s in sets.of_build(st, b)? {
                for c in &s.set.changes {
                    if let Some(v) = out.get_mut(c) {
                        v.push(json!({
                            "id": b.id,
                            "builder": b.build.builder,
                            "number": b.number,
                            "result": b.result,
                            "complete": b.finished_at.is_some(),
                        }));
                    }
                }
            }
            if scanned >= SCAN_LIMIT {
                return Ok((out, false));
            }
        }
    }
}

/// A build started before a change was received cannot include it.
fn older(started: Millis, received: Millis) -> bool {
    started < received
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewChange;

    fn change(repository: &str, revision: &str, pr_url: Option<&str>) -> Change {
        let mut c = NewChange {
            repository: repository.into(),
            revision: revision.into(),
            ..NewChange::default()
        };
        if let Some(u) = pr_url {
            c.properties
                .insert("pr_url".into(), bbc_graph::Scalar::String(u.into()));
        }
        Change {
            id: 1,
            received_at: 0,
            change: c,
        }
    }

    #[test]
    fn links_only_web_addresses() {
        let l = |r, v, p| link(&change(r, v, p));
        assert_eq!(
            l("https://github.com/o/r.git", "abc123", None).as_deref(),
            Some("https://github.com/o/r/commit/abc123")
        );
        assert_eq!(
            l("https://gitlab.example/g/r/", "ABC", None).as_deref(),
            Some("https://gitlab.example/g/r/commit/ABC")
        );
        // A pull request's page wins over the commit's.
        assert_eq!(
            l(
                "https://github.com/o/r.git",
                "abc",
                Some("https://github.com/o/r/pull/4")
            )
            .as_deref(),
            Some("https://github.com/o/r/pull/4")
        );
        // No page: a path, ssh, a branch name as revision, an empty one,
        // and never a `javascript:` address.
        assert_eq!(l("/srv/git/r", "abc123", None), None);
        assert_eq!(l("git@github.com:o/r.git", "abc123", None), None);
        assert_eq!(l("https://github.com/o/r.git", "main", None), None);
        assert_eq!(l("https://github.com/o/r.git", "", None), None);
        assert_eq!(l("/srv/r", "abc", Some("javascript:alert(1)")), None);
        assert_eq!(
            l("https://github.com/o/r", "abc", Some("javascript:alert(1)")),
            None
        );
    }
}
