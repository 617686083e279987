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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{cpu_s, cpu_ticks, machine_busy, mem_kib, reset_peak, Sampler};
use crate::stats::{mb, median, summary};
use crate::workload::{generate, trivial_config};

/// `bbc-bench run`'s options (clap reads them straight into this).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenarios to run: builds, log, idle, apply (or all)
    #[arg(long, value_delimiter = ',', default_value = "builds,log,idle,apply")]
    pub only: Vec<String>,
    /// Trivial builds in the burst
    #[arg(long, default_value_t = 1000)]
    pub builds: usize,
    /// Trivial builds forced one at a time (idle latency)
    #[arg(long, default_value_t = 200)]
    pub idle_builds: usize,
    /// Builders the trivial builds are spread over
    #[arg(long, default_value_t = 8)]
    pub builders: usize,
    /// max-builds of each of the 2 workers
    #[arg(long, default_value_t = 8)]
    pub max_builds: usize,
    /// HTTP requests in flight while submitting the burst
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Size of the log scenario's output, in MB
    #[arg(long, default_value_t = 200)]
    pub log_mb: usize,
    /// Builders in the idle and apply scenarios' config
    #[arg(long, default_value_t = 1000)]
    pub config_builders: usize,
    /// Master starts measured in the idle scenario
    #[arg(long, default_value_t = 6)]
    pub starts: usize,
    /// Applies of each kind measured in the apply scenario
    #[arg(long, default_value_t = 10)]
    pub applies: usize,
    /// Working directory (default: a fresh one under the temp dir)
    #[arg(long)]
    pub dir: Option<String>,
    /// Keep the working directory (logs, state) afterwards
    #[arg(long)]
    pub keep: bool,
}

/// Wall-clock microseconds since the epoch (comparable with the master's
/// `bbc_timing` events: same machine, same clock).
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Master {
    proc: Proc,
    workers_addr: String,
    http: String,
    started_in: Duration,
    log: PathBuf,
}

fn start_master(exe: &Path, dir: &Path, config: &Path, tag: &str) -> Result<Master, BenchError> {
    let log = dir.join(format!("master-{tag}.log"));
    let stderr = std::fs::File::create(&log)?;
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    bbc_testkit::master_args(&mut cmd, config, dir)
        // The debug events of `bbc_timing` say when each build started.
        .env("BBC_LOG", "warn,bbc_timing=debug")
        .stdin(Stdio::null())
        .stderr(stderr);
    let started = bbc_testkit::spawn_announced(&mut cmd)?;
    let started_in = started.announced_at.duration_since(t);
    let ports = started.ports();
    let line = started.first_line;
    let proc = Proc {
        child: started.child,
    };
    let Some(ports) = ports else {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(err(format!(
            "the master did not start (first line {line:?}): {log_text}"
        )));
    };
    Ok(Master {
        proc,
        workers_addr: ports.workers,
        http: ports.http,
        started_in,
        log,
    })
}

fn start_worker(exe: &Path, dir: &Path, m: &Master, name: &str) -> Result<Proc, BenchError> {
    let stderr = std::fs::File::create(dir.join(format!("worker-{name}.log")))?;
    let password = dir.join("secrets").join(name);
    let child = bbc_testkit::worker_args(
        &mut Command::new(exe),
        &m.workers_addr,
        name,
        &password,
        dir,
    )
    .env("BBC_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr)
    .spawn()?;
    Ok(Proc { child })
}

fn write_secrets(dir: &Path, names: &[String]) -> Result<(), BenchError> {
    let d = dir.join("secrets");
    std::fs::create_dir_all(&d)?;
    for n in names {
        std::fs::write(d.join(n), format!("bench-password-{n}"))?;
    }
    Ok(())
}

/// `build started` events from the master's log: request id → µs.
fn start_events(log: &Path) -> std::collections::HashMap<u64, u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| l.contains("build started")) {
        let field = |name: &str| {
            line.split_once(name)
                .map(|(_, r)| r.trim_start_matches('='))
                .map(|r| r.split_whitespace().next().unwrap_or(""))
        };
        let Some(at) = field("at_us").and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        if let Some(reqs) = field("requests") {
            for id in reqs
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|x| x.trim().parse::<u64>().ok())
            {
                out.insert(id, at);
            }
        }
    }
    out
}

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
        result = result.and_then(|_| builds(exe, &base.join("builds"), a));
    }
    if want("log") {
        result = result.and_then(|_| log(exe, &base.join("log"), a));
    }
    if want("idle") {
        result = result.and_then(|_| idle(exe, &base.join("idle"), a));
    }
    if want("apply") {
        result = result.and_then(|_| apply(exe, &base.join("apply"), a));
    }
    if a.keep {
        println!("kept {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}

struct Phase {
    /// Request id → µs the client sent its POST.
    sent: std::collections::HashMap<u64, u64>,
}

fn builds(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let builders = a.builders.max(1);
    let config = dir.join("master.kdl");
    std::fs::write(&config, trivial_config(builders, a.max_builds.max(1)))?;
    write_secrets(dir, &["w1".into(), "w2".into()])?;
    let mut m = start_master(exe, dir, &config, "builds")?;
    let mut w1 = start_worker(exe, dir, &m, "w1")?;
    let mut w2 = start_worker(exe, dir, &m, "w2")?;
    let c = Client::new(&m.http);
    let rt = rt()?;
    println!();
    println!(
        "## builds: one step (`true`), {builders} builders, 2 workers with max-builds={}",
        a.max_builds
    );
    rt.block_on(c.wait_workers(2))?;

    // 1. One at a time: the latency of a master with nothing else to do.
    let mut idle_sent = std::collections::HashMap::new();
    rt.block_on(async {
        for i in 0..a.idle_builds {
            let b = format!("t{}", i % builders);
            let t = wall_us();
            let id = c.force(&b).await?;
            idle_sent.insert(id, t);
            tokio::time::sleep(Duration::from_millis(2)).await;
            c.wait_idle(Duration::from_millis(2)).await?;
        }
        Ok::<_, BenchError>(())
    })?;
    let idle = Phase { sent: idle_sent };
    report_latency(&c, &rt, &m, &idle, "one at a time")?;

    // 2. A burst of N through the HTTP API while the workers are connected.
    let pid = m.proc.pid();
    let last_before = rt.block_on(c.all("builds", 0))?.len() as u64;
    let cpu0 = cpu_s(pid);
    let wcpu0 = cpu_s(w1.pid()) + cpu_s(w2.pid());
    let ticks = cpu_ticks();
    reset_peak(pid);
    let sampler = Sampler::start(pid);
    let n = a.builds;
    let conc = a.concurrency.max(1);
    let t0 = Instant::now();
    let sent = rt.block_on(async {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let sent = std::sync::Mutex::new(std::collections::HashMap::new());
        let one = || async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, BenchError>(());
                }
                let b = format!("t{}", i % builders);
                let t = wall_us();
                let id = c.force(&b).await?;
                if let Ok(mut s) = sent.lock() {
                    s.insert(id, t);
                }
            }
        };
        let tasks: Vec<_> = (0..conc).map(|_| one()).collect();
        for r in futures_join_all(tasks).await {
            r?;
        }
        Ok::<_, BenchError>(sent.into_inner().unwrap_or_default())
    })?;
    let acked = t0.elapsed();
    let done = rt.block_on(c.wait_idle(Duration::from_millis(20)))?;
    let wall = done.duration_since(t0);
    let cpu = cpu_s(pid) - cpu0;
    let wcpu = cpu_s(w1.pid()) + cpu_s(w2.pid()) - wcpu0;
    let busy = machine_busy(&ticks);
    let (_, threads) = sampler.peak();
    let (rss, hwm) = mem_kib(pid);
    println!();
    println!("### burst of {n} requests ({conc} HTTP requests in flight)");
    println!(
        "- submitted (201 received for all): {:.3} s, {:.0} requests/s",
        acked.as_secs_f64(),
        n as f64 / acked.as_secs_f64()
    );
    println!(
        "- all finished (seen by polling every 20 ms): {:.3} s, {:.0} builds/s",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    let burst = Phase { sent };
    report_store(&c, &rt, last_before, n)?;
    report_latency(&c, &rt, &m, &burst, "burst")?;
    println!(
        "- master CPU {:.2} s ({:.2} ms per build), workers' {:.2} s, machine {:.0}% busy (all processes, both CPUs)",
        cpu,
        cpu * 1000.0 / n as f64,
        wcpu,
        busy * 100.0
    );
    println!(
        "- master RSS {} after, peak {} during the burst (VmHWM), {} threads at most",
        mb(rss),
        mb(hwm),
        threads
    );

    // 3. The same N queued while no worker is connected, then run: the
    // build pipeline alone, without the HTTP submissions.
    w1.stop();
    w2.stop();
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = c.get("/api/v1/workers").await?;
            let any = v["workers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|w| w["connected"] == true));
            if !any {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(err("workers did not disconnect"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })?;
    let last_before = rt.block_on(c.all("builds", 0))?.len() as u64;
    rt.block_on(async {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let one = || async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, BenchError>(());
                }
                c.force(&format!("t{}", i % builders)).await?;
            }
        };
        let tasks: Vec<_> = (0..conc).map(|_| one()).collect();
        for r in futures_join_all(tasks).await {
            r?;
        }
        Ok::<_, BenchError>(())
    })?;
    let cpu0 = cpu_s(pid);
    let ticks = cpu_ticks();
    reset_peak(pid);
    let t0 = Instant::now();
    let _w1 = start_worker(exe, dir, &m, "w1")?;
    let _w2 = start_worker(exe, dir, &m, "w2")?;
    let done = rt.block_on(c.wait_idle(Duration::from_millis(20)))?;
    let cpu = cpu_s(pid) - cpu0;
    let busy = machine_busy(&ticks);
    let (_, hwm) = mem_kib(pid);
    println!();
    println!("### {n} requests queued first, then 2 workers connect");
    println!(
        "- workers started → all finished (polling every 20 ms): {:.3} s, {:.0} builds/s",
        done.duration_since(t0).as_secs_f64(),
        n as f64 / done.duration_since(t0).as_secs_f64()
    );
    report_store(&c, &rt, last_before, n)?;
    println!(
        "- master CPU {:.2} s ({:.2} ms per build), machine {:.0}% busy; master peak RSS {}",
        cpu,
        cpu * 1000.0 / n as f64,
        busy * 100.0,
        mb(hwm)
    );
    m.proc.stop();
    Ok(())
}

/// Joins futures without another dependency: they run concurrently in this
/// task.
async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Throughput and latency from the store's own timestamps (ms).
fn report_store(
    c: &Client,
    rt: &tokio::runtime::Runtime,
    builds_before: u64,
    n: usize,
) -> Result<(), BenchError> {
    let builds = rt.block_on(c.all("builds", builds_before))?;
    let requests = rt.block_on(c.all("requests", 0))?;
    let submitted: std::collections::HashMap<u64, i64> = requests
        .iter()
        .filter_map(|r| Some((r["id"].as_u64()?, r["submitted_at"].as_i64()?)))
        .collect();
    let ok = builds.iter().filter(|b| b["result"] == "success").count();
    let first_submit = builds
        .iter()
        .filter_map(|b| submitted.get(&b["requests"][0].as_u64()?).copied())
        .min()
        .unwrap_or(0);
    let first_start = builds
        .iter()
        .filter_map(|b| b["started_at"].as_i64())
        .min()
        .unwrap_or(0);
    let last_finish = builds
        .iter()
        .filter_map(|b| b["finished_at"].as_i64())
        .max()
        .unwrap_or(0);
    let mut lat: Vec<f64> = builds
        .iter()
        .filter_map(|b| {
            let s = submitted.get(&b["requests"][0].as_u64()?)?;
            Some((b["started_at"].as_i64()? - s) as f64)
        })
        .collect();
    println!(
        "- store: {} builds ({} successful, {n} requested); first request → last finish {} ms = {:.0} builds/s; first start → last finish {} ms = {:.0} builds/s",
        builds.len(),
        ok,
        last_finish - first_submit,
        builds.len() as f64 * 1000.0 / (last_finish - first_submit).max(1) as f64,
        last_finish - first_start,
        builds.len() as f64 * 1000.0 / (last_finish - first_start).max(1) as f64,
    );
    println!(
        "- {}",
        summary(
            "request → start from store timestamps (ms resolution)",
            "ms",
            &mut lat
        )
    );
    // Where a build's time goes (every 10th build; ms resolution).
    let mut phases = [Vec::new(), Vec::new(), Vec::new()];
    for b in builds.iter().step_by(10) {
        let Some(id) = b["id"].as_u64() else { continue };
        let v = rt.block_on(c.get(&format!("/api/v1/builds/{id}")))?;
        let st = &v["build"]["steps"][0];
        let t = [
            v["build"]["started_at"].as_i64(),
            st["started_at"].as_i64(),
            st["finished_at"].as_i64(),
            v["build"]["finished_at"].as_i64(),
        ];
        if let [Some(a), Some(b), Some(c), Some(d)] = t {
            phases[0].push((b - a) as f64);
            phases[1].push((c - b) as f64);
            phases[2].push((d - c) as f64);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "- a build's time (mean of {}, ms): start → step start {:.1}, step {:.1}, step end → build end {:.1}",
        phases[0].len(),
        mean(&phases[0]),
        mean(&phases[1]),
        mean(&phases[2])
    );
    Ok(())
}

/// Request → start from the client's send time and the master's
/// `build started` event (µs resolution).
fn report_latency(
    _c: &Client,
    _rt: &tokio::runtime::Runtime,
    m: &Master,
    p: &Phase,
    what: &str,
) -> Result<(), BenchError> {
    // The master writes its log line as the build starts; give the last one
    // a moment to reach the file.
    std::thread::sleep(Duration::from_millis(50));
    let started = start_events(&m.log);
    let mut lat: Vec<f64> = p
        .sent
        .iter()
        .filter_map(|(id, sent)| {
            let at = started.get(id)?;
            Some((*at as f64 - *sent as f64) / 1000.0)
        })
        .collect();
    if what == "one at a time" {
        println!();
        println!("### {} builds one at a time (idle master)", p.sent.len());
    }
    println!(
        "- {}",
        summary(
            "request → start, POST sent → `build started` event",
            "ms",
            &mut lat
        )
    );
    Ok(())
}

fn log(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let lines = a.log_mb * 1_000_000 / 100;
    let line = "x".repeat(99);
    let config = dir.join("master.kdl");
    std::fs::write(
        &config,
        format!(
            "master {{\n    title \"bench log\"\n}}\nworker \"w1\" password=(secret)\"w1\"\n\
             builder \"log\" {{\n    workers \"w1\"\n    steps {{\n        shell \"yes {line} | head -n {lines}\" name=\"print\"\n    }}\n}}\n\
             scheduler \"force\" kind=\"force\" {{\n    builders \"log\"\n}}\n"
        ),
    )?;
    write_secrets(dir, &["w1".into()])?;
    let mut m = start_master(exe, dir, &config, "log")?;
    let w1 = start_worker(exe, dir, &m, "w1")?;
    let c = Client::new(&m.http);
    let rt = rt()?;
    rt.block_on(c.wait_workers(1))?;
    let pid = m.proc.pid();
    let (rss0, hwm0) = mem_kib(pid);
    let cpu0 = cpu_s(pid);
    let ticks = cpu_ticks();
    // The peak from here on is the log's, not the start-up's.
    reset_peak(pid);
    let sampler = Sampler::start(pid);
    let t0 = Instant::now();
    rt.block_on(c.force("log"))?;
    let mut peak_rss = rss0;
    let done = rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            peak_rss = peak_rss.max(mem_kib(pid).0);
            let v = c.get("/api/v1/builds?builder=log&limit=1").await?;
            if v["builds"][0]["finished_at"].is_i64() {
                return Ok(Instant::now());
            }
            if Instant::now() > until {
                return Err(err("the log build did not finish within 10 minutes"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })?;
    let cpu = cpu_s(pid) - cpu0;
    let busy = machine_busy(&ticks);
    let (_, threads) = sampler.peak();
    let (rss1, hwm1) = mem_kib(pid);
    let (_, worker_hwm) = mem_kib(w1.pid());
    let b = rt.block_on(c.get("/api/v1/builds?builder=log&limit=1"))?;
    let id = b["builds"][0]["id"].as_u64().unwrap_or(0);
    let b = rt.block_on(c.get(&format!("/api/v1/builds/{id}")))?;
    let st = &b["build"]["steps"][0];
    let len = st["log_len"].as_u64().unwrap_or(0);
    let ms = st["finished_at"].as_i64().unwrap_or(0) - st["started_at"].as_i64().unwrap_or(0);
    let wall = done.duration_since(t0).as_secs_f64();
    println!();
    println!(
        "## log: one step printing {} lines of 100 bytes ({} MB)",
        lines, a.log_mb
    );
    println!("- result {}, stored {} bytes", b["build"]["result"], len);
    println!(
        "- step start → end (store): {} ms = {:.0} MB/s; POST → finish seen (polling every 20 ms): {:.3} s = {:.0} MB/s",
        ms,
        len as f64 / 1e6 / (ms.max(1) as f64 / 1000.0),
        wall,
        len as f64 / 1e6 / wall
    );
    println!(
        "- master RSS: {} before, peak {} during the build (VmHWM, reset before it; start-up peak {}), {} after; {} threads at most",
        mb(rss0),
        mb(hwm1.max(peak_rss)),
        mb(hwm0),
        mb(rss1),
        threads
    );
    println!(
        "- master CPU {:.2} s ({:.1} ms per MB), machine {:.0}% busy; worker peak RSS {}",
        cpu,
        cpu * 1000.0 / (len as f64 / 1e6).max(1e-9),
        busy * 100.0,
        mb(worker_hwm)
    );
    m.proc.stop();
    drop(w1);
    Ok(())
}

fn idle(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let n = a.config_builders;
    let config = dir.join("master.kdl");
    std::fs::write(&config, generate(n))?;
    write_secrets(dir, &(1..=4).map(|i| format!("w{i}")).collect::<Vec<_>>())?;
    let mut times = Vec::new();
    let mut first = 0.0;
    let mut rss = Vec::new();
    let mut hwm = Vec::new();
    let runs = a.starts.max(1);
    for i in 0..runs {
        let mut m = start_master(exe, dir, &config, &format!("idle-{i}"))?;
        let ms = m.started_in.as_secs_f64() * 1000.0;
        if i == 0 {
            first = ms;
        } else {
            times.push(ms);
        }
        // Idle: listening, nothing to do.
        std::thread::sleep(Duration::from_secs(2));
        let (r, h) = mem_kib(m.proc.pid());
        rss.push(r as f64);
        hwm.push(h as f64);
        m.proc.stop();
    }
    println!();
    println!("## idle: `bbc master` with {n} builders (the `bbc-bench check` shape), no workers");
    println!(
        "- start (spawn → \"bbc master: …\" line, ports listening): first start {:.1} ms (creates the store), later starts median {:.1} ms of {}",
        first,
        median(&mut times),
        times.len()
    );
    println!(
        "- RSS idle 2 s after start: median {} (peak during start-up, VmHWM: {})",
        mb(median(&mut rss) as u64),
        mb(median(&mut hwm) as u64)
    );
    Ok(())
}

fn compile_json(path: &Path) -> Result<String, BenchError> {
    let c = bbc_compiler::compile(&path.to_string_lossy(), &bbc_compiler::source::DiskSources);
    c.graph
        .map(|g| g.to_json())
        .ok_or_else(|| err(format!("{} does not compile", path.display())))
}

/// Hot reload of the master running the `bbc-bench check` config shape.
fn apply(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let n = a.config_builders;
    let runs = a.applies.max(1);
    let base_text = generate(n);
    let config = dir.join("master.kdl");
    std::fs::write(&config, &base_text)?;
    // One builder edited (the first `make lint` is b-0's), and every one.
    let one = dir.join("one.kdl");
    std::fs::write(
        &one,
        base_text.replacen("make lint", "make lint --strict", 1),
    )?;
    let all = dir.join("all.kdl");
    std::fs::write(&all, base_text.replace("make lint", "make lint --strict"))?;
    let mut names: Vec<String> = (1..=4).map(|i| format!("w{i}")).collect();
    names.push("bbc-admin-token".into());
    write_secrets(dir, &names)?;
    let token = "bench-password-bbc-admin-token";
    let token_file = dir.join("secrets").join("bbc-admin-token");
    let mut m = start_master(exe, dir, &config, "apply")?;
    let (rss0, _) = mem_kib(m.proc.pid());
    let c = Client::new(&m.http);
    let rt = rt()?;
    let base_json = compile_json(&config)?;
    println!();
    println!(
        "## apply: hot reload of `bbc master` running {n} builders (the `bbc-bench check` shape), no workers"
    );
    println!(
        "graph JSON: {:.1} MB; {runs} applies of each kind, alternating with the base config",
        base_json.len() as f64 / 1e6
    );
    println!("| change | master's apply (report) | POST /api/v1/config round trip | `bbc apply --yes` command |");
    println!("|---|---:|---:|---:|");
    for (label, path) in [
        ("one builder changed", Some(&one)),
        ("every builder changed", Some(&all)),
        ("nothing changed", None),
    ] {
        let target_json = match path {
            Some(p) => compile_json(p)?,
            None => base_json.clone(),
        };
        let mut server = Vec::new();
        let mut post = Vec::new();
        let mut cmd = Vec::new();
        for _ in 0..runs {
            // Through the API: there and back, both measured.
            for body in [&target_json, &base_json] {
                let t = Instant::now();
                let r = rt.block_on(c.post_config(token, body.clone()))?;
                post.push(t.elapsed().as_secs_f64() * 1000.0);
                server.push(r.duration_us as f64 / 1000.0);
            }
            // The command a user runs: compile, GET the running graph,
            // diff, POST, report.
            for p in [path.unwrap_or(&config), &config] {
                let t = Instant::now();
                let o = Command::new(exe)
                    .arg("apply")
                    .arg(p)
                    .args(["--master", &format!("http://{}", m.http), "--yes"])
                    .arg("--token-file")
                    .arg(&token_file)
                    .stdin(Stdio::null())
                    .output()?;
                cmd.push(t.elapsed().as_secs_f64() * 1000.0);
                if !o.status.success() {
                    return Err(err(format!(
                        "bbc apply failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    )));
                }
            }
        }
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:.0} ms |",
            median(&mut server),
            median(&mut post),
            median(&mut cmd)
        );
    }
    let (rss, hwm) = mem_kib(m.proc.pid());
    println!(
        "- master RSS: {} before the applies, {} after (peak {})",
        mb(rss0),
        mb(rss),
        mb(hwm)
    );
    m.proc.stop();
    Ok(())
}
