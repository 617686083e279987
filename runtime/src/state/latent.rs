//! Latent workers' book-keeping (docs/latent-workers.md): which are
//! stopped, starting, up or stopping, their one-time passwords, the
//! back-off after failed starts, and the channel through which the
//! assignment loop asks the latent service (`master/latent/`) to start one.
//!
//! Lock order: `Shared::workers`, then `Shared::queue`, then this book;
//! nothing here takes either of the others.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bbc_graph::{Graph, Latent};
use tokio::sync::{mpsc, watch};

use crate::auth::constant_time_eq;

/// Where one latent worker is in its life. Watched by the builds assigned
/// to it while it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Stopped,
    /// Being started; builds may be assigned to it and wait.
    Starting,
    /// Started and connected: it runs builds like any worker.
    Up,
    /// Being stopped (idle, died, removed from the config, shutdown).
    Stopping,
    /// The last start failed, for this reason; it may start again after
    /// its back-off.
    Failed(String),
}

/// The first pause after a failed start, doubled after each further
/// failure up to the last.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

struct Instance {
    phase: watch::Sender<Phase>,
    /// The one-time password of the current start (a worker started by the
    /// master logs in with it); `None` while stopped.
    token: Option<String>,
    /// The definition it was started with: stopped the same way even when
    /// a new config changed or removed it.
    def: Option<Latent>,
    /// Failed starts in a row, and when the next start may be tried.
    failures: u32,
    retry_at: Option<Instant>,
    /// Since when it has run no build while up.
    idle_since: Option<Instant>,
    /// When the current start began.
    started_at: Option<Instant>,
}

impl Instance {
    fn new() -> Instance {
        Instance {
            phase: watch::channel(Phase::Stopped).0,
            token: None,
            def: None,
            failures: 0,
            retry_at: None,
            idle_since: None,
            started_at: None,
        }
    }

    fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Counts against `latent-workers max`.
    fn running(&self) -> bool {
        matches!(self.phase(), Phase::Starting | Phase::Up | Phase::Stopping)
    }
}

/// A start the latent service is asked to make.
#[derive(Debug, Clone)]
pub struct StartOrder {
    pub worker: String,
    pub def: Latent,
    pub token: String,
}

/// The book of latent workers (one per master, in `Shared`).
pub struct LatentBook {
    book: Mutex<HashMap<String, Instance>>,
    orders: mpsc::UnboundedSender<StartOrder>,
    orders_rx: Mutex<Option<mpsc::UnboundedReceiver<StartOrder>>>,
    /// The worker listener's bound address (its port may have been 0 in
    /// the config): where a started worker connects unless `connect=`.
    pub worker_addr: SocketAddr,
}

impl LatentBook {
    pub fn new(worker_addr: SocketAddr) -> LatentBook {
        let (orders, rx) = mpsc::unbounded_channel();
        LatentBook {
            book: Mutex::new(HashMap::new()),
            orders,
            orders_rx: Mutex::new(Some(rx)),
            worker_addr,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instance>> {
        // Plain data, consistent after every method.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latent service's end of the start orders (taken once).
    pub fn take_orders(&self) -> Option<mpsc::UnboundedReceiver<StartOrder>> {
        self.orders_rx.lock().ok().and_then(|mut r| r.take())
    }

    /// Whether the assignment loop may give latent worker `name` a build
    /// now: up and `connected`; or stopped (its back-off over) with room
    /// under the master's `latent-workers max`; or already starting.
    pub fn can_take(&self, g: &Graph, name: &str, connected: bool, now: Instant) -> bool {
        let book = self.lock();
        let Some(i) = book.get(name) else {
            return room(&book, g);
        };
        match i.phase() {
            Phase::Up => connected,
            Phase::Starting => true,
            Phase::Stopping => false,
            Phase::Stopped | Phase::Failed(_) => {
                i.retry_at.is_none_or(|t| now >= t) && room(&book, g)
            }
        }
    }

    /// The assignment loop gave latent worker `name` a build: if it is
    /// stopped, it starts now (a one-time password made, the service
    /// told). Call only after [`LatentBook::can_take`] said yes.
    pub fn claim(&self, name: &str, def: &Latent) {
        let mut book = self.lock();
        let i = book.entry(name.to_string()).or_insert_with(Instance::new);
        if matches!(i.phase(), Phase::Stopped | Phase::Failed(_)) {
            let token = one_time_password();
            i.token = Some(token.clone());
            i.def = Some(def.clone());
            i.idle_since = None;
            i.started_at = Some(Instant::now());
            i.phase.send_replace(Phase::Starting);
            let _ = self.orders.send(StartOrder {
                worker: name.to_string(),
                def: def.clone(),
                token,
            });
        }
    }

    /// Follows latent worker `name`'s phase (a build waiting for its start).
    pub fn watch(&self, name: &str) -> watch::Receiver<Phase> {
        let mut book = self.lock();
        book.entry(name.to_string())
            .or_insert_with(Instance::new)
            .phase
            .subscribe()
    }

    pub fn phase(&self, name: &str) -> Phase {
        self.lock()
            .get(name)
            .map_or(Phase::Stopped, Instance::phase)
    }

    /// Whether `password` is the one-time password of `name`'s current
    /// start (compared in constant time).
    pub fn token_ok(&self, name: &str, password: &str) -> bool {
        let book = self.lock();
        match book.get(name).and_then(|i| i.token.as_deref()) {
            // Empty: no generator made one; nothing matches it.
            Some(t) if !t.is_empty() => constant_time_eq(t, password),
            _ => false,
        }
    }

    /// The start of `name` ended with its worker connected; returns how
    /// long it took.
    pub fn up(&self, name: &str) -> Option<Duration> {
        let mut book = self.lock();
        let i = book.get_mut(name)?;
        i.failures = 0;
        i.retry_at = None;
        i.idle_since = None;
        i.phase.send_replace(Phase::Up);
        i.started_at.map(|t| t.elapsed())
    }

    /// The start of `name` failed: builds waiting for it end as retry with
    /// `why`, and the next start waits for the back-off. Returns when that
    /// is, and how many starts failed in a row.
    pub fn failed(&self, name: &str, why: String) -> (Instant, u32) {
        let mut book = self.lock();
        let i = book.entry(name.to_string()).or_insert_with(Instance::new);
        i.failures = i.failures.saturating_add(1);
        let pause = BACKOFF_FIRST
            .saturating_mul(1u32 << (i.failures - 1).min(16))
            .min(BACKOFF_MAX);
        let at = Instant::now() + pause;
        i.retry_at = Some(at);
        i.token = None;
        i.started_at = None;
        i.phase.send_replace(Phase::Failed(why));
        (at, i.failures)
    }

    /// `name` is to be stopped, if it is up and has been idle for its
    /// `idle` time (`busy`: builds running on it; `connected`: its
    /// connection is open) at `now`, or is up but no longer connected (it
    /// died), or its config entry is gone or no longer latent (`def` is
    /// then what to stop it with). Marks it stopping and returns the
    /// definition to stop it with and why; else the time it is next due,
    /// if any.
    pub fn idle_check(
        &self,
        g: &Graph,
        name: &str,
        busy: usize,
        connected: bool,
        now: Instant,
    ) -> Result<(Latent, String), Option<Instant>> {
        let mut book = self.lock();
        let Some(i) = book.get_mut(name) else {
            return Err(None);
        };
        if i.phase() != Phase::Up {
            return Err(None);
        }
        let Some(def) = i.def.clone() else {
            return Err(None);
        };
        let configured = g.worker(name).and_then(|w| w.latent.as_ref());
        let why = if !connected {
            "its worker disconnected".to_string()
        } else if busy > 0 {
            i.idle_since = None;
            return Err(None);
        } else if configured.is_none() {
            "it is no longer a latent worker in the configuration".to_string()
        } else {
            let idle = Duration::from_millis(configured.map_or(def.idle_ms, |l| l.idle_ms));
            let since = *i.idle_since.get_or_insert(now);
            if now < since + idle {
                return Err(Some(since + idle));
            }
            format!("idle for {} s", idle.as_secs())
        };
        i.phase.send_replace(Phase::Stopping);
        i.token = None;
        Ok((def, why))
    }

    /// `name` was stopped (or its stop failed, which leaves it to the
    /// admin: the master starts a new one when needed).
    pub fn stopped(&self, name: &str) {
        let mut book = self.lock();
        if let Some(i) = book.get_mut(name) {
            i.token = None;
            i.idle_since = None;
            i.phase.send_replace(Phase::Stopped);
        }
    }

    /// Marks every latent worker that is up, starting or stopping as
    /// stopping (so that no idle check stops one a second time) and
    /// returns them with the definition each was started with: what a
    /// shutdown stops.
    pub fn stop_all(&self) -> Vec<(String, Option<Latent>)> {
        let mut book = self.lock();
        book.iter_mut()
            .filter(|(_, i)| i.running())
            .map(|(n, i)| {
                i.phase.send_replace(Phase::Stopping);
                i.token = None;
                (n.clone(), i.def.clone())
            })
            .collect()
    }

    /// Names of the latent workers that are up.
    pub fn up_names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, i)| i.phase() == Phase::Up)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Room under `latent-workers max` for one more start.
fn room(book: &HashMap<String, Instance>, g: &Graph) -> bool {
    match g.master.latent_max {
        None => true,
        Some(max) => book.values().filter(|i| i.running()).count() < max as usize,
    }
}

/// 128 random bits in hex: a password for one start of one latent worker.
fn one_time_password() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No system generator: a password nobody can guess is not to be
        // had, so this start's worker cannot log in (and the start fails
        // with a timeout) rather than log in with a weak one.
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a build assigned to a latent worker waits for.
pub enum Wait {
    /// The start failed, or the worker went away before the build began.
    Failed(String),
    Cancelled,
}

/// Waits until latent worker `name` is up and connected; the build's
/// `cancel` ends the wait.
pub async fn wait_up(
    shared: &super::Shared,
    name: &str,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Arc<super::WorkerConn>, Wait> {
    let mut phase = shared.latent.watch(name);
    loop {
        let now = phase.borrow_and_update().clone();
        match now {
            Phase::Up => {
                let conn = shared
                    .workers
                    .lock()
                    .ok()
                    .and_then(|w| w.get(name).cloned())
                    .filter(|c| !c.is_closed());
                return conn
                    .ok_or_else(|| Wait::Failed(format!("latent worker `{name}` disconnected")));
            }
            Phase::Failed(why) => return Err(Wait::Failed(why)),
            Phase::Stopped | Phase::Stopping => {
                return Err(Wait::Failed(format!(
                    "latent worker `{name}` stopped before the build began"
                )))
            }
            Phase::Starting => {}
        }
        if *cancel.borrow() {
            return Err(Wait::Cancelled);
        }
        tokio::select! {
            r = phase.changed() => {
                if r.is_err() {
                    return Err(Wait::Failed("the master is stopping".into()));
                }
            }
            c = cancel.changed() => {
                // The slot is gone (the queue dropped it): nobody waits.
                if c.is_err() {
                    return Err(Wait::Cancelled);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbc_graph::{Credential, LatentKind, Master, Worker};

    fn latent(idle_ms: u64) -> Latent {
        Latent {
            kind: LatentKind::Command {
                start: "true".into(),
                stop: "true".into(),
            },
            idle_ms,
            start_timeout_ms: 1000,
            connect: None,
        }
    }

    fn graph(max: Option<u32>, names: &[&str]) -> Graph {
        let master = Master {
            latent_max: max,
            ..Master::default()
        };
        Graph {
            format: "bbc-graph".into(),
            version: bbc_graph::VERSION,
            master,
            workers: names
                .iter()
                .map(|n| Worker {
                    name: n.to_string(),
                    password: Credential::Secret { secret: "w".into() },
                    max_builds: 1,
                    properties: Default::default(),
                    keepalive_ms: 60_000,
                    missing_timeout_ms: 3_600_000,
                    downtime: Vec::new(),
                    protocol: Default::default(),
                    latent: Some(latent(1000)),
                    hash: String::new(),
                })
                .collect(),
            locks: Vec::new(),
            change_sources: Vec::new(),
            schedulers: Vec::new(),
            builders: Vec::new(),
            reporters: Vec::new(),
        }
    }

    #[test]
    fn starts_respect_the_limit_and_one_time_passwords() {
        let g = graph(Some(1), &["a", "b"]);
        let book = LatentBook::new(([127, 0, 0, 1], 9989).into());
        let mut orders = book.take_orders().unwrap_or_else(|| panic!("orders"));
        let now = Instant::now();
        assert!(book.can_take(&g, "a", false, now));
        book.claim("a", &latent(1000));
        let o = orders.try_recv().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.worker, "a");
        assert_eq!(o.token.len(), 32);
        // Starting: more builds may wait for it; no second order.
        assert!(book.can_take(&g, "a", false, now));
        book.claim("a", &latent(1000));
        assert!(orders.try_recv().is_err());
        // The limit (1) is taken: `b` waits.
        assert!(!book.can_take(&g, "b", false, now));
        // Only this start's password admits `a`.
        assert!(book.token_ok("a", &o.token));
        assert!(!book.token_ok("a", "guess"));
        assert!(!book.token_ok("b", &o.token));
        // Up, but its connection gone: no build for it.
        book.up("a");
        assert!(book.can_take(&g, "a", true, now));
        assert!(!book.can_take(&g, "a", false, now));
    }

    #[test]
    fn idle_workers_stop_and_failed_starts_back_off() {
        let g = graph(None, &["a"]);
        let book = LatentBook::new(([127, 0, 0, 1], 9989).into());
        let t0 = Instant::now();
        book.claim("a", &latent(1000));
        book.up("a");
        // Busy: not due. Idle: due after its second.
        assert!(matches!(book.idle_check(&g, "a", 1, true, t0), Err(None)));
        let due = book.idle_check(&g, "a", 0, true, t0);
        assert!(matches!(due, Err(Some(t)) if t == t0 + Duration::from_secs(1)));
        let stop = book.idle_check(&g, "a", 0, true, t0 + Duration::from_secs(1));
        assert!(
            matches!(stop, Ok((_, ref why)) if why.contains("idle")),
            "{stop:?}"
        );
        assert_eq!(book.phase("a"), Phase::Stopping);
        // Stopping: the password no longer admits it, and no build goes there.
        assert!(!book.can_take(&g, "a", true, t0));
        book.stopped("a");
        // A failed start: waiting builds see why; no start before the
        // back-off, which doubles.
        book.claim("a", &latent(1000));
        let (at1, n1) = book.failed("a", "no quota".into());
        assert_eq!(n1, 1);
        assert_eq!(book.phase("a"), Phase::Failed("no quota".into()));
        assert!(!book.can_take(&g, "a", false, Instant::now()));
        assert!(book.can_take(&g, "a", false, at1));
        book.claim("a", &latent(1000));
        let before = Instant::now();
        let (at2, n2) = book.failed("a", "no quota".into());
        assert_eq!(n2, 2);
        assert!(at2 >= before + Duration::from_secs(2));
        // A start that succeeds resets it.
        book.claim("a", &latent(1000));
        book.up("a");
        let (_, n3) = book.failed("a", "again".into());
        assert_eq!(n3, 1);
    }
}
