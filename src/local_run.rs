//! `bbc run CONFIG BUILDER`: run one builder's steps right here, the "run
//! my CI locally" command. Same step semantics and output as on a master:
//! it runs the builder through an in-process master with a throw-away
//! store and one in-process worker on loopback, and prints each step's
//! log as it is written. The exit code is the build's result.

use std::io::Write;
use std::path::PathBuf;

use bbc_compiler::graph::{Credential, Graph, Scalar, Scheduler, SchedulerKind, Worker};
use bbc_runtime::master::{self, now_ms, MasterConfig};
use bbc_runtime::store::{NewBuildSet, Properties, SourceStamp};
use bbc_runtime::worker::{run_worker, WorkerConfig};

use crate::command_error::CommandError;
use crate::output::OutFormat;

const LOCAL: &str = "local";

/// The graph reduced to what a local run needs: every builder runs on one
/// local worker; change sources and reporters (which need secrets and the
/// network) are left out.
fn local_graph(mut g: Graph, builder: &str, password: &str) -> Result<Graph, CommandError> {
    if g.builder(builder).is_none() {
        let names: Vec<&str> = g.builders.iter().map(|b| b.name.as_str()).collect();
        return Err(CommandError::Usage(format!(
            "no builder named `{builder}`; the builders are: {}",
            names.join(", ")
        )));
    }
    let max_builds = g.builders.len().max(1) as u32;
    g.workers = vec![Worker {
        name: LOCAL.into(),
        password: Credential::Plain(password.into()),
        max_builds,
        properties: Default::default(),
        keepalive_ms: 60_000,
        missing_timeout_ms: 3_600_000,
        downtime: Vec::new(),
        protocol: Default::default(),
        latent: None,
        hash: String::new(),
    }];
    for b in &mut g.builders {
        b.workers = vec![LOCAL.into()];
    }
    g.change_sources.clear();
    g.reporters.clear();
    g.schedulers
        .retain(|s| !matches!(s.kind, SchedulerKind::Force { .. }));
    g.schedulers.push(Scheduler {
        name: "bbc-run".into(),
        builders: vec![builder.to_string()],
        kind: SchedulerKind::Force { params: Vec::new() },
        priority: 0,
        codebases: Vec::new(),
        hash: String::new(),
    });
    g.schedulers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(g)
}

/// `--prop NAME=VALUE` values, over the defaults of the force parameters
/// of every force scheduler that names the builder: the properties a
/// forced build of it would get on a master.
fn parse_props(g: &Graph, builder: &str, props: &[String]) -> Result<Properties, CommandError> {
    let mut p = Properties::new();
    for s in &g.schedulers {
        if let SchedulerKind::Force { params } = &s.kind {
            if s.builders.iter().any(|b| b == builder) {
                for param in params {
                    if let Some(d) = &param.default {
                        p.entry(param.name.clone()).or_insert_with(|| d.clone());
                    }
                }
            }
        }
    }
    for kv in props {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CommandError::Usage(format!(
                "--prop takes NAME=VALUE, got `{kv}`"
            )));
        };
        p.insert(k.to_string(), Scalar::String(v.to_string()));
    }
    Ok(p)
}

/// Whether a directory holds any file (uploads land in `STATE/files`).
fn has_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

pub fn run(
    config: &str,
    builder: &str,
    props: &[String],
    workdir: Option<&str>,
    format: OutFormat,
) -> Result<(), CommandError> {
    let json = format == OutFormat::Json;
    let g = crate::output::compile_graph(config, crate::output::ColorChoice::Auto)?;
    let password = format!("run-{}-{}", std::process::id(), now_ms());
    let props = parse_props(&g, builder, props)?;
    let g = local_graph(g, builder, &password)?;
    let tmp = std::env::temp_dir().join(format!("bbc-run-{}-{}", std::process::id(), now_ms()));
    let basedir = workdir
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.join("worker"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let result = rt.block_on(async {
        let h = master::start(
            g,
            MasterConfig {
                state_dir: tmp.join("state"),
                secrets_dir: None,
                worker_listen: Some("127.0.0.1:0".into()),
                http_listen: Some("127.0.0.1:0".into()),
                ..MasterConfig::default()
            },
        )
        .await
        .map_err(CommandError::Usage)?;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(run_worker(
            WorkerConfig {
                master: h.worker_addr.to_string(),
                name: LOCAL.into(),
                password,
                basedir: basedir.clone(),
                info: bbc_runtime::worker::default_info(),
                tls: None,
            },
            async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            },
        ));
        let set = NewBuildSet {
            priority: 0,
            scheduler: "bbc-run".into(),
            reason: "bbc run".into(),
            source: SourceStamp::default(),
            sources: Vec::new(),
            changes: Vec::new(),
            properties: props,
            parent_build: None,
            submitted_at: now_ms(),
        };
        let shared = h.shared.clone();
        let (bs, _) = shared
            .submit(set, vec![builder.to_string()])
            .await
            .map_err(|e| CommandError::Usage(e.to_string()))?;
        let result = follow(&shared, bs.id, json).await;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        h.shutdown().await;
        result
    });
    // The store and logs go; uploaded files are what the run produced, so
    // they stay, and the run says where.
    let files = tmp.join("state").join("files");
    let keep = has_files(&files);
    if keep && !json {
        println!("── uploads kept in {}", files.display());
    }
    if keep {
        let state = tmp.join("state");
        if let Ok(entries) = std::fs::read_dir(&state) {
            for e in entries.flatten() {
                if e.file_name() != "files" {
                    let p = e.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        }
    } else {
        let _ = std::fs::remove_dir_all(tmp.join("state"));
    }
    if workdir.is_none() {
        if keep {
            let _ = std::fs::remove_dir_all(&basedir);
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    let outcome = result?;
    if let Some(mut summary) = outcome.summary {
        summary["uploads"] = match keep {
            true => files.to_string_lossy().into_owned().into(),
            false => serde_json::Value::Null,
        };
        println!("{summary}");
    }
    if outcome.ok {
        Ok(())
    } else {
        Err(CommandError::Invalid)
    }
}

/// How a followed build ended: whether it passed, and with `--format
/// json` the document to print (completed with where uploads were kept).
struct Outcome {
    ok: bool,
    summary: Option<serde_json::Value>,
}

/// The last `LINES` lines of a step's log (from its last 8 KiB), for the
/// JSON summary: enough to see why a step failed, bounded however much
/// it printed.
async fn log_tail(shared: &std::sync::Arc<master::Shared>, build: u64, step: u32) -> String {
    const LINES: usize = 20;
    const BYTES: u64 = 8 * 1024;
    let bytes = shared
        .db(move |s| {
            let len = s.log_len(build, step)?;
            s.read_log(build, step, len.saturating_sub(BYTES), BYTES as usize)
        })
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// Prints the build's steps and logs as they are written, then its result
/// (or, with `json`, nothing until it ends, then a summary).
async fn follow(
    shared: &std::sync::Arc<master::Shared>,
    set: u64,
    json: bool,
) -> Result<Outcome, CommandError> {
    let mut out = std::io::stdout().lock();
    let mut build_id = None;
    let mut step = 0u32;
    let mut offset = 0u64;
    let mut announced = false;
    loop {
        let finished = shared.build_finished.notified();
        if build_id.is_none() {
            build_id = shared
                .db(move |s| {
                    s.requests(
                        &bbc_runtime::store::RequestFilter {
                            buildset: Some(set),
                            ..Default::default()
                        },
                        Default::default(),
                    )
                })
                .await
                .ok()
                .and_then(|r| r.first().and_then(|r| r.build));
        }
        let Some(id) = build_id else {
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
            continue;
        };
        let (build, steps) = shared
            .db(move |s| Ok((s.build(id)?, s.steps(id)?)))
            .await
            .map_err(|e| CommandError::Usage(e.to_string()))?;
        // Print every step in order, each log from where we left off.
        while let Some(rec) = steps.iter().find(|r| r.index == step) {
            if !announced && !json {
                let _ = writeln!(out, "── step {}: {}", rec.index + 1, rec.name);
            }
            announced = true;
            let from = offset;
            let chunk = shared
                .db(move |s| s.read_log(id, step, from, 1 << 20))
                .await
                .unwrap_or_default();
            offset += chunk.len() as u64;
            if !json {
                let _ = out.write_all(&chunk);
                let _ = out.flush();
            }
            if !chunk.is_empty() {
                continue;
            }
            match rec.result {
                Some(r) => {
                    if !json {
                        let _ = writeln!(out, "── {}: {}", rec.name, r.name());
                    }
                    step += 1;
                    offset = 0;
                    announced = false;
                }
                None => break,
            }
        }
        if let Some(b) = &build {
            if let (Some(r), true) = (b.result, steps.iter().all(|s| s.index < step)) {
                use bbc_compiler::graph::BuildResult as B;
                let ok = matches!(r, B::Success | B::Warnings);
                if !json {
                    let _ = writeln!(out, "build {}: {}", b.build.builder, r.name());
                    return Ok(Outcome { ok, summary: None });
                }
                let mut listed = Vec::new();
                for s in &steps {
                    listed.push(serde_json::json!({
                        "index": s.index,
                        "name": s.name,
                        "result": s.result.map(|r| r.name()),
                        "log_tail": log_tail(shared, id, s.index).await,
                    }));
                }
                let summary = serde_json::json!({
                    "builder": b.build.builder,
                    "number": b.number,
                    "result": r.name(),
                    "steps": listed,
                });
                return Ok(Outcome {
                    ok,
                    summary: Some(summary),
                });
            }
        }
        tokio::select! {
            _ = finished => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
    }
}
