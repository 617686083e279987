//! The PostgreSQL backend of the [`Store`] trait: the master's state in
//! one schema of a PostgreSQL database, so that several masters can later
//! share it (docs/store.md, "PostgreSQL").
//!
//! The driver is `tokio-postgres` with a `deadpool-postgres` pool, on a
//! small tokio runtime of the store's own. The trait is synchronous and
//! the master calls it from blocking threads (`Shared::db` is
//! `spawn_blocking`); each call hands its future to the store's runtime
//! and waits for the answer on a channel. That works from any thread (a
//! sync driver such as `postgres` starts a runtime per call and panics
//! inside another runtime's context), the pool is async and shared by
//! every caller, and the same connection tasks can later carry
//! LISTEN/NOTIFY for several masters. The master's own runtime never
//! runs database I/O.
//!
//! Every method is one transaction. Durable ones commit with the server's
//! `synchronous_commit` (on by default), so `Ok` means the commit is in the
//! WAL on disk; `put_step`, `set_build_state` and `append_log` commit with
//! `synchronous_commit = off`, which the next durable commit covers (the
//! WAL is flushed in order): exactly the trait's "visible at once, durable
//! with the next durable write". Those three run on connections of their
//! own whose sessions say `synchronous_commit = off` (the `relaxed` pool),
//! each as one statement: no `BEGIN`, `SET LOCAL`, `COMMIT` around it.
//!
//! Records are kept as JSON (the same serde encoding as redb's values)
//! beside the columns that queries and indexes need; claims and
//! completions lock the rows they change (`SELECT … FOR UPDATE`), so two
//! masters running them at once on one database stay consistent.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{
    AuditEntry, BackupReport, Build, BuildFilter, BuildRequest, BuildSet, BuilderUsage, Change,
    Millis, NewAuditEntry, NewBuild, NewBuildSet, NewChange, Page, Properties, Pruned,
    RequestFilter, Result, Retention, Sealed, StepRecord, Store, StoreError, StoreFuture,
    WorkerRecord,
};
use crate::store::lease::{self, Renewal};
use crate::store::{MasterIdentity, MasterRecord, Notice};
use bbc_graph::BuildResult;

mod backup;
mod builds;
mod logs;
mod masters;
mod retention;
mod schema;
#[cfg(test)]
mod tests;

pub use backup::{backup_schema, BACKUP_FILE};
pub use schema::SCHEMA_VERSION;

/// Connections the pool keeps at most: enough for the master's blocking
/// threads that touch the store at once; PostgreSQL's default limit is 100.
const POOL_SIZE: usize = 16;
/// Connections of the relaxed pool (`put_step`, `set_build_state`,
/// `append_log`): single statements that do not wait for the disk.
const RELAXED_POOL_SIZE: usize = 8;

/// How long a call waits for a connection, and a new connection for the
/// server, before it fails with `Io` (the server is down or overloaded).
const WAIT: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(10);

/// How long a take-over may take at most (each of its statements ends
/// within the renewal's bound; a dead master may have many builds).
const TAKE_OVER: Duration = Duration::from_secs(60);

/// Where and how to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user@host:port/db`, as tokio-postgres parses it.
    pub url: String,
    /// The password, from a secret (never in the URL of a config).
    pub password: Option<String>,
    /// The schema that holds the tables (created if missing).
    pub schema: String,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgConfig")
            .field("url", &self.url)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Whether `name` can be a schema name here: lower-case letters, digits and
/// `_`, not starting with a digit or `pg_`, at most 63 characters
/// (PostgreSQL's limit; a config's is 40, to leave room for the `_bk_…` of
/// a backup). No quoting is ever needed.
pub fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("pg_")
}

pub struct PgStore {
    /// `Some` until drop, which shuts it down without waiting.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// Connections whose commits do not wait for the WAL flush.
    relaxed: Pool,
    schema: String,
    /// The last call met a database error that was not the caller's
    /// (`health` then probes with a write).
    failing: AtomicBool,
    /// How to connect, for the connection that LISTENs.
    pg: tokio_postgres::Config,
    /// The master using this store, once it joined (`join_masters`): its
    /// builds record it.
    me: std::sync::RwLock<Option<MasterIdentity>>,
    /// What the other masters did (`notices`), fed by the listening task
    /// that `join_masters` starts.
    notices: tokio::sync::broadcast::Sender<Notice>,
    listening: AtomicBool,
    /// The connections of the lease work, made when the master joins
    /// (`lease_pool`).
    lease_pool: std::sync::OnceLock<Pool>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped on an async thread: no blocking there.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The database's errors, sorted into the store's: a unique key taken by
/// another writer is a conflict, everything else the database's failure.
fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(format!("database: {}", db.message()));
        }
        return StoreError::Io(format!(
            "database: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        ));
    }
    StoreError::Io(format!("database: {e}"))
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Io(format!("database connection: {e}"))
}

/// An id as a `bigint`: ids above `i64::MAX` are never issued, so they map
/// to a key that finds nothing.
fn key(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// A `bigint` read back as an id or count.
fn unsigned(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {v}")))
}

fn col<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("a stored row does not decode: {e}")))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A statement prepared once per connection (deadpool's cache), then run.
async fn rows(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.query(&st, p).await.map_err(pg_err)
}

async fn row(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.query_opt(&st, p).await.map_err(pg_err)
}

async fn exec(c: &impl GenericClient, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(pg_err)?;
    c.execute(&st, p).await.map_err(pg_err)
}

/// A record as the text of its JSON column.
fn json<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    let bytes = super::redb_store::records::encode(what, v)?;
    String::from_utf8(bytes).map_err(|e| StoreError::Io(format!("encoding {what}: {e}")))
}

fn storable(p: &mut Properties) {
    super::redb_store::records::storable(p)
}

/// A record read back from its JSON column, checked against its id.
fn record<T: super::redb_store::records::Record>(row: &Row, id: usize, rec: usize) -> Result<T> {
    let id: i64 = col(row, id)?;
    let text: String = col(row, rec)?;
    super::redb_store::records::decode_record(unsigned(id, T::TABLE)?, text.as_bytes())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, row: &Row, i: usize) -> Result<T> {
    let text: String = col(row, i)?;
    super::redb_store::records::decode(what, text.as_bytes())
}

/// A pool of connections made with `pg` (none until asked for).
fn new_pool(pg: tokio_postgres::Config, size: usize) -> Result<Pool> {
    let mgr = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(WAIT))
        .create_timeout(Some(CONNECT))
        .build()
        .map_err(|e| StoreError::Io(format!("database pool: {e}")))
}

impl PgStore {
    /// Connects, creates the schema if needed and brings its tables to
    /// [`SCHEMA_VERSION`]; refuses a schema a newer bbc wrote.
    pub fn open(cfg: &PgConfig) -> Result<PgStore> {
        if !valid_schema(&cfg.schema) {
            return Err(StoreError::Io(format!(
                "`{}` is not a schema name bbc uses (lower-case letters, digits and _, at most 63)",
                cfg.schema
            )));
        }
        let mut pg: tokio_postgres::Config = cfg
            .url
            .parse()
            .map_err(|e| StoreError::Io(format!("the PostgreSQL URL does not parse: {e}")))?;
        if let Some(pw) = &cfg.password {
            pg.password(pw.as_bytes());
        }
        // Every pooled connection works in the store's schema.
        pg.options(format!("-c search_path={}", cfg.schema));
        pg.application_name("bbc");
        pg.connect_timeout(CONNECT);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bbc-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the database runtime: {e}")))?;
        let pool = new_pool(pg.clone(), POOL_SIZE)?;
        // The session's setting instead of a `SET LOCAL` in each
        // transaction: a relaxed write is then one statement.
        let mut rpg = pg.clone();
        rpg.options(format!(
            "-c search_path={} -c synchronous_commit=off",
            cfg.schema
        ));
        let relaxed = new_pool(rpg, RELAXED_POOL_SIZE)?;
        let store = PgStore {
            handle: rt.handle().clone(),
            rt: Some(rt),
            pool,
            relaxed,
            schema: cfg.schema.clone(),
            failing: AtomicBool::new(false),
            pg,
            me: std::sync::RwLock::new(None),
            notices: tokio::sync::broadcast::channel(256).0,
            listening: AtomicBool::new(false),
            lease_pool: std::sync::OnceLock::new(),
        };
        let schema = cfg.schema.clone();
        store.with(move |mut c| async move { schema::migrate(&mut c, &schema).await })?;
        Ok(store)
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The master that joined, if any.
    fn me(&self) -> Option<MasterIdentity> {
        self.me.read().ok().and_then(|m| m.clone())
    }

    fn me_or_err(&self) -> Result<MasterIdentity> {
        self.me()
            .ok_or_else(|| StoreError::Conflict("this master has not joined the store".into()))
    }

    /// Runs `fut` on the store's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let r = rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Io(
                "the database task stopped before answering".to_string(),
            ))
        });
        match &r {
            Err(StoreError::Io(_)) => self.failing.store(true, Ordering::Relaxed),
            Ok(_) => self.failing.store(false, Ordering::Relaxed),
            Err(_) => {}
        }
        r
    }

    /// Runs `f` with a pooled connection.
    fn with<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.with_pool(self.pool.clone(), f)
    }

    /// Runs `f` with a connection of `pool` on the store's runtime.
    fn with_pool<T, F, Fut>(&self, pool: Pool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.run(async move {
            let c = pool.get().await.map_err(pool_err)?;
            f(c).await
        })
    }

    /// The pool of the lease work ([`Store::renew`], [`Store::take_over`]):
    /// two connections of its own, one for each of the heartbeat's two
    /// tasks, so that neither waits for the ordinary calls nor for the
    /// other. Each statement on them ends within the renewal's bound
    /// (`statement_timeout`, `lock_timeout`): the server gives up a
    /// statement stuck behind a lock even once this side has dropped the
    /// connection, which a backend waiting for a lock would not notice.
    fn make_lease_pool(&self, lease_ms: Millis) -> Result<Pool> {
        let bound = lease::renewal_bound(lease_ms);
        let mut pg = self.pg.clone();
        pg.options(format!(
            "-c search_path={} -c statement_timeout={bound} -c lock_timeout={bound}",
            self.schema
        ));
        pg.application_name("bbc-lease");
        // Waiting for one of the two is bounded by each call's own
        // deadline (`on_lease_connection`), well inside the pool's.
        new_pool(pg, 2)
    }

    /// Runs `f` with a connection of the lease pool and this master's
    /// identity on the store's runtime, all of it within `bound`: past
    /// it the call is `Err` and the connection is closed rather than
    /// given back (a statement may still be running on it; a broken
    /// connection is replaced by a new one at the next call).
    fn on_lease_connection<T, F>(&self, bound: Duration, f: F) -> StoreFuture<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut deadpool_postgres::Client,
                MasterIdentity,
            )
                -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>
            + Send
            + 'static,
    {
        let me = match self.me_or_err() {
            Ok(me) => me,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let Some(pool) = self.lease_pool.get().cloned() else {
            return Box::pin(std::future::ready(Err(StoreError::Conflict(
                "this master has not joined the store".into(),
            ))));
        };
        let late = move || {
            StoreError::Io(format!(
                "database: the lease work took longer than {} ms",
                bound.as_millis()
            ))
        };
        let task = self.handle.spawn(async move {
            let deadline = tokio::time::Instant::now() + bound;
            let mut c = tokio::time::timeout_at(deadline, pool.get())
                .await
                .map_err(|_| late())?
                .map_err(pool_err)?;
            let r = tokio::time::timeout_at(deadline, f(&mut c, me)).await;
            match r {
                Ok(r) => r,
                Err(_) => {
                    drop(deadpool_postgres::Object::take(c));
                    Err(late())
                }
            }
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(StoreError::Io(format!(
                    "the database task stopped before answering: {e}"
                )))
            })
        })
    }

    /// Runs `f` with a connection of the relaxed pool (commits that do not
    /// wait for the WAL flush).
    fn with_relaxed<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.with_pool(self.relaxed.clone(), f)
    }

    /// One SQL statement of the tests' own (a schema version to fake).
    #[cfg(test)]
    pub(crate) fn execute_raw(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.with(move |c| async move { c.batch_execute(&sql).await.map_err(pg_err) })
    }

    /// Drops a schema and everything in it (the tests' clean-up).
    #[cfg(any(test, feature = "conformance"))]
    pub fn drop_schema(cfg: &PgConfig, schema: &str) -> Result<()> {
        if !valid_schema(schema) {
            return Err(StoreError::Io(format!("not a schema name: {schema}")));
        }
        let admin = PgConfig {
            schema: "public".to_string(),
            ..cfg.clone()
        };
        // Not `open`: that would create the tables in `public`.
        let mut pg: tokio_postgres::Config = admin
            .url
            .parse()
            .map_err(|e| StoreError::Io(format!("the PostgreSQL URL does not parse: {e}")))?;
        if let Some(pw) = &admin.password {
            pg.password(pw.as_bytes());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        rt.block_on(async move {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(pg_err)?;
            let task = tokio::spawn(conn);
            let r = client.batch_execute(&sql).await.map_err(pg_err);
            drop(client);
            let _ = task.await;
            r
        })
    }
}

impl Store for PgStore {
    fn add_change(&self, change: NewChange, now: Millis) -> Result<Change> {
        self.with(move |mut c| async move { builds::add_change(&mut c, change, now).await })
    }

    fn change(&self, id: u64) -> Result<Option<Change>> {
        self.with(move |c| async move {
            match row(
                &c,
                "SELECT id, rec::text FROM changes WHERE id = $1",
                &[&key(id)],
            )
            .await?
            {
                Some(r) => record(&r, 0, 1).map(Some),
                None => Ok(None),
            }
        })
    }

    fn changes(&self, page: Page) -> Result<Vec<Change>> {
        self.with(move |c| async move {
            let (before, limit) = builds::page(&page);
            let rs = rows(
                &c,
                "SELECT id, rec::text FROM changes WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before, &limit],
            )
            .await?;
            rs.iter().map(|r| record(r, 0, 1)).collect()
        })
    }

    fn add_buildset(
        &self,
        set: NewBuildSet,
        builders: &[(String, i64)],
    ) -> Result<(BuildSet, Vec<BuildRequest>)> {
        let builders = builders.to_vec();
        let master = self.me().map(|m| m.id);
        self.with(
            move |mut c| async move { builds::add_buildset(&mut c, set, builders, master).await },
        )
    }

    fn buildset(&self, id: u64) -> Result<Option<BuildSet>> {
        self.with(move |c| async move {
            match row(
                &c,
                "SELECT id, rec::text FROM buildsets WHERE id = $1",
                &[&key(id)],
            )
            .await?
            {
                Some(r) => record(&r, 0, 1).map(Some),
                None => Ok(None),
            }
        })
    }

    fn buildsets_after(&self, after: u64, limit: usize) -> Result<Vec<BuildSet>> {
        self.with(move |c| async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rs = rows(
                &c,
                "SELECT id, rec::text FROM buildsets WHERE id > $1 ORDER BY id LIMIT $2",
                &[&key(after), &limit],
            )
            .await?;
            rs.iter().map(|r| record(r, 0, 1)).collect()
        })
    }

    fn buildsets(&self, ids: &[u64]) -> Result<Vec<BuildSet>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|&id| key(id)).collect();
        self.with(move |c| async move {
            let rs = rows(
                &c,
                "SELECT id, rec::text FROM buildsets WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
            rs.iter().map(|r| record(r, 0, 1)).collect()
        })
    }

    fn newest_buildset(&self) -> Result<u64> {
        self.with(move |c| async move {
            match row(&c, "SELECT max(id) FROM buildsets", &[]).await? {
                Some(r) => unsigned(col::<Option<i64>>(&r, 0)?.unwrap_or(0), "build set id"),
                None => Ok(0),
            }
        })
    }

    fn request(&self, id: u64) -> Result<Option<BuildRequest>> {
        self.with(move |c| async move {
            match row(
                &c,
                "SELECT id, rec::text FROM requests WHERE id = $1",
                &[&key(id)],
            )
            .await?
            {
                Some(r) => record(&r, 0, 1).map(Some),
                None => Ok(None),
            }
        })
    }

    fn requests(&self, filter: &RequestFilter, page: Page) -> Result<Vec<BuildRequest>> {
        let filter = filter.clone();
        self.with(move |c| async move { builds::requests(&c, filter, page).await })
    }

    fn pending_requests(&self) -> Result<Vec<BuildRequest>> {
        self.with(move |c| async move {
            let rs = rows(
                &c,
                "SELECT id, rec::text FROM requests WHERE state = 'pending' ORDER BY id",
                &[],
            )
            .await?;
            rs.iter().map(|r| record(r, 0, 1)).collect()
        })
    }

    fn cancel_request(&self, id: u64, now: Millis) -> Result<bool> {
        self.with(move |mut c| async move { builds::cancel_request(&mut c, id, now).await })
    }

    fn start_build(&self, build: NewBuild) -> Result<Build> {
        let master = self.me().map(|m| m.id);
        self.with(move |mut c| async move { builds::start_build(&mut c, build, master).await })
    }

    fn set_build_state(&self, id: u64, state_string: &str, properties: &Properties) -> Result<()> {
        let state_string = state_string.to_string();
        let mut properties = properties.clone();
        storable(&mut properties);
        self.with_relaxed(move |c| async move {
            builds::set_build_state(&c, id, state_string, properties).await
        })
    }

    fn finish_build(&self, id: u64, result: BuildResult, now: Millis) -> Result<()> {
        self.with(move |mut c| async move {
            let t = c.transaction().await.map_err(pg_err)?;
            builds::finish(&t, id, result, None, now).await?;
            t.commit().await.map_err(pg_err)
        })
    }

    fn finish_build_with_state(
        &self,
        id: u64,
        result: BuildResult,
        state_string: &str,
        properties: &Properties,
        now: Millis,
    ) -> Result<()> {
        let state_string = state_string.to_string();
        let mut properties = properties.clone();
        storable(&mut properties);
        self.with(move |mut c| async move {
            let t = c.transaction().await.map_err(pg_err)?;
            let state = builds::EndState {
                state_string: Some(&state_string),
                properties: Some(properties),
            };
            builds::finish_with(&t, id, result, state, now).await?;
            t.commit().await.map_err(pg_err)
        })
    }

    fn build(&self, id: u64) -> Result<Option<Build>> {
        self.with(move |c| async move {
            match row(
                &c,
                "SELECT id, rec::text FROM builds WHERE id = $1",
                &[&key(id)],
            )
            .await?
            {
                Some(r) => record(&r, 0, 1).map(Some),
                None => Ok(None),
            }
        })
    }

    fn build_by_number(&self, builder: &str, number: u64) -> Result<Option<Build>> {
        let builder = builder.to_string();
        self.with(move |c| async move {
            let r = row(
                &c,
                "SELECT id, rec::text FROM builds WHERE builder = $1 AND number = $2",
                &[&builder, &key(number)],
            )
            .await?;
            r.map(|r| record(&r, 0, 1)).transpose()
        })
    }

    fn builds(&self, filter: &BuildFilter, page: Page) -> Result<Vec<Build>> {
        let filter = filter.clone();
        self.with(move |c| async move { builds::builds(&c, filter, page).await })
    }

    fn interrupt_running(&self, now: Millis) -> Result<Vec<u64>> {
        // Alone (no master joined): every running build. Else only those
        // of dead masters and of this master's previous incarnations.
        let me = self.me();
        self.with(move |mut c| async move { masters::interrupt_orphans(&mut c, me, now).await })
    }

    fn put_step(&self, build: u64, step: &StepRecord) -> Result<()> {
        let step = step.clone();
        self.with_relaxed(move |c| async move { builds::put_step(&c, build, step).await })
    }

    fn steps(&self, build: u64) -> Result<Vec<StepRecord>> {
        self.with(move |c| async move { builds::steps(&c, build).await })
    }

    fn append_log(&self, build: u64, step: u32, data: &[u8]) -> Result<u64> {
        let data = data.to_vec();
        self.with_relaxed(move |c| async move { logs::append(&c, build, step, data).await })
    }

    fn sync_log(&self, build: u64, step: u32) -> Result<()> {
        self.with(move |c| async move { logs::sync(&c, build, step).await.map(|_| ()) })
    }

    fn sync_log_len(&self, build: u64, step: u32) -> Result<u64> {
        self.with(move |c| async move { logs::sync(&c, build, step).await })
    }

    fn read_log(&self, build: u64, step: u32, offset: u64, max: usize) -> Result<Vec<u8>> {
        self.with(move |c| async move { logs::read(&c, build, step, offset, max).await })
    }

    fn log_len(&self, build: u64, step: u32) -> Result<u64> {
        self.with(move |c| async move { logs::len(&c, build, step).await })
    }

    fn seal_logs(&self, build: u64) -> Result<Sealed> {
        self.with(move |mut c| async move { logs::seal_build(&mut c, build).await })
    }

    fn prune(
        &self,
        policy: &Retention,
        now: Millis,
        after: u64,
        scan: usize,
        limit: usize,
    ) -> Result<Pruned> {
        let policy = *policy;
        self.with(move |mut c| async move {
            retention::prune(&mut c, policy, now, after, scan, limit).await
        })
    }

    fn builder_usage(&self, builder: &str) -> Result<BuilderUsage> {
        let builder = builder.to_string();
        self.with(move |c| async move { retention::builder_usage(&c, builder).await })
    }

    fn worker_connected(
        &self,
        name: &str,
        info: &std::collections::BTreeMap<String, String>,
        now: Millis,
    ) -> Result<()> {
        let (name, info) = (name.to_string(), info.clone());
        self.with(move |mut c| async move {
            let t = c.transaction().await.map_err(pg_err)?;
            let old = row(
                &t,
                "SELECT rec::text FROM workers WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?;
            let w = match old {
                Some(r) => {
                    let mut w: WorkerRecord = decode(&format!("worker {name}"), &r, 0)?;
                    w.last_connected = now;
                    w.info = info;
                    w
                }
                None => WorkerRecord {
                    name: name.clone(),
                    first_seen: now,
                    last_connected: now,
                    last_disconnected: None,
                    info,
                },
            };
            let rec = json("worker", &w)?;
            exec(
                &t,
                "INSERT INTO workers (name, rec) VALUES ($1, $2::text::json) \
                 ON CONFLICT (name) DO UPDATE SET rec = EXCLUDED.rec",
                &[&name, &rec],
            )
            .await?;
            t.commit().await.map_err(pg_err)
        })
    }

    fn worker_disconnected(&self, name: &str, now: Millis) -> Result<()> {
        let name = name.to_string();
        self.with(move |mut c| async move {
            let t = c.transaction().await.map_err(pg_err)?;
            let Some(r) = row(
                &t,
                "SELECT rec::text FROM workers WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?
            else {
                return Ok(());
            };
            let mut w: WorkerRecord = decode(&format!("worker {name}"), &r, 0)?;
            w.last_disconnected = Some(now);
            let rec = json("worker", &w)?;
            exec(
                &t,
                "UPDATE workers SET rec = $2::text::json WHERE name = $1",
                &[&name, &rec],
            )
            .await?;
            t.commit().await.map_err(pg_err)
        })
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.with(move |c| async move {
            let rs = rows(&c, "SELECT name, rec::text FROM workers ORDER BY name", &[]).await?;
            rs.iter()
                .map(|r| {
                    let name: String = col(r, 0)?;
                    let w: WorkerRecord = decode(&format!("worker {name}"), r, 1)?;
                    if w.name != name {
                        return Err(StoreError::Corrupt(format!(
                            "worker {name} is stored with name {}",
                            w.name
                        )));
                    }
                    Ok(w)
                })
                .collect()
        })
    }

    fn get_state(&self, k: &str) -> Result<Option<Vec<u8>>> {
        let k = k.to_string();
        self.with(move |c| async move {
            let r = row(
                &c,
                "SELECT value FROM scheduler_state WHERE key = $1",
                &[&k],
            )
            .await?;
            r.map(|r| col::<Vec<u8>>(&r, 0)).transpose()
        })
    }

    fn put_state(&self, k: &str, value: &[u8]) -> Result<()> {
        self.put_states(&[(k.to_string(), value.to_vec())])
    }

    fn put_states(&self, entries: &[(String, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // One statement, so one transaction, however many entries; the
        // last value of a key given twice wins, as it would in a loop.
        let mut last: std::collections::BTreeMap<&str, &[u8]> = std::collections::BTreeMap::new();
        for (k, v) in entries {
            last.insert(k.as_str(), v.as_slice());
        }
        let keys: Vec<String> = last.keys().map(|k| k.to_string()).collect();
        let values: Vec<Vec<u8>> = last.values().map(|v| v.to_vec()).collect();
        self.with(move |c| async move {
            exec(
                &c,
                "INSERT INTO scheduler_state (key, value) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&keys, &values],
            )
            .await
            .map(|_| ())
        })
    }

    fn add_audit(&self, entry: NewAuditEntry, now: Millis) -> Result<AuditEntry> {
        // Two statements, no transaction around them: an id whose insert
        // failed is skipped, as a sequence's are.
        self.with(move |c| async move {
            let id = builds::next_audit_id(&c).await?;
            let e = AuditEntry { id, at: now, entry };
            let rec = json("audit entry", &e)?;
            exec(
                &c,
                "INSERT INTO audit (id, at, rec) VALUES ($1, $2, $3::text::json)",
                &[&key(id), &now, &rec],
            )
            .await?;
            Ok(e)
        })
    }

    fn audit(&self, page: Page) -> Result<Vec<AuditEntry>> {
        self.with(move |c| async move {
            let (before, limit) = builds::page(&page);
            let rs = rows(
                &c,
                "SELECT id, rec::text FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before, &limit],
            )
            .await?;
            rs.iter().map(|r| record(r, 0, 1)).collect()
        })
    }

    fn prune_audit(&self, before: Millis, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| async move {
            // Oldest first; the first entry at or after `before` stops it.
            exec(
                &c,
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE id < \
                 COALESCE((SELECT min(id) FROM audit WHERE at >= $1), 9223372036854775807) \
                 ORDER BY id LIMIT $2)",
                &[&before, &limit],
            )
            .await
        })
    }

    fn backup(&self, out: &Path) -> Result<BackupReport> {
        let out = out.to_path_buf();
        let schema = self.schema.clone();
        self.with(move |mut c| async move { backup::backup(&mut c, &schema, &out).await })
    }

    fn shared(&self) -> bool {
        true
    }

    fn join_masters(&self, me: &MasterIdentity, now: Millis, lease_ms: Millis) -> Result<()> {
        if self.lease_pool.get().is_none() {
            // A second join (the tests) keeps the first pool.
            let _ = self.lease_pool.set(self.make_lease_pool(lease_ms)?);
        }
        let m = me.clone();
        self.with(move |c| async move { masters::join(&c, &m, now, lease_ms).await })?;
        if let Ok(mut slot) = self.me.write() {
            *slot = Some(me.clone());
        }
        if !self.listening.swap(true, Ordering::SeqCst) {
            self.handle.spawn(masters::listen(
                self.pg.clone(),
                self.schema.clone(),
                me.id.clone(),
                self.notices.clone(),
            ));
        }
        Ok(())
    }

    fn renew(&self, now: Millis, lease_ms: Millis, names: &[&str]) -> StoreFuture<Renewal> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let bound = Duration::from_millis(lease::renewal_bound(lease_ms) as u64);
        self.on_lease_connection(bound, move |c, me| {
            Box::pin(async move {
                let alive = masters::heartbeat(c, &me, now, lease_ms).await?;
                let mut held = Vec::with_capacity(names.len());
                for n in &names {
                    held.push(masters::take_lease(c, &me, n, now, lease_ms).await?);
                }
                Ok(Renewal { alive, held })
            })
        })
    }

    fn take_over(&self, now: Millis) -> StoreFuture<Vec<u64>> {
        self.on_lease_connection(TAKE_OVER, move |c, me| {
            Box::pin(async move { masters::take_over(c, &me, now).await })
        })
    }

    fn masters(&self) -> Result<Vec<MasterRecord>> {
        self.with(move |c| async move { masters::all(&c).await })
    }

    fn release_leases(&self) -> Result<()> {
        let Some(me) = self.me() else {
            return Ok(());
        };
        self.with(move |c| async move { masters::release_leases(&c, &me).await })
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        Some(self.notices.subscribe())
    }

    fn request_cancel(&self, id: u64) -> Result<bool> {
        self.with(move |c| async move { masters::request_cancel(&c, id).await })
    }

    fn share_config(&self, hash: &str, graph_json: &str, now: Millis) -> Result<u64> {
        let me = self.me_or_err()?;
        let hash = hash.to_string();
        // Compressed off the database runtime: a large graph is megabytes.
        let packed = zstd::bulk::compress(graph_json.as_bytes(), 3)
            .map_err(|e| StoreError::Io(format!("compressing the config: {e}")))?;
        let raw_len = graph_json.len() as i64;
        self.with(move |mut c| async move {
            masters::share_config(&mut c, &me, &hash, &packed, raw_len, now).await
        })
    }

    fn newest_config(&self) -> Result<Option<super::SharedConfig>> {
        self.with(move |c| async move { masters::newest_config(&c).await })
    }

    fn config_graph(&self, seq: u64) -> Result<Option<String>> {
        let packed = self.with(move |c| async move { masters::config_graph(&c, seq).await })?;
        let Some((data, raw_len)) = packed else {
            return Ok(None);
        };
        let raw = zstd::bulk::decompress(&data, raw_len)
            .map_err(|e| StoreError::Corrupt(format!("shared config {seq}: {e}")))?;
        String::from_utf8(raw)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("shared config {seq}: {e}")))
    }

    fn report_config(&self, running: &str, failed: Option<(&str, &str)>) -> Result<()> {
        let me = self.me_or_err()?;
        let running = running.to_string();
        let failed = failed.map(|(h, e)| (h.to_string(), e.to_string()));
        self.with(move |c| async move { masters::report_config(&c, &me, &running, failed).await })
    }

    fn health(&self) -> Result<()> {
        if !self.failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A durable write of nothing: the server answers and can commit.
        self.with(move |c| async move {
            exec(&c, "UPDATE schema_version SET version = version", &[])
                .await
                .map(|_| ())
        })
    }
}
