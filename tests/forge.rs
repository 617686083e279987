//! A stand-in for a forge's OAuth2 provider (GitHub, GitLab or Gitea),
//! playing the documented endpoints the way the real service does and
//! recording every request, for the OAuth login tests:
//!
//! - authorize (`GET`): checks the client id, `response_type`, the scope
//!   GitLab needs and the PKCE method, then sends the browser back to
//!   `redirect_uri` with a fresh code and the `state` (or with
//!   `error=access_denied` when the account declines);
//! - token (`POST`, form): checks the client id and secret, that the code
//!   was issued and is used once, the same `redirect_uri`, and that the
//!   PKCE verifier hashes to the challenge; refuses as the provider does
//!   (GitHub: 200 with `error`; GitLab and Gitea: 400 `invalid_grant`);
//! - user (`GET`, `Authorization: Bearer`): the account behind the token.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::recorder::Request;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Github,
    Gitlab,
    Gitea,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Github => "github",
            Kind::Gitlab => "gitlab",
            Kind::Gitea => "gitea",
        }
    }
    fn authorize(self) -> &'static str {
        match self {
            Kind::Gitlab => "/oauth/authorize",
            _ => "/login/oauth/authorize",
        }
    }
    pub fn token(self) -> &'static str {
        match self {
            Kind::Gitlab => "/oauth/token",
            _ => "/login/oauth/access_token",
        }
    }
    /// The user endpoint under the forge's address, as the master derives
    /// it from `url=` (GitHub Enterprise: `/api/v3`).
    pub fn user(self) -> &'static str {
        match self {
            Kind::Github => "/api/v3/user",
            Kind::Gitlab => "/api/v4/user",
            Kind::Gitea => "/api/v1/user",
        }
    }
}

struct Grant {
    redirect_uri: String,
    challenge: String,
    login: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// The account the next authorization logs in as; `None`: it declines.
    login: Option<String>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    /// Answer the token endpoint with this status (and no JSON) instead.
    token_status: Option<u16>,
    /// Answer the token endpoint with this body instead.
    token_body: Option<String>,
    next: u64,
    /// The token endpoint never answers.
    hang_token: bool,
    /// Why the last refused request was refused.
    refusals: Vec<String>,
}

#[derive(Clone)]
pub struct Forge {
    pub kind: Kind,
    pub addr: String,
    pub client_id: String,
    pub client_secret: String,
    state: Arc<Mutex<State>>,
}

impl Forge {
    pub fn start(kind: Kind, client_id: &str, client_secret: &str) -> Forge {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        let f = Forge {
            kind,
            addr,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            state: Arc::new(Mutex::new(State::default())),
        };
        let f2 = f.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let f3 = f2.clone();
                std::thread::spawn(move || f3.serve(sock));
            }
        });
        f
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account the next authorization logs in as.
    pub fn log_in_as(&self, login: &str) {
        self.st().login = Some(login.into());
    }

    /// The next authorization is declined by the account.
    pub fn decline(&self) {
        self.st().login = None;
    }

    /// The token endpoint answers with `status` (a provider outage).
    pub fn fail_token(&self, status: u16, body: &str) {
        let mut st = self.st();
        st.token_status = Some(status);
        st.token_body = Some(body.into());
    }

    /// The token endpoint takes requests but never answers.
    pub fn hang_token(&self) {
        self.st().hang_token = true;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.st().requests.clone()
    }

    pub fn refusals(&self) -> Vec<String> {
        self.st().refusals.clone()
    }

    fn serve(&self, sock: TcpStream) {
        let Some(req) = crate::recorder::read_request(&sock) else {
            return;
        };
        if req.path == self.kind.token() && self.st().hang_token {
            self.st().requests.push(req);
            // Hold the connection without answering until the client
            // gives up.
            let mut buf = [0u8; 64];
            while (&sock).read(&mut buf).unwrap_or(0) > 0 {}
            return;
        }
        let (status, extra, body) = self.answer(&req);
        self.st().requests.push(req);
        let mut sock = sock;
        let _ = sock.write_all(
            format!(
                "HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }

    fn refuse(&self, why: String) {
        self.st().refusals.push(why);
    }

    /// Status, extra header lines and body for one request.
    fn answer(&self, req: &Request) -> (u16, String, String) {
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        let q = parse_form(query);
        let k = self.kind;
        if req.method == "GET" && path == k.authorize() {
            let get = |n: &str| q.get(n).cloned().unwrap_or_default();
            let mut bad = Vec::new();
            if get("client_id") != self.client_id {
                bad.push("client_id");
            }
            if get("response_type") != "code" {
                bad.push("response_type");
            }
            if k == Kind::Gitlab && get("scope") != "read_user" {
                bad.push("scope");
            }
            if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
                bad.push("pkce");
            }
            let redirect = get("redirect_uri");
            if !bad.is_empty() || redirect.is_empty() {
                self.refuse(format!("authorize: {bad:?}"));
                return (400, String::new(), r#"{"error":"invalid_request"}"#.into());
            }
            let state = get("state");
            let mut st = self.st();
            let to = match st.login.clone() {
                Some(login) => {
                    st.next += 1;
                    let code = format!("code-{}-{}", k.name(), st.next);
                    st.codes.insert(
                        code.clone(),
                        Grant {
                            redirect_uri: redirect.clone(),
                            challenge: get("code_challenge"),
                            login,
                        },
                    );
                    format!("{redirect}?code={code}&state={state}")
                }
                None => format!(
                    "{redirect}?error=access_denied&error_description=The+user+denied&state={state}"
                ),
            };
            return (302, format!("Location: {to}\r\n"), "{}".into());
        }
        if req.method == "POST" && path == k.token() {
            let mut st = self.st();
            if let Some(status) = st.token_status {
                return (
                    status,
                    String::new(),
                    st.token_body.clone().unwrap_or_default(),
                );
            }
            let f = parse_form(&req.body);
            let get = |n: &str| f.get(n).cloned().unwrap_or_default();
            let mut bad = Vec::new();
            if get("client_id") != self.client_id || get("client_secret") != self.client_secret {
                bad.push("client");
            }
            if k != Kind::Github && get("grant_type") != "authorization_code" {
                bad.push("grant_type");
            }
            if !req
                .header("accept")
                .is_some_and(|a| a.contains("application/json"))
            {
                bad.push("accept");
            }
            let grant = st.codes.remove(&get("code"));
            match &grant {
                None => bad.push("code"),
                Some(g) => {
                    if g.redirect_uri != get("redirect_uri") {
                        bad.push("redirect_uri");
                    }
                    if s256(&get("code_verifier")) != g.challenge {
                        bad.push("code_verifier");
                    }
                }
            }
            if let (true, Some(g)) = (bad.is_empty(), grant) {
                st.next += 1;
                let token = format!("tok-{}-{}", k.name(), st.next);
                st.tokens.insert(token.clone(), g.login);
                return (
                    200,
                    String::new(),
                    format!(r#"{{"access_token":"{token}","token_type":"bearer","scope":""}}"#),
                );
            }
            st.refusals.push(format!("token: {bad:?}"));
            return match k {
                Kind::Github => (
                    200,
                    String::new(),
                    r#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#.into(),
                ),
                _ => (400, String::new(), r#"{"error":"invalid_grant"}"#.into()),
            };
        }
        if req.method == "GET" && path == k.user() {
            let st = self.st();
            let token = req
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("");
            return match st.tokens.get(token) {
                Some(login) => {
                    let body = match k {
                        Kind::Gitlab => format!(r#"{{"id":7,"username":"{login}","name":"X"}}"#),
                        _ => format!(r#"{{"id":7,"login":"{login}","name":"X"}}"#),
                    };
                    (200, String::new(), body)
                }
                None => (
                    401,
                    String::new(),
                    r#"{"message":"Bad credentials"}"#.into(),
                ),
            };
        }
        (404, String::new(), r#"{"message":"Not Found"}"#.into())
    }
}

/// `a=1&b=x%20y` → map (also `+` for a space, as forms have it).
pub fn parse_form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// BASE64URL(SHA256(verifier)), unpadded: the PKCE S256 challenge.
fn s256(verifier: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(verifier.as_bytes());
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = String::new();
    for byte in d.iter() {
        bits = (bits << 8) | u32::from(*byte);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(A[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(A[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}
