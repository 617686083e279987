//! OAuth logins under way: a browser sent to a provider with a `state`
//! and a PKCE verifier, expected back at the callback.
//!
//! Choices (docs/security.md "OAuth login"):
//! - Server-side and in memory, keyed by the SHA-256 of `state`: the
//!   verifier never leaves the master, and a restart simply makes pending
//!   logins start again.
//! - The browser is bound too: the start sets a short-lived cookie holding
//!   `state`, and the callback wants both, so a callback URL planted in
//!   another browser (login CSRF) is refused.
//! - Single use, [`TTL`] long, at most [`MAX_FLOWS`] (the oldest go first),
//!   so starting logins in a loop cannot grow the master's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use bbc_graph::OAuthKind;

use crate::store::Millis;

/// A login not finished this long after it started is forgotten.
pub const TTL: Millis = 10 * 60 * 1000;
/// Logins under way kept at most.
pub const MAX_FLOWS: usize = 1_000;
/// The cookie that binds a login under way to its browser.
pub const STATE_COOKIE: &str = "bbc_oauth_state";

/// One login under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub kind: OAuthKind,
    /// PKCE (RFC 7636): the secret whose S256 challenge the authorize URL
    /// carried; the token request proves it.
    pub verifier: String,
    /// The `redirect_uri` the authorize URL carried: the token request
    /// must repeat it exactly (RFC 6749 §4.1.3), even if a reload changed
    /// the master's `url` meanwhile.
    pub redirect_uri: String,
    pub started: Millis,
}

#[derive(Default)]
pub struct Flows {
    by_digest: Mutex<HashMap<[u8; 32], Flow>>,
}

impl Flows {
    /// Remembers a login started with `state`.
    pub fn start(&self, state: &str, flow: Flow) {
        let now = flow.started;
        let mut m = self.lock();
        m.retain(|_, f| alive(f, now));
        while m.len() >= MAX_FLOWS {
            let Some(oldest) = m.iter().min_by_key(|(_, f)| f.started).map(|(k, _)| *k) else {
                break;
            };
            m.remove(&oldest);
        }
        m.insert(digest(state), flow);
    }

    /// The login started with `state`, if it is alive; forgotten either
    /// way, so a `state` is good for one callback.
    pub fn take(&self, state: &str, now: Millis) -> Option<Flow> {
        self.lock().remove(&digest(state)).filter(|f| alive(f, now))
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Flow>> {
        match self.by_digest.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        }
    }
}

fn alive(f: &Flow, now: Millis) -> bool {
    now.saturating_sub(f.started) < TTL
}

fn digest(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(started: Millis) -> Flow {
        Flow {
            kind: OAuthKind::Github,
            verifier: "v".into(),
            redirect_uri: "https://ci.example.org/login/oauth/github/callback".into(),
            started,
        }
    }

    #[test]
    fn a_state_is_good_once_and_not_after_its_ttl() {
        let f = Flows::default();
        f.start("s1", flow(0));
        assert!(f.take("other", 1).is_none());
        assert_eq!(f.take("s1", 1), Some(flow(0)));
        assert!(f.take("s1", 2).is_none(), "used twice");
        f.start("s2", flow(0));
        assert!(f.take("s2", TTL).is_none(), "expired");
        assert!(f.is_empty());
    }

    #[test]
    fn flows_are_bounded_and_the_oldest_go_first() {
        let f = Flows::default();
        for i in 0..=MAX_FLOWS {
            f.start(&format!("s{i}"), flow(i as Millis));
        }
        assert_eq!(f.len(), MAX_FLOWS);
        assert!(f.take("s0", MAX_FLOWS as Millis).is_none());
        assert!(f.take("s1", MAX_FLOWS as Millis).is_some());
    }
}
