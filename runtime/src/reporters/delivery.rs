//! Delivering a report: attempts retried with a back-off, the HTTP client
//! every reporter shares (and the process's TLS provider), and POSTs whose
//! answer says whether another try makes sense.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// Pauses between the attempts of one delivery: four attempts in all.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(16),
];

/// Why one attempt of a delivery failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try: the network, a timeout, a 5xx, a 429.
    Transient(String),
    /// Another try would fail the same way: a 4xx, a bad address.
    Permanent(String),
}

/// Runs `attempt` until it succeeds, fails permanently or has failed
/// `RETRY_DELAYS.len() + 1` times, pausing between tries; every failure is
/// logged, none is returned (a reporter failure never reaches a build).
pub async fn deliver<F, Fut>(reporter: &str, what: &str, attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    deliver_with(&RETRY_DELAYS, reporter, what, attempt).await
}

async fn deliver_with<F, Fut>(
    delays: &[Duration],
    reporter: &str,
    what: &str,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(()) => {
                tracing::debug!(reporter, tries, "{what} delivered");
                return true;
            }
            Err(Failure::Permanent(e)) => {
                tracing::error!(reporter, tries, "{what} refused, not retried: {e}");
                return false;
            }
            Err(Failure::Transient(e)) => match delays.get(tries - 1) {
                Some(pause) => {
                    tracing::warn!(reporter, tries, "{what} failed, retrying in {pause:?}: {e}");
                    tokio::time::sleep(*pause).await;
                }
                None => {
                    tracing::error!(reporter, tries, "{what} failed, dropped: {e}");
                    return false;
                }
            },
        }
    }
}

pub use crate::tls::install_crypto_provider;

/// The HTTP client every reporter shares (connection pool, TLS config).
pub fn http_client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto_provider();
            match reqwest::Client::builder()
                .user_agent(concat!("bbc/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(30))
                .build()
            {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("cannot set up the HTTP client for reporters: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// POSTs `body` with `headers`; the answer's status decides whether
/// another try makes sense. Errors never show the URL (it may hold
/// credentials) nor the headers.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: String,
) -> Result<(), Failure> {
    let Some(client) = http_client() else {
        return Err(Failure::Permanent("no HTTP client".into()));
    };
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let e = e.without_url();
            let permanent = e.is_builder();
            let text = error_chain(&e);
            return Err(if permanent {
                Failure::Permanent(text)
            } else {
                Failure::Transient(text)
            });
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // A little of the answer helps to see why (a forge says which field
    // it did not like); never more.
    let text = resp.text().await.unwrap_or_default();
    let mut snippet: String = text.chars().take(200).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    let msg = format!("HTTP {status}: {}", snippet.trim());
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(Failure::Transient(msg))
    } else {
        Err(Failure::Permanent(msg))
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deliver_retries_transient_failures_then_gives_up() {
        let delays = [Duration::ZERO; 3];
        let mut n = 0;
        let ok = deliver_with(&delays, "r", "test", || {
            n += 1;
            let fail = n < 3;
            async move {
                if fail {
                    Err(Failure::Transient("down".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(ok);
        assert_eq!(n, 3);
        let mut n = 0;
        let ok = deliver_with(&delays, "r", "test", || {
            n += 1;
            async { Err(Failure::Transient("down".into())) }
        })
        .await;
        assert!(!ok);
        assert_eq!(n, delays.len() + 1);
        let mut n = 0;
        let ok = deliver_with(&delays, "r", "test", || {
            n += 1;
            async { Err(Failure::Permanent("bad".into())) }
        })
        .await;
        assert!(!ok);
        assert_eq!(n, 1);
    }
}
