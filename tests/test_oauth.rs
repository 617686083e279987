//! OAuth2 login through GitHub, GitLab and Gitea against a real `bbc
//! master`, each provider played by a local stand-in (`forge.rs`) that
//! checks what the real one checks. A plain HTTP client plays the browser,
//! following each redirect by hand and carrying cookies.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{temp_dir, write_secret, Master};
use crate::forge::{parse_form, Forge, Kind};

/// The client secrets the master reads from its secrets directory.
const SECRETS: &[(Kind, &str)] = &[
    (Kind::Github, "gh-client-secret-91f3a7"),
    (Kind::Gitlab, "gl-client-secret-4be0c2"),
    (Kind::Gitea, "gt-client-secret-d18e55"),
];

const ADMIN: &str = "admin-tok-5e2b";

fn secret_of(k: Kind) -> &'static str {
    SECRETS
        .iter()
        .find(|(x, _)| *x == k)
        .map(|(_, s)| *s)
        .unwrap_or("")
}

/// One forge of each kind and a master that logs in through all three.
/// Alice is `Alice-GH` on GitHub (matched in any case), `alice` on GitLab
/// and `alice-t` on Gitea; bob has only a Gitea login.
fn start(dir: &Path) -> (Master, Vec<Forge>) {
    start_with(dir, "")
}

/// [`start`] with `extra` settings in `master`.
fn start_with(dir: &Path, extra: &str) -> (Master, Vec<Forge>) {
    let forges: Vec<Forge> = SECRETS
        .iter()
        .map(|(k, s)| Forge::start(*k, &format!("{}-client-id", k.name()), s))
        .collect();
    write_secret(dir, "w", "worker-pw-1");
    write_secret(dir, "alice-token", "alice-tok-1");
    write_secret(dir, "bob-token", "bob-tok-1");
    write_secret(dir, "bbc-admin-token", ADMIN);
    let mut oauth = String::new();
    for f in &forges {
        let k = f.kind.name();
        write_secret(dir, &format!("{k}-oauth"), secret_of(f.kind));
        oauth.push_str(&format!(
            "    oauth \"{k}\" client-id=\"{}\" client-secret=(secret)\"{k}-oauth\" url=\"{}\"\n",
            f.client_id,
            f.url()
        ));
    }
    let config = format!(
        r#"master {{
{extra}
{oauth}}}
worker "w" password=(secret)"w"
scheduler "force" kind="force" {{
    builders "b"
}}
builder "b" {{
    workers "w"
    steps {{
        shell "true"
    }}
}}
role "dev" grant="view force"
role "viewer" grant="view"
user "alice" token=(secret)"alice-token" roles="dev" github="Alice-GH" gitlab="alice" gitea="alice-t"
user "bob" token=(secret)"bob-token" roles="viewer" gitea="bob"
"#
    );
    (Master::start_logged(dir, &config), forges)
}

/// An answer: status, headers (names lower-cased, repeated ones kept), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// GET `url` (http://host:port/path) with `cookie`, reading the whole answer.
fn get(url: &str, cookie: &str) -> Answer {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not http: {url}"));
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let cookie = if cookie.is_empty() {
        String::new()
    } else {
        format!("Cookie: {cookie}\r\n")
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: text/html\r\n{cookie}\r\n"
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A browser's cookie jar, enough for this test: name → value, set and
/// cleared by `Set-Cookie` (Max-Age=0 clears).
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn take(&mut self, a: &Answer) {
        for (k, v) in &a.headers {
            if k != "set-cookie" {
                continue;
            }
            let first = v.split(';').next().unwrap_or("");
            if let Some((name, value)) = first.split_once('=') {
                if v.contains("Max-Age=0") || value.is_empty() {
                    self.0.remove(name);
                } else {
                    self.0.insert(name.to_string(), value.to_string());
                }
            }
        }
    }
    fn header(&self) -> String {
        let mut v: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.sort();
        v.join("; ")
    }
}

/// Starts a login at the master and lets the forge answer the authorize
/// page: the callback URL the browser is sent back to (not yet visited),
/// with the jar holding the master's state cookie.
fn to_provider(m: &Master, f: &Forge, jar: &mut Jar) -> String {
    to_provider_at(&m.http, f, jar)
}

fn to_provider_at(http: &str, f: &Forge, jar: &mut Jar) -> String {
    let a = get(
        &format!("http://{http}/login/oauth/{}", f.kind.name()),
        &jar.header(),
    );
    assert_eq!(a.status, 302, "start: {}", a.body);
    jar.take(&a);
    assert!(jar.0.contains_key("bbc_oauth_state"), "no state cookie");
    let to = a.header("location").unwrap_or_default().to_string();
    assert!(to.starts_with(&f.url()), "{to}");
    let at = get(&to, "");
    assert_eq!(at.status, 302, "authorize refused: {:?}", f.refusals());
    at.header("location").unwrap_or_default().to_string()
}

/// The whole flow: the master's answer to the callback, and the jar.
fn login(m: &Master, f: &Forge) -> (Answer, Jar) {
    let mut jar = Jar::default();
    let back = to_provider(m, f, &mut jar);
    let a = get(&back, &jar.header());
    jar.take(&a);
    (a, jar)
}

fn whoami(m: &Master, jar: &Jar) -> Value {
    let a = get(&format!("http://{}/api/v1/whoami", m.http), &jar.header());
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

/// The audit log's entries of OAuth callbacks, oldest first.
fn oauth_audit(m: &Master) -> Vec<Value> {
    let auth = format!("Bearer {ADMIN}");
    let (st, body) = crate::common::http_with(
        "GET",
        &m.http,
        "/api/v1/audit?limit=100",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut out: Vec<Value> = v["audit"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| {
                    e["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/login/oauth/"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    out.reverse();
    out
}

/// Every code and token a forge handed out (from what it was sent back).
fn issued(f: &Forge) -> Vec<String> {
    let mut out = Vec::new();
    for r in f.requests() {
        if r.path == f.kind.token() {
            out.extend(parse_form(&r.body).remove("code"));
        }
        if let Some(t) = r
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            out.push(t.to_string());
        }
    }
    out
}

#[test]
fn login_through_each_provider_names_the_user() {
    let dir = temp_dir("oauth-flow");
    let (m, forges) = start(&dir);
    // The web UI's list.
    let list = get(&format!("http://{}/api/v1/login/providers", m.http), "").json();
    let kinds: Vec<&str> = list["providers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds, ["github", "gitlab", "gitea"], "{list}");
    for f in &forges {
        // GitHub logins match in any case; the others exactly.
        let account = match f.kind {
            Kind::Github => "alice-gh",
            Kind::Gitlab => "alice",
            Kind::Gitea => "alice-t",
        };
        f.log_in_as(account);
        let (a, jar) = login(&m, f);
        assert_eq!(a.status, 302, "{:?}: {} {:?}", f.kind, a.body, f.refusals());
        assert_eq!(a.header("location"), Some("/"));
        assert!(
            jar.0.contains_key("bbc_session"),
            "{:?}: no session cookie",
            f.kind
        );
        assert!(!jar.0.contains_key("bbc_oauth_state"), "state cookie kept");
        let who = whoami(&m, &jar);
        assert_eq!(who["caller"], "alice", "{:?}: {who}", f.kind);
        // What the provider saw: the redirect_uri under the master, the
        // client authenticated, PKCE checked (the forge refuses otherwise).
        let reqs = f.requests();
        let token = reqs
            .iter()
            .find(|r| r.path == f.kind.token())
            .unwrap_or_else(|| panic!("no token request: {reqs:?}"));
        let form = parse_form(&token.body);
        assert_eq!(
            form.get("redirect_uri").map(String::as_str),
            Some(format!("http://{}/login/oauth/{}/callback", m.http, f.kind.name()).as_str())
        );
        assert!(form.get("code_verifier").is_some_and(|v| v.len() >= 43));
        let user = reqs
            .iter()
            .find(|r| r.path == f.kind.user())
            .unwrap_or_else(|| panic!("no user request: {reqs:?}"));
        assert!(user
            .header("authorization")
            .is_some_and(|h| h.starts_with("Bearer tok-")));
        assert!(f.refusals().is_empty(), "{:?}", f.refusals());
    }
    // Bob logs in through Gitea as bob, not as anyone else.
    let gitea = &forges[2];
    gitea.log_in_as("bob");
    let (a, jar) = login(&m, gitea);
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(whoami(&m, &jar)["caller"], "bob");
    let who: Vec<(String, u64)> = oauth_audit(&m)
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap_or("").to_string(),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = ["alice", "alice", "alice", "bob"]
        .iter()
        .map(|w| (w.to_string(), 302))
        .collect();
    assert_eq!(who, want);

    // No client secret, code or token anywhere the master writes or
    // serves: the state directory, its log, the API's config and audit.
    let (_, config) = crate::common::http_with(
        "GET",
        &m.http,
        "/api/v1/config",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        None,
    );
    assert!(
        config.contains("gitlab-oauth"),
        "the config names the secret: {config}"
    );
    let audit = serde_json::to_string(&oauth_audit(&m)).unwrap_or_default();
    let log = std::fs::read(dir.join("master.log")).unwrap_or_default();
    let mut needles: Vec<String> = SECRETS.iter().map(|(_, s)| s.to_string()).collect();
    for f in &forges {
        needles.extend(issued(f));
    }
    assert!(needles.len() >= 3 + 2 * 4, "{needles:?}");
    for n in &needles {
        let hits = crate::test_secrets::files_holding(&dir.join("state"), n.as_bytes());
        assert!(hits.is_empty(), "`{n}` in {hits:?}");
        assert!(
            !log.windows(n.len()).any(|w| w == n.as_bytes()),
            "`{n}` in the log"
        );
        assert!(!config.contains(n.as_str()), "`{n}` in the config");
        assert!(!audit.contains(n.as_str()), "`{n}` in the audit log");
    }
}

#[test]
fn refusals_start_no_session_and_say_why() {
    let dir = temp_dir("oauth-refusals");
    let (m, forges) = start(&dir);
    let (gh, gl, gt) = (&forges[0], &forges[1], &forges[2]);
    let no_session = |jar: &Jar, what: &str| {
        assert!(!jar.0.contains_key("bbc_session"), "{what}: a session");
        assert_eq!(whoami(&m, jar)["caller"], "anonymous", "{what}");
    };

    // The account declines at the provider.
    gh.decline();
    let (a, jar) = login(&m, gh);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .is_some_and(|s| s.contains("declined")),
        "{}",
        a.body
    );
    no_session(&jar, "declined");

    // A login the config does not name (GitLab matches exactly: `Alice`
    // is not `alice`).
    gl.log_in_as("Alice");
    let (a, jar) = login(&m, gl);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body.contains("`Alice` is not a user"), "{}", a.body);
    no_session(&jar, "unknown login");

    // A callback carrying a state this browser did not start: another
    // browser's state cookie, or none.
    gt.log_in_as("bob");
    let mut mine = Jar::default();
    let back = to_provider(&m, gt, &mut mine);
    let mut theirs = Jar::default();
    let _ = to_provider(&m, gt, &mut theirs);
    let a = get(&back, &theirs.header());
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("start again"), "{}", a.body);
    let a = get(&back, "");
    assert_eq!(a.status, 400, "{}", a.body);
    // The state is used once: replaying a callback that worked fails.
    let a = get(&back, &mine.header());
    assert_eq!(a.status, 302, "{}", a.body);
    let a = get(&back, &mine.header());
    assert_eq!(a.status, 400, "replayed: {}", a.body);
    // A callback for a state the master never issued.
    let a = get(
        &format!(
            "http://{}/login/oauth/gitea/callback?code=x&state=forged",
            m.http
        ),
        "bbc_oauth_state=forged",
    );
    assert_eq!(a.status, 400, "{}", a.body);
    // A query that does not parse is refused without being quoted (it
    // holds the code).
    let a = get(
        &format!(
            "http://{}/login/oauth/gitea/callback?code=code-quoted-7&code=code-quoted-8&state=s",
            m.http
        ),
        "",
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("malformed callback query"), "{}", a.body);
    assert!(!a.body.contains("code-quoted"), "{}", a.body);
    // A provider the master does not know.
    let a = get(&format!("http://{}/login/oauth/bitbucket", m.http), "");
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.body.contains("github, gitlab, gitea"), "{}", a.body);

    // The provider's token endpoint fails: 502, no session.
    gt.fail_token(500, "<html>upstream down</html>");
    let (a, jar) = login(&m, gt);
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.body.contains("HTTP 500"), "{}", a.body);
    no_session(&jar, "provider 500");
    // … or answers 200 with something that is not a token.
    gt.fail_token(200, "not json at all");
    let (a, jar) = login(&m, gt);
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.body.contains("access_token"), "{}", a.body);
    no_session(&jar, "malformed token answer");

    // Every outcome past the state check is in the audit log, by user
    // name or provider login; refused states are not (anyone may send
    // those, and each would be a durable write).
    let got: Vec<(String, String, u64)> = oauth_audit(&m)
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap_or("").to_string(),
                e["path"].as_str().unwrap_or("").to_string(),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let cb = |k: &str| format!("/login/oauth/{k}/callback");
    let want = vec![
        ("anonymous".to_string(), cb("github"), 403),
        ("gitlab:Alice".to_string(), cb("gitlab"), 403),
        ("bob".to_string(), cb("gitea"), 302),
        ("anonymous".to_string(), cb("gitea"), 502),
        ("anonymous".to_string(), cb("gitea"), 502),
    ];
    assert_eq!(got, want);
    let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
    for n in forges.iter().flat_map(issued) {
        assert!(!log.contains(&n), "the log holds `{n}`:\n{log}");
    }
    assert!(log.contains("OAuth login refused"), "{log}");
}

#[test]
fn a_browser_logs_in_from_the_page() {
    let Some(browser) = crate::test_web::chromium() else {
        return;
    };
    let dir = temp_dir("oauth-browser");
    let (m, forges) = start(&dir);
    forges[0].log_in_as("alice-gh");
    let Some(d) = crate::test_web::Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    d.go(&format!("http://{}/", m.http));
    // Anonymous: one link per provider the master has.
    let links = crate::common::wait_for("the login links", || {
        let t = d.text("#me .providers");
        t.contains("Gitea").then_some(t)
    });
    assert_eq!(
        links.split('\n').collect::<Vec<_>>(),
        [
            "Log in with GitHub",
            "Log in with GitLab",
            "Log in with Gitea"
        ],
        "{links}"
    );
    // Off to the provider and back, with real cookies and redirects.
    d.click(r#"a.oauth-login[data-provider="github"]"#);
    let who = crate::common::wait_for("the page to name the user", || {
        let t = d.text("#me .who");
        t.contains("alice").then_some(t)
    });
    assert_eq!(who, "alice");
    assert!(
        forges[0].refusals().is_empty(),
        "{:?}",
        forges[0].refusals()
    );
}

#[test]
fn a_provider_that_never_answers_is_a_504_not_a_hung_login() {
    let dir = temp_dir("oauth-hang");
    let (m, forges) = start(&dir);
    let gl = &forges[1];
    gl.log_in_as("alice");
    gl.hang_token();
    // The master gives up on the provider by itself (its client's
    // timeout); meanwhile it serves other requests.
    let hung = {
        let (m_http, gl) = (m.http.clone(), gl.clone());
        std::thread::spawn(move || {
            let mut jar = Jar::default();
            let back = to_provider_at(&m_http, &gl, &mut jar);
            let a = get(&back, &jar.header());
            jar.take(&a);
            (a, jar)
        })
    };
    crate::common::wait_for("the token request to reach the provider", || {
        gl.requests()
            .iter()
            .any(|r| r.path == Kind::Gitlab.token())
            .then_some(())
    });
    let health = get(&format!("http://{}/api/v1/health", m.http), "");
    assert_eq!(health.status, 200, "{}", health.body);
    let (a, jar) = hung.join().unwrap_or_else(|_| panic!("client thread"));
    assert_eq!(a.status, 504, "{}", a.body);
    assert!(a.body.contains("timed out"), "{}", a.body);
    assert!(!jar.0.contains_key("bbc_session"));
}

#[test]
fn a_private_master_still_offers_its_providers_and_lets_people_log_in() {
    let dir = temp_dir("oauth-private");
    let (m, forges) = start_with(&dir, "    private #true");
    // Reads need `view`; the login page's list and the login itself do not.
    let a = get(&format!("http://{}/api/v1/builders", m.http), "");
    assert_eq!(a.status, 401, "{}", a.body);
    let a = get(&format!("http://{}/api/v1/login/providers", m.http), "");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["providers"][0]["login"], "/login/oauth/github");
    forges[0].log_in_as("ALICE-gh");
    let (a, jar) = login(&m, &forges[0]);
    assert_eq!(a.status, 302, "{}", a.body);
    assert!(jar.0.contains_key("bbc_session"));
}

#[test]
fn a_reload_changes_who_an_account_logs_in_as() {
    let dir = temp_dir("oauth-reload");
    let (m, forges) = start(&dir);
    let gh = &forges[0];
    gh.log_in_as("alice-gh");
    let (a, jar) = login(&m, gh);
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(whoami(&m, &jar)["caller"], "alice");
    // The account moves from alice to bob; the master reloads (SIGHUP).
    let cfg = dir.join("master.kdl");
    let text = std::fs::read_to_string(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let text = text
        .replace(" github=\"Alice-GH\"", "")
        .replace("gitea=\"bob\"", "gitea=\"bob\" github=\"alice-gh\"");
    std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("{e}"));
    let before = crate::common::get_json(&m.http, "/api/v1/config")["hash"].clone();
    let pid = m.proc.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    crate::common::wait_for("the reload", || {
        let now = crate::common::get_json(&m.http, "/api/v1/config")["hash"].clone();
        (now != before).then_some(())
    });
    let (a, jar) = login(&m, gh);
    assert_eq!(a.status, 302, "{}", a.body);
    assert_eq!(whoami(&m, &jar)["caller"], "bob");
}
