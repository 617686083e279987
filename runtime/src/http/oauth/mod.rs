//! OAuth2 login through GitHub, GitLab and Gitea (authorization code with
//! `state` and PKCE S256, RFC 6749 and 7636):
//!
//! - `GET /login/oauth/{kind}` remembers a login under way
//!   (`state::oauth::Flows`), binds it to the browser with a short-lived
//!   cookie and redirects to the provider's authorize page;
//! - `GET /login/oauth/{kind}/callback?code&state` checks the state (the
//!   map and the cookie), exchanges the code, asks the provider who logged
//!   in, maps that login to a configured `user`, starts a session
//!   (`state::sessions`) and redirects to `/`;
//! - `GET /api/v1/login/providers` lists the configured providers for the
//!   web UI's "Log in with …" links.
//!
//! Every callback outcome past the state check is audit-logged; no log
//! line, error or audit entry holds the code, a token or the client secret
//! (the audit path is the path alone, never the query).

mod provider;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use bbc_graph::{Graph, OAuthKind, OAuthProvider};

use crate::api_error::ApiError;
use crate::state::oauth::{Flow, STATE_COOKIE, TTL};
use crate::state::sessions::cookie;
use crate::state::{now_ms, sessions, Shared};
use crate::store::NewAuditEntry;

pub(super) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/login/oauth/{provider}", get(start))
        .route("/login/oauth/{provider}/callback", get(callback))
        .route("/api/v1/login/providers", get(providers))
}

/// `GET /api/v1/login/providers`: open even on a private master (the
/// login page needs it before anyone is logged in); names no secret.
async fn providers(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let g = s.graph();
    let list: Vec<_> = g
        .master
        .access
        .oauth
        .iter()
        .map(|p| {
            json!({
                "kind": p.kind.as_str(),
                "label": p.kind.label(),
                "login": format!("/login/oauth/{}", p.kind.as_str()),
            })
        })
        .collect();
    Json(json!({ "providers": list }))
}

/// The configured provider a path names, or the 404.
fn configured(g: &Graph, name: &str) -> Result<OAuthProvider, ApiError> {
    OAuthKind::parse(name)
        .and_then(|k| g.master.access.oauth(k))
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = g
                .master
                .access
                .oauth
                .iter()
                .map(|p| p.kind.as_str())
                .collect();
            let hint = if known.is_empty() {
                "this master has no OAuth login configured".to_string()
            } else {
                format!("this master logs in through: {}", known.join(", "))
            };
            ApiError::not_found(format!("no OAuth provider `{name}`: {hint}"))
        })
}

/// Cookies only over HTTPS when the master is served over HTTPS.
fn secure(g: &Graph) -> bool {
    g.master.http_tls.is_some()
        || g.master
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

/// Where the provider sends the browser back: under the master's `url`,
/// else its HTTP listen address as bound (fine on one machine; anything
/// else needs `url`, which is what the provider has registered).
fn redirect_uri(s: &Shared, g: &Graph, kind: OAuthKind) -> String {
    let base = match g.master.url.as_deref() {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let scheme = if g.master.http_tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", s.reporters.http_addr())
        }
    };
    format!("{base}/login/oauth/{}/callback", kind.as_str())
}

fn state_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{STATE_COOKIE}={value}; Path=/login/oauth; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /login/oauth/{kind}`: off to the provider.
async fn start(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let g = s.graph();
    let p = configured(&g, &name)?;
    let (state, verifier) = (sessions::random_hex(32), sessions::random_hex(32));
    if state.is_empty() || verifier.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the system's random generator failed; no login can start",
        ));
    }
    let redirect = redirect_uri(&s, &g, p.kind);
    let to = provider::authorize_url(&p, &redirect, &state, &verifier);
    s.oauth_flows.start(
        &state,
        Flow {
            kind: p.kind,
            verifier,
            redirect_uri: redirect,
            started: now_ms(),
        },
    );
    let location = HeaderValue::from_str(&to)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unusable provider URL"))?;
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(
        header::SET_COOKIE,
        state_cookie(&state, TTL / 1000, secure(&g)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// A refused callback: its answer, and who to name in the audit log.
struct Refusal {
    status: StatusCode,
    message: String,
    who: String,
}

fn refuse(status: StatusCode, message: impl Into<String>, who: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        who: who.into(),
    }
}

/// `GET /login/oauth/{kind}/callback`.
async fn callback(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let g = s.graph();
    let p = match configured(&g, &name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let secure = secure(&g);
    drop(g);
    let path = req.uri().path().to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let q = match Query::<CallbackQuery>::try_from_uri(req.uri()) {
        Ok(Query(q)) => q,
        // Not the rejection's text: it could quote the query, code included.
        Err(_) => return ApiError::bad("malformed callback query").into_response(),
    };
    // The state first: until it checks out, this request may come from
    // anyone, and is answered without touching the provider or the store.
    let Some(flow) = q
        .state
        .as_deref()
        .filter(|st| {
            cookie(req.headers(), STATE_COOKIE)
                .is_some_and(|c| crate::auth::constant_time_eq(c, st))
        })
        .and_then(|st| s.oauth_flows.take(st, now_ms()))
        .filter(|f| f.kind == p.kind)
    else {
        tracing::warn!(provider = p.kind.as_str(), peer = ?peer, "OAuth callback refused: unknown, expired or foreign state");
        let mut r = ApiError::bad(
            "this login expired, was already used or was not started in this browser: start again from the login page",
        )
        .into_response();
        r.headers_mut()
            .insert(header::SET_COOKIE, state_cookie("", 0, secure));
        return r;
    };
    let outcome = finish(&s, &p, &q, &flow).await;
    let (status, who) = match &outcome {
        Ok((user, _)) => (StatusCode::FOUND, user.clone()),
        Err(r) => (r.status, r.who.clone()),
    };
    let entry = NewAuditEntry {
        who: who.clone(),
        method: "GET".into(),
        path,
        builder: None,
        build: None,
        peer,
        status: status.as_u16(),
    };
    if let Err(e) = s.db(move |st| st.add_audit(entry, now_ms())).await {
        tracing::warn!("the audit log could not record an OAuth login: {e}");
    }
    let mut r = match outcome {
        Ok((user, login)) => {
            tracing::info!(
                user,
                provider = p.kind.as_str(),
                login,
                "logged in through {}",
                p.kind.label()
            );
            let new = s.sessions.start(&user, p.kind.as_str(), now_ms());
            let mut r = StatusCode::FOUND.into_response();
            let h = r.headers_mut();
            h.insert(header::LOCATION, HeaderValue::from_static("/"));
            h.append(header::SET_COOKIE, sessions::set_cookie(&new.id, secure));
            r
        }
        Err(refusal) => {
            tracing::warn!(
                provider = p.kind.as_str(),
                who,
                status = refusal.status.as_u16(),
                "OAuth login refused: {}",
                refusal.message
            );
            let mut r = ApiError(refusal.status, refusal.message).into_response();
            if refusal.status.is_server_error() {
                r.extensions_mut().insert(crate::api_error::LoggedByRoute);
            }
            r
        }
    };
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, state_cookie("", 0, secure));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The callback past its state check: the user to log in as and the
/// provider login, or why not.
async fn finish(
    s: &Shared,
    p: &OAuthProvider,
    q: &CallbackQuery,
    flow: &Flow,
) -> Result<(String, String), Refusal> {
    let label = p.kind.label();
    if let Some(e) = q.error.as_deref() {
        return Err(match e {
            "access_denied" => refuse(
                StatusCode::FORBIDDEN,
                format!("the login was declined at {label}"),
                "anonymous",
            ),
            other => refuse(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{label} refused the login: `{}`",
                    provider::error_code(other).unwrap_or("(unreadable)")
                ),
                "anonymous",
            ),
        });
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("{label} sent the browser back without a code"),
            "anonymous",
        ));
    };
    let secret = s.secrets().get(&p.client_secret).map(str::to_string);
    let Some(secret) = secret else {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {label} client secret is not available to the master"),
            "anonymous",
        ));
    };
    let gateway = |f: provider::Failure| {
        let status = match f {
            provider::Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            provider::Failure::Bad(_) => StatusCode::BAD_GATEWAY,
        };
        refuse(status, format!("{label}: {}", f.message()), "anonymous")
    };
    let token = provider::exchange(p, &secret, code, &flow.redirect_uri, &flow.verifier)
        .await
        .map_err(gateway)?;
    let login = provider::login(p, &token).await.map_err(gateway)?;
    let g = s.graph();
    let user = g
        .master
        .access
        .users
        .iter()
        .find(|u| u.has_login(p.kind, &login))
        .map(|u| u.name.clone());
    match user {
        Some(u) => Ok((u, login)),
        None => Err(refuse(
            StatusCode::FORBIDDEN,
            format!("the {label} account `{login}` is not a user of this master: ask an admin to add `{}=\"{login}\"` to your `user`", p.kind.as_str()),
            format!("{}:{login}", p.kind.as_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cookie_is_scoped_and_short_lived() {
        let c = state_cookie("abc", TTL / 1000, true);
        let c = c.to_str().unwrap_or_default();
        for part in [
            "bbc_oauth_state=abc",
            "Path=/login/oauth",
            "HttpOnly",
            "SameSite=Lax",
            "Max-Age=600",
            "Secure",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("bbc_session=x; bbc_oauth_state=st1"),
        );
        assert_eq!(cookie(&h, STATE_COOKIE), Some("st1"));
        assert_eq!(cookie(&h, "nope"), None);
    }
}
