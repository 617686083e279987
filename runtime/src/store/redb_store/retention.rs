//! Retention and sealing: deleting what `master { retention }` lets go,
//! in small transactions, compressing finished logs, and measuring the
//! disk a builder's builds take.
//!
//! Pruning looks first and deletes after: the candidates are found in a
//! read snapshot (no lock; builds go on committing), then their log files
//! are removed and their records deleted in one short write transaction.
//! Files go before records, so a crash in between leaves records whose
//! logs are gone (deleted again, harmlessly, by the next run), never log
//! files that no record names. Whether a build may go only ever changes
//! towards yes (a finished build stays finished, its requests only leave
//! Pending and Claimed, newer builds only push it out of the newest
//! `keep_last`), so what the snapshot found is still right when the write
//! runs.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use super::records::{builder_ids_desc, db_err, decode_record, get_record, put_record};
use super::tables::{number_key, open_ro, AUDIT, BUILDS, BUILDS_BY_BUILDER, REQUESTS};
use super::RedbStore;
use crate::store::{
    AuditEntry, Build, BuildRequest, BuilderUsage, Millis, Pruned, RequestState, Result, Retention,
    Sealed, StoreError,
};

pub(super) fn seal_logs(store: &RedbStore, build: u64) -> Result<Sealed> {
    let Some(b) = get_record::<Build>(&open_ro(&store.read()?, BUILDS)?, build)? else {
        // Deleted by retention already: nothing is left to seal.
        return Ok(Sealed::default());
    };
    if b.finished_at.is_none() {
        return Err(StoreError::Conflict(format!(
            "build {build} is still running; its logs cannot be sealed"
        )));
    }
    let mut out = Sealed::default();
    for step in store.logs.plain_steps(build)? {
        if let Some(s) = store.logs.seal(build, step)? {
            out.logs += 1;
            out.raw += s.raw;
            out.stored += s.stored;
        }
    }
    Ok(out)
}

/// What the snapshot found: builds to delete, builds whose logs to delete.
#[derive(Default)]
struct Doomed {
    builds: Vec<u64>,
    logs: Vec<u64>,
}

pub(super) fn prune(
    store: &RedbStore,
    policy: &Retention,
    now: Millis,
    after: u64,
    scan: usize,
    limit: usize,
) -> Result<Pruned> {
    let horizon = match policy.prune_horizon(after, scan, limit) {
        Ok(h) => h,
        Err(done) => return Ok(done),
    };
    let mut out = Pruned::default();
    let doomed = find(store, policy, horizon, after, scan, limit, &mut out)?;
    if doomed.builds.is_empty() && doomed.logs.is_empty() {
        return Ok(out);
    }
    for &id in doomed.builds.iter().chain(&doomed.logs) {
        out.log_bytes += store.logs.remove_build(id)?.stored;
    }
    let (builds, logs) = store.write(|_, w| {
        let (mut builds, mut logs) = (0, 0);
        for &id in &doomed.builds {
            // Gone already (a second janitor run racing this one).
            let Some(b) = get_record::<Build>(&w.builds, id)? else {
                continue;
            };
            let builder = b.build.builder.as_str();
            w.builds.remove(id).map_err(db_err)?;
            w.builds_by_builder.remove((builder, id)).map_err(db_err)?;
            w.build_numbers
                .remove((builder, b.number))
                .map_err(db_err)?;
            let steps: Vec<u32> = w
                .steps
                .range((id, 0)..=(id, u32::MAX))
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value().1).map_err(db_err))
                .collect::<Result<_>>()?;
            for step in steps {
                w.steps.remove((id, step)).map_err(db_err)?;
            }
            let key = number_key(builder);
            let highest = w
                .counters
                .get(key.as_str())
                .map_err(db_err)?
                .map_or(0, |v| v.value());
            if b.number > highest {
                w.counters.insert(key.as_str(), b.number).map_err(db_err)?;
            }
            builds += 1;
        }
        for &id in &doomed.logs {
            let Some(mut b) = get_record::<Build>(&w.builds, id)? else {
                continue;
            };
            if b.logs_deleted_at.is_none() {
                b.logs_deleted_at = Some(now);
                put_record(&mut w.builds, &b)?;
            }
            logs += 1;
        }
        Ok((builds, logs))
    })?;
    out.builds = builds;
    out.logs = logs;
    Ok(out)
}

/// The audit log's oldest entries, recorded before `before`: found in a
/// read snapshot, deleted in one short write (an entry is never changed
/// once written, so what the snapshot found is still right).
pub(super) fn prune_audit(store: &RedbStore, before: Millis, limit: usize) -> Result<u64> {
    let ids: Vec<u64> = {
        let txn = store.read()?;
        let t = open_ro(&txn, AUDIT)?;
        let mut ids = Vec::new();
        for entry in t.iter().map_err(db_err)? {
            if ids.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(db_err)?;
            let e: AuditEntry = decode_record(k.value(), v.value())?;
            if e.at >= before {
                break;
            }
            ids.push(e.id);
        }
        ids
    };
    if ids.is_empty() {
        return Ok(0);
    }
    store.write(|_, w| {
        let mut n = 0;
        for &id in &ids {
            // Gone already (a second janitor run racing this one).
            if w.audit.remove(id).map_err(db_err)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    })
}

/// The candidates among up to `scan` builds after `after`, at most
/// `limit`; sets `out.scanned` and `out.next`.
fn find(
    store: &RedbStore,
    policy: &Retention,
    horizon: Millis,
    after: u64,
    scan: usize,
    limit: usize,
    out: &mut Pruned,
) -> Result<Doomed> {
    let txn = store.read()?;
    let builds = open_ro(&txn, BUILDS)?;
    let by_builder = open_ro(&txn, BUILDS_BY_BUILDER)?;
    let requests = open_ro(&txn, REQUESTS)?;
    // Per builder, its newest `keep_last` finished builds.
    let mut kept: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut doomed = Doomed::default();
    let Some(from) = after.checked_add(1) else {
        return Ok(doomed);
    };
    for entry in builds.range(from..).map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let id = k.value();
        if out.scanned >= scan as u64 {
            out.next = Some(id - 1);
            return Ok(doomed);
        }
        out.scanned += 1;
        let b: Build = decode_record(id, v.value())?;
        if b.build.started_at >= horizon {
            return Ok(doomed);
        }
        let Some(finished) = b.finished_at else {
            continue;
        };
        let whole = policy.builds_before.is_some_and(|t| finished < t);
        let logs = !whole
            && b.logs_deleted_at.is_none()
            && policy.logs_before.is_some_and(|t| finished < t);
        if !whole && !logs {
            continue;
        }
        if policy.keep_last > 0 {
            let builder = &b.build.builder;
            if !kept.contains_key(builder) {
                let newest = newest_finished(&by_builder, &builds, builder, policy.keep_last)?;
                kept.insert(builder.clone(), newest);
            }
            if kept.get(builder).is_some_and(|k| k.contains(&id)) {
                continue;
            }
        }
        if still_needed(&requests, &b)? {
            continue;
        }
        if whole {
            doomed.builds.push(id);
        } else {
            doomed.logs.push(id);
        }
        if doomed.builds.len() + doomed.logs.len() >= limit {
            out.next = Some(id);
            return Ok(doomed);
        }
    }
    Ok(doomed)
}

/// The ids of a builder's newest `n` finished builds.
fn newest_finished(
    by_builder: &impl ReadableTable<(&'static str, u64), u64>,
    builds: &impl ReadableTable<u64, &'static [u8]>,
    builder: &str,
    n: u64,
) -> Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for id in builder_ids_desc(by_builder, builder, u64::MAX)? {
        let id = id?;
        let b: Build = super::records::must_get(builds, id)?;
        if b.finished_at.is_some() {
            out.insert(id);
            if out.len() as u64 >= n {
                break;
            }
        }
    }
    Ok(out)
}

/// Whether a request of the build may still run (pending, or claimed by
/// a build under way): the build is kept for it.
fn still_needed(requests: &impl ReadableTable<u64, &'static [u8]>, b: &Build) -> Result<bool> {
    for &rid in &b.build.requests {
        if let Some(r) = get_record::<BuildRequest>(requests, rid)? {
            if matches!(r.state, RequestState::Pending | RequestState::Claimed) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

pub(super) fn builder_usage(store: &RedbStore, builder: &str) -> Result<BuilderUsage> {
    // Ids only (no record decoded), and the snapshot let go before the
    // directories are listed.
    let ids: Vec<u64> = {
        let txn = store.read()?;
        let by_builder = open_ro(&txn, BUILDS_BY_BUILDER)?;
        let ids = builder_ids_desc(&by_builder, builder, u64::MAX)?.collect::<Result<_>>()?;
        ids
    };
    let mut out = BuilderUsage {
        builds: ids.len() as u64,
        ..BuilderUsage::default()
    };
    for id in ids {
        let u = store.logs.usage(id)?;
        out.logs += u.logs;
        out.log_bytes += u.raw;
        out.log_bytes_stored += u.stored;
    }
    Ok(out)
}
