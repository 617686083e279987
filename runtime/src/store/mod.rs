//! The master's durable state: changes, build sets and requests, builds,
//! steps, logs, worker records and scheduler state.
//!
//! Everything goes through the [`Store`] trait, with two backends: redb
//! (embedded, the default) and PostgreSQL (`pg_store`, so that several
//! masters can come to share state); the conformance suite in
//! `conformance.rs` runs against both.
//! The trait is synchronous: async callers use `spawn_blocking`, so disk
//! work never blocks the async runtime.
//!
//! Architecture invariant: a call that returns `Ok` has made its effect
//! durable (it survives `kill -9` of the master), except `put_step` and
//! `set_build_state`, which are visible at once and become durable with the
//! next durable write (docs/store.md has the table). A build request is
//! acknowledged only after `add_buildset` returned.

use std::collections::BTreeMap;

use bbc_graph::{BuildResult, Scalar};
use serde::{Deserialize, Serialize};

// Test code: built for this crate's tests, and for another crate's (a future
// backend's) when it enables the `conformance` feature; never shipped in a
// release build.
pub mod commit_times;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod lease;
pub mod pg_store;
pub mod redb_store;

pub use commit_times::{CommitTimes, CommitTimesSnapshot};
pub use lease::{ConfigAck, LeaseTimes, MasterIdentity, MasterRecord, Renewal};
pub use pg_store::{PgConfig, PgStore};
pub use redb_store::RedbStore;

/// Opens the store of a state directory (the redb backend).
pub fn open(state_dir: &std::path::Path) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(RedbStore::open(state_dir)?))
}

/// Opens the configured store: PostgreSQL when `master { store … }` names
/// a database, else redb in the state directory.
pub fn open_configured(
    state_dir: &std::path::Path,
    postgres: Option<&PgConfig>,
) -> Result<std::sync::Arc<dyn Store>> {
    match postgres {
        Some(cfg) => Ok(std::sync::Arc::new(PgStore::open(cfg)?)),
        None => open(state_dir),
    }
}

pub type Properties = BTreeMap<String, Scalar>;

/// The answer of an async store call ([`Store::renew`], [`Store::take_over`]):
/// it owns what it needs, so it can be awaited on any runtime.
pub type StoreFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'static>>;

/// The state key ([`Store::get_state`]) under which a build's upload steps
/// list the files they wrote (a JSON array of paths under `STATE/files`);
/// `GET /api/v1/builds/{id}` links them.
pub fn uploads_key(build: u64) -> String {
    format!("uploads:{build}")
}

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Debug)]
pub enum StoreError {
    /// The disk or the database failed; the operation had no effect.
    Io(String),
    /// Stored data could not be decoded (written by a newer version?).
    Corrupt(String),
    /// The operation conflicts with the current state (e.g. claiming a
    /// request that is no longer pending).
    Conflict(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store I/O error: {e}"),
            StoreError::Corrupt(e) => write!(f, "store data is corrupt: {e}"),
            StoreError::Conflict(e) => write!(f, "store conflict: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A change as a change source (or `bbc sendchange`) reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NewChange {
    /// Change source name, or "api" for `bbc sendchange` / POST /api/v1/changes.
    pub source: String,
    pub repository: String,
    pub branch: String,
    pub revision: String,
    pub author: String,
    pub committer: String,
    pub comments: String,
    pub files: Vec<String>,
    pub project: String,
    pub codebase: String,
    /// When the change was made (commit time), ms since the epoch.
    pub when: Millis,
    /// E.g. `pr_number`, `pr_labels` for pull requests.
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: u64,
    /// When the master stored it.
    pub received_at: Millis,
    #[serde(flatten)]
    pub change: NewChange,
}

/// One mutating API request, as the audit log keeps it: who (a user's
/// name, `control-token`, `admin-token`, `anonymous`, or `wrong-token`),
/// what, from where, and the answer's status. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub who: String,
    /// `POST /api/v1/builders/b/force`.
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<u64>,
    /// The peer address (the proxy's, behind a reverse proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The HTTP status answered: 2xx done, 401/403 refused.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub at: Millis,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
}

/// What to build of one codebase: repository, branch and revision
/// (empty = the branch's head when the build checks it out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceStamp {
    /// The codebase it is of; `""` for a set without named codebases, and
    /// in stamps stored before codebases existed.
    #[serde(default)]
    pub codebase: String,
    pub repository: String,
    pub branch: String,
    pub revision: String,
}

/// One decision of a scheduler: build these builders on this source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBuildSet {
    pub scheduler: String,
    pub reason: String,
    /// The first of [`NewBuildSet::sources`]: what a set stored before
    /// codebases existed has, and what the API's `repository`, `branch`
    /// and `revision` show.
    pub source: SourceStamp,
    /// Every source stamp, one per codebase ([`Shared::submit`] fills it:
    /// `[source]` for a set of one codebase). Empty in sets stored before
    /// it existed: read them through [`NewBuildSet::stamps`].
    ///
    /// [`Shared::submit`]: crate::state::Shared::submit
    #[serde(default)]
    pub sources: Vec<SourceStamp>,
    pub changes: Vec<u64>,
    pub properties: Properties,
    /// The build whose trigger step created this set.
    pub parent_build: Option<u64>,
    pub submitted_at: Millis,
    /// The priority its requests get (a scheduler's `priority`, the force
    /// form's): the queue starts higher ones first, before looking at
    /// builder priorities. Absent (0) in sets stored before it existed.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub priority: i64,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

impl NewBuildSet {
    /// Every source stamp of the set: `sources`, or the one `source` of a
    /// set stored before codebases existed.
    pub fn stamps(&self) -> &[SourceStamp] {
        if self.sources.is_empty() {
            std::slice::from_ref(&self.source)
        } else {
            &self.sources
        }
    }

    /// Makes `source` and `sources` agree: `sources` gets the one `source`
    /// when empty, else `source` is its first stamp.
    pub fn normalize_sources(&mut self) {
        match self.sources.first() {
            Some(first) => self.source = first.clone(),
            None => self.sources = vec![self.source.clone()],
        }
    }

    /// The stamp of one codebase, if the set has it.
    pub fn stamp(&self, codebase: &str) -> Option<&SourceStamp> {
        self.stamps().iter().find(|s| s.codebase == codebase)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSet {
    pub id: u64,
    #[serde(flatten)]
    pub set: NewBuildSet,
    /// Set when every request of the set is complete: the worst result.
    pub result: Option<BuildResult>,
    pub completed_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestState {
    /// Waiting for a worker.
    Pending,
    /// A build is running it.
    Claimed,
    Complete,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRequest {
    pub id: u64,
    pub buildset: u64,
    pub builder: String,
    /// The builder's priority when the request was submitted.
    pub priority: i64,
    /// The request's own priority, from its build set (a scheduler's
    /// `priority`, the force form's); 0 in records stored before it.
    #[serde(default)]
    pub request_priority: i64,
    pub submitted_at: Millis,
    pub state: RequestState,
    /// The build running it (Claimed) or that ran it last.
    pub build: Option<u64>,
    pub result: Option<BuildResult>,
    pub completed_at: Option<Millis>,
    /// Set when the build that ran it was started for another, newer
    /// request (collapsed requests): that request's id. The build ran the
    /// newer request's source, and this one shares its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapsed_into: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBuild {
    pub builder: String,
    /// Content hash of the builder definition the build runs with.
    pub builder_hash: String,
    pub worker: String,
    /// The requests this build satisfies (several when collapsed).
    pub requests: Vec<u64>,
    pub properties: Properties,
    pub started_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub id: u64,
    /// 1, 2, 3… per builder.
    pub number: u64,
    #[serde(flatten)]
    pub build: NewBuild,
    pub finished_at: Option<Millis>,
    pub result: Option<BuildResult>,
    /// Short human text: "running test", "failed test", "interrupted".
    pub state_string: String,
    /// When retention deleted the build's logs (its record and steps are
    /// kept; `master { retention { logs … } }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_deleted_at: Option<Millis>,
    /// The id of the master process that runs (or ran) it, in a store
    /// several masters share (PostgreSQL); none with one master alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepRecord {
    /// Position in the builder's step list.
    pub index: u32,
    pub name: String,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub result: Option<BuildResult>,
    pub state_string: String,
    pub hidden: bool,
    pub warnings: u64,
    /// Bytes of log stored for the step.
    pub log_len: u64,
    /// Bytes of output that could not be stored (a full disk): the log is
    /// shorter than what the step printed, and the step ended as
    /// `exception` saying so.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub log_lost: u64,
    /// What a `test` step's runner reported (its summary lines or JUnit
    /// files, `crate::test_results`); none for other steps or when
    /// nothing was recognised. Absent from records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestCounts>,
    /// Figures the step printed (`bbc-figure NAME=VALUE [UNIT]` lines),
    /// in the order first seen. Absent from older records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
}

/// A step's test results: counts and the names of the failing tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
    /// Skipped, ignored and expected failures (TAP `TODO`, pytest `xfailed`).
    pub skipped: u64,
    /// The failing tests' names, at most [`crate::test_results::MAX_FAILING`].
    pub failing: Vec<String>,
}

/// One figure a step reported about itself: `bbc-figure size=1234 bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub unit: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkerRecord {
    pub name: String,
    pub first_seen: Millis,
    pub last_connected: Millis,
    pub last_disconnected: Option<Millis>,
    /// What the worker said about itself (os, arch, version, …).
    pub info: BTreeMap<String, String>,
}

/// Newest first; `before` is an id to continue after (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub before: Option<u64>,
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            before: None,
            limit: 50,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildFilter {
    pub builder: Option<String>,
    pub result: Option<BuildResult>,
    /// Only builds still running.
    pub running: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilter {
    pub builder: Option<String>,
    pub buildset: Option<u64>,
    pub state: Option<RequestState>,
}

/// What [`Store::backup`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// Records copied, over every table (indexes included).
    pub records: u64,
    /// Builds in the copy.
    pub builds: u64,
    /// Size of the copied database file.
    pub db_bytes: u64,
    /// Step logs copied, and their bytes.
    pub logs: u64,
    pub log_bytes: u64,
    /// Logs of steps still running at the snapshot: copied as far as they
    /// were written then (the restored master ends their builds as
    /// interrupted).
    pub logs_running: u64,
    /// Uploaded files (`STATE/files/`) copied, and their bytes; filled in
    /// by the caller that copies them (`crate::backup`), not by the store.
    pub files: u64,
    pub file_bytes: u64,
}

/// What retention lets go (`master { retention { … } }`, run by the
/// janitor through [`Store::prune`]). Only finished builds are ever let go,
/// measured from their end, and never one that a pending or claimed
/// request names (its requests may still need it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Builds finished before this instant are deleted: record, steps and
    /// logs.
    pub builds_before: Option<Millis>,
    /// Logs of builds finished before this instant are deleted; the
    /// records stay (with `logs_deleted_at`).
    pub logs_before: Option<Millis>,
    /// Per builder, the newest `keep_last` finished builds are kept,
    /// logs included, whatever their age.
    pub keep_last: u64,
}

impl Retention {
    /// Where one [`Store::prune`] call stops scanning, shared by the
    /// backends: nothing that started at or after the later cutoff can be
    /// let go (it finished after it), and ids grow with start times.
    /// `Err` is the call's whole answer when it has nothing to do: no
    /// cutoff (done), or no room to scan (come back at `after`).
    pub(crate) fn prune_horizon(
        &self,
        after: u64,
        scan: usize,
        limit: usize,
    ) -> std::result::Result<Millis, Pruned> {
        let Some(horizon) = self.builds_before.max(self.logs_before) else {
            return Err(Pruned::default());
        };
        if limit == 0 || scan == 0 {
            return Err(Pruned {
                next: Some(after),
                ..Pruned::default()
            });
        }
        Ok(horizon)
    }
}

/// What one [`Store::prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Builds looked at.
    pub scanned: u64,
    /// Builds deleted (records, steps and logs).
    pub builds: u64,
    /// Builds whose logs were deleted (their records kept).
    pub logs: u64,
    /// Bytes of log files removed from the disk (by both).
    pub log_bytes: u64,
    /// The build id to go on after; `None` when no later build can be
    /// let go yet.
    pub next: Option<u64>,
}

/// What a step log takes once sealed ([`Store::seal_logs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sealed {
    /// Logs sealed.
    pub logs: u64,
    /// Their bytes, and the bytes of their compressed files.
    pub raw: u64,
    pub stored: u64,
}

/// The disk a builder's builds take ([`Store::builder_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BuilderUsage {
    /// Builds stored (records kept by retention, running ones included).
    pub builds: u64,
    /// Step logs stored, their bytes (uncompressed) and the bytes their
    /// files take (compressed for sealed logs).
    pub logs: u64,
    pub log_bytes: u64,
    pub log_bytes_stored: u64,
}

/// What ending build `build` with `result` does to one of its requests;
/// every backend applies it inside its `finish_build`. Returns `false`,
/// changing nothing, when the request is no longer this build's (a stale
/// build must not undo a later one's work). A retry puts it back to
/// pending (`build` keeps pointing at the build that ran it last); any
/// other result completes it, and its build set may then be complete.
pub(crate) fn end_request(
    req: &mut BuildRequest,
    build: u64,
    result: BuildResult,
    now: Millis,
) -> bool {
    if req.state != RequestState::Claimed || req.build != Some(build) {
        return false;
    }
    if result == BuildResult::Retry {
        req.state = RequestState::Pending;
    } else {
        req.state = RequestState::Complete;
        req.result = Some(result);
        req.completed_at = Some(now);
    }
    true
}

/// What starting `build` does to one of its requests (every backend's
/// `start_build` applies it to each, once all are known to be pending):
/// claimed by the build. The build runs for its first request; the others
/// were collapsed into that one and say so.
pub(crate) fn claim_request(req: &mut BuildRequest, build: &Build) {
    req.state = RequestState::Claimed;
    req.build = Some(build.id);
    let first = build.build.requests.first().copied();
    req.collapsed_into = first.filter(|f| *f != req.id);
}

/// What one request says of its build set's result (every backend's
/// `finish_build` combines them, the worst winning): `None` while it is
/// still open, so the set is not complete yet.
pub(crate) fn request_result(req: &BuildRequest) -> Option<BuildResult> {
    match req.state {
        RequestState::Pending | RequestState::Claimed => None,
        RequestState::Cancelled => Some(BuildResult::Cancelled),
        // A complete request always has a result; if one somehow has
        // none, the set must not look successful.
        RequestState::Complete => Some(req.result.unwrap_or(BuildResult::Exception)),
    }
}

pub trait Store: Send + Sync + 'static {
    // --- changes
    fn add_change(&self, change: NewChange, now: Millis) -> Result<Change>;
    fn change(&self, id: u64) -> Result<Option<Change>>;
    fn changes(&self, page: Page) -> Result<Vec<Change>>;

    // --- build sets and requests
    /// Stores a build set and one pending request per `(builder, priority)`,
    /// atomically and durably; each request's `request_priority` is the
    /// set's `priority`.
    fn add_buildset(
        &self,
        set: NewBuildSet,
        builders: &[(String, i64)],
    ) -> Result<(BuildSet, Vec<BuildRequest>)>;
    fn buildset(&self, id: u64) -> Result<Option<BuildSet>>;
    /// The build sets with an id above `after`, oldest first, at most
    /// `limit`. Ids are given in commit order (no set appears after one
    /// with a higher id), so a reader that remembers the last id it saw
    /// misses none: the dependent schedulers catch up this way with the
    /// sets stored while no master held their lease.
    fn buildsets_after(&self, after: u64, limit: usize) -> Result<Vec<BuildSet>>;
    /// The id of the newest build set (0: none yet).
    fn newest_buildset(&self) -> Result<u64>;
    /// The build sets of `ids` that exist, in no order: one round trip
    /// where the store is a server (the queue's re-reads ask for every
    /// set it does not hold yet at once).
    fn buildsets(&self, ids: &[u64]) -> Result<Vec<BuildSet>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(s) = self.buildset(id)? {
                out.push(s);
            }
        }
        Ok(out)
    }
    fn request(&self, id: u64) -> Result<Option<BuildRequest>>;
    fn requests(&self, filter: &RequestFilter, page: Page) -> Result<Vec<BuildRequest>>;
    /// Every pending request, oldest first (what the queue loads at start).
    fn pending_requests(&self) -> Result<Vec<BuildRequest>>;
    /// Pending → Cancelled. Returns false when it was not pending.
    fn cancel_request(&self, id: u64, now: Millis) -> Result<bool>;

    // --- builds
    /// Creates the build (next number of its builder) and claims its
    /// requests atomically; `Conflict` if any request is not pending. The
    /// build runs for the first request; the others get `collapsed_into`
    /// it ([`claim_request`]).
    fn start_build(&self, build: NewBuild) -> Result<Build>;
    fn set_build_state(
        &self,
        id: u64,
        state_string: &str,
        properties: &crate::store::Properties,
    ) -> Result<()>;
    /// Ends a build. Its requests become Complete with the result, or go
    /// back to Pending when the result is `Retry`. A build set whose
    /// requests are all complete gets its result (the worst one).
    fn finish_build(&self, id: u64, result: BuildResult, now: Millis) -> Result<()>;
    /// `set_build_state` then `finish_build`, as a build's end records
    /// them: a store that can do both in one transaction does (one round
    /// trip and one rewrite of the record fewer); the state is durable
    /// with the end either way.
    fn finish_build_with_state(
        &self,
        id: u64,
        result: BuildResult,
        state_string: &str,
        properties: &crate::store::Properties,
        now: Millis,
    ) -> Result<()> {
        self.set_build_state(id, state_string, properties)?;
        self.finish_build(id, result, now)
    }
    fn build(&self, id: u64) -> Result<Option<Build>>;
    fn build_by_number(&self, builder: &str, number: u64) -> Result<Option<Build>>;
    fn builds(&self, filter: &BuildFilter, page: Page) -> Result<Vec<Build>>;
    /// At start-up: every build left running by a previous master process
    /// is finished as `Retry` ("interrupted") and its requests are pending
    /// again. Returns the ids of those builds.
    fn interrupt_running(&self, now: Millis) -> Result<Vec<u64>>;

    // --- steps (index is the step's position in the builder)
    fn put_step(&self, build: u64, step: &StepRecord) -> Result<()>;
    fn steps(&self, build: u64) -> Result<Vec<StepRecord>>;

    // --- logs: one byte stream per step, appended while it runs
    /// Appends and returns the new length. Not necessarily durable until
    /// `sync_log` (called when the step ends).
    fn append_log(&self, build: u64, step: u32, data: &[u8]) -> Result<u64>;
    fn sync_log(&self, build: u64, step: u32) -> Result<()>;
    /// `sync_log` then `log_len` (a step's end stamps the length it
    /// synced on its record): one round trip where the store is a server.
    fn sync_log_len(&self, build: u64, step: u32) -> Result<u64> {
        self.sync_log(build, step)?;
        self.log_len(build, step)
    }
    /// Up to `max` bytes from `offset` (empty at or past the end).
    fn read_log(&self, build: u64, step: u32, offset: u64, max: usize) -> Result<Vec<u8>>;
    fn log_len(&self, build: u64, step: u32) -> Result<u64>;
    /// Compresses the finished logs of a finished build at rest (each step
    /// log that is not yet); reads go on returning the same bytes, and
    /// nothing can be appended to them any more. Durable when it returns.
    /// Slow (it compresses): call it away from anything that waits.
    fn seal_logs(&self, build: u64) -> Result<Sealed>;

    // --- retention
    /// One small step of retention at most `limit` builds long: looks at
    /// up to `scan` builds after id `after`, oldest first, and deletes
    /// what `policy` lets go among them (see [`Retention`]), each write a
    /// short transaction so that builds go on committing meanwhile. Call
    /// it again from `next` until that is `None`. `now` is recorded as
    /// `logs_deleted_at`.
    fn prune(
        &self,
        policy: &Retention,
        now: Millis,
        after: u64,
        scan: usize,
        limit: usize,
    ) -> Result<Pruned>;
    /// What a builder's stored builds take: their number and their logs'
    /// bytes. Walks the builder's builds and lists their log directories
    /// (no record is decoded): meant for an occasional request, not a
    /// hot path.
    fn builder_usage(&self, builder: &str) -> Result<BuilderUsage>;

    // --- workers
    fn worker_connected(
        &self,
        name: &str,
        info: &BTreeMap<String, String>,
        now: Millis,
    ) -> Result<()>;
    fn worker_disconnected(&self, name: &str, now: Millis) -> Result<()>;
    fn workers(&self) -> Result<Vec<WorkerRecord>>;

    // --- scheduler state (opaque values under namespaced keys)
    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>>;
    fn put_state(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Several [`Store::put_state`]s as one durable write: a master with a
    /// thousand schedulers saves them all at start-up in one commit, not a
    /// thousand.
    fn put_states(&self, entries: &[(String, Vec<u8>)]) -> Result<()> {
        for (k, v) in entries {
            self.put_state(k, v)?;
        }
        Ok(())
    }

    // --- audit log
    /// Appends one entry (ids start at 1 and increase).
    fn add_audit(&self, entry: NewAuditEntry, now: Millis) -> Result<AuditEntry>;
    /// Entries newest first.
    fn audit(&self, page: Page) -> Result<Vec<AuditEntry>>;
    /// Deletes the oldest entries recorded before `before`, at most
    /// `limit` in one short write transaction, and returns how many went:
    /// call again while that is `limit`. Entries go in id order and the
    /// first one recorded at or after `before` stops it (ids grow with
    /// time; an older entry after it, from a clock set back, waits for it).
    fn prune_audit(&self, before: Millis, limit: usize) -> Result<u64>;

    // --- backup
    /// Writes a consistent copy of the store into the directory `out`
    /// (existing and empty), in the same layout, so that opening `out` as
    /// a state directory gives the store as it was at one instant: every
    /// record of one snapshot, and each step log cut at the length that
    /// snapshot gives it (a log still being written at that instant: what
    /// was written then). Runs while the store is in use and does not hold
    /// up its writers. Everything written is durable (synced) when this
    /// returns `Ok`, so the caller can rename `out` into place.
    fn backup(&self, out: &std::path::Path) -> Result<BackupReport>;

    // --- health
    /// `Ok` when the store can write, else why not (the disk is full, the
    /// database could not be reopened, …).
    ///
    /// `Err` while the last write failed and none has succeeded since.
    /// Then it tries a write of its own (storing what waits, if anything,
    /// see `put_step`), so it turns `Ok` as soon as the disk lets writes
    /// through again, without waiting for real work to try. A store whose
    /// last write succeeded answers `Ok` without touching the disk: a
    /// disk that filled since shows with the next write. The backend
    /// recovers by itself from a failed write: nothing needs a restart.
    fn health(&self) -> Result<()>;

    // --- metrics
    /// How long this backend's write transactions took, if it measures
    /// them (read by the master's metrics at each scrape).
    fn commit_times(&self) -> Option<&CommitTimes> {
        None
    }

    // --- several masters on one store (PostgreSQL; `store::lease`). A
    // store only one master opens (redb locks its directory) keeps these
    // defaults: that master is alone, holds every lease and hears nothing.
    /// Whether other masters may share this store.
    fn shared(&self) -> bool {
        false
    }
    /// Records `me` as a live master until `now + lease_ms`. From then on
    /// the builds this store starts record `me`, and
    /// [`Store::interrupt_running`] leaves the builds of live masters alone.
    fn join_masters(&self, _me: &MasterIdentity, _now: Millis, _lease_ms: Millis) -> Result<()> {
        Ok(())
    }
    /// One heartbeat: renews this master's lease until `now + lease_ms`
    /// and takes or renews the named leases `names` (each: `true` when
    /// this master holds it now, it was free, expired or its own).
    ///
    /// Async and apart from the ordinary calls: a master with a backlog
    /// has every blocking thread and pooled connection busy, and a renewal
    /// waiting behind them would let its lease expire while it lives
    /// (another master would take its builds and leases). A backend that
    /// others share runs this on a connection of its own and ends it as
    /// `Err` within [`lease::renewal_bound`]; the master then stops acting
    /// as a holder. A store only one master opens answers at once: alive,
    /// every lease held.
    fn renew(&self, _now: Millis, _lease_ms: Millis, names: &[&str]) -> StoreFuture<Renewal> {
        let held = vec![true; names.len()];
        Box::pin(std::future::ready(Ok(Renewal { alive: true, held })))
    }
    /// Takes over from every master whose lease has expired at `now`: its
    /// running builds end as interrupted (`Retry`, their requests pending
    /// again, as [`Store::interrupt_running`] does at a restart) and its
    /// row and leases go. Returns the interrupted builds. Two masters doing
    /// it at once take over each dead master once. Async and apart from
    /// the ordinary calls, like [`Store::renew`] (and from it: a long
    /// take-over never delays a renewal).
    fn take_over(&self, _now: Millis) -> StoreFuture<Vec<u64>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    /// The masters sharing the store, live or not yet taken over.
    fn masters(&self) -> Result<Vec<MasterRecord>> {
        Ok(Vec::new())
    }
    /// Gives up this master's named leases (a clean stop: another master
    /// takes them at once instead of after their expiry).
    fn release_leases(&self) -> Result<()> {
        Ok(())
    }
    /// Asks whichever master runs build `id` to cancel it ([`Notice::Cancel`]
    /// to every master; the one running it stops it): `Ok(true)` when the
    /// build is running, `Ok(false)` when it is not. A store no other
    /// master shares has no one else to ask.
    fn request_cancel(&self, _id: u64) -> Result<bool> {
        Ok(false)
    }
    /// What other masters did to the store, as it happens (LISTEN/NOTIFY):
    /// `None` for a store no other master writes.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }
    /// Stores a config applied through this master for the others
    /// (`graph_json`: the graph as `bbc compile` writes it, never with a
    /// plain-text credential) and tells them ([`Notice::Config`]). Returns
    /// its sequence number, higher than any stored before. A store no
    /// other master shares keeps nothing (0).
    fn share_config(&self, _hash: &str, _graph_json: &str, _now: Millis) -> Result<u64> {
        Ok(0)
    }
    /// The newest shared config, without its graph.
    fn newest_config(&self) -> Result<Option<SharedConfig>> {
        Ok(None)
    }
    /// The graph (JSON) of shared config `seq`, if it is still kept.
    fn config_graph(&self, _seq: u64) -> Result<Option<String>> {
        Ok(None)
    }
    /// Records in this master's row the config it runs and, when it could
    /// not apply the newest shared one, that one's hash and why; tells
    /// the others ([`Notice::Masters`]).
    fn report_config(&self, _running: &str, _failed: Option<(&str, &str)>) -> Result<()> {
        Ok(())
    }
}

/// A config applied through one master and stored for the others
/// ([`Store::share_config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// Higher for each config shared: the masters apply the highest.
    pub seq: u64,
    pub hash: String,
    pub applied_at: Millis,
    /// The id of the master it was applied through.
    pub master: String,
}

/// What a master sharing the store did, heard by the others
/// ([`Store::notices`]). A hint to look again, never the data itself: a
/// notice can be missed (a dropped connection), so a master also looks
/// again now and then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Pending requests changed: added, claimed, cancelled, or pending
    /// again after a retry or a take-over.
    Requests,
    /// A build ended.
    Builds,
    /// A change was stored.
    Changes,
    /// Someone asked, through any master, to cancel this running build
    /// ([`Store::request_cancel`]): the master running it cancels it.
    Cancel(u64),
    /// A config was applied through a master and shared
    /// ([`Store::share_config`]): the others apply it.
    Config,
    /// A master reported the config it runs ([`Store::report_config`]).
    Masters,
    /// A build set was stored (its id): the schedulers' master follows it
    /// for the dependent schedulers, wherever it was submitted.
    BuildSet(u64),
    /// The connection that listens was (re)established: notices may have
    /// been missed meanwhile.
    Reconnected,
}

#[cfg(test)]
mod tests {
    use super::{BuildRequest, BuildSet, RequestState};

    #[test]
    fn records_stored_before_request_priorities_still_read() {
        // A request and a set as both backends stored them before request
        // priorities and collapsed_into existed (JSON, as redb and
        // PostgreSQL keep them).
        let req: BuildRequest = serde_json::from_str(
            r#"{"id":3,"buildset":2,"builder":"b","priority":5,"submitted_at":10,
                "state":"complete","build":4,"result":"success","completed_at":20}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((req.priority, req.request_priority), (5, 0));
        assert_eq!(
            (req.state, req.collapsed_into),
            (RequestState::Complete, None)
        );
        let set: BuildSet = serde_json::from_str(
            r#"{"id":2,"scheduler":"s","reason":"r","source":{"repository":"","branch":"",
                "revision":""},"changes":[],"properties":{},"parent_build":null,
                "submitted_at":10,"result":null,"completed_at":null}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.set.priority, 0);
        // And a priority of 0 is written as before: nothing more.
        let text = serde_json::to_string(&set).unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("priority"), "{text}");
    }
}
