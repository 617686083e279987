//! Mail (`kind="mail"`): one plain-text message per reported build, sent
//! through SMTP with lettre. Port 465 speaks TLS from the first byte
//! (implicit TLS); any other port upgrades with STARTTLS when the server
//! offers it and stays plain otherwise. With `username`, the client logs
//! in (PLAIN or LOGIN) with the `password` secret. With `blamelist`, the
//! authors of the build's changes are mailed too ([`blame_addresses`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bbc_graph::Blamelist;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use super::delivery::{deliver, error_chain, install_crypto_provider, Failure};
use super::message::{Templates, BODY, SUBJECT};

/// One mail reporter's settings, with its password resolved.
pub struct Mail<'a> {
    pub reporter: &'a str,
    /// `host:port`.
    pub smtp: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    /// Mail the authors of the build's changes too.
    pub blamelist: Option<&'a Blamelist>,
    /// Username and password.
    pub login: Option<(String, String)>,
}

/// `host:port` (also `[v6]:port`) → host and port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// At most this many addresses from a blamelist (a build of a thousand
/// changes mails their first authors only).
pub const MAX_BLAMED: usize = 50;

/// The addresses of `authors` (commit identities such as `Ada
/// <ada@example.org>`, `ada@example.org` or `ada`) under a blamelist's
/// rules, in order, once each and none already in `to` (compared without
/// case): an identity the `addresses` map names (whole, by its address or
/// by its name) gets the mapped address; else its own address; else a
/// bare user name gets `@domain`; anything else is left out.
pub fn blame_addresses(b: &Blamelist, authors: &[&str], to: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let known = |out: &[String], a: &str| {
        let key = bare_address(a).to_ascii_lowercase();
        to.iter()
            .map(String::as_str)
            .chain(out.iter().map(String::as_str))
            .any(|x| bare_address(x).to_ascii_lowercase() == key)
    };
    for author in authors {
        let author = author.trim();
        let (name, addr) = match (author.rfind('<'), author.rfind('>')) {
            (Some(l), Some(r)) if l < r => (author[..l].trim(), author[l + 1..r].trim()),
            _ if author.contains('@') => ("", author),
            _ => (author, ""),
        };
        let mapped = [author, addr, name]
            .iter()
            .filter(|k| !k.is_empty())
            .find_map(|k| b.addresses.get(*k));
        let address = match (mapped, b.domain.as_deref()) {
            (Some(m), _) => Some(m.clone()),
            _ if addr.contains('@') => Some(addr.to_string()),
            (None, Some(d))
                if !name.is_empty()
                    && !name.contains(|c: char| c.is_whitespace() || "@<>,;\"".contains(c)) =>
            {
                Some(format!("{name}@{d}"))
            }
            _ => None,
        };
        match address {
            Some(a) if out.len() < MAX_BLAMED && !known(&out, &a) => out.push(a),
            Some(_) => {}
            None => tracing::debug!("blamelist: no address for the author `{author}`"),
        }
    }
    out
}

/// `Name <a@b>` → `a@b`; anything else as it is.
fn bare_address(s: &str) -> &str {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(l), Some(r)) if l < r => s[l + 1..r].trim(),
        _ => s.trim(),
    }
}

/// The message: a subject on one line, a plain-text UTF-8 body.
pub fn message(from: &str, to: &[String], subject: &str, body: String) -> Result<Message, String> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| format!("sender `{from}` is not an address: {e}"))?;
    let mut m = Message::builder().from(from);
    for t in to {
        let mb: Mailbox = t
            .parse()
            .map_err(|e| format!("recipient `{t}` is not an address: {e}"))?;
        m = m.to(mb);
    }
    let subject: String = subject
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    m.subject(subject.trim())
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))
}

/// TLS settings per SMTP host, made once: the certificate verifier they
/// hold reads the system's roots at its first handshake only.
fn tls_parameters(host: &str) -> Result<TlsParameters, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, TlsParameters>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(p) = cache.lock().ok().and_then(|c| c.get(host).cloned()) {
        return Ok(p);
    }
    install_crypto_provider();
    let p = TlsParameters::builder(host.to_string())
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS: {}", error_chain(&e)))?;
    if let Ok(mut c) = cache.lock() {
        c.insert(host.to_string(), p.clone());
    }
    Ok(p)
}

impl Mail<'_> {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let (host, port) = split_host_port(self.smtp)
            .ok_or_else(|| format!("SMTP server `{}` is not host:port", self.smtp))?;
        let tls = tls_parameters(host)?;
        let tls = if port == 465 {
            Tls::Wrapper(tls)
        } else {
            Tls::Opportunistic(tls)
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let Some((user, password)) = &self.login {
            b = b.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(b.build())
    }

    /// Whether the mail was delivered; None when there was nobody to
    /// send it to. `authors` are the build's blamelist (its changes'
    /// authors), mailed when the reporter says so.
    pub async fn send(&self, templates: &Templates, cx: &Value, authors: &[&str]) -> Option<bool> {
        let what = format!(
            "mail about {} #{}",
            cx["builder"].as_str().unwrap_or(""),
            cx["number"]
        );
        let subject = templates.render(SUBJECT, cx).unwrap_or_default();
        let body = templates.render(BODY, cx).unwrap_or_default();
        let mut to = self.to.to_vec();
        if let Some(b) = self.blamelist {
            to.extend(blame_addresses(b, authors, self.to));
        }
        if to.is_empty() {
            tracing::info!(
                reporter = self.reporter,
                "{what} not sent: no recipient (no `to`, and no author on the blamelist)"
            );
            return None;
        }
        let prepared =
            message(self.from, &to, &subject, body).and_then(|m| Ok((m, self.transport()?)));
        let (msg, transport) = match prepared {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(reporter = self.reporter, "{what} not sent: {e}");
                return Some(false);
            }
        };
        let ok = deliver(self.reporter, &what, || {
            let (t, m) = (&transport, msg.clone());
            async move {
                match t.send(m).await {
                    Ok(_) => Ok(()),
                    // 5xx: the server refused for good (unknown recipient,
                    // wrong password); everything else may pass later.
                    Err(e) if e.is_permanent() => Err(Failure::Permanent(error_chain(&e))),
                    Err(e) => Err(Failure::Transient(error_chain(&e))),
                }
            }
        })
        .await;
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(
            split_host_port("smtp.example.org:587"),
            Some(("smtp.example.org", 587))
        );
        assert_eq!(split_host_port("[::1]:25"), Some(("::1", 25)));
        assert_eq!(split_host_port("smtp.example.org"), None);
        assert_eq!(split_host_port(":25"), None);
    }

    #[test]
    fn blamelist_addresses() {
        let mut b = Blamelist {
            domain: Some("acme.example".into()),
            ..Default::default()
        };
        b.addresses
            .insert("Ada Lovelace".into(), "ada@acme.example".into());
        b.addresses
            .insert("bob@home.example".into(), "bob@acme.example".into());
        let authors = [
            "Ada Lovelace <ada@home.example>",
            "Bob <bob@home.example>",
            "carol",
            "Dan Smith",
            "eve@example.org",
            "EVE@example.org",
            "Fay <qa@acme.example>",
            "Ada Lovelace <ada@other.example>",
            "",
        ];
        let got = blame_addresses(&b, &authors, &["QA <qa@acme.example>".into()]);
        assert_eq!(
            got,
            [
                "ada@acme.example",
                "bob@acme.example",
                "carol@acme.example",
                "eve@example.org"
            ]
        );
        // No domain: bare names have no address.
        let b = Blamelist::default();
        assert_eq!(
            blame_addresses(&b, &["carol", "Ann <ann@x.example>"], &[]),
            ["ann@x.example"]
        );
        let many: Vec<String> = (0..80).map(|i| format!("u{i}@x.example")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(blame_addresses(&b, &many, &[]).len(), MAX_BLAMED);
    }

    #[test]
    fn messages() {
        let m = message(
            "CI <ci@example.org>",
            &["a@example.org".into(), "b@example.org".into()],
            "one\ntwo",
            "body\n".into(),
        );
        let text =
            String::from_utf8_lossy(&m.map(|m| m.formatted()).unwrap_or_default()).into_owned();
        assert!(text.contains("Subject: one two\r\n"), "{text}");
        assert!(
            text.contains("To: a@example.org, b@example.org\r\n"),
            "{text}"
        );
        assert!(text.contains("From: CI <ci@example.org>\r\n"), "{text}");
        assert!(message("nope", &[], "s", String::new()).is_err());
        assert!(message("ci@example.org", &["bad".into()], "s", String::new()).is_err());
    }
}
