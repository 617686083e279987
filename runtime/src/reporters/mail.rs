//! Mail (`kind="mail"`): one plain-text message per reported build, sent
//! through SMTP with lettre. Port 465 speaks TLS from the first byte
//! (implicit TLS); any other port upgrades with STARTTLS when the server
//! offers it and stays plain otherwise. With `username`, the client logs
//! in (PLAIN or LOGIN) with the `password` secret.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

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

    /// Whether the mail was delivered.
    pub async fn send(&self, templates: &Templates, cx: &Value) -> bool {
        let what = format!(
            "mail about {} #{}",
            cx["builder"].as_str().unwrap_or(""),
            cx["number"]
        );
        let subject = templates.render(SUBJECT, cx).unwrap_or_default();
        let body = templates.render(BODY, cx).unwrap_or_default();
        let prepared =
            message(self.from, self.to, &subject, body).and_then(|m| Ok((m, self.transport()?)));
        let (msg, transport) = match prepared {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(reporter = self.reporter, "{what} not sent: {e}");
                return false;
            }
        };
        deliver(self.reporter, &what, || {
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
        .await
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
