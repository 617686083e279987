//! The janitor: deletes what `master { retention { … } }` lets go, every
//! `every`, in the background. One task per master, reconciled from
//! config events like every service (a new retention or period applies
//! from the next run; a config without retention stops it). Each run is a
//! task of its own, so a reload is acknowledged at once even while a long
//! run is under way.
//!
//! A run walks the builds oldest first through [`Store::prune`]: each
//! call looks at a few hundred builds in a read snapshot and deletes at
//! most [`LIMIT`] in one short write transaction, on a blocking thread,
//! and the task yields between calls, so builds go on committing while it
//! works. The audit log's old entries (`audit`) go after, oldest first,
//! [`LIMIT`] a transaction too. What a run deleted is logged at INFO.
//!
//! [`Store::prune`]: crate::store::Store::prune

use std::sync::Arc;
use std::time::Duration;

use bbc_graph::Retention;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::state::{now_ms, ConfigEvent, Shared};

/// Builds one write transaction deletes at most: a few milliseconds of
/// redb's write lock, so a build's commit waits no longer than that.
const LIMIT: usize = 200;
/// Builds one call looks at (in a read snapshot, which holds no lock).
const SCAN: usize = 1000;
/// The first run after a start: soon, but not in the middle of it.
const FIRST_RUN: Duration = Duration::from_secs(60);

pub(crate) fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    // Subscribed before the task starts, so that no apply is missed.
    let mut configs = shared.configs.subscribe();
    tokio::spawn(async move {
        let mut applied: Option<Arc<ConfigEvent>> = None;
        // The start, then the end of the last run.
        let mut since = Instant::now();
        let mut ran = false;
        // A run under way, in a task of its own: a reload is acknowledged
        // at once (it applies from the next run), not after a long run.
        let mut running: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let retention = shared.graph().master.retention.clone();
            if let Some(ev) = applied.take() {
                ev.reconciled();
            }
            let due = match (&retention, &running) {
                (Some(r), None) => {
                    let every = Duration::from_millis(r.every_ms.max(1));
                    Some(since + if ran { every } else { every.min(FIRST_RUN) })
                }
                _ => None,
            };
            let sleep = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let done = async {
                match running.as_mut() {
                    Some(h) => {
                        if let Err(e) = h.await {
                            tracing::error!("a retention run failed: {e}");
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    if let Some(r) = retention {
                        running = Some(tokio::spawn(run(shared.clone(), r)));
                    }
                }
                _ = done => {
                    running = None;
                    since = Instant::now();
                    ran = true;
                }
                ev = configs.recv() => match ev {
                    Ok(ev) => applied = Some(ev),
                    // Applies wait for every listener, so none is missed.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    })
}

/// The store's policy at `now`: cutoffs from the ages.
pub(crate) fn policy(r: &Retention, now: crate::store::Millis) -> crate::store::Retention {
    let before = |ms: u64| now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
    crate::store::Retention {
        builds_before: r.builds_ms.map(before),
        logs_before: r.logs_ms.map(before),
        keep_last: r.keep_last,
    }
}

/// The instant before which audit entries go, if they ever do.
pub(crate) fn audit_before(r: &Retention, now: crate::store::Millis) -> Option<i64> {
    r.audit_ms
        .map(|ms| now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// The audit log's part of a run: `LIMIT` entries a transaction until
/// fewer are left; how many went.
async fn prune_audit(shared: &Arc<Shared>, before: i64) -> u64 {
    let mut total = 0;
    loop {
        match shared.db(move |s| s.prune_audit(before, LIMIT)).await {
            Ok(n) => {
                total += n;
                if n < LIMIT as u64 || shared.is_shutting_down() {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!("retention of the audit log stopped early: {e}");
                return total;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// One run: everything the retention lets go now, in small steps.
async fn run(shared: Arc<Shared>, r: Retention) {
    let now = now_ms();
    let policy = policy(&r, now);
    let started = Instant::now();
    let mut total = crate::store::Pruned::default();
    let mut after = 0;
    loop {
        let step = shared
            .db(move |s| s.prune(&policy, now, after, SCAN, LIMIT))
            .await;
        match step {
            Ok(p) => {
                total.scanned += p.scanned;
                total.builds += p.builds;
                total.logs += p.logs;
                total.log_bytes += p.log_bytes;
                match p.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
            Err(e) => {
                // Whatever it deleted so far stays deleted; the next run
                // goes on from the oldest build again.
                tracing::warn!("retention stopped early: {e}");
                break;
            }
        }
        if shared.is_shutting_down() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let audit = match audit_before(&r, now) {
        Some(before) if !shared.is_shutting_down() => prune_audit(&shared, before).await,
        _ => 0,
    };
    tracing::info!(
        builds = total.builds,
        logs = total.logs,
        log_bytes = total.log_bytes,
        audit,
        scanned = total.scanned,
        ms = started.elapsed().as_millis() as u64,
        "retention: deleted {} builds and the logs of {} more ({} bytes of log), and {audit} audit entries",
        total.builds,
        total.logs,
        total.log_bytes
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_become_cutoffs_without_overflow() {
        let r = Retention {
            builds_ms: Some(180 * 86_400_000),
            logs_ms: None,
            keep_last: 20,
            every_ms: 3_600_000,
            audit_ms: None,
        };
        let now = 1_800_000_000_000;
        let p = policy(&r, now);
        assert_eq!(p.builds_before, Some(now - 180 * 86_400_000));
        assert_eq!(p.logs_before, None, "no logs age: kept with their build");
        assert_eq!(p.keep_last, 20);
        // An age beyond the epoch (or beyond i64) keeps everything.
        let r = Retention {
            builds_ms: Some(u64::MAX),
            logs_ms: Some(0),
            ..r
        };
        let p = policy(&r, now);
        assert!(p.builds_before.is_some_and(|t| t < 0));
        assert_eq!(
            p.logs_before,
            Some(now),
            "0s: everything finished before now"
        );
        assert_eq!(audit_before(&r, now), None, "no audit age: kept");
        let r = Retention {
            audit_ms: Some(365 * 86_400_000),
            ..r
        };
        assert_eq!(audit_before(&r, now), Some(now - 365 * 86_400_000));
        let r = Retention {
            audit_ms: Some(u64::MAX),
            ..r
        };
        assert!(audit_before(&r, now).is_some_and(|t| t < 0));
    }
}
