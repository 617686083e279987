//! `bbc bench run`: the runtime measured the way a user runs it. The
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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command_error::CommandError;

/// `bbc bench run`'s options (clap reads them straight into this).
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

fn err(msg: impl Into<String>) -> CommandError {
    CommandError::Usage(msg.into())
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

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn mem_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples a process's `VmRSS` and thread count every 5 ms until dropped;
/// `peak()` gives the highest of each.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut threads) = (0, 0);
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let field = |name: &str| -> u64 {
                    status
                        .lines()
                        .find(|l| l.starts_with(name))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                rss = rss.max(field("VmRSS:"));
                threads = threads.max(field("Threads:"));
                std::thread::sleep(Duration::from_millis(5));
            }
            (rss, threads)
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Highest RSS (KiB) and thread count seen.
    fn peak(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or((0, 0))
    }
}

/// Resets a process's `VmHWM` to its current RSS (Linux 4.0+).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Busy fraction of the machine's CPUs (all processes) since `since`.
fn machine_busy(since: &[u64]) -> f64 {
    let now = cpu_ticks();
    let d: Vec<u64> = now.iter().zip(since).map(|(a, b)| a - b).collect();
    let total: u64 = d.iter().sum();
    // Fields: user nice system idle iowait irq softirq steal.
    let idle = d.get(3).copied().unwrap_or(0) + d.get(4).copied().unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    (total - idle) as f64 / total as f64
}

fn cpu_ticks() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// CPU time (user + system) of a process, in seconds. Linux reports it in
/// clock ticks, 100 per second on every Linux this runs on.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: fields count from after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    (tick(11) + tick(12)) / 100.0
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

struct Master {
    proc: Proc,
    workers_addr: String,
    http: String,
    started_in: Duration,
    log: PathBuf,
}

fn start_master(exe: &Path, dir: &Path, config: &Path, tag: &str) -> Result<Master, CommandError> {
    let log = dir.join(format!("master-{tag}.log"));
    let stderr = std::fs::File::create(&log)?;
    let t = Instant::now();
    let mut child = Command::new(exe)
        .arg("master")
        .arg(config)
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--secrets")
        .arg(dir.join("secrets"))
        .args([
            "--worker-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        // The debug events of `bbc_timing` say when each build started.
        .env("BBC_LOG", "warn,bbc_timing=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let Some(out) = child.stdout.take() else {
        return Err(err("the master's stdout is not piped"));
    };
    let proc = Proc { child };
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let started_in = t.elapsed();
    // Keep draining, so that a later print never meets a closed pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let parse = || -> Option<(String, String)> {
        let rest = line.trim().strip_prefix("bbc master: workers on ")?;
        let (w, h) = rest.split_once(", http on http://")?;
        Some((w.to_string(), h.trim_end_matches('/').to_string()))
    };
    let Some((workers_addr, http)) = parse() else {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(err(format!(
            "the master did not start (first line {line:?}): {log_text}"
        )));
    };
    Ok(Master {
        proc,
        workers_addr,
        http,
        started_in,
        log,
    })
}

fn start_worker(exe: &Path, dir: &Path, m: &Master, name: &str) -> Result<Proc, CommandError> {
    let stderr = std::fs::File::create(dir.join(format!("worker-{name}.log")))?;
    let child = Command::new(exe)
        .arg("worker")
        .args(["--master", &m.workers_addr, "--name", name])
        .arg("--password-file")
        .arg(dir.join("secrets").join(name))
        .arg("--basedir")
        .arg(dir.join("workers").join(name))
        .env("BBC_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    Ok(Proc { child })
}

fn write_secrets(dir: &Path, names: &[String]) -> Result<(), CommandError> {
    let d = dir.join("secrets");
    std::fs::create_dir_all(&d)?;
    for n in names {
        std::fs::write(d.join(n), format!("bench-password-{n}"))?;
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The value at fraction `p` of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, unit: &str, v: &mut [f64]) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "{name}: median {:.2} {unit}, p90 {:.2} {unit}, max {:.2} {unit} ({} values)",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 1.0),
        v.len()
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(addr: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends `req` (`what` names it in errors) and reads the JSON answer,
    /// which must have a status `ok` accepts.
    async fn call(
        what: &str,
        req: reqwest::RequestBuilder,
        ok: fn(reqwest::StatusCode) -> bool,
    ) -> Result<Value, CommandError> {
        let r = req.send().await.map_err(|e| err(format!("{what}: {e}")))?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| err(format!("{what}: {e}")))?;
        if !ok(status) {
            return Err(err(format!("{what}: {status} {v}")));
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> Result<Value, CommandError> {
        let req = self.http.get(format!("{}{path}", self.base));
        Client::call(&format!("GET {path}"), req, |s| s.is_success()).await
    }

    /// Forces a build; returns its request id.
    async fn force(&self, builder: &str) -> Result<u64, CommandError> {
        let path = format!("/api/v1/builders/{builder}/force");
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&serde_json::json!({"reason": "bench"}));
        let v = Client::call(&format!("POST {path}"), req, |s| s.as_u16() == 201).await?;
        v["requests"][0]["id"]
            .as_u64()
            .ok_or_else(|| err(format!("POST {path}: no request id in {v}")))
    }

    async fn wait_workers(&self, n: usize) -> Result<(), CommandError> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get("/api/v1/workers").await?;
            let connected = v["workers"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|w| w["connected"] == true).count());
            if connected >= n {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(err(format!("only {connected} of {n} workers connected")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Nothing pending and nothing running. (The workers' `running` lists
    /// come from the master's memory: cheaper to poll than running builds,
    /// whose ETA costs store reads. A request leaves the pending index only
    /// once its build is in one of those lists.)
    async fn idle(&self) -> Result<bool, CommandError> {
        let p = self.get("/api/v1/requests?state=pending&limit=1").await?;
        let w = self.get("/api/v1/workers").await?;
        let pending = p["requests"].as_array().is_some_and(|a| !a.is_empty());
        let running = w["workers"].as_array().is_some_and(|a| {
            a.iter()
                .any(|w| w["running"].as_array().is_some_and(|r| !r.is_empty()))
        });
        Ok(!pending && !running)
    }

    async fn wait_idle(&self, poll: Duration) -> Result<Instant, CommandError> {
        let until = Instant::now() + Duration::from_secs(600);
        loop {
            if self.idle().await? {
                return Ok(Instant::now());
            }
            if Instant::now() > until {
                return Err(err("builds did not finish within 10 minutes"));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Every record of a paginated list (`builds` or `requests`) with an id
    /// above `after`, oldest first.
    async fn all(&self, what: &str, after: u64) -> Result<Vec<Value>, CommandError> {
        let mut out = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let q = match before {
                Some(b) => format!("/api/v1/{what}?limit=1000&before={b}"),
                None => format!("/api/v1/{what}?limit=1000"),
            };
            let v = self.get(&q).await?;
            let page = v[what].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last().and_then(|x| x["id"].as_u64()) else {
                break;
            };
            let done = last <= after + 1;
            out.extend(page.into_iter().filter(|x| x["id"].as_u64() > Some(after)));
            if done {
                break;
            }
            before = Some(last);
        }
        out.reverse();
        Ok(out)
    }
}

fn rt() -> Result<tokio::runtime::Runtime, CommandError> {
    // One thread: the client should take as little of the 2 cores as it can.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start the async runtime: {e}")))
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

pub fn run(a: &RunArgs) -> Result<(), CommandError> {
    let exe = std::env::current_exe()?;
    let base = match &a.dir {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("bbc-bench-run-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    println!(
        "bbc bench run in {} ({} CPUs)",
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
        result = result.and_then(|_| builds(&exe, &base.join("builds"), a));
    }
    if want("log") {
        result = result.and_then(|_| log(&exe, &base.join("log"), a));
    }
    if want("idle") {
        result = result.and_then(|_| idle(&exe, &base.join("idle"), a));
    }
    if want("apply") {
        result = result.and_then(|_| apply(&exe, &base.join("apply"), a));
    }
    if a.keep {
        println!("kept {}", base.display());
    } else {
        let _ = std::fs::remove_dir_all(&base);
    }
    result
}

fn trivial_config(builders: usize, max_builds: usize) -> String {
    let mut s = String::from("master {\n    title \"bench builds\"\n}\n");
    for w in ["w1", "w2"] {
        s.push_str(&format!(
            "worker \"{w}\" password=(secret)\"{w}\" max-builds={max_builds}\n"
        ));
    }
    for i in 0..builders {
        s.push_str(&format!(
            "builder \"t{i}\" {{\n    workers \"w1\" \"w2\"\n    steps {{\n        shell \"true\"\n    }}\n}}\n"
        ));
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for i in 0..builders {
        s.push_str(&format!(" \"t{i}\""));
    }
    s.push_str("\n}\n");
    s
}

struct Phase {
    /// Request id → µs the client sent its POST.
    sent: std::collections::HashMap<u64, u64>,
}

fn builds(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), CommandError> {
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
        Ok::<_, CommandError>(())
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
                    return Ok::<_, CommandError>(());
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
        Ok::<_, CommandError>(sent.into_inner().unwrap_or_default())
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
                    return Ok::<_, CommandError>(());
                }
                c.force(&format!("t{}", i % builders)).await?;
            }
        };
        let tasks: Vec<_> = (0..conc).map(|_| one()).collect();
        for r in futures_join_all(tasks).await {
            r?;
        }
        Ok::<_, CommandError>(())
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
) -> Result<(), CommandError> {
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
) -> Result<(), CommandError> {
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

fn log(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), CommandError> {
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

fn idle(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir)?;
    let n = a.config_builders;
    let config = dir.join("master.kdl");
    std::fs::write(&config, crate::bench::generate(n))?;
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
    println!("## idle: `bbc master` with {n} builders (the `bbc bench check` shape), no workers");
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

/// `POST /api/v1/config` with the admin token: the master's report.
async fn post_config(
    c: &Client,
    token: &str,
    body: String,
) -> Result<bbc_runtime::master::apply::ApplyReport, CommandError> {
    let req = c
        .http
        .post(format!("{}/api/v1/config", c.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body);
    let v = Client::call("POST /api/v1/config", req, |s| s.is_success()).await?;
    serde_json::from_value(v["report"].clone())
        .map_err(|e| err(format!("POST /api/v1/config: report: {e}")))
}

fn compile_json(path: &Path) -> Result<String, CommandError> {
    let c = bbc_compiler::compile(&path.to_string_lossy(), &bbc_compiler::source::DiskSources);
    c.graph
        .map(|g| g.to_json())
        .ok_or_else(|| err(format!("{} does not compile", path.display())))
}

/// Hot reload of the master running the `bbc bench check` config shape.
fn apply(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir)?;
    let n = a.config_builders;
    let runs = a.applies.max(1);
    let base_text = crate::bench::generate(n);
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
        "## apply: hot reload of `bbc master` running {n} builders (the `bbc bench check` shape), no workers"
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
                let r = rt.block_on(post_config(&c, token, body.clone()))?;
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
