//! `bbc-bench fleet`: one master with thousands of workers connected at
//! once (issue 15). The master is a real `bbc master` process; the workers
//! are simulated in this process, one task and one TCP connection each,
//! speaking the real protocol (`bbc_runtime::protocol`): hello with the
//! worker's password, keepalives both ways, and every `run` answered at
//! once with exit code 0. So the figures are the master's: its CPU and RSS
//! with the fleet idle (keepalives only), then while builds are forced at a
//! steady rate through the HTTP API for a while, with request → start
//! latency from the master's `bbc_timing` events, and a final audit that no
//! request was lost or built twice.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bbc_runtime::protocol::{Frame, FrameCodec, Message, Stopped, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{cpu_s, mem_kib, Sampler};
use crate::run::master::{start_master, write_secrets};
use crate::stats::mb;

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
}

fn config(workers: usize, builders: usize) -> String {
    let mut s = String::from("master {\n    title \"bench fleet\"\n}\n");
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

/// What the simulated fleet counts.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    runs: AtomicU64,
    frames_in: AtomicU64,
}

/// One simulated worker: connects, says hello, then answers pings and
/// runs until the master closes the connection.
async fn worker(addr: String, name: String, password: String, c: Arc<Counters>) {
    let Ok(tcp) = TcpStream::connect(&addr).await else {
        eprintln!("{name}: cannot connect to {addr}");
        return;
    };
    let _ = tcp.set_nodelay(true);
    let mut f = Framed::new(tcp, FrameCodec::new());
    let hello = Message::Hello {
        protocol: PROTOCOL_VERSION,
        name: name.clone(),
        password,
        info: BTreeMap::from([("os".to_string(), "bench".to_string())]),
    };
    if f.send(Frame::Message(hello)).await.is_err() {
        return;
    }
    let keepalive = match f.next().await {
        Some(Ok(Frame::Message(Message::Welcome { keepalive_ms, .. }))) => keepalive_ms,
        other => {
            eprintln!("{name}: no welcome: {other:?}");
            return;
        }
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    // An unprompted pong at a third of the interval keeps the master's
    // side of the keepalive satisfied when nothing else is sent.
    let period = Duration::from_millis((keepalive / 3).max(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reply = tokio::select! {
            _ = tick.tick() => Some(Message::Pong { nonce: 0 }),
            frame = f.next() => {
                let Some(Ok(frame)) = frame else { break };
                c.frames_in.fetch_add(1, Ordering::Relaxed);
                match frame {
                    Frame::Message(Message::Ping { nonce }) => Some(Message::Pong { nonce }),
                    Frame::Message(Message::Run { id, .. }) => {
                        c.runs.fetch_add(1, Ordering::Relaxed);
                        Some(finished(id, Some(0), None, None))
                    }
                    Frame::Message(Message::Interrupt { id }) => {
                        Some(finished(id, None, Some(Stopped::Interrupted), None))
                    }
                    Frame::Message(Message::Upload { id, .. })
                    | Frame::Message(Message::Download { id, .. }) => Some(finished(
                        id,
                        None,
                        None,
                        Some("the bench's simulated worker transfers no files".into()),
                    )),
                    _ => None,
                }
            }
        };
        if let Some(m) = reply {
            if f.send(Frame::Message(m)).await.is_err() {
                break;
            }
        }
    }
    c.connected.fetch_sub(1, Ordering::Relaxed);
}

fn finished(
    id: u64,
    exit_code: Option<i32>,
    stopped: Option<Stopped>,
    error: Option<String>,
) -> Message {
    Message::Finished {
        id,
        exit_code,
        signal: None,
        stopped,
        error,
        duration_ms: 0,
    }
}

/// The percentile `p` (0–100) of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn fleet(exe: &Path, a: &FleetArgs) -> Result<(), BenchError> {
    let dir = match &a.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("bbc-bench-fleet-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (workers, builders) = (a.workers.max(1), a.builders.max(1).min(a.workers.max(1)));
    let cfg = dir.join("master.kdl");
    std::fs::write(&cfg, config(workers, builders))?;
    let names: Vec<String> = (0..workers).map(|w| format!("f{w}")).collect();
    write_secrets(&dir, &names)?;
    let m = start_master(exe, &dir, &cfg, "fleet", false)?;
    let pid = m.proc.pid();
    let c = Client::of(&m)?;
    // The workers' own runtime: their CPU is this process's, not the
    // master's.
    let wrt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let counters = Arc::new(Counters::default());
    println!("## fleet: {workers} simulated workers, {builders} builders (one step each)");
    let t = Instant::now();
    for n in &names {
        let password = std::fs::read_to_string(dir.join("secrets").join(n))?;
        wrt.spawn(worker(
            m.workers_addr.clone(),
            n.clone(),
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
                m.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = t.elapsed();
    let rt = rt()?;
    rt.block_on(c.wait_workers(workers))?;
    let (rss, _) = mem_kib(pid);
    println!(
        "connected: {workers} workers in {:.2} s; master RSS {}",
        connect.as_secs_f64(),
        mb(rss)
    );

    // Idle: keepalives only.
    let cpu0 = cpu_s(pid);
    std::thread::sleep(Duration::from_secs(a.idle_secs));
    let idle_cpu = cpu_s(pid) - cpu0;
    let (rss, _) = mem_kib(pid);
    println!(
        "idle {} s: master CPU {:.2} s ({:.1} % of a core), RSS {}",
        a.idle_secs,
        idle_cpu,
        idle_cpu * 100.0 / a.idle_secs.max(1) as f64,
        mb(rss)
    );

    // Load: `rate` forces a second, spread over the builders, each sent
    // by its own task at its due time so a slow answer does not slow the
    // rate.
    let total = a.rate * a.secs;
    let sampler = Sampler::start(pid);
    let cpu0 = cpu_s(pid);
    let load_start = Instant::now();
    let sent: HashMap<u64, u64> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(total as usize);
        let start = tokio::time::Instant::now();
        for i in 0..total {
            let due = start + Duration::from_micros(i * 1_000_000 / a.rate.max(1));
            tokio::time::sleep_until(due).await;
            let c = c.clone();
            let b = format!("t{}", i as usize % builders);
            tasks.push(tokio::spawn(async move {
                let at = crate::run::wall_us();
                c.force(&b).await.map(|id| (id, at))
            }));
        }
        let mut sent = HashMap::new();
        for t in tasks {
            let (id, at) = t.await.map_err(|e| err(e.to_string()))??;
            sent.insert(id, at);
        }
        Ok::<_, BenchError>(sent)
    })?;
    let submitted_in = load_start.elapsed();
    // Polled slowly: each poll lists the whole fleet.
    rt.block_on(c.wait_idle(Duration::from_millis(250)))?;
    let load_wall = load_start.elapsed();
    let load_cpu = cpu_s(pid) - cpu0;
    let (peak_rss, threads) = sampler.peak();

    // The audit: every request complete, each built exactly once.
    let builds = rt.block_on(c.all("builds", 0))?;
    let mut built: HashMap<u64, u32> = HashMap::new();
    for b in &builds {
        if b["result"] == "retry" {
            continue;
        }
        for r in b["requests"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_u64() {
                *built.entry(r).or_default() += 1;
            }
        }
    }
    let lost = sent.keys().filter(|id| !built.contains_key(id)).count();
    let twice = built.values().filter(|n| **n > 1).count();
    let starts = crate::run::start_events(&m.log);
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            starts
                .get(id)
                .map(|s| s.saturating_sub(*at) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "load: {total} forces at {}/s over {:.1} s (all submitted in {:.1} s, all built in {:.1} s): {:.0} builds/s",
        a.rate,
        a.secs as f64,
        submitted_in.as_secs_f64(),
        load_wall.as_secs_f64(),
        built.len() as f64 / load_wall.as_secs_f64()
    );
    println!(
        "request → start: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} measured)",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 100.0),
        lat.len()
    );
    println!(
        "master: CPU {:.1} s for the load ({:.0} % of a core), peak RSS {}, {threads} threads; the workers ran {} commands",
        load_cpu,
        load_cpu * 100.0 / load_wall.as_secs_f64(),
        mb(peak_rss),
        counters.runs.load(Ordering::Relaxed)
    );
    println!("audit: {lost} requests never built, {twice} built more than once");
    let still = counters.connected.load(Ordering::Relaxed);
    println!("workers still connected at the end: {still} of {workers}");
    wrt.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
    if lost > 0 || twice > 0 {
        return Err(err(format!(
            "{lost} requests lost, {twice} built twice (see the master's log)"
        )));
    }
    Ok(())
}
