//! The conformance suite every `Store` backend must pass.
//!
//! `run_all(&open)` runs each check against a fresh store: `open(dir)` must
//! return a store whose state lives in (or is named by) the empty directory
//! `dir`, and opening the same `dir` again after the store was dropped must
//! give back the same state. A PostgreSQL backend would map `dir` to a fresh
//! schema or database and ignore the path otherwise.
//!
//! The checks panic on failure (they are test code); each one prints its
//! name to stderr first, so a failure says which behaviour broke.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bbc_graph::{BuildResult, Scalar};

use super::{
    BuildFilter, BuildRequest, NewBuild, NewBuildSet, NewChange, Page, Properties, RequestFilter,
    RequestState, Retention, SourceStamp, StepRecord, Store, StoreError,
};

/// How a backend is opened on a state directory.
pub type Open<'a> = &'a dyn Fn(&Path) -> Box<dyn Store>;

type Check = fn(Open<'_>, &Path);

// Sealed (compressed) logs, retention's prune and disk usage: the checks
// of what a master keeps over years.
mod retention;
pub use retention::compiler_like_log;

// Steps and logs of running builds.
mod logs;

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("changes: ids, lookup, newest first, pagination", changes),
    (
        "audit log: ids, newest first, pagination, reopened",
        audit_log,
    ),
    (
        "build sets: one pending request per builder",
        buildsets_and_requests,
    ),
    ("build sets: no builders completes at once", empty_buildset),
    (
        "build sets: one stamp per codebase, kept across a reopen",
        codebases,
    ),
    ("requests: filters and pagination", request_filters),
    (
        "requests: request priority and collapsed_into, kept across a reopen",
        request_priority_and_collapse,
    ),
    (
        "start_build: numbers per builder, claims requests",
        start_build_claims,
    ),
    (
        "start_build: a conflicting claim changes nothing",
        claim_conflict,
    ),
    (
        "finish_build: requests complete, set gets the worst result",
        finish_completes,
    ),
    ("finish_build: retry requeues the requests", retry_requeues),
    ("cancel_request: only pending, may complete the set", cancel),
    ("builds: filters and pagination", build_filters),
    ("builds: state, properties, finishing twice", build_state),
    (
        "interrupt_running: running builds retry, requests pending",
        interrupt_running,
    ),
    ("steps: put, replace, order", logs::steps),
    ("logs: append, read at offsets, length, sync", logs::logs),
    (
        "logs: many logs at once, large log in pieces",
        logs::many_logs,
    ),
    ("workers: connected, disconnected, reconnected", workers),
    ("scheduler state: get and put", state),
    ("persistence: everything survives a reopen", persistence),
    ("backup: a consistent copy that opens as a store", backup),
    ("health: Ok on a working store, conflicts included", health),
    (
        "sealed logs: byte-exact at every offset, refuse appends",
        retention::sealed_logs,
    ),
    (
        "sealed logs: survive a reopen and a backup",
        retention::sealed_persist,
    ),
    (
        "prune: by age from the end, keep-last, logs only, small steps",
        retention::prune,
    ),
    (
        "prune: never running builds nor builds of live requests; numbers go on",
        retention::prune_keeps,
    ),
    (
        "builder_usage: builds and log bytes per builder",
        retention::usage,
    ),
    (
        "prune_audit: oldest first, by age, in bounded steps, durable",
        retention::prune_audit,
    ),
];

/// Runs every check, each against a fresh store in its own empty directory.
pub fn run_all(open: Open<'_>) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        let dir = TempDir::new();
        check(open, dir.path());
    }
}

/// A directory removed on drop (the suite lives in the library, which does
/// not depend on `tempfile`).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "bbc-store-{}-{}-{}",
            std::process::id(),
            nanos,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- fixtures

fn props(pairs: &[(&str, Scalar)]) -> Properties {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn change(n: i64) -> NewChange {
    NewChange {
        source: "git".into(),
        repository: "https://example.org/repo.git".into(),
        branch: "main".into(),
        revision: format!("{n:040x}"),
        author: "A U Thor <a@example.org>".into(),
        comments: format!("change {n}"),
        files: vec!["src/lib.rs".into(), format!("f{n}")],
        when: 1_000 + n,
        properties: props(&[("pr_number", Scalar::Int(n)), ("ratio", Scalar::Float(0.5))]),
        ..NewChange::default()
    }
}

fn buildset(reason: &str, at: i64) -> NewBuildSet {
    NewBuildSet {
        priority: 0,
        scheduler: "sched".into(),
        reason: reason.into(),
        source: SourceStamp {
            codebase: String::new(),
            repository: "https://example.org/repo.git".into(),
            branch: "main".into(),
            revision: "abc".into(),
        },
        sources: Vec::new(),
        changes: vec![1, 2],
        properties: props(&[
            ("flag", Scalar::Bool(true)),
            ("who", Scalar::String("me".into())),
        ]),
        parent_build: None,
        submitted_at: at,
    }
}

/// A build set's record as stored before codebases: one `source` without
/// `codebase`, no `sources`. Each backend's tests write it under `id` with
/// their raw access, then check it with [`reads_old_buildset`].
pub fn old_buildset_record(id: u64) -> String {
    format!(
        r#"{{"id":{id},"scheduler":"ci","reason":"scheduler ci: 1 change(s)","source":{{"repository":"https://example.org/repo.git","branch":"main","revision":"abc"}},"changes":[3],"properties":{{"who":"me"}},"parent_build":null,"submitted_at":1000,"result":null,"completed_at":null}}"#
    )
}

/// The record of [`old_buildset_record`] reads back as one stamp of
/// codebase `""` (serde defaults: no migration needed).
pub fn reads_old_buildset(s: &dyn Store, id: u64) {
    let set = s
        .buildset(id)
        .unwrap()
        .unwrap_or_else(|| panic!("build set {id} is gone"));
    let want = SourceStamp {
        codebase: String::new(),
        repository: "https://example.org/repo.git".into(),
        branch: "main".into(),
        revision: "abc".into(),
    };
    assert_eq!(set.set.source, want);
    assert!(set.set.sources.is_empty(), "{:?}", set.set.sources);
    assert_eq!(set.set.stamps(), std::slice::from_ref(&want));
    assert_eq!(set.set.stamp(""), Some(&want));
    assert_eq!(set.set.changes, [3]);
}

fn builders(names: &[&str]) -> Vec<(String, i64)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i as i64))
        .collect()
}

fn new_build(builder: &str, requests: &[u64], at: i64) -> NewBuild {
    NewBuild {
        builder: builder.into(),
        builder_hash: "h1".into(),
        worker: "w1".into(),
        requests: requests.to_vec(),
        properties: props(&[("buildnumber_hint", Scalar::Int(at))]),
        started_at: at,
    }
}

fn page(before: Option<u64>, limit: usize) -> Page {
    Page { before, limit }
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> u64) -> Vec<u64> {
    items.iter().map(id).collect()
}

fn req(s: &dyn Store, id: u64) -> BuildRequest {
    s.request(id)
        .unwrap()
        .unwrap_or_else(|| panic!("request {id} is missing"))
}

fn is_conflict<T: std::fmt::Debug>(r: super::Result<T>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

// --- checks

fn changes(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    assert!(s.changes(Page::default()).unwrap().is_empty());
    for n in 1..=5 {
        let c = s.add_change(change(n), 10 * n).unwrap();
        assert_eq!(c.id, n as u64, "change ids start at 1 and increase");
        assert_eq!(c.received_at, 10 * n);
        assert_eq!(c.change, change(n));
    }
    let c3 = s.change(3).unwrap().unwrap();
    assert_eq!((c3.id, c3.received_at, &c3.change), (3, 30, &change(3)));
    assert_eq!(s.change(0).unwrap(), None);
    assert_eq!(s.change(99).unwrap(), None);
    assert_eq!(
        ids(&s.changes(Page::default()).unwrap(), |c| c.id),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(ids(&s.changes(page(None, 2)).unwrap(), |c| c.id), [5, 4]);
    assert_eq!(ids(&s.changes(page(Some(4), 2)).unwrap(), |c| c.id), [3, 2]);
    assert_eq!(ids(&s.changes(page(Some(2), 10)).unwrap(), |c| c.id), [1]);
    assert!(s.changes(page(Some(1), 10)).unwrap().is_empty());
    assert!(s.changes(page(None, 0)).unwrap().is_empty());
    assert_eq!(ids(&s.changes(page(Some(100), 1)).unwrap(), |c| c.id), [5]);
}

pub(super) fn audit_entry(n: u64) -> super::NewAuditEntry {
    super::NewAuditEntry {
        who: format!("user{n}"),
        method: "POST".into(),
        path: format!("/api/v1/builds/{n}/cancel"),
        builder: (n % 2 == 0).then(|| "b".to_string()),
        build: Some(n),
        peer: Some("127.0.0.1:5000".into()),
        status: 200,
    }
}

fn audit_log(open: Open<'_>, dir: &Path) {
    {
        let s = open(dir);
        assert!(s.audit(Page::default()).unwrap().is_empty());
        for n in 1..=4 {
            let e = s.add_audit(audit_entry(n), 100 + n as i64).unwrap();
            assert_eq!((e.id, e.at), (n, 100 + n as i64), "audit ids start at 1");
            assert_eq!(e.entry, audit_entry(n));
        }
        // Audit entries have their own ids: a change still starts at 1.
        assert_eq!(s.add_change(change(1), 1).unwrap().id, 1);
        assert_eq!(ids(&s.audit(page(None, 3)).unwrap(), |e| e.id), [4, 3, 2]);
        assert_eq!(ids(&s.audit(page(Some(2), 10)).unwrap(), |e| e.id), [1]);
        assert!(s.audit(page(None, 0)).unwrap().is_empty());
    }
    let s = open(dir);
    let all = s.audit(Page::default()).unwrap();
    assert_eq!(ids(&all, |e| e.id), [4, 3, 2, 1], "kept across a reopen");
    assert_eq!(all[0].entry, audit_entry(4));
    assert_eq!(s.add_audit(audit_entry(5), 200).unwrap().id, 5);
}

fn buildsets_and_requests(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    assert_eq!(s.newest_buildset().unwrap(), 0);
    let (set, reqs) = s
        .add_buildset(buildset("first", 100), &builders(&["lin", "win", "mac"]))
        .unwrap();
    assert_eq!(set.id, 1);
    assert_eq!(set.set, buildset("first", 100));
    assert_eq!((set.result, set.completed_at), (None, None));
    assert_eq!(ids(&reqs, |r| r.id), [1, 2, 3]);
    for (r, (name, prio)) in reqs.iter().zip(builders(&["lin", "win", "mac"])) {
        assert_eq!(r.buildset, 1);
        assert_eq!((&r.builder, r.priority), (&name, prio));
        assert_eq!(r.submitted_at, 100);
        assert_eq!(r.state, RequestState::Pending);
        assert_eq!((r.build, r.result, r.completed_at), (None, None, None));
        assert_eq!(&req(s.as_ref(), r.id), r);
    }
    assert_eq!(s.buildset(1).unwrap(), Some(set));
    assert_eq!(s.buildset(2).unwrap(), None);
    assert_eq!(s.request(4).unwrap(), None);
    let (set2, reqs2) = s
        .add_buildset(buildset("second", 200), &builders(&["lin", "lin"]))
        .unwrap();
    assert_eq!(set2.id, 2);
    assert_eq!(
        ids(&reqs2, |r| r.id),
        [4, 5],
        "request ids continue across sets"
    );
    // Several at once: the ones that exist, whatever the order asked.
    let mut both = s.buildsets(&[2, 99, 1]).unwrap();
    both.sort_by_key(|b| b.id);
    assert_eq!(both, [s.buildset(1).unwrap().unwrap(), set2.clone()]);
    assert_eq!(s.buildsets(&[]).unwrap(), []);
    assert_eq!(
        ids(&s.pending_requests().unwrap(), |r| r.id),
        [1, 2, 3, 4, 5],
        "oldest first"
    );
    // The sets after an id, oldest first, and the newest id.
    assert_eq!(s.newest_buildset().unwrap(), 2);
    assert_eq!(ids(&s.buildsets_after(0, 10).unwrap(), |b| b.id), [1, 2]);
    assert_eq!(ids(&s.buildsets_after(0, 1).unwrap(), |b| b.id), [1]);
    assert_eq!(s.buildsets_after(1, 10).unwrap(), vec![set2]);
    assert!(s.buildsets_after(2, 10).unwrap().is_empty());
    assert!(s.buildsets_after(u64::MAX, 10).unwrap().is_empty());
}

fn codebases(open: Open<'_>, dir: &Path) {
    let stamp = |codebase: &str, revision: &str| SourceStamp {
        codebase: codebase.into(),
        repository: format!("https://example.org/{codebase}.git"),
        branch: "main".into(),
        revision: revision.into(),
    };
    let mut set = buildset("two codebases", 100);
    set.sources = vec![stamp("app", "a1"), stamp("lib", "")];
    set.source = set.sources[0].clone();
    let (spanning, one) = {
        let s = open(dir);
        let (bs, _) = s.add_buildset(set.clone(), &builders(&["b"])).unwrap();
        assert_eq!(bs.set, set, "the answer keeps every stamp");
        // A set of one stamp, as schedulers without codebases submit it.
        let mut plain = buildset("one codebase", 200);
        plain.sources = vec![plain.source.clone()];
        let (one, _) = s.add_buildset(plain, &builders(&["b"])).unwrap();
        (bs, one)
    };
    let s = open(dir);
    let back = s.buildset(spanning.id).unwrap().unwrap();
    assert_eq!(back.set, set, "every stamp survives a reopen");
    assert_eq!(
        back.set.stamp("lib").map(|st| st.revision.as_str()),
        Some("")
    );
    assert_eq!(back.set.stamp("doc"), None);
    let back = s.buildset(one.id).unwrap().unwrap();
    assert_eq!(back.set.stamps(), std::slice::from_ref(&back.set.source));
    assert_eq!(back.set.source.codebase, "");
}

fn request_priority_and_collapse(open: Open<'_>, dir: &Path) {
    let (urgent, plain) = {
        let s = open(dir);
        let mut set = buildset("urgent", 100);
        set.priority = 7;
        let (bs, urgent) = s
            .add_buildset(set.clone(), &builders(&["lin", "win"]))
            .unwrap();
        assert_eq!(bs.set, set, "the set keeps its priority");
        for r in &urgent {
            assert_eq!(r.request_priority, 7, "each request gets the set's");
            assert_eq!(r.collapsed_into, None);
            assert_eq!(&req(s.as_ref(), r.id), r);
        }
        assert_eq!(urgent[1].priority, 1, "the builder's priority stays apart");
        let (_, plain) = s
            .add_buildset(buildset("plain", 200), &builders(&["lin"]))
            .unwrap();
        assert_eq!(plain[0].request_priority, 0);
        // One build for both requests of `lin`, run for the newer one
        // (named first): the older is collapsed into it.
        let b = s
            .start_build(new_build("lin", &[plain[0].id, urgent[0].id], 300))
            .unwrap();
        let (newer, older) = (req(s.as_ref(), plain[0].id), req(s.as_ref(), urgent[0].id));
        assert_eq!((newer.build, newer.collapsed_into), (Some(b.id), None));
        assert_eq!(
            (older.build, older.collapsed_into),
            (Some(b.id), Some(plain[0].id))
        );
        assert_eq!(older.state, RequestState::Claimed);
        s.finish_build(b.id, BuildResult::Success, 400).unwrap();
        let older = req(s.as_ref(), urgent[0].id);
        assert_eq!(
            older.result,
            Some(BuildResult::Success),
            "shares the result"
        );
        assert_eq!(older.collapsed_into, Some(plain[0].id));
        (urgent, plain)
    };
    let s = open(dir);
    let older = req(s.as_ref(), urgent[0].id);
    assert_eq!(
        (older.request_priority, older.collapsed_into),
        (7, Some(plain[0].id)),
        "kept across a reopen"
    );
    let pending = s.pending_requests().unwrap();
    assert_eq!(ids(&pending, |r| r.id), [urgent[1].id]);
    assert_eq!(pending[0].request_priority, 7);
    assert_eq!(
        s.buildset(urgent[0].buildset)
            .unwrap()
            .map(|b| b.set.priority),
        Some(7)
    );
    // Run alone, a request is collapsed into none; back after a retry and
    // claimed by a build for a newer one, it is collapsed into that.
    let b = s
        .start_build(new_build("win", &[urgent[1].id], 500))
        .unwrap();
    assert_eq!(req(s.as_ref(), urgent[1].id).collapsed_into, None);
    s.finish_build(b.id, BuildResult::Retry, 600).unwrap();
    let (_, later) = s
        .add_buildset(buildset("later", 700), &builders(&["win"]))
        .unwrap();
    s.start_build(new_build("win", &[later[0].id, urgent[1].id], 800))
        .unwrap();
    assert_eq!(
        req(s.as_ref(), urgent[1].id).collapsed_into,
        Some(later[0].id)
    );
    assert_eq!(req(s.as_ref(), later[0].id).request_priority, 0);
}

fn empty_buildset(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    let (set, reqs) = s.add_buildset(buildset("nothing", 100), &[]).unwrap();
    assert!(reqs.is_empty());
    assert_eq!(set.result, Some(BuildResult::Success));
    assert_eq!(set.completed_at, Some(100));
    assert_eq!(s.buildset(set.id).unwrap(), Some(set));
}

fn request_filters(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win"]))
        .unwrap(); // 1, 2
    s.add_buildset(buildset("b", 2), &builders(&["lin", "mac"]))
        .unwrap(); // 3, 4
    s.add_buildset(buildset("c", 3), &builders(&["lin", "win"]))
        .unwrap(); // 5, 6
    s.start_build(new_build("lin", &[3], 10)).unwrap();
    assert!(s.cancel_request(6, 11).unwrap());
    let all = RequestFilter::default();
    let q = |f: &RequestFilter, p: Page| ids(&s.requests(f, p).unwrap(), |r| r.id);
    assert_eq!(q(&all, Page::default()), [6, 5, 4, 3, 2, 1]);
    assert_eq!(q(&all, page(Some(5), 2)), [4, 3]);
    let lin = RequestFilter {
        builder: Some("lin".into()),
        ..RequestFilter::default()
    };
    assert_eq!(q(&lin, Page::default()), [5, 3, 1]);
    assert_eq!(q(&lin, page(Some(5), 1)), [3]);
    assert_eq!(q(&lin, page(Some(3), 10)), [1]);
    let set2 = RequestFilter {
        buildset: Some(2),
        ..RequestFilter::default()
    };
    assert_eq!(q(&set2, Page::default()), [4, 3]);
    assert_eq!(q(&set2, page(Some(4), 10)), [3]);
    let pending = RequestFilter {
        state: Some(RequestState::Pending),
        ..RequestFilter::default()
    };
    assert_eq!(q(&pending, Page::default()), [5, 4, 2, 1]);
    assert_eq!(q(&pending, page(Some(4), 1)), [2]);
    let claimed = RequestFilter {
        state: Some(RequestState::Claimed),
        ..RequestFilter::default()
    };
    assert_eq!(q(&claimed, Page::default()), [3]);
    let cancelled = RequestFilter {
        state: Some(RequestState::Cancelled),
        ..RequestFilter::default()
    };
    assert_eq!(q(&cancelled, Page::default()), [6]);
    let lin_pending = RequestFilter {
        builder: Some("lin".into()),
        state: Some(RequestState::Pending),
        ..RequestFilter::default()
    };
    assert_eq!(q(&lin_pending, Page::default()), [5, 1]);
    let set3_win = RequestFilter {
        builder: Some("win".into()),
        buildset: Some(3),
        state: None,
    };
    assert_eq!(q(&set3_win, Page::default()), [6]);
    let nobody = RequestFilter {
        builder: Some("nobody".into()),
        ..RequestFilter::default()
    };
    assert!(q(&nobody, Page::default()).is_empty());
    assert!(q(&all, page(None, 0)).is_empty());
    assert_eq!(ids(&s.pending_requests().unwrap(), |r| r.id), [1, 2, 4, 5]);
}

fn start_build_claims(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "lin", "win"]))
        .unwrap(); // 1, 2, 3
    let b1 = s.start_build(new_build("lin", &[1], 10)).unwrap();
    assert_eq!((b1.id, b1.number), (1, 1));
    assert_eq!(b1.build, new_build("lin", &[1], 10));
    assert_eq!((b1.finished_at, b1.result), (None, None));
    assert_eq!(b1.state_string, "starting");
    let b2 = s.start_build(new_build("win", &[3], 11)).unwrap();
    assert_eq!((b2.id, b2.number), (2, 1), "numbers are per builder");
    let b3 = s.start_build(new_build("lin", &[2], 12)).unwrap();
    assert_eq!((b3.id, b3.number), (3, 2));
    let r1 = req(s.as_ref(), 1);
    assert_eq!((r1.state, r1.build), (RequestState::Claimed, Some(1)));
    assert_eq!(req(s.as_ref(), 3).build, Some(2));
    assert!(s.pending_requests().unwrap().is_empty());
    assert_eq!(s.build(3).unwrap(), Some(b3.clone()));
    assert_eq!(s.build(4).unwrap(), None);
    assert_eq!(s.build_by_number("lin", 2).unwrap(), Some(b3));
    assert_eq!(s.build_by_number("win", 1).unwrap(), Some(b2));
    assert_eq!(s.build_by_number("lin", 1).unwrap(), Some(b1));
    assert_eq!(s.build_by_number("lin", 3).unwrap(), None);
    assert_eq!(s.build_by_number("mac", 1).unwrap(), None);
    // A build may satisfy several (collapsed) requests, or none.
    s.add_buildset(buildset("b", 2), &builders(&["lin", "lin"]))
        .unwrap(); // 4, 5
    let b4 = s.start_build(new_build("lin", &[4, 5], 13)).unwrap();
    assert_eq!((b4.id, b4.number), (4, 3));
    assert_eq!(
        (req(s.as_ref(), 4).build, req(s.as_ref(), 5).build),
        (Some(4), Some(4))
    );
    let b5 = s.start_build(new_build("mac", &[], 14)).unwrap();
    assert_eq!((b5.id, b5.number), (5, 1));
}

/// `health` speaks of the disk and database, not of refused operations:
/// a conflict is the caller's mistake, and the store still writes. (How a
/// backend reports a disk that cannot write is tested with the backend,
/// on a real full disk.)
fn health(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.health().unwrap();
    s.add_buildset(buildset("a", 1), &builders(&["lin"]))
        .unwrap();
    s.start_build(new_build("lin", &[1], 10)).unwrap();
    assert!(is_conflict(s.start_build(new_build("lin", &[1], 20))));
    assert!(is_conflict(s.finish_build(99, BuildResult::Success, 30)));
    s.health().unwrap();
    s.finish_build(1, BuildResult::Success, 40).unwrap();
    s.health().unwrap();
    drop(s);
    open(dir).health().unwrap();
}

fn claim_conflict(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "lin", "lin"]))
        .unwrap(); // 1, 2, 3
    s.start_build(new_build("lin", &[2], 10)).unwrap(); // build 1, #1
    assert!(s.cancel_request(3, 11).unwrap());
    let before: Vec<_> = (1..=3).map(|id| req(s.as_ref(), id)).collect();
    // 1 is pending, 2 is claimed: nothing may change, not even request 1.
    assert!(is_conflict(s.start_build(new_build("lin", &[1, 2], 20))));
    assert!(
        is_conflict(s.start_build(new_build("lin", &[1, 3], 20))),
        "cancelled"
    );
    assert!(
        is_conflict(s.start_build(new_build("lin", &[1, 99], 20))),
        "missing"
    );
    let after: Vec<_> = (1..=3).map(|id| req(s.as_ref(), id)).collect();
    assert_eq!(before, after);
    assert_eq!(ids(&s.pending_requests().unwrap(), |r| r.id), [1]);
    assert_eq!(
        ids(
            &s.builds(&BuildFilter::default(), Page::default()).unwrap(),
            |b| b.id
        ),
        [1]
    );
    assert_eq!(s.build_by_number("lin", 2).unwrap(), None);
    // Failed attempts use up no build number. (A backend whose ids come from
    // a non-transactional sequence, as PostgreSQL's do, may skip ids.)
    let b = s.start_build(new_build("lin", &[1], 30)).unwrap();
    assert!(b.id > 1);
    assert_eq!(b.number, 2);
    assert!(
        is_conflict(s.start_build(new_build("lin", &[1], 31))),
        "claimed twice"
    );
}

fn finish_completes(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win", "mac"]))
        .unwrap(); // 1, 2, 3
    s.start_build(new_build("lin", &[1], 10)).unwrap(); // 1
    s.start_build(new_build("win", &[2], 10)).unwrap(); // 2
    s.start_build(new_build("mac", &[3], 10)).unwrap(); // 3
    s.finish_build(2, BuildResult::Failure, 20).unwrap();
    let b2 = s.build(2).unwrap().unwrap();
    assert_eq!(
        (b2.finished_at, b2.result),
        (Some(20), Some(BuildResult::Failure))
    );
    let r2 = req(s.as_ref(), 2);
    assert_eq!(
        (r2.state, r2.build, r2.result, r2.completed_at),
        (
            RequestState::Complete,
            Some(2),
            Some(BuildResult::Failure),
            Some(20)
        )
    );
    assert_eq!(
        s.buildset(1).unwrap().unwrap().result,
        None,
        "requests still running"
    );
    s.finish_build(1, BuildResult::Warnings, 30).unwrap();
    assert_eq!(s.buildset(1).unwrap().unwrap().result, None);
    s.finish_build(3, BuildResult::Success, 40).unwrap();
    let set = s.buildset(1).unwrap().unwrap();
    assert_eq!(
        (set.result, set.completed_at),
        (Some(BuildResult::Failure), Some(40)),
        "the worst result"
    );
    // A collapsed build completes all its requests, across sets.
    s.add_buildset(buildset("b", 2), &builders(&["lin"]))
        .unwrap(); // 4
    s.add_buildset(buildset("c", 3), &builders(&["lin"]))
        .unwrap(); // 5
    s.start_build(new_build("lin", &[4, 5], 50)).unwrap(); // 4
    s.finish_build(4, BuildResult::Exception, 60).unwrap();
    for (set, r) in [(2, 4), (3, 5)] {
        assert_eq!(req(s.as_ref(), r).result, Some(BuildResult::Exception));
        let set = s.buildset(set).unwrap().unwrap();
        assert_eq!(
            (set.result, set.completed_at),
            (Some(BuildResult::Exception), Some(60))
        );
    }
    assert!(
        is_conflict(s.finish_build(99, BuildResult::Success, 70)),
        "unknown build"
    );
}

fn retry_requeues(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win"]))
        .unwrap(); // 1, 2
    s.start_build(new_build("lin", &[1], 10)).unwrap(); // 1
    s.start_build(new_build("win", &[2], 10)).unwrap(); // 2
    s.finish_build(2, BuildResult::Success, 15).unwrap();
    s.finish_build(1, BuildResult::Retry, 20).unwrap();
    let b1 = s.build(1).unwrap().unwrap();
    assert_eq!(b1.result, Some(BuildResult::Retry));
    let r1 = req(s.as_ref(), 1);
    assert_eq!(
        (r1.state, r1.build, r1.result, r1.completed_at),
        (RequestState::Pending, Some(1), None, None),
        "pending again, pointing at the build that ran it last"
    );
    assert_eq!(ids(&s.pending_requests().unwrap(), |r| r.id), [1]);
    assert_eq!(
        s.buildset(1).unwrap().unwrap().result,
        None,
        "a retried request is not done"
    );
    let b3 = s.start_build(new_build("lin", &[1], 30)).unwrap();
    assert_eq!((b3.id, b3.number), (3, 2));
    assert_eq!(req(s.as_ref(), 1).build, Some(3));
    s.finish_build(3, BuildResult::Warnings, 40).unwrap();
    let set = s.buildset(1).unwrap().unwrap();
    assert_eq!(
        (set.result, set.completed_at),
        (Some(BuildResult::Warnings), Some(40))
    );
    assert_eq!(req(s.as_ref(), 1).result, Some(BuildResult::Warnings));
}

fn cancel(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win"]))
        .unwrap(); // 1, 2
    s.start_build(new_build("lin", &[1], 10)).unwrap();
    assert!(
        !s.cancel_request(1, 11).unwrap(),
        "claimed requests are not cancelled"
    );
    assert!(!s.cancel_request(99, 11).unwrap(), "unknown request");
    assert!(s.cancel_request(2, 12).unwrap());
    let r2 = req(s.as_ref(), 2);
    assert_eq!(
        (r2.state, r2.completed_at),
        (RequestState::Cancelled, Some(12))
    );
    assert!(!s.cancel_request(2, 13).unwrap(), "already cancelled");
    assert_eq!(s.buildset(1).unwrap().unwrap().result, None);
    s.finish_build(1, BuildResult::Success, 20).unwrap();
    let set = s.buildset(1).unwrap().unwrap();
    assert_eq!(
        (set.result, set.completed_at),
        (Some(BuildResult::Cancelled), Some(20)),
        "cancelled counts as Cancelled"
    );
    // Cancelling the last open request completes the set.
    s.add_buildset(buildset("b", 2), &builders(&["lin", "win"]))
        .unwrap(); // 3, 4
    assert!(s.cancel_request(3, 30).unwrap());
    assert_eq!(s.buildset(2).unwrap().unwrap().result, None);
    assert!(s.cancel_request(4, 31).unwrap());
    let set = s.buildset(2).unwrap().unwrap();
    assert_eq!(
        (set.result, set.completed_at),
        (Some(BuildResult::Cancelled), Some(31))
    );
    assert!(s.pending_requests().unwrap().is_empty());
    assert!(is_conflict(s.start_build(new_build("lin", &[3], 40))));
}

fn build_filters(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    // 30 builds over three builders; every third lin build still running.
    let names = ["lin", "win", "mac"];
    for i in 0..30u64 {
        let b = s
            .start_build(new_build(names[(i % 3) as usize], &[], i as i64))
            .unwrap();
        assert_eq!(b.id, i + 1);
        assert_eq!(b.number, i / 3 + 1);
        let result = if i % 2 == 0 {
            BuildResult::Success
        } else {
            BuildResult::Failure
        };
        if !(i % 3 == 0 && i % 9 == 0) {
            s.finish_build(b.id, result, 100 + i as i64).unwrap();
        }
    }
    let q = |f: &BuildFilter, p: Page| ids(&s.builds(f, p).unwrap(), |b| b.id);
    let all = BuildFilter::default();
    assert_eq!(q(&all, page(None, 3)), [30, 29, 28]);
    assert_eq!(q(&all, page(Some(3), 10)), [2, 1]);
    assert_eq!(q(&all, Page::default()).len(), 30);
    let lin = BuildFilter {
        builder: Some("lin".into()),
        ..BuildFilter::default()
    };
    assert_eq!(
        q(&lin, Page::default()),
        [28, 25, 22, 19, 16, 13, 10, 7, 4, 1]
    );
    assert_eq!(q(&lin, page(Some(22), 3)), [19, 16, 13]);
    assert_eq!(
        q(&lin, page(Some(20), 2)),
        [19, 16],
        "before need not be one of the builder's"
    );
    let running = BuildFilter {
        running: true,
        ..BuildFilter::default()
    };
    assert_eq!(q(&running, Page::default()), [28, 19, 10, 1]);
    assert_eq!(q(&running, page(Some(19), 1)), [10]);
    let win = BuildFilter {
        builder: Some("win".into()),
        running: true,
        ..BuildFilter::default()
    };
    assert!(q(&win, Page::default()).is_empty());
    let failed = BuildFilter {
        result: Some(BuildResult::Failure),
        ..BuildFilter::default()
    };
    assert_eq!(q(&failed, page(None, 4)), [30, 26, 24, 22]);
    let lin_ok = BuildFilter {
        builder: Some("lin".into()),
        result: Some(BuildResult::Success),
        running: false,
    };
    assert_eq!(q(&lin_ok, Page::default()), [25, 13, 7]);
    let nobody = BuildFilter {
        builder: Some("nobody".into()),
        ..BuildFilter::default()
    };
    assert!(q(&nobody, Page::default()).is_empty());
    // A builder whose name extends another's is a different builder.
    s.start_build(new_build("lin-arm", &[], 200)).unwrap();
    assert_eq!(q(&lin, page(None, 1)), [28]);
}

fn build_state(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    let b = s.start_build(new_build("lin", &[], 1)).unwrap();
    let p = props(&[
        ("got_revision", Scalar::String("abc".into())),
        ("n", Scalar::Int(3)),
    ]);
    s.set_build_state(b.id, "running test", &p).unwrap();
    let got = s.build(b.id).unwrap().unwrap();
    assert_eq!(
        (got.state_string.as_str(), &got.build.properties),
        ("running test", &p)
    );
    assert!(is_conflict(s.set_build_state(99, "x", &p)), "unknown build");
    s.finish_build(b.id, BuildResult::Success, 5).unwrap();
    assert!(
        is_conflict(s.finish_build(b.id, BuildResult::Failure, 6)),
        "finished twice"
    );
    let got = s.build(b.id).unwrap().unwrap();
    assert_eq!(
        (got.result, got.finished_at),
        (Some(BuildResult::Success), Some(5))
    );
    assert_eq!(
        got.state_string, "running test",
        "finishing keeps the state string"
    );
    // Its last state and its end in one call.
    let b2 = s.start_build(new_build("lin", &[], 7)).unwrap();
    let p2 = props(&[("n", Scalar::Int(4))]);
    s.finish_build_with_state(b2.id, BuildResult::Failure, "failed test", &p2, 9)
        .unwrap();
    let got = s.build(b2.id).unwrap().unwrap();
    assert_eq!(
        (
            got.result,
            got.finished_at,
            got.state_string.as_str(),
            &got.build.properties
        ),
        (Some(BuildResult::Failure), Some(9), "failed test", &p2)
    );
    assert!(
        is_conflict(s.finish_build_with_state(b2.id, BuildResult::Success, "x", &p, 10)),
        "finished twice"
    );
    assert!(is_conflict(s.finish_build_with_state(
        99,
        BuildResult::Success,
        "x",
        &p,
        10
    )));
}

fn interrupt_running(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win", "mac", "lin"]))
        .unwrap(); // 1..4
    s.start_build(new_build("lin", &[1, 4], 10)).unwrap(); // 1, running
    s.start_build(new_build("win", &[2], 10)).unwrap(); // 2, finished
    s.start_build(new_build("mac", &[3], 10)).unwrap(); // 3, running
    s.finish_build(2, BuildResult::Success, 20).unwrap();
    assert_eq!(s.interrupt_running(30).unwrap(), [1, 3]);
    for id in [1, 3] {
        let b = s.build(id).unwrap().unwrap();
        assert_eq!(
            (b.finished_at, b.result),
            (Some(30), Some(BuildResult::Retry))
        );
        assert_eq!(b.state_string, "interrupted");
    }
    assert_eq!(
        s.build(2).unwrap().unwrap().result,
        Some(BuildResult::Success)
    );
    assert_eq!(ids(&s.pending_requests().unwrap(), |r| r.id), [1, 3, 4]);
    assert_eq!(req(s.as_ref(), 2).state, RequestState::Complete);
    assert_eq!(req(s.as_ref(), 3).build, Some(3));
    assert!(
        s.interrupt_running(40).unwrap().is_empty(),
        "nothing left running"
    );
    let running = BuildFilter {
        running: true,
        ..BuildFilter::default()
    };
    assert!(s.builds(&running, Page::default()).unwrap().is_empty());
    // The requests can run again; numbers go on.
    let b = s.start_build(new_build("lin", &[1, 4], 50)).unwrap();
    assert_eq!((b.id, b.number), (4, 2));
}

fn step(index: u32, name: &str) -> StepRecord {
    StepRecord {
        index,
        name: name.into(),
        started_at: Some(10 + index as i64),
        state_string: format!("running {name}"),
        ..StepRecord::default()
    }
}

fn workers(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    assert!(s.workers().unwrap().is_empty());
    let info: BTreeMap<String, String> = [("os".to_string(), "linux".to_string())].into();
    s.worker_connected("w2", &info, 100).unwrap();
    s.worker_connected("w1", &BTreeMap::new(), 110).unwrap();
    let ws = s.workers().unwrap();
    assert_eq!(
        ws.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["w1", "w2"],
        "by name"
    );
    assert_eq!(
        (
            ws[1].first_seen,
            ws[1].last_connected,
            ws[1].last_disconnected
        ),
        (100, 100, None)
    );
    assert_eq!(ws[1].info, info);
    s.worker_disconnected("w2", 150).unwrap();
    assert_eq!(s.workers().unwrap()[1].last_disconnected, Some(150));
    let info2: BTreeMap<String, String> = [
        ("os".to_string(), "linux".to_string()),
        ("arch".to_string(), "arm64".to_string()),
    ]
    .into();
    s.worker_connected("w2", &info2, 200).unwrap();
    let w2 = s.workers().unwrap().remove(1);
    assert_eq!(
        (w2.first_seen, w2.last_connected, w2.last_disconnected),
        (100, 200, Some(150))
    );
    assert_eq!(w2.info, info2);
    s.worker_disconnected("ghost", 300).unwrap();
    assert_eq!(
        s.workers().unwrap().len(),
        2,
        "an unknown worker's disconnection records nothing"
    );
}

fn state(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    assert_eq!(s.get_state("sched/nightly").unwrap(), None);
    s.put_state("sched/nightly", b"{\"last\":1}").unwrap();
    s.put_state("sched/other", &[0, 255, 1]).unwrap();
    assert_eq!(
        s.get_state("sched/nightly").unwrap().as_deref(),
        Some(&b"{\"last\":1}"[..])
    );
    s.put_state("sched/nightly", b"2").unwrap();
    assert_eq!(
        s.get_state("sched/nightly").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(
        s.get_state("sched/other").unwrap().as_deref(),
        Some(&[0u8, 255, 1][..])
    );
    s.put_state("empty", b"").unwrap();
    assert_eq!(s.get_state("empty").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(s.get_state("sched").unwrap(), None, "keys are exact");
    // Several at once: new keys and a replaced one.
    s.put_states(&[
        ("batch/a".to_string(), b"1".to_vec()),
        ("sched/nightly".to_string(), b"3".to_vec()),
        ("batch/b".to_string(), Vec::new()),
    ])
    .unwrap();
    assert_eq!(s.get_state("batch/a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get_state("batch/b").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(
        s.get_state("sched/nightly").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    s.put_states(&[]).unwrap();
}

fn persistence(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    for n in 1..=3 {
        s.add_change(change(n), n).unwrap();
    }
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win"]))
        .unwrap(); // 1, 2
    s.add_buildset(buildset("b", 2), &builders(&["lin"]))
        .unwrap(); // 3
    s.start_build(new_build("lin", &[1], 10)).unwrap(); // 1
    s.start_build(new_build("win", &[2], 10)).unwrap(); // 2
    s.finish_build(2, BuildResult::Failure, 20).unwrap();
    s.put_step(1, &step(0, "checkout")).unwrap();
    s.append_log(1, 0, b"cloning\n").unwrap();
    s.sync_log(1, 0).unwrap();
    s.worker_connected("w1", &BTreeMap::new(), 5).unwrap();
    s.put_state("k", b"v").unwrap();
    let snapshot = |s: &dyn Store| {
        (
            s.changes(Page::default()).unwrap(),
            (1..=2)
                .map(|id| s.buildset(id).unwrap())
                .collect::<Vec<_>>(),
            s.requests(&RequestFilter::default(), Page::default())
                .unwrap(),
            s.pending_requests().unwrap(),
            s.builds(&BuildFilter::default(), Page::default()).unwrap(),
            s.build_by_number("lin", 1).unwrap(),
            s.steps(1).unwrap(),
            s.read_log(1, 0, 0, 100).unwrap(),
            s.workers().unwrap(),
            s.get_state("k").unwrap(),
        )
    };
    let before = snapshot(s.as_ref());
    drop(s);
    let s = open(dir);
    assert!(before == snapshot(s.as_ref()), "the reopened store differs");
    // Counters and numbers go on after a reopen, and the running build is
    // still running.
    assert_eq!(s.add_change(change(4), 4).unwrap().id, 4);
    let (set, reqs) = s
        .add_buildset(buildset("c", 3), &builders(&["lin"]))
        .unwrap();
    assert_eq!((set.id, reqs[0].id), (3, 4));
    let b = s.start_build(new_build("lin", &[4], 30)).unwrap();
    assert_eq!((b.id, b.number), (3, 2));
    assert_eq!(s.interrupt_running(40).unwrap(), [1, 3]);
    drop(s);
    let s = open(dir);
    assert_eq!(req(s.as_ref(), 1).state, RequestState::Pending);
    assert_eq!(s.build(3).unwrap().unwrap().state_string, "interrupted");
}

fn backup(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    for n in 1..=2 {
        s.add_change(change(n), n).unwrap();
    }
    s.add_buildset(buildset("a", 1), &builders(&["lin", "win"]))
        .unwrap(); // requests 1, 2
    s.start_build(new_build("lin", &[1], 10)).unwrap(); // 1: finished
    s.start_build(new_build("win", &[2], 10)).unwrap(); // 2: running
    s.append_log(1, 0, b"done\n").unwrap();
    let mut done = step(0, "compile");
    done.finished_at = Some(15);
    done.result = Some(BuildResult::Success);
    done.log_len = 5;
    s.put_step(1, &done).unwrap();
    s.finish_build(1, BuildResult::Success, 20).unwrap();
    // Bytes past the length the finished step's record gives are not part
    // of the snapshot (they cannot happen in a master; here they show
    // where the copy cuts).
    s.append_log(1, 0, b"stray").unwrap();
    // A running build: its step record and state wait to be stored
    // (a backend may keep them in memory); its log is being written.
    s.put_step(2, &step(0, "test")).unwrap();
    s.set_build_state(2, "running test", &props(&[("n", Scalar::Int(1))]))
        .unwrap();
    s.append_log(2, 0, b"half a log").unwrap();
    s.worker_connected("w1", &BTreeMap::new(), 5).unwrap();
    s.put_state("scheduler:ci", b"{\"collected\":[1]}").unwrap();

    let out = TempDir::new();
    let report = s.backup(out.path()).unwrap();
    // Afterwards the original goes on; the copy does not follow.
    s.append_log(2, 0, b", and more").unwrap();
    s.add_change(change(3), 3).unwrap();
    s.put_state("scheduler:ci", b"later").unwrap();
    let snapshot = |s: &dyn Store| {
        (
            s.changes(Page::default()).unwrap(),
            s.buildset(1).unwrap(),
            s.requests(&RequestFilter::default(), Page::default())
                .unwrap(),
            s.builds(&BuildFilter::default(), Page::default()).unwrap(),
            (s.steps(1).unwrap(), s.steps(2).unwrap()),
            (
                s.read_log(1, 0, 0, 100).unwrap(),
                s.read_log(2, 0, 0, 100).unwrap(),
            ),
            s.workers().unwrap(),
        )
    };
    let copy = open(out.path());
    let got = snapshot(copy.as_ref());
    assert_eq!(got.0.len(), 2, "changes as of the backup");
    assert_eq!(got.3.len(), 2);
    let running = got.3.iter().find(|b| b.id == 2).unwrap();
    assert_eq!(
        running.state_string, "running test",
        "a waiting build state is copied"
    );
    assert_eq!(got.4 .0[0].finished_at, Some(15));
    assert_eq!(got.4 .1[0].name, "test", "a waiting step record is copied");
    assert_eq!(
        got.5 .0, b"done\n",
        "a finished step's log, cut at its length"
    );
    assert_eq!(
        got.5 .1, b"half a log",
        "a running step's log as written then"
    );
    assert_eq!(got.6.len(), 1);
    assert_eq!(
        copy.get_state("scheduler:ci").unwrap().as_deref(),
        Some(&b"{\"collected\":[1]}"[..])
    );
    assert_eq!(
        (
            report.builds,
            report.logs,
            report.log_bytes,
            report.logs_running
        ),
        (2, 2, 15, 1)
    );
    assert!(report.records > 0);
    // The copy is a store of its own: counters and numbers go on from the
    // snapshot, and its running build is there to be interrupted.
    assert_eq!(copy.add_change(change(9), 9).unwrap().id, 3);
    assert_eq!(copy.interrupt_running(30).unwrap(), [2]);
    assert_eq!(req(copy.as_ref(), 2).state, RequestState::Pending);
    drop(copy);
    // Taking the backup changed nothing in the original.
    assert_eq!(s.changes(Page::default()).unwrap().len(), 3);
    assert_eq!(s.read_log(2, 0, 0, 100).unwrap(), b"half a log, and more");
}
