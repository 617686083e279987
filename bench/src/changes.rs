//! `bbc-bench changes`: changes through the webhook endpoint to builds.
//! (1) 1,000 changes POSTed to a json-webhook source → time until every
//! build request exists; (2) one change at a time on an idle master with no
//! tree-stable timer → latency from the POST to the build's start.
//! The master and two workers run as separate `bbc` processes on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bbc_testkit::Proc;

use crate::error::{err, BenchError};

const CONFIG: &str = r#"worker "w1" password=(secret)"w1" max-builds=8
worker "w2" password=(secret)"w2" max-builds=8
change-source "hook" kind="json-webhook"
scheduler "ci" kind="any-branch" {
    builders "b"
}
builder "b" {
    workers "w1" "w2"
    steps {
        shell "true"
    }
}
"#;

pub fn run(exe: &Path, changes: usize, samples: usize) -> Result<(), BenchError> {
    let dir = std::env::temp_dir().join(format!("bbc-bench-changes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("secrets"))?;
    for w in ["w1", "w2"] {
        std::fs::write(dir.join("secrets").join(w), format!("pw-{w}"))?;
        std::fs::write(dir.join(format!("{w}.pw")), format!("pw-{w}"))?;
    }
    std::fs::write(dir.join("master.kdl"), CONFIG)?;
    let mut cmd = Command::new(exe);
    bbc_testkit::master_args(&mut cmd, &dir.join("master.kdl"), &dir)
        .env("BBC_LOG", "warn")
        .stderr(Stdio::null());
    let started = bbc_testkit::spawn_announced(&mut cmd)?;
    let ports = started.ports();
    let line = started.first_line;
    let master = Proc(started.child);
    let Some(ports) = ports else {
        return Err(err(format!("unexpected master output: {line:?}")));
    };
    let (workers_addr, http) = (ports.workers, ports.http);
    let _workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|w| {
            let password = dir.join(format!("{w}.pw"));
            bbc_testkit::worker_args(&mut Command::new(exe), &workers_addr, w, &password, &dir)
                .env("BBC_LOG", "warn")
                .stderr(Stdio::null())
                .spawn()
                .map(Proc)
        })
        .collect::<Result<_, _>>()?;
    let rt = crate::api::rt()?;
    let result = rt.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://{http}");
        // Wait for both workers.
        loop {
            let v: serde_json::Value = c.get(format!("{base}/api/v1/workers")).send().await.map_err(err)?.json().await.map_err(err)?;
            if v["workers"].as_array().is_some_and(|w| w.iter().all(|x| x["connected"] == true)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // (2) latency on an idle master, first: one change at a time.
        let mut lat = Vec::new();
        for i in 0..samples {
            let t0 = bbc_runtime::master::now_ms();
            let body = serde_json::json!({"branch": "main", "revision": format!("lat{i}"), "author": "bench"});
            let r = c.post(format!("{base}/change_hook/hook")).json(&body).send().await.map_err(err)?;
            if !r.status().is_success() {
                return Err(err(format!("webhook refused: {}", r.text().await.unwrap_or_default())));
            }
            let started = loop {
                let v: serde_json::Value = c.get(format!("{base}/api/v1/builds?limit=1")).send().await.map_err(err)?.json().await.map_err(err)?;
                let b = &v["builds"][0];
                if b["properties"]["revision"] == format!("lat{i}").as_str() {
                    if let Some(s) = b["started_at"].as_i64() {
                        // Wait for it to end so the next sample starts idle.
                        if b["complete"] == true {
                            break s;
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            };
            lat.push((started - t0) as f64);
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        let median = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
        // (1) burst.
        let t = Instant::now();
        let before = count(&c, &base).await?;
        for i in 0..changes {
            let body = serde_json::json!({"branch": format!("b{}", i % 50), "revision": format!("r{i}"), "author": "bench", "files": ["src/lib.rs"]});
            let r = c.post(format!("{base}/change_hook/hook")).json(&body).send().await.map_err(err)?;
            if !r.status().is_success() {
                return Err(err(format!("webhook refused: {}", r.text().await.unwrap_or_default())));
            }
        }
        let posted = t.elapsed();
        loop {
            if count(&c, &base).await? >= before + changes {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let all = t.elapsed();
        Ok((median, lat.first().copied().unwrap_or(f64::NAN), posted, all))
    });
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
    let (median, best, posted, all) = result?;
    println!("| measurement | result |");
    println!("|---|---:|");
    println!("| webhook POST → build start, idle, median of {samples} | {median:.1} ms (best {best:.1} ms) |");
    println!(
        "| {changes} changes POSTed one by one | {:.0} ms ({:.0} changes/s) |",
        posted.as_secs_f64() * 1000.0,
        changes as f64 / posted.as_secs_f64()
    );
    println!(
        "| … until every build request exists | {:.0} ms |",
        all.as_secs_f64() * 1000.0
    );
    Ok(())
}

async fn count(c: &reqwest::Client, base: &str) -> Result<usize, BenchError> {
    // Requests are listed newest first; the newest id is the count.
    let v: serde_json::Value = c
        .get(format!("{base}/api/v1/requests?limit=1"))
        .send()
        .await
        .map_err(err)?
        .json()
        .await
        .map_err(err)?;
    Ok(v["requests"][0]["id"].as_u64().unwrap_or(0) as usize)
}
