//! Starting a master: the one place that knows every service. It opens
//! the store, builds the shared state, recovers what a previous master
//! left, and spawns the worker listener, the assignment loop, the HTTP API
//! (with the change sources' routes), the pollers, the reporters and the
//! schedulers. Nothing else imports more than one service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use bbc_graph::Graph;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use super::{apply, janitor, latent, missing, peers, queue, schedulers, workers};
use crate::changes::poller::Pollers;
use crate::secrets::Secrets;
use crate::state::config::{record, AppliedRecord, ConfigInfo, StartSettings};
use crate::state::events::Hub;
use crate::state::{now_ms, MasterConfig, Shared};
use crate::store::Store;

pub struct MasterHandle {
    pub worker_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// The git pollers' registry (tests look at it).
    pub pollers: Arc<Pollers>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MasterHandle {
    /// Stops accepting work and waits for the listeners to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.shared.wake.notify_waiters();
        // Another master sharing the store takes the schedulers over at
        // once, not after the lease expires.
        let store = self.shared.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.release_leases()).await {
            tracing::warn!("cannot give up this master's leases: {e}");
        }
        // Containers and VMs this master started would outlive it.
        super::latent::stop_all(&self.shared).await;
        let later: Vec<_> = match self.shared.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        for t in self.tasks.into_iter().chain(later) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Opens the store, resolves secrets, recovers interrupted builds and
/// starts the listeners and the assignment loop.
pub async fn start(graph: Graph, cfg: MasterConfig) -> Result<MasterHandle, String> {
    let secrets_dir = cfg.secrets_dir.clone().or_else(|| {
        let d = Secrets::default_dir(&cfg.state_dir);
        d.is_dir().then_some(d)
    });
    // Reading secret files, and a `secrets-command` that may take seconds
    // per secret: off the async threads, as `apply` does.
    let (graph, secrets) = tokio::task::spawn_blocking(move || {
        let secrets = Secrets::resolve(&graph, secrets_dir.as_deref())?;
        Ok::<_, String>((graph, secrets))
    })
    .await
    .map_err(|e| e.to_string())??;
    apply::validate(&graph).map_err(|e| format!("invalid graph: {e}"))?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
        format!(
            "cannot create state directory {}: {e}",
            cfg.state_dir.display()
        )
    })?;
    let state_dir = cfg.state_dir.clone();
    // `master { store "postgres://…" }`: the password from its secret,
    // resolved above (never in the graph).
    let postgres = graph
        .master
        .postgres
        .as_ref()
        .map(|pg| crate::store::PgConfig {
            url: pg.url.clone(),
            password: pg
                .password
                .as_ref()
                .and_then(|c| secrets.get(c))
                .map(str::to_string),
            schema: pg.schema.clone(),
        });
    let where_ = match &postgres {
        Some(pg) => format!("PostgreSQL ({}, schema {})", pg.url, pg.schema),
        None => cfg.state_dir.display().to_string(),
    };
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || {
        crate::store::open_configured(&state_dir, postgres.as_ref())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot open the store in {where_}: {e}"))?;
    // On a store other masters may share, this master joins them first:
    // its builds record it, and the restart below leaves the builds of
    // live masters alone (store::lease).
    let peers_book = if store.shared() {
        let me = crate::store::MasterIdentity::new(&crate::store::MasterIdentity::default_name(
            &cfg.state_dir,
        ));
        let times = crate::store::LeaseTimes::from_env();
        let (s2, m2) = (store.clone(), me.clone());
        tokio::task::spawn_blocking(move || s2.join_masters(&m2, now_ms(), times.lease_ms))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot join the masters of the store: {e}"))?;
        tracing::info!(master = %me.id, name = %me.name, lease_ms = times.lease_ms, "joined the masters sharing the store");
        crate::state::peers::Peers::shared(me, times)
    } else {
        crate::state::peers::Peers::alone()
    };
    // Builds a previous master left running end as interrupted; their
    // requests run again.
    let now = now_ms();
    let s2 = store.clone();
    let (interrupted, pending) = tokio::task::spawn_blocking(move || {
        let i = s2.interrupt_running(now)?;
        let p = peers::load_pending(s2.as_ref(), Default::default())?;
        Ok::<_, crate::store::StoreError>((i, p))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if !interrupted.is_empty() {
        tracing::warn!(builds = ?interrupted, "builds interrupted by the previous master stop will run again");
    }
    let worker_listen = cfg
        .worker_listen
        .clone()
        .unwrap_or_else(|| graph.master.worker_listen.clone());
    let http_listen = cfg
        .http_listen
        .clone()
        .unwrap_or_else(|| graph.master.http_listen.clone());
    let wl = TcpListener::bind(&worker_listen)
        .await
        .map_err(|e| format!("cannot listen for workers on {worker_listen}: {e}"))?;
    let hl = TcpListener::bind(&http_listen)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {http_listen}: {e}"))?;
    let worker_tls = match &graph.master.worker_tls {
        Some(t) => Some(load_tls(&cfg.config_dir, t, "worker port")?),
        None => None,
    };
    let http_tls = match &graph.master.http_tls {
        Some(t) => Some(load_tls(&cfg.config_dir, t, "HTTP port")?),
        None => None,
    };
    let worker_addr = wl.local_addr().map_err(|e| e.to_string())?;
    let http_addr = hl.local_addr().map_err(|e| e.to_string())?;
    let (stop, shutdown) = watch::channel(false);
    let mut q = crate::state::queue::Queue::default();
    for (r, set) in pending {
        q.add(r, set);
    }
    // The queue orders by the priorities of the config in force.
    q.reprioritize(&graph);
    let graph = Arc::new(graph);
    let g2 = graph.clone();
    let hash = tokio::task::spawn_blocking(move || apply::config_hash(&g2))
        .await
        .map_err(|e| e.to_string())?;
    let applied_at = now_ms();
    let rec = AppliedRecord {
        hash: hash.clone(),
        applied_at,
        via: "start".into(),
    };
    let s2 = store.clone();
    tokio::task::spawn_blocking(move || record(s2.as_ref(), rec))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot record the config in the store: {e}"))?;
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(ConfigInfo {
            graph: graph.clone(),
            hash,
            applied_at,
            via: "start".into(),
            restart_needed: Vec::new(),
        })),
        started_with: StartSettings::of(&graph),
        graph: RwLock::new(graph),
        store,
        secrets: RwLock::new(Arc::new(secrets)),
        secrets_dir: cfg.secrets_dir.clone(),
        apply_lock: tokio::sync::Mutex::new(()),
        configs: tokio::sync::broadcast::channel(16).0,
        tasks: Mutex::new(Vec::new()),
        state_dir: cfg.state_dir.clone(),
        workers: Mutex::new(BTreeMap::new()),
        latent: crate::state::latent::LatentBook::new(worker_addr),
        workers_changed: Notify::new(),
        missing: Mutex::new(BTreeMap::new()),
        scheduler_timers: Mutex::new(BTreeMap::new()),
        health_logged: Mutex::new(None),
        queue: Mutex::new(q),
        wake: Notify::new(),
        build_finished: Notify::new(),
        locks_released: Notify::new(),
        changes: tokio::sync::broadcast::channel(1024).0,
        buildsets: tokio::sync::broadcast::channel(1024).0,
        reporters: Hub::new(http_addr),
        next_id: AtomicU64::new(1),
        shutdown,
        patterns: Mutex::new(Default::default()),
        metrics: Default::default(),
        sessions: Default::default(),
        web_logins: Mutex::new(crate::state::logins::Logins::of("web", Default::default())),
        https: http_tls.is_some(),
        oauth_flows: Default::default(),
        peers: peers_book,
    });
    // Schedulers first: their starting points are saved before any change
    // can arrive.
    let clock = Arc::new(schedulers::SystemClock);
    let prepared = schedulers::prepare(&shared, clock.as_ref()).await;
    // The change sources' routes join the API; their pollers' registry is
    // shared between those routes and the poller task, and no one else.
    let pollers = Arc::new(Pollers::default());
    let routes = crate::changes::router(pollers.clone());
    let mut tasks = vec![
        tokio::spawn(workers::accept_workers(shared.clone(), wl, worker_tls)),
        workers::spawn_retirer(shared.clone()),
        missing::spawn(shared.clone()),
        janitor::spawn(shared.clone()),
        latent::spawn(shared.clone()),
        tokio::spawn(queue::assign_loop(shared.clone())),
        tokio::spawn(crate::http::serve(
            shared.clone(),
            hl,
            routes,
            cfg.http_limits,
            http_tls,
        )),
        crate::changes::poller::spawn(shared.clone(), pollers.clone()),
        crate::reporters::spawn(shared.clone()),
    ];
    tasks.extend(peers::spawn(shared.clone()));
    tasks.push(tokio::spawn(schedulers::run(
        shared.clone(),
        clock,
        prepared,
    )));
    // The control socket (`bbc backup`; control.rs). The store is open, so
    // a socket file already there is a dead master's. A master without it
    // still runs: `bbc backup` then says it cannot reach it.
    match crate::control::bind(&cfg.state_dir) {
        Ok(l) => tasks.push(tokio::spawn(crate::control::serve(shared.clone(), l))),
        Err(e) => tracing::warn!("no control socket in {}: {e}", cfg.state_dir.display()),
    }
    // Builds the previous master left running are finished now: the
    // reporters hear it from this master, the one that ended them (the
    // reporters' tasks subscribed above), and their logs are compressed
    // like those of any ended build.
    if !interrupted.is_empty() {
        peers::publish_ended(&shared, &interrupted).await;
    }
    for id in interrupted {
        super::build::seal_logs(&shared, id);
    }
    tracing::info!(%worker_addr, %http_addr, "master started");
    Ok(MasterHandle {
        worker_addr,
        http_addr,
        shared,
        pollers,
        stop,
        tasks,
    })
}

/// The server side of TLS for one port, from the graph's PEM paths
/// (relative to the config file's directory).
fn load_tls(
    config_dir: &std::path::Path,
    t: &bbc_graph::Tls,
    port: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = config_dir.join(&t.cert);
    let key = config_dir.join(&t.key);
    crate::tls::server_config(&cert, &key).map_err(|e| {
        format!("cannot set up TLS on the {port}: {e} (`bbc cert` makes a self-signed pair)")
    })
}
