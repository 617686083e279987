//! The configuration in force as every service sees it: what runs, where
//! it came from, the stored history of applied configs, and the event an
//! apply broadcasts so that each service reconciles itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bbc_graph::Graph;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::Sender;
use tokio::sync::Notify;

use crate::store::{Millis, Store};

/// Store state key of the list of applied configs (newest last).
pub const HISTORY_KEY: &str = "config:history";
/// Applied configs remembered in the store.
const HISTORY_MAX: usize = 100;

/// The configuration the master runs, with where it came from.
#[derive(Debug, Clone)]
pub struct ConfigInfo {
    pub graph: Arc<Graph>,
    /// `master::apply::config_hash` of the graph.
    pub hash: String,
    pub applied_at: Millis,
    /// "start", "api" or "sighup".
    pub via: String,
    /// Settings of this config that differ from the ones the master started
    /// with and that only a restart applies.
    pub restart_needed: Vec<String>,
}

/// Broadcast on `Shared::configs` when a config with changes is applied.
/// Every service listening reconciles itself with `graph`, then calls
/// [`ConfigEvent::reconciled`]; the apply answers only once they all did,
/// so a client that sees the answer sees the services on the new config.
#[derive(Debug)]
pub struct ConfigEvent {
    /// The config that ran before.
    pub previous: Arc<Graph>,
    pub graph: Arc<Graph>,
    /// The newest stored change when the config was applied: schedulers
    /// new in this config start after it.
    pub newest_change: u64,
    pub at: Millis,
    reconciled: AtomicUsize,
    wake: Notify,
}

/// How often an apply waiting for the services looks whether one of them
/// went away (a task that ended never says it reconciled).
const RECONCILED_RECHECK: Duration = Duration::from_secs(1);

impl ConfigEvent {
    pub fn new(previous: Arc<Graph>, graph: Arc<Graph>, newest_change: u64, at: Millis) -> Self {
        ConfigEvent {
            previous,
            graph,
            newest_change,
            at,
            reconciled: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// A service runs by this config now.
    pub fn reconciled(&self) {
        self.reconciled.fetch_add(1, Ordering::AcqRel);
        // A stored permit if the apply is not waiting yet: it looks again.
        self.wake.notify_one();
    }

    /// Waits until the `sent_to` listeners the event reached said they
    /// reconciled, or fewer when some have stopped listening since
    /// (a service that ended, the master shutting down).
    pub async fn all_reconciled(&self, configs: &Sender<Arc<ConfigEvent>>, sent_to: usize) {
        loop {
            let listening = configs.receiver_count();
            if self.reconciled.load(Ordering::Acquire) >= sent_to.min(listening) {
                return;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(RECONCILED_RECHECK) => {}
            }
        }
    }
}

/// One entry of the stored history of applied configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedRecord {
    pub hash: String,
    pub applied_at: Millis,
    pub via: String,
}

/// What the master read once at start and keeps until it restarts.
#[derive(Debug, Clone)]
pub struct StartSettings {
    pub worker_listen: String,
    pub http_listen: String,
    pub state_dir: String,
}

impl StartSettings {
    pub fn of(g: &Graph) -> StartSettings {
        StartSettings {
            worker_listen: g.master.worker_listen.clone(),
            http_listen: g.master.http_listen.clone(),
            state_dir: g.master.state_dir.clone(),
        }
    }

    /// The settings `g` changes that need a restart, described.
    pub fn restart_needed(&self, g: &Graph) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |what: &str, started: &str, now: &str| {
            if started != now {
                out.push(format!(
                    "{what}: \"{started}\" in the config the master started with, \"{now}\" now; \
                     it changes only when the master restarts"
                ));
            }
        };
        check(
            "worker listen address",
            &self.worker_listen,
            &g.master.worker_listen,
        );
        check(
            "HTTP listen address",
            &self.http_listen,
            &g.master.http_listen,
        );
        check("state directory", &self.state_dir, &g.master.state_dir);
        out
    }
}

/// The stored history of applied configs, oldest first.
fn stored(s: &dyn Store) -> crate::store::Result<Vec<AppliedRecord>> {
    Ok(s.get_state(HISTORY_KEY)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

/// Appends to the stored history of applied configs.
pub(crate) fn record(s: &dyn Store, rec: AppliedRecord) -> crate::store::Result<()> {
    let mut list = stored(s)?;
    list.push(rec);
    let extra = list.len().saturating_sub(HISTORY_MAX);
    list.drain(..extra);
    let bytes = serde_json::to_vec(&list).unwrap_or_default();
    s.put_state(HISTORY_KEY, &bytes)
}

/// The stored history, newest first.
pub fn history(s: &dyn Store) -> crate::store::Result<Vec<AppliedRecord>> {
    let mut list = stored(s)?;
    list.reverse();
    Ok(list)
}
