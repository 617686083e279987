//! Process groups that outlive a killed worker.
//!
//! A worker that stops normally, loses its master or has a command's task
//! cancelled kills the command's process group itself. A worker killed
//! with SIGKILL can do nothing, so every running group is also recorded as
//! a file under `BASEDIR/.bbc-processes/` (named after the group id, holding
//! the leader's start time), and a worker starting on that basedir kills
//! what the last one left before it runs anything there: a rerun must not
//! overlap the processes of the run that was cut off.
//!
//! Why a group recorded earlier is still ours: Linux does not hand out a
//! pid while it names a live process group, so a live group with that id
//! is the one we started, unless a *new* process got the id after the
//! whole group had died — then the leader's start time differs and the
//! group is left alone.

use std::path::{Path, PathBuf};

/// The directory of records under a basedir.
pub(super) fn dir(basedir: &Path) -> PathBuf {
    basedir.join(".bbc-processes")
}

/// The leader's start time in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` when the process does not exist.
fn start_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing parenthesis (field 3 onwards).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A record of one running group, removed when dropped.
pub(super) struct Record {
    path: Option<PathBuf>,
}

impl Record {
    /// Records `pgid` (just spawned: it is its own leader). A record that
    /// cannot be written costs only the clean-up after a SIGKILL, so the
    /// command runs anyway.
    pub(super) fn new(basedir: &Path, pgid: libc::pid_t) -> Record {
        let dir = dir(basedir);
        let path = dir.join(pgid.to_string());
        let started = start_time(pgid).map(|t| t.to_string()).unwrap_or_default();
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, started));
        match written {
            Ok(()) => Record { path: Some(path) },
            Err(err) => {
                tracing::warn!("recording process group {pgid} in {}: {err}", dir.display());
                Record { path: None }
            }
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Kills every group a previous worker on this basedir recorded and left
/// running; returns how many it killed.
pub(super) fn kill_leftovers(basedir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(basedir)) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pgid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
            .filter(|p| *p > 1)
        else {
            continue;
        };
        let recorded: Option<u64> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let ours = match (start_time(pgid), recorded) {
            // The leader lives: ours only if it is the process we started.
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => false,
            // The leader is gone: members left in its group are ours.
            (None, _) => true,
        };
        // SAFETY: killpg has no memory-safety preconditions; pgid > 1.
        if ours && unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0 {
            tracing::warn!("killed process group {pgid} left running by a previous worker");
            killed += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}
