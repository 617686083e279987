//! A master's lease among several on one PostgreSQL schema (issue 15;
//! docs/store.md, "Several masters"), with real `bbc master` processes:
//! - a master whose ordinary store work is stalled (every pooled
//!   connection waits for a table lock the test holds) still renews its
//!   lease: the other master never takes it for dead nor takes its
//!   build over, and once the lock goes the work goes on;
//! - a build set that completes while no master holds the schedulers'
//!   lease (its holder was killed) fires its dependent scheduler once a
//!   master takes the lease, exactly once.
//!
//! The masters run with a 1.5 s lease (`BBC_MASTER_LEASE_MS`); the tests
//! wait for events, never for time.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use crate::common::Master;
use crate::common::{get_json, http, wait_for};
use crate::test_multi_master::{builds_of, dirs, kill9, my_id, start};
use crate::test_postgres::{psql, server, split_password, DropSchema};

/// The lease the masters of these tests run with (`start`).
const LEASE_MS: i64 = 1_500;

/// Connections in a master's pool of ordinary store calls
/// (`pg_store::POOL_SIZE`).
const POOL_SIZE: i64 = 16;

/// A `LOCK TABLE … IN ACCESS EXCLUSIVE MODE` held in an open transaction
/// of a `psql` of the test's own, until `release` (or drop: the session
/// ends, and the lock with it, also when the test fails).
struct TableLock {
    psql: Child,
}

impl TableLock {
    fn take(url: &str, schema: &str, table: &str) -> TableLock {
        let mut psql = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        let stdin = psql.stdin.as_mut().expect("psql's stdin");
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE {schema}.{table} IN ACCESS EXCLUSIVE MODE;"
        )
        .unwrap_or_else(|e| panic!("psql: {e}"));
        stdin.flush().unwrap_or_else(|e| panic!("psql: {e}"));
        let lock = TableLock { psql };
        wait_for("the test's table lock", || {
            (psql_count(url, &lock_sql(schema, table, "l.granted")) == 1).then_some(())
        });
        lock
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.psql.stdin.take() {
            writeln!(stdin, "COMMIT;").unwrap_or_else(|e| panic!("psql: {e}"));
        }
        let status = self.psql.wait().unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(status.success(), "psql holding the lock: {status}");
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = self.psql.kill();
        let _ = self.psql.wait();
    }
}

/// The backends holding (`l.granted`) or waiting for (`NOT l.granted`) a
/// lock on `schema.table`.
fn lock_sql(schema: &str, table: &str, which: &str) -> String {
    format!(
        "SELECT count(DISTINCT l.pid) FROM pg_locks l \
         JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{schema}' AND c.relname = '{table}' AND {which}"
    )
}

fn psql_count(url: &str, sql: &str) -> i64 {
    let out = psql(url, sql);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}: {out:?}"))
}

/// A master's row as the store has it now: `(started_at, last_seen,
/// expires_at, the database's clock)` in ms (the masters' clock is the
/// same machine's); `None` once the row is gone.
fn master_row(url: &str, schema: &str, id: &str) -> Option<(i64, i64, i64, i64)> {
    let out = psql(
        url,
        &format!(
            "SELECT started_at, last_seen, expires_at, \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
             FROM {schema}.masters WHERE id = '{id}'"
        ),
    );
    let v: Vec<i64> = out
        .trim()
        .split('|')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{out:?}: {e}")))
        .collect();
    match v[..] {
        [a, b, c, d] => Some((a, b, c, d)),
        [] => None,
        _ => panic!("a masters row: {out:?}"),
    }
}

/// The bug this guards against: the heartbeat went through the same
/// blocking queue and connection pool as every other store call, so a
/// master whose store work was backed up for longer than its lease was
/// taken for dead while alive, and its builds ran twice.
#[test]
fn a_master_whose_store_work_is_stalled_keeps_its_lease() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcml_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("master_lease", &password);
    let go = da.join("go");
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
scheduler "force" kind="force" {{
    builders "long"
}}
builder "long" {{
    workers "wa"
    steps {{
        shell "echo started; while [ ! -e '{go}' ]; do sleep 0.05; done; echo done" name="wait"
    }}
}}
"#,
        go = go.display()
    );
    let ma = start(&da, &config);
    let mb = start(&db, &config);
    let _wa = ma.worker("wa", "pw-worker-a-1234");
    ma.wait_connected("wa");
    let id_a = my_id(&ma);
    // A build running on A, for B to take over if it took A for dead.
    let set = ma.force("long", "{}");
    let build = wait_for("the build to run its step on A", || {
        let r = get_json(&ma.http, &format!("/api/v1/requests?buildset={set}"));
        let id = r["requests"].as_array()?.first()?["build"].as_u64()?;
        let (status, log) = http(
            "GET",
            &ma.http,
            &format!("/api/v1/builds/{id}/steps/0/log"),
            None,
        );
        (status == 200 && log.contains("started")).then_some(id)
    });
    let (started, ..) = master_row(&url, &schema, &id_a).expect("A's row");

    // Every read of `builds` waits for the test's lock; A is asked for
    // its builds many more times at once than its pool has connections.
    let lock = TableLock::take(&url, &schema, "builds");
    let readers: Vec<_> = (0..POOL_SIZE * 2 + 8)
        .map(|_| {
            let addr = ma.http.clone();
            std::thread::spawn(move || http("GET", &addr, "/api/v1/builds", None).0)
        })
        .collect();
    wait_for("A's pooled connections to wait for the lock", || {
        (psql_count(&url, &lock_sql(&schema, "builds", "NOT l.granted")) >= POOL_SIZE).then_some(())
    });
    let (_, _, _, stalled_at) = master_row(&url, &schema, &id_a).expect("A's row");
    // A renews its lease all along, for longer than a lease: B, which
    // takes over from a master as soon as its lease has expired, has seen
    // it alive throughout. Its lease never lapses (checked at each look).
    wait_for(
        "A to renew its lease for a whole lease past the stall",
        || {
            let Some((s, last_seen, expires_at, now)) = master_row(&url, &schema, &id_a) else {
                panic!("A's row is gone: another master took it for dead");
            };
            assert_eq!(s, started, "A's row was taken away and made again");
            assert!(
                expires_at > now,
                "A's lease lapsed while it lived: expires_at {expires_at}, now {now}"
            );
            (last_seen > stalled_at + LEASE_MS).then_some(())
        },
    );
    // Still stalled: the renewals went around the queue, not through it.
    assert!(psql_count(&url, &lock_sql(&schema, "builds", "NOT l.granted")) >= POOL_SIZE);

    // The lock goes: every stalled call answers, and the build (never
    // taken over) ends on A as it would have.
    lock.release();
    for r in readers {
        assert_eq!(r.join().expect("a reader"), 200);
    }
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let done = ma.wait_buildset(set);
    assert_eq!(done["id"].as_u64(), Some(build), "{done}");
    assert_eq!(done["result"], "success", "{done}");
    let all = builds_of(&mb, "long");
    assert_eq!(all.len(), 1, "built once: {all:?}");
    let (s, ..) = master_row(&url, &schema, &id_a).expect("A's row");
    assert_eq!(s, started);
}

/// Whether master `m` says it holds the schedulers' lease.
fn holds_schedulers(m: &Master) -> Option<bool> {
    get_json(&m.http, "/api/v1/masters")["masters"]
        .as_array()?
        .iter()
        .find(|r| r["this"] == true)
        .map(|r| r["schedulers"] == true)
}

/// The upstream build set a build of the dependent scheduler `after`
/// followed, from its build set's reason.
fn followed(m: &Master, build: &serde_json::Value) -> String {
    let id = build["id"].as_u64().expect("a build id");
    let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
    assert_eq!(b["origin"]["scheduler"], "after", "{b}");
    b["origin"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The gap after a holder dies: the dependent schedulers used to watch
/// only the build sets their master heard of while it held the lease, so
/// a set that was stored and completed before the next master took the
/// lease never fired its dependents. They now read the sets stored since
/// the last one they saw, from the store.
#[test]
fn a_build_set_done_while_no_master_holds_the_lease_fires_its_dependents_once() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcmg_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("lease_gap", &password);
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
scheduler "force" kind="force" {{
    builders "up"
}}
scheduler "after" kind="dependent" {{
    upstream "force"
    builders "down"
}}
builder "up" {{
    workers "wa"
    steps {{
        shell "echo up"
    }}
}}
builder "down" {{
    workers "wa"
    steps {{
        shell "echo down"
    }}
}}
"#
    );
    let mut ma = start(&da, &config);
    let mut mb = start(&db, &config);
    let a_holds = wait_for("one master to hold the schedulers' lease", || {
        match (holds_schedulers(&ma)?, holds_schedulers(&mb)?) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    });
    let (holder, other) = if a_holds {
        (&mut ma, &mut mb)
    } else {
        (&mut mb, &mut ma)
    };
    let _wa = other.worker("wa", "pw-worker-a-1234");
    other.wait_connected("wa");
    // The gap, held open for as long as the test needs: the lease is
    // given to a holder that is no master, until far in the future (as a
    // dead holder's lease is until it expires; a dead master's own lease
    // would be taken over after 1.5 s, too soon to be sure the set
    // completes first). Then the holder dies.
    psql(
        &url,
        &format!(
            "UPDATE {schema}.leases SET holder = 'no-master', expires_at = 9000000000000000 \
             WHERE name = 'schedulers'"
        ),
    );
    wait_for("the holder to let the schedulers go", || {
        (!holds_schedulers(holder)?).then_some(())
    });
    kill9(holder);
    assert_eq!(holds_schedulers(other), Some(false));
    // A build set of the upstream scheduler is stored and completes while
    // no master runs the schedulers: nothing follows it yet.
    let first = other.force("up", "{}");
    let up = other.wait_buildset(first);
    assert_eq!(up["result"], "success", "{up}");
    assert!(builds_of(other, "down").is_empty());
    assert_eq!(holds_schedulers(other), Some(false));

    // The lease expires; the survivor takes it and catches up.
    psql(
        &url,
        &format!("UPDATE {schema}.leases SET expires_at = 0 WHERE name = 'schedulers'"),
    );
    let down = wait_for("the dependent build of the set done in the gap", || {
        let b = builds_of(other, "down");
        (b.len() == 1 && b[0]["result"] == "success").then(|| b[0].clone())
    });
    assert!(
        followed(other, &down).ends_with(&format!("(build set {first})")),
        "{down}"
    );
    // Once: the next upstream set fires the next dependent build, and
    // none more for the first set.
    let second = other.force("up", "{}");
    assert_eq!(other.wait_buildset(second)["result"], "success");
    let downs = wait_for("the dependent build of the next set", || {
        let b = builds_of(other, "down");
        (b.len() >= 2 && b.iter().all(|b| b["result"] == "success")).then_some(b)
    });
    let mut sets: Vec<String> = downs.iter().map(|b| followed(other, b)).collect();
    sets.sort();
    let mut want = vec![
        format!("dependent scheduler after after force (build set {first})"),
        format!("dependent scheduler after after force (build set {second})"),
    ];
    want.sort();
    assert_eq!(sets, want);
}
