//! The latent-worker service (docs/latent-workers.md): starts a latent
//! worker when the assignment loop gave it a build (a [`StartOrder`] from
//! `state/latent.rs`), waits for it to connect, and stops it once it has
//! been idle for its `idle` time, when it died, or when a config removed
//! it; at shutdown it stops them all.
//!
//! A start that fails ends the builds waiting for it as retry with the
//! reason (they watch the book's phase), is logged, and the worker waits
//! for a back-off before the next start.

mod command;
mod docker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bbc_graph::{Latent, LatentKind};
use sha2::Digest;

use crate::state::latent::StartOrder;
use crate::state::Shared;

/// How long a stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How often idle workers are looked at when nothing else wakes the
/// service (a build's end or a worker's coming and going do).
const RECHECK: Duration = Duration::from_secs(60);

pub(crate) fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let orders = shared.latent.take_orders();
    tokio::spawn(async move {
        let Some(mut orders) = orders else {
            return;
        };
        loop {
            let finished = shared.build_finished.notified();
            let changed = shared.workers_changed.notified();
            tokio::pin!(finished, changed);
            // Registered before the pass looks, so an end during it counts.
            finished.as_mut().enable();
            changed.as_mut().enable();
            let next = idle_pass(&shared);
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(RECHECK)
                .min(RECHECK);
            tokio::select! {
                order = orders.recv() => match order {
                    Some(o) => {
                        let h = tokio::spawn(start(shared.clone(), o));
                        shared.track(h);
                    }
                    None => return,
                },
                _ = &mut finished => {}
                _ = &mut changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// Stops the latent workers that are due: idle long enough, died, or no
/// longer configured as latent. Returns when the next one is due.
fn idle_pass(shared: &Arc<Shared>) -> Option<Instant> {
    let g = shared.graph();
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    for name in shared.latent.up_names() {
        let connected = shared
            .workers
            .lock()
            .map(|w| w.get(&name).is_some_and(|c| !c.is_closed()))
            .unwrap_or(false);
        // Under the queue's lock: the assignment loop cannot give it a
        // build between the look at its builds and the mark "stopping".
        let due = match shared.queue.lock() {
            Ok(q) => shared
                .latent
                .idle_check(&g, &name, q.running_on(&name), connected, now),
            Err(_) => continue,
        };
        match due {
            Ok((def, why)) => {
                let h = tokio::spawn(stop(shared.clone(), name, def, why));
                shared.track(h);
            }
            Err(Some(at)) => next = Some(next.map_or(at, |n| n.min(at))),
            Err(None) => {}
        }
    }
    next
}

/// The container of latent worker `worker`: one name per master (its
/// state directory) and worker, so that two masters on one engine never
/// take each other's, and a master's restart finds the one it left.
fn container_name(shared: &Shared, worker: &str) -> String {
    let dir = shared.state_dir.to_string_lossy();
    let h = sha2::Sha256::digest(dir.as_bytes());
    let tag: String = h[..4].iter().map(|b| format!("{b:02x}")).collect();
    let clean: String = worker
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("bbc-{clean}-{tag}")
}

/// Where a started worker connects: `connect=`, else the worker
/// listener's address (`127.0.0.1` for an unspecified host).
fn master_address(shared: &Shared, def: &Latent) -> String {
    if let Some(a) = &def.connect {
        return a.clone();
    }
    let mut a = shared.latent.worker_addr;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    a.to_string()
}

async fn start(shared: Arc<Shared>, o: StartOrder) {
    let timeout = Duration::from_millis(o.def.start_timeout_ms);
    let master = master_address(&shared, &o.def);
    let started = match &o.def.kind {
        LatentKind::Docker { image } => {
            let c = container_name(&shared, &o.worker);
            docker::start(&c, &o.worker, image, &master, &o.token)
                .await
                .map(Some)
        }
        LatentKind::Command { start, .. } => {
            let env = [
                ("BBC_WORKER_NAME", o.worker.as_str()),
                ("BBC_MASTER", master.as_str()),
                ("BBC_WORKER_PASSWORD", o.token.as_str()),
            ];
            command::run(&shared.state_dir, &o.worker, "start", start, &env, timeout)
                .await
                .map(|()| None)
        }
    };
    let result = match started {
        Err(why) => Err(why),
        Ok(container) => connected(&shared, &o.worker, timeout, container).await,
    };
    match result {
        Ok(()) => {
            let took = shared.latent.up(&o.worker).unwrap_or_default();
            tracing::info!(
                worker = %o.worker,
                ms = took.as_millis() as u64,
                "latent worker started"
            );
            // Builds waiting for it go on; requests may start on it.
            shared.wake.notify_one();
        }
        Err(why) => {
            let why = format!("latent worker `{}` did not start: {why}", o.worker);
            // Whatever half-started goes (a container, a VM).
            if let Err(e) = stop_with(&shared, &o.worker, &o.def).await {
                tracing::debug!(worker = %o.worker, "cleaning up after a failed start: {e}");
            }
            let (at, failures) = shared.latent.failed(&o.worker, why.clone());
            let pause = at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .div_ceil(1000);
            // Once, then at 2, 4, 8 … failures in a row: a broken image
            // does not fill the log.
            if failures.is_power_of_two() {
                tracing::warn!(
                    worker = %o.worker,
                    failures,
                    "{why}; its builds end as retry, the next start in {pause} s at the earliest"
                );
            }
            let s = shared.clone();
            let h = tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                s.wake.notify_one();
            });
            shared.track(h);
        }
    }
}

/// Waits until `worker` has connected, at most `timeout`; a container
/// that exits meanwhile ends the wait with how it exited.
async fn connected(
    shared: &Shared,
    worker: &str,
    timeout: Duration,
    container: Option<String>,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let exited = async {
        match &container {
            Some(id) => docker::exited(id).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(exited);
    loop {
        let changed = shared.workers_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let up = shared
            .workers
            .lock()
            .map(|w| w.get(worker).is_some_and(|c| !c.is_closed()))
            .unwrap_or(false);
        if up {
            return Ok(());
        }
        tokio::select! {
            _ = &mut changed => {}
            why = &mut exited => return Err(why),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "its worker did not connect within {} s",
                    timeout.as_secs()
                ))
            }
        }
    }
}

async fn stop(shared: Arc<Shared>, worker: String, def: Latent, why: String) {
    tracing::info!(worker = %worker, "stopping the latent worker: {why}");
    if let Err(e) = stop_with(&shared, &worker, &def).await {
        tracing::warn!(worker = %worker, "stopping the latent worker failed: {e}");
    }
    // Still connected (a stop command that left it running): it takes no
    // more builds under a password that no longer admits it.
    let conn = shared
        .workers
        .lock()
        .ok()
        .and_then(|w| w.get(&worker).cloned());
    if let Some(c) = conn {
        c.disconnect(format!("latent worker `{worker}` was stopped: {why}"));
    }
    shared.latent.stopped(&worker);
    // Requests may be waiting for it to start again.
    shared.wake.notify_one();
}

async fn stop_with(shared: &Shared, worker: &str, def: &Latent) -> Result<(), String> {
    match &def.kind {
        LatentKind::Docker { .. } => docker::remove(&container_name(shared, worker)).await,
        LatentKind::Command { stop, .. } => {
            let master = master_address(shared, def);
            let env = [("BBC_WORKER_NAME", worker), ("BBC_MASTER", master.as_str())];
            command::run(&shared.state_dir, worker, "stop", stop, &env, STOP_TIMEOUT).await
        }
    }
}

/// Stops every latent worker that is up or starting (the master is
/// stopping), all at once.
pub(crate) async fn stop_all(shared: &Arc<Shared>) {
    let running = shared.latent.stop_all();
    // Those already stopping too: a stop under way in a task the shutdown
    // is about to abort would be left half done (a removal is idempotent).
    let stops = running.into_iter().filter_map(|(name, def)| {
        let def = def?;
        let s = shared.clone();
        Some(async move {
            if let Err(e) = stop_with(&s, &name, &def).await {
                tracing::warn!(worker = %name, "stopping the latent worker failed: {e}");
            }
            s.latent.stopped(&name);
        })
    });
    futures_util::future::join_all(stops).await;
}
