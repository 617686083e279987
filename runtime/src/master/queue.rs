//! The loop that assigns pending requests to workers and starts their
//! builds (the queue's book-keeping itself is `state/queue.rs`).
//!
//! Assignment rules (Buildbot's, made explicit):
//! - requests go by their own priority (higher first; a scheduler's
//!   `priority`, the force form's), then their builder's priority (higher
//!   first), then age (older first), then id;
//! - a worker runs at most `max-builds` builds, and at most one build of a
//!   given builder (each builder has its own directory there);
//! - a worker in a downtime window takes no new builds;
//! - a builder's locks must all be free for the build to start;
//! - with `collapse-requests` (the default), the pending requests of the
//!   builder that are [`collapsible`] with the one chosen are satisfied by
//!   one build, run for the newest of them (its revision); the others are
//!   claimed by it too, `collapsed_into` the newest.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbc_graph::{Builder, Graph, SchedulerKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::queue::{in_downtime, update, Entry, Running};
use crate::state::{now_ms, Shared};
use crate::store::{BuildSet, Millis, NewBuild, StoreError};

/// Whether a build set came from changes: a change-driven scheduler of the
/// config in force submitted it for changes. Forced sets, rebuilds and
/// triggered sets (and sets of a scheduler no longer configured) did not.
fn from_changes(g: &Graph, set: &BuildSet) -> bool {
    !set.set.changes.is_empty()
        && set.set.parent_build.is_none()
        && g.scheduler(&set.set.scheduler).is_some_and(|s| {
            !matches!(
                s.kind,
                SchedulerKind::Force { .. } | SchedulerKind::Triggerable {}
            )
        })
}

/// Whether two pending requests of one builder may be satisfied by one
/// build (Buildbot's default `collapseRequests`): both came from changes
/// ([`from_changes`]) on the same codebases and, for each, the same
/// repository and branch, whatever their revisions, and with the same
/// properties. Forced requests never collapse, nor do requests whose
/// properties differ.
fn collapsible(g: &Graph, a: &BuildSet, b: &BuildSet) -> bool {
    same_codebases(a, b)
        && a.set.properties == b.set.properties
        && from_changes(g, a)
        && from_changes(g, b)
}

/// Whether two sets have the same codebases, each on the same repository
/// and branch (the order the stamps are listed in does not count).
fn same_codebases(a: &BuildSet, b: &BuildSet) -> bool {
    fn key(s: &BuildSet) -> Vec<(&str, &str, &str)> {
        let mut k: Vec<(&str, &str, &str)> = s
            .set
            .stamps()
            .iter()
            .map(|st| {
                (
                    st.codebase.as_str(),
                    st.repository.as_str(),
                    st.branch.as_str(),
                )
            })
            .collect();
        k.sort_unstable();
        k
    }
    key(a) == key(b)
}

/// Wall-clock microseconds since the epoch.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Decision {
    slot: u64,
    builder: Arc<Builder>,
    worker: String,
    entries: Vec<Entry>,
}

/// Picks what can start now; reserves slots and locks under the lock.
fn decide(shared: &Arc<Shared>) -> Vec<Decision> {
    let g = shared.graph();
    let conns: Vec<String> = match shared.workers.lock() {
        Ok(w) => w
            .iter()
            .filter(|(_, c)| !c.is_closed())
            .map(|(n, _)| n.clone())
            .collect(),
        Err(_) => return Vec::new(),
    };
    let Ok(mut q) = shared.queue.lock() else {
        return Vec::new();
    };
    let now = now_ms();
    let now_inst = std::time::Instant::now();
    // Latent workers are candidates while stopped too: a build assigned to
    // one starts it (state/latent.rs).
    let has_latent = g.workers.iter().any(|w| w.latent.is_some());
    // Workers that can take a build now. None: nothing can start, however
    // long the queue (the common case while busy: don't walk it).
    let mut open: Vec<&String> = conns
        .iter()
        .filter(|w| {
            g.worker(w).is_some_and(|wd| {
                q.running_on(w) < wd.max_builds as usize && !in_downtime(&wd.downtime, now)
            })
        })
        .collect();
    if (open.is_empty() && !has_latent) || q.pending.is_empty() {
        return Vec::new();
    }
    let mut order: Vec<(i64, i64, Millis, u64)> =
        q.pending.values().map(Entry::order_key).collect();
    order.sort_unstable();
    // Builders found unable to start in this pass: their later requests
    // cannot start either (this pass only takes slots and locks).
    let mut blocked: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, _, _, id) in order {
        if open.is_empty() && !has_latent {
            break;
        }
        let Some(entry) = q.pending.get(&id) else {
            continue;
        };
        if blocked.contains(&entry.req.builder) {
            continue;
        }
        let Some(builder) = g.builder(&entry.req.builder) else {
            continue;
        };
        let set = entry.set.clone();
        // Connected workers before latent ones still to start (a latent
        // worker starts only when no connected one can take the build),
        // then the least busy, then by name.
        let mut candidates: Vec<(bool, usize, &String)> = builder
            .workers
            .iter()
            .filter(|w| conns.contains(w) || g.worker(w).is_some_and(|wd| wd.latent.is_some()))
            .map(|w| (!conns.contains(w), q.running_on(w), w))
            .collect();
        candidates.sort();
        let mut chosen = None;
        for (_, load, w) in candidates {
            let Some(wd) = g.worker(w) else { continue };
            if load >= wd.max_builds as usize
                || q.running
                    .values()
                    .any(|r| r.worker == *w && r.builder == builder.name)
                || in_downtime(&wd.downtime, now)
                || (wd.latent.is_some()
                    && !shared.latent.can_take(&g, w, conns.contains(w), now_inst))
            {
                continue;
            }
            if let Some(locks) = q.take_locks(&builder.locks, &g, w) {
                if let Some(l) = &wd.latent {
                    shared.latent.claim(w, l);
                }
                chosen = Some((w.clone(), locks));
                break;
            }
        }
        let Some((worker, locks)) = chosen else {
            blocked.insert(builder.name.clone());
            continue;
        };
        let mut ids = vec![id];
        if builder.collapse_requests && from_changes(&g, &set) {
            // The newest of the group runs (its revision is the latest);
            // the build names it first, and the others collapse into it.
            let mut group: Vec<(Millis, u64)> = q
                .pending
                .values()
                .filter(|e| {
                    e.req.builder == builder.name
                        && (e.req.id == id || collapsible(&g, &set, &e.set))
                })
                .map(|e| (e.req.submitted_at, e.req.id))
                .collect();
            if group.len() > 1 {
                group.sort_unstable_by(|a, b| b.cmp(a));
                ids = group.into_iter().map(|(_, i)| i).collect();
            }
        }
        let entries: Vec<Entry> = ids.iter().filter_map(|i| q.pending.remove(i)).collect();
        let slot = shared.next_id();
        let (cancel, _) = watch::channel(false);
        q.running.insert(
            slot,
            Running {
                build_id: None,
                number: 0,
                builder: builder.name.clone(),
                worker: worker.clone(),
                started_at: now,
                cancel,
                step: None,
                requests: ids.clone(),
                locks,
            },
        );
        if g.worker(&worker)
            .is_none_or(|wd| q.running_on(&worker) >= wd.max_builds as usize)
        {
            open.retain(|w| **w != worker);
        }
        out.push(Decision {
            slot,
            builder: Arc::new(builder.clone()),
            worker,
            entries,
        });
    }
    out
}

/// The first pause after the store failed to start a build, and the
/// longest: while the disk is full, a free worker with pending requests
/// would otherwise try again at once, thousands of times a second.
const START_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const START_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The assignment loop's back-off while the store cannot start builds
/// (an I/O error, data it cannot read; not a conflict, which is about one
/// request): after a failure the loop starts nothing for 100 ms, then
/// twice as long after each failed try, up to 5 s; a start that succeeds
/// ends it. Shared by the loop and the start tasks it spawns.
#[derive(Debug, Default)]
struct StartBackoff {
    /// The pause of the current step; zero while starts succeed.
    pause: Duration,
    /// The end of the current step's pause.
    until: Option<Instant>,
    /// Failed starts since the last one that succeeded.
    failures: u64,
}

/// A new back-off step: what to log (once per step, not per try).
#[derive(Debug, PartialEq, Eq)]
struct BackoffStep {
    pause: Duration,
    failures: u64,
}

impl StartBackoff {
    /// A start failed at `now`. A new step (the pause doubled) when the
    /// last one is over; `None` when the failure falls within the current
    /// pause (a start decided with the one that failed first): the step
    /// counts it already.
    fn failed(&mut self, now: Instant) -> Option<BackoffStep> {
        self.failures += 1;
        if self.until.is_some_and(|u| now < u) {
            return None;
        }
        self.pause = if self.pause.is_zero() {
            START_BACKOFF_FIRST
        } else {
            (self.pause * 2).min(START_BACKOFF_MAX)
        };
        self.until = Some(now + self.pause);
        Some(BackoffStep {
            pause: self.pause,
            failures: self.failures,
        })
    }

    /// A start succeeded: the back-off is over. Returns how many starts
    /// failed before it (0 when none did).
    fn succeeded(&mut self) -> u64 {
        self.pause = Duration::ZERO;
        self.until = None;
        std::mem::take(&mut self.failures)
    }

    /// Until when the loop starts nothing, if it is backing off at `now`.
    fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| now < *u)
    }
}

fn lock_backoff(b: &Mutex<StartBackoff>) -> std::sync::MutexGuard<'_, StartBackoff> {
    // Plain data, consistent after every method: a panic elsewhere while
    // it was held leaves nothing half-written.
    b.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn assign_loop(shared: Arc<Shared>) {
    let backoff = Arc::new(Mutex::new(StartBackoff::default()));
    loop {
        // The store failed to start a build: nothing starts until the
        // pause ends (wake-ups meanwhile only bring the loop back here).
        let paused = lock_backoff(&backoff).paused_until(Instant::now());
        if let Some(until) = paused {
            if shared.is_shutting_down() {
                return;
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            continue;
        }
        // Each start is a durable commit: started side by side, the store
        // commits them together (group commit) instead of one after another.
        for d in decide(&shared) {
            let s = shared.clone();
            let b = backoff.clone();
            tokio::spawn(async move { start(&s, d, &b).await });
        }
        if shared.is_shutting_down() {
            return;
        }
        // Downtime windows end without any event: look again now and then.
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}

async fn start(shared: &Arc<Shared>, d: Decision, backoff: &Mutex<StartBackoff>) {
    let g = shared.graph();
    let requests: Vec<u64> = d.entries.iter().map(|e| e.req.id).collect();
    let set = d.entries[0].set.clone();
    let props_base = super::properties::initial_properties(&g, &d.builder.name, &d.worker, 0, &set);
    let nb = NewBuild {
        builder: d.builder.name.clone(),
        builder_hash: d.builder.hash.clone(),
        worker: d.worker.clone(),
        requests: requests.clone(),
        properties: props_base,
        started_at: now_ms(),
    };
    match shared.db(move |s| s.start_build(nb)).await {
        Ok(build) => {
            let failed = lock_backoff(backoff).succeeded();
            if failed > 0 {
                tracing::warn!(failed_tries = failed, "the store starts builds again");
            }
            // For `bbc bench run` (request → start latency in µs, finer
            // than the store's ms); off unless BBC_LOG enables `bbc_timing`.
            tracing::debug!(
                target: "bbc_timing",
                build = build.id,
                requests = ?requests,
                at_us = wall_us(),
                "build started"
            );
            let cancel_rx = match shared.queue.lock() {
                Ok(mut q) => q.started(d.slot, build.id, build.number),
                Err(_) => None,
            };
            let Some(cancel_rx) = cancel_rx else {
                return;
            };
            shared.metrics.build_started(
                &build.build.builder,
                build.build.started_at,
                d.entries.iter().map(|e| e.req.submitted_at),
            );
            tracing::info!(
                builder = %build.build.builder,
                number = build.number,
                build_id = build.id,
                worker = %build.build.worker,
                "build started"
            );
            let conn = shared
                .workers
                .lock()
                .ok()
                .and_then(|w| w.get(&d.worker).cloned());
            shared
                .reporters
                .publish(crate::state::events::Phase::Started, &build, &set);
            let s = shared.clone();
            tokio::spawn(async move {
                super::build::run(s, d.slot, build, d.builder, set, conn, cancel_rx).await;
            });
        }
        Err(e) => {
            // Conflict: a request was cancelled meanwhile. Anything else is
            // a store failure; the requests stay pending for a later try.
            // The loop backs off (and says so once per step, not per try).
            if !matches!(e, StoreError::Conflict(_)) {
                let step = lock_backoff(backoff).failed(Instant::now());
                match step {
                    Some(BackoffStep { pause, failures: 1 }) => tracing::error!(
                        "cannot start a build of {}: {e}; starting no builds for {} ms, then \
                         trying again less and less often (up to every {} s) until the store \
                         takes one",
                        d.builder.name,
                        pause.as_millis(),
                        START_BACKOFF_MAX.as_secs()
                    ),
                    Some(BackoffStep { pause, failures }) => tracing::warn!(
                        "still cannot start a build of {} ({failures} failed tries): {e}; next \
                         try in {} ms",
                        d.builder.name,
                        pause.as_millis()
                    ),
                    None => {}
                }
            }
            // On a conflict, the requests still pending (a collapsed build
            // may have met one cancelled request among several) go back to
            // the queue; the cancelled ones stay out.
            let still: Vec<bool> = if matches!(e, StoreError::Conflict(_)) {
                let ids: Vec<u64> = d.entries.iter().map(|en| en.req.id).collect();
                shared
                    .db(move |s| still_pending(s, &ids))
                    .await
                    .unwrap_or_default()
            } else {
                vec![true; d.entries.len()]
            };
            let back = d
                .entries
                .into_iter()
                .zip(still)
                .filter_map(|(en, keep)| keep.then_some(en));
            // The slot (and its locks) is free again.
            update(shared, |q| q.abandon(d.slot, back)).send(shared);
        }
    }
}

/// For each request, whether it is still pending (after a start that
/// conflicted because one of them was cancelled meanwhile).
fn still_pending(store: &dyn crate::store::Store, ids: &[u64]) -> crate::store::Result<Vec<bool>> {
    ids.iter()
        .map(|id| {
            Ok(store
                .request(*id)?
                .is_some_and(|r| r.state == crate::store::RequestState::Pending))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{still_pending, BackoffStep, StartBackoff, START_BACKOFF_FIRST, START_BACKOFF_MAX};
    use crate::state::queue::{HeldLocks, Queue, Wake};
    use crate::store::conformance::TempDir;
    use crate::store::{NewBuild, NewBuildSet, RedbStore, Store, StoreError};

    /// A build set of scheduler `s` with no source, changes or properties.
    fn new_set() -> NewBuildSet {
        NewBuildSet {
            priority: 0,
            scheduler: "s".into(),
            reason: "r".into(),
            source: Default::default(),
            sources: Vec::new(),
            changes: vec![],
            properties: Default::default(),
            parent_build: None,
            submitted_at: 0,
        }
    }

    #[test]
    fn collapsed_start_meeting_a_cancelled_request_keeps_the_others() {
        let dir = TempDir::new();
        let store = RedbStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let b = vec![("b".to_string(), 0i64)];
        let (_, r1) = store
            .add_buildset(new_set(), &b)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, r2) = store
            .add_buildset(new_set(), &b)
            .unwrap_or_else(|e| panic!("{e}"));
        let (r1, r2) = (r1[0].id, r2[0].id);
        // Cancelled between the queue's decision and the start.
        assert!(store
            .cancel_request(r1, 1)
            .unwrap_or_else(|e| panic!("{e}")));
        let start = store.start_build(NewBuild {
            builder: "b".into(),
            builder_hash: "h".into(),
            worker: "w".into(),
            requests: vec![r1, r2],
            properties: Default::default(),
            started_at: 2,
        });
        assert!(matches!(start, Err(StoreError::Conflict(_))), "{start:?}");
        // The conflict took nothing: r2 is still pending and goes back to
        // the queue; r1 stays out.
        let still = still_pending(&store, &[r1, r2]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(still, vec![false, true]);
    }

    #[test]
    fn pending_requests_follow_the_shared_store_but_not_a_starting_slot() {
        use crate::state::queue::Running;
        use crate::store::{BuildRequest, BuildSet, RequestState};
        use std::sync::Arc;
        let set = Arc::new(BuildSet {
            id: 1,
            set: new_set(),
            result: None,
            completed_at: None,
        });
        let req = |id: u64| BuildRequest {
            id,
            buildset: 1,
            builder: "b".into(),
            priority: 0,
            request_priority: 0,
            submitted_at: 0,
            state: RequestState::Pending,
            build: None,
            result: None,
            completed_at: None,
            collapsed_into: None,
        };
        let mut q = Queue::default();
        q.add(req(1), set.clone());
        q.add(req(2), set.clone());
        // Request 3 left `pending` for a slot of this master, which is
        // starting it; the store still says pending.
        q.running.insert(
            9,
            Running {
                build_id: None,
                number: 0,
                builder: "b".into(),
                worker: "w".into(),
                started_at: 0,
                cancel: tokio::sync::watch::channel(false).0,
                step: None,
                requests: vec![3],
                locks: HeldLocks::default(),
            },
        );
        // The store: 2 still pending, 1 claimed or cancelled elsewhere,
        // 4 added by another master, 3 this master's slot has.
        let w = q.sync_pending(vec![
            (req(2), set.clone()),
            (req(3), set.clone()),
            (req(4), set.clone()),
        ]);
        assert!(w.assign, "{w:?}");
        let ids: Vec<u64> = q.pending().map(|e| e.req.id).collect();
        assert_eq!(ids, vec![2, 4]);
        // Nothing new: nothing to wake.
        let w = q.sync_pending(vec![(req(2), set.clone()), (req(4), set)]);
        assert_eq!(w, Wake::default());
        let _ = q.end(9);
    }

    #[test]
    fn queue_changes_say_what_they_wake() {
        let mut q = Queue::default();
        // Nothing released, nothing added: nobody to wake.
        assert_eq!(q.release(HeldLocks::default()), Wake::default());
        assert_eq!(q.add_all([]), Wake::default());
        // A build's end: the loop looks for the free slot, build-end
        // waiters look at the store (no locks were held).
        let end = q.end(1);
        assert!(end.assign && end.builds && !end.locks, "{end:?}");
        // Merged wakes keep every part.
        let both = Wake {
            locks: true,
            ..Wake::default()
        }
        .and(end);
        assert!(both.assign && both.builds && both.locks, "{both:?}");
    }

    #[test]
    fn store_failures_back_off_doubling_up_to_the_limit_and_reset_on_success() {
        use std::time::Duration;
        use tokio::time::Instant;
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut b = StartBackoff::default();
        assert_eq!(b.paused_until(t0), None);
        // The first failure: a pause of 100 ms, logged.
        assert_eq!(
            b.failed(t0),
            Some(BackoffStep {
                pause: START_BACKOFF_FIRST,
                failures: 1
            })
        );
        assert_eq!(b.paused_until(t0), Some(t0 + START_BACKOFF_FIRST));
        // Starts decided together fail within that pause: counted, no new
        // step, nothing to log.
        assert_eq!(b.failed(t0 + ms(1)), None);
        assert_eq!(b.paused_until(t0 + ms(1)), Some(t0 + START_BACKOFF_FIRST));
        // The pause is over: the loop tries again.
        assert_eq!(b.paused_until(t0 + START_BACKOFF_FIRST), None);
        // Each later failure doubles the pause…
        let mut now = t0 + START_BACKOFF_FIRST;
        let mut pauses = Vec::new();
        for _ in 0..9 {
            let step = b
                .failed(now)
                .unwrap_or_else(|| panic!("a new step at {now:?}"));
            pauses.push(step.pause.as_millis());
            now += step.pause;
        }
        // …up to 5 s.
        assert_eq!(
            pauses,
            [200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000],
            "{b:?}"
        );
        assert_eq!(START_BACKOFF_MAX, ms(5000));
        // One start that succeeds ends it, saying how many failed.
        b.failed(now);
        assert_eq!(b.succeeded(), 12);
        assert_eq!(b.paused_until(now), None);
        assert_eq!(b.succeeded(), 0);
        // The next failure starts over at 100 ms.
        assert_eq!(
            b.failed(now),
            Some(BackoffStep {
                pause: START_BACKOFF_FIRST,
                failures: 1
            })
        );
    }

    #[test]
    fn collapsing_compares_every_codebase() {
        use super::same_codebases;
        use crate::store::{BuildSet, SourceStamp};
        let st = |cb: &str, branch: &str, rev: &str| SourceStamp {
            codebase: cb.into(),
            repository: format!("https://example.org/{cb}.git"),
            branch: branch.into(),
            revision: rev.into(),
        };
        let set = |stamps: Vec<SourceStamp>| BuildSet {
            id: 1,
            set: NewBuildSet {
                source: stamps[0].clone(),
                sources: stamps,
                changes: vec![1],
                ..new_set()
            },
            result: None,
            completed_at: None,
        };
        // Other revisions, listed in another order: one build.
        assert!(same_codebases(
            &set(vec![st("app", "main", "a1"), st("lib", "main", "")]),
            &set(vec![st("lib", "main", "l2"), st("app", "main", "a2")])
        ));
        // One codebase on another branch, or one codebase more: not.
        assert!(!same_codebases(
            &set(vec![st("app", "main", ""), st("lib", "main", "")]),
            &set(vec![st("app", "main", ""), st("lib", "dev", "")])
        ));
        assert!(!same_codebases(
            &set(vec![st("app", "main", "")]),
            &set(vec![st("app", "main", ""), st("lib", "main", "")])
        ));
        // A set stored before codebases (no `sources`) is one stamp of
        // codebase "".
        let mut old = set(vec![st("", "main", "x")]);
        old.set.sources.clear();
        assert!(same_codebases(&old, &set(vec![st("", "main", "y")])));
        assert!(!same_codebases(&old, &set(vec![st("app", "main", "y")])));
    }
}
