//! The tables, versioned like redb's key layout: `schema_version` holds
//! the version of the layout; `MIGRATIONS[n]` brings version `n` to
//! `n + 1`. A new database gets them all in one transaction; a schema a
//! newer bbc wrote is refused, never guessed at. Migrations run under an
//! advisory lock, so masters starting at once on one database take turns.

use super::{col, exec, pg_err, row, unsigned};
use crate::store::{Result, StoreError};

/// The layout this bbc reads and writes (docs/store.md, "PostgreSQL").
pub const SCHEMA_VERSION: u64 = 4;

/// Version 0 → 1: the whole layout.
const V1: &str = "
CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO counters (name, value) VALUES
    ('change', 0), ('buildset', 0), ('request', 0), ('build', 0), ('audit', 0);
CREATE TABLE changes (id bigint PRIMARY KEY, rec json NOT NULL);
CREATE TABLE buildsets (id bigint PRIMARY KEY, rec json NOT NULL);
CREATE TABLE requests (
    id bigint PRIMARY KEY,
    buildset bigint NOT NULL,
    builder text NOT NULL,
    state text NOT NULL,
    rec json NOT NULL
);
CREATE INDEX requests_by_buildset ON requests (buildset, id);
CREATE INDEX requests_by_builder ON requests (builder, id);
CREATE INDEX requests_pending ON requests (id) WHERE state = 'pending';
CREATE TABLE builds (
    id bigint PRIMARY KEY,
    builder text NOT NULL,
    number bigint NOT NULL,
    finished_at bigint,
    rec json NOT NULL,
    UNIQUE (builder, number)
);
CREATE INDEX builds_by_builder ON builds (builder, id);
CREATE INDEX builds_running ON builds (id) WHERE finished_at IS NULL;
CREATE TABLE build_numbers (builder text PRIMARY KEY, last bigint NOT NULL);
CREATE TABLE steps (
    build bigint NOT NULL,
    idx integer NOT NULL,
    rec json NOT NULL,
    PRIMARY KEY (build, idx)
);
CREATE TABLE logs (
    build bigint NOT NULL,
    step integer NOT NULL,
    len bigint NOT NULL,
    stored bigint NOT NULL,
    sealed boolean NOT NULL DEFAULT false,
    PRIMARY KEY (build, step)
);
CREATE TABLE log_chunks (
    build bigint NOT NULL,
    step integer NOT NULL,
    off bigint NOT NULL,
    raw_len integer NOT NULL,
    zstd boolean NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (build, step, off)
);
ALTER TABLE log_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE workers (name text PRIMARY KEY, rec json NOT NULL);
CREATE TABLE scheduler_state (key text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE audit (id bigint PRIMARY KEY, at bigint NOT NULL, rec json NOT NULL);
";

/// Version 1 → 2: several masters on one schema (`store::lease`): each
/// master's row and lease, the named leases (schedulers, pollers), and
/// the master that runs each build.
const V2: &str = "
CREATE TABLE masters (
    id text PRIMARY KEY,
    name text NOT NULL,
    started_at bigint NOT NULL,
    last_seen bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE TABLE leases (name text PRIMARY KEY, holder text NOT NULL, expires_at bigint NOT NULL);
ALTER TABLE builds ADD COLUMN master text;
";

/// Version 2 → 3: `bbc apply` through one master reaches all of them.
/// `configs` keeps the last configs applied through any master (the graph
/// as JSON, zstd-compressed; never a plain-text credential: such a graph
/// is not shared); each master's row says which config it runs, and which
/// shared one it could not apply and why.
const V3: &str = "
CREATE TABLE configs (
    seq bigint PRIMARY KEY,
    hash text NOT NULL,
    applied_at bigint NOT NULL,
    master text NOT NULL,
    raw_len bigint NOT NULL,
    graph bytea NOT NULL
);
ALTER TABLE configs ALTER COLUMN graph SET STORAGE EXTERNAL;
ALTER TABLE masters ADD COLUMN config text;
ALTER TABLE masters ADD COLUMN config_failed text;
ALTER TABLE masters ADD COLUMN config_error text;
";

/// Version 3 → 4: requests, builds and audit entries take their ids from
/// sequences, which hold no lock: with a counter row, every master
/// starting a build waited for the other's commit (the row stays locked
/// until then). Each sequence goes on from its counter, whose row goes.
/// Changes and build sets keep their counters: neither may become visible
/// after one with a higher id (the schedulers read the changes, and the
/// dependent schedulers the build sets, above the last one they saw), and
/// the row lock held to commit is what orders them.
const V4: &str = "
CREATE SEQUENCE request_ids;
CREATE SEQUENCE build_ids;
CREATE SEQUENCE audit_ids;
SELECT setval((name || '_ids')::regclass, value) FROM counters
    WHERE name IN ('request', 'build', 'audit') AND value > 0;
DELETE FROM counters WHERE name IN ('request', 'build', 'audit');
";

const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The sequences of the layout: a backup copies where each stands.
pub(super) const SEQUENCES: &[&str] = &["request_ids", "build_ids", "audit_ids"];

/// Every table of the layout, in the order a backup copies them.
pub(super) const TABLES: &[&str] = &[
    "schema_version",
    "counters",
    "changes",
    "buildsets",
    "requests",
    "builds",
    "build_numbers",
    "steps",
    "logs",
    "log_chunks",
    "workers",
    "scheduler_state",
    "audit",
    "masters",
    "leases",
    "configs",
];

pub(super) async fn migrate(c: &mut deadpool_postgres::Client, schema: &str) -> Result<()> {
    let t = c.transaction().await.map_err(pg_err)?;
    // One migrator per schema at a time, whatever the master.
    exec(
        &t,
        "SELECT pg_advisory_xact_lock(hashtext('bbc-schema:' || $1))",
        &[&schema],
    )
    .await?;
    t.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)"
    ))
    .await
    .map_err(pg_err)?;
    let current = match row(&t, "SELECT version FROM schema_version", &[]).await? {
        Some(r) => unsigned(col(&r, 0)?, "schema version")?,
        None => {
            exec(&t, "INSERT INTO schema_version (version) VALUES (0)", &[]).await?;
            0
        }
    };
    if current > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the store's schema version is {current}, written by a newer bbc; \
             this bbc reads version {SCHEMA_VERSION} (schema {schema})"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        t.batch_execute(sql).await.map_err(|e| {
            StoreError::Io(format!(
                "migrating schema {schema} from version {from}: {}",
                pg_err(e)
            ))
        })?;
    }
    if current < SCHEMA_VERSION {
        exec(
            &t,
            "UPDATE schema_version SET version = $1",
            &[&(SCHEMA_VERSION as i64)],
        )
        .await?;
    }
    t.commit().await.map_err(pg_err)
}
