//! The git poller: one task per `git-poller` source keeps a bare mirror in
//! `STATE/gitpoller/<name>.git`, fetches into it every poll interval and
//! turns new commits (or tags) into changes.
//!
//! The heads last seen are stored in the store's state (`poller:<name>:heads`)
//! and advanced after each change is stored, so a restart of the master
//! neither repeats changes nor loses them; at worst a crash between storing
//! a change and advancing the head repeats that one change.
//!
//! Every git command is a child process awaited by tokio (the async
//! runtime is never blocked), with a timeout and no terminal prompt.

mod mirror;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use bbc_graph::{ChangeSourceKind, Scalar};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

pub use mirror::{PollerConfig, MAX_CHANGES_PER_BRANCH};

use mirror::{commit_exists, describe_commit, ensure_mirror, fetch, new_commits, read_heads};

use crate::api_error::ApiError;
use crate::auth::{Control, Scope};
use crate::state::{now_ms, Shared};
use crate::store::{Millis, NewChange};

/// The longest back-off between failing polls, whatever the interval.
const MAX_BACKOFF_MS: u64 = 3_600_000;

/// The result of one poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollReport {
    /// Ids of the changes stored, oldest commit first.
    pub changes: Vec<u64>,
    /// True when this poll only recorded the heads (first poll ever).
    pub initialized: bool,
}

/// What the API shows of a running poller.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollStatus {
    pub running: bool,
    pub last_poll_at: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub next_poll_at: Option<Millis>,
    pub changes_since_start: u64,
}

type Reply = oneshot::Sender<Result<PollReport, String>>;

struct Handle {
    tx: mpsc::Sender<Reply>,
    status: Mutex<PollStatus>,
    /// Makes the task read its config again at once (an applied config
    /// changed or removed its source): it then polls with the new settings
    /// or stops.
    nudge: tokio::sync::Notify,
}

/// The running pollers of one master, by source name. The poller task
/// starts and stops them; the change-source routes reach them through it
/// (status, poll now).
#[derive(Default)]
pub struct Pollers(Mutex<HashMap<String, Arc<Handle>>>);

impl Pollers {
    fn get(&self, name: &str) -> Option<Arc<Handle>> {
        self.0.lock().ok()?.get(name).cloned()
    }

    /// Whether the poller task of source `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.get(name).is_some_and(|h| !h.tx.is_closed())
    }
}

/// The mirror of a source: `STATE/gitpoller/<name>.git`. Names are free
/// text in the config, so anything but `[A-Za-z0-9._-]` becomes `_` and a
/// hash of the real name keeps two such names apart.
pub fn mirror_path(state_dir: &Path, name: &str) -> PathBuf {
    let mut safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe != name || safe.starts_with('.') || safe.is_empty() {
        use sha2::Digest;
        let h = sha2::Sha256::digest(name.as_bytes());
        safe.push('-');
        for b in &h[..4] {
            safe.push_str(&format!("{b:02x}"));
        }
    }
    state_dir.join("gitpoller").join(format!("{safe}.git"))
}

pub fn state_key(name: &str) -> String {
    format!("poller:{name}:heads")
}

fn config_of(shared: &Shared, name: &str) -> Option<PollerConfig> {
    let g = shared.graph();
    g.change_sources
        .iter()
        .find(|c| c.name == name)
        .and_then(|c| match &c.kind {
            ChangeSourceKind::GitPoller {
                repo,
                branches,
                poll_interval_ms,
                only_tags,
            } => Some(PollerConfig {
                repo: repo.clone(),
                branches: branches.clone(),
                poll_interval_ms: *poll_interval_ms,
                only_tags: *only_tags,
                codebase: c.codebase.clone(),
            }),
            _ => None,
        })
}

/// Starts the pollers of the current graph, then the task that keeps
/// them in line with every applied config (from [`Shared::configs`], like
/// every service).
pub(crate) fn spawn(shared: Arc<Shared>, pollers: Arc<Pollers>) -> tokio::task::JoinHandle<()> {
    // Subscribed before the graph is read: no applied config is missed.
    let mut configs = shared.configs.subscribe();
    spawn_missing(&shared, &pollers);
    tokio::spawn(async move {
        loop {
            let ev = match configs.recv().await {
                Ok(ev) => ev,
                // Applies wait for every listener, so none is missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            reconcile(&shared, &pollers, &ev.previous, &ev.graph);
            ev.reconciled();
        }
    })
}

/// Starts one polling task per `git-poller` change source that has none
/// running (tasks are kept by `Shared::track`, so shutdown stops them).
fn spawn_missing(shared: &Arc<Shared>, pollers: &Arc<Pollers>) {
    let g = shared.graph();
    for c in &g.change_sources {
        if !matches!(c.kind, ChangeSourceKind::GitPoller { .. }) {
            continue;
        }
        let Ok(mut reg) = pollers.0.lock() else {
            tracing::error!(source = %c.name, "poller registry poisoned; not polling");
            continue;
        };
        if reg.get(&c.name).is_some_and(|h| !h.tx.is_closed()) {
            continue;
        }
        // Room for a few queued poll requests; more wait for a slot.
        let (tx, rx) = mpsc::channel(8);
        let handle = Arc::new(Handle {
            tx,
            status: Mutex::new(PollStatus {
                running: true,
                ..PollStatus::default()
            }),
            nudge: tokio::sync::Notify::new(),
        });
        reg.insert(c.name.clone(), handle.clone());
        drop(reg);
        let mirror = mirror_path(&shared.state_dir, &c.name);
        let task = tokio::spawn(run(
            shared.clone(),
            pollers.clone(),
            c.name.clone(),
            mirror,
            handle,
            rx,
        ));
        shared.track(task);
    }
}

/// After a config is applied: pollers whose source was removed (or is no
/// longer a git poller) stop, pollers whose settings changed poll at once
/// with the new ones, pollers of new sources start. A poll in progress
/// finishes first.
fn reconcile(
    shared: &Arc<Shared>,
    pollers: &Arc<Pollers>,
    old: &bbc_graph::Graph,
    new: &bbc_graph::Graph,
) {
    for c in &old.change_sources {
        if !matches!(c.kind, ChangeSourceKind::GitPoller { .. }) {
            continue;
        }
        let same = new
            .change_sources
            .iter()
            .find(|n| n.name == c.name)
            .is_some_and(|n| n.hash == c.hash);
        if !same {
            if let Some(h) = pollers.get(&c.name) {
                h.nudge.notify_one();
            }
        }
    }
    spawn_missing(shared, pollers)
}

/// Delay before the next poll after `failures` failed polls in a row:
/// the interval, doubled per failure, capped at 10× the interval or an
/// hour (but never shorter than the interval itself).
pub fn next_delay_ms(interval_ms: u64, failures: u32) -> u64 {
    let interval = interval_ms.max(1000);
    if failures == 0 {
        return interval;
    }
    let cap = interval.max(interval.saturating_mul(10).min(MAX_BACKOFF_MS));
    let factor = 1u64.checked_shl(failures.min(32)).unwrap_or(u64::MAX);
    interval.saturating_mul(factor).min(cap)
}

async fn run(
    shared: Arc<Shared>,
    pollers: Arc<Pollers>,
    name: String,
    key: PathBuf,
    handle: Arc<Handle>,
    mut rx: mpsc::Receiver<Reply>,
) {
    let mut failures: u32 = 0;
    // Poll at launch: the first poll ever records the heads, and later
    // ones catch up on what was pushed while the master was down.
    let mut next = tokio::time::Instant::now();
    loop {
        let reply = tokio::select! {
            _ = tokio::time::sleep_until(next) => None,
            _ = handle.nudge.notified() => None,
            r = rx.recv() => match r {
                Some(r) => Some(r),
                None => break,
            },
        };
        if shared.is_shutting_down() {
            break;
        }
        // Several masters on one store: only the holder of the schedulers'
        // lease polls (its schedulers hear the changes first); the others
        // look again after an interval (master/peers.rs).
        if !shared.peers.holds(crate::state::peers::SCHEDULERS) {
            if let Some(r) = reply {
                let _ = r.send(Err(
                    "another master sharing the store polls the change sources".into(),
                ));
            }
            let every = config_of(&shared, &name).map_or(60_000, |c| c.poll_interval_ms);
            next = tokio::time::Instant::now() + Duration::from_millis(every.clamp(100, 60_000));
            continue;
        }
        // The config is read at every poll, so a swapped graph applies.
        let Some(cfg) = config_of(&shared, &name) else {
            tracing::info!(source = %name, "the git poller is no longer configured; stopping");
            if let Some(r) = reply {
                let _ = r.send(Err("this change source is no longer a git poller".into()));
            }
            break;
        };
        let started = now_ms();
        let result = poll_once(&shared, &name, &cfg, &key).await;
        match &result {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(source = %name, repo = %cfg.repo, "polling works again after {failures} failure(s)");
                }
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = next_delay_ms(cfg.poll_interval_ms, failures);
                tracing::warn!(
                    source = %name,
                    repo = %cfg.repo,
                    "polling failed ({failures} in a row; next try in {}s): {e}",
                    delay / 1000
                );
            }
        }
        let delay = next_delay_ms(cfg.poll_interval_ms, failures);
        next = tokio::time::Instant::now() + Duration::from_millis(delay);
        if let Ok(mut st) = handle.status.lock() {
            st.last_poll_at = Some(started);
            st.consecutive_failures = failures;
            st.next_poll_at = Some(now_ms() + delay as i64);
            match &result {
                Ok(r) => {
                    st.last_success_at = Some(started);
                    st.last_error = None;
                    st.changes_since_start += r.changes.len() as u64;
                }
                Err(e) => st.last_error = Some(e.clone()),
            }
        }
        if let Some(r) = reply {
            let _ = r.send(result);
        }
    }
    if let Ok(mut st) = handle.status.lock() {
        st.running = false;
        st.next_poll_at = None;
    }
    if let Ok(mut reg) = pollers.0.lock() {
        if reg.get(&name).is_some_and(|h| Arc::ptr_eq(h, &handle)) {
            reg.remove(&name);
        }
    }
}

pub(crate) fn status_json(pollers: &Pollers, name: &str) -> Value {
    let status = pollers.get(name).and_then(|h| {
        let mut s = h.status.lock().ok()?.clone();
        // An aborted task (master shut down) never cleared its flag.
        s.running &= !h.tx.is_closed();
        Some(s)
    });
    match status {
        Some(s) => serde_json::to_value(s).unwrap_or(Value::Null),
        None => json!({"running": false}),
    }
}

/// `POST /api/v1/change_sources/{name}/poll`: polls now, waits for the
/// poll to end and answers with the changes it stored (502 when git
/// failed, with git's message).
pub(crate) async fn poll_now(
    ctl: Control,
    State(s): State<Arc<Shared>>,
    Extension(pollers): Extension<Arc<Pollers>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    ctl.allow(&s, bbc_graph::Grant::Force, Scope::Everything)?;
    let c = super::source::find_source(&s, &name)?;
    if !matches!(c.kind, ChangeSourceKind::GitPoller { .. }) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "change source `{name}` is a {}, not a git poller",
                super::source::kind_name(&c.kind)
            ),
        ));
    }
    let not_running = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the poller of `{name}` is not running"),
        )
    };
    let h = pollers.get(&name).ok_or_else(not_running)?;
    let (tx, rx) = oneshot::channel();
    h.tx.send(tx).await.map_err(|_| not_running())?;
    match rx.await {
        Ok(Ok(r)) => Ok(Json(json!({
            "source": name,
            "changes": r.changes,
            "initialized": r.initialized,
        }))),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("polling `{name}` failed: {e}"),
        )),
        Err(_) => Err(not_running()),
    }
}

/// What is stored under `poller:<name>:heads`. The repo and mode are kept
/// so that a config pointing the source elsewhere starts afresh (records
/// the heads again) instead of reporting a whole foreign history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PollState {
    repo: String,
    only_tags: bool,
    /// Branch (or tag) name → commit, for every branch of the repository
    /// (watched or not: the others help tell which commits are new).
    heads: BTreeMap<String, String>,
}

async fn load_state(shared: &Arc<Shared>, name: &str) -> Result<Option<PollState>, String> {
    let key = state_key(name);
    let raw = shared
        .db(move |s| s.get_state(&key))
        .await
        .map_err(|e| e.to_string())?;
    Ok(raw.and_then(|b| match serde_json::from_slice(&b) {
        Ok(s) => Some(s),
        Err(e) => {
            // Starting afresh loses at most the changes of one interval;
            // refusing to poll forever would be worse.
            tracing::warn!(source = %name, "stored poller state is unreadable ({e}); recording the heads afresh");
            None
        }
    }))
}

/// The heads the poller stored (`None` before its first poll).
pub(crate) async fn stored_heads(
    shared: &Arc<Shared>,
    name: &str,
) -> crate::store::Result<Option<BTreeMap<String, String>>> {
    let key = state_key(name);
    let raw = shared.db(move |s| s.get_state(&key)).await?;
    Ok(raw
        .and_then(|b| serde_json::from_slice::<PollState>(&b).ok())
        .map(|s| s.heads))
}

async fn save_state(shared: &Arc<Shared>, name: &str, st: &PollState) -> Result<(), String> {
    let key = state_key(name);
    let bytes = serde_json::to_vec(st).map_err(|e| e.to_string())?;
    shared
        .db(move |s| s.put_state(&key, &bytes))
        .await
        .map_err(|e| e.to_string())
}

/// Branch filter: names or globs (`*` stays within a `/`-separated
/// segment, `**` crosses them, as the language documents); none = all.
pub struct BranchFilter(Option<globset::GlobSet>);

impl BranchFilter {
    pub fn new(patterns: &[String]) -> BranchFilter {
        if patterns.is_empty() {
            return BranchFilter(None);
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            // The compiler rejected invalid globs; one that still fails
            // here matches literally rather than taking the poller down.
            match globset::GlobBuilder::new(p).literal_separator(true).build() {
                Ok(g) => {
                    b.add(g);
                }
                Err(_) => {
                    if let Ok(g) = globset::Glob::new(&globset::escape(p)) {
                        b.add(g);
                    }
                }
            }
        }
        BranchFilter(b.build().ok())
    }

    pub fn matches(&self, branch: &str) -> bool {
        match &self.0 {
            None => true,
            Some(set) => set.is_match(branch),
        }
    }
}

/// One poll: fetch, compare with the stored heads, store one change per
/// new commit (or new tag), advance the stored heads.
pub async fn poll_once(
    shared: &Arc<Shared>,
    name: &str,
    cfg: &PollerConfig,
    mirror: &Path,
) -> Result<PollReport, String> {
    ensure_mirror(mirror).await?;
    fetch(mirror, cfg).await?;
    let current = read_heads(mirror, cfg.only_tags).await?;
    let old = load_state(shared, name)
        .await?
        .filter(|s| s.repo == cfg.repo && s.only_tags == cfg.only_tags);
    let Some(old) = old else {
        // First poll ever (or the source now points elsewhere): the
        // history so far is not news.
        let st = PollState {
            repo: cfg.repo.clone(),
            only_tags: cfg.only_tags,
            heads: current.clone(),
        };
        save_state(shared, name, &st).await?;
        tracing::info!(
            source = %name,
            repo = %cfg.repo,
            "first poll: recorded {} {}; no changes for existing history",
            current.len(),
            if cfg.only_tags { "tag(s)" } else { "branch(es)" }
        );
        return Ok(PollReport {
            changes: Vec::new(),
            initialized: true,
        });
    };
    let filter = BranchFilter::new(&cfg.branches);
    // Commits reachable from these were reported already, or belong to
    // branches that existed before: a new branch reports only what it
    // adds to them.
    let mut known: std::collections::BTreeSet<String> = old.heads.values().cloned().collect();
    for (b, h) in &current {
        if old.heads.contains_key(b) {
            known.insert(h.clone());
        }
    }
    let known: Vec<String> = known.into_iter().collect();
    let mut st = PollState {
        repo: cfg.repo.clone(),
        only_tags: cfg.only_tags,
        // Deleted branches drop out here: only current ones are kept,
        // each at its old head until its changes are stored.
        heads: current
            .keys()
            .filter_map(|b| old.heads.get(b).map(|h| (b.clone(), h.clone())))
            .collect(),
    };
    let mut report = PollReport::default();
    for (branch, new) in &current {
        let old_head = old.heads.get(branch);
        if old_head == Some(new) {
            continue;
        }
        if !filter.matches(branch) {
            st.heads.insert(branch.clone(), new.clone());
            continue;
        }
        let shas = if cfg.only_tags {
            // A new (or moved) tag is one change: its commit.
            vec![new.clone()]
        } else {
            let exclude = match old_head {
                Some(h) if commit_exists(mirror, h).await => vec![h.clone()],
                _ => known.clone(),
            };
            let mut shas = new_commits(mirror, new, &exclude, branch).await?;
            if shas.is_empty() && old_head.is_none() {
                // A new branch made at an existing commit still deserves
                // a build: one change for its head (as a forge's push
                // webhook reports it).
                shas.push(new.clone());
            }
            shas
        };
        for sha in shas {
            let mut c = match describe_commit(mirror, &sha).await {
                Ok(c) => c,
                // A tag may name a tree or a blob: report it bare.
                Err(_) if cfg.only_tags => NewChange {
                    revision: sha.clone(),
                    ..NewChange::default()
                },
                Err(e) => return Err(e),
            };
            c.source = name.to_string();
            c.repository = cfg.repo.clone();
            c.codebase = cfg.codebase.clone();
            c.branch = branch.clone();
            if c.when == 0 {
                c.when = now_ms();
            }
            let event = if cfg.only_tags { "tag" } else { "push" };
            c.properties
                .insert("event".into(), Scalar::String(event.into()));
            let stored = shared.add_change(c).await.map_err(|e| e.to_string())?;
            report.changes.push(stored.id);
            // Advance right after each stored change, so a crash repeats
            // at most this one change and loses none.
            st.heads.insert(branch.clone(), sha);
            save_state(shared, name, &st).await?;
        }
        st.heads.insert(branch.clone(), new.clone());
    }
    save_state(shared, name, &st).await?;
    if !report.changes.is_empty() {
        tracing::info!(source = %name, "{} new change(s)", report.changes.len());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(next_delay_ms(60_000, 0), 60_000);
        assert_eq!(next_delay_ms(60_000, 1), 120_000);
        assert_eq!(next_delay_ms(60_000, 2), 240_000);
        // 10× the interval…
        assert_eq!(next_delay_ms(60_000, 10), 600_000);
        // …or an hour, whichever is shorter…
        assert_eq!(next_delay_ms(600_000, 10), 3_600_000);
        // …but never less than the interval.
        assert_eq!(next_delay_ms(7_200_000, 3), 7_200_000);
        assert_eq!(next_delay_ms(60_000, 200), 600_000);
    }

    #[test]
    fn branch_globs_stay_within_a_segment() {
        let f = BranchFilter::new(&["main".into(), "release/*".into()]);
        assert!(f.matches("main"));
        assert!(f.matches("release/1.0"));
        assert!(!f.matches("release/1.0/hotfix"));
        assert!(!f.matches("feature"));
        assert!(BranchFilter::new(&[]).matches("anything/at/all"));
        let deep = BranchFilter::new(&["team/**".into()]);
        assert!(deep.matches("team/a/b"));
    }

    #[test]
    fn mirror_names_are_safe_and_distinct() {
        let d = Path::new("/s");
        assert_eq!(
            mirror_path(d, "widget"),
            PathBuf::from("/s/gitpoller/widget.git")
        );
        let a = mirror_path(d, "a/b");
        let b = mirror_path(d, "a_b");
        assert_ne!(a, b);
        assert!(a.starts_with("/s/gitpoller"));
        assert!(!mirror_path(d, "..").to_string_lossy().contains("/../"));
    }
}
