//! `bbc force`, `bbc rebuild`, `bbc sendchange` and `bbc login`: clients
//! of a running master's HTTP API (docs/api.md), over HTTPS with the trust
//! `crate::https` sets up.

use serde_json::{json, Value};

use crate::command_error::CommandError;
use crate::follow::follow;
use crate::https::{unreachable, TrustOpts};
use crate::output::OutFormat;

pub fn default_url() -> String {
    std::env::var("BBC_URL").unwrap_or_else(|_| "http://127.0.0.1:8010".into())
}

pub(crate) fn rt() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(e.to_string()))
}

/// The file `bbc login` keeps tokens in: one `URL TOKEN` line per master,
/// readable by its owner only.
fn tokens_file() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config")))?;
    Some(base.join("bbc").join("tokens"))
}

/// The token for the master at `url`: `$BBC_TOKEN`, else the one `bbc
/// login` stored for it.
fn token_for(url: &str) -> Option<String> {
    if let Ok(t) = std::env::var("BBC_TOKEN") {
        if !t.trim().is_empty() {
            return Some(t.trim().to_string());
        }
    }
    let text = std::fs::read_to_string(tokens_file()?).ok()?;
    let url = url.trim_end_matches('/');
    text.lines().find_map(|l| {
        let (u, t) = l.split_once(' ')?;
        (u == url).then(|| t.trim().to_string())
    })
}

/// A master's base URL (scheme, host, port) from a request URL.
fn origin(u: &reqwest::Url) -> String {
    u.origin().ascii_serialization()
}

pub(crate) async fn call(req: reqwest::RequestBuilder) -> Result<Value, CommandError> {
    // A master with users, or a control token, wants a token for forcing
    // builds and submitting changes (docs/operations.md, "Access").
    let (client, request) = req.build_split();
    let mut request = request.map_err(|e| CommandError::Usage(e.to_string()))?;
    if let Some(t) = token_for(&origin(request.url())) {
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| CommandError::Usage("the token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, v);
    }
    let base = origin(request.url());
    let r = client
        .execute(request)
        .await
        .map_err(|e| unreachable(&base, &e))?;
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
    pub priority: Option<i64>,
    pub wait: bool,
    pub format: OutFormat,
    pub trust: &'a TrustOpts,
}

pub fn force(a: ForceArgs) -> Result<(), CommandError> {
    let props = parse_props(a.props)?;
    let c = a.trust.client()?;
    rt()?.block_on(async {
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
        if let Some(p) = a.priority {
            body["priority"] = json!(p);
        }
        let url = format!(
            "{}/api/v1/builders/{}/force",
            a.url.trim_end_matches('/'),
            a.builder
        );
        let v = call(c.post(url).json(&body)).await?;
        let set = v["buildset"]["id"].as_u64().unwrap_or(0);
        let req = v["requests"][0]["id"].as_u64().unwrap_or(0);
        let json = a.format == OutFormat::Json;
        if !json {
            println!(
                "queued build request {req} (build set {set}) for {}",
                a.builder
            );
        }
        if a.wait {
            follow(&c, a.url, set, a.builder, a.format).await
        } else {
            if json {
                println!(
                    "{}",
                    json!({"buildset": v["buildset"], "requests": v["requests"]})
                );
            }
            Ok(())
        }
    })
}

/// `bbc rebuild BUILD-ID`: a new request with the build's source and
/// properties (`POST /api/v1/builds/{id}/rebuild`).
pub fn rebuild(url: &str, build: u64, wait: bool, trust: &TrustOpts) -> Result<(), CommandError> {
    let c = trust.client()?;
    rt()?.block_on(async {
        let base = url.trim_end_matches('/');
        let v = call(c.post(format!("{base}/api/v1/builds/{build}/rebuild"))).await?;
        let set = v["buildset"]["id"].as_u64().unwrap_or(0);
        let req = &v["requests"][0];
        let builder = req["builder"].as_str().unwrap_or("?").to_string();
        println!(
            "queued build request {} (build set {set}) for {builder}: {}",
            req["id"],
            v["buildset"]["reason"].as_str().unwrap_or("rebuild")
        );
        if wait {
            follow(&c, url, set, &builder, OutFormat::Human).await
        } else {
            Ok(())
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
    pub trust: &'a TrustOpts,
}

pub fn sendchange(a: ChangeArgs) -> Result<(), CommandError> {
    let props = parse_props(a.props)?;
    let c = a.trust.client()?;
    rt()?.block_on(async {
        let body = json!({
            "repository": a.repository, "branch": a.branch, "revision": a.revision,
            "author": a.who, "comments": a.comments, "files": a.files, "properties": props,
        });
        let url = format!("{}/api/v1/changes", a.url.trim_end_matches('/'));
        let v = call(c.post(url).json(&body)).await?;
        println!("change {} stored", v["change"]["id"]);
        Ok(())
    })
}

/// `bbc login`: checks a token with the master (`GET /api/v1/whoami`) and
/// stores it for that master's URL, for `bbc force`, `sendchange` and
/// `status`. The token comes from `--token-file` or standard input, never
/// the command line (where `ps` would show it).
pub fn login(url: &str, token_file: Option<&str>, trust: &TrustOpts) -> Result<(), CommandError> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| CommandError::Usage(format!("cannot read {f}: {e}")))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| CommandError::Usage(format!("reading the token: {e}")))?;
            line
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(CommandError::Usage(
            "the token is empty or holds spaces; give the one your master's admin made".into(),
        ));
    }
    let base = reqwest::Url::parse(url)
        .map(|u| origin(&u))
        .map_err(|e| CommandError::Usage(format!("{url}: {e}")))?;
    let client = trust.client()?;
    let who = rt()?.block_on(async {
        let r = client
            .get(format!("{base}/api/v1/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| unreachable(&base, &e))?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("no details");
            return Err(CommandError::Usage(format!(
                "the master refused the token ({status}): {msg}"
            )));
        }
        Ok(body)
    })?;
    let path = tokens_file()
        .ok_or_else(|| CommandError::Usage("neither $XDG_CONFIG_HOME nor $HOME is set".into()))?;
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| l.split_once(' ').map(|(u, _)| u) != Some(base.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("{base} {token}\n"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CommandError::Usage(format!("creating {}: {e}", dir.display())))?;
    }
    bbc_runtime::tls::write_private(&path, text.as_bytes()).map_err(CommandError::Usage)?;
    println!(
        "logged in to {base} as {} (token stored in {})",
        who["caller"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}
