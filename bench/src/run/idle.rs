//! `run --only idle`: how long a master with many builders takes to start,
//! and its memory when idle.

use std::path::Path;
use std::time::Duration;

use super::args::RunArgs;
use super::master::{start_master, write_secrets};
use crate::error::BenchError;
use crate::procfs::mem_kib;
use crate::stats::{mb, median};
use crate::workload::generate;

pub fn idle(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
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
        let mut m = start_master(exe, dir, &config, &format!("idle-{i}"), false)?;
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
