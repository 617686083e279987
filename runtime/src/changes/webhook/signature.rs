//! Which header carries a delivery's signature, per forge, and checking it
//! (the constant-time checks themselves are in `crate::auth`).

use axum::http::{HeaderMap, StatusCode};

use crate::api_error::{ApiError, ApiResult as R};
use crate::auth::{constant_time_eq, hmac_matches};

pub(super) enum Auth {
    /// HMAC of the body in this header, hex, after an optional prefix.
    Hmac {
        headers: &'static [&'static str],
        prefix: &'static str,
    },
    /// The secret itself in this header.
    Token { header: &'static str },
}

pub(super) fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or(""))
}

pub(super) fn verify(auth: &Auth, secret: &str, headers: &HeaderMap, body: &[u8]) -> R<()> {
    let (name, given) = match auth {
        Auth::Hmac { headers: names, .. } => {
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
        Auth::Hmac { prefix, .. } => match given.strip_prefix(prefix) {
            Some(hex) => hmac_matches(secret, body, hex),
            None => false,
        },
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
