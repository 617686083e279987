//! A command step on the worker: the command sent, its output streamed
//! into the step's log (redacted, batched, warnings counted), its end
//! turned into the step's result.

use bbc_graph::{BuildResult, Step, StepKind};

use super::log::{LineCounter, LogWriter, LOG_BATCH};
use super::{Ctx, Outcome};
use crate::protocol::{Frame, Message, Stopped, WireCommand};
use crate::state::connection::CmdEvent;
use crate::test_results::Scanner;

/// A command step's start record waits at most this long for the step's
/// first log bytes (or its end) to be stored with them.
const START_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// At most this much of a command's stdout is kept for `set-property
/// command=…` (beyond it the rest is dropped).
const MAX_CAPTURE: usize = 1 << 20;

impl Ctx {
    /// Runs a command on the worker, streaming its output into the step's log.
    pub(super) async fn command(
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
        let env = match self.env(step, Some(&conn)) {
            Ok(env) => env,
            Err(why) => return Outcome::of(BuildResult::Exception, why),
        };
        let header = match &cmd {
            WireCommand::Shell(s) => format!("$ {s}\n"),
            WireCommand::Argv(v) => format!("$ {}\n", v.join(" ")),
        };
        let mut redact = self.redactor();
        let mut head = redact.push(header.as_bytes());
        let mut writer = LogWriter::new(
            self.shared.store.clone(),
            self.build.id,
            index,
            self.log_bytes.clone(),
        );
        // The step's start is stored with the first log bytes: the header
        // (not awaited: the command starts meanwhile), else the first
        // output, else after START_DELAY, else (a quick command) with the
        // step's end — one trip to the store fewer.
        let mut start = self.pending_start.take();
        if !head.is_empty() {
            writer.write(&mut head, start.take()).await;
        }
        let start_due = tokio::time::Instant::now() + START_DELAY;
        let build_left = self.build_time_left_ms();
        // Whether a stop for max-time is the build's limit, not the step's.
        let build_limit = build_left.is_some_and(|b| step.max_time_ms.is_none_or(|a| b < a));
        let id = self.shared.next_id();
        let mut rx = conn.expect(id);
        let run = Message::Run {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir,
            command: cmd,
            env,
            timeout_ms: step.timeout_ms,
            max_time_ms: match (step.max_time_ms, build_left) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            sigterm_time_ms: step.sigterm_time_ms,
        };
        if !conn.send(Frame::Message(run)).await {
            conn.forget(id);
            writer.wait().await;
            self.pending_start = start;
            return Outcome::of(BuildResult::Retry, "worker lost");
        }
        let re = warning_pattern.and_then(|p| self.shared.pattern(p));
        let mut lines = LineCounter::default();
        // Runner summaries are read from `test` steps, figures from every
        // command; from the redacted output, so no secret becomes a name.
        let mut results = Scanner::new(matches!(step.kind, StepKind::Test { .. }));
        let mut batch: Vec<u8> = Vec::new();
        let mut captured: Option<Vec<u8>> = capture.then(Vec::new);
        // What is captured becomes a build property, stored and served
        // whole: it is redacted like the log, by a redactor of its own
        // (the log's mixes stdout with stderr), before the bound cuts it,
        // so no part of a secret survives the cut.
        let mut capture_redact = self.redactor();
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
                        if c.len() < MAX_CAPTURE {
                            c.extend_from_slice(&capture_redact.push(&data));
                        }
                    }
                    if let Some(re) = &re {
                        lines.feed(&data, re);
                    }
                    let clean = redact.push(&data);
                    results.feed(&clean);
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
        let tail = redact.finish();
        results.feed(&tail);
        batch.extend(tail);
        let (tests, figures) = results.finish();
        if let Some(c) = captured.as_mut().filter(|c| c.len() < MAX_CAPTURE) {
            c.extend(capture_redact.finish());
        }
        if let Some(re) = &re {
            lines.finish(re);
        }
        // What is left goes with the step's end record (see `steps`).
        writer.wait().await;
        self.pending_start = start;
        // Once output was lost, the rest is not written either (the log
        // would have a hole); the step ends as `exception` saying so.
        let lost = writer.lost().map(|l| {
            let bytes = l.bytes + batch.len() as u64;
            batch.clear();
            (bytes, l.error.clone())
        });
        let Some((exit_code, signal, stopped, error, duration_ms)) = finished else {
            if lost.is_none() {
                batch.extend_from_slice(b"\nworker connection lost\n");
            }
            let mut out = Outcome::of(BuildResult::Retry, "worker lost");
            out.log_tail = batch;
            out.lost = lost;
            out.tests = tests;
            out.figures = figures;
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
            (Some(Stopped::MaxTime), _, _) if build_limit => (
                BuildResult::Failure,
                format!(
                    "killed: the build ran longer than its max-time ({} s)",
                    self.builder.max_time_ms.unwrap_or(0) / 1000
                ),
            ),
            (Some(Stopped::MaxTime), _, _) => (
                BuildResult::Failure,
                "killed: ran longer than max-time".to_string(),
            ),
            (None, Some(e), _) => (BuildResult::Exception, format!("could not run: {e}")),
            (None, None, Some(code)) => exit_result(step, code),
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
        if lost.is_none() {
            batch.extend_from_slice(trailer.as_bytes());
        }
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
            lost,
            tests,
            figures,
        }
    }
}

/// The result and state line of a command that exited with `code`: the
/// step's `decode-rc` first, else 0 is success and anything else failure.
pub(super) fn exit_result(step: &Step, code: i32) -> (BuildResult, String) {
    let r = step.decode_rc.get(&code).copied().unwrap_or(if code == 0 {
        BuildResult::Success
    } else {
        BuildResult::Failure
    });
    let state = if code == 0 {
        step.name.clone()
    } else {
        format!("{} (exit {code})", step.name)
    };
    (r, state)
}
