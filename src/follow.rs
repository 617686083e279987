//! `bbc force --wait` and `bbc rebuild --wait`: follow a build set's
//! (first) request to its build's end, printing each step as it starts
//! and finishes, and naming the build by its builder's number ("g #12"),
//! as the web UI does. The exit status says whether it succeeded.
//!
//! It polls the API (`GET /api/v1/requests?buildset=`, then
//! `GET /api/v1/builds/{id}`) rather than reading the event stream: a
//! poll sees the state the store holds, so a step that started and
//! finished between two polls is still printed, in order, and a dropped
//! connection costs one poll, not a missed event.

use std::time::Duration;

use serde_json::{json, Value};

use crate::client::call;
use crate::command_error::CommandError;
use crate::output::OutFormat;

/// Between polls: short enough to feel live, long enough to cost the
/// master nothing.
const POLL: Duration = Duration::from_millis(200);

/// What of a step has been printed already.
#[derive(Clone, Copy, Default, PartialEq)]
enum Seen {
    #[default]
    Nothing,
    Started,
    Finished,
}

pub async fn follow(
    c: &reqwest::Client,
    url: &str,
    set: u64,
    builder: &str,
    format: OutFormat,
) -> Result<(), CommandError> {
    let base = url.trim_end_matches('/').to_string();
    let human = format == OutFormat::Human;
    let mut build: Option<u64> = None;
    let mut seen: Vec<Seen> = Vec::new();
    loop {
        let r = call(
            c.get(format!("{base}/api/v1/requests"))
                .query(&[("buildset", set.to_string())]),
        )
        .await?;
        let rq = &r["requests"][0];
        let done = matches!(rq["state"].as_str(), Some("complete" | "cancelled"));
        if let Some(id) = rq["build"].as_u64() {
            // A retried build gets a new one: follow the newest.
            if build != Some(id) {
                build = Some(id);
                seen.clear();
            }
            let b = call(c.get(format!("{base}/api/v1/builds/{id}"))).await?;
            let b = &b["build"];
            if human {
                print_progress(b, builder, &mut seen);
            }
            if done {
                return finish(rq, Some(b), builder, set, format);
            }
        } else if done {
            return finish(rq, None, builder, set, format);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// "g #3" — the name people see in the web UI.
fn title(b: &Value, builder: &str) -> String {
    format!(
        "{} #{}",
        b["builder"].as_str().unwrap_or(builder),
        b["number"]
    )
}

fn print_progress(b: &Value, builder: &str, seen: &mut Vec<Seen>) {
    let name = title(b, builder);
    if seen.is_empty() {
        // The first sight of the build: its start line.
        println!(
            "{name} started on {} (build id {}){}",
            b["worker"].as_str().unwrap_or("?"),
            b["id"],
            origin_text(&b["origin"])
        );
        seen.push(Seen::Nothing); // slot 0 marks "announced"
    }
    for st in b["steps"].as_array().into_iter().flatten() {
        if st["hidden"].as_bool() == Some(true) {
            continue;
        }
        let i = st["index"].as_u64().unwrap_or(0) as usize + 1;
        if seen.len() <= i {
            seen.resize(i + 1, Seen::Nothing);
        }
        let step = st["name"].as_str().unwrap_or("?");
        let started = st["started_at"].as_i64();
        let finished = st["finished_at"].as_i64();
        if seen[i] == Seen::Nothing && started.is_some() {
            println!("{name}: step {step} started");
            seen[i] = Seen::Started;
        }
        if seen[i] == Seen::Started {
            if let (Some(a), Some(e)) = (started, finished) {
                let result = st["result"].as_str().unwrap_or("?");
                println!("{name}: step {step} {result} ({})", secs(e - a));
                seen[i] = Seen::Finished;
            }
        }
    }
}

/// ", forced by alice: because (main @ 1a2b3c4)" — the reason and source.
pub fn origin_text(o: &Value) -> String {
    let reason = o["reason"].as_str().unwrap_or("");
    let branch = o["branch"].as_str().unwrap_or("");
    let rev = o["got_revision"]
        .as_str()
        .or(o["revision"].as_str())
        .unwrap_or("");
    let mut out = String::new();
    if !reason.is_empty() {
        out.push_str(": ");
        out.push_str(reason);
    }
    match (branch.is_empty(), rev.is_empty()) {
        (true, true) => {}
        (false, true) => out.push_str(&format!(" ({branch})")),
        (true, false) => out.push_str(&format!(" (@ {})", short(rev))),
        (false, false) => out.push_str(&format!(" ({branch} @ {})", short(rev))),
    }
    out
}

/// A revision as people read it: the first 10 characters of a hash.
pub fn short(rev: &str) -> &str {
    rev.get(..10).unwrap_or(rev)
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms.max(0) as f64 / 1000.0)
}

fn finish(
    rq: &Value,
    b: Option<&Value>,
    builder: &str,
    set: u64,
    format: OutFormat,
) -> Result<(), CommandError> {
    let result = rq["result"].as_str().unwrap_or("cancelled").to_string();
    match format {
        OutFormat::Human => match b {
            Some(b) => println!("{}: {result}", title(b, builder)),
            None => println!("{builder}: {result} (no build ran)"),
        },
        OutFormat::Json => println!(
            "{}",
            json!({"buildset": set, "result": result, "build": b.cloned()})
        ),
    }
    if result == "success" || result == "warnings" {
        Ok(())
    } else {
        Err(CommandError::Invalid)
    }
}
