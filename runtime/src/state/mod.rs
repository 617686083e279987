//! What every task of a running master shares: the graph in use, the store,
//! secrets, the queue's book-keeping, the connected workers, and the
//! channels the services talk through (wake-ups, changes, build sets, build
//! events, applied configs), and the metrics every service records.
//!
//! Layering: this module is the bottom of the master. It imports only the
//! store, secrets, the protocol and bbc_graph; the services (HTTP API,
//! change sources, schedulers, queue and builds, reporters) sit above it
//! and never reach into each other, only through [`Shared`].
//!
//! Architecture invariant: the graph in use is one `Arc<Graph>` swapped as
//! a whole (by [`Shared::apply`], which then broadcasts a [`ConfigEvent`]
//! from which every service reconciles itself); a build takes its
//! builder's definition when it starts and runs to its end on it, whatever
//! the config becomes meanwhile.

pub mod config;
pub mod connection;
pub mod events;
pub mod latent;
pub mod logins;
pub mod metrics;
pub mod oauth;
pub mod peers;
pub mod queue;
pub mod sessions;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bbc_graph::Graph;
use tokio::sync::{watch, Notify};

use crate::secrets::Secrets;
use crate::store::{BuildRequest, Millis, NewBuildSet, Store};

pub use config::{ConfigEvent, ConfigInfo, StartSettings};
pub use connection::WorkerConn;
pub use events::Hub;
pub use metrics::Metrics;
use queue::Queue;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Default)]
pub struct MasterConfig {
    /// Where the store and uploaded files live.
    pub state_dir: PathBuf,
    /// One file per secret; defaults to `STATE/secrets` when it exists.
    pub secrets_dir: Option<PathBuf>,
    /// Overrides the graph's listen addresses (tests bind port 0).
    pub worker_listen: Option<String>,
    pub http_listen: Option<String>,
    /// The config file's directory: relative paths in the graph (TLS
    /// files) are relative to it. Empty: the current directory.
    pub config_dir: PathBuf,
    /// Timeouts and the connection cap of the HTTP listener.
    pub http_limits: HttpLimits,
}

/// What the HTTP listener allows a client (`bbc master --http-…`,
/// docs/operations.md "HTTP timeouts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this time of the connection
    /// being ready for them (opened, or idle after an answer).
    pub header_timeout: std::time::Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// What the sources page shows of a scheduler's timers.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SchedulerTimer {
    /// When its next timer fires (tree-stable, periodic, nightly), if any.
    pub next_fire_at: Option<Millis>,
    /// periodic / nightly: the last slot it handled.
    pub last_fired_at: Option<Millis>,
    /// Changes collected and not yet built.
    pub pending_changes: usize,
}

/// State shared by every task of a running master.
pub struct Shared {
    pub(crate) graph: RwLock<Arc<Graph>>,
    /// The running config with its hash and origin (`GET /api/v1/config`).
    pub(crate) config: RwLock<Arc<ConfigInfo>>,
    pub store: Arc<dyn Store>,
    pub(crate) secrets: RwLock<Arc<Secrets>>,
    /// `--secrets DIR`, when given (else `STATE/secrets` if it exists).
    pub(crate) secrets_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Listen addresses and state directory of the config the master
    /// started with: later configs change them only through a restart.
    pub(crate) started_with: StartSettings,
    /// One apply at a time.
    pub(crate) apply_lock: tokio::sync::Mutex<()>,
    /// Every applied config with changes. Each service (schedulers,
    /// pollers, reporters, workers) listens and reconciles itself, then
    /// says so on the event ([`ConfigEvent::reconciled`]).
    pub configs: tokio::sync::broadcast::Sender<Arc<ConfigEvent>>,
    /// Tasks started after start-up (pollers of new sources, retiring
    /// workers); aborted at shutdown with the others.
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub workers: Mutex<BTreeMap<String, Arc<WorkerConn>>>,
    /// Latent workers: started on demand, stopped when idle (state/latent.rs).
    pub latent: latent::LatentBook,
    /// Notified (to all waiters) whenever a worker connects or disconnects:
    /// the missing-worker timer re-checks then (master/missing.rs).
    pub workers_changed: Notify,
    /// Configured workers reported missing (away longer than their
    /// `missing-timeout`), with when they went away. Only the missing-worker
    /// timer writes it; `GET /api/v1/workers` reads it.
    pub missing: Mutex<BTreeMap<String, Millis>>,
    /// Each scheduler's timers as the scheduler task last computed them.
    /// Only that task writes it; `GET /api/v1/views/sources` reads it.
    pub scheduler_timers: Mutex<BTreeMap<String, SchedulerTimer>>,
    /// The store failure `GET /api/v1/health` last logged, so that a
    /// monitor polling it logs a line when the failure starts, changes or
    /// ends, not at every poll.
    pub(crate) health_logged: Mutex<Option<String>>,
    pub queue: Mutex<Queue>,
    /// Wakes the assignment loop: a request, worker, slot or lock changed.
    pub wake: Notify,
    /// Notified whenever a build finishes (waiters re-check the store).
    pub build_finished: Notify,
    /// Notified whenever a lock is released (step-lock waiters retry).
    pub locks_released: Notify,
    /// Every change, after it is stored (schedulers listen here).
    pub changes: tokio::sync::broadcast::Sender<crate::store::Change>,
    /// Every build set, after it is stored (dependent schedulers watch
    /// their upstream's sets).
    pub buildsets: tokio::sync::broadcast::Sender<crate::store::BuildSet>,
    /// Build events (the reporters and the API's event stream listen).
    pub reporters: Hub,
    pub(crate) next_id: AtomicU64,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Warning patterns compiled once each: a dozen long regexes shared by
    /// thousands of steps were compiled again for every command run.
    pub(crate) patterns: Mutex<HashMap<String, Option<Arc<regex::bytes::Regex>>>>,
    /// What `GET /metrics` serves: every service records here.
    pub metrics: Metrics,
    /// Browsers logged in through the web (password or OAuth).
    pub sessions: sessions::Sessions,
    /// Failed password logins through the web, throttled like workers'
    /// (`POST /api/v1/login`).
    pub web_logins: Mutex<logins::Logins>,
    /// The HTTP port serves HTTPS: session cookies are `Secure`, and this
    /// master's origin is `https://HOST`.
    pub https: bool,
    /// OAuth logins under way (between the provider's redirect and its
    /// callback).
    pub oauth_flows: oauth::Flows,
    /// This master among others sharing its store: its identity and the
    /// leases it holds (alone on redb).
    pub peers: peers::Peers,
}

impl Shared {
    /// The compiled warning pattern (`None` for one that does not compile:
    /// the compiler refused those, a graph from elsewhere might not have).
    pub(crate) fn pattern(&self, p: &str) -> Option<Arc<regex::bytes::Regex>> {
        let mut m = match self.patterns.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        };
        if let Some(re) = m.get(p) {
            return re.clone();
        }
        // Patterns come from configs: bounded by what applies bring; a
        // master that saw very many starts over rather than grow.
        if m.len() >= 1024 {
            m.clear();
        }
        let re = regex::bytes::Regex::new(p).ok().map(Arc::new);
        m.insert(p.to_string(), re.clone());
        re
    }

    pub fn graph(&self) -> Arc<Graph> {
        current(&self.graph)
    }

    /// Swaps the graph in use, as one value. Running builds keep the
    /// builder definition they started with. Only [`Shared::apply`] calls
    /// it: it then tells the services, which reconcile themselves.
    pub(crate) fn swap_graph(&self, g: Arc<Graph>) {
        replace(&self.graph, g);
        self.wake.notify_one();
    }

    /// The secrets of the running config (and the admin token).
    pub fn secrets(&self) -> Arc<Secrets> {
        current(&self.secrets)
    }

    pub(crate) fn set_secrets(&self, s: Arc<Secrets>) {
        replace(&self.secrets, s);
    }

    /// Keeps a task started after start-up, so shutdown aborts it.
    pub fn track(&self, h: tokio::task::JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.retain(|t| !t.is_finished());
            t.push(h);
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs blocking store work off the async threads.
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Store) -> crate::store::Result<T> + Send + 'static,
    ) -> crate::store::Result<T> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
            Ok(r) => r,
            Err(e) => Err(crate::store::StoreError::Io(format!(
                "store task failed: {e}"
            ))),
        }
    }

    /// Durably queues a build set and wakes the assignment loop. The
    /// requests are acknowledged only once this returns.
    pub async fn submit(
        self: &Arc<Self>,
        mut set: NewBuildSet,
        builders: Vec<String>,
    ) -> crate::store::Result<(crate::store::BuildSet, Vec<BuildRequest>)> {
        // Every stored set lists its stamps, whoever built it.
        set.normalize_sources();
        let g = self.graph();
        let with_prio: Vec<(String, i64)> = builders
            .into_iter()
            .map(|b| {
                let p = g.builder(&b).map_or(0, |x| x.priority);
                (b, p)
            })
            .collect();
        let (bs, reqs) = self.db(move |s| s.add_buildset(set, &with_prio)).await?;
        if let Ok(mut q) = self.queue.lock() {
            let set = Arc::new(bs.clone());
            for r in &reqs {
                q.add(r.clone(), set.clone());
            }
        }
        self.wake.notify_one();
        let _ = self.buildsets.send(bs.clone());
        Ok((bs, reqs))
    }

    /// Stores a change durably, then hands it to the schedulers. Every
    /// change source (pollers, webhooks, the API) comes through here.
    pub async fn add_change(
        self: &Arc<Self>,
        c: crate::store::NewChange,
    ) -> crate::store::Result<crate::store::Change> {
        let stored = self.db(move |s| s.add_change(c, now_ms())).await?;
        // No receiver yet (no scheduler) is fine: the change is stored.
        let _ = self.changes.send(stored.clone());
        Ok(stored)
    }

    /// Cancels every request of these build sets: pending ones are
    /// cancelled in the store, running builds are interrupted. Returns how
    /// many were cancelled.
    pub async fn cancel_buildsets(self: &Arc<Self>, sets: &[u64]) -> usize {
        let ids = sets.to_vec();
        let reqs = self
            .db(move |s| {
                let mut out = Vec::new();
                for id in ids {
                    let f = crate::store::RequestFilter {
                        buildset: Some(id),
                        ..Default::default()
                    };
                    out.extend(s.requests(
                        &f,
                        crate::store::Page {
                            before: None,
                            limit: 1000,
                        },
                    )?);
                }
                Ok(out)
            })
            .await
            .unwrap_or_default();
        let mut n = 0;
        for r in reqs {
            match r.state {
                crate::store::RequestState::Pending => {
                    let id = r.id;
                    if self
                        .db(move |s| s.cancel_request(id, now_ms()))
                        .await
                        .unwrap_or(false)
                    {
                        if let Ok(mut q) = self.queue.lock() {
                            q.remove(id);
                        }
                        n += 1;
                    }
                }
                crate::store::RequestState::Claimed => {
                    if let (Some(b), Ok(q)) = (r.build, self.queue.lock()) {
                        if let Some(run) = q.running().find(|x| x.build_id == Some(b)) {
                            let _ = run.cancel.send(true);
                            n += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        self.build_finished.notify_waiters();
        n
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The running configuration with its hash and origin.
    pub fn config_info(&self) -> Arc<ConfigInfo> {
        current(&self.config)
    }

    pub(crate) fn set_config_info(&self, info: Arc<ConfigInfo>) {
        replace(&self.config, info);
    }
}

/// The value swapped in last. A panic while the lock was held cannot leave
/// a half-written `Arc` behind, so a poisoned lock is read all the same.
fn current<T: ?Sized>(l: &RwLock<Arc<T>>) -> Arc<T> {
    match l.read() {
        Ok(v) => v.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Swaps in a new value (see [`current`] for poisoning).
fn replace<T: ?Sized>(l: &RwLock<Arc<T>>, v: Arc<T>) {
    match l.write() {
        Ok(mut w) => *w = v,
        Err(p) => *p.into_inner() = v,
    }
}
