//! People logging in: `POST /api/v1/login` (a user's password, checked
//! against the argon2id hash in its secret), `POST /api/v1/logout`, and
//! `GET /api/v1/whoami` (who the master takes the caller for and what it
//! may do, so the web UI shows only the buttons that would work).
//!
//! The session behind the cookie lives in `state/sessions.rs`; the CSRF
//! check of every later state-changing request in `auth/csrf.rs`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use bbc_graph::{Credential, Grant, Graph};

use crate::api_error::ApiError;
use crate::auth::{self, decide, identify, Caller, Decision, Scope};
use crate::glob::Globs;
use crate::state::logins::Admission;
use crate::state::sessions::{self, cookie_value};
use crate::state::{now_ms, Shared};
use crate::store::NewAuditEntry;

const WRONG: &str = "wrong user name or password";

/// Password verifications running at once, whatever the number of
/// clients (see `login_with`).
static VERIFICATIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

/// `POST /api/v1/login` with `{"user": …, "password": …}`.
pub(super) async fn login(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let body = match axum::body::to_bytes(req.into_body(), 16 << 10).await {
        Ok(b) => b,
        Err(_) => return ApiError::bad("the login body is at most 16 KiB").into_response(),
    };
    match login_with(&s, peer, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn login_with(
    s: &Arc<Shared>,
    peer: Option<SocketAddr>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let b: LoginBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(format!(
            "the login body must be JSON {{\"user\": \"NAME\", \"password\": \"…\"}}: {}",
            // serde's message may quote a value; only its position is kept,
            // as the body holds a password.
            position(&e)
        ))
    })?;
    if b.user.is_empty() || b.user.len() > 256 || b.password.len() > crate::password::MAX_LEN {
        return Err(ApiError::bad(format!(
            "a user name is 1 to 256 bytes, a password at most {} bytes",
            crate::password::MAX_LEN
        )));
    }
    let addr = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
    let g = s.graph();
    let hash = password_hash(&g, &s.secrets(), &b.user);
    let known = hash.is_some();
    // Unknown names are throttled under a name of their own each (so
    // probing them behaves exactly like probing real ones) but never
    // logged as typed: people type passwords into the name field.
    let key = if known {
        b.user.clone()
    } else {
        format!("unknown-{}", &hex_digest(&b.user)[..12])
    };
    // At most a few verifications at once: each takes 19 MiB and tens of
    // milliseconds, and a failure is counted only once verified, so a
    // burst of parallel guesses would otherwise all pass the throttle
    // below together. Waiting requests are admitted (or refused, cheaply)
    // only once they hold a permit, after the failures before them.
    let Ok(_permit) = VERIFICATIONS.acquire().await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the master is shutting down",
        ));
    };
    let now = now_ms();
    let admission = {
        let mut l = lock(&s.web_logins);
        for line in l.flush(now) {
            tracing::warn!("{line}");
        }
        l.admit(&key, addr, now)
    };
    if let Admission::Refuse { retry_at, log } = admission {
        if let Some(line) = log {
            tracing::warn!("{line}");
        }
        let secs = (retry_at.saturating_sub(now) + 999) / 1000;
        let secs = secs.max(1);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins; try again in {secs} s"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(r);
    }
    // Unknown users are checked against a dummy hash: the same work, the
    // same answer, so neither tells which names exist.
    let password = b.password;
    let ok = tokio::task::spawn_blocking(move || match &hash {
        Some(phc) => crate::password::verify(&password, phc),
        None => crate::password::verify(&password, crate::password::dummy()),
    })
    .await
    .unwrap_or(false)
        && known;
    let who = if known {
        b.user.clone()
    } else {
        "(unknown user)".to_string()
    };
    if !ok {
        let line = lock(&s.web_logins).failed(&key, addr, now_ms());
        if let Some(line) = line {
            tracing::warn!("{line}");
        }
        audit(s, who, peer, StatusCode::UNAUTHORIZED).await;
        return Err(ApiError(StatusCode::UNAUTHORIZED, WRONG.into()));
    }
    lock(&s.web_logins).succeeded(&key, addr);
    let new = s.sessions.start(&b.user, "password", now_ms());
    tracing::info!(user = %b.user, peer = %addr, "web login of `{}` from {addr}", b.user);
    audit(s, who, peer, StatusCode::OK).await;
    let mut r = Json(json!({"user": b.user, "csrf": new.csrf})).into_response();
    let h = r.headers_mut();
    h.insert(header::SET_COOKIE, sessions::set_cookie(&new.id, s.https));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /api/v1/logout`: ends the session the cookie names (the CSRF
/// layer has checked its token) and clears the cookie; harmless without.
pub(super) async fn logout(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let ended = cookie_value(&headers).and_then(|id| s.sessions.end(id));
    let mut r = Json(json!({"ended": ended.map(|x| x.user)})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, sessions::clear_cookie(s.https));
    r
}

/// `GET /api/v1/whoami`: who the master takes the caller for (`bbc
/// login` checks a token with it), how (`token`, `session`, none), the
/// session's CSRF token, and what it may do: each grant, on every
/// builder (`true`), on the builders some globs match (a list) or not at
/// all (`false`), and per builder the actions allowed there. A wrong
/// token is 401, like everywhere.
pub(super) async fn whoami(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (g, secrets) = (s.graph(), s.secrets());
    let caller = identify(&g, &secrets, &s.sessions, &headers)?;
    let session = if auth::has_bearer(&headers) {
        None
    } else {
        auth::session_user(&g, &s.sessions, &headers)
    };
    let access = &g.master.access;
    let control_set = secrets.control_token().is_some();
    let roles: Vec<&str> = match &caller {
        Caller::User(name) => access
            .users
            .iter()
            .find(|u| &u.name == name)
            .map(|u| u.roles.iter().map(String::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let allowed = |grant| decide(access, control_set, &caller, grant, Scope::Everything);
    let can_view = allowed(Grant::View) == Decision::Allow;
    let mut may = serde_json::Map::new();
    may.insert("view".into(), can_view.into());
    may.insert(
        "admin".into(),
        (allowed(Grant::Admin) == Decision::Allow).into(),
    );
    let mut per_builder: Vec<(Grant, Reach)> = Vec::new();
    for grant in [Grant::Force, Grant::Cancel, Grant::Rebuild] {
        let reach = reach(&g, control_set, &caller, grant);
        may.insert(grant.as_str().into(), reach.json());
        per_builder.push((grant, reach));
    }
    // Builder names only to callers who may read them.
    let mut builders = serde_json::Map::new();
    if can_view {
        let compiled: Vec<(Grant, Option<Globs>)> = per_builder
            .iter()
            .map(|(gr, r)| match r {
                Reach::Globs(gl) => (*gr, Some(Globs::new(gl))),
                _ => (*gr, None),
            })
            .collect();
        for b in &g.builders {
            let acts: Vec<&str> = per_builder
                .iter()
                .zip(&compiled)
                .filter(|((_, r), (_, gl))| match r {
                    Reach::All => true,
                    Reach::None => false,
                    Reach::Globs(_) => gl.as_ref().is_some_and(|gl| gl.is_match(&b.name)),
                })
                .map(|((gr, _), _)| gr.as_str())
                .collect();
            builders.insert(b.name.clone(), json!(acts));
        }
    }
    let password_login = access.users.iter().any(|u| u.password.is_some());
    let mut out = json!({
        "caller": caller.name(),
        "roles": roles,
        "via": match (&caller, &session) {
            (Caller::Anonymous, _) => "none",
            (_, Some(_)) => "session",
            _ => "token",
        },
        "private": access.private,
        "password_login": password_login,
        "may": may,
        "builders": builders,
    });
    if let (Some(sess), Some(o)) = (session, out.as_object_mut()) {
        o.insert("csrf".into(), sess.csrf.into());
        o.insert("login".into(), sess.via.into());
    }
    Ok(Json(out))
}

/// Where a caller may use a grant.
enum Reach {
    All,
    None,
    Globs(Vec<String>),
}

impl Reach {
    fn json(&self) -> Value {
        match self {
            Reach::All => true.into(),
            Reach::None => false.into(),
            Reach::Globs(g) => json!(g),
        }
    }
}

/// [`decide`]'s answer for every builder at once: the tokens and
/// unrestricted roles reach all, a user's limited roles the union of
/// their globs.
fn reach(g: &Graph, control_set: bool, caller: &Caller, grant: Grant) -> Reach {
    let access = &g.master.access;
    if decide(access, control_set, caller, grant, Scope::Everything) == Decision::Allow {
        return Reach::All;
    }
    let Caller::User(name) = caller else {
        return Reach::None;
    };
    let Some(u) = access.users.iter().find(|u| &u.name == name) else {
        return Reach::None;
    };
    let mut globs: Vec<String> = u
        .roles
        .iter()
        .filter_map(|r| access.role(r))
        .filter(|r| r.grants.contains(&grant))
        .flat_map(|r| r.builders.iter().cloned())
        .collect();
    globs.sort();
    globs.dedup();
    if globs.is_empty() {
        Reach::None
    } else {
        Reach::Globs(globs)
    }
}

/// The PHC string of `user`'s password, if it is configured with one.
fn password_hash(g: &Graph, secrets: &crate::secrets::Secrets, user: &str) -> Option<String> {
    let u = g.master.access.users.iter().find(|u| u.name == user)?;
    let c: &Credential = u.password.as_ref()?;
    secrets.get(c).map(str::to_string)
}

/// Recorded in the audit log, awaited like the layer's entries. The
/// name is a configured user's, never what an unknown one typed.
async fn audit(s: &Arc<Shared>, who: String, peer: Option<SocketAddr>, status: StatusCode) {
    let entry = NewAuditEntry {
        who,
        method: "POST".into(),
        path: crate::auth::csrf::LOGIN_PATH.into(),
        builder: None,
        build: None,
        peer: peer.map(|p| p.to_string()),
        status: status.as_u16(),
    };
    if let Err(e) = s.db(move |st| st.add_audit(entry, now_ms())).await {
        tracing::warn!("the audit log could not record a login: {e}");
    }
}

fn hex_digest(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// "line L column C" of a JSON error, without serde's text (which can
/// quote the value it choked on).
fn position(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            "`user` and `password` are strings, and nothing else is accepted".into()
        }
        _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    }
}
