//! The loop that assigns pending requests to workers and starts their
//! builds (the queue's book-keeping itself is `state/queue.rs`).
//!
//! Assignment rules (Buildbot's, made explicit):
//! - requests go by builder priority (higher first), then age;
//! - a worker runs at most `max-builds` builds, and at most one build of a
//!   given builder (each builder has its own directory there);
//! - a worker in a downtime window takes no new builds;
//! - a builder's locks must all be free for the build to start;
//! - with `collapse-requests`, every pending request of the builder for the
//!   same source (repository, branch, revision) is satisfied by one build.

use std::sync::Arc;

use bbc_graph::Builder;
use tokio::sync::watch;

use crate::state::queue::{in_downtime, update, Entry, Running};
use crate::state::{now_ms, Shared};
use crate::store::{Millis, NewBuild, StoreError};

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
    if open.is_empty() || q.pending.is_empty() {
        return Vec::new();
    }
    let mut order: Vec<(i64, Millis, u64)> = q
        .pending
        .values()
        .map(|e| (-e.req.priority, e.req.submitted_at, e.req.id))
        .collect();
    order.sort_unstable();
    // Builders found unable to start in this pass: their later requests
    // cannot start either (this pass only takes slots and locks).
    let mut blocked: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, _, id) in order {
        if open.is_empty() {
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
        let src = entry.set.set.source.clone();
        // Least busy eligible worker first, then by name.
        let mut candidates: Vec<(usize, &String)> = builder
            .workers
            .iter()
            .filter(|w| conns.contains(w))
            .map(|w| (q.running_on(w), w))
            .collect();
        candidates.sort();
        let mut chosen = None;
        for (load, w) in candidates {
            let Some(wd) = g.worker(w) else { continue };
            if load >= wd.max_builds as usize
                || q.running
                    .values()
                    .any(|r| r.worker == *w && r.builder == builder.name)
                || in_downtime(&wd.downtime, now)
            {
                continue;
            }
            if let Some(locks) = q.take_locks(&builder.locks, &g, w) {
                chosen = Some((w.clone(), locks));
                break;
            }
        }
        let Some((worker, locks)) = chosen else {
            blocked.insert(builder.name.clone());
            continue;
        };
        let mut ids = vec![id];
        if builder.collapse_requests {
            ids.extend(
                q.pending
                    .values()
                    .filter(|e| {
                        e.req.id != id && e.req.builder == builder.name && e.set.set.source == src
                    })
                    .map(|e| e.req.id),
            );
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

pub async fn assign_loop(shared: Arc<Shared>) {
    loop {
        // Each start is a durable commit: started side by side, the store
        // commits them together (group commit) instead of one after another.
        for d in decide(&shared) {
            let s = shared.clone();
            tokio::spawn(async move { start(&s, d).await });
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

async fn start(shared: &Arc<Shared>, d: Decision) {
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
            if !matches!(e, StoreError::Conflict(_)) {
                tracing::error!("cannot start a build of {}: {e}", d.builder.name);
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
    use super::still_pending;
    use crate::state::queue::{HeldLocks, Queue, Wake};
    use crate::store::conformance::TempDir;
    use crate::store::{NewBuild, NewBuildSet, RedbStore, Store, StoreError};

    #[test]
    fn collapsed_start_meeting_a_cancelled_request_keeps_the_others() {
        let dir = TempDir::new();
        let store = RedbStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let set = || NewBuildSet {
            scheduler: "s".into(),
            reason: "test".into(),
            source: Default::default(),
            changes: vec![],
            properties: Default::default(),
            parent_build: None,
            submitted_at: 0,
        };
        let b = vec![("b".to_string(), 0i64)];
        let (_, r1) = store
            .add_buildset(set(), &b)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, r2) = store
            .add_buildset(set(), &b)
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
}
