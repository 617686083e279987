//! Reports configured workers that stay away longer than their
//! `missing-timeout`: one timer task per master, which computes every
//! worker's deadline and sleeps until the next one, woken earlier when a
//! worker connects or disconnects ([`Shared::workers_changed`]) or a config
//! is applied ([`Shared::configs`]).
//!
//! A worker counts as away from its disconnection, or from when the master
//! started (or the config added it) if it never connected since. Past its
//! deadline it is logged once (WARN) and listed in [`Shared::missing`]
//! (`missing: true` in `GET /api/v1/workers`); when it connects again, one
//! INFO line and the mark goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::state::{now_ms, ConfigEvent, Shared};
use crate::store::Millis;

pub(crate) fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    // Subscribed before the task starts, so that no apply is missed.
    let mut configs = shared.configs.subscribe();
    tokio::spawn(async move {
        // Since when each configured, unconnected worker has been away.
        let mut away: BTreeMap<String, Millis> = BTreeMap::new();
        let mut applied: Option<Arc<ConfigEvent>> = None;
        loop {
            // Registered before looking, so that a (dis)connection between
            // the look and the wait still wakes us.
            let changed = shared.workers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = check(&shared, &mut away, now_ms());
            // The check above ran on the applied graph (swapped before the
            // event is sent).
            if let Some(ev) = applied.take() {
                ev.reconciled();
            }
            let sleep = async {
                match next {
                    // One more millisecond: the wall clock and tokio's
                    // timer may round differently; an early wake only
                    // re-checks.
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms + 1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = sleep => {}
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

/// Updates the away times and the missing marks at `now`; returns in how
/// many milliseconds the next worker becomes missing, if one can.
fn check(shared: &Shared, away: &mut BTreeMap<String, Millis>, now: Millis) -> Option<u64> {
    let g = shared.graph();
    let connected: BTreeSet<String> = shared
        .workers
        .lock()
        .map(|w| {
            w.iter()
                .filter(|(_, c)| !c.is_closed())
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    let Ok(mut missing) = shared.missing.lock() else {
        return None;
    };
    // Workers the config removed are no longer watched.
    away.retain(|n, _| g.worker(n).is_some());
    missing.retain(|n, _| g.worker(n).is_some());
    let mut next: Option<u64> = None;
    for w in &g.workers {
        // A latent worker is away by design while stopped: never missing
        // (a start that fails says so in its builds and the log).
        if connected.contains(&w.name) || w.latent.is_some() {
            away.remove(&w.name);
            // Logged before the mark changes (under the lock), so that a
            // client that sees the change finds the line already there.
            if let Some(&since) = missing.get(&w.name) {
                tracing::info!(
                    worker = %w.name,
                    "worker {} is back after being missing for {}",
                    w.name,
                    human(now - since)
                );
                missing.remove(&w.name);
            }
            continue;
        }
        let since = *away.entry(w.name.clone()).or_insert(now);
        let timeout = i64::try_from(w.missing_timeout_ms).unwrap_or(i64::MAX);
        let deadline = since.saturating_add(timeout);
        if now >= deadline {
            if !missing.contains_key(&w.name) {
                tracing::warn!(
                    worker = %w.name,
                    "worker {} has been missing for {} (its missing-timeout is {})",
                    w.name,
                    human(now - since),
                    human(timeout)
                );
                missing.insert(w.name.clone(), since);
            }
        } else {
            // A config that raised the timeout of a worker marked missing.
            if missing.contains_key(&w.name) {
                tracing::info!(
                    worker = %w.name,
                    "worker {} is no longer reported missing: its missing-timeout is now {}",
                    w.name,
                    human(timeout)
                );
                missing.remove(&w.name);
            }
            let left = (deadline - now) as u64;
            next = Some(next.map_or(left, |n| n.min(left)));
        }
    }
    next
}

/// A duration for a log line: "1h 2m", "3m 4s", "5s", "250ms".
fn human(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(-5), "0ms");
        assert_eq!(human(250), "250ms");
        assert_eq!(human(1_500), "1s");
        assert_eq!(human(125_000), "2m 5s");
        assert_eq!(human(3_725_000), "1h 2m");
    }
}
