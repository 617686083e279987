//! The master: accepts workers, keeps the build queue, assigns requests to
//! workers (honouring max-builds, locks, downtime and priority), runs
//! builds, and serves the HTTP API.
//!
//! Architecture invariant: the graph in use is one `Arc<Graph>` swapped as
//! a whole (by [`Shared::apply`], which also reconciles schedulers,
//! pollers and workers with it); a build takes its builder's definition
//! when it starts and runs to its end on it, whatever the config becomes
//! meanwhile.

pub mod apply;
pub mod build;
pub mod conn;
pub mod queue;
pub mod schedulers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bbc_graph::{BuildResult, Graph, Scalar};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_util::codec::Framed;

use crate::protocol::{Frame, FrameCodec, Message, PROTOCOL_VERSION};
use crate::secrets::Secrets;
use crate::store::{BuildRequest, Millis, NewBuildSet, SourceStamp, Store};

pub use conn::WorkerConn;

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
}

/// State shared by every task of a running master.
pub struct Shared {
    graph: RwLock<Arc<Graph>>,
    /// The running config with its hash and origin (`GET /api/v1/config`).
    config: RwLock<Arc<apply::ConfigInfo>>,
    pub store: Arc<dyn Store>,
    secrets: RwLock<Arc<Secrets>>,
    /// `--secrets DIR`, when given (else `STATE/secrets` if it exists).
    secrets_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Listen addresses and state directory of the config the master
    /// started with: later configs change them only through a restart.
    started_with: apply::StartSettings,
    /// One apply at a time.
    apply_lock: tokio::sync::Mutex<()>,
    /// Every applied config with changes (the scheduler task listens).
    pub configs: tokio::sync::broadcast::Sender<Arc<apply::ConfigEvent>>,
    /// Tasks started after start-up (pollers of new sources, retiring
    /// workers); aborted at shutdown with the others.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub workers: Mutex<BTreeMap<String, Arc<WorkerConn>>>,
    pub queue: Mutex<queue::Queue>,
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
    /// Build events for the reporters, and their tasks.
    pub reporters: crate::reporters::Hub,
    next_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub fn graph(&self) -> Arc<Graph> {
        match self.graph.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Swaps the graph in use, as one value. Running builds keep the
    /// builder definition they started with. Only [`Shared::apply`] calls
    /// it: the rest of the master must be reconciled too.
    fn swap_graph(&self, g: Arc<Graph>) {
        match self.graph.write() {
            Ok(mut w) => *w = g,
            Err(p) => *p.into_inner() = g,
        }
        self.wake.notify_one();
    }

    /// The secrets of the running config (and the admin token).
    pub fn secrets(&self) -> Arc<Secrets> {
        match self.secrets.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_secrets(&self, s: Arc<Secrets>) {
        match self.secrets.write() {
            Ok(mut w) => *w = s,
            Err(p) => *p.into_inner() = s,
        }
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
        set: NewBuildSet,
        builders: Vec<String>,
    ) -> crate::store::Result<(crate::store::BuildSet, Vec<BuildRequest>)> {
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
}

pub struct MasterHandle {
    pub worker_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MasterHandle {
    /// Stops accepting work and waits for the listeners to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.shared.wake.notify_waiters();
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
    let secrets = Secrets::resolve(&graph, secrets_dir.as_deref())?;
    apply::validate(&graph).map_err(|e| format!("invalid graph: {e}"))?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
        format!(
            "cannot create state directory {}: {e}",
            cfg.state_dir.display()
        )
    })?;
    let state_dir = cfg.state_dir.clone();
    let store: Arc<dyn Store> = tokio::task::spawn_blocking(move || crate::store::open(&state_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the store in {}: {e}", cfg.state_dir.display()))?;
    // Builds a previous master left running end as interrupted; their
    // requests run again.
    let now = now_ms();
    let s2 = store.clone();
    let (interrupted, pending) = tokio::task::spawn_blocking(move || {
        let i = s2.interrupt_running(now)?;
        let mut p = Vec::new();
        let mut sets: HashMap<u64, Arc<crate::store::BuildSet>> = HashMap::new();
        for r in s2.pending_requests()? {
            let set = match sets.get(&r.buildset) {
                Some(s) => s.clone(),
                None => match s2.buildset(r.buildset)? {
                    Some(s) => {
                        let s = Arc::new(s);
                        sets.insert(r.buildset, s.clone());
                        s
                    }
                    None => continue,
                },
            };
            p.push((r, set));
        }
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
    let worker_addr = wl.local_addr().map_err(|e| e.to_string())?;
    let http_addr = hl.local_addr().map_err(|e| e.to_string())?;
    let (stop, shutdown) = watch::channel(false);
    let mut q = queue::Queue::default();
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
    let rec = apply::AppliedRecord {
        hash: hash.clone(),
        applied_at,
        via: "start".into(),
    };
    let s2 = store.clone();
    tokio::task::spawn_blocking(move || apply::record(s2.as_ref(), rec))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot record the config in the store: {e}"))?;
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(apply::ConfigInfo {
            graph: graph.clone(),
            hash,
            applied_at,
            via: "start".into(),
            restart_needed: Vec::new(),
        })),
        started_with: apply::StartSettings::of(&graph),
        graph: RwLock::new(graph),
        store,
        secrets: RwLock::new(Arc::new(secrets)),
        secrets_dir: cfg.secrets_dir.clone(),
        apply_lock: tokio::sync::Mutex::new(()),
        configs: tokio::sync::broadcast::channel(16).0,
        tasks: Mutex::new(Vec::new()),
        state_dir: cfg.state_dir.clone(),
        workers: Mutex::new(BTreeMap::new()),
        queue: Mutex::new(q),
        wake: Notify::new(),
        build_finished: Notify::new(),
        locks_released: Notify::new(),
        changes: tokio::sync::broadcast::channel(1024).0,
        buildsets: tokio::sync::broadcast::channel(1024).0,
        reporters: crate::reporters::Hub::new(http_addr),
        next_id: AtomicU64::new(1),
        shutdown,
    });
    // Schedulers first: their starting points are saved before any change
    // can arrive.
    let clock = Arc::new(schedulers::SystemClock);
    let prepared = schedulers::prepare(&shared, clock.as_ref()).await;
    let mut tasks = vec![
        tokio::spawn(accept_workers(shared.clone(), wl)),
        tokio::spawn(queue::assign_loop(shared.clone())),
        tokio::spawn(crate::http::serve(shared.clone(), hl)),
    ];
    tasks.extend(crate::changes::spawn_pollers(shared.clone()));
    tasks.extend(crate::reporters::spawn_all(shared.clone()));
    tasks.push(tokio::spawn(schedulers::run(
        shared.clone(),
        clock,
        prepared,
    )));
    // --- control socket (`bbc backup`; runtime/src/control.rs). The store
    // is open, so a socket file already there is a dead master's. A master
    // without it still runs: `bbc backup` then says it cannot reach it.
    match crate::control::bind(&cfg.state_dir) {
        Ok(l) => tasks.push(tokio::spawn(crate::control::serve(shared.clone(), l))),
        Err(e) => tracing::warn!("no control socket in {}: {e}", cfg.state_dir.display()),
    }
    // --- end control socket
    tracing::info!(%worker_addr, %http_addr, "master started");
    Ok(MasterHandle {
        worker_addr,
        http_addr,
        shared,
        stop,
        tasks,
    })
}

async fn accept_workers(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accepting a worker connection failed: {e}");
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let s = shared.clone();
        tokio::spawn(async move {
            if let Err(why) = handshake(s, sock).await {
                tracing::warn!(%peer, "worker connection refused: {why}");
            }
        });
    }
}

/// Compares two secrets in time independent of their contents.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    // Compare fixed-size digests so the length does not leak either.
    let da = sha256(a.as_bytes());
    let db = sha256(b.as_bytes());
    da.ct_eq(&db).into()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

async fn handshake(shared: Arc<Shared>, sock: TcpStream) -> Result<(), String> {
    let mut framed = Framed::new(sock, FrameCodec);
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), framed.next())
        .await
        .map_err(|_| "no hello within 30 s".to_string())?;
    let (name, password, protocol, info) = match first {
        Some(Ok(Frame::Message(Message::Hello {
            protocol,
            name,
            password,
            info,
        }))) => (name, password, protocol, info),
        Some(Ok(_)) => return Err("first frame is not a hello".into()),
        Some(Err(e)) => return Err(format!("bad first frame: {e}")),
        None => return Err("closed before hello".into()),
    };
    let refuse = |reason: String| Frame::Message(Message::Refused { reason });
    if protocol != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {protocol} is not supported (this master speaks {PROTOCOL_VERSION})"
        );
        let _ = framed.send(refuse(why.clone())).await;
        return Err(format!("worker `{name}`: {why}"));
    }
    let g = shared.graph();
    let expected = g
        .worker(&name)
        .and_then(|w| shared.secrets().get(&w.password).map(str::to_string));
    // Unknown name and wrong password get the same answer.
    let ok = match &expected {
        Some(p) => constant_time_eq(p, &password),
        None => {
            let _ = constant_time_eq("unknown-worker-password", &password);
            false
        }
    };
    if !ok {
        let _ = framed
            .send(refuse("wrong worker name or password".into()))
            .await;
        return Err(format!("worker `{name}`: wrong name or password"));
    }
    let keepalive_ms = g.worker(&name).map_or(60_000, |w| w.keepalive_ms);
    // One connection per worker name: a second one replaces the first
    // only after the first is gone.
    let taken = shared
        .workers
        .lock()
        .map(|w| w.get(&name).is_some_and(|c| !c.is_closed()))
        .unwrap_or(true);
    if taken {
        let _ = framed
            .send(refuse(format!("worker `{name}` is already connected")))
            .await;
        return Err(format!("worker `{name}` is already connected"));
    }
    framed
        .send(Frame::Message(Message::Welcome {
            protocol: PROTOCOL_VERSION,
            keepalive_ms,
        }))
        .await
        .map_err(|e| e.to_string())?;
    let (conn, task) = conn::spawn(framed, name.clone(), info.clone(), keepalive_ms);
    if let Ok(mut w) = shared.workers.lock() {
        w.insert(name.clone(), conn.clone());
    }
    // A config applied while this worker was being checked may have removed
    // it; the apply's retiring pass may not have seen this connection.
    if shared.graph().worker(&name).is_none() {
        conn.disconnect(format!(
            "worker `{name}` is no longer in the master's configuration"
        ));
    }
    let n2 = name.clone();
    let _ = shared
        .db(move |s| s.worker_connected(&n2, &info, now_ms()))
        .await;
    tracing::info!(worker = %name, "worker connected");
    shared.wake.notify_one();
    let reason = task.await.unwrap_or_else(|e| e.to_string());
    tracing::info!(worker = %name, "worker disconnected: {reason}");
    if let Ok(mut w) = shared.workers.lock() {
        if w.get(&name).is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            w.remove(&name);
        }
    }
    let n2 = name.clone();
    let _ = shared
        .db(move |s| s.worker_disconnected(&n2, now_ms()))
        .await;
    shared.wake.notify_one();
    Ok(())
}

/// Properties every build starts with, lowest precedence first.
pub fn initial_properties(
    g: &Graph,
    builder: &str,
    worker: &str,
    number: u64,
    set: &crate::store::BuildSet,
) -> crate::store::Properties {
    let mut p = crate::store::Properties::new();
    p.extend(g.master.properties.clone());
    if let Some(w) = g.worker(worker) {
        p.extend(w.properties.clone());
    }
    if let Some(b) = g.builder(builder) {
        p.extend(b.properties.clone());
    }
    let SourceStamp {
        repository,
        branch,
        revision,
    } = &set.set.source;
    let s = |v: &str| Scalar::String(v.to_string());
    p.insert("repository".into(), s(repository));
    p.insert("branch".into(), s(branch));
    p.insert("revision".into(), s(revision));
    p.insert("scheduler".into(), s(&set.set.scheduler));
    p.insert("reason".into(), s(&set.set.reason));
    p.extend(set.set.properties.clone());
    p.insert("builder".into(), s(builder));
    p.insert("worker".into(), s(worker));
    p.insert("buildnumber".into(), Scalar::Int(number as i64));
    p
}

/// The worst of two results, as Buildbot combines them.
pub fn worst(a: BuildResult, b: BuildResult) -> BuildResult {
    a.max(b)
}

pub type WorkerMap = HashMap<String, Arc<WorkerConn>>;
