//! Cross-site request forgery: a browser sends the session cookie with
//! whatever request another site makes it send, so the cookie alone must
//! never be enough to change anything.
//!
//! One layer over every route ([`layer`]) decides, so no handler can
//! forget: a state-changing request (any method but GET, HEAD, OPTIONS)
//! that a live session cookie would identify must
//! - carry the session's CSRF token in [`CSRF_HEADER`] (only pages of
//!   this origin can read it, from the login answer or `GET
//!   /api/v1/whoami`; a cross-site form cannot set headers at all), and
//! - if it has an `Origin` header, name this master's origin.
//!
//! A request with `Authorization: Bearer` is left alone: a browser never
//! adds that header by itself, and the token, not the cookie, identifies
//! it. `POST /api/v1/login` needs no token (there is no session yet), but
//! a foreign `Origin` is refused there too, so another site cannot log a
//! visitor in as someone else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::constant_time_eq;
use crate::api_error::ApiError;
use crate::state::sessions::{cookie_value, CSRF_HEADER};
use crate::state::{now_ms, Shared};

/// The login endpoint, the one state-changing request without a session.
pub const LOGIN_PATH: &str = "/api/v1/login";

/// What [`check`] found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No CSRF header, or not the session's token.
    Token,
    /// An `Origin` other than this master's.
    Origin,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Token => {
                "missing or wrong CSRF token: a request the session cookie authenticates must \
                 repeat the session's token (from the login answer or GET /api/v1/whoami) in \
                 the x-bbc-csrf header"
            }
            Refusal::Origin => {
                "cross-origin request refused: its Origin is not this master's, and it carries \
                 the session cookie"
            }
        }
    }
}

/// The request as the check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub bearer: bool,
    /// The CSRF token of the live session the cookie names, if any.
    pub session_csrf: Option<&'a str>,
    /// The [`CSRF_HEADER`] sent.
    pub header_csrf: Option<&'a str>,
    /// The `Origin` header sent.
    pub origin: Option<&'a str>,
}

/// The decision, pure: `Ok` lets the request through.
pub fn check(r: &Seen, own_origins: &[String]) -> Result<(), Refusal> {
    if matches!(*r.method, Method::GET | Method::HEAD | Method::OPTIONS) || r.bearer {
        return Ok(());
    }
    let foreign = r
        .origin
        .is_some_and(|o| !own_origins.iter().any(|own| own.eq_ignore_ascii_case(o)));
    if r.path == LOGIN_PATH {
        return if foreign {
            Err(Refusal::Origin)
        } else {
            Ok(())
        };
    }
    let Some(expected) = r.session_csrf else {
        // No live session: the cookie identifies no one, so the request
        // is as anonymous as one without it and gains nothing from it.
        return Ok(());
    };
    if foreign {
        return Err(Refusal::Origin);
    }
    match r.header_csrf {
        Some(given) if constant_time_eq(given, expected) => Ok(()),
        _ => Err(Refusal::Token),
    }
}

/// This master's origins: the scheme it serves and the `Host` the
/// request was sent to, and the origin of `master { url }` (the address
/// behind a reverse proxy) when set.
pub fn own_origins(headers: &HeaderMap, https: bool, url: Option<&str>) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        let scheme = if https { "https" } else { "http" };
        out.push(format!("{scheme}://{host}"));
    }
    if let Some(o) = url.and_then(origin_of) {
        out.push(o);
    }
    out
}

/// `scheme://host[:port]` of a URL, as a browser writes it in `Origin`
/// (no path, no trailing slash).
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// The layer: refuses with 403 JSON what [`check`] refuses.
pub async fn layer(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let h = req.headers();
    let session = cookie_value(h).and_then(|id| s.sessions.get(id, now_ms()));
    let g = s.graph();
    let origins = own_origins(h, s.https, g.master.url.as_deref());
    let seen = Seen {
        method: req.method(),
        path: req.uri().path(),
        bearer: super::has_bearer(h),
        session_csrf: session.as_ref().map(|s| s.csrf.as_str()),
        header_csrf: h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()),
        origin: h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
    };
    match check(&seen, &origins) {
        Ok(()) => {
            drop(g);
            next.run(req).await
        }
        Err(why) => {
            tracing::warn!(
                path = seen.path,
                user = session.as_ref().map_or("", |s| s.user.as_str()),
                "refused a {} {}: {}",
                seen.method,
                seen.path,
                match why {
                    Refusal::Token => "missing or wrong CSRF token",
                    Refusal::Origin => "foreign Origin",
                }
            );
            ApiError(StatusCode::FORBIDDEN, why.message().into()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_table() {
        let own = vec!["http://127.0.0.1:8010".to_string()];
        let base = Seen {
            method: &Method::POST,
            path: "/api/v1/builders/b/force",
            bearer: false,
            session_csrf: Some("tok"),
            header_csrf: Some("tok"),
            origin: None,
        };
        let cases: &[(&str, Seen, Result<(), Refusal>)] = &[
            ("session with its token", base, Ok(())),
            (
                "same origin",
                Seen {
                    origin: Some("http://127.0.0.1:8010"),
                    ..base
                },
                Ok(()),
            ),
            (
                "no token",
                Seen {
                    header_csrf: None,
                    ..base
                },
                Err(Refusal::Token),
            ),
            (
                "wrong token",
                Seen {
                    header_csrf: Some("tok2"),
                    ..base
                },
                Err(Refusal::Token),
            ),
            (
                "empty token",
                Seen {
                    header_csrf: Some(""),
                    ..base
                },
                Err(Refusal::Token),
            ),
            (
                "foreign origin, right token",
                Seen {
                    origin: Some("http://evil.example"),
                    ..base
                },
                Err(Refusal::Origin),
            ),
            (
                "opaque origin",
                Seen {
                    origin: Some("null"),
                    ..base
                },
                Err(Refusal::Origin),
            ),
            (
                "other port is another origin",
                Seen {
                    origin: Some("http://127.0.0.1:8011"),
                    ..base
                },
                Err(Refusal::Origin),
            ),
            (
                "bearer wins: no token needed",
                Seen {
                    bearer: true,
                    header_csrf: None,
                    origin: Some("http://evil.example"),
                    ..base
                },
                Ok(()),
            ),
            (
                "reads are never checked",
                Seen {
                    method: &Method::GET,
                    header_csrf: None,
                    ..base
                },
                Ok(()),
            ),
            (
                "DELETE is checked",
                Seen {
                    method: &Method::DELETE,
                    header_csrf: None,
                    ..base
                },
                Err(Refusal::Token),
            ),
            (
                "no live session: nothing to protect",
                Seen {
                    session_csrf: None,
                    header_csrf: None,
                    origin: Some("http://evil.example"),
                    ..base
                },
                Ok(()),
            ),
            (
                "login needs no token",
                Seen {
                    path: LOGIN_PATH,
                    session_csrf: None,
                    header_csrf: None,
                    ..base
                },
                Ok(()),
            ),
            (
                "login from another site",
                Seen {
                    path: LOGIN_PATH,
                    session_csrf: None,
                    origin: Some("http://evil.example"),
                    ..base
                },
                Err(Refusal::Origin),
            ),
        ];
        for (what, seen, want) in cases {
            assert_eq!(check(seen, &own), *want, "{what}");
        }
    }

    #[test]
    fn own_origins_from_host_scheme_and_url() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "ci.local:8010".parse().unwrap());
        assert_eq!(
            own_origins(&h, false, None),
            vec!["http://ci.local:8010".to_string()]
        );
        assert_eq!(
            own_origins(&h, true, Some("https://ci.example.org/bbc/")),
            vec![
                "https://ci.local:8010".to_string(),
                "https://ci.example.org".to_string()
            ]
        );
        assert!(own_origins(&HeaderMap::new(), false, Some("no-scheme")).is_empty());
    }
}
