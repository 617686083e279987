//! Schedulers: turn changes and time into build sets.
//!
//! The engine is a plain state machine — `on_change`, `on_tick`,
//! `on_buildset_done` take the current time as an argument and return the
//! build sets to submit — so tests drive it with any clock they like. The
//! async loop in [`run`] feeds it changes from the store, wakes it at its
//! next deadline, persists each scheduler's state in the store and submits
//! what it decided.
//!
//! Behaviour (Buildbot's, made explicit):
//! - single-branch / any-branch: changes that pass the filter are collected;
//!   an *important* change (re)starts the tree-stable timer; when the timer
//!   fires, one build set with every collected change is submitted (any-branch
//!   keeps one timer per branch). Unimportant changes never start a build by
//!   themselves; with `only-important` they are left out entirely.
//! - periodic: every `interval`, counted from the scheduler's first start.
//! - nightly: at each cron slot in its time zone; with `only-if-changed`,
//!   only if a matching change arrived since the last build. After a master
//!   restart a slot is never fired twice, and slots missed while the master
//!   was down are caught up with ONE build (for the latest missed slot),
//!   not skipped silently and not replayed one by one.
//! - dependent: when every build of a build set of its upstream scheduler
//!   has succeeded (success or warnings), its builders run on the same source.
//! - A scheduler seen for the first time starts from "now": it does not
//!   build changes that arrived before it existed.
//! - Exactly once: a scheduler's state records the last change it looked
//!   at; changes are read back from the store, so none is skipped and none
//!   counted twice across restarts.
//! - An applied config ([`Engine::reconcile`]): a removed scheduler's state
//!   is dropped (in the store too: one that comes back starts from "now");
//!   a new one starts from the newest change when the config was applied;
//!   a changed one keeps what still applies to its new definition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bbc_graph::{BuildResult, Graph, Scheduler, SchedulerKind};
use serde::{Deserialize, Serialize};

use crate::state::peers::SCHEDULERS;
use crate::state::{now_ms, ConfigEvent, SchedulerTimer, Shared};
use crate::store::{BuildSet, Change, Millis, NewBuildSet, Page, Properties, SourceStamp};
use filter::Filters;
pub use filter::{classify, Filter};

pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

/// What the engine remembers of the last change of a pending batch: the
/// source the build set will build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tip {
    pub repository: String,
    pub branch: String,
    pub revision: String,
    pub properties: Properties,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub changes: Vec<u64>,
    /// When the tree-stable timer fires; `None` while only unimportant
    /// changes are collected.
    pub deadline: Option<Millis>,
    pub tip: Tip,
    /// A scheduler naming codebases: the newest change's tip of each
    /// codebase its changes touched (the others are built at their
    /// branch's head). Absent from states saved before codebases.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codebases: BTreeMap<String, Tip>,
}

impl Pending {
    /// Takes `c` as the newest change of the batch.
    fn take(&mut self, s: &Scheduler, c: &Change) {
        self.tip = tip_of(c);
        if !s.codebases.is_empty() {
            self.codebases
                .insert(c.change.codebase.clone(), self.tip.clone());
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedState {
    /// Highest change id looked at.
    pub last_change: u64,
    /// Collected changes per branch (single-branch uses one entry).
    pub pending: BTreeMap<String, Pending>,
    /// periodic / nightly: the time of the last slot handled.
    pub last_slot: Option<Millis>,
    /// nightly with only-if-changed: matching changes since the last build.
    pub changed: Vec<u64>,
    /// dependent: upstream build sets being waited for.
    pub watching: Vec<u64>,
    /// dependent: the highest build set id looked at (of any scheduler).
    /// The holder reads the sets above it from the store, so a set stored
    /// while no master held the schedulers' lease (its holder had died) is
    /// watched too; one at or below it is never watched again, so a set
    /// fires its dependents once. `None` until the scheduler first looks:
    /// then it starts after the newest set (from "now", as for changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_set: Option<u64>,
}

/// A build set the engine wants submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    pub set: NewBuildSet,
    pub builders: Vec<String>,
}

fn tip_of(c: &Change) -> Tip {
    Tip {
        repository: c.change.repository.clone(),
        branch: c.change.branch.clone(),
        revision: c.change.revision.clone(),
        properties: c.change.properties.clone(),
    }
}

/// The next cron slot strictly after `after`, in the scheduler's zone.
pub fn next_slot(cron: &str, tz: &str, after: Millis) -> Option<Millis> {
    let cron: croner::Cron = cron.parse().ok()?;
    let zone = jiff::tz::TimeZone::get(tz).ok()?;
    let t = jiff::Timestamp::from_millisecond(after)
        .ok()?
        .to_zoned(zone);
    let next = cron.find_next_occurrence(&t, false).ok()?;
    Some(next.timestamp().as_millisecond())
}

/// A scheduler's state, created as "starting now" the first time (a free
/// function, so the compiled filters can be borrowed beside it).
fn state_in<'a>(
    states: &'a mut BTreeMap<String, SchedState>,
    name: &str,
    newest_change: u64,
    now: Millis,
) -> &'a mut SchedState {
    states
        .entry(name.to_string())
        .or_insert_with(|| SchedState {
            last_change: newest_change,
            last_slot: Some(now),
            ..Default::default()
        })
}

#[derive(Default)]
pub struct Engine {
    pub states: BTreeMap<String, SchedState>,
    filters: Filters,
}

impl Engine {
    /// State for a scheduler, created as "starting now" the first time.
    pub fn state(&mut self, name: &str, newest_change: u64, now: Millis) -> &mut SchedState {
        state_in(&mut self.states, name, newest_change, now)
    }

    /// Brings the states in line with a newly applied config: `newest` is
    /// the newest change stored when it was applied, `changes` holds the
    /// changes named by [`Engine::refilter_ids`]. Returns the schedulers
    /// whose state was dropped (their saved state must go too).
    ///
    /// - new scheduler (or one whose kind changed): starts from now;
    /// - same settings, other builders: state kept as is;
    /// - single-branch / any-branch: collected changes are classified again
    ///   with the new filter (those failing it are dropped), and the
    ///   tree-stable timer of a batch with an important change restarts at
    ///   `now` with the new duration;
    /// - periodic: the last slot is kept (the next build is one new interval
    ///   after the last one);
    /// - nightly: a new cron or time zone starts the slots from `now` (no
    ///   catching up on a schedule that did not exist); changes collected
    ///   for `only-if-changed` are classified again;
    /// - dependent: a new upstream drops the build sets it waited for.
    pub fn reconcile(
        &mut self,
        old: &Graph,
        new: &Graph,
        newest: u64,
        now: Millis,
        changes: &HashMap<u64, Change>,
    ) -> Vec<String> {
        let fresh = || SchedState {
            last_change: newest,
            last_slot: Some(now),
            ..Default::default()
        };
        let mut dropped = Vec::new();
        for s in &old.schedulers {
            if new.scheduler(&s.name).is_none() && self.states.remove(&s.name).is_some() {
                dropped.push(s.name.clone());
            }
        }
        for s in &new.schedulers {
            let Some(before) = old.scheduler(&s.name) else {
                self.states.insert(s.name.clone(), fresh());
                continue;
            };
            if before.hash == s.hash || before.kind == s.kind {
                continue;
            }
            if std::mem::discriminant(&before.kind) != std::mem::discriminant(&s.kind) {
                let keep = self.states.get(&s.name).map_or(newest, |st| st.last_change);
                let mut st = fresh();
                // Changes already looked at stay looked at.
                st.last_change = keep.max(newest);
                self.states.insert(s.name.clone(), st);
                continue;
            }
            let Some(st) = self.states.get_mut(&s.name) else {
                self.states.insert(s.name.clone(), fresh());
                continue;
            };
            match (&before.kind, &s.kind) {
                (
                    _,
                    SchedulerKind::SingleBranch {
                        tree_stable_timer_ms,
                        filter,
                        ..
                    }
                    | SchedulerKind::AnyBranch {
                        tree_stable_timer_ms,
                        filter,
                        ..
                    },
                ) => {
                    let m = self.filters.get(s, filter);
                    let mut batches = BTreeMap::new();
                    for p in std::mem::take(&mut st.pending).into_values() {
                        for id in p.changes {
                            let Some(c) = changes.get(&id) else { continue };
                            let Some(important) = classify(&m, s, filter, c) else {
                                continue;
                            };
                            let key = match &s.kind {
                                SchedulerKind::AnyBranch { .. } => c.change.branch.clone(),
                                _ => String::new(),
                            };
                            let b: &mut Pending = batches.entry(key).or_default();
                            b.changes.push(id);
                            b.take(s, c);
                            if important {
                                b.deadline = Some(now + *tree_stable_timer_ms as i64);
                            }
                        }
                    }
                    for b in batches.values_mut() {
                        b.changes.sort_unstable();
                    }
                    st.pending = batches;
                }
                (
                    SchedulerKind::Nightly {
                        cron: c1, tz: t1, ..
                    },
                    SchedulerKind::Nightly {
                        cron: c2,
                        tz: t2,
                        filter,
                        ..
                    },
                ) => {
                    if c1 != c2 || t1 != t2 {
                        st.last_slot = Some(now);
                    }
                    let m = self.filters.get(s, filter);
                    let kept: Vec<u64> = st
                        .changed
                        .iter()
                        .copied()
                        .filter(|id| {
                            changes
                                .get(id)
                                .is_some_and(|c| classify(&m, s, filter, c) == Some(true))
                        })
                        .collect();
                    if kept.is_empty() {
                        st.pending.remove("");
                    } else {
                        let mut p = Pending::default();
                        for c in kept.iter().filter_map(|id| changes.get(id)) {
                            p.take(s, c);
                        }
                        st.pending.insert(String::new(), p);
                    }
                    st.changed = kept;
                }
                (
                    SchedulerKind::Dependent { upstream: u1 },
                    SchedulerKind::Dependent { upstream: u2 },
                ) if u1 != u2 => st.watching.clear(),
                // Periodic keeps its last slot; force and triggerable
                // schedulers have no state.
                _ => {}
            }
        }
        self.filters.retain(new);
        dropped
    }

    /// Changes [`Engine::reconcile`] must see to classify collected changes
    /// again (those of schedulers whose definition changed).
    pub fn refilter_ids(&self, old: &Graph, new: &Graph) -> Vec<u64> {
        let mut out = Vec::new();
        for s in &new.schedulers {
            let changed = old.scheduler(&s.name).is_some_and(|b| b.hash != s.hash);
            if let (true, Some(st)) = (changed, self.states.get(&s.name)) {
                out.extend(st.pending.values().flat_map(|p| p.changes.iter().copied()));
                out.extend(st.changed.iter().copied());
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Feeds one stored change to every change-driven scheduler.
    pub fn on_change(&mut self, g: &Graph, c: &Change, now: Millis) -> Vec<Submit> {
        let mut out = Vec::new();
        for s in &g.schedulers {
            let st = state_in(&mut self.states, &s.name, c.id.saturating_sub(1), now);
            if c.id <= st.last_change {
                continue;
            }
            st.last_change = c.id;
            match &s.kind {
                SchedulerKind::SingleBranch {
                    tree_stable_timer_ms,
                    filter,
                    ..
                }
                | SchedulerKind::AnyBranch {
                    tree_stable_timer_ms,
                    filter,
                    ..
                } => {
                    let m = self.filters.get(s, filter);
                    let Some(important) = classify(&m, s, filter, c) else {
                        continue;
                    };
                    let key = match &s.kind {
                        SchedulerKind::AnyBranch { .. } => c.change.branch.clone(),
                        _ => String::new(),
                    };
                    let p = st.pending.entry(key).or_default();
                    p.changes.push(c.id);
                    p.take(s, c);
                    if important {
                        p.deadline = Some(now + *tree_stable_timer_ms as i64);
                    }
                }
                SchedulerKind::Nightly { filter, .. }
                    if classify(&self.filters.get(s, filter), s, filter, c)
                        .is_some_and(|imp| imp) =>
                {
                    st.changed.push(c.id);
                    st.pending.entry(String::new()).or_default().take(s, c);
                }
                _ => {}
            }
        }
        out.extend(self.on_tick(g, now));
        out
    }

    /// Fires whatever is due at `now`.
    pub fn on_tick(&mut self, g: &Graph, now: Millis) -> Vec<Submit> {
        let mut out = Vec::new();
        for s in &g.schedulers {
            let st = self.state(&s.name, 0, now);
            match &s.kind {
                SchedulerKind::SingleBranch { .. } | SchedulerKind::AnyBranch { .. } => {
                    let due: Vec<String> = st
                        .pending
                        .iter()
                        .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in due {
                        let Some(p) = st.pending.remove(&key) else {
                            continue;
                        };
                        out.push(submit(
                            s,
                            &p,
                            p.changes.clone(),
                            format!("scheduler {}: {} change(s)", s.name, p.changes.len()),
                            now,
                        ));
                    }
                }
                SchedulerKind::Periodic {
                    interval_ms,
                    branch,
                } => {
                    let last = *st.last_slot.get_or_insert(now);
                    if now >= last + *interval_ms as i64 {
                        // Count whole intervals so a long pause fires once.
                        let n = (now - last) / (*interval_ms as i64).max(1);
                        st.last_slot = Some(last + n * *interval_ms as i64);
                        let p = Pending {
                            tip: Tip {
                                branch: branch.clone().unwrap_or_default(),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        out.push(submit(
                            s,
                            &p,
                            Vec::new(),
                            format!("periodic scheduler {}", s.name),
                            now,
                        ));
                    }
                }
                SchedulerKind::Nightly {
                    cron,
                    tz,
                    branch,
                    only_if_changed,
                    ..
                } => {
                    let last = *st.last_slot.get_or_insert(now);
                    let Some(first_due) = next_slot(cron, tz, last) else {
                        continue;
                    };
                    if first_due > now {
                        continue;
                    }
                    // Latest slot not after now: missed slots collapse into one.
                    let mut slot = first_due;
                    while let Some(n) = next_slot(cron, tz, slot) {
                        if n > now {
                            break;
                        }
                        slot = n;
                    }
                    st.last_slot = Some(slot);
                    if *only_if_changed && st.changed.is_empty() {
                        continue;
                    }
                    let changes = std::mem::take(&mut st.changed);
                    let mut p = st.pending.remove("").unwrap_or_default();
                    if let Some(b) = branch {
                        p.tip.branch = b.clone();
                    }
                    out.push(submit(
                        s,
                        &p,
                        changes,
                        format!("nightly scheduler {} ({})", s.name, cron),
                        now,
                    ));
                }
                _ => {}
            }
        }
        out
    }

    /// A build set finished: dependent schedulers of its scheduler follow
    /// when it succeeded.
    pub fn on_buildset_done(&mut self, g: &Graph, set: &BuildSet, now: Millis) -> Vec<Submit> {
        let mut out = Vec::new();
        for s in &g.schedulers {
            let SchedulerKind::Dependent { upstream } = &s.kind else {
                continue;
            };
            let st = self.state(&s.name, 0, now);
            let Some(pos) = st.watching.iter().position(|id| *id == set.id) else {
                continue;
            };
            st.watching.remove(pos);
            if *upstream != set.set.scheduler {
                continue;
            }
            if set.result.is_some_and(|r| r <= BuildResult::Warnings) {
                let p = Pending {
                    tip: Tip {
                        repository: set.set.source.repository.clone(),
                        branch: set.set.source.branch.clone(),
                        revision: set.set.source.revision.clone(),
                        properties: Properties::new(),
                    },
                    ..Default::default()
                };
                let mut sub = submit(
                    s,
                    &p,
                    set.set.changes.clone(),
                    format!(
                        "dependent scheduler {} after {} (build set {})",
                        s.name, upstream, set.id
                    ),
                    now,
                );
                sub.set.properties = set.set.properties.clone();
                // The same source, every codebase of it.
                sub.set.source = set.set.source.clone();
                sub.set.sources = set.set.stamps().to_vec();
                out.push(sub);
            }
        }
        out
    }

    /// A build set stored (fed in id order, from the store): dependent
    /// schedulers of its scheduler start watching it, unless they looked
    /// at it already (`last_set`).
    pub fn on_buildset_stored(&mut self, g: &Graph, set: &BuildSet, now: Millis) {
        for s in &g.schedulers {
            if let SchedulerKind::Dependent { upstream } = &s.kind {
                let st = self.state(&s.name, 0, now);
                if st.last_set.is_some_and(|l| set.id <= l) {
                    continue;
                }
                st.last_set = Some(set.id);
                if *upstream == set.set.scheduler && !st.watching.contains(&set.id) {
                    st.watching.push(set.id);
                }
            }
        }
    }

    /// The dependent schedulers of `g`.
    fn dependents(g: &Graph) -> impl Iterator<Item = &str> {
        g.schedulers
            .iter()
            .filter(|s| matches!(s.kind, SchedulerKind::Dependent { .. }))
            .map(|s| s.name.as_str())
    }

    /// Whether a dependent scheduler has never looked at the build sets
    /// (then [`Engine::sets_floor`] needs the newest set's id).
    pub fn sets_unstarted(&self, g: &Graph) -> bool {
        Self::dependents(g).any(|n| self.states.get(n).is_none_or(|s| s.last_set.is_none()))
    }

    /// Where the dependent schedulers read the build sets from: the lowest
    /// `last_set` among them, each one that never looked starting after
    /// `newest`. `None`: no dependent scheduler, or one never looked and
    /// `newest` is unknown.
    pub fn sets_floor(&mut self, g: &Graph, newest: Option<u64>, now: Millis) -> Option<u64> {
        let mut floor: Option<u64> = None;
        for n in Self::dependents(g) {
            let st = state_in(&mut self.states, n, 0, now);
            let seen = match (st.last_set, newest) {
                (Some(l), _) => l,
                (None, Some(top)) => *st.last_set.insert(top),
                (None, None) => return None,
            };
            floor = Some(floor.map_or(seen, |f| f.min(seen)));
        }
        floor
    }

    /// The earliest time something is due.
    pub fn next_deadline(&self, g: &Graph) -> Option<Millis> {
        g.schedulers
            .iter()
            .filter_map(|s| self.deadline_of(s))
            .min()
    }

    /// When one scheduler's next timer fires, if it has one running.
    fn deadline_of(&self, s: &Scheduler) -> Option<Millis> {
        let st = self.states.get(&s.name)?;
        match &s.kind {
            SchedulerKind::SingleBranch { .. } | SchedulerKind::AnyBranch { .. } => {
                st.pending.values().filter_map(|p| p.deadline).min()
            }
            SchedulerKind::Periodic { interval_ms, .. } => {
                st.last_slot.map(|l| l + *interval_ms as i64)
            }
            SchedulerKind::Nightly { cron, tz, .. } => {
                st.last_slot.and_then(|l| next_slot(cron, tz, l))
            }
            _ => None,
        }
    }

    /// Every scheduler's timers, for the sources page.
    pub fn timers(&self, g: &Graph) -> BTreeMap<String, SchedulerTimer> {
        g.schedulers
            .iter()
            .map(|s| {
                let st = self.states.get(&s.name);
                // Only timed schedulers have slots to speak of.
                let timed = matches!(
                    s.kind,
                    SchedulerKind::Periodic { .. } | SchedulerKind::Nightly { .. }
                );
                let t = SchedulerTimer {
                    next_fire_at: self.deadline_of(s),
                    last_fired_at: st.and_then(|st| st.last_slot).filter(|_| timed),
                    pending_changes: st.map_or(0, |st| {
                        st.pending.values().map(|p| p.changes.len()).sum::<usize>()
                            + st.changed.len()
                    }),
                };
                (s.name.clone(), t)
            })
            .collect()
    }
}

/// The build set a scheduler submits for a batch: one source stamp, or
/// with codebases one per codebase in the order written — a codebase the
/// batch touched at its newest change, the others at their branch's head.
fn submit(s: &Scheduler, p: &Pending, changes: Vec<u64>, reason: String, now: Millis) -> Submit {
    let tip = &p.tip;
    let sources: Vec<SourceStamp> = s
        .codebases
        .iter()
        .map(|cb| match p.codebases.get(&cb.name) {
            Some(t) => SourceStamp {
                codebase: cb.name.clone(),
                repository: if t.repository.is_empty() {
                    cb.repository.clone()
                } else {
                    t.repository.clone()
                },
                branch: t.branch.clone(),
                revision: t.revision.clone(),
            },
            None => SourceStamp {
                codebase: cb.name.clone(),
                repository: cb.repository.clone(),
                branch: cb.branch.clone(),
                revision: String::new(),
            },
        })
        .collect();
    let source = sources.first().cloned().unwrap_or_else(|| SourceStamp {
        codebase: String::new(),
        repository: tip.repository.clone(),
        branch: tip.branch.clone(),
        revision: tip.revision.clone(),
    });
    Submit {
        set: NewBuildSet {
            priority: s.priority,
            scheduler: s.name.clone(),
            reason,
            source,
            sources,
            changes,
            properties: tip.properties.clone(),
            parent_build: None,
            submitted_at: now,
        },
        builders: s.builders.clone(),
    }
}

fn key(name: &str) -> String {
    format!("scheduler:{name}")
}

/// Changes stored after `after`, oldest first.
async fn changes_after(shared: &Arc<Shared>, after: u64) -> crate::store::Result<Vec<Change>> {
    shared
        .db(move |s| {
            let mut out = Vec::new();
            let mut before = None;
            loop {
                let page = s.changes(Page { before, limit: 500 })?;
                let done = page.len() < 500;
                for c in page {
                    if c.id <= after {
                        out.reverse();
                        return Ok(out);
                    }
                    before = Some(c.id);
                    out.push(c);
                }
                if done {
                    out.reverse();
                    return Ok(out);
                }
            }
        })
        .await
}

async fn newest_change(shared: &Arc<Shared>) -> u64 {
    shared
        .db(|s| {
            s.changes(Page {
                before: None,
                limit: 1,
            })
        })
        .await
        .ok()
        .and_then(|v| v.first().map(|c| c.id))
        .unwrap_or(0)
}

/// Moves the engine from the config it runs (`current`) to `new`, and
/// saves the result (dropped schedulers lose their saved state).
async fn reconcile_to(
    shared: &Arc<Shared>,
    engine: &mut Engine,
    current: &mut Arc<Graph>,
    new: Arc<Graph>,
    newest: u64,
    now: Millis,
) {
    if Arc::ptr_eq(current, &new) {
        return;
    }
    let ids = engine.refilter_ids(current, &new);
    let changes: HashMap<u64, Change> = if ids.is_empty() {
        HashMap::new()
    } else {
        shared
            .db(move |s| {
                let mut out = HashMap::new();
                for id in ids {
                    if let Some(c) = s.change(id)? {
                        out.insert(id, c);
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default()
    };
    let before = engine.states.clone();
    let dropped = engine.reconcile(current, &new, newest, now, &changes);
    for name in dropped {
        // An empty value reads as "no state": a scheduler of that name
        // added later starts from its own "now".
        let k = key(&name);
        if let Err(e) = shared.db(move |s| s.put_state(&k, b"")).await {
            tracing::error!("cannot drop the state of removed scheduler {name}: {e}");
        }
    }
    persist(shared, &before, engine).await;
    *current = new;
}

/// What the scheduler task starts from: every scheduler's state loaded
/// (or created "from now" and saved), and the subscriptions.
pub struct Prepared {
    engine: Engine,
    current: Arc<Graph>,
    newest: u64,
    changes_rx: tokio::sync::broadcast::Receiver<Change>,
    sets_rx: tokio::sync::broadcast::Receiver<BuildSet>,
    configs_rx: tokio::sync::broadcast::Receiver<Arc<ConfigEvent>>,
}

/// Loads the schedulers' states. The master awaits this before it accepts
/// changes (API, webhooks, pollers): a scheduler seen for the first time
/// starts after the newest change stored *before* the master started, and
/// that starting point is saved before any new change can arrive — else a
/// change accepted at once and a crash right after would leave it built
/// by nobody.
pub async fn prepare(shared: &Arc<Shared>, clock: &dyn Clock) -> Prepared {
    let changes_rx = shared.changes.subscribe();
    let sets_rx = shared.buildsets.subscribe();
    // Subscribed before the graph is read: no applied config is missed.
    let configs_rx = shared.configs.subscribe();
    let mut engine = Engine::default();
    let newest = newest_change(shared).await;
    let current = shared.graph();
    // Load persisted state, in one trip to the store (a thousand
    // schedulers, one at a time, took 200 ms); schedulers seen for the
    // first time start now.
    let keys: Vec<String> = current.schedulers.iter().map(|s| key(&s.name)).collect();
    let saved = shared
        .db(move |st| {
            keys.iter()
                .map(|k| st.get_state(k))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap_or_default();
    let mut loaded = BTreeMap::new();
    for (i, s) in current.schedulers.iter().enumerate() {
        let state = saved
            .get(i)
            .and_then(Option::as_deref)
            .and_then(|b| serde_json::from_slice::<SchedState>(b).ok());
        match state {
            Some(state) => {
                loaded.insert(s.name.clone(), state.clone());
                engine.states.insert(s.name.clone(), state);
            }
            None => {
                engine.state(&s.name, newest, clock.now());
            }
        }
    }
    // The new starting points are saved at once: they must survive a crash,
    // or changes arriving right after start would be taken for old ones.
    persist(shared, &loaded, &engine).await;
    Prepared {
        engine,
        current,
        newest,
        changes_rx,
        sets_rx,
        configs_rx,
    }
}

/// The scheduler task of a running master, from what [`prepare`] loaded.
pub async fn run(shared: Arc<Shared>, clock: Arc<dyn Clock>, prepared: Prepared) {
    let Prepared {
        mut engine,
        mut current,
        mut newest,
        mut changes_rx,
        mut sets_rx,
        mut configs_rx,
    } = prepared;
    // An applied config received while waiting.
    let mut received: Option<Arc<ConfigEvent>> = None;
    // Whether a change may have been stored since the changes were last
    // read: the loop also wakes for every build that ends and every build
    // set submitted, which bring none, and reading them each time was a
    // query per wake-up. Changes of this master come through `changes_rx`
    // (buffered: one that came meanwhile wakes the next `select!`), other
    // masters' through `Peers::changes_heard`, read before the changes so
    // that a notice arriving while this loop is busy is not lost.
    let mut changes_may_be_new = true;
    let mut heard = shared.peers.changes_heard();
    loop {
        // Several masters on one store: the schedulers run on the holder
        // of their lease only (master/peers.rs). The others wait, saying
        // yes to applied configs; the one that takes the lease over
        // starts from the states its predecessor saved.
        if !shared.peers.holds(SCHEDULERS) {
            let mut leases = shared.peers.watch();
            if let Some(ev) = received.take() {
                ev.reconciled();
            }
            while !shared.peers.holds(SCHEDULERS) {
                if shared.is_shutting_down() {
                    return;
                }
                tokio::select! {
                    r = leases.changed() => { if r.is_err() { return; } }
                    r = configs_rx.recv() => { if let Ok(ev) = r { ev.reconciled(); } }
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
            let p = prepare(&shared, clock.as_ref()).await;
            engine = p.engine;
            current = p.current;
            newest = p.newest;
            changes_rx = p.changes_rx;
            sets_rx = p.sets_rx;
            configs_rx = p.configs_rx;
            changes_may_be_new = true;
            continue;
        }
        // Registered before this turn reads anything: a build ending or a
        // change stored elsewhere while it reads still wakes the next wait
        // (`notify_waiters` only reaches registered waiters).
        let finished = shared.build_finished.notified();
        let elsewhere = shared.peers.changes_elsewhere.notified();
        tokio::pin!(finished, elsewhere);
        finished.as_mut().enable();
        elsewhere.as_mut().enable();
        // Configs applied since the last look, in order.
        let mut events: Vec<_> = received.take().into_iter().collect();
        loop {
            match configs_rx.try_recv() {
                Ok(ev) => events.push(ev),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        for ev in events {
            reconcile_to(
                &shared,
                &mut engine,
                &mut current,
                ev.graph.clone(),
                ev.newest_change,
                ev.at,
            )
            .await;
            ev.reconciled();
        }
        // Missed events (lagged): catch up with the graph in force.
        let latest = shared.graph();
        if !Arc::ptr_eq(&latest, &current) {
            let newest = newest_change(&shared).await;
            reconcile_to(
                &shared,
                &mut engine,
                &mut current,
                latest,
                newest,
                clock.now(),
            )
            .await;
        }
        let g = current.clone();
        let now = clock.now();
        let before = engine.states.clone();
        let mut todo = Vec::new();
        // Changes not yet seen by some scheduler, read back from the store.
        let floor = g
            .schedulers
            .iter()
            .map(|s| engine.state(&s.name, newest, now).last_change)
            .min()
            .unwrap_or(u64::MAX);
        let now_heard = shared.peers.changes_heard();
        if now_heard != heard {
            heard = now_heard;
            changes_may_be_new = true;
        }
        if floor != u64::MAX && std::mem::take(&mut changes_may_be_new) {
            match changes_after(&shared, floor).await {
                Ok(changes) => {
                    for c in changes {
                        todo.extend(engine.on_change(&g, &c, now));
                    }
                }
                // Read again at the next wake-up.
                Err(_) => changes_may_be_new = true,
            }
        }
        todo.extend(engine.on_tick(&g, now));
        // Dependent schedulers: the build sets stored since they last
        // looked, from the store (not only those this master heard of:
        // a set stored while no master held the lease counts too).
        let more_sets = catch_up_sets(&shared, &mut engine, &g, now).await;
        // Dependent schedulers: re-check the sets they wait for.
        let watched: Vec<u64> = engine
            .states
            .values()
            .flat_map(|s| s.watching.iter().copied())
            .collect();
        for id in watched {
            if let Ok(Some(set)) = shared.db(move |s| s.buildset(id)).await {
                if set.result.is_some() {
                    todo.extend(engine.on_buildset_done(&g, &set, now));
                }
            }
        }
        for sub in todo {
            // Its own sets come back through the broadcast like any other.
            if let Err(e) = shared.submit(sub.set, sub.builders).await {
                tracing::error!("a scheduler could not submit a build set: {e}");
            }
        }
        persist(&shared, &before, &engine).await;
        if let Ok(mut t) = shared.scheduler_timers.lock() {
            *t = engine.timers(&g);
        }
        if shared.is_shutting_down() {
            return;
        }
        let wait = engine
            .next_deadline(&g)
            .map(|d| (d - clock.now()).clamp(0, 60_000) as u64)
            .unwrap_or(60_000);
        // A full page of build sets: read the next one at once.
        let wait = if more_sets { 0 } else { wait };
        tokio::select! {
            r = changes_rx.recv() => { let _ = r; changes_may_be_new = true; }
            // Another master sharing the store stored a change (counted in
            // `changes_heard`, looked at above).
            _ = &mut elsewhere => {}
            // A build set stored (here or elsewhere): read from the store
            // at the top of the loop.
            r = sets_rx.recv() => { let _ = r; }
            _ = &mut finished => {}
            // Handled at the top of the loop.
            r = configs_rx.recv() => { received = r.ok(); changes_may_be_new = true; }
            // A timer, or the minute without any wake-up: the changes are
            // read again whatever was heard.
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {
                changes_may_be_new = true;
            }
        }
    }
}

/// Build sets read from the store at a time.
const SETS_PAGE: usize = 500;

/// Feeds the dependent schedulers the build sets stored since they last
/// looked ([`Engine::on_buildset_stored`]); `true` when there may be more
/// (a full page).
async fn catch_up_sets(shared: &Arc<Shared>, engine: &mut Engine, g: &Graph, now: Millis) -> bool {
    let newest = if engine.sets_unstarted(g) {
        match shared.db(|s| s.newest_buildset()).await {
            Ok(top) => Some(top),
            Err(e) => {
                tracing::warn!("cannot read the newest build set: {e}");
                return false;
            }
        }
    } else {
        None
    };
    let Some(floor) = engine.sets_floor(g, newest, now) else {
        return false;
    };
    match shared
        .db(move |s| s.buildsets_after(floor, SETS_PAGE))
        .await
    {
        Ok(sets) => {
            for set in &sets {
                engine.on_buildset_stored(g, set, now);
            }
            sets.len() == SETS_PAGE
        }
        Err(e) => {
            tracing::warn!("cannot read the build sets stored since {floor}: {e}");
            false
        }
    }
}

/// Saves the states that changed, in one durable write.
async fn persist(shared: &Arc<Shared>, before: &BTreeMap<String, SchedState>, engine: &Engine) {
    let changed: Vec<(String, Vec<u8>)> = engine
        .states
        .iter()
        .filter(|(name, st)| before.get(*name) != Some(*st))
        .filter_map(|(name, st)| Some((key(name), serde_json::to_vec(st).ok()?)))
        .collect();
    if changed.is_empty() {
        return;
    }
    let n = changed.len();
    if let Err(e) = shared.db(move |s| s.put_states(&changed)).await {
        tracing::error!("cannot save the state of {n} scheduler(s): {e}");
    }
}

mod filter;
#[cfg(test)]
mod tests;
