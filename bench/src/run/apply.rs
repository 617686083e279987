//! `run --only apply`: hot reload of a master with many builders, through
//! the API and through the `bbc apply` command.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::args::RunArgs;
use super::master::{start_master, write_secrets};
use crate::api::{rt, Client};
use crate::error::{err, BenchError};
use crate::procfs::mem_kib;
use crate::stats::{mb, median};
use crate::workload::generate;

fn compile_json(path: &Path) -> Result<String, BenchError> {
    let c = bbc_compiler::compile(&path.to_string_lossy(), &bbc_compiler::source::DiskSources);
    c.graph
        .map(|g| g.to_json())
        .ok_or_else(|| err(format!("{} does not compile", path.display())))
}

/// Hot reload of the master running the `bbc-bench check` config shape.
pub fn apply(exe: &Path, dir: &Path, a: &RunArgs) -> Result<(), BenchError> {
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
    let mut m = start_master(exe, dir, &config, "apply", false)?;
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
