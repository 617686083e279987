//! Tests of the redb backend: the conformance suite, damaged data, kill -9
//! crash cycles, and the benchmark (`store_bench`, ignored).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bbc_graph::Scalar;
use redb::TableDefinition;

use super::*;
use crate::store::conformance::{self, TempDir};

fn open_store(dir: &Path) -> Box<dyn Store> {
    Box::new(RedbStore::open(dir).unwrap())
}

#[test]
fn conformance() {
    conformance::run_all(&open_store);
}

#[test]
fn a_build_set_stored_before_codebases_reads() {
    let dir = TempDir::new();
    drop(RedbStore::open(dir.path()).unwrap());
    raw_put(
        dir.path(),
        BUILDSETS,
        4,
        conformance::old_buildset_record(4).as_bytes(),
    );
    let s = RedbStore::open(dir.path()).unwrap();
    conformance::reads_old_buildset(&s, 4);
}

fn is_corrupt<T: std::fmt::Debug>(r: Result<T>) -> bool {
    matches!(r, Err(StoreError::Corrupt(_)))
}

fn raw_db(dir: &Path) -> Database {
    Database::create(dir.join(DB_FILE)).unwrap()
}

fn raw_put(dir: &Path, def: TableDefinition<u64, &[u8]>, key: u64, value: &[u8]) {
    let db = raw_db(dir);
    let txn = db.begin_write().unwrap();
    txn.open_table(def).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

pub(super) fn set(reason: &str) -> NewBuildSet {
    NewBuildSet {
        priority: 0,
        scheduler: "s".into(),
        reason: reason.into(),
        source: crate::store::SourceStamp::default(),
        sources: Vec::new(),
        changes: vec![],
        properties: Properties::new(),
        parent_build: None,
        submitted_at: 1,
    }
}

pub(super) fn build_of(builder: &str, requests: Vec<u64>) -> NewBuild {
    NewBuild {
        builder: builder.into(),
        builder_hash: "h".into(),
        worker: "w".into(),
        requests,
        properties: Properties::new(),
        started_at: 1,
    }
}

#[test]
fn undecodable_values_are_corrupt_not_panics() {
    let dir = TempDir::new();
    let s = RedbStore::open(dir.path()).unwrap();
    s.add_change(NewChange::default(), 1).unwrap();
    s.add_buildset(set("a"), &[("lin".into(), 0)]).unwrap();
    let b = s.start_build(build_of("lin", vec![])).unwrap();
    s.put_step(b.id, &StepRecord::default()).unwrap();
    s.worker_connected("w", &BTreeMap::new(), 1).unwrap();
    drop(s);

    raw_put(dir.path(), CHANGES, 1, b"{not json");
    raw_put(dir.path(), REQUESTS, 1, &[0xff, 0xfe, 0]);
    // Valid JSON of a build, stored under the wrong id.
    let mut wrong = b.clone();
    wrong.id = 7;
    raw_put(
        dir.path(),
        BUILDS,
        b.id,
        &serde_json::to_vec(&wrong).unwrap(),
    );
    {
        let db = raw_db(dir.path());
        let txn = db.begin_write().unwrap();
        txn.open_table(STEPS)
            .unwrap()
            .insert((b.id, 0), &b"[1,2]"[..])
            .unwrap();
        txn.open_table(WORKERS)
            .unwrap()
            .insert("w", &b"{\"name\":\"w\"}"[..])
            .unwrap();
        // An index entry whose record does not exist.
        txn.open_table(PENDING).unwrap().insert(42, ()).unwrap();
        txn.commit().unwrap();
    }

    let s = RedbStore::open(dir.path()).unwrap();
    assert!(is_corrupt(s.change(1)));
    assert!(is_corrupt(s.changes(Page::default())));
    assert!(is_corrupt(s.request(1)));
    assert!(is_corrupt(s.pending_requests()));
    assert!(is_corrupt(
        s.requests(&RequestFilter::default(), Page::default())
    ));
    assert!(is_corrupt(s.cancel_request(1, 2)));
    assert!(is_corrupt(s.build(b.id)));
    assert!(is_corrupt(s.build_by_number("lin", 1)));
    assert!(is_corrupt(
        s.builds(&BuildFilter::default(), Page::default())
    ));
    assert!(is_corrupt(s.finish_build(b.id, BuildResult::Success, 2)));
    assert!(is_corrupt(s.interrupt_running(2)));
    assert!(is_corrupt(s.steps(b.id)));
    assert!(is_corrupt(s.workers()));
    assert!(is_corrupt(s.worker_connected("w", &BTreeMap::new(), 3)));
    // Writes that failed changed nothing; the undamaged rest still works.
    assert!(s.buildset(1).unwrap().is_some());
    assert_eq!(s.add_change(NewChange::default(), 4).unwrap().id, 2);
    assert_eq!(s.change(2).unwrap().unwrap().received_at, 4);
}

#[test]
fn newer_schema_is_refused() {
    let dir = TempDir::new();
    drop(RedbStore::open(dir.path()).unwrap());
    {
        let db = raw_db(dir.path());
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    match RedbStore::open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn wrong_table_types_and_garbage_files_are_errors() {
    let dir = TempDir::new();
    {
        let db = raw_db(dir.path());
        let txn = db.begin_write().unwrap();
        let wrong: TableDefinition<&str, u64> = TableDefinition::new("changes");
        txn.open_table(wrong).unwrap().insert("x", 1).unwrap();
        txn.commit().unwrap();
    }
    assert!(is_corrupt(RedbStore::open(dir.path())));

    let dir = TempDir::new();
    // Not a redb file at all: deterministic noise.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join(DB_FILE), noise).unwrap();
    assert!(RedbStore::open(dir.path()).is_err());
}

#[test]
fn non_finite_floats_stay_readable() {
    let dir = TempDir::new();
    let s = RedbStore::open(dir.path()).unwrap();
    let mut change = NewChange::default();
    change
        .properties
        .insert("nan".into(), Scalar::Float(f64::NAN));
    change
        .properties
        .insert("inf".into(), Scalar::Float(f64::INFINITY));
    change.properties.insert("x".into(), Scalar::Float(1.5));
    let c = s.add_change(change, 1).unwrap();
    let got = s.change(c.id).unwrap().unwrap();
    assert_eq!(got, c);
    assert_eq!(got.change.properties["nan"], Scalar::String("NaN".into()));
    assert_eq!(got.change.properties["inf"], Scalar::String("inf".into()));
    assert_eq!(got.change.properties["x"], Scalar::Float(1.5));
}

#[test]
fn open_log_files_are_bounded() {
    let dir = TempDir::new();
    let s = RedbStore::open(dir.path()).unwrap();
    for build in 0..100u64 {
        s.append_log(build, 3, b"x").unwrap();
        s.read_log(build / 2, 3, 0, 1).unwrap();
        assert!(s.logs.open_count() <= 32);
    }
    for build in 0..100u64 {
        assert_eq!(s.read_log(build, 3, 0, 10).unwrap(), b"x");
    }
    assert!(s.logs.open_count() <= 32);
    assert!(
        dir.path().join("logs/0/99/3.log").is_file(),
        "documented layout"
    );
    assert!(
        RedbStore::open(dir.path()).is_err(),
        "a second open of the same state is refused"
    );
}

// --- kill -9

const CRASH_DIR_ENV: &str = "BBC_STORE_CRASH_DIR";
const CRASH_CHILD: &str = "store::redb_store::tests::crash_child";

fn crash_set(pid: u32, i: u64) -> NewBuildSet {
    let mut s = set(&format!("crash {pid}/{i}"));
    s.changes = vec![i, u64::from(pid)];
    s.properties.insert("i".into(), Scalar::Int(i as i64));
    s.properties
        .insert("pad".into(), Scalar::String("p".repeat(300)));
    s
}

fn log_line(set: u64) -> String {
    format!("set {set:010}\n")
}

/// Threads writing at once in the crash child, so that the group commit
/// (durable writers sharing one fsync) is what gets killed.
const CRASH_THREADS: usize = 4;

/// Run by `kill_9_loses_no_acknowledged_write` in a child process: writes
/// batches from several threads until it is killed, printing each one once
/// it is acknowledged. A batch mixes durable writes and lazy ones (a step
/// record and a build state), which the durable write that ends the batch
/// must have made durable too.
#[test]
#[ignore = "a helper run by kill_9_loses_no_acknowledged_write"]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_DIR_ENV) else {
        return;
    };
    let s = RedbStore::open(Path::new(&dir)).unwrap();
    let pid = std::process::id();
    let out = std::sync::Mutex::new(std::io::stdout());
    let next = std::sync::atomic::AtomicU64::new(1);
    // Bounded, in case the parent died without killing it.
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::scope(|scope| {
        for _ in 0..CRASH_THREADS {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let builders = [("crash-a".to_string(), 1), ("crash-b".to_string(), 2)];
                    let (set, reqs) = s.add_buildset(crash_set(pid, i), &builders).unwrap();
                    let build = s
                        .start_build(build_of("crash-a", vec![reqs[0].id]))
                        .unwrap();
                    s.put_step(build.id, &crash_step(i)).unwrap();
                    s.set_build_state(build.id, &format!("crash state {i}"), &Properties::new())
                        .unwrap();
                    let end = s.append_log(0, 0, log_line(set.id).as_bytes()).unwrap();
                    s.sync_log(0, 0).unwrap();
                    s.put_state(&format!("crash/{pid}/{i}"), b"done").unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(
                        out,
                        "ack {pid} {i} {} {} {} {} {end}",
                        set.id, reqs[0].id, reqs[1].id, build.id
                    )
                    .unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

fn crash_step(i: u64) -> StepRecord {
    StepRecord {
        index: 0,
        name: format!("crash step {i}"),
        started_at: Some(i as i64),
        ..Default::default()
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    pid: u32,
    i: u64,
    set: u64,
    req_a: u64,
    req_b: u64,
    build: u64,
    log_end: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let f: Vec<&str> = line.strip_prefix("ack ")?.split(' ').collect();
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Ack {
        pid: u32::try_from(n(0)?).ok()?,
        i: n(1)?,
        set: n(2)?,
        req_a: n(3)?,
        req_b: n(4)?,
        build: n(5)?,
        log_end: n(6)?,
    })
}

/// Starts the child on `dir`, lets it acknowledge `want` batches, kills it
/// with SIGKILL and returns every batch it acknowledged (including lines it
/// flushed between our last read and the kill).
fn run_child_until(dir: &Path, want: usize) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            CRASH_CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    while acks.len() < want {
        let line = lines
            .next()
            .expect("the child ended before acknowledging enough")
            .unwrap();
        acks.extend(parse_ack(&line));
    }
    child.0.kill().unwrap(); // SIGKILL on Unix
                             // What the child flushed before it died was acknowledged too.
    for line in lines {
        acks.extend(line.ok().as_deref().and_then(parse_ack));
    }
    child.0.wait().unwrap();
    acks
}

fn check_ack(s: &RedbStore, a: &Ack) {
    let set = s
        .buildset(a.set)
        .unwrap()
        .unwrap_or_else(|| panic!("acknowledged set {a:?} is lost"));
    assert_eq!(set.set, crash_set(a.pid, a.i), "{a:?}");
    let ra = s.request(a.req_a).unwrap().unwrap();
    let rb = s.request(a.req_b).unwrap().unwrap();
    assert_eq!((ra.buildset, rb.buildset), (a.set, a.set));
    assert_eq!(
        (ra.builder.as_str(), rb.builder.as_str()),
        ("crash-a", "crash-b")
    );
    assert_eq!(ra.build, Some(a.build), "{a:?}");
    assert_eq!(rb.state, RequestState::Pending);
    let b = s
        .build(a.build)
        .unwrap()
        .unwrap_or_else(|| panic!("acknowledged build {a:?} is lost"));
    assert_eq!(b.build.requests, [a.req_a]);
    // Lazy writes, made durable by the durable write after them.
    // (The builds of earlier cycles have been interrupted since.)
    assert!(
        b.state_string == format!("crash state {}", a.i) || b.state_string == "interrupted",
        "{a:?}: {}",
        b.state_string
    );
    let steps = s.steps(a.build).unwrap();
    assert_eq!(steps.len(), 1, "{a:?}");
    assert_eq!(steps[0].name, crash_step(a.i).name, "{a:?}");
    assert_eq!(
        s.get_state(&format!("crash/{}/{}", a.pid, a.i)).unwrap(),
        Some(b"done".to_vec())
    );
    let n = log_line(a.set).len();
    assert!(s.log_len(0, 0).unwrap() >= a.log_end);
    assert_eq!(
        s.read_log(0, 0, a.log_end - n as u64, n).unwrap(),
        log_line(a.set).as_bytes(),
        "{a:?}"
    );
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = TempDir::new();
    let mut all: Vec<Ack> = Vec::new();
    for cycle in 0..10 {
        // Different batch counts, so the kill lands at different points.
        let acks = run_child_until(dir.path(), 5 + cycle * 11 % 37);
        assert!(!acks.is_empty());
        let previous_max = all.iter().map(|a| a.set).max().unwrap_or(0);
        assert!(
            acks.iter().all(|a| a.set > previous_max),
            "ids are never reused"
        );
        let started = Instant::now();
        let s = RedbStore::open(dir.path()).unwrap();
        eprintln!(
            "cycle {cycle}: {} acknowledged, reopened in {:?}",
            acks.len(),
            started.elapsed()
        );
        all.extend(acks.iter().copied());
        for a in &all {
            check_ack(&s, a);
        }
        // The killed master's builds are still running: at start-up they
        // are interrupted and their requests queue again.
        let interrupted = s.interrupt_running(1_000).unwrap();
        for a in &acks {
            assert!(interrupted.contains(&a.build), "{a:?}");
            assert_eq!(
                s.request(a.req_a).unwrap().unwrap().state,
                RequestState::Pending
            );
        }
        let pending = s.pending_requests().unwrap();
        assert!(pending.windows(2).all(|w| w[0].id < w[1].id));
    }
}

// --- benchmark: cargo test -p bbc-runtime --release -- --ignored store_bench --nocapture

/// Peak resident set size since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Resets the peak RSS to the current RSS (Linux: `echo 5 > clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

const LOG_TOTAL: usize = 200 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn chunk_data() -> Vec<u8> {
    (0..CHUNK)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37])
        .collect()
}

#[test]
#[ignore = "benchmark: cargo test -p bbc-runtime --release -- --ignored store_bench --nocapture"]
fn store_bench() {
    // Beside the test binary (in target/) rather than in /tmp, which may be
    // a tmpfs where fsync costs nothing.
    let base = std::env::var_os("BBC_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf()
        });
    let dir = tempfile::tempdir_in(&base).unwrap();
    println!("store_bench in {}", dir.path().display());
    let s = RedbStore::open(dir.path()).unwrap();

    // Durable batches: one add_buildset (a set and three requests) each.
    let batches = 2_000;
    let builders: Vec<(String, i64)> = ["lin", "win", "mac"]
        .iter()
        .map(|b| (b.to_string(), 0))
        .collect();
    let started = Instant::now();
    for i in 0..batches {
        s.add_buildset(crash_set(0, i), &builders).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "add_buildset: {batches} durable batches in {secs:.2} s = {:.0} batches/s",
        batches as f64 / secs
    );

    // Log: 200 MB in 64 KiB chunks, then sync.
    let chunk = chunk_data();
    let reset = reset_peak_rss();
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    for _ in 0..LOG_TOTAL / CHUNK {
        s.append_log(1, 0, &chunk).unwrap();
    }
    s.sync_log(1, 0).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "append_log (files): 200 MiB in 64 KiB chunks + sync_log in {secs:.2} s = {:.0} MB/s; peak RSS {:.1} MiB (before {rss_before:.1} MiB{})",
        LOG_TOTAL as f64 / 1e6 / secs,
        peak_rss_mib(),
        if reset { "" } else { ", peak not reset" }
    );
    assert_eq!(s.log_len(1, 0).unwrap(), LOG_TOTAL as u64);
    let started = Instant::now();
    let mut offset = 0u64;
    loop {
        let got = s.read_log(1, 0, offset, 1 << 20).unwrap();
        if got.is_empty() {
            break;
        }
        offset += got.len() as u64;
    }
    assert_eq!(offset, LOG_TOTAL as u64);
    println!(
        "read_log (files): 200 MiB in 1 MiB reads = {:.0} MB/s",
        LOG_TOTAL as f64 / 1e6 / started.elapsed().as_secs_f64()
    );

    redb_log_alternative(&base);

    // Reopen, clean and after kill -9.
    drop(s);
    let started = Instant::now();
    let s = RedbStore::open(dir.path()).unwrap();
    println!(
        "reopen after a clean close: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(s);
    let acks = run_child_until(dir.path(), 5);
    let started = Instant::now();
    let s = RedbStore::open(dir.path()).unwrap();
    println!(
        "reopen after kill -9 ({} acknowledged batches before it): {:.1} ms",
        acks.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    for a in &acks {
        check_ack(&s, a);
    }
    let size = std::fs::metadata(dir.path().join(DB_FILE)).map_or(0, |m| m.len());
    println!("bbc.redb: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
}

/// Durable single-row commits per second on `db`, as add_buildset makes
/// them (quick repair, Durability::Immediate).
fn durable_commits_per_sec(db: &Database) -> f64 {
    const SMALL: TableDefinition<u64, &[u8]> = TableDefinition::new("small");
    let n = 500;
    let started = Instant::now();
    for i in 0..n {
        let mut txn = db.begin_write().unwrap();
        txn.set_quick_repair(true);
        txn.open_table(SMALL)
            .unwrap()
            .insert(i, &[7u8; 300][..])
            .unwrap();
        txn.commit().unwrap();
    }
    f64::from(n as u32) / started.elapsed().as_secs_f64()
}

/// The rejected design, measured for docs/store.md: logs as redb values of
/// a little under 64 KiB, one non-durable commit per append and a durable
/// one at the end (sync_log). BBC_BENCH_REDB_LOG_MB sets how much log it
/// writes (default 200 MiB), to see what a store full of logs costs the
/// durable commits of everything else.
fn redb_log_alternative(base: &Path) {
    const LOGS: TableDefinition<(u64, u32, u64), &[u8]> = TableDefinition::new("logs");
    const PIECE: usize = 63 * 1024;
    let total = std::env::var("BBC_BENCH_REDB_LOG_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(LOG_TOTAL, |mb| mb << 20);
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join("logs.redb");
    // A bounded cache, as a master storing logs in redb would need.
    let db = Database::builder()
        .set_cache_size(64 << 20)
        .create(&path)
        .unwrap();
    let empty_rate = durable_commits_per_sec(&db);
    let chunk = chunk_data();
    let reset = reset_peak_rss();
    let rss_before = peak_rss_mib();
    let started = Instant::now();
    let mut offset = 0u64;
    let total_chunks = total / CHUNK;
    for n in 0..total_chunks {
        let mut txn = db.begin_write().unwrap();
        txn.set_quick_repair(true);
        let last = n + 1 == total_chunks;
        if !last {
            txn.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut t = txn.open_table(LOGS).unwrap();
            for piece in chunk.chunks(PIECE) {
                t.insert((1, 0, offset), piece).unwrap();
                offset += piece.len() as u64;
            }
        }
        txn.commit().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "append (redb values of <= 63 KiB, commit per chunk, durable at the end): {} MiB at {:.0} MB/s; peak RSS {:.1} MiB (before {rss_before:.1} MiB{}); file {:.0} MiB",
        total >> 20,
        total as f64 / 1e6 / secs,
        peak_rss_mib(),
        if reset { "" } else { ", peak not reset" },
        size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "durable small commits in that redb file: {empty_rate:.0}/s empty, {:.0}/s holding the log",
        durable_commits_per_sec(&db)
    );
}

/// What one trivial build asks of the store, as `master/build.rs` does it.
fn trivial_build_cycle(s: &RedbStore, i: u64) {
    let (_, reqs) = s.add_buildset(crash_set(0, i), &[("b".into(), 0)]).unwrap();
    let b = s.start_build(build_of("b", vec![reqs[0].id])).unwrap();
    let mut step = crash_step(i);
    s.put_step(b.id, &step).unwrap();
    s.set_build_state(b.id, "running", &Properties::new())
        .unwrap();
    s.append_log(b.id, 0, b"$ true\n").unwrap();
    s.append_log(b.id, 0, b"\nexit code 0 after 0.0 s\n")
        .unwrap();
    s.sync_log(b.id, 0).unwrap();
    step.log_len = s.log_len(b.id, 0).unwrap();
    s.put_step(b.id, &step).unwrap();
    s.set_build_state(b.id, "build successful", &Properties::new())
        .unwrap();
    s.finish_build(b.id, BuildResult::Success, 2).unwrap();
}

#[test]
#[ignore = "benchmark: cargo test -p bbc-runtime --release -- --ignored store_build_cycle_bench --nocapture"]
fn store_build_cycle_bench() {
    let base = std::env::var_os("BBC_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf()
        });
    for threads in [1usize, 4, 16, 32] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        let n = 1_000u64;
        let next = std::sync::atomic::AtomicU64::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    trivial_build_cycle(&s, i);
                });
            }
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{threads:>2} threads: {n} trivial build cycles in {secs:.2} s = {:.0} builds/s",
            n as f64 / secs
        );
    }
}

/// A finished build 1 whose step 0 logged `log`, sealed; the sealed file.
fn sealed_store(dir: &Path, log: &[u8]) -> (RedbStore, std::path::PathBuf) {
    let s = RedbStore::open(dir).unwrap();
    let b = s
        .start_build(crate::store::NewBuild {
            builder: "b".into(),
            builder_hash: String::new(),
            worker: "w".into(),
            requests: vec![],
            properties: Properties::new(),
            started_at: 1,
        })
        .unwrap()
        .id;
    s.append_log(b, 0, log).unwrap();
    s.finish_build(b, bbc_graph::BuildResult::Success, 2)
        .unwrap();
    assert_eq!(s.seal_logs(b).unwrap().logs, 1);
    let path = dir.join("logs/0/1/0.log.zst");
    assert!(path.is_file());
    assert!(
        !dir.join("logs/0/1/0.log").exists(),
        "the plain log is gone"
    );
    (s, path)
}

#[test]
fn sealed_logs_are_plain_zstd_streams() {
    // `zstd -dc 0.log.zst` gives the log: the seek table is a skippable
    // frame, which every zstd decoder passes over.
    let dir = TempDir::new();
    let log = conformance::compiler_like_log(2_500_000);
    let (_s, path) = sealed_store(dir.path(), &log);
    let decoded = zstd::stream::decode_all(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(decoded, log);
}

#[test]
fn damaged_sealed_logs_are_errors_not_panics() {
    let dir = TempDir::new();
    let log = conformance::compiler_like_log(2_200_000);
    let (s, path) = sealed_store(dir.path(), &log);
    let good = std::fs::read(&path).unwrap();
    let mut damaged = 0;
    let mut check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let len = s.log_len(1, 0);
        let read = s.read_log(1, 0, 0, usize::MAX);
        if let Ok(data) = &read {
            // Damage the checks cannot see (inside a frame's literal
            // bytes) may give other bytes; never more than the length.
            assert!(data.len() as u64 <= len.unwrap_or(u64::MAX));
        } else {
            damaged += 1;
        }
        for off in [0u64, 1 << 20, 2_100_000] {
            let _ = s.read_log(1, 0, off, 100_000);
        }
    };
    // Cut at every length class: inside the table, the trailer, a frame.
    for cut in [
        0,
        1,
        10,
        16,
        20,
        100,
        good.len() / 2,
        good.len() - 17,
        good.len() - 1,
    ] {
        check(&good[..cut]);
    }
    // Single flipped bytes all over the file, and in the table's end.
    for at in (0..good.len())
        .step_by(good.len() / 40)
        .chain(good.len() - 40..good.len())
    {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        check(&b);
    }
    assert!(damaged > 20, "most damage is seen: {damaged}");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(s.read_log(1, 0, 0, usize::MAX).unwrap(), log);
}

#[test]
fn a_sealing_cut_short_leaves_the_log_readable() {
    let dir = TempDir::new();
    let log = conformance::compiler_like_log(1_100_000);
    let (s, sealed) = sealed_store(dir.path(), &log);
    let plain = dir.path().join("logs/0/1/0.log");
    // A crash between the rename and the removal: both files. The plain
    // one is read, and sealing again finishes the job.
    std::fs::write(&plain, &log).unwrap();
    assert_eq!(s.read_log(1, 0, 0, usize::MAX).unwrap(), log);
    assert_eq!(s.log_len(1, 0).unwrap(), log.len() as u64);
    let usage = s.builder_usage("b").unwrap();
    assert_eq!((usage.logs, usage.log_bytes), (1, log.len() as u64));
    // A crash while writing the sealed file: a temporary file, which the
    // next sealing overwrites.
    std::fs::write(dir.path().join("logs/0/1/0.log.zst.tmp"), b"partial").unwrap();
    assert_eq!(s.seal_logs(1).unwrap().logs, 1);
    assert!(!plain.exists());
    assert!(!dir.path().join("logs/0/1/0.log.zst.tmp").exists());
    assert!(sealed.is_file());
    assert_eq!(s.read_log(1, 0, 0, usize::MAX).unwrap(), log);
}

#[test]
#[ignore = "benchmark: cargo test -p bbc-runtime --release -- --ignored seal_bench --nocapture"]
fn seal_bench() {
    // Beside the test binary, as store_bench.
    let base = std::env::var_os("BBC_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf()
        });
    let mb = 200;
    let line = format!("{}\n", "x".repeat(99));
    let logs: [(&str, Vec<u8>); 2] = [
        ("compiler-like", conformance::compiler_like_log(mb << 20)),
        (
            "bench log (`yes` of 99 x)",
            line.as_bytes().repeat((mb << 20) / line.len()),
        ),
    ];
    for (what, log) in logs {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        let b = s
            .start_build(crate::store::NewBuild {
                builder: "b".into(),
                builder_hash: String::new(),
                worker: "w".into(),
                requests: vec![],
                properties: Properties::new(),
                started_at: 1,
            })
            .unwrap()
            .id;
        for chunk in log.chunks(64 * 1024) {
            s.append_log(b, 0, chunk).unwrap();
        }
        s.sync_log(b, 0).unwrap();
        s.finish_build(b, bbc_graph::BuildResult::Success, 2)
            .unwrap();
        let t = Instant::now();
        let sealed = s.seal_logs(b).unwrap();
        let seal_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut at = 0u64;
        while at < sealed.raw {
            at += s.read_log(b, 0, at, 1 << 20).unwrap().len() as u64;
        }
        let read_s = t.elapsed().as_secs_f64();
        let raw_mb = sealed.raw as f64 / 1e6;
        println!(
            "{what}: {:.1} MB → {:.2} MB ({:.1} % of it, {:.0}× smaller); sealed at {:.0} MB/s, read back in 1 MiB reads at {:.0} MB/s",
            raw_mb,
            sealed.stored as f64 / 1e6,
            100.0 * sealed.stored as f64 / sealed.raw as f64,
            sealed.raw as f64 / sealed.stored as f64,
            raw_mb / seal_s,
            raw_mb / read_s
        );
    }
}
