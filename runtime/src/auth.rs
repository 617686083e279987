//! Who may do what, and the checks that decide it, in one place: the
//! worker password, the API's control and admin tokens (`Authorization:
//! Bearer TOKEN`), and the webhook signatures (HMAC of the body, or the
//! secret itself). Every comparison of a secret runs in constant time.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};

use crate::api_error::ApiError;
use crate::secrets::{env_var_name, ADMIN_TOKEN};
use crate::state::Shared;

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

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError(StatusCode::UNAUTHORIZED, msg.into()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"bbc\""),
    );
    r
}

/// Taken by the handlers that act on builds (force, cancel, submit a
/// change, poll now): when the master has a control token, the request
/// must carry it (or the admin token) as `Authorization: Bearer TOKEN`;
/// without one, these actions are open.
pub struct Control;

impl axum::extract::FromRequestParts<Arc<Shared>> for Control {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let secrets = s.secrets();
        let Some(control) = secrets.control_token() else {
            return Ok(Control);
        };
        let eq = constant_time_eq;
        match bearer(&parts.headers) {
            Some(g) if eq(g, control) || secrets.admin_token().is_some_and(|a| eq(g, a)) => {
                Ok(Control)
            }
            Some(_) => Err(unauthorized("wrong token")),
            None => Err(unauthorized(
                "this master needs a token for this action: send `Authorization: Bearer TOKEN` \
                 (`bbc force` and `bbc sendchange` read it from $BBC_TOKEN)",
            )),
        }
    }
}

/// Checks `Authorization: Bearer TOKEN` against the admin token; the
/// refusal to answer when it does not match.
pub fn refuse_unless_admin(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let secrets = s.secrets();
    let Some(token) = secrets.admin_token() else {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "applying a config through the API is disabled: the master has no admin token. \
                 Put one in the secret `{ADMIN_TOKEN}` (a file of that name in the master's secrets \
                 directory, or the environment variable {}), reload the master (SIGHUP) or restart it, \
                 then send it as `Authorization: Bearer TOKEN` (`bbc apply --token-file FILE`)",
                env_var_name(ADMIN_TOKEN)
            ),
        )
        .into_response());
    };
    let msg = match bearer(headers) {
        Some(g) if constant_time_eq(g, token) => return None,
        Some(_) => "wrong admin token",
        None => "this endpoint needs the admin token: send `Authorization: Bearer TOKEN`",
    };
    Some(unauthorized(msg))
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
}
