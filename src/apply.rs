//! `bbc apply CONFIG`: compiles a config, shows what it changes on a running
//! master (the entity-level diff of `bbc diff`, against the master's running
//! graph), and applies it through `POST /api/v1/config`.
//!
//! Nothing is sent when the config has errors (printed as `bbc check`
//! prints them, exit 1), when there is nothing to change, with `--dry-run`,
//! or when the change is not confirmed (a terminal asks; elsewhere `--yes`
//! is required). The POST carries `If-Match` with the hash of the config
//! the plan was made against, so a config applied by someone else in
//! between makes the master refuse instead of silently undoing it.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use bbc_compiler::graph::Graph;
use bbc_compiler::source::DiskSources;
use bbc_runtime::master::apply::{config_hash, redact_credentials, ApplyReport};
use serde_json::{json, Value};

use crate::command_error::CommandError;

pub struct ApplyArgs<'a> {
    pub config: &'a str,
    pub master: &'a str,
    pub token_file: Option<&'a str>,
    pub dry_run: bool,
    pub yes: bool,
    pub json: bool,
    pub trust: &'a crate::https::TrustOpts,
}

/// The admin token: `--token-file`, else `$BBC_ADMIN_TOKEN`.
fn token(file: Option<&str>) -> Result<String, CommandError> {
    let t = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CommandError::Usage(format!("cannot read the token file {f}: {e}")))?,
        None => std::env::var("BBC_ADMIN_TOKEN").map_err(|_| {
            CommandError::Usage(
                "no admin token: pass --token-file FILE or set BBC_ADMIN_TOKEN \
                 (the value of the master's secret `bbc-admin-token`)"
                    .into(),
            )
        })?,
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(CommandError::Usage("the admin token is empty".into()));
    }
    Ok(t)
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The master's error message, from its JSON error body.
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(500).collect())
}

/// Asks on the terminal; false unless the answer is yes.
fn confirm(master: &str) -> Result<bool, CommandError> {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "Apply these changes to {master}? [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

fn print_report(r: &ApplyReport) {
    if !r.changed {
        println!(
            "nothing changed: the master already ran config {} (secrets were read again)",
            short(&r.hash)
        );
    } else {
        println!(
            "applied: the master runs config {} (was {}), in {:.1} ms",
            short(&r.hash),
            short(&r.previous_hash),
            r.duration_us as f64 / 1000.0
        );
        for e in &r.entities {
            let mark = match e.change.as_str() {
                "added" => '+',
                "removed" => '-',
                _ => '~',
            };
            println!("  {mark} {} {}: {}", e.kind, e.name, e.effect);
        }
    }
    // Several masters on one store: each one's answer (the config is
    // applied even when one did not answer in time).
    if !r.masters.is_empty() {
        let applied = r.masters.iter().filter(|m| m.state == "applied").count();
        println!("masters: {applied} of {} run it", r.masters.len());
        for m in &r.masters {
            let who = if m.this {
                format!("{} (this one)", m.id)
            } else {
                m.id.clone()
            };
            match (m.state.as_str(), &m.error) {
                ("applied", _) => println!("  {who}: applied"),
                ("failed", e) => println!(
                    "  {who}: FAILED, keeps its config: {}",
                    e.as_deref().unwrap_or("")
                ),
                _ => println!("  {who}: no answer in time (it may still apply it)"),
            }
        }
    }
    if let Some(n) = &r.not_shared {
        println!("other masters: {n}");
    }
    if !r.restart_needed.is_empty() {
        println!("needs a restart of the master:");
        for n in &r.restart_needed {
            println!("  {n}");
        }
    }
}

pub fn apply(a: ApplyArgs) -> Result<(), CommandError> {
    let c = bbc_compiler::compile(a.config, &DiskSources);
    if !c.diagnostics.is_empty() {
        if a.json && c.errors() > 0 {
            print!("{}", crate::output::check_json(&c, a.config));
        } else {
            eprint!(
                "{}",
                crate::output::check_human(&c, a.config, crate::output::stderr_options())
            );
        }
    }
    if crate::output::is_io_error(&c) {
        return Err(CommandError::Usage(format!("cannot read {}", a.config)));
    }
    let Some(new) = c.graph else {
        return Err(CommandError::Invalid);
    };
    let token = if a.dry_run {
        None
    } else {
        Some(token(a.token_file)?)
    };
    let base = a.master.trim_end_matches('/').to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let client = a
        .trust
        .builder()?
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let (running_hash, running_graph) = rt.block_on(fetch_running(&client, &base))?;
    let new_hash = config_hash(&new);
    // The master masks plain-text credentials; so does the plan.
    let mut shown = new.clone();
    redact_credentials(&mut shown);
    let changes = crate::diff::diff(&running_graph, &shown);
    let nothing = new_hash == running_hash;
    let mut doc = json!({
        "version": 1,
        "master": base,
        "running": running_hash,
        "config": new_hash,
        "changes": changes,
        "applied": false,
        "report": null,
    });
    if !a.json {
        if nothing {
            println!(
                "nothing to change: {base} already runs this config ({})",
                short(&new_hash)
            );
        } else {
            println!(
                "plan for {base} (running config {} → {}):",
                short(&running_hash),
                short(&new_hash)
            );
            print!("{}", crate::diff::human(&changes));
        }
    }
    let finish = |doc: &Value| {
        if a.json {
            println!("{}", serde_json::to_string_pretty(doc).unwrap_or_default());
        }
    };
    if nothing {
        finish(&doc);
        return Ok(());
    }
    if a.dry_run {
        if !a.json {
            println!("dry run: nothing applied");
        }
        finish(&doc);
        return Ok(());
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CommandError::Usage(
                "not applied: confirmation needed, and standard input is not a terminal; \
                 pass --yes to apply (or --dry-run to only show the plan)"
                    .into(),
            ));
        }
        if !confirm(&base)? {
            return Err(CommandError::Usage("not applied".into()));
        }
    }
    let body = new.to_json();
    let token = token.unwrap_or_default();
    let report = rt.block_on(post(&client, &base, &token, &running_hash, body))?;
    if a.json {
        doc["applied"] = json!(true);
        doc["report"] = serde_json::to_value(&report).unwrap_or(Value::Null);
        finish(&doc);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn unreachable(base: &str) -> impl Fn(reqwest::Error) -> CommandError + '_ {
    move |e| crate::https::unreachable(base, &e)
}

/// The running config's hash and graph (`GET /api/v1/config`).
async fn fetch_running(
    client: &reqwest::Client,
    base: &str,
) -> Result<(String, Graph), CommandError> {
    let r = client
        .get(format!("{base}/api/v1/config"))
        .send()
        .await
        .map_err(unreachable(base))?;
    let status = r.status();
    let body = r.text().await.map_err(unreachable(base))?;
    if !status.is_success() {
        return Err(CommandError::Usage(format!(
            "the master at {base} did not give its config ({status}): {}",
            message(&body)
        )));
    }
    #[derive(serde::Deserialize)]
    struct Running {
        hash: String,
        graph: Graph,
    }
    // Megabytes for a large config: parsed straight into the graph, off
    // the async thread.
    let r = tokio::task::spawn_blocking(move || serde_json::from_str::<Running>(&body))
        .await
        .map_err(|e| CommandError::Usage(e.to_string()))?
        .map_err(|e| {
            CommandError::Usage(format!(
                "cannot read the master's running config (another bbc version?): {e}"
            ))
        })?;
    Ok((r.hash, r.graph))
}

/// `POST /api/v1/config`; the master's report.
async fn post(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    running_hash: &str,
    body: String,
) -> Result<ApplyReport, CommandError> {
    let r = client
        .post(format!("{base}/api/v1/config"))
        .header("authorization", format!("Bearer {token}"))
        .header("if-match", format!("\"{running_hash}\""))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(unreachable(base))?;
    let status = r.status();
    let text = r.text().await.map_err(unreachable(base))?;
    if !status.is_success() {
        let msg = format!(
            "the master refused the config ({status}): {}",
            message(&text)
        );
        // 400: this config cannot run on that master (say, a secret it
        // lacks): the input is wrong. Anything else: usage or transport.
        if status == reqwest::StatusCode::BAD_REQUEST {
            eprintln!("error: {msg}");
            return Err(CommandError::Invalid);
        }
        return Err(CommandError::Usage(msg));
    }
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::from_value(v["report"].clone()).ok())
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "the master applied the config but its report is unreadable: {}",
                text.chars().take(500).collect::<String>()
            ))
        })
}
