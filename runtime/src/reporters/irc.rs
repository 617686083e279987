//! IRC (`kind="irc"`): a minimal client that stays connected while its
//! reporter exists. It registers (PASS when a password is set, NICK, USER;
//! another nick with `_` appended when the server says the nick is taken),
//! joins the channels, answers PINGs, and says one line per reported build
//! in every channel. A lost connection is made again with a back-off (2 s
//! doubling up to 5 min); reports made meanwhile wait in a small queue.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{AnyDelimiterCodec, Framed};

use super::delivery::install_crypto_provider;
use super::mail::split_host_port;
use crate::state::metrics::Counter;

/// Reports waiting while the bot is (re)connecting; more are dropped.
const QUEUE: usize = 64;
/// Longest line the client reads (the protocol's limit is 512 bytes).
const MAX_LINE: usize = 8192;
/// Longest text in one PRIVMSG, leaving room for the command and channel
/// in the protocol's 512 bytes.
const MAX_TEXT: usize = 400;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);

/// One IRC reporter's settings, with its password resolved.
#[derive(Clone)]
pub struct Config {
    pub reporter: String,
    /// `host:port`.
    pub server: String,
    pub nick: String,
    pub channels: Vec<String>,
    pub password: Option<String>,
    pub tls: bool,
    /// The reporter's delivery counters: a line said in every channel is
    /// delivered; one dropped (queue full, connection lost while saying
    /// it) failed.
    pub delivered: Counter,
    pub failed: Counter,
}

/// The handle of a running client; dropping it makes the client quit.
pub struct Bot {
    reporter: String,
    tx: mpsc::Sender<String>,
    failed: Counter,
}

impl Bot {
    pub fn spawn(cfg: Config) -> Bot {
        let (tx, rx) = mpsc::channel(QUEUE);
        let reporter = cfg.reporter.clone();
        let failed = cfg.failed.clone();
        tokio::spawn(connection(cfg, rx));
        Bot {
            reporter,
            tx,
            failed,
        }
    }

    /// Queues a message for every channel; never waits.
    pub fn say(&self, text: String) {
        if let Err(e) = self.tx.try_send(text) {
            self.failed.inc();
            tracing::warn!(reporter = %self.reporter, "IRC message dropped: {e}");
        }
    }
}

/// The line said about a finished build.
pub fn line(cx: &Value) -> String {
    let s = |k: &str| cx[k].as_str().unwrap_or("");
    let mut out = format!(
        "{}: {} #{} {}",
        s("title"),
        s("builder"),
        cx["number"],
        s("result")
    );
    if !s("branch").is_empty() {
        out.push_str(" on ");
        out.push_str(s("branch"));
    }
    if let Some(p) = cx["previous_result"].as_str() {
        if p != s("result") {
            out.push_str(&format!(" (was {p})"));
        }
    }
    out.push_str(" — ");
    out.push_str(s("url"));
    out
}

fn backoff(failures: u32) -> Duration {
    let secs = 2u64.saturating_mul(1 << failures.min(8)) / 2;
    Duration::from_secs(secs.clamp(2, 300))
}

async fn connection(cfg: Config, mut rx: mpsc::Receiver<String>) {
    let mut failures = 0u32;
    loop {
        match session(&cfg, &mut rx, &mut failures).await {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                let pause = backoff(failures);
                tracing::warn!(
                    reporter = %cfg.reporter, server = %cfg.server,
                    "IRC connection failed, trying again in {pause:?}: {e}"
                );
                tokio::time::sleep(pause).await;
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = Framed<Box<dyn Io>, AnyDelimiterCodec>;

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            install_crypto_provider();
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier()
                .map(Arc::new)
                .map_err(|e| format!("cannot set up TLS: {e}"))
        })
        .clone()
}

async fn connect(cfg: &Config) -> Result<Conn, String> {
    let (host, port) = split_host_port(&cfg.server)
        .ok_or_else(|| format!("server `{}` is not host:port", cfg.server))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if cfg.tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?).connect(name, tcp);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls)
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS: {e}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    Ok(Framed::new(
        io,
        AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), b"\r\n".to_vec(), MAX_LINE),
    ))
}

/// A server line: prefix (without `:`), command, parameters (the trailing
/// one without its `:`).
pub fn parse(line: &str) -> (&str, &str, Vec<&str>) {
    let line = line.trim_end_matches(['\r', '\n']);
    let (prefix, rest) = match line.strip_prefix(':') {
        Some(r) => r.split_once(' ').unwrap_or((r, "")),
        None => ("", line),
    };
    let rest = rest.trim_start();
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
        params.push(p);
        rest = r;
    }
    (prefix, command, params)
}

async fn send(conn: &mut Conn, line: &str) -> Result<(), String> {
    // No line breaks inside a line: the server would read two commands.
    let clean: String = line
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    conn.send(clean).await.map_err(|e| format!("write: {e}"))
}

/// Handles what every state must (PING, ERROR); returns the line's
/// command and parameters for the caller.
async fn next_line(conn: &mut Conn) -> Result<String, String> {
    loop {
        let raw = match conn.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("the server closed the connection".into()),
        };
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (_, command, params) = parse(&text);
        match command {
            "PING" => send(conn, &format!("PONG :{}", params.first().unwrap_or(&""))).await?,
            "ERROR" => return Err(format!("server: {}", params.join(" "))),
            _ => return Ok(text),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn session(
    cfg: &Config,
    rx: &mut mpsc::Receiver<String>,
    failures: &mut u32,
) -> Result<(), String> {
    let mut conn = connect(cfg).await?;
    if let Some(pw) = &cfg.password {
        send(&mut conn, &format!("PASS {pw}")).await?;
    }
    let mut nick = cfg.nick.clone();
    send(&mut conn, &format!("NICK {nick}")).await?;
    send(&mut conn, &format!("USER {} 0 * :bbc CI", cfg.nick)).await?;
    let registered = async {
        loop {
            let line = next_line(&mut conn).await?;
            let (_, command, params) = parse(&line);
            match command {
                "001" => return Ok(()),
                // Nick taken or unavailable: another one.
                "432" | "433" | "436" | "437" if nick.len() < 30 => {
                    nick.push('_');
                    send(&mut conn, &format!("NICK {nick}")).await?;
                }
                "464" | "465" => return Err(format!("refused: {}", params.join(" "))),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REGISTER_TIMEOUT, registered)
        .await
        .map_err(|_| "no welcome from the server".to_string())??;
    *failures = 0;
    if !cfg.channels.is_empty() {
        send(&mut conn, &format!("JOIN {}", cfg.channels.join(","))).await?;
    }
    tracing::info!(reporter = %cfg.reporter, server = %cfg.server, %nick, "IRC connected");
    loop {
        tokio::select! {
            line = next_line(&mut conn) => {
                let line = line?;
                let (_, command, params) = parse(&line);
                // Errors about joining or speaking (no such channel,
                // banned, needs a key…): worth a line in the log.
                if command.len() == 3 && command.starts_with('4') {
                    tracing::warn!(reporter = %cfg.reporter, "IRC server says {command}: {}", params.join(" "));
                }
            }
            msg = rx.recv() => {
                let Some(text) = msg else {
                    let _ = send(&mut conn, "QUIT :bbc reporter stopped").await;
                    return Ok(());
                };
                let mut said = Ok(());
                'lines: for l in text.lines().filter(|l| !l.trim().is_empty()) {
                    for ch in &cfg.channels {
                        said = send(&mut conn, &format!("PRIVMSG {ch} :{}", truncate(l, MAX_TEXT))).await;
                        if said.is_err() {
                            break 'lines;
                        }
                    }
                }
                match said {
                    Ok(()) => {
                        cfg.delivered.inc();
                    }
                    Err(e) => {
                        cfg.failed.inc();
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_lines() {
        assert_eq!(parse("PING :abc\r"), ("", "PING", vec!["abc"]));
        assert_eq!(
            parse(":irc.example 001 bbc :Welcome to IRC"),
            ("irc.example", "001", vec!["bbc", "Welcome to IRC"])
        );
        assert_eq!(
            parse(":n!u@h PRIVMSG #c :hi :) there"),
            ("n!u@h", "PRIVMSG", vec!["#c", "hi :) there"])
        );
        assert_eq!(parse("ERROR"), ("", "ERROR", vec![]));
        assert_eq!(parse(""), ("", "", vec![]));
    }

    #[test]
    fn lines_and_limits() {
        let cx = serde_json::json!({
            "title": "CI", "builder": "b", "number": 4, "result": "success",
            "branch": "main", "previous_result": "failure", "url": "http://x/4"
        });
        assert_eq!(
            line(&cx),
            "CI: b #4 success on main (was failure) — http://x/4"
        );
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
