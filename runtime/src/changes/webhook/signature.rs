//! Which header carries a delivery's signature, per forge, and checking it
//! (the constant-time checks themselves are in `crate::auth`).

use axum::http::{HeaderMap, StatusCode};

use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{basic_credentials, constant_time_eq, hmac_matches};

pub(super) enum Auth {
    /// HMAC of the body in this header, hex, after an optional prefix.
    Hmac {
        headers: &'static [&'static str],
        prefix: &'static str,
    },
    /// The secret itself in this header.
    Token { header: &'static str },
    /// HTTP Basic credentials whose password is the secret (Buildbot's
    /// `change_hook_auth`, which commit hooks written for it send), or
    /// else an HMAC as in `Hmac`.
    BasicOrHmac {
        headers: &'static [&'static str],
        prefix: &'static str,
    },
}

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or(""))
}

pub(super) fn verify(auth: &Auth, secret: &str, headers: &HeaderMap, body: &[u8]) -> R<()> {
    if let Auth::BasicOrHmac {
        headers: names,
        prefix,
    } = auth
    {
        return match header(headers, "authorization").filter(|v| v.starts_with("Basic ")) {
            Some(v) => match basic_credentials(v) {
                Some((_, password)) if constant_time_eq(secret, &password) => Ok(()),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the Authorization header's password does not match this change source's secret",
                )),
            },
            None => verify(&Auth::Hmac { headers: names, prefix }, secret, headers, body),
        };
    }
    let (name, given) = match auth {
        Auth::Hmac { headers: names, .. } | Auth::BasicOrHmac { headers: names, .. } => {
            let found = names
                .iter()
                .find_map(|n| header(headers, n).map(|v| (*n, v)));
            match found {
                Some(x) => x,
                None => {
                    return Err(missing_signature(
                        names.first().copied().unwrap_or("signature"),
                    ))
                }
            }
        }
        Auth::Token { header: n } => match header(headers, n) {
            Some(v) => (*n, v),
            None => return Err(missing_signature(n)),
        },
    };
    let ok = match auth {
        Auth::Hmac { prefix, .. } | Auth::BasicOrHmac { prefix, .. } => {
            match given.strip_prefix(prefix) {
                Some(hex) => hmac_matches(secret, body, hex),
                None => false,
            }
        }
        Auth::Token { .. } => constant_time_eq(secret, given),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("the {name} header does not match this change source's secret"),
        ))
    }
}

pub(super) fn missing_signature(h: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "missing {h} header: this change source has a secret, so deliveries must be signed"
        ),
    )
}
