//! The redb backend: one `bbc.redb` file (schema in docs/store.md) plus one
//! append-only file per step log (see `logs.rs`).
//!
//! Every method that changes state runs in one redb write transaction, so
//! it is atomic, and is durable once it returns `Ok` — except the records
//! of a running build's progress (`put_step`, `set_build_state`), which
//! wait in memory (`pending.rs`, visible to every read) and are stored by
//! the next write transaction, durably. See docs/store.md, "Durability",
//! and [`RedbStore::write`] for the group commit. Quick repair is enabled
//! on every durable commit: it records the allocator state with the
//! commit, so that reopening after a crash takes milliseconds instead of a
//! walk over the whole file.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use bbc_graph::{BuildResult, Scalar};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    Build, BuildFilter, BuildRequest, BuildSet, Change, Millis, NewBuild, NewBuildSet, NewChange,
    Page, Properties, RequestFilter, RequestState, Result, StepRecord, Store, StoreError,
    WorkerRecord,
};

mod logs;
mod pending;
#[cfg(test)]
mod tests;

/// Version of the key layout below. Bump it (and write a migration in
/// `open`) whenever a table's key or value type or meaning changes.
pub const SCHEMA_VERSION: u64 = 1;

/// The database file inside the state directory.
pub const DB_FILE: &str = "bbc.redb";

// --- tables (schema version 1). Values of `&[u8]` are serde_json of the
// record type named; `()` marks a pure index.

/// "schema_version" → SCHEMA_VERSION.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// "change" | "buildset" | "request" | "build" → the last id issued.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// change id → Change.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// build set id → BuildSet.
const BUILDSETS: TableDefinition<u64, &[u8]> = TableDefinition::new("buildsets");
/// request id → BuildRequest.
const REQUESTS: TableDefinition<u64, &[u8]> = TableDefinition::new("requests");
/// (build set id, request id) → (): the requests of a set.
const REQUESTS_BY_BUILDSET: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("requests_by_buildset");
/// (builder, request id) → ().
const REQUESTS_BY_BUILDER: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("requests_by_builder");
/// request id → (): exactly the requests in state Pending.
const PENDING: TableDefinition<u64, ()> = TableDefinition::new("pending_requests");
/// build id → Build.
const BUILDS: TableDefinition<u64, &[u8]> = TableDefinition::new("builds");
/// (builder, build id) → build number.
const BUILDS_BY_BUILDER: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("builds_by_builder");
/// (builder, build number) → build id.
const BUILD_NUMBERS: TableDefinition<(&str, u64), u64> = TableDefinition::new("build_numbers");
/// build id → (): exactly the builds with `finished_at` None.
const RUNNING: TableDefinition<u64, ()> = TableDefinition::new("running_builds");
/// (build id, step index) → StepRecord.
const STEPS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("steps");
/// worker name → WorkerRecord.
const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// scheduler state key → opaque bytes.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("scheduler_state");

pub struct RedbStore {
    db: Database,
    logs: logs::LogFiles,
    dir: PathBuf,
    group: Mutex<Group>,
    /// Signalled when `Group::durable` grows, a flush ends, or the last
    /// queued durable writer is done.
    group_changed: Condvar,
    /// Step records and build states waiting for the next write
    /// transaction (see `pending.rs`).
    pending: Mutex<pending::Pending>,
}

/// When this many step records and build states wait, the write that adds
/// one stores them all (durably).
const PENDING_LIMIT: usize = 256;

/// Group commit state (see [`RedbStore::write`]).
#[derive(Default)]
struct Group {
    /// Durable writers that have entered `write` and not yet decided how
    /// to commit (most wait for redb's write lock).
    writers: usize,
    /// Sequence number of the last non-durable commit whose writer waits
    /// for it to become durable.
    assigned: u64,
    /// Every such commit up to this sequence number is durable.
    durable: u64,
    /// Durable commits under way.
    flushing: u32,
}

/// A poisoned lock only means another thread panicked while holding it;
/// the state behind these (counters, maps of whole records) is consistent
/// at every unlock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_group(m: &Mutex<Group>) -> MutexGuard<'_, Group> {
    lock(m)
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// redb's errors, sorted into "the data is bad" and "the disk or database
/// failed".
fn db_err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_) => StoreError::Corrupt(format!("database: {e}")),
        redb::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("database: {e}"))
        }
        _ => StoreError::Io(format!("database: {e}")),
    }
}

/// Records stored under their own id: the id in the value must match the
/// key, which catches values written under the wrong key.
trait Record: Serialize + DeserializeOwned {
    const TABLE: &'static str;
    fn id(&self) -> u64;
}

macro_rules! record {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl Record for $ty {
            const TABLE: &'static str = $what;
            fn id(&self) -> u64 {
                self.id
            }
        }
    )*};
}

record! {
    Change => "change",
    BuildSet => "build set",
    BuildRequest => "build request",
    Build => "build",
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what} does not decode: {e}")))
}

fn decode_record<T: Record>(id: u64, bytes: &[u8]) -> Result<T> {
    let rec: T = decode(&format!("{} {id}", T::TABLE), bytes)?;
    if rec.id() != id {
        return Err(StoreError::Corrupt(format!(
            "{} {id} is stored with id {}",
            T::TABLE,
            rec.id()
        )));
    }
    Ok(rec)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    // Serialising these types cannot fail (string map keys only), but the
    // error is still reported rather than unwrapped.
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("encoding {what}: {e}")))
}

fn get_record<T: Record>(
    table: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<Option<T>> {
    match table.get(id).map_err(db_err)? {
        None => Ok(None),
        Some(v) => decode_record(id, v.value()).map(Some),
    }
}

/// Loads a record that an index or another record refers to: its absence
/// means the database is inconsistent.
fn must_get<T: Record>(table: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<T> {
    get_record(table, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("{} {id} is referenced but missing", T::TABLE)))
}

fn put_record<T: Record>(table: &mut Table<'_, u64, &'static [u8]>, rec: &T) -> Result<()> {
    let bytes = encode(T::TABLE, rec)?;
    table.insert(rec.id(), bytes.as_slice()).map_err(db_err)?;
    Ok(())
}

/// JSON has no NaN or infinity: serde_json would write `null`, which does
/// not decode back into a `Scalar`, and the record would become unreadable.
/// Such values are stored as their text instead ("NaN", "inf", "-inf").
fn storable(props: &mut Properties) {
    for v in props.values_mut() {
        if let Scalar::Float(f) = v {
            if !f.is_finite() {
                *v = Scalar::String(f.to_string());
            }
        }
    }
}

/// Keys of an id-ordered index newest first, below `before` (exclusive).
/// Boxed so that the callers can pick an index at run time.
type Ids<'a> = Box<dyn Iterator<Item = Result<u64>> + 'a>;

fn ids_desc<'a, K, V, R, KR>(
    table: &'a impl ReadableTable<K, V>,
    range: R,
    id_of: fn(K::SelfType<'_>) -> u64,
) -> Result<Ids<'a>>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
    R: RangeBounds<KR> + 'a,
    KR: std::borrow::Borrow<K::SelfType<'a>> + 'a,
{
    let iter = table.range(range).map_err(db_err)?;
    Ok(Box::new(iter.rev().map(move |r| {
        r.map(|(k, _)| id_of(k.value())).map_err(db_err)
    })))
}

/// The exclusive upper id bound of a page. Ids never reach u64::MAX.
fn upper(page: &Page) -> u64 {
    page.before.unwrap_or(u64::MAX)
}

/// Loads `page.limit` records of `ids` that pass `keep`.
fn collect_page<T: Record>(
    ids: Ids<'_>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for id in ids {
        let rec: T = must_get(records, id?)?;
        if keep(&rec) {
            out.push(rec);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The tables of one write transaction, opened once (redb refuses to open
/// a table twice in a transaction).
struct W<'t> {
    counters: Table<'t, &'static str, u64>,
    changes: Table<'t, u64, &'static [u8]>,
    buildsets: Table<'t, u64, &'static [u8]>,
    requests: Table<'t, u64, &'static [u8]>,
    requests_by_buildset: Table<'t, (u64, u64), ()>,
    requests_by_builder: Table<'t, (&'static str, u64), ()>,
    pending: Table<'t, u64, ()>,
    builds: Table<'t, u64, &'static [u8]>,
    builds_by_builder: Table<'t, (&'static str, u64), u64>,
    build_numbers: Table<'t, (&'static str, u64), u64>,
    running: Table<'t, u64, ()>,
    steps: Table<'t, (u64, u32), &'static [u8]>,
    workers: Table<'t, &'static str, &'static [u8]>,
    state: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> W<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<W<'t>> {
        Ok(W {
            counters: txn.open_table(COUNTERS).map_err(db_err)?,
            changes: txn.open_table(CHANGES).map_err(db_err)?,
            buildsets: txn.open_table(BUILDSETS).map_err(db_err)?,
            requests: txn.open_table(REQUESTS).map_err(db_err)?,
            requests_by_buildset: txn.open_table(REQUESTS_BY_BUILDSET).map_err(db_err)?,
            requests_by_builder: txn.open_table(REQUESTS_BY_BUILDER).map_err(db_err)?,
            pending: txn.open_table(PENDING).map_err(db_err)?,
            builds: txn.open_table(BUILDS).map_err(db_err)?,
            builds_by_builder: txn.open_table(BUILDS_BY_BUILDER).map_err(db_err)?,
            build_numbers: txn.open_table(BUILD_NUMBERS).map_err(db_err)?,
            running: txn.open_table(RUNNING).map_err(db_err)?,
            steps: txn.open_table(STEPS).map_err(db_err)?,
            workers: txn.open_table(WORKERS).map_err(db_err)?,
            state: txn.open_table(STATE).map_err(db_err)?,
        })
    }

    fn next_id(&mut self, kind: &'static str) -> Result<u64> {
        let last = self
            .counters
            .get(kind)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
        let next = last
            .checked_add(1)
            .filter(|n| *n < u64::MAX)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("the {kind} id counter is exhausted ({last})"))
            })?;
        self.counters.insert(kind, next).map_err(db_err)?;
        Ok(next)
    }

    fn put_request(&mut self, req: &BuildRequest) -> Result<()> {
        // The pending index follows the request's state.
        if req.state == RequestState::Pending {
            self.pending.insert(req.id, ()).map_err(db_err)?;
        } else {
            self.pending.remove(req.id).map_err(db_err)?;
        }
        put_record(&mut self.requests, req)
    }

    /// Gives a build set its result when none of its requests can run any
    /// more: the worst of their results (a cancelled request counts as
    /// Cancelled).
    fn maybe_complete_buildset(&mut self, buildset: u64, now: Millis) -> Result<()> {
        let mut set: BuildSet = must_get(&self.buildsets, buildset)?;
        if set.result.is_some() {
            return Ok(());
        }
        let mut worst = BuildResult::Success;
        let ids: Vec<u64> = ids_desc(
            &self.requests_by_buildset,
            (buildset, 0)..=(buildset, u64::MAX),
            |k| k.1,
        )?
        .collect::<Result<_>>()?;
        for id in ids {
            let req: BuildRequest = must_get(&self.requests, id)?;
            let result = match req.state {
                RequestState::Pending | RequestState::Claimed => return Ok(()),
                RequestState::Cancelled => BuildResult::Cancelled,
                // A complete request always has a result; if one somehow has
                // none, the set must not look successful.
                RequestState::Complete => req.result.unwrap_or(BuildResult::Exception),
            };
            worst = worst.max(result);
        }
        set.result = Some(worst);
        set.completed_at = Some(now);
        put_record(&mut self.buildsets, &set)
    }

    /// Ends a running build: its requests complete with `result`, or are
    /// pending again when it is `Retry`.
    fn finish(
        &mut self,
        id: u64,
        result: BuildResult,
        state_string: Option<&str>,
        now: Millis,
    ) -> Result<()> {
        let Some(mut build) = get_record::<Build>(&self.builds, id)? else {
            return Err(StoreError::Conflict(format!("build {id} does not exist")));
        };
        if build.finished_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "build {id} has already finished"
            )));
        }
        build.finished_at = Some(now);
        build.result = Some(result);
        if let Some(s) = state_string {
            build.state_string = s.to_string();
        }
        put_record(&mut self.builds, &build)?;
        self.running.remove(id).map_err(db_err)?;
        let mut sets = Vec::new();
        for &rid in &build.build.requests {
            let mut req: BuildRequest = must_get(&self.requests, rid)?;
            // Only requests this build still holds: nothing else can have
            // taken a claimed request, but a stale build must not undo a
            // later one's work.
            if req.state != RequestState::Claimed || req.build != Some(id) {
                continue;
            }
            if result == BuildResult::Retry {
                // `build` keeps pointing at the build that ran it last.
                req.state = RequestState::Pending;
            } else {
                req.state = RequestState::Complete;
                req.result = Some(result);
                req.completed_at = Some(now);
                if !sets.contains(&req.buildset) {
                    sets.push(req.buildset);
                }
            }
            self.put_request(&req)?;
        }
        for set in sets {
            self.maybe_complete_buildset(set, now)?;
        }
        Ok(())
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in `state_dir`: the database
    /// `bbc.redb` and the log directory `logs/`.
    pub fn open(state_dir: &Path) -> Result<RedbStore> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Io(format!("{what} {}: {e}", state_dir.display()))
        };
        std::fs::create_dir_all(state_dir).map_err(|e| io("creating", e))?;
        let logs_dir = state_dir.join("logs");
        std::fs::create_dir_all(&logs_dir).map_err(|e| io("creating logs in", e))?;
        let path = state_dir.join(DB_FILE);
        // redb's debug builds assert on some damage it finds while opening,
        // where release builds return an error: either way the caller gets
        // an error, never a panic.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder().create(&path)
        }));
        let db = match opened {
            Ok(r) => r.map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io(format!(
                    "{} is already open (is another master running?)",
                    path.display()
                )),
                e => db_err(e),
            })?,
            Err(_) => {
                return Err(StoreError::Corrupt(format!(
                    "{} could not be opened",
                    path.display()
                )))
            }
        };
        let store = RedbStore {
            db,
            logs: logs::LogFiles::new(logs_dir),
            dir: state_dir.to_path_buf(),
            group: Mutex::new(Group::default()),
            group_changed: Condvar::new(),
            pending: Mutex::new(pending::Pending::default()),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// The state directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks the schema version and creates every table, so that read
    /// transactions find them all.
    fn init_schema(&self) -> Result<()> {
        self.write(|txn, _| {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let version = meta.get("schema_version").map_err(db_err)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(db_err)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Corrupt(format!(
                        "the store's schema version is {v}, written by a newer bbc; this bbc reads version {SCHEMA_VERSION} \
                         (upgrade bbc, or start from an empty state directory)"
                    )));
                }
                Some(v) if v < SCHEMA_VERSION => {
                    // No older version exists yet: a migration goes here.
                    return Err(StoreError::Corrupt(format!("unknown old schema version {v}")));
                }
                Some(_) => {}
            }
            Ok(())
        })
    }

    /// Runs `f` in a write transaction that is durable when this returns
    /// `Ok`; aborted (no effect) when `f` returns `Err`.
    ///
    /// Group commit: redb holds its write lock through a durable commit's
    /// `fsync`s, so writers queue up behind one. The last writer in the
    /// queue commits durably, which makes every earlier commit durable too;
    /// a writer with others queued behind it commits without `fsync` and
    /// waits until a later durable commit covers it (doing one itself, with
    /// no changes, if no one else is left to). Under load many writers
    /// share one durable commit; alone, a writer commits durably at once.
    fn write<T>(&self, f: impl FnOnce(&WriteTransaction, &mut W<'_>) -> Result<T>) -> Result<T> {
        lock_group(&self.group).writers += 1;
        let mut txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                self.leave_queue();
                return Err(db_err(e));
            }
        };
        // The waiting step records and build states go first, so that `f`
        // sees them (and, say, a build's end keeps its last state).
        let out = W::open(&txn).and_then(|mut w| {
            let applied = self.apply_pending(&mut w)?;
            f(&txn, &mut w).map(|v| (v, applied))
        });
        let (v, applied) = match out {
            Ok(v) => v,
            Err(e) => {
                // Nothing was committed (the waiting writes still wait); an
                // abort failure changes nothing for the caller, who gets
                // the original error.
                let _ = txn.abort();
                self.leave_queue();
                return Err(e);
            }
        };
        // Decided under the write lock: every sequence number assigned so
        // far belongs to a commit that has already happened, so a durable
        // commit now covers all of them.
        let lead = {
            let mut g = lock_group(&self.group);
            g.writers -= 1;
            if g.writers == 0 {
                g.flushing += 1;
                Ok(g.assigned)
            } else {
                g.assigned += 1;
                Err(g.assigned)
            }
        };
        match lead {
            Ok(covers) => {
                // Saves the allocator state with the commit: reopening
                // after a crash is then near instant (see the module docs).
                txn.set_quick_repair(true);
                let r = txn.commit().map_err(db_err);
                if r.is_ok() {
                    lock(&self.pending).forget(&applied);
                }
                self.flushed(covers, r.is_ok());
                r.map(|()| v)
            }
            Err(seq) => {
                set_durability(&mut txn, Durability::None)?;
                txn.commit().map_err(db_err)?;
                lock(&self.pending).forget(&applied);
                self.wait_durable(seq)?;
                Ok(v)
            }
        }
    }

    /// Stores the waiting step records and build states in `w`'s
    /// transaction; returns what to forget once it has committed.
    fn apply_pending(&self, w: &mut W<'_>) -> Result<pending::Applied> {
        let pending::Copy {
            steps,
            states,
            applied,
        } = {
            let p = lock(&self.pending);
            if p.is_empty() {
                return Ok(pending::Applied::default());
            }
            p.copy()
        };
        for (build, step) in steps {
            let bytes = encode("step", &step)?;
            w.steps
                .insert((build, step.index), bytes.as_slice())
                .map_err(db_err)?;
        }
        for (id, state) in states {
            // Checked when it was written; a record damaged since must not
            // stop every later write, so it is skipped (and reported).
            match get_record::<Build>(&w.builds, id) {
                Ok(Some(mut build)) => {
                    build.state_string = state.state_string;
                    build.build.properties = state.properties;
                    put_record(&mut w.builds, &build)?;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("dropping the state of build {id}: {e}"),
            }
        }
        Ok(applied)
    }

    /// Queues a step record or build state; stores everything waiting once
    /// there is much.
    fn add_pending(&self, add: impl FnOnce(&mut pending::Pending)) -> Result<()> {
        let full = {
            let mut p = lock(&self.pending);
            add(&mut p);
            p.len() >= PENDING_LIMIT
        };
        if full {
            self.write(|_, _| Ok(()))?;
        }
        Ok(())
    }

    /// A queued durable writer leaves without committing.
    fn leave_queue(&self) {
        let mut g = lock_group(&self.group);
        g.writers -= 1;
        if g.writers == 0 {
            // Waiters may now have to flush for themselves.
            self.group_changed.notify_all();
        }
    }

    /// A durable commit ended; on success everything up to `covers` is
    /// durable.
    fn flushed(&self, covers: u64, ok: bool) {
        let mut g = lock_group(&self.group);
        g.flushing -= 1;
        if ok {
            g.durable = g.durable.max(covers);
        }
        self.group_changed.notify_all();
    }

    /// Waits until the non-durable commit `seq` is durable, committing
    /// durably (with no changes) when nobody else will.
    fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut g = lock_group(&self.group);
        loop {
            if g.durable >= seq {
                return Ok(());
            }
            if g.writers == 0 && g.flushing == 0 {
                g.flushing += 1;
                drop(g);
                let r = self.flush();
                self.flushed(r.as_ref().copied().unwrap_or(0), r.is_ok());
                r?;
                g = lock_group(&self.group);
                continue;
            }
            g = self
                .group_changed
                .wait(g)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// A durable commit with no changes: makes every earlier commit
    /// durable. Returns the sequence number it covers.
    fn flush(&self) -> Result<u64> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        let covers = lock_group(&self.group).assigned;
        let applied = W::open(&txn).and_then(|mut w| self.apply_pending(&mut w))?;
        txn.set_quick_repair(true);
        txn.commit().map_err(db_err)?;
        lock(&self.pending).forget(&applied);
        Ok(covers)
    }

    /// A read snapshot and the build states not yet in it.
    fn read_with_states(&self) -> Result<(redb::ReadTransaction, HashMap<u64, pending::State>)> {
        let p = lock(&self.pending);
        Ok((self.read()?, p.states()))
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(db_err)
    }
}

/// A build with its waiting state, if any, instead of the stored one.
fn with_state(mut build: Build, state: Option<pending::State>) -> Build {
    if let Some(st) = state {
        build.state_string = st.state_string;
        build.build.properties = st.properties;
    }
    build
}

fn set_durability(txn: &mut WriteTransaction, d: Durability) -> Result<()> {
    txn.set_durability(d)
        .map_err(|e| StoreError::Io(format!("database: {e}")))
}

impl Drop for RedbStore {
    /// Stores what still waits, durably, at a clean close.
    fn drop(&mut self) {
        let pending = {
            let g = lock_group(&self.group);
            g.assigned > g.durable || !lock(&self.pending).is_empty()
        };
        if pending {
            if let Err(e) = self.flush() {
                tracing::error!("closing the store: {e}");
            }
        }
    }
}

fn open_ro<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<redb::ReadOnlyTable<K, V>> {
    txn.open_table(def).map_err(db_err)
}

impl Store for RedbStore {
    fn add_change(&self, change: NewChange, now: Millis) -> Result<Change> {
        let mut change = Change {
            id: 0,
            received_at: now,
            change,
        };
        storable(&mut change.change.properties);
        self.write(|_, w| {
            change.id = w.next_id("change")?;
            put_record(&mut w.changes, &change)?;
            Ok(change)
        })
    }

    fn change(&self, id: u64) -> Result<Option<Change>> {
        get_record(&open_ro(&self.read()?, CHANGES)?, id)
    }

    fn changes(&self, page: Page) -> Result<Vec<Change>> {
        let t = open_ro(&self.read()?, CHANGES)?;
        let ids = ids_desc(&t, ..upper(&page), |k| k)?;
        collect_page(ids, &t, page.limit, |_| true)
    }

    fn add_buildset(
        &self,
        set: NewBuildSet,
        builders: &[(String, i64)],
    ) -> Result<(BuildSet, Vec<BuildRequest>)> {
        let mut set = BuildSet {
            id: 0,
            set,
            result: None,
            completed_at: None,
        };
        storable(&mut set.set.properties);
        self.write(|_, w| {
            set.id = w.next_id("buildset")?;
            if builders.is_empty() {
                // Nothing to run: the worst result of no requests is the
                // best one, and nobody must wait for the set.
                set.result = Some(BuildResult::Success);
                set.completed_at = Some(set.set.submitted_at);
            }
            put_record(&mut w.buildsets, &set)?;
            let mut requests = Vec::with_capacity(builders.len());
            for (builder, priority) in builders {
                let req = BuildRequest {
                    id: w.next_id("request")?,
                    buildset: set.id,
                    builder: builder.clone(),
                    priority: *priority,
                    submitted_at: set.set.submitted_at,
                    state: RequestState::Pending,
                    build: None,
                    result: None,
                    completed_at: None,
                };
                w.requests_by_buildset
                    .insert((set.id, req.id), ())
                    .map_err(db_err)?;
                w.requests_by_builder
                    .insert((builder.as_str(), req.id), ())
                    .map_err(db_err)?;
                w.put_request(&req)?;
                requests.push(req);
            }
            Ok((set, requests))
        })
    }

    fn buildset(&self, id: u64) -> Result<Option<BuildSet>> {
        get_record(&open_ro(&self.read()?, BUILDSETS)?, id)
    }

    fn request(&self, id: u64) -> Result<Option<BuildRequest>> {
        get_record(&open_ro(&self.read()?, REQUESTS)?, id)
    }

    fn requests(&self, filter: &RequestFilter, page: Page) -> Result<Vec<BuildRequest>> {
        let txn = self.read()?;
        let requests = open_ro(&txn, REQUESTS)?;
        let hi = upper(&page);
        let by_set;
        let pending;
        let by_builder;
        // The most selective index the filter allows; the other conditions
        // are checked on the records.
        let ids = if let Some(set) = filter.buildset {
            by_set = open_ro(&txn, REQUESTS_BY_BUILDSET)?;
            ids_desc(&by_set, (set, 0)..(set, hi), |k| k.1)?
        } else if filter.state == Some(RequestState::Pending) {
            pending = open_ro(&txn, PENDING)?;
            ids_desc(&pending, ..hi, |k| k)?
        } else if let Some(builder) = &filter.builder {
            by_builder = open_ro(&txn, REQUESTS_BY_BUILDER)?;
            ids_desc(
                &by_builder,
                (builder.as_str(), 0)..(builder.as_str(), hi),
                |k| k.1,
            )?
        } else {
            ids_desc(&requests, ..hi, |k| k)?
        };
        collect_page(ids, &requests, page.limit, |r: &BuildRequest| {
            filter.builder.as_ref().is_none_or(|b| *b == r.builder)
                && filter.buildset.is_none_or(|s| s == r.buildset)
                && filter.state.is_none_or(|s| s == r.state)
        })
    }

    fn pending_requests(&self) -> Result<Vec<BuildRequest>> {
        let txn = self.read()?;
        let requests = open_ro(&txn, REQUESTS)?;
        let pending = open_ro(&txn, PENDING)?;
        let mut out = Vec::new();
        for entry in pending.iter().map_err(db_err)? {
            let id = entry.map_err(db_err)?.0.value();
            let req: BuildRequest = must_get(&requests, id)?;
            if req.state != RequestState::Pending {
                return Err(StoreError::Corrupt(format!(
                    "request {id} is indexed as pending but is {:?}",
                    req.state
                )));
            }
            out.push(req);
        }
        Ok(out)
    }

    fn cancel_request(&self, id: u64, now: Millis) -> Result<bool> {
        self.write(|_, w| {
            let Some(mut req) = get_record::<BuildRequest>(&w.requests, id)? else {
                return Ok(false);
            };
            if req.state != RequestState::Pending {
                return Ok(false);
            }
            req.state = RequestState::Cancelled;
            req.result = Some(BuildResult::Cancelled);
            req.completed_at = Some(now);
            w.put_request(&req)?;
            w.maybe_complete_buildset(req.buildset, now)?;
            Ok(true)
        })
    }

    fn start_build(&self, build: NewBuild) -> Result<Build> {
        let mut build = Build {
            id: 0,
            number: 0,
            build,
            finished_at: None,
            result: None,
            state_string: "starting".to_string(),
        };
        storable(&mut build.build.properties);
        // Any error below aborts the transaction: either every request is
        // claimed and the build exists, or nothing changed.
        self.write(|_, w| {
            build.id = w.next_id("build")?;
            let builder = build.build.builder.as_str();
            let last_number = match w
                .build_numbers
                .range((builder, 0)..=(builder, u64::MAX))
                .map_err(db_err)?
                .next_back()
            {
                Some(entry) => entry.map_err(db_err)?.0.value().1,
                None => 0,
            };
            build.number = last_number + 1;
            for &rid in &build.build.requests {
                let Some(mut req) = get_record::<BuildRequest>(&w.requests, rid)? else {
                    return Err(StoreError::Conflict(format!(
                        "request {rid} does not exist"
                    )));
                };
                if req.state != RequestState::Pending {
                    return Err(StoreError::Conflict(format!(
                        "request {rid} is {:?}, not pending",
                        req.state
                    )));
                }
                req.state = RequestState::Claimed;
                req.build = Some(build.id);
                w.put_request(&req)?;
            }
            put_record(&mut w.builds, &build)?;
            w.builds_by_builder
                .insert((builder, build.id), build.number)
                .map_err(db_err)?;
            w.build_numbers
                .insert((builder, build.number), build.id)
                .map_err(db_err)?;
            w.running.insert(build.id, ()).map_err(db_err)?;
            Ok(build)
        })
    }

    fn set_build_state(&self, id: u64, state_string: &str, properties: &Properties) -> Result<()> {
        let mut properties = properties.clone();
        storable(&mut properties);
        // Checked now (decoding it, as a write would); stored with the next
        // write transaction.
        if get_record::<Build>(&open_ro(&self.read()?, BUILDS)?, id)?.is_none() {
            return Err(StoreError::Conflict(format!("build {id} does not exist")));
        }
        let state = pending::State {
            state_string: state_string.to_string(),
            properties,
        };
        self.add_pending(|p| p.put_state(id, state))
    }

    fn finish_build(&self, id: u64, result: BuildResult, now: Millis) -> Result<()> {
        self.write(|_, w| w.finish(id, result, None, now))
    }

    fn build(&self, id: u64) -> Result<Option<Build>> {
        let (txn, state) = {
            let p = lock(&self.pending);
            (self.read()?, p.state(id))
        };
        let build = get_record::<Build>(&open_ro(&txn, BUILDS)?, id)?;
        Ok(build.map(|b| with_state(b, state)))
    }

    fn build_by_number(&self, builder: &str, number: u64) -> Result<Option<Build>> {
        let (txn, mut states) = self.read_with_states()?;
        let Some(id) = open_ro(&txn, BUILD_NUMBERS)?
            .get((builder, number))
            .map_err(db_err)?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let build: Build = must_get(&open_ro(&txn, BUILDS)?, id)?;
        if build.build.builder != builder || build.number != number {
            return Err(StoreError::Corrupt(format!(
                "build {builder} #{number} is indexed as build {id}, which is {} #{}",
                build.build.builder, build.number
            )));
        }
        Ok(Some(with_state(build, states.remove(&id))))
    }

    fn builds(&self, filter: &BuildFilter, page: Page) -> Result<Vec<Build>> {
        let (txn, mut states) = self.read_with_states()?;
        let builds = open_ro(&txn, BUILDS)?;
        let hi = upper(&page);
        let running;
        let by_builder;
        // Running builds are few; a builder's builds have their own index;
        // a result filter alone walks the builds newest first.
        let ids = if filter.running {
            running = open_ro(&txn, RUNNING)?;
            ids_desc(&running, ..hi, |k| k)?
        } else if let Some(builder) = &filter.builder {
            by_builder = open_ro(&txn, BUILDS_BY_BUILDER)?;
            ids_desc(
                &by_builder,
                (builder.as_str(), 0)..(builder.as_str(), hi),
                |k| k.1,
            )?
        } else {
            ids_desc(&builds, ..hi, |k| k)?
        };
        let page = collect_page(ids, &builds, page.limit, |b: &Build| {
            filter
                .builder
                .as_ref()
                .is_none_or(|x| *x == b.build.builder)
                && filter.result.is_none_or(|r| Some(r) == b.result)
                && (!filter.running || b.finished_at.is_none())
        })?;
        Ok(page
            .into_iter()
            .map(|b| {
                let state = states.remove(&b.id);
                with_state(b, state)
            })
            .collect())
    }

    fn interrupt_running(&self, now: Millis) -> Result<Vec<u64>> {
        self.write(|_, w| {
            let ids: Vec<u64> = w
                .running
                .iter()
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                .collect::<Result<_>>()?;
            for &id in &ids {
                w.finish(id, BuildResult::Retry, Some("interrupted"), now)?;
            }
            Ok(ids)
        })
    }

    fn put_step(&self, build: u64, step: &StepRecord) -> Result<()> {
        // Checked now; stored with the next write transaction.
        if open_ro(&self.read()?, BUILDS)?
            .get(build)
            .map_err(db_err)?
            .is_none()
        {
            return Err(StoreError::Conflict(format!(
                "build {build} does not exist"
            )));
        }
        let step = step.clone();
        self.add_pending(|p| p.put_step(build, step))
    }

    fn steps(&self, build: u64) -> Result<Vec<StepRecord>> {
        let (txn, waiting) = {
            let p = lock(&self.pending);
            (self.read()?, p.steps_of(build))
        };
        let steps = open_ro(&txn, STEPS)?;
        let mut out: Vec<StepRecord> = Vec::new();
        for entry in steps
            .range((build, 0)..=(build, u32::MAX))
            .map_err(db_err)?
        {
            let (k, v) = entry.map_err(db_err)?;
            let index = k.value().1;
            let mut step: StepRecord = decode(&format!("step {build}/{index}"), v.value())?;
            if step.index != index {
                return Err(StoreError::Corrupt(format!(
                    "step {build}/{index} is stored with index {}",
                    step.index
                )));
            }
            // The log file is the truth about how much log there is (it may
            // have grown since the record was written, or been cut by a
            // crash before a sync).
            step.log_len = self.logs.len(build, index)?;
            out.push(step);
        }
        if !waiting.is_empty() {
            // Newer than what is stored for the same index.
            for mut step in waiting {
                step.log_len = self.logs.len(build, step.index)?;
                match out.binary_search_by_key(&step.index, |s| s.index) {
                    Ok(i) => out[i] = step,
                    Err(i) => out.insert(i, step),
                }
            }
        }
        Ok(out)
    }

    fn append_log(&self, build: u64, step: u32, data: &[u8]) -> Result<u64> {
        self.logs.append(build, step, data)
    }

    fn sync_log(&self, build: u64, step: u32) -> Result<()> {
        self.logs.sync(build, step)
    }

    fn read_log(&self, build: u64, step: u32, offset: u64, max: usize) -> Result<Vec<u8>> {
        self.logs.read(build, step, offset, max)
    }

    fn log_len(&self, build: u64, step: u32) -> Result<u64> {
        self.logs.len(build, step)
    }

    fn worker_connected(
        &self,
        name: &str,
        info: &BTreeMap<String, String>,
        now: Millis,
    ) -> Result<()> {
        self.write(|_, w| {
            let existing = w
                .workers
                .get(name)
                .map_err(db_err)?
                .map(|v| decode::<WorkerRecord>(&format!("worker {name}"), v.value()));
            let mut rec = match existing {
                Some(rec) => rec?,
                None => WorkerRecord {
                    name: name.to_string(),
                    first_seen: now,
                    ..WorkerRecord::default()
                },
            };
            rec.last_connected = now;
            rec.info = info.clone();
            let bytes = encode("worker", &rec)?;
            w.workers.insert(name, bytes.as_slice()).map_err(db_err)?;
            Ok(())
        })
    }

    fn worker_disconnected(&self, name: &str, now: Millis) -> Result<()> {
        self.write(|_, w| {
            let existing = w
                .workers
                .get(name)
                .map_err(db_err)?
                .map(|v| decode::<WorkerRecord>(&format!("worker {name}"), v.value()));
            // A worker never recorded as connected has nothing to update.
            let Some(rec) = existing else { return Ok(()) };
            let mut rec = rec?;
            rec.last_disconnected = Some(now);
            let bytes = encode("worker", &rec)?;
            w.workers.insert(name, bytes.as_slice()).map_err(db_err)?;
            Ok(())
        })
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let t = open_ro(&self.read()?, WORKERS)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let name = k.value();
            let rec: WorkerRecord = decode(&format!("worker {name}"), v.value())?;
            if rec.name != name {
                return Err(StoreError::Corrupt(format!(
                    "worker {name} is stored as {}",
                    rec.name
                )));
            }
            out.push(rec);
        }
        Ok(out)
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let t = open_ro(&self.read()?, STATE)?;
        let v = t.get(key).map_err(db_err)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn put_state(&self, key: &str, value: &[u8]) -> Result<()> {
        self.write(|_, w| {
            w.state.insert(key, value).map_err(db_err)?;
            Ok(())
        })
    }

    fn put_states(&self, entries: &[(String, Vec<u8>)]) -> Result<()> {
        self.write(|_, w| {
            for (k, v) in entries {
                w.state.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
            }
            Ok(())
        })
    }
}
