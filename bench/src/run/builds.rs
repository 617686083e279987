//! `run --only builds`: trivial builds one at a time, in a burst through
//! the API, and queued before the workers connect.

use std::path::Path;
use std::time::{Duration, Instant};

use super::args::RunArgs;
use super::master::{start_master, start_worker, write_secrets, Master};
use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{cpu_s, cpu_ticks, machine_busy, mem_kib, reset_peak, Sampler};
use crate::stats::{mb, summary};
use crate::workload::trivial_config;

/// Wall-clock microseconds since the epoch (comparable with the master's
/// `bbc_timing` events: same machine, same clock).
pub(crate) fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `build started` events from the master's log: request id → µs.
pub(crate) fn start_events(log: &Path) -> std::collections::HashMap<u64, u64> {
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

struct Phase {
    /// Request id → µs the client sent its POST.
    sent: std::collections::HashMap<u64, u64>,
}

pub fn builds(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let builders = a.builders.max(1);
    let config = dir.join("master.kdl");
    std::fs::write(&config, trivial_config(builders, a.max_builds.max(1)))?;
    write_secrets(dir, &["w1".into(), "w2".into()])?;
    let mut m = start_master(exe, dir, &config, "builds", a.tls)?;
    let mut w1 = start_worker(exe, dir, &m, "w1")?;
    let mut w2 = start_worker(exe, dir, &m, "w2")?;
    let c = Client::of(&m)?;
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
    rt.block_on(force_round_robin(&c, n, conc, builders))?;
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

/// Forces `n` builds over the builders `t0`…, `conc` at a time, each
/// force sent as soon as one of those before it is acknowledged.
pub(super) async fn force_round_robin(
    c: &Client,
    n: usize,
    conc: usize,
    builders: usize,
) -> Result<(), BenchError> {
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
    Ok(())
}

/// Joins futures without another dependency: they run concurrently in this
/// task.
pub(super) async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
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
