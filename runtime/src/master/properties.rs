//! What a build starts with and how its results combine: pure functions
//! of the graph and the build set, shared by the queue and the builds.

use bbc_graph::{BuildResult, Graph, Scalar};

use crate::store::SourceStamp;

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
    // The first codebase's stamp (the only one, usually): a set spanning
    // several gives each of its stamps to the git steps that name it.
    let SourceStamp {
        codebase,
        repository,
        branch,
        revision,
    } = &set.set.source;
    let s = |v: &str| Scalar::String(v.to_string());
    p.insert("repository".into(), s(repository));
    p.insert("branch".into(), s(branch));
    p.insert("revision".into(), s(revision));
    p.insert("codebase".into(), s(codebase));
    p.insert("scheduler".into(), s(&set.set.scheduler));
    p.insert("reason".into(), s(&set.set.reason));
    p.extend(set.set.properties.clone());
    p.insert("builder".into(), s(builder));
    p.insert("worker".into(), s(worker));
    // Buildbot's names of the same (docs/migrating.md): configs moved from
    // Buildbot keep their `%(prop:buildername)s`.
    p.insert("buildername".into(), s(builder));
    p.insert("workername".into(), s(worker));
    if let Some(b) = g.builder(builder) {
        p.insert("builddir".into(), s(&b.workdir));
    }
    if let Some(o) = p.get("owner").cloned() {
        p.entry("owners".into()).or_insert(o);
    }
    p.insert("buildnumber".into(), Scalar::Int(number as i64));
    p
}

/// The worst of two results, as Buildbot combines them.
pub fn worst(a: BuildResult, b: BuildResult) -> BuildResult {
    a.max(b)
}
