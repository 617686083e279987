//! What each forge's OAuth2 endpoints look like, and the two calls the
//! callback makes to them: the code exchange and the user lookup.
//!
//! Documented endpoints:
//! - GitHub: `{url}/login/oauth/authorize`, `POST {url}/login/oauth/access_token`
//!   (JSON with `Accept: application/json`; refusals come as 200 with
//!   `error`), `GET {api}/user` → `login`.
//! - GitLab: `{url}/oauth/authorize` (`scope=read_user`), `POST {url}/oauth/token`,
//!   `GET {api}/user` (api: `{url}/api/v4`) → `username`.
//! - Gitea: `{url}/login/oauth/authorize`, `POST {url}/login/oauth/access_token`,
//!   `GET {api}/user` (api: `{url}/api/v1`) → `login`.
//!
//! Nothing here logs: the callers log what they choose, and no error
//! message holds the code, the token, the client secret or a URL.

use std::sync::OnceLock;
use std::time::Duration;

use bbc_graph::{OAuthKind, OAuthProvider};

/// Provider calls give up after this long in all (connect: [`CONNECT`]);
/// the browser is waiting on the callback meanwhile.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT: Duration = Duration::from_secs(5);
/// The most of a provider's answer read: a token or a user record is a
/// few hundred bytes.
const MAX_ANSWER: usize = 256 << 10;

/// Why a provider call failed; the message is safe to show and log.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The provider did not answer in time.
    Timeout(String),
    /// It answered, but not with what its API documents (an error status,
    /// a refusal, a body that is not the expected JSON), or not at all.
    Bad(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Timeout(m) | Failure::Bad(m) => m,
        }
    }
}

/// `{url}/…/authorize?…`: where the browser is sent to log in.
pub fn authorize_url(p: &OAuthProvider, redirect_uri: &str, state: &str, verifier: &str) -> String {
    let path = match p.kind {
        OAuthKind::Github | OAuthKind::Gitea => "/login/oauth/authorize",
        OAuthKind::Gitlab => "/oauth/authorize",
    };
    // The least access that still names the account: GitHub's public
    // profile needs no scope at all.
    let scope = match p.kind {
        OAuthKind::Github => None,
        OAuthKind::Gitlab => Some("read_user"),
        OAuthKind::Gitea => Some("read:user"),
    };
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", p.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("state", state),
    ];
    if let Some(s) = scope {
        q.push(("scope", s));
    }
    let challenge = pkce_challenge(verifier);
    q.push(("code_challenge", &challenge));
    q.push(("code_challenge_method", "S256"));
    format!("{}{path}?{}", p.url, form(&q))
}

fn token_url(p: &OAuthProvider) -> String {
    match p.kind {
        OAuthKind::Github | OAuthKind::Gitea => format!("{}/login/oauth/access_token", p.url),
        OAuthKind::Gitlab => format!("{}/oauth/token", p.url),
    }
}

/// The field of the user record that holds the login.
fn login_field(kind: OAuthKind) -> &'static str {
    match kind {
        OAuthKind::Github | OAuthKind::Gitea => "login",
        OAuthKind::Gitlab => "username",
    }
}

/// PKCE S256 (RFC 7636 §4.2): BASE64URL(SHA256(verifier)), unpadded.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    base64url(&sha2::Sha256::digest(verifier.as_bytes()))
}

fn base64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `application/x-www-form-urlencoded` (also a URL's query): every byte
/// but the unreserved ones percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        pct(&mut out, k);
        out.push('=');
        pct(&mut out, v);
    }
    out
}

fn pct(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// An OAuth error code (`access_denied`, `invalid_grant`) fit to repeat
/// in a message: the word itself when it is one, else nothing.
pub fn error_code(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(s)
}

/// The client provider calls share: timeouts, never following redirects
/// (a token endpoint that redirects is misconfigured, and following would
/// resend the code elsewhere). Built off the async threads: loading the
/// platform's root certificates reads files.
async fn client() -> Result<&'static reqwest::Client, Failure> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return c.as_ref().map_err(|e| Failure::Bad(e.clone()));
    }
    let built = tokio::task::spawn_blocking(|| {
        crate::tls::install_crypto_provider();
        reqwest::Client::builder()
            .user_agent(concat!("bbc/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))
    })
    .await
    .unwrap_or_else(|e| Err(format!("cannot set up the HTTP client: {e}")));
    CLIENT
        .get_or_init(|| built)
        .as_ref()
        .map_err(|e| Failure::Bad(e.clone()))
}

fn sent(what: &str, e: reqwest::Error) -> Failure {
    let e = e.without_url();
    if e.is_timeout() {
        Failure::Timeout(format!("the {what} timed out after {TIMEOUT:?}"))
    } else {
        Failure::Bad(format!("the {what} failed: {}", chain(&e)))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
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

/// The status and the JSON body of an answer, read up to [`MAX_ANSWER`].
async fn answer(
    what: &str,
    mut resp: reqwest::Response,
) -> Result<(u16, Option<serde_json::Value>), Failure> {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if body.len() + c.len() <= MAX_ANSWER => body.extend_from_slice(&c),
            Ok(Some(_)) => return Err(Failure::Bad(format!("the {what}'s answer is too large"))),
            Ok(None) => break,
            Err(e) => return Err(sent(what, e)),
        }
    }
    Ok((status, serde_json::from_slice(&body).ok()))
}

/// Exchanges the authorization `code` for an access token (the PKCE
/// `verifier` proves this master started the login).
pub async fn exchange(
    p: &OAuthProvider,
    client_secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<String, Failure> {
    const WHAT: &str = "token request";
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("client_id", &p.client_id),
        ("client_secret", client_secret),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]);
    let resp = client()
        .await?
        .post(token_url(p))
        .header(reqwest::header::ACCEPT, "application/json")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| sent(WHAT, e))?;
    let (status, json) = answer(WHAT, resp).await?;
    let refused = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(|e| e.as_str())
        .map(|e| error_code(e).unwrap_or("(unreadable)").to_string());
    match (status, refused) {
        (_, Some(e)) => Err(Failure::Bad(format!(
            "the provider refused the code: `{e}` (HTTP {status})"
        ))),
        (200..=299, None) => json
            .as_ref()
            .and_then(|j| j.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Failure::Bad("the provider's token answer holds no `access_token`".into())
            }),
        _ => Err(Failure::Bad(format!(
            "the provider answered the {WHAT} with HTTP {status}"
        ))),
    }
}

/// The login of the account the access token belongs to.
pub async fn login(p: &OAuthProvider, token: &str) -> Result<String, Failure> {
    const WHAT: &str = "user request";
    let resp = client()
        .await?
        .get(format!("{}/user", p.api_url))
        .header(reqwest::header::ACCEPT, "application/json")
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| sent(WHAT, e))?;
    let (status, json) = answer(WHAT, resp).await?;
    if !(200..=299).contains(&status) {
        return Err(Failure::Bad(format!(
            "the provider answered the {WHAT} with HTTP {status}"
        )));
    }
    let field = login_field(p.kind);
    json.as_ref()
        .and_then(|j| j.get(field))
        .and_then(|l| l.as_str())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Failure::Bad(format!("the provider's user record holds no `{field}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn authorize_urls_per_kind() {
        let g = fixture!("oauth");
        let redirect = "https://ci.example.org/login/oauth/x/callback";
        let url = |k: OAuthKind| {
            let p = g.master.access.oauth(k).unwrap();
            authorize_url(p, redirect, "st", "ver")
        };
        let c = pkce_challenge("ver");
        let r = "https%3A%2F%2Fci.example.org%2Flogin%2Foauth%2Fx%2Fcallback";
        assert_eq!(
            url(OAuthKind::Github),
            format!("https://github.example.com/login/oauth/authorize?response_type=code&client_id=gh-id&redirect_uri={r}&state=st&code_challenge={c}&code_challenge_method=S256")
        );
        assert_eq!(
            url(OAuthKind::Gitlab),
            format!("https://gitlab.com/oauth/authorize?response_type=code&client_id=gl-id&redirect_uri={r}&state=st&scope=read_user&code_challenge={c}&code_challenge_method=S256")
        );
        assert!(url(OAuthKind::Gitea).starts_with(
            "https://gitea.example.org/login/oauth/authorize?response_type=code&client_id=gt%20id&"
        ));
        assert_eq!(
            token_url(g.master.access.oauth(OAuthKind::Gitlab).unwrap()),
            "https://gitlab.com/oauth/token"
        );
        assert_eq!(
            g.master
                .access
                .oauth(OAuthKind::Github)
                .map(|p| p.api_url.as_str()),
            Some("https://github.example.com/api/v3")
        );
    }

    #[test]
    fn only_plain_error_codes_are_repeated() {
        assert_eq!(error_code("access_denied"), Some("access_denied"));
        assert_eq!(error_code("<script>"), None);
        assert_eq!(error_code(""), None);
        assert_eq!(error_code(&"a".repeat(65)), None);
    }
}
