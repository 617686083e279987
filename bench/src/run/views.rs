//! `views`: the web UI's API calls on a store holding N builds (100,000 by
//! default). The store is filled through the `Store` trait before the
//! master starts (N/10 changes, each built by 10 of 50 builders; threads
//! share the group commit), then a `bbc master` serves it and each page's
//! calls are timed, one at a time, from this client on 127.0.0.1: a
//! round trip is an upper bound of the server's time.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bbc_compiler::graph::BuildResult;
use bbc_runtime::store::{NewBuild, NewBuildSet, NewChange, SourceStamp, Store};

use super::master::{start_master, write_secrets};
use super::RunArgs;
use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::stats::summary;

const BUILDERS: usize = 50;
/// Builders each change is built on.
const PER_CHANGE: usize = 10;

fn fill(state: &Path, builds: usize) -> Result<(), BenchError> {
    let store: Arc<dyn Store> = bbc_runtime::store::open(state).map_err(|e| err(e.to_string()))?;
    let changes = builds.div_ceil(PER_CHANGE);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = 1_700_000_000_000i64;
    // Many writers at once: the store's group commit makes one disk sync
    // serve all of them.
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= changes {
                        return Ok(());
                    }
                    let when = t0 + k as i64 * 60_000;
                    let branch = if k % 4 == 0 { "release" } else { "main" };
                    let c = store
                        .add_change(
                            NewChange {
                                source: "bench".into(),
                                repository: "https://git.example.org/project.git".into(),
                                branch: branch.into(),
                                revision: format!("{k:040x}"),
                                author: format!("dev{} <dev@example.org>", k % 7),
                                comments: format!("change {k}\n\nwith a body"),
                                when,
                                ..NewChange::default()
                            },
                            when,
                        )
                        .map_err(|e| e.to_string())?;
                    let first = (k % (BUILDERS / PER_CHANGE)) * PER_CHANGE;
                    let names: Vec<(String, i64)> = (first..first + PER_CHANGE)
                        .map(|i| (format!("b-{i}"), 0))
                        .collect();
                    let (_, reqs) = store
                        .add_buildset(
                            NewBuildSet {
                                priority: 0,
                                scheduler: "bench".into(),
                                reason: "bench change".into(),
                                source: SourceStamp {
                                    codebase: String::new(),
                                    repository: c.change.repository.clone(),
                                    branch: branch.into(),
                                    revision: c.change.revision.clone(),
                                },
                                sources: Vec::new(),
                                changes: vec![c.id],
                                properties: Default::default(),
                                parent_build: None,
                                submitted_at: when + 1,
                            },
                            &names,
                        )
                        .map_err(|e| e.to_string())?;
                    for r in reqs {
                        let b = store
                            .start_build(NewBuild {
                                builder: r.builder.clone(),
                                builder_hash: String::new(),
                                worker: "w1".into(),
                                requests: vec![r.id],
                                properties: Default::default(),
                                started_at: when + 2,
                            })
                            .map_err(|e| e.to_string())?;
                        let result = if k % 9 == 0 {
                            BuildResult::Failure
                        } else {
                            BuildResult::Success
                        };
                        store
                            .finish_build(b.id, result, when + 30_000)
                            .map_err(|e| e.to_string())?;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| err("a filling thread panicked"))?
            .map_err(err)?;
    }
    Ok(())
}

pub fn views(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("master.kdl");
    std::fs::write(&config, crate::workload::generate(BUILDERS))?;
    write_secrets(dir, &["w1", "w2", "w3", "w4"].map(String::from))?;
    let t = Instant::now();
    fill(&dir.join("state"), a.view_builds)?;
    println!(
        "views: filled a store with {} builds ({} changes, {BUILDERS} builders) in {:.1} s",
        a.view_builds,
        a.view_builds.div_ceil(PER_CHANGE),
        t.elapsed().as_secs_f64()
    );
    let m = start_master(exe, dir, &config, "views", false)?;
    let c = Client::of(&m)?;
    let pages: [(&str, &str); 10] = [
        ("builders (home)", "/api/v1/builders?last_build=true"),
        ("builds list", "/api/v1/builds?limit=50"),
        ("waterfall", "/api/v1/views/waterfall"),
        ("waterfall tag", "/api/v1/views/waterfall?tag=t3"),
        ("console / grid", "/api/v1/views/console"),
        ("console branch", "/api/v1/views/console?branch=release"),
        ("console tag", "/api/v1/views/console?tag=t1&limit=50"),
        ("pending", "/api/v1/views/pending"),
        ("schedulers", "/api/v1/schedulers"),
        ("badge", "/badges/b-7.svg"),
    ];
    let rt = rt()?;
    rt.block_on(async {
        for (name, path) in pages {
            let mut ms = Vec::new();
            for i in 0..a.view_samples + 1 {
                let t = Instant::now();
                let r = c
                    .http
                    .get(format!("{}{path}", c.base))
                    .send()
                    .await
                    .map_err(|e| err(format!("GET {path}: {e}")))?;
                let status = r.status();
                let body = r
                    .bytes()
                    .await
                    .map_err(|e| err(format!("GET {path}: {e}")))?;
                let took = t.elapsed();
                if !status.is_success() {
                    return Err(err(format!("GET {path}: {status}")));
                }
                // The first call warms the page cache; it is not counted.
                if i > 0 {
                    ms.push(took.as_secs_f64() * 1000.0);
                }
                if i == 0 && body.is_empty() {
                    return Err(err(format!("GET {path}: empty answer")));
                }
            }
            println!(
                "{}",
                summary(&format!("views: {name} ({path})"), "ms", &mut ms)
            );
        }
        Ok::<(), BenchError>(())
    })?;
    drop(m);
    Ok(())
}
