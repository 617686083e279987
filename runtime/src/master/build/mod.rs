//! Running one build: its steps in order on one worker, with Buildbot's
//! rules for results (halt-on-failure, flunk-on-failure, warn-on-…,
//! always-run), logs streamed to the store, and secrets redacted.
//!
//! This file runs the steps and combines their results; each kind of step
//! runs in its own file (`command.rs` on the worker, `git.rs`,
//! `master_shell.rs`, `trigger.rs`, `transfer.rs`), the log goes through
//! `log.rs`, and every step write to the store is a `record::StepWrite`.

mod command;
mod git;
mod junit;
mod log;
mod master_shell;
mod record;
mod transfer;
mod trigger;

use std::collections::BTreeMap;
use std::sync::Arc;

use bbc_graph::eval::{eval, render, truthy};
use bbc_graph::{BuildResult, Builder, Command, Scalar, Step, StepKind};
use tokio::sync::watch;

use super::properties::worst;
use crate::protocol::WireCommand;
use crate::secrets::Redactor;
use crate::state::connection::WorkerConn;
use crate::state::latent::Wait;
use crate::state::metrics::Counter;
use crate::state::queue::{self, HeldLocks, Wake};
use crate::state::{now_ms, Shared};
use crate::store::{Build, BuildSet, Properties, StepRecord};
use record::{StepEnd, StepStart, StepWrite};

pub use git::{git_script, GitScript};
pub use transfer::master_path;

pub struct Ctx {
    shared: Arc<Shared>,
    build: Build,
    builder: Arc<Builder>,
    conn: Option<Arc<WorkerConn>>,
    props: Properties,
    cancel: watch::Receiver<bool>,
    slot: u64,
    /// The running step's start, not yet stored: a command step stores it
    /// with its log's first bytes, in one trip to the store.
    pending_start: Option<StepStart>,
    /// The last step's end, stored with the build's end.
    pending_end: Option<StepWrite>,
    /// When the builder's `max-time` runs out: a limit on the whole build,
    /// so each command gets what is left of it.
    deadline: Option<tokio::time::Instant>,
    /// The builder's count of stored log bytes (`bbc_log_bytes_total`),
    /// looked up once for the build.
    log_bytes: Counter,
    /// The source stamps of the set the build runs (the newest of a
    /// collapsed group): what a `git codebase=…` step checks out.
    sources: Vec<crate::store::SourceStamp>,
}

struct Outcome {
    result: BuildResult,
    warnings: u64,
    state: String,
    /// stdout kept for `set-property command=…` (bounded).
    captured: Option<Vec<u8>>,
    /// The end of the step's log, stored with the step's end record.
    log_tail: Vec<u8>,
    /// Output that could not be stored, and why.
    lost: Option<(u64, String)>,
    /// What the output said about tests (a `test` step) and figures.
    tests: Option<crate::store::TestCounts>,
    figures: Vec<crate::store::Figure>,
}

impl Outcome {
    fn of(result: BuildResult, state: impl Into<String>) -> Outcome {
        Outcome {
            result,
            warnings: 0,
            state: state.into(),
            captured: None,
            log_tail: Vec::new(),
            lost: None,
            tests: None,
            figures: Vec::new(),
        }
    }
}

pub async fn run(
    shared: Arc<Shared>,
    slot: u64,
    build: Build,
    builder: Arc<Builder>,
    set: Arc<BuildSet>,
    conn: Option<Arc<WorkerConn>>,
    cancel: watch::Receiver<bool>,
) {
    let mut props = build.build.properties.clone();
    props.insert("buildnumber".into(), Scalar::Int(build.number as i64));
    let deadline = builder_deadline(&builder);
    let log_bytes = shared.metrics.log_bytes(&builder.name);
    let mut cx = Ctx {
        shared: shared.clone(),
        build,
        builder,
        conn,
        props,
        cancel,
        slot,
        pending_start: None,
        pending_end: None,
        deadline,
        log_bytes,
        sources: set.set.stamps().to_vec(),
    };
    // A latent worker not up yet is started for this build (the queue
    // asked for it when it assigned the build): the build waits, and ends
    // as retry with the reason when the start fails.
    let not_up = cx.conn.as_ref().is_none_or(|c| c.is_closed());
    let latent = shared
        .graph()
        .worker(&cx.build.build.worker)
        .is_some_and(|w| w.latent.is_some());
    let waited = if latent && not_up {
        match crate::state::latent::wait_up(&shared, &cx.build.build.worker, &mut cx.cancel).await {
            Ok(conn) => {
                cx.conn = Some(conn);
                None
            }
            Err(Wait::Cancelled) => Some((BuildResult::Cancelled, "build cancelled".to_string())),
            Err(Wait::Failed(why)) => Some((BuildResult::Retry, format!("{why}; will retry"))),
        }
    } else {
        None
    };
    let (result, state) = match waited {
        Some(end) => end,
        None => {
            let result = cx.steps().await;
            let state = match result {
                BuildResult::Success => "build successful".to_string(),
                BuildResult::Retry => "worker lost; will retry".to_string(),
                r => format!("build {}", r.name()),
            };
            (result, state)
        }
    };
    let id = cx.build.id;
    let props = cx.props.clone();
    let last = cx.pending_end.take();
    let finished_at = now_ms();
    let end = BuildEnd {
        id,
        result,
        state: state.clone(),
        props,
        finished_at,
        step: None,
    };
    let recorded = record_end(&shared, last, end, &cx.log_bytes).await;
    if recorded {
        let b = &mut cx.build;
        shared.metrics.build_finished(
            &b.build.builder,
            result,
            finished_at.saturating_sub(b.build.started_at),
        );
        tracing::info!(
            builder = %b.build.builder,
            number = b.number,
            build_id = id,
            worker = %b.build.worker,
            result = %result.name(),
            duration_ms = finished_at.saturating_sub(b.build.started_at),
            "build finished"
        );
        b.result = Some(result);
        b.finished_at = Some(finished_at);
        b.state_string = state;
        b.build.properties = std::mem::take(&mut cx.props);
        shared
            .reporters
            .publish(crate::state::events::Phase::Finished, b, &set);
        seal_logs(&shared, id);
    }
    let mut wake = queue::update(&shared, |q| q.end(slot));
    if recorded && result == BuildResult::Retry {
        // The requests are pending again in the store; put them back in
        // the queue (one wake for both).
        wake = wake.and(requeue(&shared, &cx.build).await);
    }
    wake.send(&shared);
}

/// One build's logs compressed at a time, whatever the number of builds
/// ending at once: compressing is CPU work on a blocking thread, and the
/// builds still running must keep their share of the cores.
static SEALING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Compresses a finished build's logs at rest (`Store::seal_logs`), in a
/// task of its own: nothing waits for it, reads of its logs return the
/// same bytes before, during and after, and a log left plain (the master
/// stopped first) stays readable as it is.
pub(crate) fn seal_logs(shared: &Arc<Shared>, id: u64) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ok(_turn) = SEALING.acquire().await else {
            return;
        };
        match shared.db(move |s| s.seal_logs(id)).await {
            Ok(s) if s.logs > 0 => tracing::debug!(
                build_id = id,
                logs = s.logs,
                raw = s.raw,
                stored = s.stored,
                "logs compressed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("the logs of build {id} stay uncompressed: {e}"),
        }
    });
}

/// What the store records when a build ends.
#[derive(Clone)]
struct BuildEnd {
    id: u64,
    result: BuildResult,
    state: String,
    props: Properties,
    finished_at: crate::store::Millis,
    /// The last step's end record, put again with each retry: the first
    /// trip's put may have failed with the store.
    step: Option<StepRecord>,
}

impl BuildEnd {
    /// The build's final state (waiting in the store) and its end
    /// (durable, which makes the state durable too).
    fn store(&self, s: &dyn crate::store::Store) -> crate::store::Result<()> {
        if let Some(rec) = &self.step {
            s.put_step(self.id, rec)?;
        }
        s.finish_build_with_state(
            self.id,
            self.result,
            &self.state,
            &self.props,
            self.finished_at,
        )
    }
}

/// The first wait before recording a build's end again, and the longest.
const END_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const END_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Records a build's end: the last step's end (log included) and the
/// build's, in one trip. A store that cannot write (a full disk) is tried
/// again, 1 s after, then twice as long each time up to 30 s, until it
/// takes it: a build whose end was lost would stay "running" for ever,
/// its requests claimed. Each build waits in its own task, holding only
/// its worker slot (its end is not recorded, so its requests are not
/// free to run elsewhere); other builds start and end meanwhile.
///
/// Returns whether the end is recorded. It is not when the store's
/// answer will never change (a conflict, bad data), or when the master
/// stops first: then the build stays running in the store, and the next
/// master marks it interrupted at start and runs its requests again
/// (`interrupt_running`), which is the right outcome for a build whose
/// result could not be kept.
async fn record_end(
    shared: &Arc<Shared>,
    last: Option<StepWrite>,
    end: BuildEnd,
    log_bytes: &Counter,
) -> bool {
    let id = end.id;
    let first = end.clone();
    let logged = log_bytes.clone();
    let tried = shared
        .db(move |s| {
            let step = last.and_then(|w| w.store(s, id, &logged).end);
            let r = first.store(s);
            Ok((step, r))
        })
        .await;
    let (step, mut r) = match tried {
        Ok(v) => v,
        Err(e) => (None, Err(e)),
    };
    let end = BuildEnd { step, ..end };
    let mut wait = END_RETRY_FIRST;
    let mut attempts = 1u32;
    loop {
        let e = match r {
            Ok(()) => {
                if attempts > 1 {
                    tracing::warn!("recorded the end of build {id} (attempt {attempts})");
                }
                return true;
            }
            Err(e) => e,
        };
        match &e {
            crate::store::StoreError::Io(_) => {}
            crate::store::StoreError::Conflict(_) if attempts > 1 => {
                // "Already finished": an earlier try that reported a
                // failure went through after all.
                if let Ok(Some(b)) = shared.db(move |s| s.build(id)).await {
                    if b.finished_at.is_some() {
                        return true;
                    }
                }
                tracing::error!("cannot record the end of build {id}: {e}");
                return false;
            }
            _ => {
                tracing::error!("cannot record the end of build {id}: {e}");
                return false;
            }
        }
        if shared.is_shutting_down() {
            tracing::error!(
                "cannot record the end of build {id}: {e}; the master stops, and the next start \
                 marks the build interrupted and runs its requests again"
            );
            return false;
        }
        if attempts == 1 {
            tracing::error!(
                "cannot record the end of build {id}: {e}; trying again in {}s, then less \
                 often (up to every {}s) until the store takes it",
                wait.as_secs(),
                END_RETRY_MAX.as_secs()
            );
        } else {
            tracing::warn!(
                "still cannot record the end of build {id} (attempt {attempts}): {e}; next try in {}s",
                wait.as_secs()
            );
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(END_RETRY_MAX);
        attempts += 1;
        let again = end.clone();
        r = shared.db(move |s| again.store(s)).await;
    }
}

fn builder_deadline(builder: &Builder) -> Option<tokio::time::Instant> {
    builder
        .max_time_ms
        .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms))
}

async fn requeue(shared: &Arc<Shared>, build: &Build) -> Wake {
    let ids = build.build.requests.clone();
    let loaded = shared
        .db(move |s| {
            let mut out = Vec::new();
            for id in ids {
                if let Some(r) = s.request(id)? {
                    if let Some(set) = s.buildset(r.buildset)? {
                        out.push((r, set));
                    }
                }
            }
            Ok(out)
        })
        .await;
    let Ok(loaded) = loaded else {
        return Wake::default();
    };
    let g = shared.graph();
    let back = loaded
        .into_iter()
        .filter(|(r, _)| r.state == crate::store::RequestState::Pending)
        .map(|(mut r, set)| {
            // The queue orders by the config in force.
            if let Some(b) = g.builder(&r.builder) {
                r.priority = b.priority;
            }
            (r, Arc::new(set))
        });
    queue::update(shared, |q| q.add_all(back))
}

/// Whether a step runs a command on the worker (through `Ctx::command`).
fn runs_command(step: &Step) -> bool {
    matches!(
        step.kind,
        StepKind::Shell { .. }
            | StepKind::Compile { .. }
            | StepKind::Test { .. }
            | StepKind::Git { .. }
            | StepKind::SetPropertyFromCommand { .. }
    )
}

impl Ctx {
    async fn steps(&mut self) -> BuildResult {
        let mut result = BuildResult::Success;
        let mut halted = false;
        let builder = self.builder.clone();
        for (i, step) in builder.steps.iter().enumerate() {
            let index = i as u32;
            let mut rec = StepRecord {
                index,
                name: step.name.clone(),
                ..Default::default()
            };
            let cancelled = *self.cancel.borrow();
            if self.out_of_time() && !step.always_run {
                // Cleanup steps (always-run) still run, each under its own
                // limits only.
                result = worst(result, BuildResult::Failure);
                halted = true;
                rec.result = Some(BuildResult::Skipped);
                rec.state_string = "skipped (the build reached its max-time)".into();
                self.write_step(StepWrite::skipped(rec)).await;
                continue;
            }
            if (halted || cancelled) && !step.always_run {
                rec.result = Some(BuildResult::Skipped);
                rec.state_string = "skipped".into();
                self.write_step(StepWrite::skipped(rec)).await;
                continue;
            }
            if let Some(cond) = &step.do_step_if {
                if !truthy(&eval(cond, &self.props)) {
                    rec.result = Some(BuildResult::Skipped);
                    rec.state_string = "skipped (do-step-if)".into();
                    rec.hidden = step
                        .hide_step_if
                        .as_ref()
                        .is_some_and(|h| truthy(&eval(h, &self.props)));
                    self.write_step(StepWrite::skipped(rec)).await;
                    continue;
                }
            }
            rec.started_at = Some(now_ms());
            rec.state_string = format!("running {}", step.name);
            let start = StepStart {
                rec: rec.clone(),
                state: format!("running {}", step.name),
                props: self.props.clone(),
            };
            if step.locks.is_empty() && runs_command(step) {
                // Stored with the command's first log bytes.
                self.pending_start = Some(start);
            } else {
                let w = StepWrite {
                    start: Some(start),
                    ..StepWrite::new(index)
                };
                self.write_step(w).await;
            }
            if let Ok(mut q) = self.shared.queue.lock() {
                q.at_step(self.slot, index);
            }
            let locks = self.take_step_locks(step).await;
            let mut out = match locks {
                Some(taken) => {
                    let o = self.step(index, step).await;
                    self.release_step_locks(taken);
                    o
                }
                None => Outcome::of(BuildResult::Cancelled, "cancelled while waiting for a lock"),
            };
            rec.finished_at = Some(now_ms());
            rec.result = Some(out.result);
            rec.warnings = out.warnings;
            rec.state_string = out.state.clone();
            rec.tests = out.tests.take();
            rec.figures = std::mem::take(&mut out.figures);
            if let Some((bytes, error)) = &out.lost {
                record::lost_output(&mut rec, *bytes, error);
                if out.result != BuildResult::Retry {
                    out.result = BuildResult::Exception;
                } else {
                    rec.result = Some(BuildResult::Retry);
                }
            }
            rec.hidden = step
                .hide_step_if
                .as_ref()
                .is_some_and(|h| truthy(&eval(h, &self.props)));
            let end = StepWrite {
                step: index,
                start: self.pending_start.take(),
                log: std::mem::take(&mut out.log_tail),
                end: Some(StepEnd { rec, ran: true }),
            };
            if i + 1 == builder.steps.len() || out.result == BuildResult::Retry {
                // The last step: stored with the build's end, in one trip.
                self.pending_end = Some(end);
            } else {
                self.write_step(end).await;
            }
            match out.result {
                BuildResult::Success | BuildResult::Skipped => {}
                BuildResult::Warnings => {
                    if step.warn_on_warnings {
                        result = worst(result, BuildResult::Warnings);
                    }
                }
                BuildResult::Failure => {
                    if step.flunk_on_failure {
                        result = worst(result, BuildResult::Failure);
                    } else if step.warn_on_failure {
                        result = worst(result, BuildResult::Warnings);
                    }
                    halted |= step.halt_on_failure;
                }
                r @ (BuildResult::Exception | BuildResult::Retry | BuildResult::Cancelled) => {
                    result = worst(result, r);
                    halted = true;
                }
            }
            if out.result == BuildResult::Retry {
                // The worker is gone: nothing else can run on it.
                break;
            }
        }
        result
    }

    fn out_of_time(&self) -> bool {
        self.deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
    }

    /// What is left of the build's `max-time`, in ms (at least 1: a
    /// command sent with the last millisecond is stopped at once), or
    /// `None` without one — or for an always-run step after the build ran
    /// out of time, which gets its own limits only.
    fn build_time_left_ms(&self) -> Option<u64> {
        let left = self
            .deadline?
            .checked_duration_since(tokio::time::Instant::now())?;
        Some((left.as_millis() as u64).max(1))
    }

    /// Waits until every lock of the step is free, then takes them all.
    async fn take_step_locks(&mut self, step: &Step) -> Option<HeldLocks> {
        if step.locks.is_empty() {
            return Some(HeldLocks::default());
        }
        loop {
            let notified = self.shared.locks_released.notified();
            // Read each time: an applied config may change a lock's count.
            let g = self.shared.graph();
            if let Ok(mut q) = self.shared.queue.lock() {
                if let Some(t) = q.take_locks(&step.locks, &g, &self.build.build.worker) {
                    return Some(t);
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = self.cancel.changed() => {
                    if *self.cancel.borrow() {
                        return None;
                    }
                }
            }
        }
    }

    /// Gives a step's locks back (a step without any does not lock the
    /// queue).
    fn release_step_locks(&self, held: HeldLocks) {
        if held.is_empty() {
            return;
        }
        queue::update(&self.shared, |q| q.release(held)).send(&self.shared);
    }

    /// The step's environment: the builder's, then the step's (a step's
    /// variable overrides the builder's), with secrets resolved. `over`:
    /// the connection it will be sent on (`None`: it stays on the master);
    /// secrets go only over TLS or loopback.
    fn env(
        &self,
        step: &Step,
        over: Option<&WorkerConn>,
    ) -> Result<BTreeMap<String, String>, String> {
        let secrets = self.shared.secrets();
        let mut env = BTreeMap::new();
        let mut secret_vars = Vec::new();
        for (vars, hidden) in [
            (&self.builder.env, &self.builder.env_secrets),
            (&step.env, &step.env_secrets),
        ] {
            for (k, v) in vars {
                env.insert(k.clone(), render(v, &self.props));
            }
            for (k, c) in hidden {
                let Some(v) = secrets.get(c) else {
                    let name = match c {
                        bbc_graph::Credential::Secret { secret } => secret.as_str(),
                        bbc_graph::Credential::Plain(_) => "?",
                    };
                    return Err(format!(
                        "secret `{name}` (for ${k}) is not available to the master"
                    ));
                };
                env.insert(k.clone(), v.to_string());
                secret_vars.push(k.as_str());
            }
        }
        if let Some(conn) = over {
            if conn.protocol == bbc_graph::WorkerProtocol::Buildbot && !secret_vars.is_empty() {
                return Err(format!(
                    "not sent: the environment holds secrets (${}) and worker `{}` is a \
                     Buildbot worker, which writes every message from the master to its \
                     log (docs/protocol.md, \"Buildbot workers\")",
                    secret_vars.join(", $"),
                    conn.name
                ));
            }
            if !conn.secure && !secret_vars.is_empty() {
                return Err(format!(
                    "not sent: the environment holds secrets (${}) and worker `{}` is connected \
                     over plain TCP from another host; secrets go only over TLS or loopback \
                     (docs/security.md)",
                    secret_vars.join(", $"),
                    conn.name
                ));
            }
        }
        Ok(env)
    }

    fn workdir(&self, step: &Step) -> String {
        step.workdir
            .as_ref()
            .map(|w| render(w, &self.props))
            .unwrap_or_else(|| "build".to_string())
    }

    fn wire(&self, c: &Command) -> WireCommand {
        match c {
            Command::Shell(t) => WireCommand::Shell(render(t, &self.props)),
            Command::Argv(v) => {
                WireCommand::Argv(v.iter().map(|t| render(t, &self.props)).collect())
            }
        }
    }

    async fn step(&mut self, index: u32, step: &Step) -> Outcome {
        match &step.kind {
            StepKind::Shell {
                command,
                warning_pattern,
            }
            | StepKind::Compile {
                command,
                warning_pattern,
            }
            | StepKind::Test {
                command,
                warning_pattern,
                ..
            } => {
                let cmd = self.wire(command);
                let wd = self.workdir(step);
                let mut out = self
                    .command(index, step, cmd, wd, warning_pattern.as_deref(), false)
                    .await;
                if let StepKind::Test {
                    junit: Some(path), ..
                } = &step.kind
                {
                    if !matches!(out.result, BuildResult::Retry | BuildResult::Cancelled) {
                        let line = match self.junit(step, path).await {
                            Ok(t) => {
                                let line = format!(
                                    "junit {path}: {} passed, {} failed, {} skipped\n",
                                    t.passed, t.failed, t.skipped
                                );
                                out.tests = Some(t);
                                line
                            }
                            Err(e) => format!("junit {path}: not read: {e}\n"),
                        };
                        out.log_tail.extend_from_slice(line.as_bytes());
                    }
                }
                out
            }
            StepKind::Git { .. } => self.git(index, step).await,
            StepKind::SetProperty { property, value } => {
                let v = render(value, &self.props);
                self.log(index, format!("{property} = {v}\n").as_bytes())
                    .await;
                self.set_prop(property, v).await;
                Outcome::of(BuildResult::Success, format!("set {property}"))
            }
            StepKind::SetPropertyFromCommand { property, command } => {
                let cmd = self.wire(command);
                let wd = self.workdir(step);
                let mut out = self.command(index, step, cmd, wd, None, true).await;
                if out.result == BuildResult::Success {
                    let text = out.captured.take().unwrap_or_default();
                    let v = String::from_utf8_lossy(&text).trim().to_string();
                    self.set_prop(property, v).await;
                    out.state = format!("set {property}");
                }
                out
            }
            StepKind::MasterShell { command } => self.master_shell(index, step, command).await,
            StepKind::Trigger {
                schedulers,
                wait,
                copy_properties,
                set_properties,
            } => {
                self.trigger(index, schedulers, *wait, copy_properties, set_properties)
                    .await
            }
            StepKind::Upload {
                src,
                dest,
                directory,
            } => {
                let (src, dest) = (render(src, &self.props), render(dest, &self.props));
                self.upload(index, step, src, dest, *directory).await
            }
            StepKind::Download {
                src,
                dest,
                directory,
            } => {
                let (src, dest) = (render(src, &self.props), render(dest, &self.props));
                self.download(index, step, src, dest, *directory).await
            }
        }
    }

    fn prop(&self, name: &str) -> Option<String> {
        self.props.get(name).map(|v| v.to_string())
    }

    async fn set_prop(&mut self, name: &str, value: String) {
        // Every property a step sets is stored and served by the API: no
        // secret in it, whatever the step's output held.
        let value = self.shared.secrets().redact(&value);
        self.props.insert(name.to_string(), Scalar::String(value));
        let id = self.build.id;
        let p = self.props.clone();
        let st = String::new();
        let _ = self
            .shared
            .db(move |s| {
                let b = s.build(id)?;
                s.set_build_state(id, b.as_ref().map_or(&st, |b| &b.state_string), &p)
            })
            .await;
    }

    fn redactor(&self) -> Redactor {
        self.shared.secrets().redactor()
    }
}
