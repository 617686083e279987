//! `bbc-bench run`: the runtime measured the way a user runs it. The
//! master is a `bbc master` child process and the workers are `bbc worker`
//! child processes, all on 127.0.0.1 with ports chosen by the kernel;
//! requests go through the HTTP API. Memory and CPU figures are the
//! master's own (`/proc/<pid>/status` and `/proc/<pid>/stat`), never the
//! workers' or this client's.
//!
//! Scenarios (figures and commands in docs/perf.md):
//! - `builds`: trivial builds (one step, `true`) on 2 workers: request →
//!   start latency one at a time (idle), then a burst of N requests
//!   (builds/s and latency under load), then the same N queued before the
//!   workers connect (the build pipeline without the HTTP submissions).
//! - `log`: one step printing M MB of 100-byte lines: MB/s stored and the
//!   master's peak RSS.
//! - `idle`: the master's start time and idle RSS with N builders loaded.
//! - `apply`: hot reload of the master running the N-builder config: the
//!   master's own apply time, the `POST /api/v1/config` round trip and a
//!   whole `bbc apply --yes` command, for one builder changed, every
//!   builder changed, and nothing changed.
//! - `buildbot-worker`: the same trivial builds and log through two of
//!   Buildbot's own `buildbot-worker`s and through two `bbc worker`s
//!   (`--buildbot-worker PATH`; skipped without).
//! - `views`: the web UI's API calls (waterfall, console/grid, pending,
//!   badges, …) on a store filled with N builds beforehand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::BenchError;
use crate::procfs::{cpu_ticks, machine_busy};

mod apply;
mod args;
mod buildbot;
mod builds;
mod idle;
mod log;
pub(crate) mod master;
mod views;

pub use args::RunArgs;
pub(crate) use builds::{start_events, wall_us};

pub fn run(exe: &Path, a: &RunArgs) -> Result<(), BenchError> {
    let base = match &a.dir {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("bbc-bench-run-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    println!(
        "bbc-bench run in {} ({} CPUs)",
        base.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ticks = cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "machine {:.0}% busy in the second before (other work makes the figures worse)",
        machine_busy(&ticks) * 100.0
    );
    let want = |s: &str| a.only.iter().any(|o| o == s || o == "all");
    let mut result = Ok(());
    if want("builds") {
        result = result.and_then(|_| builds::builds(exe, &base.join("builds"), a));
    }
    if want("log") {
        result = result.and_then(|_| log::log(exe, &base.join("log"), a));
    }
    if want("idle") {
        result = result.and_then(|_| idle::idle(exe, &base.join("idle"), a));
    }
    if want("apply") {
        result = result.and_then(|_| apply::apply(exe, &base.join("apply"), a));
    }
    if want("views") {
        result = result.and_then(|_| views::views(exe, &base.join("views"), a));
    }
    if want("buildbot-worker") {
        result = result.and_then(|_| buildbot::buildbot(exe, &base.join("buildbot-worker"), a));
    }
    if a.keep {
        println!("kept {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}
