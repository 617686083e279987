//! `bbc-bench fleet`: masters with thousands of workers connected at once
//! (issue 15). Each master is a real `bbc master` process; the workers are
//! simulated in this process ([`sim`]), speaking the real protocol. So the
//! figures are the masters': their CPU and RSS with the fleet idle
//! (keepalives only), then while builds are forced at a steady rate
//! through the HTTP API for a while, with request → start latency from the
//! masters' `bbc_timing` events, and a final audit that no acknowledged
//! request was lost or built twice.
//!
//! With `--masters 2 --pg URL` the masters share one PostgreSQL schema
//! (fresh for the run, dropped at the end): the workers are split between
//! them, the forces alternate between their APIs, and `--kill-after SECS`
//! SIGKILLs the last master that far into the load. Its workers connect
//! to a survivor, the forces go to a survivor (a POST the dead master did
//! not answer is sent again there, and counted), and the audit reads every
//! build back from a survivor: a build the kill interrupted ran again, and
//! is counted apart.

mod sim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{cpu_s, mem_kib, postgres_cpu_s, Sampler};
use crate::run::master::{start_master_with, write_secrets, Master};
use crate::run::{start_events, wall_us};
use crate::stats::mb;
use sim::Counters;

#[derive(clap::Args)]
pub struct FleetArgs {
    /// Workers connected at once
    #[arg(long, default_value_t = 3000)]
    pub workers: usize,
    /// Builders; builder i runs on the workers whose number is i modulo this
    #[arg(long, default_value_t = 100)]
    pub builders: usize,
    /// Builds forced per second during the load phase
    #[arg(long, default_value_t = 230)]
    pub rate: u64,
    /// Length of the load phase, in seconds
    #[arg(long, default_value_t = 300)]
    pub secs: u64,
    /// Length of the idle phase (keepalives only), in seconds
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Working directory (default: a fresh one under the temp dir)
    #[arg(long)]
    pub dir: Option<String>,
    /// Masters sharing the fleet and the forces (more than one needs --pg)
    #[arg(long, default_value_t = 1)]
    pub masters: usize,
    /// The masters' store on PostgreSQL, `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// (the password reaches the masters as a secret); the run uses a fresh
    /// schema, dropped at the end
    #[arg(long)]
    pub pg: Option<String>,
    /// SIGKILL the last master this many seconds into the load phase
    #[arg(long)]
    pub kill_after: Option<u64>,
    /// The masters' lease in ms (`BBC_MASTER_LEASE_MS`; default the
    /// master's own, 10 s)
    #[arg(long)]
    pub lease_ms: Option<u64>,
}

/// The PostgreSQL store of a run: the server's URL without the password,
/// the password, and the run's schema, dropped when this is.
struct Pg {
    url: String,
    bare: String,
    password: String,
    schema: String,
}

impl Pg {
    fn new(url: &str) -> Result<Pg, BenchError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| err(format!("--pg {url:?}: not a postgres:// URL")))?;
        let (auth, host) = rest
            .split_once('@')
            .ok_or_else(|| err("--pg: the URL names no user (postgres://USER:PASSWORD@HOST/DB)"))?;
        let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
        let pg = Pg {
            url: url.to_string(),
            bare: format!("postgres://{user}@{host}"),
            password: password.to_string(),
            schema: format!("bbcfleet_{}", std::process::id()),
        };
        // A schema left by an earlier run with the same pid would mix
        // its builds into this audit.
        pg.drop_schema();
        Ok(pg)
    }

    fn drop_schema(&self) {
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", &self.url, "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.drop_schema();
    }
}

fn config(workers: usize, builders: usize, pg: Option<&Pg>) -> String {
    let mut s = String::from("master {\n    title \"bench fleet\"\n");
    if let Some(pg) = pg {
        s.push_str(&format!(
            "    store \"{}\" password=(secret)\"pg\" schema=\"{}\"\n",
            pg.bare, pg.schema
        ));
    }
    s.push_str("}\n");
    for w in 0..workers {
        s.push_str(&format!("worker \"f{w}\" password=(secret)\"f{w}\"\n"));
    }
    for b in 0..builders {
        s.push_str(&format!("builder \"t{b}\" {{\n    workers"));
        for w in (b..workers).step_by(builders) {
            s.push_str(&format!(" \"f{w}\""));
        }
        s.push_str("\n    steps {\n        shell \"true\"\n    }\n}\n");
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for b in 0..builders {
        s.push_str(&format!(" \"t{b}\""));
    }
    s.push_str("\n}\n");
    s
}

/// The percentile `p` (0–100) of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A force the load sent: the request id acknowledged, when the first
/// POST went out (µs since the epoch), and whether it was sent again to a
/// survivor after the killed master did not answer.
struct Sent {
    id: u64,
    at: u64,
    retried: bool,
}

/// The kill of a master during the load.
struct Kill {
    victim: usize,
    at: Instant,
    wall_us: u64,
    /// The victim's CPU seconds just before.
    cpu: f64,
    /// Welcomes counted before it (the survivors' reconnects come after).
    reconnects: u64,
}

/// What a watch after the kill saw: when a survivor logged the take-over
/// of the dead master's lease, and when every worker was connected again.
struct Recovery {
    takeover: Option<Duration>,
    reconnected: Option<Duration>,
}

/// Watches the survivor's log (only what is appended after the kill) for
/// the take-over, and the fleet for its reconnection, for at most 2
/// minutes.
fn watch_recovery(
    log: PathBuf,
    from: u64,
    killed: Instant,
    c: Arc<Counters>,
    workers: u64,
    reconnects: u64,
) -> std::thread::JoinHandle<Recovery> {
    std::thread::spawn(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut r = Recovery {
            takeover: None,
            reconnected: None,
        };
        let mut pos = from;
        let mut tail = String::new();
        while killed.elapsed() < Duration::from_secs(120)
            && (r.takeover.is_none() || r.reconnected.is_none())
        {
            if r.takeover.is_none() {
                if let Ok(mut f) = std::fs::File::open(&log) {
                    let mut buf = Vec::new();
                    if f.seek(SeekFrom::Start(pos)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                        pos += buf.len() as u64;
                        // Keep the last partial line for the next read.
                        tail.push_str(&String::from_utf8_lossy(&buf));
                        if tail.contains("a master's lease expired") {
                            r.takeover = Some(killed.elapsed());
                        }
                        let keep = tail.rfind('\n').map_or(0, |n| n + 1);
                        tail.drain(..keep);
                    }
                }
            }
            if r.reconnected.is_none()
                && c.connected.load(Ordering::Relaxed) >= workers
                && c.reconnects.load(Ordering::Relaxed) > reconnects
            {
                r.reconnected = Some(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        r
    })
}

pub fn fleet(exe: &Path, a: &FleetArgs) -> Result<(), BenchError> {
    let n = a.masters.max(1);
    if n > 1 && a.pg.is_none() {
        return Err(err(
            "--masters above 1 needs --pg postgres://USER:PASSWORD@HOST/DB: several masters share a PostgreSQL store",
        ));
    }
    if a.kill_after.is_some() && n < 2 {
        return Err(err(
            "--kill-after needs --masters 2 or more: a survivor takes the killed master's work over",
        ));
    }
    if a.kill_after.is_some_and(|k| k >= a.secs) {
        return Err(err(
            "--kill-after must be less than --secs (the load's length)",
        ));
    }
    let dir = match &a.dir {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("bbc-bench-fleet-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pg = a.pg.as_deref().map(Pg::new).transpose()?;
    let (workers, builders) = (a.workers.max(1), a.builders.max(1).min(a.workers.max(1)));
    let names: Vec<String> = (0..workers).map(|w| format!("f{w}")).collect();
    let text = config(workers, builders, pg.as_ref());
    let env: Vec<(&str, String)> = a
        .lease_ms
        .map(|l| ("BBC_MASTER_LEASE_MS", l.to_string()))
        .into_iter()
        .collect();
    // One directory each: a master's name in the store is HOST:STATE-DIR.
    // Started one after the other, so the first creates the schema alone.
    let mut masters: Vec<Master> = Vec::with_capacity(n);
    for k in 0..n {
        let md = dir.join(format!("m{k}"));
        std::fs::create_dir_all(&md)?;
        let cfg = md.join("master.kdl");
        std::fs::write(&cfg, &text)?;
        write_secrets(&md, &names)?;
        if let Some(pg) = &pg {
            std::fs::write(md.join("secrets").join("pg"), &pg.password)?;
        }
        masters.push(start_master_with(
            exe,
            &md,
            &cfg,
            &format!("fleet{k}"),
            false,
            &env,
        )?);
    }
    let pids: Vec<u32> = masters.iter().map(|m| m.proc.pid()).collect();
    let clients = masters
        .iter()
        .map(Client::of)
        .collect::<Result<Vec<_>, _>>()?;
    let clients = Arc::new(clients);
    let addrs = Arc::new(
        masters
            .iter()
            .map(|m| m.workers_addr.clone())
            .collect::<Vec<_>>(),
    );
    // The workers' own runtime: their CPU is this process's, not the
    // masters'.
    let wrt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    println!(
        "## fleet: {workers} simulated workers, {builders} builders (one step each), {n} master(s) on {}",
        if pg.is_some() { "PostgreSQL" } else { "redb" }
    );
    let t = Instant::now();
    let secrets = dir.join("m0").join("secrets");
    for (w, name) in names.iter().enumerate() {
        let password = std::fs::read_to_string(secrets.join(name))?;
        // Each builder's workers spread over the masters (worker w of
        // builder w % builders goes to master (w / builders) % n), so the
        // masters compete for every builder's requests.
        wrt.spawn(sim::worker(
            addrs.clone(),
            (w / builders) % n,
            name.clone(),
            password,
            counters.clone(),
        ));
    }
    let until = Instant::now() + Duration::from_secs(120);
    while counters.connected.load(Ordering::Relaxed) < workers as u64 {
        if Instant::now() > until {
            return Err(err(format!(
                "only {} of {workers} workers connected in 120 s (see {})",
                counters.connected.load(Ordering::Relaxed),
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = t.elapsed();
    let rt = rt()?;
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = 0;
            for c in clients.iter() {
                seen += c.connected_workers().await?;
            }
            if seen >= workers {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(err(format!(
                    "the masters' APIs show {seen} of {workers} workers connected"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })?;
    let rss: Vec<String> = pids.iter().map(|p| mb(mem_kib(*p).0)).collect();
    println!(
        "connected: {workers} workers in {:.2} s; master RSS {}",
        connect.as_secs_f64(),
        rss.join(", ")
    );

    // Idle: keepalives only.
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    for (k, p) in pids.iter().enumerate() {
        let idle_cpu = cpu_s(*p) - cpu0[k];
        println!(
            "idle {} s: master {k} CPU {:.2} s ({:.1} % of a core), RSS {}",
            a.idle_secs,
            idle_cpu,
            idle_cpu * 100.0 / a.idle_secs.max(1) as f64,
            mb(mem_kib(*p).0)
        );
    }

    // Load: `rate` forces a second, spread over the builders and the live
    // masters' APIs, each sent by its own task at its due time so a slow
    // answer does not slow the rate.
    let total = a.rate * a.secs;
    let samplers: Vec<Sampler> = pids.iter().map(|p| Sampler::start(*p)).collect();
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_s(*p)).collect();
    let pg_cpu0 = postgres_cpu_s();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut kill: Option<Kill> = None;
    let mut watch = None;
    let mut unanswered = 0u64;
    let load_start = Instant::now();
    let load_start_us = wall_us();
    let sent: Vec<Sent> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(total as usize);
        let start = tokio::time::Instant::now();
        for i in 0..total {
            let due = start + Duration::from_micros(i * 1_000_000 / a.rate.max(1));
            tokio::time::sleep_until(due).await;
            if let Some(after) = a.kill_after {
                if kill.is_none() && start.elapsed() >= Duration::from_secs(after) {
                    let victim = n - 1;
                    let cpu = cpu_s(pids[victim]);
                    let from = std::fs::metadata(&masters[0].log).map_or(0, |m| m.len());
                    let reconnects = counters.reconnects.load(Ordering::Relaxed);
                    // Set first: a POST to the victim failing from now on
                    // is sent again to a survivor.
                    killed.store(true, Ordering::SeqCst);
                    let wall = wall_us();
                    masters[victim].proc.kill9();
                    let at = Instant::now();
                    watch = Some(watch_recovery(
                        masters[0].log.clone(),
                        from,
                        at,
                        counters.clone(),
                        workers as u64,
                        reconnects,
                    ));
                    kill = Some(Kill {
                        victim,
                        at,
                        wall_us: wall,
                        cpu,
                        reconnects,
                    });
                }
            }
            let victim = kill.as_ref().map(|k| k.victim);
            let live = if victim.is_some() { n - 1 } else { n };
            let target = i as usize % live;
            let to_die = a.kill_after.map(|_| n - 1);
            let (clients, killed) = (clients.clone(), killed.clone());
            let b = format!("t{}", i as usize % builders);
            tasks.push(tokio::spawn(async move {
                let at = wall_us();
                match clients[target].force(&b).await {
                    Ok(id) => Ok(Sent {
                        id,
                        at,
                        retried: false,
                    }),
                    // Unanswered by the master being killed: a client
                    // sends it again to another.
                    Err(_) if Some(target) == to_die && killed.load(Ordering::SeqCst) => {
                        clients[0].force(&b).await.map(|id| Sent {
                            id,
                            at,
                            retried: true,
                        })
                    }
                    Err(e) => Err(e),
                }
            }));
        }
        // A POST a live master did not answer (overloaded: its accept
        // queue or the open files ran out) is counted, not fatal: the
        // client was told nothing, so nothing was promised.
        let mut sent = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await.map_err(|e| err(e.to_string()))? {
                Ok(s) => sent.push(s),
                Err(e) => {
                    if unanswered == 0 {
                        eprintln!("first unanswered force: {}", e.0);
                    }
                    unanswered += 1;
                }
            }
        }
        Ok::<_, BenchError>(sent)
    })?;
    let submitted_in = load_start.elapsed();
    // Polled slowly: each poll is a store read (several masters) or lists
    // the whole fleet (one).
    let survivor = &clients[0];
    if pg.is_some() {
        rt.block_on(survivor.wait_store_idle(Duration::from_millis(250)))?;
    } else {
        rt.block_on(survivor.wait_idle(Duration::from_millis(250)))?;
    }
    let load_wall = load_start.elapsed();
    let load_cpu: Vec<f64> = pids
        .iter()
        .enumerate()
        .map(|(k, p)| match &kill {
            Some(kl) if kl.victim == k => kl.cpu - cpu0[k],
            _ => cpu_s(*p) - cpu0[k],
        })
        .collect();
    let pg_cpu = pg_cpu0.and_then(|c0| postgres_cpu_s().map(|c| c - c0));
    let peaks: Vec<(u64, u64)> = samplers.into_iter().map(Sampler::peak).collect();
    let recovery = watch.and_then(|w| w.join().ok());

    // The audit, from a survivor: every acknowledged request built, none
    // built twice; builds the kill interrupted ("retry") ran again.
    let builds = rt.block_on(survivor.all("builds", 0))?;
    let mut built: HashMap<u64, u32> = HashMap::new();
    let mut interrupted = 0;
    let mut by_master: HashMap<String, u64> = HashMap::new();
    for b in &builds {
        *by_master
            .entry(b["master"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if b["result"] == "retry" {
            interrupted += 1;
            continue;
        }
        for r in b["requests"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_u64() {
                *built.entry(r).or_default() += 1;
            }
        }
    }
    let acked: HashMap<u64, &Sent> = sent.iter().map(|s| (s.id, s)).collect();
    let lost = acked.keys().filter(|id| !built.contains_key(id)).count();
    let twice = built.values().filter(|n| **n > 1).count();
    // Requests of POSTs the dead master stored but never answered: built,
    // though no client knows their ids.
    let unacked = built.keys().filter(|id| !acked.contains_key(id)).count();
    let retried = sent.iter().filter(|s| s.retried).count();
    // A request's first start, whichever master ran it.
    let mut starts: HashMap<u64, u64> = HashMap::new();
    for m in &masters {
        for (id, at) in start_events(&m.log) {
            let e = starts.entry(id).or_insert(at);
            *e = (*e).min(at);
        }
    }
    let kill_us = kill.as_ref().map_or(u64::MAX, |k| k.wall_us);
    let latency = |before: bool| {
        let mut l: Vec<f64> = sent
            .iter()
            .filter(|s| (s.at < kill_us) == before)
            .filter_map(|s| {
                starts
                    .get(&s.id)
                    .map(|t| t.saturating_sub(s.at) as f64 / 1000.0)
            })
            .collect();
        l.sort_by(|a, b| a.total_cmp(b));
        l
    };
    println!(
        "load: {total} forces at {}/s over {:.1} s (all submitted in {:.1} s, all built in {:.1} s): {:.0} builds/s",
        a.rate,
        a.secs as f64,
        submitted_in.as_secs_f64(),
        load_wall.as_secs_f64(),
        built.len() as f64 / load_wall.as_secs_f64()
    );
    // Builds started in each 10 s of the load (first starts): the rate
    // sustained, and what the kill did to it.
    let mut windows = vec![0u64; (load_wall.as_secs() / 10 + 1) as usize];
    for at in starts.values() {
        if let Some(w) = at
            .checked_sub(load_start_us)
            .map(|d| (d / 10_000_000) as usize)
        {
            if let Some(x) = windows.get_mut(w) {
                *x += 1;
            }
        }
    }
    let rates: Vec<String> = windows.iter().map(|w| format!("{}", w / 10)).collect();
    println!(
        "builds started per second, by 10 s of the load: {}",
        rates.join(" ")
    );
    let show = |name: &str, l: &[f64]| {
        println!(
            "request → start{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} measured)",
            pct(l, 50.0),
            pct(l, 99.0),
            pct(l, 100.0),
            l.len()
        )
    };
    match &kill {
        None => show("", &latency(true)),
        Some(k) => {
            show(" before the kill", &latency(true));
            show(" after the kill", &latency(false));
            println!(
                "kill -9 of master {} at {:.1} s into the load",
                k.victim,
                k.at.duration_since(load_start).as_secs_f64()
            );
            let ms = |d: Option<Duration>| {
                d.map_or("not seen within 120 s".to_string(), |d| {
                    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
                })
            };
            if let Some(r) = &recovery {
                println!(
                    "kill → a survivor took the dead master's lease over: {}; kill → all {workers} workers connected again: {}",
                    ms(r.takeover),
                    ms(r.reconnected)
                );
            }
            println!(
                "workers: {} reconnected, {} connection attempts failed, {} refused",
                counters.reconnects.load(Ordering::Relaxed) - k.reconnects,
                counters.failed.load(Ordering::Relaxed),
                counters.refused.load(Ordering::Relaxed)
            );
        }
    }
    for (k, cpu) in load_cpu.iter().enumerate() {
        let secs = match &kill {
            Some(kl) if kl.victim == k => kl.at.duration_since(load_start).as_secs_f64(),
            _ => load_wall.as_secs_f64(),
        };
        println!(
            "master {k}: CPU {:.1} s over {:.1} s of the load ({:.0} % of a core), peak RSS {}, {} threads",
            cpu,
            secs,
            cpu * 100.0 / secs.max(0.001),
            mb(peaks[k].0),
            peaks[k].1
        );
    }
    if let Some(c) = pg_cpu {
        println!(
            "PostgreSQL (every server process on this machine): CPU {:.1} s ({:.0} % of a core)",
            c,
            c * 100.0 / load_wall.as_secs_f64()
        );
    }
    let mut runs: Vec<String> = by_master.iter().map(|(m, c)| format!("{m}: {c}")).collect();
    runs.sort();
    println!(
        "builds by master: {}; the workers ran {} commands",
        runs.join(", "),
        counters.runs.load(Ordering::Relaxed)
    );
    println!(
        "audit: {lost} acknowledged requests never built, {twice} built more than once; \
         {interrupted} builds interrupted by the kill and run again; {retried} forces sent again to a survivor; \
         {unacked} requests built whose POST was never answered; {unanswered} forces never acknowledged"
    );
    let still = counters.connected.load(Ordering::Relaxed);
    println!("workers still connected at the end: {still} of {workers}");
    counters.stop.store(true, Ordering::Relaxed);
    wrt.shutdown_timeout(Duration::from_secs(1));
    // The masters stop before their schema is dropped.
    drop(masters);
    drop(pg);
    if lost > 0 || twice > 0 {
        return Err(err(format!(
            "{lost} acknowledged requests lost, {twice} built twice (the masters' logs are in {})",
            dir.display()
        )));
    }
    // A directory given is kept (the masters' logs); a temporary one goes.
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
