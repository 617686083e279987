//! The conformance checks of what a master keeps over years: sealed
//! (compressed) logs, retention's prune (of builds and of the audit log),
//! disk usage per builder.

use std::path::Path;

use super::*;

/// About `len` bytes of compiler-like output: repetitive, with varying
/// numbers and paths, some bytes that are not UTF-8, and the redactor's
/// `[secret]` marks; deterministic.
pub fn compiler_like_log(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 200);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += 1;
        let line = match x % 7 {
            0 => format!(
                "   Compiling crate-{} v0.{}.{} (/src/crates/c{}/Cargo.toml)\n",
                x % 97,
                x % 13,
                x % 31,
                x % 97
            ),
            1 => format!(
                "warning: unused variable `v{}`\n  --> src/module_{}/file_{}.rs:{}:{}\n",
                x % 1000,
                x % 40,
                x % 9,
                x % 3000,
                x % 80
            ),
            2 => format!("+ curl -H 'Authorization: [secret]' https://ci.example.org/{n}\n"),
            3 => format!("test tests::case_{n} ... ok ({} ms)\n", x % 500),
            4 => format!(
                "\x1b[32m   Finished\x1b[0m step {n} in {}.{}s\n",
                x % 60,
                x % 10
            ),
            5 => format!("cc -O2 -c obj/{:x}.c -o obj/{:x}.o\n", x, x >> 3),
            _ => format!("[{n:>8}] building target {} of 1234\n", x % 1234),
        };
        out.extend_from_slice(line.as_bytes());
        if n % 1000 == 0 {
            // Bytes that are not UTF-8: logs are bytes.
            out.extend_from_slice(&[0xff, 0xfe, 0x00, b'\n']);
        }
    }
    out
}

/// A finished build of `builder` with one step that logged `log`,
/// started and finished at the given times.
fn finished_build(
    s: &dyn Store,
    builder: &str,
    requests: &[u64],
    at: i64,
    end: i64,
    log: &[u8],
) -> u64 {
    let id = s.start_build(new_build(builder, requests, at)).unwrap().id;
    let mut st = step(0, "compile");
    if !log.is_empty() {
        s.append_log(id, 0, log).unwrap();
        s.sync_log(id, 0).unwrap();
    }
    st.finished_at = Some(end);
    st.log_len = log.len() as u64;
    s.put_step(id, &st).unwrap();
    s.finish_build(id, BuildResult::Success, end).unwrap();
    id
}

pub(super) fn sealed_logs(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    // Longer than a few frames of any sensible size, and not a multiple.
    let big = compiler_like_log(3 * 1024 * 1024 + 12_345);
    let small = b"one line, [secret] masked\n".to_vec();
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let b = s.start_build(new_build("lin", &[], 1)).unwrap().id;
    s.append_log(b, 0, &big[..1_000_000]).unwrap();
    s.append_log(b, 0, &big[1_000_000..]).unwrap();
    s.append_log(b, 1, &small).unwrap();
    s.append_log(b, 3, &bin).unwrap();
    assert!(
        is_conflict(s.seal_logs(b)),
        "a running build's logs are not sealed"
    );
    assert_eq!(s.read_log(b, 0, 0, usize::MAX).unwrap(), big, "still plain");
    s.finish_build(b, BuildResult::Success, 5).unwrap();
    let sealed = s.seal_logs(b).unwrap();
    assert_eq!(sealed.logs, 3);
    assert_eq!(sealed.raw, (big.len() + small.len() + bin.len()) as u64);
    assert!(
        sealed.stored < sealed.raw / 3,
        "compiler output compresses: {sealed:?}"
    );
    assert_eq!(
        s.seal_logs(b).unwrap().logs,
        0,
        "sealing twice does nothing"
    );
    assert_eq!(s.log_len(b, 0).unwrap(), big.len() as u64);
    assert_eq!(s.log_len(b, 1).unwrap(), small.len() as u64);
    assert_eq!(s.log_len(b, 2).unwrap(), 0, "a step without log");
    assert_eq!(s.read_log(b, 0, 0, usize::MAX).unwrap(), big, "byte-exact");
    assert_eq!(s.read_log(b, 1, 0, 100).unwrap(), small);
    assert_eq!(s.read_log(b, 3, 0, 1 << 20).unwrap(), bin);
    // Reads at offsets inside, across and at the ends of frames.
    let mib = 1usize << 20;
    for (off, max) in [
        (0, 10),
        (5, 1),
        (mib - 3, 7),
        (mib, mib),
        (mib - 1, 2 * mib + 2),
        (2 * mib + 77, 1000),
        (big.len() - 5, 100),
        (big.len() - 1, 1),
    ] {
        let want = &big[off..(off + max).min(big.len())];
        assert_eq!(
            s.read_log(b, 0, off as u64, max).unwrap(),
            want,
            "offset {off}, max {max}"
        );
    }
    assert!(s.read_log(b, 0, big.len() as u64, 10).unwrap().is_empty());
    assert!(s.read_log(b, 0, 1 << 40, 10).unwrap().is_empty());
    assert!(s.read_log(b, 0, 0, 0).unwrap().is_empty());
    // In 64 KiB pieces, as a client following the log would.
    let mut got = Vec::new();
    while got.len() < big.len() {
        got.extend(s.read_log(b, 0, got.len() as u64, 65_536).unwrap());
    }
    assert_eq!(got, big);
    let steps = s.steps(b).unwrap();
    assert!(steps.is_empty(), "no step records were put");
    assert!(
        s.append_log(b, 1, b"more").is_err(),
        "a sealed log takes no more bytes"
    );
    assert_eq!(s.read_log(b, 1, 0, 100).unwrap(), small, "unchanged");
    // A step record reports the log's (uncompressed) length.
    s.put_step(b, &step(0, "compile")).unwrap();
    assert_eq!(s.steps(b).unwrap()[0].log_len, big.len() as u64);
    // An unknown build has nothing to seal.
    assert_eq!(s.seal_logs(999).unwrap().logs, 0);
}

pub(super) fn sealed_persist(open: Open<'_>, dir: &Path) {
    let log = compiler_like_log(1_500_000);
    {
        let s = open(dir);
        let b = finished_build(s.as_ref(), "lin", &[], 1, 2, &log);
        // A plain log of an older store: never sealed.
        let old = finished_build(s.as_ref(), "lin", &[], 3, 4, b"plain old log\n");
        s.seal_logs(b).unwrap();
        assert_eq!(old, 2);
    }
    let s = open(dir);
    assert_eq!(s.read_log(1, 0, 0, usize::MAX).unwrap(), log);
    assert_eq!(s.read_log(2, 0, 0, 100).unwrap(), b"plain old log\n");
    assert_eq!(s.steps(1).unwrap()[0].log_len, log.len() as u64);
    let out = TempDir::new();
    let report = s.backup(out.path()).unwrap();
    assert_eq!(report.logs, 2);
    let copy = open(out.path());
    assert_eq!(copy.read_log(1, 0, 0, usize::MAX).unwrap(), log);
    assert_eq!(copy.read_log(2, 0, 0, 100).unwrap(), b"plain old log\n");
    assert_eq!(copy.log_len(1, 0).unwrap(), log.len() as u64);
}

fn policy(builds: Option<i64>, logs: Option<i64>, keep_last: u64) -> Retention {
    Retention {
        builds_before: builds,
        logs_before: logs,
        keep_last,
    }
}

/// Prunes everything `policy` lets go, `limit` builds per step.
fn prune_all(s: &dyn Store, p: &Retention, limit: usize) -> (u64, u64, u64, u32) {
    let (mut builds, mut logs, mut bytes, mut steps) = (0, 0, 0, 0);
    let mut after = 0;
    loop {
        let r = s.prune(p, 1000, after, 3, limit).unwrap();
        assert!(r.scanned <= 3);
        assert!(r.builds + r.logs <= limit as u64);
        builds += r.builds;
        logs += r.logs;
        bytes += r.log_bytes;
        steps += 1;
        match r.next {
            Some(n) => after = n,
            None => return (builds, logs, bytes, steps),
        }
    }
}

pub(super) fn prune(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    // lin: builds 1..=6 finished at 100, 200, … 600; win: 7, 8.
    for i in 1..=6 {
        finished_build(s.as_ref(), "lin", &[], i * 100 - 50, i * 100, b"lin log\n");
    }
    let w7 = finished_build(s.as_ref(), "win", &[], 700, 750, b"win log 7\n");
    let w8 = finished_build(s.as_ref(), "win", &[], 800, 850, b"win log 8\n");
    let all = BuildFilter::default();
    // No cutoff: nothing goes.
    let r = s.prune(&policy(None, None, 0), 1000, 0, 100, 100).unwrap();
    assert_eq!((r.builds, r.logs, r.next), (0, 0, None));
    // Logs of builds finished before 350 (1, 2, 3), records kept; lin's
    // newest 4 are kept whatever their age: so only 1 and 2.
    let (b, l, bytes, _) = prune_all(s.as_ref(), &policy(None, Some(350), 4), 1);
    assert_eq!((b, l, bytes), (0, 2, 16));
    for id in [1, 2] {
        let build = s.build(id).unwrap().unwrap();
        assert_eq!(build.logs_deleted_at, Some(1000));
        assert!(s.read_log(id, 0, 0, 100).unwrap().is_empty());
        assert_eq!(s.log_len(id, 0).unwrap(), 0);
        assert_eq!(s.steps(id).unwrap().len(), 1, "the step record stays");
    }
    assert_eq!(s.read_log(3, 0, 0, 100).unwrap(), b"lin log\n");
    assert_eq!(s.build(3).unwrap().unwrap().logs_deleted_at, None);
    // Again: nothing more to do.
    assert_eq!(prune_all(s.as_ref(), &policy(None, Some(350), 4), 1).1, 0);
    // Builds finished before 520 (1..=5 and none of win), keeping lin's
    // newest 2: 1..=4 go, in steps of at most 2 builds.
    let (b, _, _, steps) = prune_all(s.as_ref(), &policy(Some(520), None, 2), 2);
    assert_eq!(b, 4);
    assert!(steps >= 2, "small steps: {steps}");
    let left: Vec<u64> = ids(&s.builds(&all, Page::default()).unwrap(), |b| b.id);
    assert_eq!(left, [w8, w7, 6, 5]);
    for id in 1..=4 {
        assert!(s.build(id).unwrap().is_none());
        assert!(s.steps(id).unwrap().is_empty());
        assert!(s.read_log(id, 0, 0, 100).unwrap().is_empty());
        assert!(s.build_by_number("lin", id).unwrap().is_none());
    }
    let lin = BuildFilter {
        builder: Some("lin".into()),
        ..BuildFilter::default()
    };
    assert_eq!(
        ids(&s.builds(&lin, Page::default()).unwrap(), |b| b.id),
        [6, 5]
    );
    assert_eq!(s.build_by_number("lin", 5).unwrap().unwrap().id, 5);
    // keep-last 0 and a cutoff after everything: all go.
    let (b, _, _, _) = prune_all(s.as_ref(), &policy(Some(10_000), None, 0), 100);
    assert_eq!(b, 4);
    assert!(s.builds(&all, Page::default()).unwrap().is_empty());
    // Numbers are never given twice, even when every build is gone.
    let n = s.start_build(new_build("lin", &[], 2000)).unwrap();
    assert_eq!(n.number, 7);
    assert_eq!(
        s.start_build(new_build("win", &[], 2000)).unwrap().number,
        3
    );
    assert_eq!(
        s.start_build(new_build("mac", &[], 2000)).unwrap().number,
        1
    );
}

pub(super) fn prune_keeps(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    s.add_buildset(buildset("a", 1), &builders(&["lin", "lin", "lin"]))
        .unwrap(); // requests 1, 2, 3
                   // 1: finished as retry, its request pending again.
    let b1 = s.start_build(new_build("lin", &[1], 10)).unwrap().id;
    s.finish_build(b1, BuildResult::Retry, 20).unwrap();
    // 2: finished normally.
    let b2 = finished_build(s.as_ref(), "lin", &[2], 30, 40, b"two\n");
    // 3: running, old.
    let b3 = s.start_build(new_build("lin", &[3], 50)).unwrap().id;
    s.append_log(b3, 0, b"running\n").unwrap();
    let r = s
        .prune(&policy(Some(1000), Some(1000), 0), 1000, 0, 100, 100)
        .unwrap();
    assert_eq!((r.builds, r.logs), (1, 0), "only build 2 may go");
    assert!(s.build(b2).unwrap().is_none());
    assert!(s.build(b1).unwrap().is_some(), "its request may run again");
    assert_eq!(s.read_log(b3, 0, 0, 100).unwrap(), b"running\n");
    assert!(s.build(b3).unwrap().unwrap().finished_at.is_none());
    // The request of build 1 is run again and finishes: now 1 may go, and
    // the running build still stays.
    let b4 = s.start_build(new_build("lin", &[1], 60)).unwrap().id;
    s.finish_build(b4, BuildResult::Success, 70).unwrap();
    let r = s
        .prune(&policy(Some(65), None, 0), 1000, 0, 100, 100)
        .unwrap();
    assert_eq!(r.builds, 1);
    assert!(s.build(b1).unwrap().is_none());
    assert!(s.build(b3).unwrap().is_some());
    assert!(s.build(b4).unwrap().is_some(), "finished after the cutoff");
    // A step record of a deleted build, written late, does not come back.
    let _ = s.put_step(b1, &step(0, "late"));
    s.put_state("flush", b"x").unwrap();
    assert!(s.steps(b1).unwrap().is_empty());
    // The running build ends; its number is the next one.
    s.finish_build(b3, BuildResult::Success, 80).unwrap();
    assert_eq!(s.request(3).unwrap().unwrap().state, RequestState::Complete);
    drop(s);
    let s = open(dir);
    assert!(s.build(b1).unwrap().is_none());
    assert!(s.build(b2).unwrap().is_none());
    assert_eq!(s.start_build(new_build("lin", &[], 90)).unwrap().number, 5);
}

pub(super) fn usage(open: Open<'_>, dir: &Path) {
    let s = open(dir);
    let log = compiler_like_log(200_000);
    let b1 = finished_build(s.as_ref(), "lin", &[], 1, 2, &log);
    let _b2 = finished_build(s.as_ref(), "lin", &[], 3, 4, b"plain\n");
    let b3 = s.start_build(new_build("lin", &[], 5)).unwrap().id;
    s.append_log(b3, 2, b"running").unwrap();
    finished_build(s.as_ref(), "win", &[], 1, 2, b"other builder\n");
    let before = s.builder_usage("lin").unwrap();
    assert_eq!(before.builds, 3);
    assert_eq!(before.logs, 3);
    let raw = (log.len() + 6 + 7) as u64;
    assert_eq!((before.log_bytes, before.log_bytes_stored), (raw, raw));
    let sealed = s.seal_logs(b1).unwrap();
    let after = s.builder_usage("lin").unwrap();
    assert_eq!((after.builds, after.logs, after.log_bytes), (3, 3, raw));
    assert_eq!(after.log_bytes_stored, raw - sealed.raw + sealed.stored);
    assert!(after.log_bytes_stored < raw / 2);
    assert_eq!(s.builder_usage("win").unwrap().builds, 1);
    assert_eq!(s.builder_usage("nobody").unwrap(), Default::default());
}

/// The audit log's retention: entries recorded before the cutoff go,
/// oldest first, at most `limit` a call; younger ones stay; the deletion
/// survives a reopen and ids go on from the highest ever issued.
pub(super) fn prune_audit(open: Open<'_>, dir: &Path) {
    {
        let s = open(dir);
        assert_eq!(s.prune_audit(1_000, 10).unwrap(), 0, "an empty log");
        // Entries 1..=7 at 100, 200, … 700.
        for n in 1..=7u64 {
            s.add_audit(audit_entry(n), n as i64 * 100).unwrap();
        }
        // Before 450: entries 1–4, two a call.
        assert_eq!(s.prune_audit(450, 2).unwrap(), 2);
        assert_eq!(
            ids(&s.audit(Page::default()).unwrap(), |e| e.id),
            [7, 6, 5, 4, 3]
        );
        assert_eq!(s.prune_audit(450, 2).unwrap(), 2);
        assert_eq!(s.prune_audit(450, 2).unwrap(), 0, "nothing older is left");
        assert_eq!(ids(&s.audit(Page::default()).unwrap(), |e| e.id), [7, 6, 5]);
        // The cutoff itself is kept (strictly before).
        assert_eq!(s.prune_audit(500, 10).unwrap(), 0);
        assert_eq!(s.prune_audit(0, 10).unwrap(), 0);
        assert_eq!(s.prune_audit(i64::MIN, 10).unwrap(), 0);
        assert_eq!(
            s.prune_audit(10_000, 0).unwrap(),
            0,
            "limit 0 deletes nothing"
        );
    }
    let s = open(dir);
    assert_eq!(
        ids(&s.audit(Page::default()).unwrap(), |e| e.id),
        [7, 6, 5],
        "durable across a reopen"
    );
    assert_eq!(s.add_audit(audit_entry(8), 800).unwrap().id, 8);
    // Everything up to a future instant: all of it.
    assert_eq!(s.prune_audit(i64::MAX, 100).unwrap(), 4);
    assert!(s.audit(Page::default()).unwrap().is_empty());
    assert_eq!(
        s.add_audit(audit_entry(9), 900).unwrap().id,
        9,
        "ids are never reused"
    );
}
