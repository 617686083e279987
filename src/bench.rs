//! `bbc bench check`: how long `bbc check` takes, and how much memory, on
//! generated configs of 100, 1,000 and 10,000 builders. Each size runs in a
//! fresh `bbc` process so that time and peak RSS are what a user sees.

use std::process::Command;
use std::time::Instant;

use crate::command_error::CommandError;

// `bbc bench run` (the runtime) lives beside this file; declared here so
// that main.rs need not change.
#[path = "bench_run.rs"]
pub mod run;

/// The benchmark shape: `builders` builders of 5 steps on 4 workers, a
/// single-branch scheduler per builder and one force scheduler naming all.
pub fn generate(builders: usize) -> String {
    let mut s = String::with_capacity(builders * 600);
    s.push_str("master {\n    title \"bench\"\n}\n");
    for w in 1..=4 {
        s.push_str(&format!(
            "worker \"w{w}\" password=(secret)\"w{w}\" max-builds=4\n"
        ));
    }
    for i in 0..builders {
        s.push_str(&format!(
            r#"builder "b-{i}" {{
    workers "w1" "w2" "w3" "w4"
    tags "t{t}"
    steps {{
        git repo="https://git.example.org/project-{i}.git" mode="incremental"
        compile "make -j4" name="build" halt-on-failure=#true
        test "make check" name="test" timeout="20m"
        shell "make lint" name="lint" warn-on-failure=#true flunk-on-failure=#false
        upload "out/b-{i}.tar.gz" to="artifacts/b-{i}/${{{{ prop.buildnumber }}}}.tar.gz"
    }}
}}
scheduler "sb-{i}" kind="single-branch" {{
    branch "main"
    builders "b-{i}"
}}
"#,
            t = i % 10
        ));
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for i in 0..builders {
        s.push_str(&format!(" \"b-{i}\""));
    }
    s.push_str("\n}\n");
    s
}

/// Peak resident set size of this process, in KiB (Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One measured run inside this process: prints `ms rss_kib`.
pub fn one(file: &str) -> Result<(), CommandError> {
    let start = Instant::now();
    let c = bbc_compiler::compile(file, &bbc_compiler::source::DiskSources);
    let elapsed = start.elapsed();
    if c.errors() > 0 || c.graph.is_none() {
        return Err(CommandError::Usage(format!(
            "benchmark config {file} does not compile"
        )));
    }
    println!(
        "{:.3} {}",
        elapsed.as_secs_f64() * 1000.0,
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

pub fn check(sizes: &[usize], runs: usize) -> Result<(), CommandError> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("bbc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("| builders | config size | check (median of {runs}) | whole process | peak RSS |");
    println!("|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let path = dir.join(format!("bench-{n}.kdl"));
        let text = generate(n);
        std::fs::write(&path, &text)?;
        let mut inner = Vec::new();
        let mut outer = Vec::new();
        let mut rss = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let out = Command::new(&exe)
                .args(["bench", "one", &path.to_string_lossy()])
                .output()?;
            outer.push(t.elapsed().as_secs_f64() * 1000.0);
            if !out.status.success() {
                return Err(CommandError::Usage(
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
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
        println!(
            "| {n} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} MB |",
            text.len() as f64 / 1e6,
            median(&mut inner),
            median(&mut outer),
            rss as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
