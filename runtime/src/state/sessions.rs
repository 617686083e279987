//! Browser sessions: who logged in through the web (a password or an
//! OAuth provider), behind an opaque cookie.
//!
//! A session is created by a login (`POST /api/v1/login`, or an OAuth
//! callback) and names a configured `user`; the API then treats a request
//! carrying its cookie as that user. Because a browser sends cookies with
//! requests other sites make it send, every state-changing request
//! authenticated by a session must also carry the session's CSRF token
//! (header [`CSRF_HEADER`]), which only pages of this origin can read.
//!
//! Choices (docs/security.md "Browser sessions"):
//! - Sessions live in the master's memory: a restart logs everyone out.
//!   Nothing of them reaches the store, so a copy of `bbc.redb` holds no
//!   credential.
//! - The map is keyed by the SHA-256 of the cookie's value, so the values
//!   themselves are kept nowhere; lookups compare digests.
//! - A session ends after [`IDLE`] without a request, after [`LIFETIME`]
//!   in any case, at logout, and when a reload removes its user.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue};

use crate::store::Millis;

/// The cookie's name.
pub const COOKIE: &str = "bbc_session";
/// The header a browser's state-changing request repeats the CSRF token in.
pub const CSRF_HEADER: &str = "x-bbc-csrf";
/// A session unused this long ends.
pub const IDLE: Millis = 12 * 3600 * 1000;
/// A session ends this long after its login, used or not.
pub const LIFETIME: Millis = 7 * 24 * 3600 * 1000;
/// Sessions kept at most; the oldest-used end first beyond it, so logins
/// in a loop cannot grow the master's memory without bound.
pub const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The configured user it acts as.
    pub user: String,
    /// How it logged in: `password`, `github`, `gitlab`, `gitea`.
    pub via: String,
    /// Repeated by the browser in [`CSRF_HEADER`] on state-changing requests.
    pub csrf: String,
    pub created: Millis,
    pub last_used: Millis,
}

/// What a login hands the browser: the cookie's value (never stored) and
/// the CSRF token (also readable later through `GET /api/v1/whoami`).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Starts a session for `user`, logged in `via` a method.
    pub fn start(&self, user: &str, via: &str, now: Millis) -> NewSession {
        let new = NewSession {
            id: random_hex(32),
            csrf: random_hex(32),
        };
        let mut m = self.lock();
        m.retain(|_, s| alive(s, now));
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                m.remove(&oldest);
            }
        }
        m.insert(
            digest(&new.id),
            Session {
                user: user.to_string(),
                via: via.to_string(),
                csrf: new.csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        new
    }

    /// The session behind a cookie's value, if it is alive; marks it used.
    pub fn get(&self, id: &str, now: Millis) -> Option<Session> {
        let key = digest(id);
        let mut m = self.lock();
        let s = m.get_mut(&key)?;
        if !alive(s, now) {
            m.remove(&key);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    /// Ends the session behind a cookie's value (logout).
    pub fn end(&self, id: &str) -> Option<Session> {
        self.lock().remove(&digest(id))
    }

    /// Ends every session of users `keep` no longer names (a reload
    /// removed them); returns how many ended.
    pub fn retain_users(&self, keep: impl Fn(&str) -> bool) -> usize {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, s| keep(&s.user));
        before - m.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        match self.by_digest.lock() {
            Ok(m) => m,
            Err(e) => e.into_inner(),
        }
    }
}

fn alive(s: &Session, now: Millis) -> bool {
    now.saturating_sub(s.last_used) < IDLE && now.saturating_sub(s.created) < LIFETIME
}

fn digest(id: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(id.as_bytes()).into()
}

/// `n` random bytes from the system's generator, as hex.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    // The system generator does not fail on Linux once booted. If it ever
    // did, a guessable id must not be made up instead: the empty id is
    // returned, which `cookie_value` never yields, so that session can
    // never be used.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The session cookie's value from a request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE)
}

/// A cookie's (non-empty) value from a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a new session: HttpOnly (no script reads it),
/// SameSite=Lax (sent on top-level navigation from elsewhere — the OAuth
/// callback is one — but not on other sites' subrequests or forms that
/// POST), Secure when the page is served over HTTPS.
pub fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        LIFETIME / 1000
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes the session cookie (logout).
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_when_idle_or_old_or_logged_out() {
        let s = Sessions::default();
        let a = s.start("alice", "password", 1_000);
        assert_eq!(a.id.len(), 64);
        assert_ne!(a.id, a.csrf);
        let got = s.get(&a.id, 2_000).map(|x| (x.user, x.csrf));
        assert_eq!(got, Some(("alice".into(), a.csrf.clone())));
        assert!(s.get("not-a-session", 2_000).is_none());
        // Idle too long.
        assert!(s.get(&a.id, 2_000 + IDLE).is_none());
        // Used regularly, but past its lifetime.
        let b = s.start("bob", "github", 0);
        let mut t = 0;
        while t + IDLE / 2 < LIFETIME {
            t += IDLE / 2;
            assert!(s.get(&b.id, t).is_some());
        }
        assert!(s.get(&b.id, LIFETIME).is_none());
        // Logout.
        let c = s.start("carol", "password", 0);
        assert_eq!(s.end(&c.id).map(|x| x.user), Some("carol".into()));
        assert!(s.get(&c.id, 1).is_none());
    }

    #[test]
    fn a_reload_that_removes_a_user_ends_their_sessions() {
        let s = Sessions::default();
        let a = s.start("alice", "password", 0);
        let b = s.start("bob", "password", 0);
        assert_eq!(s.retain_users(|u| u == "bob"), 1);
        assert!(s.get(&a.id, 1).is_none());
        assert!(s.get(&b.id, 1).is_some());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let first = s.start("u", "password", 0);
        for i in 0..MAX_SESSIONS {
            s.start("u", "password", 1 + i as Millis);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first.id, MAX_SESSIONS as Millis).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others_and_set_with_its_attributes() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; bbc_session=abc ; b=2"),
        );
        assert_eq!(cookie_value(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("bbc_session="));
        assert_eq!(cookie_value(&h), None);
        let c = set_cookie("xyz", true);
        let c = c.to_str().unwrap_or_default();
        for part in [
            "bbc_session=xyz",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let plain = set_cookie("xyz", false);
        assert!(!plain.to_str().unwrap_or_default().contains("Secure"));
        assert!(clear_cookie(false)
            .to_str()
            .unwrap_or_default()
            .contains("Max-Age=0"));
    }
}
