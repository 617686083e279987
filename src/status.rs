//! `bbc status`: each builder with its last build (number, result, when,
//! why), the running builds with their ETA, the workers — for people, or
//! one JSON document (`--format json`) holding the API's own objects.

use serde_json::{json, Value};

use crate::client::{call, rt};
use crate::command_error::CommandError;
use crate::follow::origin_text;
use crate::https::TrustOpts;
use crate::output::OutFormat;

pub fn status(url: &str, format: OutFormat, trust: &TrustOpts) -> Result<(), CommandError> {
    let c = trust.client()?;
    rt()?.block_on(async {
        let base = url.trim_end_matches('/');
        let builders = call(
            c.get(format!("{base}/api/v1/builders"))
                .query(&[("last_build", "true")]),
        )
        .await?;
        let running = call(
            c.get(format!("{base}/api/v1/builds"))
                .query(&[("running", "true")]),
        )
        .await?;
        let workers = call(c.get(format!("{base}/api/v1/workers"))).await?;
        if format == OutFormat::Json {
            println!(
                "{}",
                json!({
                    "builders": builders["builders"],
                    "running": running["builds"],
                    "workers": workers["workers"],
                })
            );
            return Ok(());
        }
        let now = bbc_runtime::master::now_ms();
        println!("builders:");
        for b in builders["builders"].as_array().into_iter().flatten() {
            println!(
                "  {}: {}",
                b["name"].as_str().unwrap_or("?"),
                last_build(&b["last_build"], now)
            );
        }
        println!("running builds:");
        let list = running["builds"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("  (none)");
        }
        for b in list {
            println!(
                "  {} #{} on {}: {} ({})",
                b["builder"].as_str().unwrap_or("?"),
                b["number"],
                b["worker"].as_str().unwrap_or("?"),
                b["state_string"].as_str().unwrap_or(""),
                fmt_eta(&b["eta"], now)
            );
        }
        println!("workers:");
        for w in workers["workers"].as_array().into_iter().flatten() {
            println!(
                "  {}: {}",
                w["name"].as_str().unwrap_or("?"),
                w["state"].as_str().unwrap_or("?")
            );
        }
        Ok(())
    })
}

/// "#12 success, finished 3m ago: force (main @ 1a2b3c4d5e)", "#13
/// running, started 20s ago", or "no builds yet".
fn last_build(b: &Value, now: i64) -> String {
    if b.is_null() {
        return "no builds yet".into();
    }
    let (what, when) = match (b["result"].as_str(), b["finished_at"].as_i64()) {
        (Some(r), Some(t)) => (r, format!("finished {}", ago(now - t))),
        _ => (
            "running",
            format!(
                "started {}",
                ago(now - b["started_at"].as_i64().unwrap_or(now))
            ),
        ),
    };
    format!(
        "#{} {what}, {when}{}",
        b["number"],
        origin_text(&b["origin"])
    )
}

/// A duration in the past, in its largest whole unit.
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn fmt_eta(eta: &Value, now: i64) -> String {
    match eta.as_i64() {
        Some(t) => {
            let left = (t - now) / 1000;
            if left > 0 {
                format!("ETA {left}s")
            } else {
                "overdue".into()
            }
        }
        None => "no ETA yet".into(),
    }
}
