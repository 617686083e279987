//! Group commit: how write transactions become durable, several to one
//! `fsync` under load, with the waiting step records and build states
//! (`pending.rs`) stored by whichever commits next.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use redb::{Database, Durability, ReadableTable, WriteTransaction};

use super::records::{db_err, encode, get_record, put_record};
use super::tables::W;
use super::{lock, pending, RedbStore};
use crate::store::{Build, Result, StoreError};

/// When this many step records and build states wait, the write that adds
/// one stores them all (durably).
const PENDING_LIMIT: usize = 256;

/// Group commit state (see [`RedbStore::write`]).
#[derive(Default)]
pub(super) struct Group {
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

fn lock_group(m: &Mutex<Group>) -> MutexGuard<'_, Group> {
    lock(m)
}

impl RedbStore {
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
    ///
    /// A failure is noted (see [`RedbStore::write_failed`]): an I/O error
    /// has the next call reopen the database.
    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut W<'_>) -> Result<T>,
    ) -> Result<T> {
        // Timed from the call: waiting for redb's write lock and for a
        // group's durable commit is what a caller's write costs.
        let began = Instant::now();
        // Held to the end, durability included: a reopen waits for it.
        // A failure to reopen has been noted already.
        let db = self.db()?;
        let r = self.write_in(&db, f);
        match &r {
            Ok(_) => {
                self.commit_times.observe(began.elapsed());
                self.write_succeeded()
            }
            Err(e) => self.write_failed(e),
        }
        r
    }

    pub(super) fn write_in<T>(
        &self,
        db: &Database,
        f: impl FnOnce(&WriteTransaction, &mut W<'_>) -> Result<T>,
    ) -> Result<T> {
        lock_group(&self.group).writers += 1;
        let mut txn = match db.begin_write() {
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
                // Parked, not forgotten: a commit that never becomes
                // durable is lost when the database is reopened after a
                // failure, and what it applied must then wait again.
                lock(&self.pending).park(&applied, seq);
                self.wait_durable(db, seq)?;
                lock(&self.pending).confirm(seq);
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
            // Retention may have deleted the build since the step was
            // checked: its steps must not come back as orphans.
            if w.builds.get(build).map_err(db_err)?.is_none() {
                continue;
            }
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
    pub(super) fn add_pending(&self, add: impl FnOnce(&mut pending::Pending)) -> Result<()> {
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
    fn wait_durable(&self, db: &Database, seq: u64) -> Result<()> {
        let mut g = lock_group(&self.group);
        loop {
            if g.durable >= seq {
                return Ok(());
            }
            if g.writers == 0 && g.flushing == 0 {
                g.flushing += 1;
                drop(g);
                let r = self.flush(db);
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
    pub(super) fn flush(&self, db: &Database) -> Result<u64> {
        let mut txn = db.begin_write().map_err(db_err)?;
        let covers = lock_group(&self.group).assigned;
        let applied = W::open(&txn).and_then(|mut w| self.apply_pending(&mut w))?;
        txn.set_quick_repair(true);
        txn.commit().map_err(db_err)?;
        lock(&self.pending).forget(&applied);
        Ok(covers)
    }
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
            // Reopened first if a failure left it unusable: the disk may
            // have room again.
            match self.db().and_then(|db| self.flush(&db)) {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("closing the store: what was waiting could not be stored: {e}")
                }
            }
        }
    }
}
