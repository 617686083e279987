//! Running one build: its steps in order on one worker, with Buildbot's
//! rules for results (halt-on-failure, flunk-on-failure, warn-on-…,
//! always-run), logs streamed to the store, and secrets redacted.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bbc_graph::{
    BuildResult, Builder, Command, GitMethod, GitMode, Scalar, SchedulerKind, Step, StepKind,
};
use bytes::Bytes;
use tokio::sync::watch;

use super::worst;
use crate::protocol::{Frame, Message, Stopped, WireCommand, CHUNK};
use crate::secrets::Redactor;
use crate::state::connection::{CmdEvent, WorkerConn};
use crate::state::{now_ms, Shared};
use crate::store::{Build, BuildSet, NewBuildSet, Properties, StepRecord};
use bbc_graph::eval::{eval, render, truthy};

/// Log bytes are written to the store in batches of about this size.
const LOG_BATCH: usize = 64 * 1024;

/// A command step's start record waits at most this long for the step's
/// first log bytes (or its end) to be stored with them.
const START_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

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
    pending_end: Option<StepEnd>,
}

/// What the store records when a step ends: its start if still
/// unrecorded, the end of its log, the log's sync, and its end record.
struct StepEnd {
    start: Option<StepStart>,
    tail: Vec<u8>,
    rec: StepRecord,
}

impl StepEnd {
    fn store(self, s: &dyn crate::store::Store, id: u64) {
        let index = self.rec.index;
        if let Some(start) = self.start {
            start.store(s, id);
        }
        if !self.tail.is_empty() {
            if let Err(e) = s.append_log(id, index, &self.tail) {
                tracing::error!("cannot store log of build {id}: {e}");
            }
        }
        if let Err(e) = s.sync_log(id, index) {
            tracing::error!("cannot sync the log of build {id}: {e}");
        }
        let mut rec = self.rec;
        rec.log_len = s.log_len(id, index).unwrap_or(0);
        if let Err(e) = s.put_step(id, &rec) {
            tracing::error!("cannot record a step of build {id}: {e}");
        }
    }
}

/// What the store records when a step starts.
struct StepStart {
    rec: StepRecord,
    state: String,
    props: Properties,
}

impl StepStart {
    fn store(self, s: &dyn crate::store::Store, id: u64) {
        if let Err(e) = s.put_step(id, &self.rec) {
            tracing::error!("cannot record a step of build {id}: {e}");
        }
        let _ = s.set_build_state(id, &self.state, &self.props);
    }
}

struct Outcome {
    result: BuildResult,
    warnings: u64,
    state: String,
    /// stdout kept for `set-property command=…` (bounded).
    captured: Option<Vec<u8>>,
    /// The end of the step's log, stored with the step's end record.
    log_tail: Vec<u8>,
}

impl Outcome {
    fn of(result: BuildResult, state: impl Into<String>) -> Outcome {
        Outcome {
            result,
            warnings: 0,
            state: state.into(),
            captured: None,
            log_tail: Vec::new(),
        }
    }
}

/// Appends a step's log while the build goes on: one write runs on a
/// blocking thread while the next batch is filled (and redacted), and the
/// two buffers are reused, so a long log costs no allocation per batch.
struct LogWriter {
    store: Arc<dyn crate::store::Store>,
    build: u64,
    step: u32,
    inflight: Option<tokio::task::JoinHandle<Vec<u8>>>,
    spare: Vec<u8>,
}

impl LogWriter {
    fn new(store: Arc<dyn crate::store::Store>, build: u64, step: u32) -> LogWriter {
        LogWriter {
            store,
            build,
            step,
            inflight: None,
            spare: Vec::new(),
        }
    }

    /// Starts appending `buf` (leaving it empty) once the previous append
    /// is done; with the step's start record first, if given.
    async fn write(&mut self, buf: &mut Vec<u8>, start: Option<StepStart>) {
        if buf.is_empty() && start.is_none() {
            return;
        }
        self.wait().await;
        let data = std::mem::replace(buf, std::mem::take(&mut self.spare));
        let (store, id, step) = (self.store.clone(), self.build, self.step);
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            if let Some(start) = start {
                start.store(store.as_ref(), id);
            }
            if !data.is_empty() {
                if let Err(e) = store.append_log(id, step, &data) {
                    tracing::error!("cannot store log of build {id}: {e}");
                }
            }
            let mut data = data;
            data.clear();
            data
        }));
    }

    /// Waits for the append under way.
    async fn wait(&mut self) {
        if let Some(h) = self.inflight.take() {
            match h.await {
                Ok(buf) => self.spare = buf,
                Err(e) => tracing::error!("log writer failed: {e}"),
            }
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
    };
    let result = cx.steps().await;
    let id = cx.build.id;
    let state = match result {
        BuildResult::Success => "build successful".to_string(),
        BuildResult::Retry => "worker lost; will retry".to_string(),
        r => format!("build {}", r.name()),
    };
    let props = cx.props.clone();
    let last = cx.pending_end.take();
    let finished_at = now_ms();
    let state2 = state.clone();
    // One trip: the last step's end, the final state (both waiting in the
    // store) and the end of the build (durable, which makes them durable).
    let recorded = shared
        .db(move |s| {
            if let Some(end) = last {
                end.store(s, id);
            }
            let _ = s.set_build_state(id, &state2, &props);
            s.finish_build(id, result, finished_at)
        })
        .await;
    match recorded {
        Ok(()) => {
            let b = &mut cx.build;
            b.result = Some(result);
            b.finished_at = Some(finished_at);
            b.state_string = state;
            b.build.properties = std::mem::take(&mut cx.props);
            shared
                .reporters
                .publish(crate::reporters::Phase::Finished, b, &set);
        }
        Err(e) => tracing::error!("cannot record the end of build {id}: {e}"),
    }
    if let Ok(mut q) = shared.queue.lock() {
        q.finish(slot);
    }
    if result == BuildResult::Retry {
        // The requests are pending again in the store; put them back in
        // the queue.
        requeue(&shared, &cx.build).await;
    }
    shared.wake.notify_one();
    shared.locks_released.notify_waiters();
    shared.build_finished.notify_waiters();
}

async fn requeue(shared: &Arc<Shared>, build: &Build) {
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
    let g = shared.graph();
    if let (Ok(loaded), Ok(mut q)) = (loaded, shared.queue.lock()) {
        for (mut r, set) in loaded {
            if r.state == crate::store::RequestState::Pending {
                // The queue orders by the config in force.
                if let Some(b) = g.builder(&r.builder) {
                    r.priority = b.priority;
                }
                q.add(r, Arc::new(set));
            }
        }
    }
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
            if (halted || cancelled) && !step.always_run {
                rec.result = Some(BuildResult::Skipped);
                rec.state_string = "skipped".into();
                self.put_step(&rec).await;
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
                    self.put_step(&rec).await;
                    continue;
                }
            }
            rec.started_at = Some(now_ms());
            rec.state_string = format!("running {}", step.name);
            let id = self.build.id;
            let start = StepStart {
                rec: rec.clone(),
                state: format!("running {}", step.name),
                props: self.props.clone(),
            };
            if step.locks.is_empty() && runs_command(step) {
                // Stored with the command's first log bytes.
                self.pending_start = Some(start);
            } else {
                let _ = self
                    .shared
                    .db(move |s| {
                        start.store(s, id);
                        Ok(())
                    })
                    .await;
            }
            if let Ok(mut q) = self.shared.queue.lock() {
                if let Some(r) = q.running.get_mut(&self.slot) {
                    r.step = Some(index);
                }
            }
            let locks = self.take_step_locks(step).await;
            let mut out = match locks {
                Some(taken) => {
                    let o = self.step(index, step).await;
                    if let Ok(mut q) = self.shared.queue.lock() {
                        q.release_all(&taken);
                    }
                    self.shared.locks_released.notify_waiters();
                    self.shared.wake.notify_one();
                    o
                }
                None => Outcome::of(BuildResult::Cancelled, "cancelled while waiting for a lock"),
            };
            rec.finished_at = Some(now_ms());
            rec.result = Some(out.result);
            rec.warnings = out.warnings;
            rec.state_string = out.state.clone();
            rec.hidden = step
                .hide_step_if
                .as_ref()
                .is_some_and(|h| truthy(&eval(h, &self.props)));
            let end = StepEnd {
                start: self.pending_start.take(),
                tail: std::mem::take(&mut out.log_tail),
                rec: rec.clone(),
            };
            if i + 1 == builder.steps.len() || out.result == BuildResult::Retry {
                // The last step: stored with the build's end, in one trip.
                self.pending_end = Some(end);
            } else {
                let _ = self
                    .shared
                    .db(move |s| {
                        end.store(s, id);
                        Ok(())
                    })
                    .await;
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

    async fn put_step(&self, rec: &StepRecord) {
        let id = self.build.id;
        let rec = rec.clone();
        if let Err(e) = self.shared.db(move |s| s.put_step(id, &rec)).await {
            tracing::error!("cannot record a step of build {id}: {e}");
        }
    }

    /// Waits until every lock of the step is free, then takes them all.
    async fn take_step_locks(
        &mut self,
        step: &Step,
    ) -> Option<Vec<(super::queue::LockKey, bbc_graph::LockAccess)>> {
        if step.locks.is_empty() {
            return Some(Vec::new());
        }
        loop {
            let notified = self.shared.locks_released.notified();
            // Read each time: an applied config may change a lock's count.
            let g = self.shared.graph();
            if let Ok(mut q) = self.shared.queue.lock() {
                if let Some(t) = q.try_take_all(&step.locks, &g, &self.build.build.worker) {
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

    fn env(&self, step: &Step) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .builder
            .env
            .iter()
            .map(|(k, v)| (k.clone(), render(v, &self.props)))
            .collect();
        env.extend(
            step.env
                .iter()
                .map(|(k, v)| (k.clone(), render(v, &self.props))),
        );
        env
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
            } => {
                let cmd = self.wire(command);
                let wd = self.workdir(step);
                self.command(index, step, cmd, wd, warning_pattern.as_deref(), false)
                    .await
            }
            StepKind::Git {
                repo,
                branch,
                mode,
                method,
            } => {
                let repo = render(repo, &self.props);
                let branch = branch
                    .as_ref()
                    .map(|b| render(b, &self.props))
                    .or_else(|| self.prop("branch"))
                    .filter(|b| !b.is_empty());
                let revision = self.prop("revision").filter(|r| !r.is_empty());
                let wd = step
                    .workdir
                    .as_ref()
                    .map(|w| render(w, &self.props))
                    .unwrap_or_else(|| "build".into());
                let script = git_script(
                    &repo,
                    branch.as_deref(),
                    revision.as_deref(),
                    &wd,
                    *mode,
                    *method,
                );
                let mut out = self
                    .command(
                        index,
                        step,
                        WireCommand::Shell(script),
                        ".".into(),
                        None,
                        true,
                    )
                    .await;
                if out.result == BuildResult::Success {
                    let text = out.captured.take().unwrap_or_default();
                    // The script's last line is the checked-out commit.
                    if let Some(rev) = String::from_utf8_lossy(&text)
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("got_revision="))
                    {
                        self.set_prop("got_revision", rev.trim().to_string()).await;
                    }
                }
                out
            }
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
                let src = render(src, &self.props);
                let dest = render(dest, &self.props);
                self.upload(index, step, src, dest, *directory).await
            }
            StepKind::Download {
                src,
                dest,
                directory,
            } => {
                let src = render(src, &self.props);
                let dest = render(dest, &self.props);
                self.download(index, step, src, dest, *directory).await
            }
        }
    }

    fn prop(&self, name: &str) -> Option<String> {
        self.props.get(name).map(|v| v.to_string())
    }

    async fn set_prop(&mut self, name: &str, value: String) {
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

    async fn log(&self, index: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let id = self.build.id;
        let data = data.to_vec();
        if let Err(e) = self
            .shared
            .db(move |s| s.append_log(id, index, &data))
            .await
        {
            tracing::error!("cannot store log of build {id}: {e}");
        }
    }

    fn redactor(&self) -> Redactor {
        self.shared.secrets().redactor()
    }

    /// Runs a command on the worker, streaming its output into the step's log.
    async fn command(
        &mut self,
        index: u32,
        step: &Step,
        cmd: WireCommand,
        workdir: String,
        warning_pattern: Option<&str>,
        capture: bool,
    ) -> Outcome {
        let Some(conn) = self.conn.clone() else {
            return Outcome::of(BuildResult::Retry, "worker lost");
        };
        let header = match &cmd {
            WireCommand::Shell(s) => format!("$ {s}\n"),
            WireCommand::Argv(v) => format!("$ {}\n", v.join(" ")),
        };
        let mut redact = self.redactor();
        let mut head = redact.push(header.as_bytes());
        let mut writer = LogWriter::new(self.shared.store.clone(), self.build.id, index);
        // The step's start is stored with the first log bytes: the header
        // (not awaited: the command starts meanwhile), else the first
        // output, else after START_DELAY, else (a quick command) with the
        // step's end — one trip to the store fewer.
        let mut start = self.pending_start.take();
        if !head.is_empty() {
            writer.write(&mut head, start.take()).await;
        }
        let start_due = tokio::time::Instant::now() + START_DELAY;
        let id = self.shared.next_id();
        let mut rx = conn.expect(id);
        let run = Message::Run {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir,
            command: cmd,
            env: self.env(step),
            timeout_ms: step.timeout_ms,
            max_time_ms: step.max_time_ms.or(self.builder.max_time_ms),
            sigterm_time_ms: step.sigterm_time_ms,
        };
        if !conn.send(Frame::Message(run)).await {
            conn.forget(id);
            writer.wait().await;
            self.pending_start = start;
            return Outcome::of(BuildResult::Retry, "worker lost");
        }
        let re = warning_pattern.and_then(|p| regex::bytes::Regex::new(p).ok());
        let mut lines = LineCounter::default();
        let mut batch: Vec<u8> = Vec::new();
        let mut captured: Option<Vec<u8>> = capture.then(Vec::new);
        let mut interrupted = false;
        let finished = loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = self.cancel.changed(), if !interrupted => {
                    if *self.cancel.borrow() {
                        interrupted = true;
                        let _ = conn.send(Frame::Message(Message::Interrupt { id })).await;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(start_due), if start.is_some() => {
                    writer.write(&mut Vec::new(), start.take()).await;
                    continue;
                }
            };
            match ev {
                Some(CmdEvent::Output(stream, data)) => {
                    if let (Some(c), crate::protocol::Stream::Stdout) = (captured.as_mut(), stream)
                    {
                        if c.len() < 1 << 20 {
                            c.extend_from_slice(&data);
                        }
                    }
                    if let Some(re) = &re {
                        lines.feed(&data, re);
                    }
                    let clean = redact.push(&data);
                    batch.extend_from_slice(&clean);
                    // Write when the batch is full or nothing else is queued.
                    if batch.len() >= LOG_BATCH || rx.is_empty() {
                        writer.write(&mut batch, start.take()).await;
                    }
                }
                Some(CmdEvent::Finished {
                    exit_code,
                    signal,
                    stopped,
                    error,
                    duration_ms,
                }) => break Some((exit_code, signal, stopped, error, duration_ms)),
                None | Some(CmdEvent::Lost) => break None,
                Some(_) => {}
            }
        };
        batch.extend(redact.finish());
        if let Some(re) = &re {
            lines.finish(re);
        }
        // What is left goes with the step's end record (see `steps`).
        writer.wait().await;
        self.pending_start = start;
        let Some((exit_code, signal, stopped, error, duration_ms)) = finished else {
            batch.extend_from_slice(b"\nworker connection lost\n");
            let mut out = Outcome::of(BuildResult::Retry, "worker lost");
            out.log_tail = batch;
            return out;
        };
        let (result, state) = match (stopped, error, exit_code) {
            (Some(Stopped::Interrupted), _, _) => (BuildResult::Cancelled, "cancelled".to_string()),
            (Some(Stopped::NoOutput), _, _) => (
                BuildResult::Failure,
                format!(
                    "timed out: no output for {} s",
                    step.timeout_ms.unwrap_or(0) / 1000
                ),
            ),
            (Some(Stopped::MaxTime), _, _) => (
                BuildResult::Failure,
                "killed: ran longer than max-time".to_string(),
            ),
            (None, Some(e), _) => (BuildResult::Exception, format!("could not run: {e}")),
            (None, None, Some(code)) => {
                let r = step.decode_rc.get(&code).copied().unwrap_or(if code == 0 {
                    BuildResult::Success
                } else {
                    BuildResult::Failure
                });
                (
                    r,
                    if code == 0 {
                        step.name.clone()
                    } else {
                        format!("{} (exit {code})", step.name)
                    },
                )
            }
            (None, None, None) => (
                BuildResult::Failure,
                format!("killed by signal {}", signal.unwrap_or(0)),
            ),
        };
        let trailer = match exit_code {
            Some(c) => format!(
                "\nexit code {c} after {:.1} s\n",
                duration_ms as f64 / 1000.0
            ),
            None => format!("\n{state} after {:.1} s\n", duration_ms as f64 / 1000.0),
        };
        batch.extend_from_slice(trailer.as_bytes());
        let mut result = result;
        if result == BuildResult::Success && lines.count > 0 {
            result = BuildResult::Warnings;
        }
        let state = if lines.count > 0 {
            format!("{state} ({} warnings)", lines.count)
        } else {
            state
        };
        Outcome {
            result,
            warnings: lines.count,
            state,
            captured,
            log_tail: batch,
        }
    }

    async fn master_shell(&mut self, index: u32, step: &Step, command: &Command) -> Outcome {
        let dir = self
            .shared
            .state_dir
            .join("master-work")
            .join(&self.builder.workdir);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            return Outcome::of(
                BuildResult::Exception,
                format!("cannot create {}: {e}", dir.display()),
            );
        }
        let mut c = match self.wire(command) {
            WireCommand::Shell(s) => {
                self.log(index, format!("$ {s}\n").as_bytes()).await;
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            WireCommand::Argv(v) => {
                self.log(index, format!("$ {}\n", v.join(" ")).as_bytes())
                    .await;
                let Some((prog, args)) = v.split_first() else {
                    return Outcome::of(BuildResult::Exception, "empty command");
                };
                let mut c = tokio::process::Command::new(prog);
                c.args(args);
                c
            }
        };
        c.current_dir(&dir)
            .envs(self.env(step))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::of(BuildResult::Exception, format!("could not run: {e}")),
        };
        let pid = child.id();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, tx.clone()));
        }
        drop(tx);
        let mut redact = self.redactor();
        let mut cancelled = false;
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(b) => {
                        let clean = redact.push(&b);
                        self.log(index, &clean).await;
                    }
                    None => break,
                },
                _ = self.cancel.changed(), if !cancelled => {
                    if *self.cancel.borrow() {
                        cancelled = true;
                        if let Some(pid) = pid {
                            // SAFETY: plain syscall on a process group we created.
                            unsafe { libc::killpg(pid as i32, libc::SIGTERM) };
                        }
                    }
                }
            }
        }
        let tail = redact.finish();
        self.log(index, &tail).await;
        let status = child.wait().await;
        match status {
            _ if cancelled => Outcome::of(BuildResult::Cancelled, "cancelled"),
            Ok(s) => match s.code() {
                Some(code) => {
                    let r = step.decode_rc.get(&code).copied().unwrap_or(if code == 0 {
                        BuildResult::Success
                    } else {
                        BuildResult::Failure
                    });
                    self.log(index, format!("\nexit code {code}\n").as_bytes())
                        .await;
                    Outcome::of(
                        r,
                        if code == 0 {
                            step.name.clone()
                        } else {
                            format!("{} (exit {code})", step.name)
                        },
                    )
                }
                None => Outcome::of(BuildResult::Failure, "killed by a signal"),
            },
            Err(e) => Outcome::of(BuildResult::Exception, format!("wait failed: {e}")),
        }
    }

    async fn trigger(
        &mut self,
        index: u32,
        schedulers: &[String],
        wait: bool,
        copy: &[String],
        set: &BTreeMap<String, bbc_graph::Text>,
    ) -> Outcome {
        let g = self.shared.graph();
        let mut props = Properties::new();
        for c in copy {
            if let Some(v) = self.props.get(c) {
                props.insert(c.clone(), v.clone());
            }
        }
        for (k, v) in set {
            props.insert(k.clone(), Scalar::String(render(v, &self.props)));
        }
        let source = crate::store::SourceStamp {
            repository: self.prop("repository").unwrap_or_default(),
            branch: self.prop("branch").unwrap_or_default(),
            revision: self
                .prop("got_revision")
                .or_else(|| self.prop("revision"))
                .unwrap_or_default(),
        };
        let mut sets = Vec::new();
        for name in schedulers {
            let Some(s) = g
                .scheduler(name)
                .filter(|s| matches!(s.kind, SchedulerKind::Triggerable {}))
            else {
                self.log(
                    index,
                    format!("scheduler `{name}` is not triggerable in the current config\n")
                        .as_bytes(),
                )
                .await;
                return Outcome::of(BuildResult::Exception, format!("cannot trigger {name}"));
            };
            let bs = NewBuildSet {
                scheduler: name.clone(),
                reason: format!("triggered by {} #{}", self.builder.name, self.build.number),
                source: source.clone(),
                changes: Vec::new(),
                properties: props.clone(),
                parent_build: Some(self.build.id),
                submitted_at: now_ms(),
            };
            match self.shared.submit(bs, s.builders.clone()).await {
                Ok((set, reqs)) => {
                    self.log(
                        index,
                        format!(
                            "triggered {name}: build set {} ({} builds)\n",
                            set.id,
                            reqs.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                    sets.push(set.id);
                }
                Err(e) => {
                    return Outcome::of(
                        BuildResult::Exception,
                        format!("cannot trigger {name}: {e}"),
                    )
                }
            }
        }
        if !wait {
            return Outcome::of(
                BuildResult::Success,
                format!("triggered {}", schedulers.join(", ")),
            );
        }
        let mut result = BuildResult::Success;
        let all = sets.clone();
        for id in sets {
            loop {
                let notified = self.shared.build_finished.notified();
                let set = self.shared.db(move |s| s.buildset(id)).await;
                if let Ok(Some(bs)) = &set {
                    if let Some(r) = bs.result {
                        result = worst(result, r);
                        break;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = self.cancel.changed() => {
                        if *self.cancel.borrow() {
                            // The builds this step waits for are cancelled too.
                            let n = self.shared.cancel_buildsets(&all).await;
                            self.log(index, format!("cancelled; cancelled {n} triggered build(s) and request(s)\n").as_bytes()).await;
                            return Outcome::of(BuildResult::Cancelled, "cancelled while waiting");
                        }
                    }
                }
            }
        }
        Outcome::of(
            result,
            format!("triggered {}: {}", schedulers.join(", "), result.name()),
        )
    }

    /// The worker of a transfer and the master-side path (`what` is
    /// "source" or "destination"), which must stay inside the master's
    /// files directory.
    fn transfer_ends(&self, path: &str, what: &str) -> Result<(Arc<WorkerConn>, PathBuf), Outcome> {
        let Some(conn) = self.conn.clone() else {
            return Err(Outcome::of(BuildResult::Retry, "worker lost"));
        };
        match master_path(&self.shared.state_dir, path) {
            Some(p) => Ok((conn, p)),
            None => Err(Outcome::of(
                BuildResult::Exception,
                format!("{what} `{path}` leaves the master's files directory"),
            )),
        }
    }

    async fn upload(
        &mut self,
        index: u32,
        step: &Step,
        src: String,
        dest: String,
        directory: bool,
    ) -> Outcome {
        let (conn, dest_path) = match self.transfer_ends(&dest, "destination") {
            Ok(ends) => ends,
            Err(o) => return o,
        };
        let id = self.shared.next_id();
        let msg = Message::Upload {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir: self.workdir(step),
            src: src.clone(),
            directory,
        };
        let mut rx = match open_transfer(&conn, id, msg).await {
            Ok(rx) => rx,
            Err(o) => return o,
        };
        let mut file: Option<tokio::fs::File> = None;
        let mut files = 0u64;
        let mut bytes = 0u64;
        loop {
            match rx.recv().await {
                Some(CmdEvent::FileBegin { path, .. }) => {
                    let target = if directory {
                        match safe_join(&dest_path, &path) {
                            Some(p) => p,
                            None => {
                                return Outcome::of(
                                    BuildResult::Exception,
                                    format!("worker sent a bad path `{path}`"),
                                )
                            }
                        }
                    } else {
                        dest_path.clone()
                    };
                    if let Some(parent) = target.parent() {
                        let _ = tokio::fs::create_dir_all(parent).await;
                    }
                    file = match tokio::fs::File::create(&target).await {
                        Ok(f) => Some(f),
                        Err(e) => {
                            return Outcome::of(
                                BuildResult::Exception,
                                format!("cannot write {}: {e}", target.display()),
                            )
                        }
                    };
                    files += 1;
                }
                Some(CmdEvent::FileData(d)) => {
                    use tokio::io::AsyncWriteExt;
                    bytes += d.len() as u64;
                    if let Some(f) = file.as_mut() {
                        if let Err(e) = f.write_all(&d).await {
                            return Outcome::of(
                                BuildResult::Exception,
                                format!("write failed: {e}"),
                            );
                        }
                    }
                }
                Some(CmdEvent::FileEnd) => {
                    if let Some(mut f) = file.take() {
                        use tokio::io::AsyncWriteExt;
                        let _ = f.flush().await;
                    }
                }
                Some(CmdEvent::Finished { error, .. }) => {
                    if let Some(e) = error {
                        self.log(index, format!("upload failed: {e}\n").as_bytes())
                            .await;
                        return Outcome::of(BuildResult::Failure, format!("upload failed: {e}"));
                    }
                    self.log(
                        index,
                        format!("uploaded {src} → {dest}: {files} file(s), {bytes} bytes\n")
                            .as_bytes(),
                    )
                    .await;
                    return Outcome::of(BuildResult::Success, format!("uploaded {src}"));
                }
                None | Some(CmdEvent::Lost) => {
                    return Outcome::of(BuildResult::Retry, "worker lost")
                }
                Some(_) => {}
            }
        }
    }

    async fn download(
        &mut self,
        index: u32,
        step: &Step,
        src: String,
        dest: String,
        directory: bool,
    ) -> Outcome {
        let (conn, src_path) = match self.transfer_ends(&src, "source") {
            Ok(ends) => ends,
            Err(o) => return o,
        };
        let files: Vec<(String, PathBuf)> = if directory {
            let root = src_path.clone();
            match tokio::task::spawn_blocking(move || list_files(&root)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return Outcome::of(BuildResult::Failure, format!("cannot read {src}: {e}"))
                }
                Err(e) => return Outcome::of(BuildResult::Exception, e.to_string()),
            }
        } else {
            vec![(String::new(), src_path.clone())]
        };
        let id = self.shared.next_id();
        let msg = Message::Download {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir: self.workdir(step),
            dest: dest.clone(),
            directory,
        };
        let mut rx = match open_transfer(&conn, id, msg).await {
            Ok(rx) => rx,
            Err(o) => return o,
        };
        let mut bytes = 0u64;
        for (rel, path) in &files {
            use tokio::io::AsyncReadExt;
            let mut f = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = conn
                        .send(Frame::Message(Message::DownloadDone { id }))
                        .await;
                    return Outcome::of(
                        BuildResult::Failure,
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            };
            if !conn
                .send(Frame::Message(Message::FileBegin {
                    id,
                    path: rel.clone(),
                    mode: 0o644,
                }))
                .await
            {
                return Outcome::of(BuildResult::Retry, "worker lost");
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        if !conn
                            .send(Frame::FileData {
                                id,
                                data: Bytes::copy_from_slice(&buf[..n]),
                            })
                            .await
                        {
                            return Outcome::of(BuildResult::Retry, "worker lost");
                        }
                    }
                    Err(e) => {
                        return Outcome::of(BuildResult::Exception, format!("read failed: {e}"))
                    }
                }
            }
            if !conn.send(Frame::Message(Message::FileEnd { id })).await {
                return Outcome::of(BuildResult::Retry, "worker lost");
            }
        }
        if !conn
            .send(Frame::Message(Message::DownloadDone { id }))
            .await
        {
            return Outcome::of(BuildResult::Retry, "worker lost");
        }
        loop {
            match rx.recv().await {
                Some(CmdEvent::Finished { error: Some(e), .. }) => {
                    self.log(index, format!("download failed: {e}\n").as_bytes())
                        .await;
                    return Outcome::of(BuildResult::Failure, format!("download failed: {e}"));
                }
                Some(CmdEvent::Finished { .. }) => {
                    self.log(
                        index,
                        format!(
                            "downloaded {src} → {dest}: {} file(s), {bytes} bytes\n",
                            files.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                    return Outcome::of(BuildResult::Success, format!("downloaded {src}"));
                }
                None | Some(CmdEvent::Lost) => {
                    return Outcome::of(BuildResult::Retry, "worker lost")
                }
                Some(_) => {}
            }
        }
    }
}

/// Copies a pipe into a channel in chunks as they come.
async fn pump<R: tokio::io::AsyncRead + Unpin>(mut r: R, tx: tokio::sync::mpsc::Sender<Bytes>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Counts lines matching the warning pattern across chunk boundaries,
/// without allocating per line.
#[derive(Default)]
struct LineCounter {
    partial: Vec<u8>,
    count: u64,
}

impl LineCounter {
    fn feed(&mut self, data: &[u8], re: &regex::bytes::Regex) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..nl];
            if self.partial.is_empty() {
                self.count += u64::from(re.is_match(line));
            } else {
                self.partial.extend_from_slice(line);
                self.count += u64::from(re.is_match(&self.partial));
                self.partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        // Bound memory on endless lines: past 64 KiB the line is judged as is.
        if self.partial.len() + rest.len() > 64 * 1024 {
            self.partial.extend_from_slice(rest);
            self.count += u64::from(re.is_match(&self.partial));
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn finish(&mut self, re: &regex::bytes::Regex) {
        if !self.partial.is_empty() {
            self.count += u64::from(re.is_match(&self.partial));
            self.partial.clear();
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The shell script a git step runs in the builder directory with the
/// worker's git. Its last output line is `got_revision=SHA`.
pub fn git_script(
    repo: &str,
    branch: Option<&str>,
    revision: Option<&str>,
    workdir: &str,
    mode: GitMode,
    method: GitMethod,
) -> String {
    let r = sh_quote(repo);
    let wd = sh_quote(workdir);
    let fetch_ref = sh_quote(branch.unwrap_or("HEAD"));
    let target = match revision {
        Some(rev) => sh_quote(rev),
        None => "FETCH_HEAD".to_string(),
    };
    let mut s = String::from("set -e\n");
    let update = |s: &mut String, dir: &str| {
        s.push_str(&format!(
            "if [ ! -d {dir}/.git ]; then rm -rf {dir}; git init -q {dir}; fi\n\
             cd {dir}\n\
             git fetch -q --tags {r} {fetch_ref}\n\
             git checkout -q -f {target}\n"
        ));
    };
    match (mode, method) {
        (GitMode::Incremental, _) => update(&mut s, &wd),
        (GitMode::Full, GitMethod::Clobber) => {
            s.push_str(&format!("rm -rf {wd}\n"));
            update(&mut s, &wd);
        }
        (GitMode::Full, GitMethod::Fresh) => {
            update(&mut s, &wd);
            s.push_str("git clean -q -f -f -d -x\n");
        }
        (GitMode::Full, GitMethod::Clean) => {
            update(&mut s, &wd);
            s.push_str("git clean -q -f -f -d\n");
        }
        (GitMode::Full, GitMethod::Copy) => {
            update(&mut s, "source");
            s.push_str(&format!("cd ..\nrm -rf {wd}\ncp -R source {wd}\ncd {wd}\n"));
        }
    }
    s.push_str("echo \"got_revision=$(git rev-parse HEAD)\"\n");
    s
}

/// `rel` under the master's files directory, refusing anything that leaves it.
pub fn master_path(state_dir: &Path, rel: &str) -> Option<PathBuf> {
    safe_join(&state_dir.join("files"), rel)
}

fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() {
        return Some(base.to_path_buf());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(base.join(p))
}

fn list_files(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sends a transfer request; its events arrive on the returned channel.
async fn open_transfer(
    conn: &WorkerConn,
    id: u64,
    msg: Message,
) -> Result<tokio::sync::mpsc::Receiver<CmdEvent>, Outcome> {
    let rx = conn.expect(id);
    if conn.send(Frame::Message(msg)).await {
        Ok(rx)
    } else {
        Err(Outcome::of(BuildResult::Retry, "worker lost"))
    }
}
