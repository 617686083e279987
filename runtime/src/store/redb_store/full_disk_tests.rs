//! The store on a disk that fills up and then has room again: a real
//! tmpfs (mounting needs root; without it the tests say they skipped,
//! unless `BBC_REQUIRE_MOUNT` is set, as in CI).

use super::tests::{build_of, set};
use super::*;
use crate::store::conformance::TempDir;
use bbc_testkit::SmallDisk;

fn big_set(tag: &str) -> NewBuildSet {
    NewBuildSet {
        priority: 0,
        scheduler: "s".into(),
        reason: format!("{tag}:{}", "r".repeat(200_000)),
        source: crate::store::SourceStamp::default(),
        sources: Vec::new(),
        changes: vec![],
        properties: Properties::new(),
        parent_build: None,
        submitted_at: 1,
    }
}

/// Adds large build sets until one fails; returns the acknowledged ones
/// (id, tag) and the first error.
fn add_until_full(s: &RedbStore, who: &str) -> (Vec<(u64, String)>, StoreError) {
    let mut acked = Vec::new();
    for i in 0..400 {
        let tag = format!("{who}-{i}");
        match s.add_buildset(big_set(&tag), &[("b".to_string(), 0)]) {
            Ok((set, _)) => acked.push((set.id, tag)),
            Err(e) => return (acked, e),
        }
    }
    panic!("{who}: 400 large writes fitted on a full disk");
}

fn check_acked(s: &RedbStore, acked: &[(u64, String)]) {
    for (id, tag) in acked {
        let set = s
            .buildset(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged build set {id} ({tag}) is lost"));
        assert!(set.set.reason.starts_with(&format!("{tag}:")), "{id}");
    }
}

/// After a write failed for want of space, redb refused every later call
/// ("Previous I/O error occurred. Please close and re-open the
/// database.") until the master restarted, even with space back. Now the
/// store reopens the database by itself: the error says the disk is full,
/// `health` reports it until a write goes through, writes work once space
/// returns, and nothing acknowledged is lost, concurrent writers (group
/// commit) included, nor after closing and opening again.
#[test]
fn the_store_recovers_when_a_full_disk_has_room_again() {
    let tmp = TempDir::new();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "8m") else {
        return;
    };
    let dir = disk.path().join("state");
    let s = RedbStore::open(&dir).unwrap();
    let (first, _) = s.add_buildset(set("before"), &[("b".into(), 0)]).unwrap();
    let build = s.start_build(build_of("b", vec![1])).unwrap();
    s.health().unwrap();

    let ballast = disk.fill("ballast");
    // Several writers at once, so that some wait in the group commit for a
    // durable commit that fails.
    let results: Vec<(Vec<(u64, String)>, StoreError)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let s = &s;
                sc.spawn(move || add_until_full(s, &format!("t{t}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut full = false;
    for (ok, e) in results {
        acked.extend(ok);
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Io(_)), "{msg}");
        assert!(!msg.contains("close and re-open"), "{msg}");
        full |= msg.contains("the disk is full (");
    }
    assert!(full, "no writer was told the disk is full");
    let unhealthy = s.health().unwrap_err().to_string();
    assert!(unhealthy.contains("the disk is full"), "{unhealthy}");
    // Still full: still failing, and saying why.
    let e = s.add_buildset(big_set("still-full"), &[]).unwrap_err();
    assert!(e.to_string().contains("the disk is full"), "{e}");
    check_acked(&s, &acked);

    std::fs::remove_file(&ballast).unwrap();
    // No restart: the store takes writes again.
    s.health().unwrap();
    let (after, _) = s
        .add_buildset(big_set("after"), &[("b".into(), 0)])
        .unwrap();
    s.finish_build(build.id, bbc_graph::BuildResult::Success, 5)
        .unwrap();
    check_acked(&s, &acked);
    assert_eq!(s.buildset(first.id).unwrap().map(|b| b.id), Some(first.id));
    assert!(s.buildset(after.id).unwrap().is_some());

    drop(s);
    let s = RedbStore::open(&dir).unwrap();
    check_acked(&s, &acked);
    assert!(s.buildset(after.id).unwrap().is_some());
    let b = s.build(build.id).unwrap().unwrap();
    assert_eq!(b.result, Some(bbc_graph::BuildResult::Success));
    s.health().unwrap();
}

/// Step records wait in memory for the next write (`pending.rs`). A write
/// that fails must not drop them, nor may the reopen after it: the newest
/// is stored once the disk has room.
#[test]
fn waiting_step_records_survive_a_failed_write() {
    let tmp = TempDir::new();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "8m") else {
        return;
    };
    let dir = disk.path().join("state");
    let s = RedbStore::open(&dir).unwrap();
    s.add_buildset(set("x"), &[("b".into(), 0)]).unwrap();
    let build = s.start_build(build_of("b", vec![1])).unwrap();
    let ballast = disk.fill("ballast");
    let mut last = String::new();
    let mut failed = None;
    for i in 0..400 {
        // Put before each write: the one before the failing write is
        // applied by it only.
        last = format!("attempt {i}");
        let step = StepRecord {
            index: 0,
            name: "compile".into(),
            state_string: last.clone(),
            ..Default::default()
        };
        s.put_step(build.id, &step).unwrap();
        if let Err(e) = s.add_buildset(big_set(&last), &[]) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.expect("a large write failed on the full disk");
    assert!(e.to_string().contains("the disk is full"), "{e}");
    // Visible while it waits.
    assert_eq!(s.steps(build.id).unwrap()[0].state_string, last);
    std::fs::remove_file(&ballast).unwrap();
    s.health().unwrap();
    drop(s);
    let s = RedbStore::open(&dir).unwrap();
    let steps = s.steps(build.id).unwrap();
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].state_string, last);
}
