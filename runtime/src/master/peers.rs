//! Several masters on one store (PostgreSQL; docs/store.md, "Several
//! masters"): this master's heartbeat, the take-over of masters whose
//! lease expired, the named leases, and its queue kept in step with the
//! requests the others add, claim, cancel or put back.
//!
//! Tasks started only when the store is shared:
//! - the heartbeat, every `LeaseTimes::heartbeat_ms`: renews this
//!   master's row (found gone: it was taken for dead, so its builds were
//!   interrupted in the store and it cancels them here) and takes or
//!   renews the schedulers' lease ([`Store::renew`], apart from the
//!   ordinary store calls, so a backlog cannot delay it);
//! - the take-overs, on the same beat: from dead masters
//!   ([`Store::take_over`], apart too);
//! - the listener: each notice of another master's work (LISTEN/NOTIFY,
//!   [`Store::notices`]) makes the queue read the pending requests again
//!   ([`Queue::sync_pending`]), as does a timer every [`RESYNC`], in case a
//!   notice was missed; a build set stored by another master is handed to
//!   this master's own subscribers (the dependent schedulers, the event
//!   stream), and a shared config wakes the follower
//!   (`master::apply::shared_config`), a task of its own.
//!
//! Builds taken over from a dead master end here as interrupted: this
//! master, the one that took them over (exactly one does), tells its
//! reporters, so a build that started on a master that died is reported
//! once as ended.
//!
//! [`Store::take_over`]: crate::store::Store::take_over
//! [`Store::renew`]: crate::store::Store::renew
//! [`Store::notices`]: crate::store::Store::notices
//! [`Queue::sync_pending`]: crate::state::queue::Queue::sync_pending

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::state::peers::SCHEDULERS;
use crate::state::queue::update;
use crate::state::{now_ms, Shared};
use crate::store::lease::renewal_bound;
use crate::store::{BuildRequest, BuildSet, Notice, Store};

/// The queue reads the pending requests again at least this often, even
/// without a notice.
pub const RESYNC: Duration = Duration::from_secs(5);
/// At most one re-read per this much time while notices pour in (each
/// started build sends one): the ones in between are folded into the next.
const FOLD: Duration = Duration::from_millis(50);

/// Every pending request with its build set, oldest first (the queue at
/// start, and each re-read). The sets in `known` (the queue's) are not
/// read again; the others are read in one call, however many: with a
/// backlog, a re-read is two round trips, not one per request.
pub fn load_pending(
    store: &dyn Store,
    mut known: HashMap<u64, Arc<BuildSet>>,
) -> crate::store::Result<Vec<(BuildRequest, Arc<BuildSet>)>> {
    let reqs = store.pending_requests()?;
    let mut missing: Vec<u64> = reqs
        .iter()
        .map(|r| r.buildset)
        .filter(|id| !known.contains_key(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        for s in store.buildsets(&missing)? {
            known.insert(s.id, Arc::new(s));
        }
    }
    // A request whose set is missing is not queued (as before: nothing
    // could run it).
    Ok(reqs
        .into_iter()
        .filter_map(|r| known.get(&r.buildset).cloned().map(|s| (r, s)))
        .collect())
}

pub(crate) fn spawn(shared: Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(rx) = shared.store.notices() else {
        return Vec::new();
    };
    if shared.peers.me.is_none() {
        return Vec::new();
    }
    vec![
        tokio::spawn(heartbeat(shared.clone())),
        tokio::spawn(take_overs(shared.clone())),
        super::apply::shared_config::spawn_follower(shared.clone()),
        tokio::spawn(listen(shared, rx)),
    ]
}

/// Renews this master's lease and the schedulers' lease every heartbeat,
/// through [`Store::renew`]: not through `Shared::db`, whose blocking
/// threads and pooled connections a backlog fills, and waiting for nothing
/// else (what a renewal finds that takes time is spawned), so that a
/// renewal ends within [`renewal_bound`] of its start and the master
/// stops acting as a holder before the lease it renewed last expires.
///
/// [`Store::renew`]: crate::store::Store::renew
async fn heartbeat(shared: Arc<Shared>) {
    let times = shared.peers.times;
    let bound = Duration::from_millis(renewal_bound(times.lease_ms) as u64);
    let mut tick = tokio::time::interval(Duration::from_millis(times.heartbeat_ms as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if shared.is_shutting_down() {
            return;
        }
        let now = now_ms();
        let lease = times.lease_ms;
        // The store bounds the call itself; this bound also covers a store
        // whose task never answers.
        let r = match tokio::time::timeout(bound, shared.store.renew(now, lease, &[SCHEDULERS]))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(crate::store::StoreError::Io(format!(
                "the renewal took longer than {} ms",
                bound.as_millis()
            ))),
        };
        let renewal = match r {
            Ok(x) => x,
            Err(e) => {
                if !failing {
                    tracing::error!(
                        "cannot renew this master's lease in the store: {e}; other masters \
                         take its builds over if this lasts"
                    );
                    failing = true;
                }
                // Without a renewal the lease runs out: stop acting as
                // its holder before another master takes it.
                shared.peers.set_held(SCHEDULERS, false);
                continue;
            }
        };
        if failing {
            tracing::info!("this master's lease is renewed again");
            failing = false;
        }
        if !renewal.alive {
            // Another master took this one for dead and interrupted its
            // builds in the store: they run again elsewhere, so the ones
            // still running here stop.
            tracing::error!(
                "this master's lease had expired and other masters took its builds over; \
                 cancelling the builds still running here"
            );
            if let Ok(q) = shared.queue.lock() {
                for r in q.running() {
                    let _ = r.cancel.send(true);
                }
            }
            // Its row is new: it says again which config this one runs
            // (an ordinary store call: in the background).
            let s = shared.clone();
            tokio::spawn(async move {
                let running = s.config_info().hash.clone();
                if let Err(e) = s.db(move |st| st.report_config(&running, None)).await {
                    tracing::warn!("cannot record this master's config in the store: {e}");
                }
            });
        }
        let sched = renewal.held.first().copied().unwrap_or(false);
        if shared.peers.set_held(SCHEDULERS, sched) {
            if sched {
                tracing::info!("this master runs the schedulers and pollers now");
            } else {
                tracing::warn!("another master runs the schedulers and pollers now");
            }
        }
    }
}

/// Takes over from the masters whose lease expired, every heartbeat
/// ([`Store::take_over`], on its own connection: a dead master with many
/// builds never delays this master's renewals).
///
/// [`Store::take_over`]: crate::store::Store::take_over
async fn take_overs(shared: Arc<Shared>) {
    let times = shared.peers.times;
    let mut tick = tokio::time::interval(Duration::from_millis(times.heartbeat_ms as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if shared.is_shutting_down() {
            return;
        }
        let taken = match shared.store.take_over(now_ms()).await {
            Ok(t) => {
                failing = false;
                t
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot take over from dead masters: {e}");
                    failing = true;
                }
                continue;
            }
        };
        if taken.is_empty() {
            continue;
        }
        // The taken-over builds have ended: the reporters hear it from
        // here (the master that ran them cannot tell), and their logs are
        // compressed like any ended build's, one after another, in the
        // background.
        publish_ended(&shared, &taken).await;
        let s = shared.clone();
        tokio::spawn(async move {
            for id in taken {
                if let Err(e) = s.db(move |st| st.seal_logs(id)).await {
                    tracing::warn!("the logs of build {id} stay uncompressed: {e}");
                }
            }
        });
    }
}

/// Tells this master's reporters that builds `ids`, which it did not run
/// (a dead master did, or the previous incarnation of this one), ended as
/// the store recorded them (interrupted). Only the master that ended them
/// in the store calls this, so each is reported once.
pub(crate) async fn publish_ended(shared: &Arc<Shared>, ids: &[u64]) {
    let ids = ids.to_vec();
    let found = shared
        .db(move |s| {
            let mut out = Vec::new();
            for id in ids {
                let Some(b) = s.build(id)? else { continue };
                let Some(first) = b.build.requests.first().copied() else {
                    continue;
                };
                let Some(r) = s.request(first)? else { continue };
                let Some(set) = s.buildset(r.buildset)? else {
                    continue;
                };
                out.push((b, Arc::new(set)));
            }
            Ok(out)
        })
        .await;
    match found {
        Ok(found) => {
            for (b, set) in found {
                shared
                    .reporters
                    .publish(crate::state::events::Phase::Finished, &b, &set);
            }
        }
        Err(e) => tracing::warn!("cannot tell the reporters about interrupted builds: {e}"),
    }
}

/// Hands build set `id`, stored by another master, to this master's
/// subscribers: the schedulers (a dependent scheduler follows its
/// upstream's sets wherever they were submitted) and the event stream.
async fn set_elsewhere(shared: &Arc<Shared>, id: u64) {
    match shared.db(move |s| s.buildset(id)).await {
        Ok(Some(set)) => {
            let _ = shared.buildsets.send(set);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read build set {id} another master stored: {e}"),
    }
}

/// Cancels build `id` if this master runs it: another master was asked to
/// (`POST /api/v1/builds/{id}/cancel` there) and told every master.
pub(crate) fn cancel_here(shared: &Shared, id: u64) -> bool {
    shared
        .queue
        .lock()
        .map(|q| {
            q.running()
                .find(|r| r.build_id == Some(id))
                .map(|r| r.cancel.send(true).is_ok())
                .is_some()
        })
        .unwrap_or(false)
}

async fn listen(shared: Arc<Shared>, mut rx: tokio::sync::broadcast::Receiver<Notice>) {
    loop {
        let mut resync = false;
        tokio::select! {
            n = rx.recv() => match n {
                Ok(Notice::Requests) => resync = true,
                Ok(Notice::Reconnected) | Err(RecvError::Lagged(_)) => {
                    // Notices may have been missed: a config and changes
                    // too.
                    shared.peers.config_shared.notify_one();
                    shared.peers.changed_elsewhere();
                    resync = true;
                }
                Ok(Notice::Config) => shared.peers.config_shared.notify_one(),
                Ok(Notice::BuildSet(id)) => set_elsewhere(&shared, id).await,
                Ok(Notice::Masters) => {}
                Ok(Notice::Builds) => {
                    shared.build_finished.notify_waiters();
                }
                Ok(Notice::Changes) => shared.peers.changed_elsewhere(),
                Ok(Notice::Cancel(id)) => {
                    cancel_here(&shared, id);
                }
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(RESYNC) => resync = true,
        }
        if shared.is_shutting_down() {
            return;
        }
        if !resync {
            continue;
        }
        // Fold the notices of the next moment into this re-read.
        tokio::time::sleep(FOLD).await;
        loop {
            match rx.try_recv() {
                Ok(Notice::Builds) => shared.build_finished.notify_waiters(),
                Ok(Notice::Changes) => shared.peers.changed_elsewhere(),
                Ok(Notice::Cancel(id)) => {
                    cancel_here(&shared, id);
                }
                Ok(Notice::Config) => shared.peers.config_shared.notify_one(),
                Ok(Notice::BuildSet(id)) => set_elsewhere(&shared, id).await,
                // Notices may have been missed (the re-read below covers
                // the requests).
                Ok(Notice::Reconnected)
                | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {
                    shared.peers.config_shared.notify_one();
                    shared.peers.changed_elsewhere();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let known = shared
            .queue
            .lock()
            .map(|q| q.pending_sets())
            .unwrap_or_default();
        match shared.db(move |s| load_pending(s, known)).await {
            Ok(pending) => {
                let g = shared.graph();
                update(&shared, |q| {
                    let w = q.sync_pending(pending);
                    q.reprioritize(&g);
                    w
                })
                .send(&shared);
            }
            Err(e) => tracing::warn!("cannot read the pending requests again: {e}"),
        }
    }
}
