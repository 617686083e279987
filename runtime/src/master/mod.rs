//! The master: accepts workers, keeps the build queue, assigns requests to
//! workers (honouring max-builds, locks, downtime and priority), runs
//! builds, and serves the HTTP API.
//!
//! [`start`] (in `start.rs`) wires the services together over the shared
//! state of `crate::state`; see there for the layering.

pub mod apply;
pub mod build;
pub mod queue;
pub mod schedulers;
pub mod start;
pub mod workers;

use bbc_graph::{BuildResult, Graph, Scalar};

use crate::store::SourceStamp;

// The paths the `bbc` binary and older callers use.
pub use crate::state::{now_ms, MasterConfig, Shared, WorkerConn};
pub use start::{start, MasterHandle};

/// Properties every build starts with, lowest precedence first.
pub fn initial_properties(
    g: &Graph,
    builder: &str,
    worker: &str,
    number: u64,
    set: &crate::store::BuildSet,
) -> crate::store::Properties {
    let mut p = crate::store::Properties::new();
    p.extend(g.master.properties.clone());
    if let Some(w) = g.worker(worker) {
        p.extend(w.properties.clone());
    }
    if let Some(b) = g.builder(builder) {
        p.extend(b.properties.clone());
    }
    let SourceStamp {
        repository,
        branch,
        revision,
    } = &set.set.source;
    let s = |v: &str| Scalar::String(v.to_string());
    p.insert("repository".into(), s(repository));
    p.insert("branch".into(), s(branch));
    p.insert("revision".into(), s(revision));
    p.insert("scheduler".into(), s(&set.set.scheduler));
    p.insert("reason".into(), s(&set.set.reason));
    p.extend(set.set.properties.clone());
    p.insert("builder".into(), s(builder));
    p.insert("worker".into(), s(worker));
    p.insert("buildnumber".into(), Scalar::Int(number as i64));
    p
}

/// The worst of two results, as Buildbot combines them.
pub fn worst(a: BuildResult, b: BuildResult) -> BuildResult {
    a.max(b)
}
