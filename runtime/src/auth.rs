//! Who may do what, and the checks that decide it, in one place: the
//! worker password, the API's control and admin tokens (`Authorization:
//! Bearer TOKEN`), and the webhook signatures (HMAC of the body, or the
//! secret itself). Every comparison of a secret runs in constant time.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};

use bbc_graph::{Access, Grant, Graph};

use crate::api_error::ApiError;
use crate::glob::Globs;
use crate::secrets::{env_var_name, Secrets, ADMIN_TOKEN};
use crate::state::sessions::{cookie_value, Session, Sessions};
use crate::state::{now_ms, Shared};

pub mod csrf;

/// Compares two secrets in time independent of their contents.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    // Compare fixed-size digests so the length does not leak either.
    let da = sha256(a.as_bytes());
    let db = sha256(b.as_bytes());
    da.ct_eq(&db).into()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

// --- webhook signatures

/// Hex HMAC-SHA256 of `body` keyed with `secret`: what GitHub sends as
/// `X-Hub-Signature-256: sha256=<hex>` and Gitea as `X-Gitea-Signature`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    hmac_sha256(secret, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; the fallback
    // (an all-zero digest no signature matches) keeps the code panic-free.
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mut m) => {
            m.update(body);
            m.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// `Basic base64(name:password)` → (name, password): Buildbot's workers
/// and Buildbot's change hooks authenticate this way.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let b64 = header.strip_prefix("Basic ")?.trim();
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Constant-time check of a hex HMAC against the body.
pub fn hmac_matches(secret: &str, body: &[u8], given_hex: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = hmac_sha256(secret.as_bytes(), body);
    match decode_hex(given_hex) {
        // The length of a digest is public; only its bytes are secret.
        Some(given) if given.len() == expected.len() => expected.ct_eq(&given[..]).into(),
        _ => false,
    }
}

// --- API tokens

/// The token of `Authorization: Bearer TOKEN`. The scheme is matched
/// without regard to case (RFC 7235: `bearer`, `BEARER` are the same).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim_start();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// 401; [`ApiError`] adds `WWW-Authenticate: Bearer realm="bbc"`.
fn unauthorized(msg: &str) -> ApiError {
    ApiError(StatusCode::UNAUTHORIZED, msg.into())
}

/// Who is calling, as far as the request shows. Never holds a token: the
/// audit log and error messages name callers with [`Caller::name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// A `user` of the config, identified by its token.
    User(String),
    /// The control token `bbc-control-token`.
    ControlToken,
    /// The admin token `bbc-admin-token`.
    AdminToken,
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::User(n) => n,
            Caller::ControlToken => "control-token",
            Caller::AdminToken => "admin-token",
        }
    }
}

/// What an action applies to, for roles limited with `builders=`.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One builder (force, cancel).
    Builder(&'a str),
    /// Every builder: submitting a change or polling starts builds on
    /// whichever builders the schedulers pick, so a limited role is not
    /// enough; also `view` and `admin`, which are never limited.
    Everything,
    /// At least one builder: used only to tell "you may not" from "no
    /// such thing" before the builder is known.
    SomeBuilder,
}

/// The answer of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: identify yourself.
    Unauthenticated,
    /// 403: identified, but without the grant.
    Forbidden,
}

/// Whether `caller` may do what `grant` covers on `scope`, under the
/// config's users and roles. Pure, so every rule is unit-tested:
///
/// - `view`: everyone unless the master is private; then a user with
///   `view` (or `admin`), or either token.
/// - `force`, `cancel`, `rebuild`: the control and admin tokens; a user
///   with a role granting it for the builder. Anonymous callers only when
///   the config has no users or roles and the master no control token
///   (today's open master).
/// - `admin`: the admin token, or a user with `admin`.
pub fn decide(
    access: &Access,
    control_token_set: bool,
    caller: &Caller,
    grant: Grant,
    scope: Scope,
) -> Decision {
    let user_may = |name: &str| {
        let Some(u) = access.users.iter().find(|u| u.name == name) else {
            return false;
        };
        u.roles.iter().filter_map(|r| access.role(r)).any(|role| {
            if role.grants.contains(&Grant::Admin) {
                return true;
            }
            if !role.grants.contains(&grant) {
                return false;
            }
            if grant == Grant::View || role.builders.is_empty() {
                return true;
            }
            match scope {
                Scope::Builder(b) => Globs::new(&role.builders).is_match(b),
                Scope::Everything => false,
                Scope::SomeBuilder => true,
            }
        })
    };
    let by_user = |name: &str| {
        if user_may(name) {
            Decision::Allow
        } else {
            Decision::Forbidden
        }
    };
    match grant {
        Grant::View if !access.private => Decision::Allow,
        Grant::View => match caller {
            Caller::Anonymous => Decision::Unauthenticated,
            Caller::ControlToken | Caller::AdminToken => Decision::Allow,
            Caller::User(n) => by_user(n),
        },
        Grant::Admin => match caller {
            Caller::AdminToken => Decision::Allow,
            Caller::Anonymous => Decision::Unauthenticated,
            Caller::ControlToken => Decision::Forbidden,
            Caller::User(n) => by_user(n),
        },
        Grant::Force | Grant::Cancel | Grant::Rebuild => match caller {
            Caller::ControlToken | Caller::AdminToken => Decision::Allow,
            Caller::Anonymous if !access.has_users() && !control_token_set => Decision::Allow,
            Caller::Anonymous => Decision::Unauthenticated,
            Caller::User(n) => by_user(n),
        },
    }
}

/// Identifies the caller: from `Authorization: Bearer TOKEN` when the
/// request has one (a token matching nothing is refused, 401, whatever
/// cookie came with it), else from a live session cookie naming a user
/// the config still has, else anonymous. A state-changing request the
/// session identifies has passed the CSRF check already ([`csrf::layer`]).
pub fn identify(
    g: &Graph,
    secrets: &Secrets,
    sessions: &Sessions,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if bearer(headers).is_some() {
        return identify_token(g, secrets, headers);
    }
    Ok(session_user(g, sessions, headers)
        .map(|s| Caller::User(s.user))
        .unwrap_or(Caller::Anonymous))
}

/// The live session behind the request's cookie, if its user is still
/// configured.
pub fn session_user(g: &Graph, sessions: &Sessions, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers)?;
    let s = sessions.get(id, now_ms())?;
    g.master
        .access
        .users
        .iter()
        .any(|u| u.name == s.user)
        .then_some(s)
}

/// Whether the request carries `Authorization: Bearer …` (then cookies
/// do not count, and no CSRF token is needed: a browser never adds that
/// header on its own).
pub fn has_bearer(headers: &HeaderMap) -> bool {
    bearer(headers).is_some()
}

/// Identifies the caller from `Authorization: Bearer TOKEN`: no header is
/// anonymous, a token matching nothing is refused (401). Every known token
/// is compared, in constant time, whatever matched first, so the time
/// taken says nothing about which token (or user) came close.
pub fn identify_token(
    g: &Graph,
    secrets: &Secrets,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let Some(given) = bearer(headers) else {
        return Ok(Caller::Anonymous);
    };
    let mut found = None;
    let mut check = |value: Option<&str>, who: Caller| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            if constant_time_eq(given, v) && found.is_none() {
                found = Some(who);
            }
        }
    };
    check(secrets.admin_token(), Caller::AdminToken);
    check(secrets.control_token(), Caller::ControlToken);
    for u in &g.master.access.users {
        if let Some(t) = &u.token {
            check(secrets.get(t), Caller::User(u.name.clone()));
        }
    }
    found.ok_or_else(|| unauthorized("wrong token"))
}

const NEEDS_TOKEN: &str =
    "this master needs a token for this action: send `Authorization: Bearer TOKEN` \
     (`bbc force` and `bbc sendchange` send $BBC_TOKEN, or the token `bbc login` stored)";

/// Taken by the handlers that act on builds (force, cancel, submit a
/// change, poll now): identifies the caller, who the handler then checks
/// with [`Control::allow`] once it knows the builder. A wrong token is
/// refused here already — except on an open master (no users, roles or
/// control token), which never looked at tokens.
pub struct Control {
    pub caller: Caller,
    /// The peer's address, for the audit log (absent in tests that call
    /// the router without a listener).
    pub peer: Option<std::net::SocketAddr>,
}

impl axum::extract::FromRequestParts<Arc<Shared>> for Control {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let g = s.graph();
        let secrets = s.secrets();
        let open = !g.master.access.has_users() && secrets.control_token().is_none();
        let caller = match identify(&g, &secrets, &s.sessions, &parts.headers) {
            Ok(c) => c,
            Err(_) if open => Caller::Anonymous,
            Err(e) => return Err(e.into_response()),
        };
        Ok(Control {
            caller,
            peer: peer(parts),
        })
    }
}

/// The peer address the listener recorded on the request.
pub fn peer(parts: &axum::http::request::Parts) -> Option<std::net::SocketAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

impl Control {
    /// Whether the caller may do `grant` on `scope`: the refusal (401 or
    /// 403, JSON) otherwise.
    pub fn allow(&self, s: &Shared, grant: Grant, scope: Scope) -> Result<(), ApiError> {
        let g = s.graph();
        let control_set = s.secrets().control_token().is_some();
        refusal(&g.master.access, control_set, &self.caller, grant, scope)
    }
}

fn refusal(
    access: &Access,
    control_set: bool,
    caller: &Caller,
    grant: Grant,
    scope: Scope,
) -> Result<(), ApiError> {
    match decide(access, control_set, caller, grant, scope) {
        Decision::Allow => Ok(()),
        Decision::Unauthenticated => Err(ApiError(StatusCode::UNAUTHORIZED, NEEDS_TOKEN.into())),
        Decision::Forbidden => {
            let on = match scope {
                Scope::Builder(b) => format!(" on builder `{b}`"),
                Scope::Everything if matches!(grant, Grant::View | Grant::Admin) => String::new(),
                Scope::Everything => " on every builder".into(),
                Scope::SomeBuilder => String::new(),
            };
            Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "`{}` lacks the `{}` grant{on}",
                    caller.name(),
                    grant.as_str()
                ),
            ))
        }
    }
}

/// The check of the admin endpoints (`POST /api/v1/config`, `GET
/// /api/v1/audit`): the admin token, or a user with `admin`. Answers with
/// the caller, or the refusal; `what` ("applying a config") says what is
/// disabled on a master with neither.
pub fn admin(s: &Shared, headers: &HeaderMap, what: &str) -> Result<Caller, ApiError> {
    let secrets = s.secrets();
    let g = s.graph();
    if secrets.admin_token().is_none() && !g.master.access.has_users() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} through the API is disabled: the master has no admin token. \
                 Put one in the secret `{ADMIN_TOKEN}` (a file of that name in the master's secrets \
                 directory, or the environment variable {}), reload the master (SIGHUP) or restart it, \
                 then send it as `Authorization: Bearer TOKEN` (`bbc apply --token-file FILE`), \
                 or give a `user` a role with the `admin` grant",
                env_var_name(ADMIN_TOKEN)
            ),
        ));
    }
    let caller = match identify(&g, &secrets, &s.sessions, headers) {
        Ok(c) => c,
        Err(_) => return Err(unauthorized("wrong admin token")),
    };
    match decide(
        &g.master.access,
        secrets.control_token().is_some(),
        &caller,
        Grant::Admin,
        Scope::Everything,
    ) {
        Decision::Allow => Ok(caller),
        Decision::Unauthenticated => Err(unauthorized(
            "this endpoint needs the admin token: send `Authorization: Bearer TOKEN`",
        )),
        Decision::Forbidden => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("`{}` lacks the `admin` grant", caller.name()),
        )),
    }
}

/// Private masters: every read of the API, the metrics (builder and
/// worker names), the badges and the uploaded files need `view`; the health check stays open for load
/// balancers. Writes check their own grants; the
/// change sources' webhooks are POSTs signed with their own secrets.
pub async fn private_reads(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let g = s.graph();
    let path = req.uri().path();
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !g.master.access.private
        || !read
        || !(path == "/api/v1"
            || path.starts_with("/api/v1/")
            || path == "/metrics"
            // Badges and uploaded files say as much as the API does.
            || path.starts_with("/badges/")
            || path.starts_with("/files/"))
        || path == "/api/v1/health"
        // Says only who the caller is and what it may do (nothing, for an
        // anonymous caller here): the page asks it to know whether to
        // show the login form.
        || path == "/api/v1/whoami"
        // The login page lists its providers before anyone is logged in.
        || path == "/api/v1/login/providers"
    {
        drop(g);
        return next.run(req).await;
    }
    let secrets = s.secrets();
    let caller = match identify(&g, &secrets, &s.sessions, req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let control_set = secrets.control_token().is_some();
    if let Err(e) = refusal(
        &g.master.access,
        control_set,
        &caller,
        Grant::View,
        Scope::Everything,
    ) {
        return e.into_response();
    }
    drop((g, secrets));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" page.
        assert_eq!(
            hmac_sha256_hex(b"It's a Secret to Everybody", b"Hello, World!"),
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let sig = hmac_sha256_hex(b"s", b"body");
        assert!(hmac_matches("s", b"body", &sig));
        assert!(!hmac_matches("s", b"body!", &sig));
        assert!(!hmac_matches("s", b"body", "zz"));
        assert!(!hmac_matches("s", b"body", &sig[..10]));
        assert!(constant_time_eq("tok", "tok"));
        let auth = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, header::HeaderValue::from_static(v));
            bearer(&h).map(str::to_string)
        };
        for v in ["Bearer tok", "bearer tok", "BEARER  tok ", "BeArEr tok"] {
            assert_eq!(auth(v).as_deref(), Some("tok"), "{v}");
        }
        assert_eq!(auth("Basic dG9rOg=="), None);
        assert_eq!(auth("Bearertok"), None);
        assert!(!constant_time_eq("tok", "tok2"));
    }

    fn access(private: bool) -> Access {
        use bbc_graph::{Credential, Role, User};
        let role = |name: &str, grants: &[Grant], builders: &[&str]| Role {
            name: name.into(),
            grants: grants.to_vec(),
            builders: builders.iter().map(|b| b.to_string()).collect(),
        };
        let user = |name: &str, roles: &[&str]| User {
            name: name.into(),
            token: Some(Credential::Secret {
                secret: format!("{name}-token"),
            }),
            password: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            logins: Default::default(),
        };
        // Sorted by name, as the compiler leaves them.
        Access {
            private,
            roles: vec![
                role("core", &[Grant::Force, Grant::Cancel], &["core-*"]),
                role("dev", &[Grant::View, Grant::Force, Grant::Cancel], &[]),
                role("ops", &[Grant::Admin], &[]),
                role("viewer", &[Grant::View], &[]),
            ],
            users: vec![
                user("alice", &["dev"]),
                user("bob", &["ops"]),
                user("carol", &["core"]),
                user("vic", &["viewer"]),
            ],
            oauth: vec![],
        }
    }

    #[test]
    fn decide_by_grant_caller_and_builder() {
        use Decision::*;
        let u = |n: &str| Caller::User(n.into());
        let (b, core) = (Scope::Builder("web"), Scope::Builder("core-linux"));
        let a = access(false);
        let cases: &[(Caller, Grant, Scope, Decision)] = &[
            (Caller::Anonymous, Grant::View, Scope::Everything, Allow),
            (Caller::Anonymous, Grant::Force, b, Unauthenticated),
            (
                Caller::Anonymous,
                Grant::Admin,
                Scope::Everything,
                Unauthenticated,
            ),
            (u("vic"), Grant::Force, b, Forbidden),
            (u("vic"), Grant::Cancel, Scope::SomeBuilder, Forbidden),
            (u("alice"), Grant::Force, b, Allow),
            (u("alice"), Grant::Cancel, core, Allow),
            (u("alice"), Grant::Force, Scope::Everything, Allow),
            (u("alice"), Grant::Rebuild, b, Forbidden),
            (u("alice"), Grant::Admin, Scope::Everything, Forbidden),
            (u("carol"), Grant::Force, core, Allow),
            (u("carol"), Grant::Force, b, Forbidden),
            (u("carol"), Grant::Force, Scope::Everything, Forbidden),
            (u("carol"), Grant::Cancel, Scope::SomeBuilder, Allow),
            (u("bob"), Grant::Rebuild, b, Allow),
            (u("bob"), Grant::Admin, Scope::Everything, Allow),
            (u("nobody"), Grant::Force, b, Forbidden),
            (Caller::ControlToken, Grant::Force, b, Allow),
            (
                Caller::ControlToken,
                Grant::Admin,
                Scope::Everything,
                Forbidden,
            ),
            (Caller::AdminToken, Grant::Admin, Scope::Everything, Allow),
            (Caller::AdminToken, Grant::Cancel, core, Allow),
        ];
        for (c, g, sc, want) in cases {
            assert_eq!(decide(&a, false, c, *g, *sc), *want, "{c:?} {g:?} {sc:?}");
        }
        // A private master: reads need `view` (or admin, or a token).
        let p = access(true);
        let reads: &[(Caller, Decision)] = &[
            (Caller::Anonymous, Unauthenticated),
            (u("vic"), Allow),
            (u("carol"), Forbidden),
            (u("bob"), Allow),
            (Caller::ControlToken, Allow),
        ];
        for (c, want) in reads {
            assert_eq!(
                decide(&p, false, c, Grant::View, Scope::Everything),
                *want,
                "{c:?}"
            );
        }
    }

    #[test]
    fn without_users_the_control_token_alone_decides() {
        let open = Access::default();
        let anon = Caller::Anonymous;
        let force =
            |control: bool| decide(&open, control, &anon, Grant::Force, Scope::Builder("b"));
        assert_eq!(force(false), Decision::Allow);
        assert_eq!(force(true), Decision::Unauthenticated);
        assert_eq!(
            decide(&open, false, &anon, Grant::Admin, Scope::Everything),
            Decision::Unauthenticated
        );
    }

    #[test]
    fn identify_names_the_caller_never_by_a_prefix() {
        let g = fixture!("users_and_roles");
        let dir = std::env::temp_dir().join(format!("bbc-auth-identify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, value) in [
            ("w", "pw"),
            ("alice-token", "tok-alice"),
            ("bob-token", "tok-bob"),
            ("bbc-control-token", "tok-control"),
            ("bbc-admin-token", "tok-admin"),
        ] {
            std::fs::write(dir.join(name), value).unwrap();
        }
        let secrets = Secrets::resolve(&g, Some(&dir)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let who = |auth: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = auth {
                h.insert(header::AUTHORIZATION, header::HeaderValue::from_static(v));
            }
            identify(&g, &secrets, &Sessions::default(), &h).map_err(|e| e.0)
        };
        assert_eq!(who(None), Ok(Caller::Anonymous));
        assert_eq!(who(Some("Basic dG9rOg==")), Ok(Caller::Anonymous));
        assert_eq!(
            who(Some("Bearer tok-alice")),
            Ok(Caller::User("alice".into()))
        );
        assert_eq!(who(Some("bearer tok-bob")), Ok(Caller::User("bob".into())));
        assert_eq!(who(Some("Bearer tok-control")), Ok(Caller::ControlToken));
        assert_eq!(who(Some("Bearer tok-admin")), Ok(Caller::AdminToken));
        for wrong in [
            "Bearer tok-alic",
            "Bearer tok-alice2",
            "Bearer ",
            "Bearer pw",
        ] {
            assert_eq!(who(Some(wrong)), Err(StatusCode::UNAUTHORIZED), "{wrong}");
        }
    }
}
