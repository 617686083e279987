//! What Linux says about a process and the machine (`/proc`): memory, CPU
//! time, threads. Figures are the kernel's, so a benchmark measures a
//! process from outside without instrumenting it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A `Name:  value kB` field of a `/proc/<pid>/status` text, 0 when absent.
fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn status(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// Peak resident set size of this process, in KiB (0 when unknown).
pub fn peak_rss_kib() -> u64 {
    status_field(&status("self"), "VmHWM:")
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
pub fn mem_kib(pid: u32) -> (u64, u64) {
    let s = status(&pid.to_string());
    (status_field(&s, "VmRSS:"), status_field(&s, "VmHWM:"))
}

/// Samples a process's `VmRSS` and thread count every 5 ms until
/// [`Sampler::peak`]; the peak between two polls of the API would be missed.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut rss, mut threads) = (0, 0);
            let pid = pid.to_string();
            while !s2.load(Ordering::Relaxed) {
                let s = status(&pid);
                rss = rss.max(status_field(&s, "VmRSS:"));
                threads = threads.max(status_field(&s, "Threads:"));
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
    pub fn peak(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or((0, 0))
    }
}

/// Resets a process's `VmHWM` to its current RSS (Linux 4.0+).
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Busy fraction of the machine's CPUs (all processes) since `since`.
pub fn machine_busy(since: &[u64]) -> f64 {
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

/// The machine's CPU time so far, by kind (the first line of `/proc/stat`).
pub fn cpu_ticks() -> Vec<u64> {
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
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: fields count from after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    (tick(11) + tick(12)) / 100.0
}

/// CPU time (user + system), in seconds, of the children a process has
/// reaped (`cutime`, `cstime`): for a worker, its finished steps'
/// processes and, through their shell, everything the shell waited for.
pub fn reaped_children_cpu_s(pid: u32) -> f64 {
    let f = stat_fields(&pid.to_string());
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // cutime and cstime are fields 16 and 17 of the whole line.
    (tick(13) + tick(14)) / 100.0
}

/// The fields after the command name of `/proc/<pid>/stat` (the name may
/// contain spaces), from the state on.
fn stat_fields(pid: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(str::to_string).collect()
}

/// CPU time, in seconds, of every PostgreSQL server process on this
/// machine: each postmaster's own and its reaped children's (`cutime`,
/// `cstime`: backends that have exited) plus each live backend's. The
/// difference of two readings is the server's CPU in between, whoever
/// its clients were. `None` when no PostgreSQL runs here.
pub fn postgres_cpu_s() -> Option<f64> {
    let comm = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut total = 0.0;
    let mut found = false;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || comm(&pid) != "postgres" {
            continue;
        }
        let f = stat_fields(&pid);
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Field 4 of the whole line (the parent) is 1 here; utime, stime,
        // cutime and cstime are fields 14-17, 11-14 here.
        let parent = f.get(1).map_or(String::new(), |p| comm(p));
        total += tick(11) + tick(12);
        if parent != "postgres" {
            total += tick(13) + tick(14);
        }
        found = true;
    }
    found.then_some(total / 100.0)
}
