//! `bbc-bench check`: how long `bbc check` takes, and how much memory, on
//! generated configs of 100, 1,000 and 10,000 builders. Each size runs in a
//! fresh process (`bbc-bench one`, the same compiler and allocator as
//! `bbc`) so that time and peak RSS are what a user sees.

use std::process::Command;
use std::time::Instant;

use crate::error::{err, BenchError};
use crate::procfs::peak_rss_kib;
use crate::stats::median;
use crate::workload::{generate, generate_patterns};

/// One measured run inside this process: prints `ms rss_kib`.
pub fn one(file: &str) -> Result<(), BenchError> {
    let start = Instant::now();
    let c = bbc_compiler::compile(file, &bbc_compiler::source::DiskSources);
    let elapsed = start.elapsed();
    if c.errors() > 0 || c.graph.is_none() {
        return Err(err(format!("benchmark config {file} does not compile")));
    }
    println!("{:.3} {}", elapsed.as_secs_f64() * 1000.0, peak_rss_kib());
    Ok(())
}

/// The table of docs/perf.md: per size, the compile time measured inside
/// a fresh process, the whole process as a user waits for it, peak RSS.
pub fn check(sizes: &[usize], runs: usize) -> Result<(), BenchError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("bbc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("| builders | config size | check (median of {runs}) | whole process | peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let m = measure(&exe, &dir, &format!("bench-{n}"), &generate(n), runs)?;
        println!("| {n} | {m} |");
    }
    // Issue 12's shape: the same config with and without 12 shared
    // warning-pattern regexes, whose ratio is the cost of the patterns.
    println!();
    println!("| 1000 builders × 7 steps | config size | check (median of {runs}) | whole process | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for (label, patterns) in [
        ("no warning-pattern", false),
        ("12 shared ~600-char warning-patterns", true),
    ] {
        let text = generate_patterns(1000, patterns);
        let m = measure(&exe, &dir, &format!("patterns-{patterns}"), &text, runs)?;
        println!("| {label} | {m} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs `bbc-bench one` on `text` `runs` times; the table cells after the
/// first column.
fn measure(
    exe: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    text: &str,
    runs: usize,
) -> Result<String, BenchError> {
    let path = dir.join(format!("{name}.kdl"));
    std::fs::write(&path, text)?;
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(exe)
            .args(["one", &path.to_string_lossy()])
            .output()?;
        outer.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr)));
        }
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut parts = line.split_whitespace();
        inner.push(
            parts
                .next()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(f64::NAN),
        );
        rss = rss.max(
            parts
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
        );
    }
    Ok(format!(
        "{:.1} MB | {:.1} ms | {:.1} ms | {:.1} MB",
        text.len() as f64 / 1e6,
        median(&mut inner),
        median(&mut outer),
        rss as f64 / 1024.0
    ))
}
