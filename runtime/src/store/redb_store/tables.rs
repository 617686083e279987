//! The database's tables (schema version 1), and the tables of one write
//! transaction with the updates that span several of them (claiming and
//! finishing builds, completing build sets).

use bbc_graph::BuildResult;
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::records::{db_err, get_record, ids_desc, must_get, put_record};
use crate::store::{Build, BuildRequest, BuildSet, Millis, RequestState, Result, StoreError};

/// Version of the key layout below. Bump it (and write a migration in
/// `open`) whenever a table's key or value type or meaning changes.
pub const SCHEMA_VERSION: u64 = 1;

// --- tables (schema version 1). Values of `&[u8]` are serde_json of the
// record type named; `()` marks a pure index.

/// "schema_version" → SCHEMA_VERSION.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// "change" | "buildset" | "request" | "build" | "audit" → the last id issued;
/// "build-number/<builder>" → the highest number of the builder's builds
/// that retention deleted (see [`number_key`]).
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// change id → Change.
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// build set id → BuildSet.
pub(super) const BUILDSETS: TableDefinition<u64, &[u8]> = TableDefinition::new("buildsets");
/// request id → BuildRequest.
pub(super) const REQUESTS: TableDefinition<u64, &[u8]> = TableDefinition::new("requests");
/// (build set id, request id) → (): the requests of a set.
pub(super) const REQUESTS_BY_BUILDSET: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("requests_by_buildset");
/// (builder, request id) → ().
pub(super) const REQUESTS_BY_BUILDER: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("requests_by_builder");
/// request id → (): exactly the requests in state Pending.
pub(super) const PENDING: TableDefinition<u64, ()> = TableDefinition::new("pending_requests");
/// build id → Build.
pub(super) const BUILDS: TableDefinition<u64, &[u8]> = TableDefinition::new("builds");
/// (builder, build id) → build number.
pub(super) const BUILDS_BY_BUILDER: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("builds_by_builder");
/// (builder, build number) → build id.
pub(super) const BUILD_NUMBERS: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("build_numbers");
/// build id → (): exactly the builds with `finished_at` None.
pub(super) const RUNNING: TableDefinition<u64, ()> = TableDefinition::new("running_builds");
/// (build id, step index) → StepRecord.
pub(super) const STEPS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("steps");
/// worker name → WorkerRecord.
pub(super) const WORKERS: TableDefinition<&str, &[u8]> = TableDefinition::new("workers");
/// audit entry id → AuditEntry.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// scheduler state key → opaque bytes.
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("scheduler_state");

/// The `counters` key of the highest build number of `builder` that
/// retention deleted, so that numbers are never given twice even when a
/// builder's newest builds are gone.
pub(super) fn number_key(builder: &str) -> String {
    format!("build-number/{builder}")
}

/// The tables of one write transaction, opened once (redb refuses to open
/// a table twice in a transaction).
pub(super) struct W<'t> {
    pub(super) counters: Table<'t, &'static str, u64>,
    pub(super) changes: Table<'t, u64, &'static [u8]>,
    pub(super) buildsets: Table<'t, u64, &'static [u8]>,
    pub(super) requests: Table<'t, u64, &'static [u8]>,
    pub(super) requests_by_buildset: Table<'t, (u64, u64), ()>,
    pub(super) requests_by_builder: Table<'t, (&'static str, u64), ()>,
    pub(super) pending: Table<'t, u64, ()>,
    pub(super) builds: Table<'t, u64, &'static [u8]>,
    pub(super) builds_by_builder: Table<'t, (&'static str, u64), u64>,
    pub(super) build_numbers: Table<'t, (&'static str, u64), u64>,
    pub(super) running: Table<'t, u64, ()>,
    pub(super) steps: Table<'t, (u64, u32), &'static [u8]>,
    pub(super) workers: Table<'t, &'static str, &'static [u8]>,
    pub(super) state: Table<'t, &'static str, &'static [u8]>,
    pub(super) audit: Table<'t, u64, &'static [u8]>,
}

impl<'t> W<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<W<'t>> {
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
            // Opened by every write, so a store from before the audit log
            // gains the table when it is opened (its first write).
            audit: txn.open_table(AUDIT).map_err(db_err)?,
        })
    }

    pub(super) fn next_id(&mut self, kind: &'static str) -> Result<u64> {
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

    pub(super) fn put_request(&mut self, req: &BuildRequest) -> Result<()> {
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
    pub(super) fn maybe_complete_buildset(&mut self, buildset: u64, now: Millis) -> Result<()> {
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
            let Some(result) = crate::store::request_result(&req) else {
                return Ok(());
            };
            worst = worst.max(result);
        }
        set.result = Some(worst);
        set.completed_at = Some(now);
        put_record(&mut self.buildsets, &set)
    }

    /// Ends a running build: its requests complete with `result`, or are
    /// pending again when it is `Retry`.
    pub(super) fn finish(
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
            if !crate::store::end_request(&mut req, id, result, now) {
                continue;
            }
            if req.state == RequestState::Complete && !sets.contains(&req.buildset) {
                sets.push(req.buildset);
            }
            self.put_request(&req)?;
        }
        for set in sets {
            self.maybe_complete_buildset(set, now)?;
        }
        Ok(())
    }
}

pub(super) fn open_ro<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<redb::ReadOnlyTable<K, V>> {
    txn.open_table(def).map_err(db_err)
}
