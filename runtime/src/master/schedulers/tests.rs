//! The scheduler engine driven by an explicit clock: no sleeps, no timing.

use super::*;
use crate::store::NewChange;

const MIN: i64 = 60_000;

fn change(id: u64, branch: &str, files: &[&str]) -> Change {
    Change {
        id,
        received_at: 0,
        change: NewChange {
            source: "repo".into(),
            repository: "https://example.org/r.git".into(),
            branch: branch.into(),
            revision: format!("rev{id}"),
            files: files.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        },
    }
}

fn started(g: &Graph, now: Millis) -> Engine {
    let mut e = Engine::default();
    for s in &g.schedulers {
        e.state(&s.name, 0, now);
    }
    e
}

#[test]
fn tree_stable_timer_collects_changes_into_one_build() {
    let g = fixture!("single_branch_tree_stable_2m");
    let mut e = started(&g, 0);
    assert!(e
        .on_change(&g, &change(1, "main", &["a.rs"]), 10 * MIN)
        .is_empty());
    // A second change within the timer restarts it.
    assert!(e
        .on_change(&g, &change(2, "main", &["b.rs"]), 11 * MIN)
        .is_empty());
    assert!(
        e.on_tick(&g, 12 * MIN).is_empty(),
        "restarted timer not yet due"
    );
    assert_eq!(e.next_deadline(&g), Some(13 * MIN));
    // What the sources page shows: the timer, the changes waiting, no slot.
    let t = &e.timers(&g)[&g.schedulers[0].name];
    assert_eq!(
        (t.next_fire_at, t.pending_changes, t.last_fired_at),
        (Some(13 * MIN), 2, None)
    );
    let out = e.on_tick(&g, 13 * MIN);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].set.changes, vec![1, 2]);
    assert_eq!(out[0].set.source.revision, "rev2");
    assert_eq!(out[0].builders, vec!["b".to_string()]);
    assert!(e.on_tick(&g, 20 * MIN).is_empty(), "fires once");
    // Other branches do not count.
    assert!(e
        .on_change(&g, &change(3, "dev", &["a.rs"]), 21 * MIN)
        .is_empty());
    assert!(e.on_tick(&g, 30 * MIN).is_empty());
    // The same change is never counted twice.
    assert!(e
        .on_change(&g, &change(2, "main", &["b.rs"]), 31 * MIN)
        .is_empty());
    assert!(e.on_tick(&g, 40 * MIN).is_empty());
}

#[test]
fn no_timer_builds_at_once() {
    let g = fixture!("single_branch_no_timer");
    let mut e = started(&g, 0);
    let out = e.on_change(&g, &change(1, "main", &[]), 5);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].set.changes, vec![1]);
}

#[test]
fn file_filters_and_importance() {
    let g = fixture!("file_filters_and_importance");
    let mut e = started(&g, 0);
    // Outside `files`: ignored entirely.
    assert!(e
        .on_change(&g, &change(1, "main", &["README.md"]), 1)
        .is_empty());
    // Docs only: collected by "ci" but not important; left out by "strict".
    assert!(e
        .on_change(&g, &change(2, "main", &["docs/x.md"]), 2)
        .is_empty());
    assert!(
        e.on_tick(&g, 1000 * MIN).is_empty(),
        "unimportant changes alone never build"
    );
    let out = e.on_change(&g, &change(3, "main", &["src/lib.rs"]), 3);
    let ci = out
        .iter()
        .find(|s| s.set.scheduler == "ci")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(ci.set.changes, vec![2, 3], "unimportant changes ride along");
    let strict = out
        .iter()
        .find(|s| s.set.scheduler == "strict")
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(
        strict.set.changes,
        vec![3],
        "only-important leaves them out"
    );
}

#[test]
fn any_branch_keeps_a_timer_per_branch() {
    let g = fixture!("any_branch_release_timer");
    let mut e = started(&g, 0);
    e.on_change(&g, &change(1, "release/1.0", &[]), 0);
    e.on_change(&g, &change(2, "release/2.0", &[]), 30_000);
    e.on_change(&g, &change(3, "main", &[]), 30_000);
    let first = e.on_tick(&g, MIN);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].set.source.branch, "release/1.0");
    let second = e.on_tick(&g, MIN + 30_000);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].set.source.branch, "release/2.0");
}

fn at(s: &str) -> Millis {
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => t.as_millisecond(),
        Err(e) => panic!("{s}: {e}"),
    }
}

#[test]
fn nightly_fires_at_its_slot_once_even_across_a_restart() {
    let g = fixture!("nightly_prague");
    let mut e = started(&g, at("2026-11-25T12:00:00Z"));
    // 03:00 in Prague (UTC+1 in November) is 02:00 UTC.
    assert_eq!(e.next_deadline(&g), Some(at("2026-11-26T02:00:00Z")));
    assert!(e.on_tick(&g, at("2026-11-26T01:59:59Z")).is_empty());
    let out = e.on_tick(&g, at("2026-11-26T02:00:00Z"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].set.source.branch, "main");
    // A restart right after: the saved state does not fire the slot again.
    let saved = serde_json::to_vec(&e.states["n"]).unwrap_or_default();
    let mut e2 = Engine::default();
    e2.states.insert(
        "n".into(),
        serde_json::from_slice(&saved).unwrap_or_default(),
    );
    assert!(e2.on_tick(&g, at("2026-11-26T02:00:05Z")).is_empty());
    // Down for three nights: one catch-up build, not three, and not none.
    let out = e2.on_tick(&g, at("2026-11-29T09:00:00Z"));
    assert_eq!(out.len(), 1);
    assert_eq!(e2.next_deadline(&g), Some(at("2026-11-30T02:00:00Z")));
}

#[test]
fn nightly_only_if_changed() {
    let g = fixture!("nightly_only_if_changed");
    let mut e = started(&g, at("2026-11-25T12:00:00Z"));
    assert!(
        e.on_tick(&g, at("2026-11-26T03:00:00Z")).is_empty(),
        "no change, no build"
    );
    e.on_change(&g, &change(7, "main", &["x"]), at("2026-11-26T10:00:00Z"));
    e.on_change(&g, &change(8, "dev", &["x"]), at("2026-11-26T10:00:00Z"));
    let out = e.on_tick(&g, at("2026-11-27T03:00:00Z"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].set.changes, vec![7]);
    assert_eq!(out[0].set.source.revision, "rev7");
}

#[test]
fn periodic_fires_each_interval_and_once_after_a_pause() {
    let g = fixture!("periodic_hourly");
    let h = 60 * MIN;
    let mut e = started(&g, 0);
    assert!(e.on_tick(&g, h - 1).is_empty());
    assert_eq!(e.on_tick(&g, h).len(), 1);
    assert!(e.on_tick(&g, h + 5).is_empty());
    assert_eq!(
        e.on_tick(&g, 10 * h + 5).len(),
        1,
        "a long pause fires once"
    );
    assert_eq!(e.next_deadline(&g), Some(11 * h));
    let t = &e.timers(&g)[&g.schedulers[0].name];
    assert_eq!(
        (t.next_fire_at, t.last_fired_at),
        (Some(11 * h), Some(10 * h))
    );
}

#[test]
fn dependent_runs_after_upstream_success_only() {
    let g = fixture!("dependent_on_single_branch");
    let mut e = started(&g, 0);
    let set = |id: u64, result: Option<BuildResult>| BuildSet {
        id,
        set: NewBuildSet {
            priority: 0,
            scheduler: "up".into(),
            reason: String::new(),
            source: SourceStamp {
                codebase: String::new(),
                repository: "r".into(),
                branch: "main".into(),
                revision: "abc".into(),
            },
            sources: Vec::new(),
            changes: vec![1],
            properties: Properties::new(),
            parent_build: None,
            submitted_at: 0,
        },
        result,
        completed_at: None,
    };
    e.on_buildset_stored(&g, &set(10, None), 0);
    e.on_buildset_stored(&g, &set(10, None), 0);
    e.on_buildset_stored(&g, &set(11, None), 0);
    let out = e.on_buildset_done(&g, &set(10, Some(BuildResult::Success)), 1);
    assert_eq!(out.len(), 1, "watched once even if announced twice");
    assert_eq!(out[0].builders, vec!["d".to_string()]);
    assert_eq!(out[0].set.source.revision, "abc");
    assert!(e
        .on_buildset_done(&g, &set(10, Some(BuildResult::Success)), 2)
        .is_empty());
    assert!(e
        .on_buildset_done(&g, &set(11, Some(BuildResult::Failure)), 3)
        .is_empty());
    // Read again from the store (a new holder catching up from an older
    // point): a set looked at already is not watched again.
    e.on_buildset_stored(&g, &set(10, Some(BuildResult::Success)), 4);
    assert!(e.states["after"].watching.is_empty());
}

#[test]
fn dependent_schedulers_catch_up_from_the_last_set_they_saw() {
    let g = fixture!("dependent_on_single_branch");
    let mut e = started(&g, 0);
    // Never looked: it needs the newest set, and starts after it.
    assert!(e.sets_unstarted(&g));
    assert_eq!(e.sets_floor(&g, None, 0), None);
    assert_eq!(e.sets_floor(&g, Some(7), 0), Some(7));
    assert!(!e.sets_unstarted(&g));
    // Its saved state says where it stopped: a new holder reads on from
    // there, whatever the newest set is now.
    let saved = serde_json::to_vec(&e.states["after"]).unwrap();
    let mut e2 = started(&g, 0);
    e2.states
        .insert("after".into(), serde_json::from_slice(&saved).unwrap());
    assert_eq!(e2.sets_floor(&g, Some(40), 0), Some(7));
    // A state saved before `last_set` existed reads as never looked.
    let old: SchedState = serde_json::from_str(
        r#"{"last_change":3,"pending":{},"last_slot":null,"changed":[],"watching":[5]}"#,
    )
    .unwrap();
    assert_eq!(old.last_set, None);
    assert_eq!(old.watching, vec![5]);
}

#[test]
fn a_new_scheduler_does_not_build_old_changes() {
    let g = fixture!("single_branch_no_timer");
    let mut e = Engine::default();
    // The store already holds changes up to 41 when the scheduler appears.
    e.state("ci", 41, 0);
    assert!(e.on_change(&g, &change(41, "main", &[]), 1).is_empty());
    assert_eq!(e.on_change(&g, &change(42, "main", &[]), 2).len(), 1);
}

fn by_id(cs: &[Change]) -> HashMap<u64, Change> {
    cs.iter().map(|c| (c.id, c.clone())).collect()
}

#[test]
fn reconcile_starts_new_schedulers_from_now_and_drops_removed_ones() {
    let old = fixture!("reconcile_old_gone");
    let new = fixture!("reconcile_new_fresh");
    let mut e = started(&old, 0);
    e.states.insert("gone".into(), SchedState::default());
    let dropped = e.reconcile(&old, &new, 7, 5 * MIN, &HashMap::new());
    assert_eq!(dropped, vec!["gone".to_string()]);
    assert!(!e.states.contains_key("gone"));
    // Starts after the newest change stored when the config was applied.
    assert_eq!(e.states["fresh"].last_change, 7);
    assert!(e
        .on_change(&new, &change(7, "main", &[]), 6 * MIN)
        .is_empty());
    assert_eq!(e.on_change(&new, &change(8, "main", &[]), 6 * MIN).len(), 1);
}

#[test]
fn reconcile_refilters_collected_changes_and_restarts_the_timer() {
    let old = fixture!("single_branch_timer_10m");
    let new = fixture!("single_branch_timer_2m_src_files");
    let mut e = started(&old, 0);
    let cs = [
        change(1, "main", &["src/a.rs"]),
        change(2, "main", &["docs/x.md"]),
    ];
    for c in &cs {
        assert!(e.on_change(&old, c, MIN).is_empty());
    }
    assert_eq!(e.states["ci"].pending[""].changes, vec![1, 2]);
    assert_eq!(e.refilter_ids(&old, &new), vec![1, 2]);
    let dropped = e.reconcile(&old, &new, 2, 3 * MIN, &by_id(&cs));
    assert!(dropped.is_empty());
    let st = &e.states["ci"];
    // Change 2 fails the new `files` filter; the timer restarts with 2 m.
    assert_eq!(st.pending[""].changes, vec![1]);
    assert_eq!(st.pending[""].deadline, Some(5 * MIN));
    assert_eq!(st.pending[""].tip.revision, "rev1");
    assert_eq!(st.last_change, 2, "changes looked at stay looked at");
    let out = e.on_tick(&new, 5 * MIN);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].set.changes, vec![1]);
}

#[test]
fn reconcile_keeps_what_still_applies() {
    // Only the builders change: the state is kept as is.
    let old = fixture!("reconcile_three_kinds_before");
    let new = fixture!("reconcile_three_kinds_after");
    let mut e = started(&old, 0);
    if let Some(s) = e.states.get_mut("p") {
        s.last_slot = Some(10 * MIN);
    }
    if let Some(s) = e.states.get_mut("n") {
        s.last_slot = Some(10 * MIN);
    }
    if let Some(s) = e.states.get_mut("dep") {
        s.watching = vec![4];
    }
    e.reconcile(&old, &new, 0, 100 * MIN, &HashMap::new());
    // Periodic: one new interval after its last build.
    assert_eq!(e.states["p"].last_slot, Some(10 * MIN));
    assert_eq!(e.next_deadline(&new), Some(130 * MIN));
    // Nightly with a new cron: from now, no catching up.
    assert_eq!(e.states["n"].last_slot, Some(100 * MIN));
    // Dependent with a new upstream: the old upstream's sets are dropped.
    assert!(e.states["dep"].watching.is_empty());

    let same_kind = fixture!("reconcile_three_kinds_builders_swapped");
    let mut e = started(&old, 0);
    if let Some(s) = e.states.get_mut("p") {
        s.last_slot = Some(10 * MIN);
    }
    let before = e.states.clone();
    e.reconcile(&old, &same_kind, 9, 100 * MIN, &HashMap::new());
    assert_eq!(e.states, before);
}

#[test]
fn reconcile_of_a_new_kind_starts_afresh() {
    let old = fixture!("kind_change_old_single_branch");
    let new = fixture!("kind_change_new_periodic");
    let mut e = started(&old, 0);
    assert!(e.on_change(&old, &change(3, "main", &[]), MIN).is_empty());
    e.reconcile(&old, &new, 3, 2 * MIN, &HashMap::new());
    let st = &e.states["s"];
    assert!(st.pending.is_empty());
    assert_eq!(st.last_change, 3);
    assert_eq!(st.last_slot, Some(2 * MIN));
}

/// `*` in a branch or file glob stays within one path segment, as the
/// language reference says and the poller matches: `release/*` is not
/// `release/1.0/hotfix`, `src/*.rs` is not `src/net/tcp.rs`.
#[test]
fn globs_stay_within_one_path_segment() {
    let g = fixture!("any_branch_segment_globs");
    let s = &g.schedulers[0];
    let SchedulerKind::AnyBranch { filter, .. } = &s.kind else {
        panic!("not any-branch")
    };
    let m = Filter::new(s, filter);
    let c = |branch: &str, file: &str| classify(&m, s, filter, &change(1, branch, &[file]));
    assert_eq!(c("release/1.0", "src/main.rs"), Some(true));
    assert_eq!(c("release/1.0/hotfix", "src/main.rs"), None);
    assert_eq!(c("release/1.0", "src/net/tcp.rs"), None);
}

/// A scheduler naming two codebases: a change of one builds both, the
/// other at its branch's head; changes of other codebases, or of a
/// codebase's other branch, are not its.
#[test]
fn codebases_give_one_stamp_each() {
    let mut g = fixture!("single_branch_no_timer");
    g.schedulers[0].codebases = vec![
        bbc_graph::Codebase {
            name: "app".into(),
            repository: "https://example.org/app.git".into(),
            branch: "main".into(),
        },
        bbc_graph::Codebase {
            name: "lib".into(),
            repository: "https://example.org/lib.git".into(),
            branch: "stable".into(),
        },
    ];
    let mut e = started(&g, 0);
    let of = |id: u64, codebase: &str, branch: &str| {
        let mut c = change(id, branch, &[]);
        c.change.codebase = codebase.into();
        c.change.repository = String::new();
        c
    };
    // Not its codebases, none at all, or lib's change on app's branch.
    assert!(e.on_change(&g, &of(1, "doc", "main"), 1).is_empty());
    assert!(e.on_change(&g, &of(2, "", "main"), 2).is_empty());
    assert!(e.on_change(&g, &of(3, "lib", "main"), 3).is_empty());
    let out = e.on_change(&g, &of(4, "lib", "stable"), 4);
    assert_eq!(out.len(), 1, "{out:?}");
    let set = &out[0].set;
    let stamps: Vec<(&str, &str, &str, &str)> = set
        .sources
        .iter()
        .map(|s| {
            (
                s.codebase.as_str(),
                s.repository.as_str(),
                s.branch.as_str(),
                s.revision.as_str(),
            )
        })
        .collect();
    // The order written; lib's repository from the scheduler (the change
    // had none), app at its branch's head.
    assert_eq!(
        stamps,
        [
            ("app", "https://example.org/app.git", "main", ""),
            ("lib", "https://example.org/lib.git", "stable", "rev4"),
        ]
    );
    assert_eq!(set.source, set.sources[0], "`source` is the first stamp");
    assert_eq!(set.changes, [4]);
}
