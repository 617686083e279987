//! Tests of the PostgreSQL backend against a real server: the conformance
//! suite, migrations, and two stores (two masters) claiming at once.
//!
//! `BBC_POSTGRES_URL` names the server (`postgres://bbc:…@127.0.0.1/bbc`,
//! `.ci/run` makes it); each test works in schemas of its own, dropped at
//! its end. Without the variable the tests say they skipped, unless
//! `BBC_REQUIRE_POSTGRES=1` (CI), when they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use super::{PgConfig, PgStore};
use crate::store::conformance::{self, TempDir};
use crate::store::{
    BuildRequest, NewBuild, NewBuildSet, RequestState, SourceStamp, Store, StoreError,
};

/// The server's URL, or `None` (the test skips) when there is none.
fn server(test: &str) -> Option<String> {
    match std::env::var("BBC_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("BBC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{test}: PostgreSQL is required (BBC_REQUIRE_POSTGRES=1) but BBC_POSTGRES_URL is not set");
            }
            eprintln!("skipped {test}: no PostgreSQL (set BBC_POSTGRES_URL)");
            None
        }
    }
}

/// The answer of an async store call, on a runtime of the test's own.
fn wait<T>(f: crate::store::StoreFuture<T>) -> crate::store::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Fresh schemas for one test, one per state directory, all dropped at
/// the end (also when the test fails).
struct Schemas {
    url: String,
    by_dir: Mutex<HashMap<PathBuf, String>>,
    /// Every schema opened, backups' included: dropped at the end.
    all: Mutex<Vec<String>>,
}

impl Schemas {
    fn new(url: String) -> Schemas {
        Schemas {
            url,
            by_dir: Mutex::new(HashMap::new()),
            all: Mutex::new(Vec::new()),
        }
    }

    fn config(&self, schema: &str) -> PgConfig {
        PgConfig {
            url: self.url.clone(),
            password: None,
            schema: schema.to_string(),
        }
    }

    /// The conformance suite's `open(dir)`: the schema a backup directory
    /// names, else one made for `dir` the first time.
    fn open(&self, dir: &Path) -> PgStore {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = match super::backup_schema(dir).unwrap() {
            Some(s) => s,
            None => self
                .by_dir
                .lock()
                .unwrap()
                .entry(dir.to_path_buf())
                .or_insert_with(|| {
                    format!(
                        "bbct_{}_{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    )
                })
                .clone(),
        };
        self.all.lock().unwrap().push(schema.clone());
        PgStore::open(&self.config(&schema)).unwrap()
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let mut schemas: Vec<String> = self.all.lock().map_or(Vec::new(), |m| m.clone());
        schemas.sort();
        schemas.dedup();
        for s in schemas {
            if let Err(e) = PgStore::drop_schema(&self.config(&s), &s) {
                eprintln!("could not drop test schema {s}: {e}");
            }
        }
    }
}

#[test]
fn conformance() {
    let Some(url) = server("pg_store::conformance") else {
        return;
    };
    let schemas = Schemas::new(url);
    conformance::run_all(&|dir: &Path| Box::new(schemas.open(dir)) as Box<dyn Store>);
}

#[test]
fn a_build_set_stored_before_codebases_reads() {
    let Some(url) = server("pg_store::a_build_set_stored_before_codebases_reads") else {
        return;
    };
    let schemas = Schemas::new(url);
    let dir = TempDir::new();
    let s = schemas.open(dir.path());
    let record = conformance::old_buildset_record(4).replace('\'', "''");
    s.execute_raw(&format!(
        "INSERT INTO buildsets (id, rec) VALUES (4, '{record}'::json)"
    ))
    .unwrap();
    conformance::reads_old_buildset(&s, 4);
}

#[test]
fn newer_schema_is_refused() {
    let Some(url) = server("pg_store::newer_schema") else {
        return;
    };
    let schemas = Schemas::new(url);
    let dir = TempDir::new();
    {
        let s = schemas.open(dir.path());
        s.add_change(Default::default(), 1).unwrap();
        s.execute_raw("UPDATE schema_version SET version = 99")
            .unwrap();
    }
    let schema = schemas.by_dir.lock().unwrap()[dir.path()].clone();
    let err = PgStore::open(&schemas.config(&schema)).err().unwrap();
    match err {
        StoreError::Corrupt(m) => {
            assert!(m.contains("schema version is 99"), "{m}");
            assert!(m.contains("newer bbc"), "{m}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Nothing was changed by the refusal: back at this version, the
    // store opens with its data.
    let probe = format!("bbct_{}_probe", std::process::id());
    let admin = PgStore::open(&schemas.config(&probe)).unwrap();
    schemas.all.lock().unwrap().push(probe);
    admin
        .execute_raw(&format!(
            "UPDATE {schema}.schema_version SET version = {}",
            super::SCHEMA_VERSION
        ))
        .unwrap();
    let s = PgStore::open(&schemas.config(&schema)).unwrap();
    assert_eq!(s.changes(Default::default()).unwrap().len(), 1);
}

/// A store of schema version 3 (ids from `counters` rows) moves to
/// sequences that go on from each counter: no id is given twice.
#[test]
fn ids_go_on_from_the_counters_of_version_3() {
    let Some(url) = server("pg_store::ids_from_version_3") else {
        return;
    };
    let schemas = Schemas::new(url);
    let dir = TempDir::new();
    let set = || NewBuildSet {
        priority: 0,
        scheduler: "s".into(),
        reason: "r".into(),
        source: SourceStamp::default(),
        sources: Vec::new(),
        changes: vec![],
        properties: Default::default(),
        parent_build: None,
        submitted_at: 1,
    };
    {
        let s = schemas.open(dir.path());
        s.add_buildset(set(), &[("lin".into(), 0)]).unwrap();
        // Back to version 3's layout, its counters further on than the
        // rows (ids once taken by calls that failed).
        s.execute_raw(
            "DROP SEQUENCE request_ids, build_ids, audit_ids; \
             UPDATE counters SET value = 7 WHERE name = 'buildset'; \
             INSERT INTO counters (name, value) VALUES \
                 ('request', 9), ('build', 0), ('audit', 3); \
             UPDATE schema_version SET version = 3",
        )
        .unwrap();
    }
    let s = schemas.open(dir.path());
    let (set, reqs) = s
        .add_buildset(set(), &[("lin".into(), 0), ("win".into(), 0)])
        .unwrap();
    assert_eq!(set.id, 8);
    assert_eq!(reqs.iter().map(|r| r.id).collect::<Vec<_>>(), [10, 11]);
    let b = s
        .start_build(NewBuild {
            builder: "lin".into(),
            builder_hash: "h".into(),
            worker: "w".into(),
            requests: vec![1],
            properties: Default::default(),
            started_at: 2,
        })
        .unwrap();
    assert_eq!((b.id, b.number), (1, 1), "a counter at 0 starts at 1");
    let e = s.add_audit(conformance::audit_entry(1), 5).unwrap();
    assert_eq!(e.id, 4);
    assert_eq!(s.buildset(1).unwrap().map(|b| b.id), Some(1), "kept");
}

#[test]
fn a_wrong_password_or_server_is_an_io_error() {
    let Some(url) = server("pg_store::wrong_password") else {
        return;
    };
    let cfg = PgConfig {
        url: url.clone(),
        password: Some("certainly-not-the-password".into()),
        schema: "bbct_never".into(),
    };
    match PgStore::open(&cfg).err().unwrap() {
        StoreError::Io(m) => assert!(!m.contains("certainly-not"), "no password in {m}"),
        other => panic!("expected Io, got {other:?}"),
    }
    let cfg = PgConfig {
        url: "postgres://bbc@127.0.0.1:1/bbc".into(),
        password: None,
        schema: "bbct_never".into(),
    };
    assert!(matches!(PgStore::open(&cfg), Err(StoreError::Io(_))));
    let cfg = PgConfig {
        url: "postgres://bbc@127.0.0.1:1/bbc".into(),
        password: None,
        schema: "Robert'); DROP TABLE".into(),
    };
    assert!(matches!(PgStore::open(&cfg), Err(StoreError::Io(_))));
}

/// Two stores on one schema are two masters: claiming the same requests
/// from both at once, exactly one claim of each request wins, and build
/// numbers and ids are never given twice.
#[test]
fn two_masters_never_claim_one_request() {
    let Some(url) = server("pg_store::two_masters") else {
        return;
    };
    let schemas = Schemas::new(url);
    let dir = TempDir::new();
    let a: Arc<dyn Store> = Arc::new(schemas.open(dir.path()));
    let b: Arc<dyn Store> = Arc::new(schemas.open(dir.path()));
    let set = NewBuildSet {
        priority: 0,
        scheduler: "s".into(),
        reason: "r".into(),
        source: SourceStamp::default(),
        sources: Vec::new(),
        changes: vec![],
        properties: Default::default(),
        parent_build: None,
        submitted_at: 1,
    };
    let n = 40u64;
    let builders: Vec<(String, i64)> = (0..n).map(|_| ("lin".to_string(), 0)).collect();
    let (_, reqs) = a.add_buildset(set, &builders).unwrap();
    let ids: Vec<u64> = reqs.iter().map(|r| r.id).collect();
    let barrier = Arc::new(Barrier::new(4));
    let mut threads = Vec::new();
    for t in 0..4 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        let ids = ids.clone();
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let mut won = Vec::new();
            for &id in &ids {
                let nb = NewBuild {
                    builder: "lin".into(),
                    builder_hash: "h".into(),
                    worker: format!("w{t}"),
                    requests: vec![id],
                    properties: Default::default(),
                    started_at: 2,
                };
                match store.start_build(nb) {
                    Ok(b) => won.push((id, b.id, b.number)),
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("claim of {id}: {e}"),
                }
            }
            won
        }));
    }
    let mut won: Vec<(u64, u64, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    won.sort();
    let claimed: Vec<u64> = won.iter().map(|w| w.0).collect();
    assert_eq!(claimed, ids, "each request claimed exactly once");
    let mut builds: Vec<u64> = won.iter().map(|w| w.1).collect();
    builds.sort();
    builds.dedup();
    assert_eq!(builds.len() as u64, n, "build ids unique");
    let mut numbers: Vec<u64> = won.iter().map(|w| w.2).collect();
    numbers.sort();
    assert_eq!(
        numbers,
        (1..=n).collect::<Vec<_>>(),
        "numbers 1..n, once each"
    );
    for id in ids {
        let r: BuildRequest = b.request(id).unwrap().unwrap();
        assert_eq!(r.state, RequestState::Claimed);
        let build = a.build(r.build.unwrap()).unwrap().unwrap();
        assert_eq!(build.build.requests, [id]);
    }
}

/// What the log choice rests on: the same appends, reads and durable
/// batches against PostgreSQL (chunk rows) and redb (files), in one run.
/// `BBC_BENCH_LOG_MB` sets the log's size (default 200).
#[test]
#[ignore = "benchmark: BBC_POSTGRES_URL=… cargo test -p bbc-runtime --release --lib -- --ignored pg_bench --nocapture"]
fn pg_bench() {
    let Some(url) = server("pg_store::pg_bench") else {
        return;
    };
    let mb: usize = std::env::var("BBC_BENCH_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Beside the test binary (in target/), not in a /tmp that may be tmpfs.
    let base = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let redb_dir = tempfile::tempdir_in(&base).unwrap();
    let schemas = Schemas::new(url);
    let pg_dir = TempDir::new();
    let stores: [(&str, Box<dyn Store>); 2] = [
        ("postgres", Box::new(schemas.open(pg_dir.path()))),
        (
            "redb",
            Box::new(crate::store::RedbStore::open(redb_dir.path()).unwrap()),
        ),
    ];
    let chunk = conformance::compiler_like_log(64 * 1024);
    let chunk = &chunk[..64 * 1024];
    let chunks = mb * 1024 * 1024 / chunk.len();
    for (name, s) in &stores {
        let builders: Vec<(String, i64)> = ["lin", "win", "mac"]
            .iter()
            .map(|b| (b.to_string(), 0))
            .collect();
        let batches = 500;
        let t = std::time::Instant::now();
        for i in 0..batches {
            let set = NewBuildSet {
                priority: 0,
                scheduler: "s".into(),
                reason: format!("bench {i}"),
                source: SourceStamp::default(),
                sources: Vec::new(),
                changes: vec![],
                properties: Default::default(),
                parent_build: None,
                submitted_at: i,
            };
            s.add_buildset(set, &builders).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: add_buildset {batches} durable batches: {:.0} batches/s",
            batches as f64 / secs
        );
        let b = s
            .start_build(NewBuild {
                builder: "lin".into(),
                builder_hash: "h".into(),
                worker: "w".into(),
                requests: vec![],
                properties: Default::default(),
                started_at: 1,
            })
            .unwrap()
            .id;
        let t = std::time::Instant::now();
        for _ in 0..chunks {
            s.append_log(b, 0, chunk).unwrap();
        }
        s.sync_log(b, 0).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let total = (chunks * chunk.len()) as f64 / 1e6;
        println!(
            "{name}: append_log {total:.0} MB in 64 KiB chunks + sync_log: {:.0} MB/s",
            total / secs
        );
        let t = std::time::Instant::now();
        let mut off = 0u64;
        loop {
            let got = s.read_log(b, 0, off, 1 << 20).unwrap();
            if got.is_empty() {
                break;
            }
            off += got.len() as u64;
        }
        assert_eq!(off as usize, chunks * chunk.len());
        println!(
            "{name}: read_log in 1 MiB reads: {:.0} MB/s",
            total / t.elapsed().as_secs_f64()
        );
        s.finish_build(b, bbc_graph::BuildResult::Success, 2)
            .unwrap();
        let t = std::time::Instant::now();
        let sealed = s.seal_logs(b).unwrap();
        println!(
            "{name}: seal_logs: {:.0} MB/s, {} bytes stored for {} of log",
            total / t.elapsed().as_secs_f64(),
            sealed.stored,
            sealed.raw
        );
        let t = std::time::Instant::now();
        let mut off = 0u64;
        loop {
            let got = s.read_log(b, 0, off, 1 << 20).unwrap();
            if got.is_empty() {
                break;
            }
            off += got.len() as u64;
        }
        println!(
            "{name}: read_log of the sealed log: {:.0} MB/s",
            total / t.elapsed().as_secs_f64()
        );
    }
}

/// Several masters on one schema, at the store's level: a build records
/// its master; a master's start leaves a live master's build alone but
/// takes its own previous incarnation's; a take-over ends a dead master's
/// builds once, putting their requests back; a named lease has one
/// holder until it expires; and the other store hears of new requests.
#[test]
fn masters_join_take_over_the_dead_and_share_leases() {
    use crate::store::{MasterIdentity, Notice};
    let Some(url) = server("pg_store::masters") else {
        return;
    };
    let schemas = Schemas::new(url);
    let dir = TempDir::new();
    let a = schemas.open(dir.path());
    let b = schemas.open(dir.path());
    let ma = MasterIdentity {
        id: "a-1".into(),
        name: "host:/a".into(),
    };
    let mb = MasterIdentity {
        id: "b-1".into(),
        name: "host:/b".into(),
    };
    let lease = 10_000;
    // Subscribed before the join starts the listener.
    let mut heard = b.notices().unwrap();
    a.join_masters(&ma, 1_000, lease).unwrap();
    b.join_masters(&mb, 1_000, lease).unwrap();
    // B's listener is up once it says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let recv = |rx: &mut tokio::sync::broadcast::Receiver<Notice>, want: Notice| loop {
        match rx.try_recv() {
            Ok(n) if n == want => return,
            Ok(_) => {}
            Err(_) => {
                assert!(std::time::Instant::now() < deadline, "no {want:?} notice");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    };
    recv(&mut heard, Notice::Reconnected);
    let set = NewBuildSet {
        scheduler: "s".into(),
        reason: "r".into(),
        source: SourceStamp::default(),
        sources: Vec::new(),
        changes: vec![],
        properties: Default::default(),
        parent_build: None,
        submitted_at: 1,
        priority: 0,
    };
    let builders = vec![("lin".to_string(), 0), ("lin".to_string(), 0)];
    let (_, reqs) = a.add_buildset(set, &builders).unwrap();
    recv(&mut heard, Notice::Requests);
    let start = |s: &PgStore, req: u64| {
        s.start_build(NewBuild {
            builder: "lin".into(),
            builder_hash: "h".into(),
            worker: "w".into(),
            requests: vec![req],
            properties: Default::default(),
            started_at: 2,
        })
        .unwrap()
    };
    let ba = start(&a, reqs[0].id);
    let bb = start(&b, reqs[1].id);
    assert_eq!(ba.master.as_deref(), Some("a-1"));
    assert_eq!(
        b.build(ba.id).unwrap().unwrap().master.as_deref(),
        Some("a-1")
    );
    // B restarts (a new incarnation, same name): its old build is taken
    // back at once, A's (alive) is left alone.
    let b2 = schemas.open(dir.path());
    let mb2 = MasterIdentity {
        id: "b-2".into(),
        name: "host:/b".into(),
    };
    b2.join_masters(&mb2, 2_000, lease).unwrap();
    assert_eq!(b2.interrupt_running(2_000).unwrap(), vec![bb.id]);
    assert!(b2.build(ba.id).unwrap().unwrap().finished_at.is_none());
    assert_eq!(
        b2.request(reqs[1].id).unwrap().unwrap().state,
        RequestState::Pending
    );
    let ids: Vec<String> = b2.masters().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["a-1", "b-2"]);
    // The schedulers' lease: one holder, renewable, free once expired;
    // each renewal renews the master's own lease too.
    let renew = |s: &PgStore, now| wait(s.renew(now, lease, &["schedulers"])).unwrap();
    let held = |s: &PgStore, now| {
        let r = renew(s, now);
        assert!(r.alive);
        r.held == [true]
    };
    assert!(held(&a, 2_000));
    assert!(!held(&b2, 3_000));
    assert!(held(&a, 4_000));
    // A's lease ran out at 14 000 (it did not renew): nothing to take
    // before, its build and its lease after, once.
    assert!(!held(&b2, 10_000));
    assert_eq!(wait(b2.take_over(13_999)).unwrap(), Vec::<u64>::new());
    assert_eq!(wait(b2.take_over(14_000)).unwrap(), vec![ba.id]);
    assert_eq!(wait(b2.take_over(14_001)).unwrap(), Vec::<u64>::new());
    let gone = b2.build(ba.id).unwrap().unwrap();
    assert_eq!(gone.state_string, "interrupted");
    assert_eq!(gone.result, Some(bbc_graph::BuildResult::Retry));
    assert_eq!(
        b2.request(reqs[0].id).unwrap().unwrap().state,
        RequestState::Pending
    );
    assert!(held(&b2, 14_002));
    // A comes back (it was only slow): it learns its row was gone, and
    // that the schedulers' lease is B's now.
    let back = renew(&a, 15_000);
    assert!(!back.alive);
    assert_eq!(back.held, [false]);
    assert!(!held(&a, 15_001));
    // A's late end of the taken-over build changes nothing.
    assert!(matches!(
        a.finish_build(ba.id, bbc_graph::BuildResult::Success, 15_002),
        Err(StoreError::Conflict(_))
    ));
}

/// A renewal never waits for the ordinary calls' pool, and a renewal
/// stuck behind a lock ends as an error (the master then stops acting as
/// a holder) instead of hanging; the next one works again.
#[test]
fn a_renewal_goes_around_a_full_pool_and_a_stuck_one_fails() {
    use crate::store::MasterIdentity;
    let Some(url) = server("pg_store::renewal") else {
        return;
    };
    let schemas = Schemas::new(url.clone());
    let dir = TempDir::new();
    let a = Arc::new(schemas.open(dir.path()));
    let me = MasterIdentity {
        id: "a-1".into(),
        name: "host:/a".into(),
    };
    // A short lease: a third of it bounds each renewal.
    let lease = 1_500;
    a.join_masters(&me, 1_000, lease).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The test's own session, holding a table lock in an open transaction.
    let (lock, conn) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    let driver = rt.spawn(conn);
    let take = |table: &str| {
        rt.block_on(lock.batch_execute(&format!(
            "BEGIN; LOCK TABLE {}.{table} IN ACCESS EXCLUSIVE MODE",
            a.schema()
        )))
        .unwrap()
    };
    let waiting = |table: &str| -> i64 {
        let sql = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{}' AND c.relname = '{table}' AND NOT l.granted",
            a.schema()
        );
        rt.block_on(lock.query_one(&sql, &[])).unwrap().get(0)
    };
    // Every pooled connection waits for `builds`.
    take("builds");
    let readers: Vec<_> = (0..super::POOL_SIZE)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                a.builds(&Default::default(), Default::default())
                    .map(|b| b.len())
            })
        })
        .collect();
    while waiting("builds") < super::POOL_SIZE as i64 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let r = wait(a.renew(2_000, lease, &["schedulers"])).unwrap();
    assert!(r.alive);
    assert_eq!(r.held, [true]);
    rt.block_on(lock.batch_execute("COMMIT")).unwrap();
    for r in readers {
        assert_eq!(r.join().unwrap().unwrap(), 0);
    }
    // A renewal stuck behind a lock on `leases` fails, and says why: the
    // server's lock or statement timeout (both are the bound; which one
    // fires first is the server's choice), or this side's.
    take("leases");
    match wait(a.renew(3_000, lease, &["schedulers"])) {
        Err(StoreError::Io(e)) => assert!(
            e.contains("lock timeout")
                || e.contains("statement timeout")
                || e.contains("took longer"),
            "{e}"
        ),
        other => panic!("a stuck renewal answered {other:?}"),
    }
    rt.block_on(lock.batch_execute("COMMIT")).unwrap();
    let r = wait(a.renew(4_000, lease, &["schedulers"])).unwrap();
    assert!(r.alive);
    assert_eq!(r.held, [true]);
    drop(lock);
    let _ = rt.block_on(driver);
}
