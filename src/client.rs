//! `bbc force`, `bbc sendchange` and `bbc status`: clients of a running
//! master's HTTP API (docs/api.md).

use std::time::Duration;

use serde_json::{json, Value};

use crate::command_error::CommandError;

pub fn default_url() -> String {
    std::env::var("BBC_URL").unwrap_or_else(|_| "http://127.0.0.1:8010".into())
}

fn rt() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))
}

async fn call(req: reqwest::RequestBuilder) -> Result<Value, CommandError> {
    // A master with a control token wants it for forcing builds and
    // submitting changes (docs/operations.md, "Access").
    let req = match std::env::var("BBC_TOKEN") {
        Ok(t) if !t.trim().is_empty() => req.bearer_auth(t.trim()),
        _ => req,
    };
    let r = req
        .send()
        .await
        .map_err(|e| CommandError::Usage(format!("cannot reach the master: {e}")))?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(body)
    } else {
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("no details")
            .to_string();
        Err(CommandError::Usage(format!(
            "the master refused ({status}): {msg}"
        )))
    }
}

/// `key=value` pairs; values that look like JSON literals (numbers,
/// booleans) are sent as such and checked by the master against the
/// parameter's type.
fn parse_props(props: &[String]) -> Result<serde_json::Map<String, Value>, CommandError> {
    let mut m = serde_json::Map::new();
    for p in props {
        let Some((k, v)) = p.split_once('=') else {
            return Err(CommandError::Usage(format!(
                "--prop takes NAME=VALUE, got `{p}`"
            )));
        };
        let val = match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(v.to_string())),
        };
        m.insert(k.to_string(), val);
    }
    Ok(m)
}

pub struct ForceArgs<'a> {
    pub url: &'a str,
    pub builder: &'a str,
    pub props: &'a [String],
    pub reason: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub scheduler: Option<&'a str>,
    pub wait: bool,
}

pub fn force(a: ForceArgs) -> Result<(), CommandError> {
    let props = parse_props(a.props)?;
    rt()?.block_on(async {
        let c = reqwest::Client::new();
        let mut body = json!({"properties": props});
        for (k, v) in [
            ("reason", a.reason),
            ("branch", a.branch),
            ("revision", a.revision),
            ("scheduler", a.scheduler),
        ] {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        let url = format!(
            "{}/api/v1/builders/{}/force",
            a.url.trim_end_matches('/'),
            a.builder
        );
        let v = call(c.post(url).json(&body)).await?;
        let set = v["buildset"]["id"].as_u64().unwrap_or(0);
        let req = v["requests"][0]["id"].as_u64().unwrap_or(0);
        println!(
            "queued build request {req} (build set {set}) for {}",
            a.builder
        );
        if !a.wait {
            return Ok(());
        }
        // Follow the request to its build's end.
        let base = a.url.trim_end_matches('/').to_string();
        let mut announced = None;
        loop {
            let r = call(
                c.get(format!("{base}/api/v1/requests"))
                    .query(&[("buildset", set.to_string())]),
            )
            .await?;
            let rq = &r["requests"][0];
            if let (Some(b), None) = (rq["build"].as_u64(), announced) {
                println!("build {b} started");
                announced = Some(b);
            }
            match rq["state"].as_str() {
                Some("complete") | Some("cancelled") => {
                    let result = rq["result"].as_str().unwrap_or("cancelled").to_string();
                    println!("{}: {result}", a.builder);
                    return if result == "success" || result == "warnings" {
                        Ok(())
                    } else {
                        Err(CommandError::Invalid)
                    };
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
}

pub struct ChangeArgs<'a> {
    pub url: &'a str,
    pub repository: &'a str,
    pub branch: &'a str,
    pub revision: &'a str,
    pub who: &'a str,
    pub comments: &'a str,
    pub files: &'a [String],
    pub props: &'a [String],
}

pub fn sendchange(a: ChangeArgs) -> Result<(), CommandError> {
    let props = parse_props(a.props)?;
    rt()?.block_on(async {
        let body = json!({
            "repository": a.repository, "branch": a.branch, "revision": a.revision,
            "author": a.who, "comments": a.comments, "files": a.files, "properties": props,
        });
        let url = format!("{}/api/v1/changes", a.url.trim_end_matches('/'));
        let v = call(reqwest::Client::new().post(url).json(&body)).await?;
        println!("change {} stored", v["change"]["id"]);
        Ok(())
    })
}

fn fmt_eta(eta: &Value) -> String {
    match eta.as_i64() {
        Some(t) => {
            let left = (t - bbc_runtime::master::now_ms()) / 1000;
            if left > 0 {
                format!("ETA {left}s")
            } else {
                "overdue".into()
            }
        }
        None => "no ETA yet".into(),
    }
}

pub fn status(url: &str) -> Result<(), CommandError> {
    rt()?.block_on(async {
        let c = reqwest::Client::new();
        let base = url.trim_end_matches('/');
        let builders = call(c.get(format!("{base}/api/v1/builders"))).await?;
        let running = call(
            c.get(format!("{base}/api/v1/builds"))
                .query(&[("running", "true")]),
        )
        .await?;
        let workers = call(c.get(format!("{base}/api/v1/workers"))).await?;
        println!("builders:");
        for b in builders["builders"].as_array().into_iter().flatten() {
            println!("  {}", b["name"].as_str().unwrap_or("?"));
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
                fmt_eta(&b["eta"])
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
