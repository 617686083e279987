//! `run --only log`: one step printing many megabytes: how fast the
//! master stores a log and how much memory that takes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::args::RunArgs;
use super::master::{start_master, start_worker, write_secrets};
use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::{
    cpu_s, cpu_ticks, machine_busy, mem_kib, reaped_children_cpu_s, reset_peak, Sampler,
};
use crate::stats::mb;

pub fn log(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
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
    let mut m = start_master(exe, dir, &config, "log", a.tls)?;
    let w1 = start_worker(exe, dir, &m, "w1")?;
    let c = Client::of(&m)?;
    let rt = rt()?;
    rt.block_on(c.wait_workers(1))?;
    let pid = m.proc.pid();
    let (rss0, hwm0) = mem_kib(pid);
    let cpu0 = cpu_s(pid);
    // The worker's too: it reads the pipe and (with --tls) encrypts.
    let worker_cpu0 = cpu_s(w1.pid());
    // And the step's (`sh`, `yes`, `head`), once the worker has reaped
    // them: on a machine with few cores the log's MB/s follows the sum.
    let step_cpu0 = reaped_children_cpu_s(w1.pid());
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
    let worker_cpu = cpu_s(w1.pid()) - worker_cpu0;
    let step_cpu = reaped_children_cpu_s(w1.pid()) - step_cpu0;
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
    let per_mb = |s: f64| s * 1000.0 / (len as f64 / 1e6).max(1e-9);
    println!(
        "- master CPU {:.2} s ({:.2} ms per MB), worker CPU {:.2} s ({:.2} ms per MB), machine {:.0}% busy; worker peak RSS {}",
        cpu,
        per_mb(cpu),
        worker_cpu,
        per_mb(worker_cpu),
        busy * 100.0,
        mb(worker_hwm)
    );
    println!(
        "- the step's processes (sh, yes, head) CPU {:.2} s ({:.2} ms per MB); master, worker and step together {:.2} ms per MB",
        step_cpu,
        per_mb(step_cpu),
        per_mb(cpu + worker_cpu + step_cpu)
    );
    m.proc.stop();
    drop(w1);
    Ok(())
}
