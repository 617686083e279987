//! Running one command: a child in its own process group, its output
//! streamed as it arrives, its time limits enforced on the whole group.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::{elapsed_ms, finished_error, work_dir};
use crate::protocol::{Frame, Message, Stopped, Stream, WireCommand, CHUNK};

pub(super) struct RunSpec {
    pub id: u64,
    pub builder_dir: String,
    pub workdir: String,
    pub command: WireCommand,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub max_time: Option<Duration>,
    pub sigterm_time: Duration,
}

/// Runs `spec`, streaming its output to `out`; returns its `finished`.
/// Dropping the returned future (the connection was lost) kills the
/// command's process group.
pub(super) async fn run(
    basedir: &Path,
    spec: RunSpec,
    out: &mpsc::Sender<Frame>,
    mut interrupt: mpsc::Receiver<()>,
) -> Message {
    let started = Instant::now();
    let id = spec.id;
    let dir = match work_dir(basedir, &spec.builder_dir, &spec.workdir) {
        Ok(dir) => dir,
        Err(err) => return finished_error(id, err, Some(started)),
    };
    if let Err(err) = tokio::fs::create_dir_all(&dir).await {
        return finished_error(
            id,
            format!("cannot create {}: {err}", dir.display()),
            Some(started),
        );
    }
    let mut command = match &spec.command {
        WireCommand::Shell(script) => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(script);
            command
        }
        WireCommand::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return finished_error(id, "empty command".into(), Some(started));
            };
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .current_dir(&dir)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that timeouts, interrupts and a lost
        // connection reach everything the command started.
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let what = match &spec.command {
                WireCommand::Shell(_) => "sh".to_string(),
                WireCommand::Argv(argv) => argv.first().cloned().unwrap_or_default(),
            };
            return finished_error(id, format!("cannot start {what}: {err}"), Some(started));
        }
    };
    // Declared after `child`, so dropped before it: the group is killed
    // while its leader is not yet reaped, hence its id not reusable.
    let mut group = match child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
        Some(pgid) => ProcessGroup { pgid, armed: true },
        None => {
            // Cannot happen for a child just spawned and not waited for;
            // without a pid there is nothing we could kill later.
            return finished_error(id, "the started process has no pid".into(), Some(started));
        }
    };
    // Dropped before `group`: the record goes, then the group is killed.
    // Two tiny file operations per command, on the async thread: cheaper
    // than a hop to the blocking pool.
    let _record = super::orphans::Record::new(basedir, group.pgid);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return finished_error(
            id,
            "the process's output is not piped".into(),
            Some(started),
        );
    };

    let activity = Activity::new(started);
    let pumps = async {
        tokio::join!(
            pump(stdout, id, Stream::Stdout, out, &activity),
            pump(stderr, id, Stream::Stderr, out, &activity),
        )
    };
    let mut pumps = std::pin::pin!(pumps);
    let mut pumps_done = false;
    let mut status: Option<ExitStatus> = None;
    let mut wait_error: Option<String> = None;
    let mut stopped: Option<Stopped> = None;
    // When SIGKILL follows the SIGTERM already sent.
    let mut kill_at: Option<Instant> = None;
    let mut interrupt_open = true;

    loop {
        if pumps_done && status.is_some() {
            break;
        }
        let deadline = next_deadline(&spec, &activity, stopped.is_some(), kill_at);
        // Set when the limits say "stop": handled after the select so that
        // the logic is in one place.
        let mut stop: Option<Stopped> = None;
        tokio::select! {
            _ = &mut pumps, if !pumps_done => pumps_done = true,
            waited = child.wait(), if status.is_none() => match waited {
                Ok(exit) => {
                    status = Some(exit);
                    kill_at = None;
                    // Background processes do not outlive the command:
                    // they would hold its output open (so it would never
                    // finish) and leak into the next build.
                    group.signal(libc::SIGKILL);
                }
                Err(err) => {
                    wait_error = Some(format!("waiting for the process: {err}"));
                    break;
                }
            },
            received = interrupt.recv(), if interrupt_open => match received {
                Some(()) => stop = Some(Stopped::Interrupted),
                None => interrupt_open = false,
            },
            _ = sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => {
                let now = Instant::now();
                if kill_at.is_some_and(|at| now >= at) {
                    group.signal(libc::SIGKILL);
                    kill_at = None;
                }
                stop = limit_reached(&spec, &activity, now);
            }
        }
        if let Some(reason) = stop {
            if stopped.is_none() {
                stopped = Some(reason);
                if status.is_some() {
                    // The command has exited and its group is killed, yet
                    // its output is still open: a process that left the
                    // group holds it. Stop waiting for it.
                    tracing::warn!(
                        "command {id} exited but its output stays open; no longer reading it"
                    );
                    break;
                }
                if spec.sigterm_time.is_zero() {
                    group.signal(libc::SIGKILL);
                } else {
                    group.signal(libc::SIGTERM);
                    kill_at = Some(Instant::now() + spec.sigterm_time);
                }
            }
        }
    }
    if let Some(err) = wait_error {
        // The group guard kills the group as `group` is dropped.
        return finished_error(id, err, Some(started));
    }
    // Killed already (when the leader exited); killing again after the
    // leader is reaped could hit a reused process group id.
    group.armed = false;
    let (exit_code, signal) = match status {
        Some(exit) => (exit.code(), exit.signal()),
        None => (None, None),
    };
    Message::Finished {
        id,
        exit_code,
        signal,
        stopped,
        error: None,
        duration_ms: elapsed_ms(started),
    }
}

/// The next instant a limit may be reached or SIGKILL is due.
fn next_deadline(
    spec: &RunSpec,
    activity: &Activity,
    stopping: bool,
    kill_at: Option<Instant>,
) -> Option<Instant> {
    let mut deadline = kill_at;
    let mut earliest = |at: Instant| {
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    };
    if !stopping {
        if let Some(max_time) = spec.max_time {
            earliest(activity.started + max_time);
        }
        if let Some(timeout) = spec.timeout {
            earliest(activity.last_output() + timeout);
        }
    }
    deadline
}

/// Which limit, if any, is reached at `now`.
fn limit_reached(spec: &RunSpec, activity: &Activity, now: Instant) -> Option<Stopped> {
    if spec
        .max_time
        .is_some_and(|max| now >= activity.started + max)
    {
        return Some(Stopped::MaxTime);
    }
    if let Some(timeout) = spec.timeout {
        if activity.sending.load(Ordering::Relaxed) > 0 {
            // Output is waiting for a slow connection: the command is not
            // silent, the network is. Count it as output.
            activity.touch();
        } else if now >= activity.last_output() + timeout {
            return Some(Stopped::NoOutput);
        }
    }
    None
}

/// When the command last produced output, shared by the pumps and the
/// supervising loop (which run in the same task, but `&Cell` would make the
/// task's future not `Send`).
struct Activity {
    started: Instant,
    /// Milliseconds from `started` to the last output.
    last_ms: AtomicU64,
    /// Chunks read and not yet accepted by the output queue.
    sending: AtomicUsize,
}

impl Activity {
    fn new(started: Instant) -> Activity {
        Activity {
            started,
            last_ms: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(elapsed_ms(self.started), Ordering::Relaxed);
    }

    fn last_output(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Copies one pipe to output frames until end of file. Each read is sent
/// as is (at most CHUNK bytes, no line buffering); waiting for room in the
/// bounded output queue stops the reading, so a slow master slows the
/// command instead of filling memory.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    id: u64,
    stream: Stream,
    out: &mpsc::Sender<Frame>,
    activity: &Activity,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        // Reuses the buffer's memory once earlier chunks have been sent.
        buf.reserve(CHUNK);
        let read = pipe.read_buf(&mut (&mut buf).limit(CHUNK)).await;
        match read {
            Ok(0) => return,
            Ok(_) => {
                activity.touch();
                activity.sending.fetch_add(1, Ordering::Relaxed);
                let frame = Frame::Output {
                    id,
                    stream,
                    data: buf.split().freeze(),
                };
                let sent = out.send(frame).await;
                activity.sending.fetch_sub(1, Ordering::Relaxed);
                activity.touch();
                if sent.is_err() {
                    // The session is over; the command is being killed.
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!("reading {stream:?} of command {id}: {err}");
                return;
            }
        }
    }
}

/// A command's process group. Dropped while armed (the command's task was
/// cancelled because the connection was lost or the worker stops), it
/// SIGKILLs the whole group: no orphans.
struct ProcessGroup {
    pgid: libc::pid_t,
    armed: bool,
}

impl ProcessGroup {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: killpg has no memory-safety preconditions. `pgid` is the
        // id of a group this worker created (the child was spawned with
        // process_group(0)), so it cannot name our own group.
        let result = unsafe { libc::killpg(self.pgid, signal) };
        if result != 0 {
            let err = std::io::Error::last_os_error();
            // ESRCH: everyone in the group is gone already.
            if err.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!("signal {signal} to process group {}: {err}", self.pgid);
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(libc::SIGKILL);
        }
    }
}
