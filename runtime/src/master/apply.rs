//! Hot reload: [`Shared::apply`] replaces the running configuration with a
//! new graph without interrupting a build. It validates, swaps, records and
//! broadcasts ([`ConfigEvent`] on `Shared::configs`); each service then
//! reconciles itself, and the apply answers once they all said so.
//!
//! What happens to each kind of entity (docs/operations.md says the same
//! for operators):
//!
//! - **builders**: a running build keeps the definition it started with
//!   (architecture invariant); new builds use the new one. A removed
//!   builder's pending requests stay stored and pending (they are not
//!   cancelled, so nothing acknowledged is lost); they run if a later config
//!   brings the builder back, and can be cancelled through the API. Queue
//!   order uses the builders' priorities of the config in force.
//! - **workers**: a removed worker takes no new build; once its running
//!   builds have ended it is disconnected (told `refused`), and connecting
//!   again is refused. A password or keepalive change applies at the
//!   worker's next connection; the current one stays.
//! - **schedulers**: removed ones stop and their saved state is dropped (a
//!   scheduler that comes back later starts from "now"); new ones start from
//!   "now"; changed ones restart, keeping what still applies
//!   (`schedulers::Engine::reconcile`).
//! - **change sources**: pollers of removed sources stop, changed ones poll
//!   at once with their new settings, new ones start; webhooks read the
//!   config at each delivery.
//! - **listen addresses and the state directory** are read once at start:
//!   a change is reported as needing a restart and otherwise ignored.
//!
//! Secrets are resolved again for the new graph (a missing one refuses the
//! whole apply, naming it), which also picks up rotated secret values.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bbc_graph::diff::pairs;
use bbc_graph::{ChangeSourceKind, Graph, SchedulerKind, StepKind};
use serde::{Deserialize, Serialize};

use crate::secrets::Secrets;
use crate::state::config::{self, record, AppliedRecord, ConfigEvent, ConfigInfo};
use crate::state::{now_ms, Shared};
use crate::store::{Millis, Page};

/// What one entity's change does to the running master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityReport {
    /// worker, lock, change-source, scheduler, builder, reporter, master.
    pub kind: String,
    pub name: String,
    /// added, removed or changed.
    pub change: String,
    pub effect: String,
}

/// The answer to an apply: what changed and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub hash: String,
    pub previous_hash: String,
    pub applied_at: Millis,
    pub via: String,
    /// False when the graph is the one already running (only secrets were
    /// read again).
    pub changed: bool,
    pub entities: Vec<EntityReport>,
    /// Settings that differ from those the master started with and apply
    /// only after a restart (listen addresses, state directory).
    pub restart_needed: Vec<String>,
    /// Time the master spent applying, in microseconds.
    pub duration_us: u64,
    /// Several masters on one store: every live master and whether it
    /// runs this config now (this one first). Empty for a master alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<MasterApplied>,
    /// Why the other masters were not given this config, when they were
    /// not (it holds a plain-text credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_shared: Option<String>,
}

/// One master's answer to a shared config ([`ApplyReport::masters`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterApplied {
    pub id: String,
    pub name: String,
    /// The master the config was applied through.
    #[serde(default)]
    pub this: bool,
    /// `applied`, `failed` (it keeps its config; `error` says why) or
    /// `no-answer` (it did not say in time; it may still apply it).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// The graph is malformed or inconsistent.
    Invalid(String),
    /// Secrets the graph uses are missing on the master.
    Secrets(String),
    /// The client planned against another config than the running one.
    Stale {
        expected: String,
        running: String,
    },
    Store(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Invalid(m) => write!(f, "invalid graph: {m}"),
            ApplyError::Secrets(m) => f.write_str(m),
            ApplyError::Stale { expected, running } => write!(
                f,
                "the master runs config {running}, not {expected}: it changed since the plan was made; \
                 look again (run `bbc apply` again)"
            ),
            ApplyError::Store(m) => write!(f, "store: {m}"),
        }
    }
}

/// Content hash of a whole graph, from its entities' content hashes.
pub fn config_hash(g: &Graph) -> String {
    bbc_graph::hash::graph_hash(g)
}

/// Whether the graph holds a plain-text credential (which
/// [`redact_credentials`] masks).
pub fn has_plain_credentials(g: &Graph) -> bool {
    bbc_graph::credentials::has_plain(g)
}

/// The graph with every plain-text credential replaced by `********`: what
/// `GET /api/v1/config` shows.
pub fn redact_credentials(g: &mut Graph) {
    bbc_graph::credentials::mask_plain(g)
}

/// Checks what the compiler guarantees and the runtime relies on, for a
/// graph that did not come from this process's compiler: format and
/// version, entities sorted by unique names (lookups bisect), and every
/// reference resolved. The error lists the first problems found.
pub fn validate(g: &Graph) -> Result<(), String> {
    let mut errs: Vec<String> = Vec::new();
    if g.format != bbc_graph::FORMAT {
        errs.push(format!(
            "`format` is \"{}\", not \"{}\"",
            g.format,
            bbc_graph::FORMAT
        ));
    }
    if g.version != bbc_graph::VERSION {
        errs.push(format!(
            "graph format version {} is not supported (this master reads version {}); recompile the config with this bbc",
            g.version,
            bbc_graph::VERSION
        ));
    }
    fn sorted<T>(what: &str, items: &[T], name: impl Fn(&T) -> &str, errs: &mut Vec<String>) {
        for w in items.windows(2) {
            let (a, b) = (name(&w[0]), name(&w[1]));
            if a == b {
                errs.push(format!("{what} `{a}` is defined twice"));
            } else if a > b {
                errs.push(format!(
                    "{what}s are not sorted by name (`{a}` comes before `{b}`); `bbc compile` writes them sorted"
                ));
                return;
            }
        }
    }
    sorted("worker", &g.workers, |x| &x.name, &mut errs);
    sorted("lock", &g.locks, |x| &x.name, &mut errs);
    sorted("change source", &g.change_sources, |x| &x.name, &mut errs);
    sorted("scheduler", &g.schedulers, |x| &x.name, &mut errs);
    sorted("builder", &g.builders, |x| &x.name, &mut errs);
    sorted("reporter", &g.reporters, |x| &x.name, &mut errs);
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    for b in &g.builders {
        for w in &b.workers {
            if g.worker(w).is_none() {
                errs.push(format!(
                    "builder `{}` names an unknown worker `{w}`",
                    b.name
                ));
            }
        }
        let step_locks = b.steps.iter().flat_map(|s| s.locks.iter());
        for l in b.locks.iter().chain(step_locks) {
            if g.lock(&l.lock).is_none() {
                errs.push(format!(
                    "builder `{}` uses an unknown lock `{}`",
                    b.name, l.lock
                ));
            }
        }
        for st in &b.steps {
            if let StepKind::Trigger { schedulers, .. } = &st.kind {
                for s in schedulers {
                    if g.scheduler(s).is_none() {
                        errs.push(format!(
                            "step `{}` of builder `{}` triggers an unknown scheduler `{s}`",
                            st.name, b.name
                        ));
                    }
                }
            }
        }
    }
    for s in &g.schedulers {
        for b in &s.builders {
            if g.builder(b).is_none() {
                errs.push(format!(
                    "scheduler `{}` names an unknown builder `{b}`",
                    s.name
                ));
            }
        }
        if let SchedulerKind::Dependent { upstream } = &s.kind {
            if g.scheduler(upstream).is_none() {
                errs.push(format!(
                    "scheduler `{}` follows an unknown scheduler `{upstream}`",
                    s.name
                ));
            }
        }
    }
    for r in &g.reporters {
        for b in &r.builders {
            if g.builder(b).is_none() {
                errs.push(format!(
                    "reporter `{}` names an unknown builder `{b}`",
                    r.name
                ));
            }
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let more = errs.len().saturating_sub(10);
    errs.truncate(10);
    let mut msg = errs.join("; ");
    if more > 0 {
        msg.push_str(&format!("; and {more} more"));
    }
    Err(msg)
}

/// What runs now, for the report.
#[derive(Default)]
struct Snapshot {
    running_by_builder: HashMap<String, usize>,
    running_by_worker: HashMap<String, usize>,
    pending_by_builder: HashMap<String, usize>,
    connected: BTreeSet<String>,
}

impl Snapshot {
    fn take(shared: &Shared) -> Snapshot {
        let mut s = Snapshot::default();
        if let Ok(q) = shared.queue.lock() {
            for r in q.running() {
                *s.running_by_builder.entry(r.builder.clone()).or_default() += 1;
                *s.running_by_worker.entry(r.worker.clone()).or_default() += 1;
            }
            for e in q.pending() {
                *s.pending_by_builder
                    .entry(e.req.builder.clone())
                    .or_default() += 1;
            }
        }
        if let Ok(w) = shared.workers.lock() {
            s.connected = w
                .iter()
                .filter(|(_, c)| !c.is_closed())
                .map(|(n, _)| n.clone())
                .collect();
        }
        s
    }
}

/// "1 running build finishes", "2 running builds finish".
fn count(n: usize, what: &str, verb: (&str, &str)) -> String {
    if n == 1 {
        format!("1 {what} {}", verb.0)
    } else {
        format!("{n} {what}s {}", verb.1)
    }
}

fn entry(kind: &str, name: &str, old: bool, new: bool, effect: String) -> EntityReport {
    EntityReport {
        kind: kind.into(),
        name: name.into(),
        change: match (old, new) {
            (false, _) => "added",
            (_, false) => "removed",
            _ => "changed",
        }
        .into(),
        effect,
    }
}

fn scheduler_effect(old: &SchedulerKind, new: &SchedulerKind) -> String {
    use SchedulerKind as K;
    if old == new {
        return "updated: its next build sets go to its new builders; its state is kept".into();
    }
    if std::mem::discriminant(old) != std::mem::discriminant(new) {
        return format!(
            "restarted as a {} scheduler, from now (a {} scheduler's state does not apply)",
            new.name(),
            old.name()
        );
    }
    match (old, new) {
        (K::SingleBranch { .. }, _) | (K::AnyBranch { .. }, _) => {
            "restarted: changes it collected are kept if they pass its new filter, and their tree-stable timer starts again".into()
        }
        (K::Periodic { .. }, _) => {
            "restarted: its next build is one (new) interval after its last one".into()
        }
        (K::Nightly { cron: c1, tz: t1, .. }, K::Nightly { cron: c2, tz: t2, .. }) => {
            if c1 != c2 || t1 != t2 {
                "restarted: it next builds at the next slot of its new schedule (no catching up)"
                    .into()
            } else {
                "restarted: its slots so far and the changes it collected (if they pass its new filter) are kept".into()
            }
        }
        (K::Dependent { upstream: u1 }, K::Dependent { upstream: u2 }) if u1 != u2 => {
            format!("restarted: it now follows `{u2}` (build sets of `{u1}` it waited for are dropped)")
        }
        _ => "updated: applies to the next build set it starts".into(),
    }
}

/// The names of the fields flagged as changed, in order.
fn changed<'a>(fields: &[(&'a str, bool)]) -> Vec<&'a str> {
    fields.iter().filter(|(_, c)| *c).map(|(n, _)| *n).collect()
}

/// One report per entity of one kind that was added, removed or changed
/// (by hash) from `old` to `new`; `effect` tells what that does, from the
/// entity's name and its old and new definitions.
fn report_each<'a, T>(
    out: &mut Vec<EntityReport>,
    kind: &str,
    (old, new): (&'a [T], &'a [T]),
    name: impl Fn(&T) -> &str,
    hash: impl Fn(&T) -> &str,
    effect: impl Fn(&str, Option<&'a T>, Option<&'a T>) -> String,
) {
    for (o, n) in pairs(old, new, &name, hash) {
        let nm = o.or(n).map(&name).unwrap_or_default();
        out.push(entry(kind, nm, o.is_some(), n.is_some(), effect(nm, o, n)));
    }
}

fn worker_effect(
    name: &str,
    o: Option<&bbc_graph::Worker>,
    n: Option<&bbc_graph::Worker>,
    snap: &Snapshot,
) -> String {
    let running = snap.running_by_worker.get(name).copied().unwrap_or(0);
    let connected = snap.connected.contains(name);
    match (o, n) {
        (None, Some(_)) => "can connect now".to_string(),
        (Some(_), None) if connected && running > 0 => format!(
            "takes no new builds; disconnected once {}",
            count(running, "running build", ("has ended", "have ended"))
        ),
        (Some(_), None) if connected => {
            "disconnected (it ran no build); it is refused if it connects again".into()
        }
        (Some(_), None) => "it is refused if it connects".into(),
        (Some(a), Some(b)) => {
            let now = changed(&[
                ("max-builds", a.max_builds != b.max_builds),
                ("properties", a.properties != b.properties),
                ("downtime", a.downtime != b.downtime),
                (
                    "missing-timeout",
                    a.missing_timeout_ms != b.missing_timeout_ms,
                ),
            ]);
            let next = changed(&[
                ("password", a.password != b.password),
                ("keepalive", a.keepalive_ms != b.keepalive_ms),
            ]);
            let mut parts = Vec::new();
            if !now.is_empty() {
                parts.push(format!("{}: apply to new builds", now.join(", ")));
            }
            if !next.is_empty() {
                parts.push(format!(
                    "{}: at its next connection{}",
                    next.join(", "),
                    if connected {
                        " (the current one stays)"
                    } else {
                        ""
                    }
                ));
            }
            parts.join("; ")
        }
        (None, None) => String::new(),
    }
}

fn change_source_effect(
    name: &str,
    o: Option<&bbc_graph::ChangeSource>,
    n: Option<&bbc_graph::ChangeSource>,
) -> String {
    let poller = |c: Option<&bbc_graph::ChangeSource>| {
        c.is_some_and(|c| matches!(c.kind, ChangeSourceKind::GitPoller { .. }))
    };
    match (poller(o), poller(n), o.is_some(), n.is_some()) {
        (_, true, false, true) => "poller started".to_string(),
        (true, _, true, false) => "poller stopped".to_string(),
        (true, true, _, _) => "poller restarted with the new settings (it polls now)".into(),
        (true, false, _, _) => {
            format!("poller stopped; deliveries to /change_hook/{name} are accepted")
        }
        (false, true, _, _) => "poller started; webhook deliveries are refused".into(),
        (false, false, false, true) => format!("deliveries to /change_hook/{name} are accepted"),
        (false, false, true, false) => {
            format!("deliveries to /change_hook/{name} are refused (404)")
        }
        _ => "applies to the next delivery".into(),
    }
}

fn builder_effect(
    name: &str,
    o: Option<&bbc_graph::Builder>,
    n: Option<&bbc_graph::Builder>,
    snap: &Snapshot,
) -> String {
    let running = snap.running_by_builder.get(name).copied().unwrap_or(0);
    let pending = snap.pending_by_builder.get(name).copied().unwrap_or(0);
    let mut effect = match (o, n) {
        (None, Some(_)) if pending > 0 => format!(
            "can build now ({} from before)",
            count(pending, "pending request", ("runs", "run"))
        ),
        (None, Some(_)) => "can build now".to_string(),
        (Some(_), None) => format!(
            "{} pending (run if the builder comes back)",
            count(pending, "pending request", ("stays", "stay"))
        ),
        _ => "new builds use the new definition".to_string(),
    };
    if running > 0 {
        effect.push_str(&format!(
            "; {} on the old definition",
            count(running, "running build", ("finishes", "finish"))
        ));
    }
    if let (Some(a), Some(b)) = (o, n) {
        if a.priority != b.priority && pending > 0 {
            effect.push_str(&format!(
                "; {} with priority {}",
                count(pending, "pending request", ("now queues", "now queue")),
                b.priority
            ));
        }
    }
    effect
}

fn master_effect(a: &bbc_graph::Master, b: &bbc_graph::Master) -> String {
    let live = changed(&[
        ("title", a.title != b.title),
        ("url", a.url != b.url),
        ("properties (for new builds)", a.properties != b.properties),
        (
            "retention (from the janitor's next run)",
            a.retention != b.retention,
        ),
        ("users, roles and privacy", a.access != b.access),
    ]);
    let mut effect = if live.is_empty() {
        String::new()
    } else {
        format!("{}: apply now", live.join(", "))
    };
    if a.worker_listen != b.worker_listen
        || a.http_listen != b.http_listen
        || a.state_dir != b.state_dir
    {
        if !effect.is_empty() {
            effect.push_str("; ");
        }
        effect.push_str("listen addresses and the state directory need a restart");
    }
    if a.postgres != b.postgres {
        if !effect.is_empty() {
            effect.push_str("; ");
        }
        // The running store stays; a new one would start empty.
        effect.push_str("the store (`store`) changes only with a restart");
    }
    effect
}

fn describe(old: &Graph, new: &Graph, snap: &Snapshot) -> Vec<EntityReport> {
    let mut out = Vec::new();
    report_each(
        &mut out,
        "worker",
        (&old.workers, &new.workers),
        |x| &x.name,
        |x| &x.hash,
        |name, o, n| worker_effect(name, o, n, snap),
    );
    report_each(
        &mut out,
        "lock",
        (&old.locks, &new.locks),
        |x| &x.name,
        |x| &x.hash,
        |_, o, n| match (o, n) {
            (Some(_), None) => {
                "removed: builds already holding it keep it until they release it".into()
            }
            _ => "applies to builds and steps taking it from now on".into(),
        },
    );
    report_each(
        &mut out,
        "change-source",
        (&old.change_sources, &new.change_sources),
        |x| &x.name,
        |x| &x.hash,
        change_source_effect,
    );
    report_each(
        &mut out,
        "scheduler",
        (&old.schedulers, &new.schedulers),
        |x| &x.name,
        |x| &x.hash,
        |_, o, n| match (o, n) {
            (None, Some(_)) => "started (from now: changes stored before it are not its)".into(),
            (Some(_), None) => "stopped; its saved state is dropped".into(),
            (Some(a), Some(b)) => scheduler_effect(&a.kind, &b.kind),
            (None, None) => String::new(),
        },
    );
    report_each(
        &mut out,
        "builder",
        (&old.builders, &new.builders),
        |x| &x.name,
        |x| &x.hash,
        |name, o, n| builder_effect(name, o, n, snap),
    );
    report_each(
        &mut out,
        "reporter",
        (&old.reporters, &new.reporters),
        |x| &x.name,
        |x| &x.hash,
        |_, o, n| {
            match (o.is_some(), n.is_some()) {
                (false, true) => "started",
                (true, false) => "stopped",
                _ => "restarted with the new settings",
            }
            .into()
        },
    );
    if old.master.hash != new.master.hash {
        let effect = master_effect(&old.master, &new.master);
        out.push(entry("master", "master", true, true, effect));
    }
    out
}

/// Where secrets are read from: `--secrets DIR`, or `STATE/secrets` when
/// it exists. Blocking (it looks at the disk).
fn secrets_dir(
    given: Option<std::path::PathBuf>,
    state_dir: &std::path::Path,
) -> Option<std::path::PathBuf> {
    given.or_else(|| {
        let d = Secrets::default_dir(state_dir);
        d.is_dir().then_some(d)
    })
}

/// The stored history of applied configs, newest first.
pub async fn history(shared: &Arc<Shared>) -> crate::store::Result<Vec<AppliedRecord>> {
    shared.db(config::history).await
}

impl Shared {
    /// Replaces the running configuration by `new` and reconciles the
    /// master with it (module docs). `via` says who asked ("api",
    /// "sighup"); with `expect`, the apply is refused unless the running
    /// config has that hash (the one the client's plan was made against).
    ///
    /// Applies are serialised. On error nothing changed.
    ///
    /// With several masters on one store, the applied config is shared:
    /// the others apply it too, and the answer waits a bounded time for
    /// each to say so ([`shared_config`], [`ApplyReport::masters`]).
    pub async fn apply(
        self: &Arc<Self>,
        new: Graph,
        via: &str,
        expect: Option<&str>,
    ) -> Result<ApplyReport, ApplyError> {
        let t0 = std::time::Instant::now();
        let one_at_a_time = self.apply_lock.lock().await;
        let mut report = self.apply_locked(new, via, expect, true).await?;
        // This master's apply, waiting for the lock included; not the wait
        // for the others' answers.
        report.duration_us = t0.elapsed().as_micros() as u64;
        if self.store.shared() {
            shared_config::share(self, &mut report, one_at_a_time).await;
        }
        Ok(report)
    }

    /// [`Shared::apply`] under the apply lock, on this master only;
    /// `record`: add it to the stored history (a config another master
    /// shared is there already).
    pub(crate) async fn apply_locked(
        self: &Arc<Self>,
        new: Graph,
        via: &str,
        expect: Option<&str>,
        record_it: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let t0 = std::time::Instant::now();
        let old_info = self.config_info();
        if let Some(e) = expect {
            if e != old_info.hash {
                return Err(ApplyError::Stale {
                    expected: e.to_string(),
                    running: old_info.hash.clone(),
                });
            }
        }
        // Validating, hashing a large graph and reading secret files are
        // disk and CPU work: off the async threads.
        let (given, state_dir) = (self.secrets_dir.clone(), self.state_dir.clone());
        let checked = tokio::task::spawn_blocking(move || {
            validate(&new).map_err(ApplyError::Invalid)?;
            bbc_graph::hash::verify_hashes(&new).map_err(ApplyError::Invalid)?;
            let dir = secrets_dir(given, &state_dir);
            let secrets = Secrets::resolve(&new, dir.as_deref()).map_err(ApplyError::Secrets)?;
            let hash = config_hash(&new);
            Ok::<_, ApplyError>((new, secrets, hash))
        })
        .await
        .map_err(|e| ApplyError::Store(format!("apply task failed: {e}")))?;
        let (new, secrets, hash) = checked?;
        let secrets = Arc::new(secrets);
        let old = old_info.graph.clone();
        if hash == old_info.hash {
            // Same config: only the secrets are read again (rotated values).
            self.set_secrets(secrets);
            return Ok(ApplyReport {
                hash: hash.clone(),
                previous_hash: hash,
                applied_at: old_info.applied_at,
                via: old_info.via.clone(),
                changed: false,
                entities: Vec::new(),
                restart_needed: old_info.restart_needed.clone(),
                duration_us: t0.elapsed().as_micros() as u64,
                masters: Vec::new(),
                not_shared: None,
            });
        }
        let newest_change = self
            .db(|s| {
                s.changes(Page {
                    before: None,
                    limit: 1,
                })
            })
            .await
            .map_err(|e| ApplyError::Store(e.to_string()))?
            .first()
            .map_or(0, |c| c.id);
        let applied_at = now_ms();
        // Recorded before it takes effect: a config that ran is never
        // missing from the history.
        let rec = AppliedRecord {
            hash: hash.clone(),
            applied_at,
            via: via.to_string(),
        };
        if record_it {
            self.db(move |s| record(s, rec))
                .await
                .map_err(|e| ApplyError::Store(e.to_string()))?;
        }
        let new = Arc::new(new);
        let entities = describe(&old, &new, &Snapshot::take(self));
        let restart_needed = self.started_with.restart_needed(&new);

        // The switch. Secrets first: a worker connecting in between finds
        // the new graph's secrets for the new graph.
        self.set_secrets(secrets);
        self.swap_graph(new.clone());
        // Browsers logged in as users this config removes are logged out
        // now (requests already check the user exists; this frees them).
        let ended = self
            .sessions
            .retain_users(|u| new.master.access.users.iter().any(|x| x.name == u));
        if ended > 0 {
            tracing::info!("{ended} web session(s) of removed users ended");
        }
        let info = Arc::new(ConfigInfo {
            graph: new.clone(),
            hash: hash.clone(),
            applied_at,
            via: via.to_string(),
            restart_needed: restart_needed.clone(),
        });
        self.set_config_info(info);
        if let Ok(mut q) = self.queue.lock() {
            q.reprioritize(&new);
        }

        self.wake.notify_one();
        self.locks_released.notify_waiters();

        // Each service (schedulers, pollers, reporters, workers) reconciles
        // itself; the answer waits until they all have, so a client that
        // reads it finds removed reporters stopped and new pollers running.
        let ev = Arc::new(ConfigEvent::new(old, new, newest_change, applied_at));
        // No listener (a master without services, as in some tests) is fine.
        let sent_to = self.configs.send(ev.clone()).unwrap_or(0);
        ev.all_reconciled(&self.configs, sent_to).await;
        let report = ApplyReport {
            hash,
            previous_hash: old_info.hash.clone(),
            applied_at,
            via: via.to_string(),
            changed: true,
            entities,
            restart_needed,
            duration_us: t0.elapsed().as_micros() as u64,
            masters: Vec::new(),
            not_shared: None,
        };
        tracing::info!(
            hash = %report.hash,
            previous = %report.previous_hash,
            via,
            changes = report.entities.len(),
            "configuration applied"
        );
        for r in &report.restart_needed {
            tracing::warn!("{r}");
        }
        Ok(report)
    }
}

pub mod shared_config;
#[cfg(test)]
mod tests;
