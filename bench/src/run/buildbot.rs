//! `run --only buildbot-worker` (issue 14's measure): the same trivial
//! builds and the same log, run by one `bbc master` through two of
//! Buildbot's own `buildbot-worker` processes (WebSocket + msgpack,
//! `protocol="buildbot"`) and through two `bbc worker`s: builds/s, MB/s
//! and the CPU each side spent. Needs `--buildbot-worker PATH` (the
//! executable of the `buildbot-worker` package); says it skipped without.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::args::RunArgs;
use super::builds::force_round_robin;
use super::master::{start_master, start_worker, write_secrets, Master, Proc};
use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{cpu_s, cpu_ticks, machine_busy};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bbc,
    Buildbot,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Bbc => "bbc",
            Kind::Buildbot => "buildbot",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Bbc => "2 × `bbc worker`",
            Kind::Buildbot => "2 × `buildbot-worker`",
        }
    }
}

/// One kind's figures.
struct Figures {
    builds_per_s: f64,
    builds_master_ms: f64,
    builds_workers_ms: f64,
    log_mb_per_s: f64,
    log_master_ms: f64,
    log_worker_ms: f64,
}

pub fn buildbot(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    println!();
    let Some(bbw) = &a.buildbot_worker else {
        println!(
            "## buildbot-worker: skipped (give the executable of Buildbot's worker with \
             --buildbot-worker PATH)"
        );
        return Ok(());
    };
    let bbw = Path::new(bbw);
    if !bbw.exists() {
        return Err(err(format!(
            "--buildbot-worker {}: no such file",
            bbw.display()
        )));
    }
    if a.tls {
        println!("(--tls is not used here: Buildbot's worker connects in plain WebSocket)");
    }
    println!(
        "## buildbot-worker: {} trivial builds and a {} MB log, through 2 `bbc worker`s, then 2 `buildbot-worker`s",
        a.compare_builds, a.log_mb
    );
    let own = one(exe, &dir.join("bbc"), a, Kind::Bbc, bbw)?;
    let bb = one(exe, &dir.join("buildbot"), a, Kind::Buildbot, bbw)?;
    println!();
    println!("### side by side");
    println!(
        "| workers | builds/s | master / workers CPU per build | log MB/s | master / worker CPU per MB |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (k, f) in [(Kind::Bbc, &own), (Kind::Buildbot, &bb)] {
        println!(
            "| {} | {:.0} | {:.2} / {:.2} ms | {:.0} | {:.2} / {:.2} ms |",
            k.title(),
            f.builds_per_s,
            f.builds_master_ms,
            f.builds_workers_ms,
            f.log_mb_per_s,
            f.log_master_ms,
            f.log_worker_ms
        );
    }
    Ok(())
}

/// Two trivial builders' worth of config: `t0…` (`true`) on both workers
/// and `log` (the log scenario's step) on the first.
fn config(kind: Kind, builders: usize, max_builds: usize, log_mb: usize) -> String {
    let protocol = match kind {
        Kind::Bbc => "",
        Kind::Buildbot => " protocol=\"buildbot\"",
    };
    let mut s = String::from("master {\n    title \"bench buildbot-worker\"\n}\n");
    for w in ["w1", "w2"] {
        s.push_str(&format!(
            "worker \"{w}\" password=(secret)\"{w}\" max-builds={max_builds}{protocol}\n"
        ));
    }
    let mut names = Vec::new();
    for i in 0..builders {
        s.push_str(&format!(
            "builder \"t{i}\" {{\n    workers \"w1\" \"w2\"\n    steps {{\n        shell \"true\"\n    }}\n}}\n"
        ));
        names.push(format!("\"t{i}\""));
    }
    let lines = log_mb * 1_000_000 / 100;
    let line = "x".repeat(99);
    s.push_str(&format!(
        "builder \"log\" {{\n    workers \"w1\"\n    steps {{\n        shell \"yes {line} | head -n {lines}\" name=\"print\"\n    }}\n}}\n"
    ));
    names.push("\"log\"".into());
    s.push_str(&format!(
        "scheduler \"force\" kind=\"force\" {{\n    builders {}\n}}\n",
        names.join(" ")
    ));
    s
}

/// Makes a `buildbot-worker` directory for the msgpack protocol and starts
/// it in the foreground (`start --nodaemon` runs twistd in that process).
fn start_buildbot_worker(
    exe: &Path,
    dir: &Path,
    m: &Master,
    name: &str,
) -> Result<Proc, BenchError> {
    let wdir = dir.join("workers").join(name);
    // create-worker makes the directory, not its parents.
    std::fs::create_dir_all(dir.join("workers"))?;
    let password = std::fs::read_to_string(dir.join("secrets").join(name))?;
    let o = Command::new(exe)
        .args([
            "create-worker",
            "--force",
            "--protocol",
            "msgpack_experimental_v7",
        ])
        .arg(&wdir)
        .args([m.workers_addr.as_str(), name, password.trim()])
        .output()?;
    if !o.status.success() {
        return Err(err(format!(
            "buildbot-worker create-worker: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let child = Command::new(exe)
        .args(["start", "--nodaemon"])
        .arg(&wdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc::of(child))
}

fn one(exe: &Path, dir: &Path, a: &RunArgs, kind: Kind, bbw: &Path) -> Result<Figures, BenchError> {
    std::fs::create_dir_all(dir)?;
    let builders = a.builders.max(1);
    let config_path = dir.join("master.kdl");
    std::fs::write(
        &config_path,
        config(kind, builders, a.max_builds.max(1), a.log_mb),
    )?;
    write_secrets(dir, &["w1".into(), "w2".into()])?;
    let mut m = start_master(exe, dir, &config_path, kind.tag(), false)?;
    let start = |name: &str| match kind {
        Kind::Bbc => start_worker(exe, dir, &m, name),
        Kind::Buildbot => start_buildbot_worker(bbw, dir, &m, name),
    };
    let w1 = start("w1")?;
    let w2 = start("w2")?;
    let c = Client::of(&m)?;
    let rt = rt()?;
    // Python's start-up takes seconds on a busy machine.
    rt.block_on(c.wait_workers(2))?;
    let pid = m.proc.pid();
    let workers_cpu = || cpu_s(w1.pid()) + cpu_s(w2.pid());
    println!();
    println!("### {}", kind.title());

    // The burst: N forced builds through the API, then wait for the end.
    let n = a.compare_builds.max(1);
    let conc = a.concurrency.max(1);
    let cpu0 = cpu_s(pid);
    let wcpu0 = workers_cpu();
    let ticks = cpu_ticks();
    let t0 = Instant::now();
    rt.block_on(force_round_robin(&c, n, conc, builders))?;
    let done = rt.block_on(c.wait_idle(Duration::from_millis(20)))?;
    let wall = done.duration_since(t0).as_secs_f64();
    let cpu = cpu_s(pid) - cpu0;
    let wcpu = workers_cpu() - wcpu0;
    let busy = machine_busy(&ticks);
    let builds = rt.block_on(c.all("builds", 0))?;
    let ok = builds.iter().filter(|b| b["result"] == "success").count();
    if ok != n {
        return Err(err(format!(
            "{}: {ok} of {n} builds succeeded",
            kind.title()
        )));
    }
    let builds_per_s = n as f64 / wall;
    let (builds_master_ms, builds_workers_ms) = (cpu * 1000.0 / n as f64, wcpu * 1000.0 / n as f64);
    println!(
        "- {n} builds forced ({conc} requests in flight) → all finished: {wall:.3} s = {builds_per_s:.0} builds/s"
    );
    println!(
        "- master CPU {:.2} s ({:.2} ms per build), workers' {:.2} s ({:.2} ms per build), machine {:.0}% busy",
        cpu,
        cpu * 1000.0 / n as f64,
        wcpu,
        wcpu * 1000.0 / n as f64,
        busy * 100.0
    );

    // The log: one step printing `log_mb` MB on the first worker.
    let cpu0 = cpu_s(pid);
    let wcpu0 = cpu_s(w1.pid());
    let ticks = cpu_ticks();
    let t0 = Instant::now();
    rt.block_on(c.force("log"))?;
    let finished = rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(900);
        loop {
            let v = c.get("/api/v1/builds?builder=log&limit=1").await?;
            if v["builds"][0]["finished_at"].is_i64() {
                return Ok(v["builds"][0].clone());
            }
            if Instant::now() > until {
                return Err(err("the log build did not finish within 15 minutes"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(pid) - cpu0;
    let wcpu = cpu_s(w1.pid()) - wcpu0;
    let busy = machine_busy(&ticks);
    let id = finished["id"].as_u64().unwrap_or(0);
    let b = rt.block_on(c.get(&format!("/api/v1/builds/{id}")))?;
    let st = &b["build"]["steps"][0];
    let len = st["log_len"].as_u64().unwrap_or(0);
    let ms = st["finished_at"].as_i64().unwrap_or(0) - st["started_at"].as_i64().unwrap_or(0);
    let want = (a.log_mb * 1_000_000) as u64;
    if b["build"]["result"] != "success" || len < want {
        return Err(err(format!(
            "{}: the log build ended {} with {len} of {want} bytes stored",
            kind.title(),
            b["build"]["result"]
        )));
    }
    let mb = len as f64 / 1e6;
    let log_mb_per_s = mb / (ms.max(1) as f64 / 1000.0);
    println!(
        "- log: {len} bytes stored; step start → end {ms} ms = {log_mb_per_s:.0} MB/s; POST → finish seen {wall:.3} s = {:.0} MB/s",
        mb / wall
    );
    println!(
        "- master CPU {:.2} s ({:.2} ms per MB), worker CPU {:.2} s ({:.2} ms per MB), machine {:.0}% busy",
        cpu,
        cpu * 1000.0 / mb,
        wcpu,
        wcpu * 1000.0 / mb,
        busy * 100.0
    );
    m.proc.stop();
    drop((w1, w2));
    Ok(Figures {
        builds_per_s,
        builds_master_ms,
        builds_workers_ms,
        log_mb_per_s,
        log_master_ms: cpu * 1000.0 / mb,
        log_worker_ms: wcpu * 1000.0 / mb,
    })
}
