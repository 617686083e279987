//! The redb backend: one `bbc.redb` file (schema in docs/store.md) plus one
//! append-only file per step log (see `logs.rs`).
//!
//! Every method that changes state runs in one redb write transaction, so
//! it is atomic, and is durable once it returns `Ok` — except the records
//! of a running build's progress (`put_step`, `set_build_state`), which
//! wait in memory (`pending.rs`, visible to every read) and are stored by
//! the next write transaction, durably. See docs/store.md, "Durability",
//! and [`RedbStore::write`] (`commit.rs`) for the group commit. Quick
//! repair is enabled on every durable commit: it records the allocator
//! state with the commit, so that reopening after a crash takes
//! milliseconds instead of a walk over the whole file.
//!
//! A failed write does not leave the store broken. After an I/O error
//! (typically a full disk) redb refuses every later call ("previous I/O
//! error") until the database is closed and opened again; the store does
//! that itself on its next call, once no write is under way (see
//! [`RedbStore::db`]), and calls succeed again as soon as the disk lets
//! them. Opening again recovers the last durable commit, so nothing that
//! returned `Ok` is lost; what a failed write did is gone, as its `Err`
//! said.
//!
//! This file opens the store and implements [`Store`] on it; the tables
//! and the multi-table updates are in `tables.rs`, how records are encoded
//! and paged in `records.rs`, the group commit in `commit.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use bbc_graph::BuildResult;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::BackupReport;
use super::{
    AuditEntry, Build, BuildFilter, BuildRequest, BuildSet, Change, CommitTimes, Millis,
    NewAuditEntry, NewBuild, NewBuildSet, NewChange, Page, Properties, RequestFilter, RequestState,
    Result, StepRecord, Store, StoreError, WorkerRecord,
};
use commit::Group;
use records::{
    builder_ids_desc, collect_page, db_err, decode, encode, get_record, ids_desc, must_get,
    put_record, storable, upper,
};
use tables::{
    open_ro, AUDIT, BUILDS, BUILDSETS, BUILDS_BY_BUILDER, BUILD_NUMBERS, CHANGES, META, PENDING,
    REQUESTS, REQUESTS_BY_BUILDER, REQUESTS_BY_BUILDSET, RUNNING, STATE, STEPS, WORKERS,
};

mod backup;
mod commit;
#[cfg(test)]
mod full_disk_tests;
mod incident;
mod logs;
mod pending;
pub(super) mod records;
mod retention;
mod sealed;
mod tables;
#[cfg(test)]
mod tests;

pub use tables::SCHEMA_VERSION;

/// The database file inside the state directory.
pub const DB_FILE: &str = "bbc.redb";

/// The file [`Store::health`] reserves space in, briefly, after a failed
/// write, and how much: room for a few large records.
const PROBE_FILE: &str = "health-probe";
const PROBE_BYTES: libc::off_t = 1 << 20;

pub struct RedbStore {
    /// The open database. Read-locked by every call while it uses the
    /// `Database` (a write for its whole transaction, up to its
    /// durability), write-locked only to reopen it; `None` while reopening
    /// fails.
    db: RwLock<Option<Database>>,
    /// The database file.
    path: PathBuf,
    /// Set when a call met an I/O error: redb then fails every later call
    /// until the database is reopened, which the next call does.
    reopen: AtomicBool,
    /// Why the last write failed, while no write has succeeded since: what
    /// [`Store::health`] reports.
    failure: Mutex<Option<String>>,
    /// What the log has said of the failures (see `incident.rs`).
    incident: Mutex<incident::Incident>,
    logs: logs::LogFiles,
    dir: PathBuf,
    group: Mutex<Group>,
    /// Signalled when `Group::durable` grows, a flush ends, or the last
    /// queued durable writer is done.
    group_changed: Condvar,
    /// Step records and build states waiting for the next write
    /// transaction (see `pending.rs`).
    pending: Mutex<pending::Pending>,
    /// How long successful writes took (`bbc_store_commit_seconds`).
    commit_times: CommitTimes,
}

/// A poisoned lock only means another thread panicked while holding it;
/// the state behind these (counters, maps of whole records) is consistent
/// at every unlock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
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
        let db = open_db(&path)?;
        let store = RedbStore {
            db: RwLock::new(Some(db)),
            path,
            reopen: AtomicBool::new(false),
            failure: Mutex::new(None),
            incident: Mutex::new(incident::Incident::default()),
            logs: logs::LogFiles::new(logs_dir),
            dir: state_dir.to_path_buf(),
            group: Mutex::new(Group::default()),
            group_changed: Condvar::new(),
            pending: Mutex::new(pending::Pending::default()),
            commit_times: CommitTimes::default(),
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

    /// A read snapshot and the build states not yet in it.
    fn read_with_states(&self) -> Result<(redb::ReadTransaction, HashMap<u64, pending::State>)> {
        // The database before the waiting writes, as in every path: a
        // writer holds it while it takes them (see `RedbStore::db`).
        let db = self.db()?;
        let p = lock(&self.pending);
        Ok((begin_read(&db)?, p.states()))
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        begin_read(&*self.db()?)
    }

    /// The open database, reopened first if an I/O error left it unusable.
    ///
    /// Held for as long as a call uses the `Database` — a write from
    /// `begin_write` to knowing its commit durable — so a reopen (which
    /// must drop the old `Database`) waits for every write under way, and
    /// none of them straddles two databases: a commit that returned `Ok`
    /// was durable in the one that is closed, and so is in the new one.
    /// Lock order: this before `pending` and `group`; a holder never
    /// takes it again (a reopen waiting for it would block that).
    pub(super) fn db(&self) -> Result<Db<'_>> {
        if self.reopen.load(Ordering::Acquire) {
            self.reopen_db()?;
        }
        let g = self.db.read().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            // Another call's reopen failed after this one's check.
            return Err(self.unusable());
        }
        Ok(Db(g))
    }

    /// Closes the database and opens it again; `Err` (and tried again by
    /// the next call) while it cannot be opened.
    fn reopen_db(&self) -> Result<()> {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.reopen.load(Ordering::Acquire) {
            // Another call reopened it while this one waited.
            return Ok(());
        }
        // Non-durable commits of the failed database are lost with it:
        // what they stored waits again for the next write.
        lock(&self.pending).restore();
        if let Some(old) = g.take() {
            // Closing a database that failed reports that failure again;
            // its file is left for the open below to recover.
            if let Err(e) = old.close() {
                tracing::debug!("closing the failed database: {e}");
            }
        }
        match open_db(&self.path) {
            Ok(db) => {
                *g = Some(db);
                self.reopen.store(false, Ordering::Release);
                // While the disk stays full each probe reopens it again.
                if lock(&self.incident).reopened() {
                    tracing::warn!(
                        "reopened the database {} after an I/O error",
                        self.path.display()
                    );
                } else {
                    tracing::debug!("reopened the database {} again", self.path.display());
                }
                Ok(())
            }
            Err(e) => {
                let e = StoreError::Io(format!(
                    "the database could not be reopened after an I/O error: {e}"
                ));
                self.write_failed(&e);
                Err(e)
            }
        }
    }

    /// Whether the state directory's file system has room for
    /// [`PROBE_BYTES`]: reserves them in a file (`posix_fallocate`, which
    /// fails with ENOSPC where a write would) and removes it.
    fn probe_room(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let path = self.dir.join(PROBE_FILE);
        let what = format!("probing for free space with {}", path.display());
        let file = std::fs::File::create(&path)
            .map_err(|e| StoreError::Io(records::io_message(&what, &e)))?;
        // SAFETY: posix_fallocate on a file descriptor this function owns
        // (kept open by `file` for the call).
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, PROBE_BYTES) };
        drop(file);
        let _ = std::fs::remove_file(&path);
        if rc != 0 {
            let e = std::io::Error::from_raw_os_error(rc);
            return Err(StoreError::Io(records::io_message(&what, &e)));
        }
        Ok(())
    }

    /// The error of a call that finds no open database.
    fn unusable(&self) -> StoreError {
        let why = lock(&self.failure)
            .clone()
            .unwrap_or_else(|| "an I/O error".to_string());
        StoreError::Io(format!(
            "the database is not open after an I/O error ({why}); the next call tries to reopen it"
        ))
    }

    /// Notes a failed write (for `health`, and to reopen the database if
    /// redb failed) and logs it: the first failure after a success as an
    /// error, another reason as a warning, the same one at most once a
    /// minute with how many were not logged (`incident.rs`).
    pub(super) fn write_failed(&self, e: &StoreError) {
        let (Some(_), StoreError::Io(msg)) = (self.note_failure(e), e) else {
            return;
        };
        let say = lock(&self.incident).failed(msg, std::time::Instant::now());
        match say {
            incident::Say::First => tracing::error!(
                "the store cannot write: {msg} (that write did not happen; the database is \
                 reopened on the next call, and each later write tries again)"
            ),
            incident::Say::Changed => tracing::warn!("a store write failed again: {msg}"),
            incident::Say::Again { unlogged } => tracing::warn!(
                "a store write failed again: {msg} ({unlogged} more such failures in the last \
                 {} s were not logged)",
                incident::REPEAT_EVERY.as_secs()
            ),
            incident::Say::Nothing => {}
        }
    }

    /// Notes a failed write without logging it; `Some(first)` for an I/O
    /// failure (whether it is the first since a success), `None` for a
    /// conflict or bad data, which say nothing about the disk.
    fn note_failure(&self, e: &StoreError) -> Option<bool> {
        let StoreError::Io(msg) = e else {
            return None;
        };
        // A spurious reopen is harmless; a missed one leaves every later
        // call failing.
        self.reopen.store(true, Ordering::Release);
        Some(lock(&self.failure).replace(msg.clone()).is_none())
    }

    /// Notes a write that succeeded.
    pub(super) fn write_succeeded(&self) {
        if lock(&self.failure).take().is_some() {
            match lock(&self.incident).ended() {
                Some(n) => tracing::warn!("the store writes again, after {n} failed writes"),
                None => tracing::warn!("the store writes again"),
            }
        }
    }
}

/// The open database, read-locked (see [`RedbStore::db`]).
pub(super) struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Db<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        match self.0.as_ref() {
            Some(db) => db,
            // `RedbStore::db` never hands out an empty one.
            None => unreachable!("an empty database guard"),
        }
    }
}

fn begin_read(db: &Database) -> Result<redb::ReadTransaction> {
    db.begin_read().map_err(db_err)
}

/// Opens (creating if needed) the database file. Opening a file that a
/// failed process or a failed `Database` left behind recovers its last
/// durable commit.
fn open_db(path: &Path) -> Result<Database> {
    // redb's debug builds assert on some damage it finds while opening,
    // where release builds return an error: either way the caller gets
    // an error, never a panic.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Database::builder().create(path)
    }));
    match opened {
        Ok(r) => r.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io(format!(
                "{} is already open (is another master running?)",
                path.display()
            )),
            e => db_err(e),
        }),
        Err(_) => Err(StoreError::Corrupt(format!(
            "{} could not be opened",
            path.display()
        ))),
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
                    request_priority: set.set.priority,
                    submitted_at: set.set.submitted_at,
                    state: RequestState::Pending,
                    build: None,
                    result: None,
                    completed_at: None,
                    collapsed_into: None,
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

    fn buildsets_after(&self, after: u64, limit: usize) -> Result<Vec<BuildSet>> {
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let t = open_ro(&self.read()?, BUILDSETS)?;
        let mut out = Vec::new();
        for kv in t.range(from..).map_err(db_err)?.take(limit) {
            let (k, v) = kv.map_err(db_err)?;
            out.push(records::decode_record(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn newest_buildset(&self) -> Result<u64> {
        let t = open_ro(&self.read()?, BUILDSETS)?;
        let last = t.last().map_err(db_err)?;
        Ok(last.map_or(0, |(k, _)| k.value()))
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
            builder_ids_desc(&by_builder, builder, hi)?
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
            logs_deleted_at: None,
            master: None,
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
            // Retention may have deleted the builder's newest builds: their
            // numbers are never given again.
            let deleted = w
                .counters
                .get(tables::number_key(builder).as_str())
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            build.number = last_number.max(deleted) + 1;
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
                crate::store::claim_request(&mut req, &build);
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
            let db = self.db()?;
            let p = lock(&self.pending);
            (begin_read(&db)?, p.state(id))
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
            builder_ids_desc(&by_builder, builder, hi)?
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
            let db = self.db()?;
            let p = lock(&self.pending);
            (begin_read(&db)?, p.steps_of(build))
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

    fn seal_logs(&self, build: u64) -> Result<super::Sealed> {
        retention::seal_logs(self, build)
    }

    fn prune(
        &self,
        policy: &super::Retention,
        now: Millis,
        after: u64,
        scan: usize,
        limit: usize,
    ) -> Result<super::Pruned> {
        retention::prune(self, policy, now, after, scan, limit)
    }

    fn builder_usage(&self, builder: &str) -> Result<super::BuilderUsage> {
        retention::builder_usage(self, builder)
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

    fn add_audit(&self, entry: NewAuditEntry, now: Millis) -> Result<AuditEntry> {
        let mut rec = AuditEntry {
            id: 0,
            at: now,
            entry,
        };
        self.write(|_, w| {
            rec.id = w.next_id("audit")?;
            put_record(&mut w.audit, &rec)?;
            Ok(rec)
        })
    }

    fn audit(&self, page: Page) -> Result<Vec<AuditEntry>> {
        let t = open_ro(&self.read()?, AUDIT)?;
        let ids = ids_desc(&t, ..upper(&page), |k| k)?;
        collect_page(ids, &t, page.limit, |_| true)
    }

    fn prune_audit(&self, before: Millis, limit: usize) -> Result<u64> {
        retention::prune_audit(self, before, limit)
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

    fn backup(&self, out: &Path) -> Result<BackupReport> {
        backup::backup(self, out)
    }

    fn health(&self) -> Result<()> {
        if lock(&self.failure).is_none() {
            return Ok(());
        }
        // The probe: room for a sizeable write on the disk, then a durable
        // commit of no changes (but what waits), which reopens the
        // database first if needed. The room is checked apart because a
        // commit of nothing fits in pages the database file already holds
        // while every real write fails. Not logged when it fails: the
        // failure it repeats was, and a monitor may ask every few seconds.
        let r = self.probe_room().and_then(|()| {
            let db = self.db()?;
            self.write_in(&db, |_, _| Ok(()))
        });
        match &r {
            Ok(()) => self.write_succeeded(),
            Err(e) => {
                self.note_failure(e);
            }
        }
        r
    }

    fn commit_times(&self) -> Option<&CommitTimes> {
        Some(&self.commit_times)
    }
}
