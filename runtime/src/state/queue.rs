//! The queue's book-keeping: pending requests, running builds and the
//! holders of locks. It lives with the shared state (the HTTP API, apply
//! and the builds read and change it); the loop that assigns requests to
//! workers is a service above it (`master/queue.rs`).
//!
//! Every change is a method that returns what it must wake ([`Wake`]),
//! sent once the queue's lock is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bbc_graph::{Downtime, Graph, LockAccess, LockScope, LockUse};
use tokio::sync::watch;

use super::Shared;
use crate::store::{BuildRequest, BuildSet, Millis};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub name: String,
    /// The worker, for worker-scoped locks.
    pub worker: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Holders {
    count: u32,
    exclusive: bool,
}

pub struct Entry {
    pub req: BuildRequest,
    pub set: Arc<BuildSet>,
}

impl Entry {
    /// Where it stands in the queue, smallest first: the request's own
    /// priority (higher first), its builder's (higher first), its age
    /// (older first), its id. The assignment loop and the pending view
    /// both order by it.
    pub fn order_key(&self) -> (i64, i64, Millis, u64) {
        (
            self.req.request_priority.saturating_neg(),
            self.req.priority.saturating_neg(),
            self.req.submitted_at,
            self.req.id,
        )
    }
}

pub struct Running {
    pub build_id: Option<u64>,
    pub number: u64,
    pub builder: String,
    pub worker: String,
    pub started_at: Millis,
    pub cancel: watch::Sender<bool>,
    pub step: Option<u32>,
    /// The requests the build runs (they left `pending` for this slot).
    pub requests: Vec<u64>,
    /// The builder's locks, taken when the assignment loop made the slot.
    pub(crate) locks: HeldLocks,
}

/// Locks taken from the queue, by a build's slot or by one step. They go
/// back through [`Queue::release`], which takes them by value: released
/// once, and whoever waits for them is woken.
#[must_use = "locks not given back to the queue stay taken"]
#[derive(Default)]
pub struct HeldLocks(Vec<(LockKey, LockAccess)>);

impl HeldLocks {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a change to the queue must wake: a queue method that frees a slot
/// or a lock, ends a build or adds requests says so in its return value,
/// and the caller sends it once the queue's lock is released.
///
/// Why a value rather than the queue holding `Arc<Notify>` handles and
/// notifying itself: the queue sits in a std `Mutex` and the first thing a
/// woken assignment loop does is take that lock, so waking belongs after
/// the unlock; a caller that goes on (a retried build puts its requests
/// back after its slot is freed) merges the two and the loop makes one
/// pass, not two; and the notifiers stay in `Shared`, where their waiters
/// find them without the queue. `must_use` (denied as a warning in CI)
/// keeps a wake from being dropped.
#[must_use = "send it with `Wake::send` once the queue's lock is released"]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// A slot, a lock or a pending request changed: the assignment loop
    /// looks again.
    pub(crate) assign: bool,
    /// Locks were released: step-lock waiters try again.
    pub(crate) locks: bool,
    /// A build ended: waiters on build ends look at the store again.
    pub(crate) builds: bool,
}

impl Wake {
    /// Both wakes, sent as one.
    pub fn and(self, other: Wake) -> Wake {
        Wake {
            assign: self.assign || other.assign,
            locks: self.locks || other.locks,
            builds: self.builds || other.builds,
        }
    }

    pub fn send(self, shared: &Shared) {
        if self.assign {
            shared.wake.notify_one();
        }
        if self.locks {
            shared.locks_released.notify_waiters();
        }
        if self.builds {
            shared.build_finished.notify_waiters();
        }
    }
}

/// The queue's state. Its fields are private so that every change goes
/// through a method, which returns what the change must wake ([`Wake`]).
#[derive(Default)]
/// The fields are read by the assignment loop (`master/queue.rs`), which
/// decides from them; every change goes through a method that says what
/// it wakes, so no caller edits them.
pub struct Queue {
    pub(crate) pending: BTreeMap<u64, Entry>,
    /// Keyed by a slot id (the build id is known only once stored).
    pub(crate) running: HashMap<u64, Running>,
    locks: HashMap<LockKey, Holders>,
}

impl Queue {
    pub fn add(&mut self, req: BuildRequest, set: Arc<BuildSet>) {
        self.pending.insert(req.id, Entry { req, set });
    }

    /// Adds requests after start-up (say, those of a build that will be
    /// retried): the assignment loop must look at them.
    pub fn add_all(
        &mut self,
        reqs: impl IntoIterator<Item = (BuildRequest, Arc<BuildSet>)>,
    ) -> Wake {
        let mut wake = Wake::default();
        for (req, set) in reqs {
            self.add(req, set);
            wake.assign = true;
        }
        wake
    }

    /// Makes the pending requests those the store holds as pending
    /// (`store`, read from a store other masters share): the ones another
    /// master added or put back come in, the ones another master claimed
    /// or cancelled go. A request a slot of this master is starting stays
    /// with that slot.
    pub fn sync_pending(
        &mut self,
        store: impl IntoIterator<Item = (BuildRequest, Arc<BuildSet>)>,
    ) -> Wake {
        let mut wake = Wake::default();
        let mut seen = std::collections::HashSet::new();
        let starting: std::collections::HashSet<u64> = self
            .running
            .values()
            .flat_map(|r| r.requests.iter().copied())
            .collect();
        for (req, set) in store {
            seen.insert(req.id);
            if !self.pending.contains_key(&req.id) && !starting.contains(&req.id) {
                self.add(req, set);
                wake.assign = true;
            }
        }
        self.pending.retain(|id, _| seen.contains(id));
        wake
    }

    /// The build sets of the pending requests, by id: a re-read of the
    /// store's pending requests fetches only the sets not among them.
    pub fn pending_sets(&self) -> std::collections::HashMap<u64, Arc<BuildSet>> {
        self.pending
            .values()
            .map(|e| (e.set.id, e.set.clone()))
            .collect()
    }

    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.pending.values()
    }

    /// The first `n` pending requests in the queue's order
    /// ([`Entry::order_key`]).
    pub fn pending_in_order(&self, n: usize) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.pending.values().collect();
        v.sort_unstable_by_key(|e| e.order_key());
        v.truncate(n);
        v
    }

    pub fn remove(&mut self, id: u64) -> bool {
        self.pending.remove(&id).is_some()
    }

    /// Gives every pending request its builder's priority in `g` (a
    /// request of a builder `g` lacks keeps its own). Returns how many
    /// changed. The stored request keeps the priority it was submitted
    /// with; the queue always orders by the config in force.
    pub fn reprioritize(&mut self, g: &Graph) -> usize {
        let mut n = 0;
        for e in self.pending.values_mut() {
            if let Some(b) = g.builder(&e.req.builder) {
                if e.req.priority != b.priority {
                    e.req.priority = b.priority;
                    n += 1;
                }
            }
        }
        n
    }

    /// The builds running or starting, in no order.
    pub fn running(&self) -> impl Iterator<Item = &Running> {
        self.running.values()
    }

    pub fn running_on(&self, worker: &str) -> usize {
        self.running.values().filter(|r| r.worker == worker).count()
    }

    /// Records the step a running build is at (shown by the API).
    pub fn at_step(&mut self, slot: u64, index: u32) {
        if let Some(r) = self.running.get_mut(&slot) {
            r.step = Some(index);
        }
    }

    /// A started build's id and number go on its slot; returns the
    /// receiver of its cancellation, or None if the slot is gone.
    pub(crate) fn started(
        &mut self,
        slot: u64,
        build_id: u64,
        number: u64,
    ) -> Option<watch::Receiver<bool>> {
        let r = self.running.get_mut(&slot)?;
        r.build_id = Some(build_id);
        r.number = number;
        Some(r.cancel.subscribe())
    }

    /// Ends a running build: its slot and builder locks are free.
    pub fn end(&mut self, slot: u64) -> Wake {
        let wake = self.free(slot);
        Wake {
            builds: true,
            ..wake
        }
    }

    /// Gives up a slot whose build could not start; `back` are its
    /// requests still pending, which wait again.
    pub(crate) fn abandon(&mut self, slot: u64, back: impl IntoIterator<Item = Entry>) -> Wake {
        for en in back {
            self.pending.insert(en.req.id, en);
        }
        self.free(slot)
    }

    /// Frees a slot and its builder locks.
    fn free(&mut self, slot: u64) -> Wake {
        let mut wake = Wake {
            assign: true,
            ..Wake::default()
        };
        if let Some(r) = self.running.remove(&slot) {
            wake = wake.and(self.release(r.locks));
        }
        wake
    }

    fn lock_key(u: &LockUse, g: &Graph, worker: &str) -> Option<(LockKey, LockAccess, u32)> {
        let l = g.lock(&u.lock)?;
        let key = LockKey {
            name: l.name.clone(),
            worker: (l.scope == LockScope::Worker).then(|| worker.to_string()),
        };
        Some((key, u.access, l.max_count))
    }

    fn can_take(&self, key: &LockKey, access: LockAccess, max: u32) -> bool {
        let h = self.locks.get(key).copied().unwrap_or_default();
        match access {
            LockAccess::Counting => !h.exclusive && h.count < max,
            LockAccess::Exclusive => !h.exclusive && h.count == 0,
        }
    }

    fn take_one(&mut self, key: &LockKey, access: LockAccess) {
        let h = self.locks.entry(key.clone()).or_default();
        match access {
            LockAccess::Counting => h.count += 1,
            LockAccess::Exclusive => h.exclusive = true,
        }
    }

    fn release_one(&mut self, key: &LockKey, access: LockAccess) {
        if let Some(h) = self.locks.get_mut(key) {
            match access {
                LockAccess::Counting => h.count = h.count.saturating_sub(1),
                LockAccess::Exclusive => h.exclusive = false,
            }
            if h.count == 0 && !h.exclusive {
                self.locks.remove(key);
            }
        }
    }

    /// Takes all of `uses` (on `worker`, for worker-scoped locks) or none.
    pub fn take_locks(&mut self, uses: &[LockUse], g: &Graph, worker: &str) -> Option<HeldLocks> {
        let keys: Vec<(LockKey, LockAccess, u32)> = uses
            .iter()
            .filter_map(|u| Self::lock_key(u, g, worker))
            .collect();
        if !keys.iter().all(|(k, a, m)| self.can_take(k, *a, *m)) {
            return None;
        }
        // The same lock named twice must also fit twice.
        let mut taken = HeldLocks::default();
        for (k, a, m) in keys {
            if !self.can_take(&k, a, m) {
                // Taken and given back under one lock: no one saw them
                // taken, so no one is woken.
                self.give_back(&taken);
                return None;
            }
            self.take_one(&k, a);
            taken.0.push((k, a));
        }
        Some(taken)
    }

    fn give_back(&mut self, held: &HeldLocks) {
        for (k, a) in &held.0 {
            self.release_one(k, *a);
        }
    }

    /// Gives locks back: the assignment loop and the step-lock waiters
    /// look again (nothing to wake when there were none).
    pub fn release(&mut self, held: HeldLocks) -> Wake {
        self.give_back(&held);
        let any = !held.is_empty();
        Wake {
            assign: any,
            locks: any,
            builds: false,
        }
    }
}

/// Changes the queue of `shared` with `f` (nothing if its lock is
/// poisoned); returns what to wake, to send now that the lock is released.
pub fn update(shared: &Shared, f: impl FnOnce(&mut Queue) -> Wake) -> Wake {
    match shared.queue.lock() {
        Ok(mut q) => f(&mut q),
        Err(_) => Wake::default(),
    }
}

/// Whether `now` falls in one of the windows.
pub fn in_downtime(windows: &[Downtime], now: Millis) -> bool {
    windows.iter().any(|w| {
        let Ok(tz) = jiff::tz::TimeZone::get(&w.tz) else {
            return false;
        };
        let Ok(ts) = jiff::Timestamp::from_millisecond(now) else {
            return false;
        };
        let local = ts.to_zoned(tz);
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let yesterday = (day + 6) % 7;
        if w.end_minute > w.start_minute {
            w.days.contains(&day) && minute >= w.start_minute && minute < w.end_minute
        } else {
            // Crosses midnight: from start on the listed day to end the next day.
            (w.days.contains(&day) && minute >= w.start_minute)
                || (w.days.contains(&yesterday) && minute < w.end_minute)
        }
    })
}
