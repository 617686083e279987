//! People logging in with a password on a real `bbc master` on
//! 127.0.0.1: `bbc passwd` makes the hash, `POST /api/v1/login` checks it
//! and sets the session cookie, the CSRF and Origin checks guard every
//! state-changing request the cookie authenticates, logout and an apply
//! that removes the user end the session, failed logins are throttled,
//! and neither the password nor its hash shows anywhere but the secret.
//!
//! No worker connects: forced builds stay pending, which is what the
//! tests count.

use std::path::Path;

use serde_json::Value;

use crate::common::{bbc, http_full, run, stderr, stdout, temp_dir, write_secret, Master};

const ALICE_PW: &str = "alice-pass-9f3k-2u7q";
const BOB_TOKEN: &str = "bob-admin-tok-4411";
const CARL_TOKEN: &str = "carl-tok-5522";

/// alice logs in with a password and may force and cancel `core-*`;
/// bob (token, admin) applies configs and reads the audit log; carl has a
/// token only, with alice's role.
fn config(with_alice: bool) -> String {
    let alice = if with_alice {
        "user \"alice\" password=(secret)\"alice-password\" roles=\"dev\"\n"
    } else {
        ""
    };
    format!(
        r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {{
    builders "core-linux" "web"
}}
builder "core-linux" {{
    workers "w"
    steps {{
        shell "true"
    }}
}}
builder "web" {{
    workers "w"
    steps {{
        shell "true"
    }}
}}
role "dev" grant="view force cancel" builders="core-*"
role "ops" grant="admin"
{alice}user "bob" token=(secret)"bob-token" roles="ops"
user "carl" token=(secret)"carl-token" roles="dev"
"#
    )
}

/// `bbc passwd` with the password on stdin (not a terminal): the PHC
/// string it prints.
fn passwd(password: &str) -> String {
    use std::io::Write;
    let mut c = bbc()
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("bbc passwd: {e}"));
    if let Some(mut i) = c.stdin.take() {
        writeln!(i, "{password}").unwrap_or_else(|e| panic!("{e}"));
    }
    let o = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "bbc passwd: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn secrets(dir: &Path) -> String {
    let hash = passwd(ALICE_PW);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    write_secret(dir, "w", "worker-pw-0001");
    write_secret(dir, "alice-password", &hash);
    write_secret(dir, "bob-token", BOB_TOKEN);
    write_secret(dir, "carl-token", CARL_TOKEN);
    hash
}

/// Every answer is kept, to search them all for the password and hash.
struct Client {
    http: String,
    seen: Vec<String>,
}

struct Answer {
    status: u16,
    head: String,
    body: Value,
}

impl Answer {
    fn cookie(&self) -> Option<String> {
        self.head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("set-cookie").then(|| v.trim())
            })
            .map(str::to_string)
    }
    fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Client {
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let (status, head, text) = http_full(method, &self.http, path, headers, body);
        self.seen.push(head.clone());
        self.seen.push(text.clone());
        Answer {
            status,
            head,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    fn login(&mut self, user: &str, password: &str) -> Answer {
        let body = serde_json::json!({"user": user, "password": password}).to_string();
        self.call("POST", "/api/v1/login", &[], Some(&body))
    }

    /// How many requests wait: every accepted force adds one.
    fn pending(&mut self) -> usize {
        let auth = format!("Bearer {BOB_TOKEN}");
        let a = self.call("GET", "/api/v1/requests", &[("Authorization", &auth)], None);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["requests"].as_array().map_or(0, Vec::len)
    }

    fn audit(&mut self) -> Vec<Value> {
        let auth = format!("Bearer {BOB_TOKEN}");
        let a = self.call("GET", "/api/v1/audit", &[("Authorization", &auth)], None);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["audit"].as_array().cloned().unwrap_or_default()
    }
}

/// `bbc_session=VALUE` from a `Set-Cookie`, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every file under `dir` (but the secrets directory) holding `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p != dir.join("secrets") {
                    todo.push(p);
                }
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[test]
fn a_password_login_acts_as_the_user_only_with_its_csrf_token() {
    let dir = temp_dir("login");
    let hash = secrets(&dir);
    let m = Master::start_logged(&dir, &config(true));
    let mut c = Client {
        http: m.http.clone(),
        seen: vec![],
    };

    let anon = c.call("GET", "/api/v1/whoami", &[], None);
    assert_eq!(anon.status, 200, "{}", anon.body);
    assert_eq!(anon.body["caller"], "anonymous", "{}", anon.body);
    assert_eq!(anon.body["password_login"], true, "{}", anon.body);
    assert!(anon.body.get("csrf").is_none(), "{}", anon.body);

    // Wrong password and unknown user: the same answer, no cookie.
    let wrong = c.login("alice", "not-her-password");
    let unknown = c.login("mallory", ALICE_PW);
    for a in [&wrong, &unknown] {
        assert_eq!(a.status, 401, "{}", a.body);
        assert_eq!(a.message(), "wrong user name or password");
        assert!(a.cookie().is_none(), "{}", a.head);
    }
    assert_eq!(wrong.body, unknown.body);
    // Malformed bodies: a precise 400, never echoing a value.
    let bad = c.call(
        "POST",
        "/api/v1/login",
        &[],
        Some(r#"{"user": "alice", "password": 12345678}"#),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(!bad.message().contains("12345678"), "{}", bad.body);
    let bad = c.call("POST", "/api/v1/login", &[], Some("{not json"));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.message().contains("line 1"), "{}", bad.body);

    // The right password: a session cookie with its attributes, and the
    // CSRF token.
    let ok = c.login("alice", ALICE_PW);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["user"], "alice");
    let csrf = ok.body["csrf"].as_str().unwrap_or_default().to_string();
    assert_eq!(csrf.len(), 64, "{}", ok.body);
    let set = ok
        .cookie()
        .unwrap_or_else(|| panic!("no Set-Cookie: {}", ok.head));
    for attr in ["bbc_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = cookie_pair(&set);
    let session = [("Cookie", cookie.as_str())];

    // whoami: the session's user, its token, what it may do where.
    let me = c.call("GET", "/api/v1/whoami", &session, None);
    assert_eq!(me.body["caller"], "alice", "{}", me.body);
    assert_eq!(me.body["via"], "session", "{}", me.body);
    assert_eq!(me.body["csrf"], csrf.as_str(), "{}", me.body);
    assert_eq!(
        me.body["builders"]["core-linux"],
        serde_json::json!(["force", "cancel"]),
        "{}",
        me.body
    );
    assert_eq!(
        me.body["builders"]["web"],
        serde_json::json!([]),
        "{}",
        me.body
    );
    assert_eq!(
        me.body["may"]["force"],
        serde_json::json!(["core-*"]),
        "{}",
        me.body
    );
    assert_eq!(me.body["may"]["admin"], false, "{}", me.body);

    // Forcing with the cookie needs the CSRF token, and this origin.
    let force = "/api/v1/builders/core-linux/force";
    let before = c.pending();
    let (ck, cs) = (cookie.as_str(), csrf.as_str());
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let refused: &[(&str, Headers, &str)] = &[
        (
            "no token",
            vec![("Cookie", ck)],
            "missing or wrong CSRF token",
        ),
        (
            "wrong token",
            vec![("Cookie", ck), ("x-bbc-csrf", "0000")],
            "missing or wrong CSRF token",
        ),
        (
            "foreign origin",
            vec![
                ("Cookie", ck),
                ("x-bbc-csrf", cs),
                ("Origin", "http://evil.example"),
            ],
            "cross-origin request refused",
        ),
    ];
    for (what, headers, msg) in refused {
        let a = c.call("POST", force, headers, Some("{}"));
        assert_eq!(a.status, 403, "{what}: {}", a.body);
        assert!(a.message().starts_with(msg), "{what}: {}", a.body);
    }
    assert_eq!(c.pending(), before, "a refused request queued something");
    let origin = format!("http://{}", m.http);
    let a = c.call(
        "POST",
        force,
        &[
            ("Cookie", &cookie),
            ("x-bbc-csrf", &csrf),
            ("Origin", &origin),
        ],
        Some("{}"),
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(c.pending(), before + 1);
    // The role's builder limit holds for a session as for a token.
    let a = c.call(
        "POST",
        "/api/v1/builders/web/force",
        &[("Cookie", &cookie), ("x-bbc-csrf", &csrf)],
        Some("{}"),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(
        a.message().contains("lacks the `force` grant"),
        "{}",
        a.body
    );
    // A bearer token wins over the cookie, and needs no CSRF token.
    let carl = format!("Bearer {CARL_TOKEN}");
    let a = c.call(
        "POST",
        force,
        &[("Cookie", &cookie), ("Authorization", &carl)],
        Some("{}"),
    );
    assert_eq!(a.status, 201, "{}", a.body);

    // The audit log: the logins (a configured name or "(unknown user)",
    // from where), the refusals by alice's session, carl's force.
    let audit = c.audit();
    let has = |who: &str, path: &str, status: u64| {
        audit.iter().any(|e| {
            e["who"] == who && e["path"] == path && e["status"] == status && e["peer"].is_string()
        })
    };
    assert!(has("alice", "/api/v1/login", 200), "{audit:?}");
    assert!(has("alice", "/api/v1/login", 401), "{audit:?}");
    assert!(has("(unknown user)", "/api/v1/login", 401), "{audit:?}");
    assert!(has("alice", force, 403), "{audit:?}");
    assert!(has("alice", force, 201), "{audit:?}");
    assert!(has("carl", force, 201), "{audit:?}");
    assert!(!audit.iter().any(|e| e["who"] == "mallory"), "{audit:?}");

    // Logout is state-changing too: the token is needed.
    let a = c.call("POST", "/api/v1/logout", &session, None);
    assert_eq!(a.status, 403, "{}", a.body);
    let a = c.call(
        "POST",
        "/api/v1/logout",
        &[("Cookie", &cookie), ("x-bbc-csrf", &csrf)],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["ended"], "alice");
    let cleared = a.cookie().unwrap_or_default();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let me = c.call("GET", "/api/v1/whoami", &session, None);
    assert_eq!(me.body["caller"], "anonymous", "{}", me.body);
    let a = c.call(
        "POST",
        force,
        &[("Cookie", &cookie), ("x-bbc-csrf", &csrf)],
        Some("{}"),
    );
    assert_eq!(a.status, 401, "{}", a.body);

    // The running config names the secret, never its value.
    let auth = format!("Bearer {BOB_TOKEN}");
    let cfg = c.call("GET", "/api/v1/config", &[("Authorization", &auth)], None);
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert!(cfg.body.to_string().contains("alice-password"));

    // Neither the password nor its hash anywhere: answers, the log, the
    // state directory.
    drop(m);
    for needle in [ALICE_PW, hash.as_str()] {
        for text in &c.seen {
            assert!(!text.contains(needle), "an answer holds it: {text}");
        }
        let hits = files_holding(&dir, needle.as_bytes());
        assert!(hits.is_empty(), "{needle:?} in {hits:?}");
    }
    // The log said who logged in, from where.
    let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
    assert!(log.contains("web login of `alice` from 127.0.0.1"), "{log}");
    assert!(!log.contains("mallory"), "{log}");
}

#[test]
fn failed_logins_back_off_and_refuse_even_the_right_password() {
    let dir = temp_dir("login-throttle");
    secrets(&dir);
    let m = Master::start_logged(&dir, &config(true));
    let mut c = Client {
        http: m.http.clone(),
        seen: vec![],
    };
    // A name typed by mistake into the name field must never be logged.
    let typed = "typed-password-as-name-77";
    assert_eq!(c.login(typed, "x").status, 401);
    let mut checked = 0;
    let throttled = loop {
        let a = c.login("alice", "guess");
        match a.status {
            401 => checked += 1,
            429 => break a,
            s => panic!("unexpected {s}: {}", a.body),
        }
        assert!(checked < 12, "never throttled after {checked} failures");
    };
    // The first failures are free.
    assert!(checked >= 3, "throttled after {checked}");
    assert!(
        throttled
            .message()
            .starts_with("too many failed logins; try again in"),
        "{}",
        throttled.body
    );
    assert!(
        throttled.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        throttled.head
    );
    // While blocked, the right password is not even checked.
    let a = c.login("alice", ALICE_PW);
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.cookie().is_none());
    // The first failure from the address is logged (the rest are
    // summarised), under a pseudonym: that name is no configured user's.
    let log = crate::common::wait_for("the failure's log line", || {
        let log = std::fs::read_to_string(dir.join("master.log")).ok()?;
        log.contains("web login: wrong name or password for `unknown-")
            .then_some(log)
    });
    assert!(!log.contains(typed), "{log}");
}

#[test]
fn an_apply_that_removes_the_user_ends_the_session_and_bad_hashes_are_refused() {
    let dir = temp_dir("login-apply");
    secrets(&dir);
    let m = Master::start(&dir, &config(true));
    let mut c = Client {
        http: m.http.clone(),
        seen: vec![],
    };
    let ok = c.login("alice", ALICE_PW);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = cookie_pair(&ok.cookie().unwrap_or_default());
    let csrf = ok.body["csrf"].as_str().unwrap_or_default().to_string();
    let bob = format!("Bearer {BOB_TOKEN}");
    let apply = |c: &mut Client, text: &str| {
        let file = dir.join("next.kdl");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let compiled = run(&["compile", &file.to_string_lossy()]);
        assert_eq!(compiled.status.code(), Some(0), "{compiled:?}");
        c.call(
            "POST",
            "/api/v1/config",
            &[("Authorization", &bob)],
            Some(&stdout(&compiled)),
        )
    };

    // A new user whose secret holds a password, not a hash: refused,
    // naming the user and the secret, never the value.
    write_secret(&dir, "dan-password", "plain-dan-pw-123");
    let with_dan = config(true) + "user \"dan\" password=(secret)\"dan-password\" roles=\"dev\"\n";
    let a = apply(&mut c, &with_dan);
    assert!(a.status >= 400, "{}", a.body);
    let msg = a.message();
    assert!(
        msg.contains("user `dan`") && msg.contains("`dan-password`"),
        "{msg}"
    );
    assert!(!msg.contains("plain-dan-pw-123"), "{msg}");
    // ... and alice's session survived it.
    let me = c.call("GET", "/api/v1/whoami", &[("Cookie", &cookie)], None);
    assert_eq!(me.body["caller"], "alice", "{}", me.body);

    let a = apply(&mut c, &config(false));
    assert_eq!(a.status, 200, "{}", a.body);
    let me = c.call("GET", "/api/v1/whoami", &[("Cookie", &cookie)], None);
    assert_eq!(me.body["caller"], "anonymous", "{}", me.body);
    let a = c.call(
        "POST",
        "/api/v1/builders/core-linux/force",
        &[("Cookie", &cookie), ("x-bbc-csrf", &csrf)],
        Some("{}"),
    );
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(c.login("alice", ALICE_PW).status, 401);
}

#[test]
fn a_master_refuses_to_start_with_a_password_secret_that_is_not_a_hash() {
    let dir = temp_dir("login-bad-hash");
    secrets(&dir);
    write_secret(&dir, "alice-password", "hunter2-not-a-hash");
    let cfg = dir.join("master.kdl");
    std::fs::write(&cfg, config(true)).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = bbc();
    bbc_testkit::master_args_on(&mut cmd, &cfg, &dir, "127.0.0.1:0");
    let o = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("user `alice`")
            && err.contains("`alice-password`")
            && err.contains("bbc passwd"),
        "{err}"
    );
    assert!(!err.contains("hunter2-not-a-hash"), "{err}");
}

/// Under HTTPS the session cookie is `Secure` (curl, a real TLS client).
#[test]
fn over_https_the_session_cookie_is_secure() {
    let dir = temp_dir("login-https");
    secrets(&dir);
    let o = bbc()
        .current_dir(&dir)
        .args(["cert", "--name", "127.0.0.1"])
        .output()
        .unwrap_or_else(|e| panic!("bbc cert: {e}"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = config(true)
        + "master {\n    tls cert=\"master.crt\" key=\"master.key\" workers=#false\n}\n";
    let m = Master::start(&dir, &text);
    let ca = dir.join("master.crt");
    let body = serde_json::json!({"user": "alice", "password": ALICE_PW}).to_string();
    let o = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30", "--cacert"])
        .arg(&ca)
        .args(["-H", "content-type: application/json", "--data", &body])
        .arg(format!("https://{}/api/v1/login", m.http))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let set = out
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {out}"));
    for attr in ["bbc_session=", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(set.contains(attr), "{set}");
    }
}

/// The browser, through the page: a private master shows the login form;
/// logged in, the header names the user, the force form shows only on
/// the builder the role allows and queues a build; the page's own fetch
/// without the CSRF header is refused; logging out brings the form back.
#[test]
fn the_login_form_in_a_real_browser() {
    use crate::test_web::{chromium, Driver};
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("login-web");
    secrets(&dir);
    let text = "master {\n    private #true\n}\n".to_string() + &config(true);
    let m = Master::start(&dir, &text);
    let mut c = Client {
        http: m.http.clone(),
        seen: vec![],
    };
    let Some(d) = Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    let base = format!("http://{}/", m.http);
    d.go(&base);
    let type_into = |css: &str, text: &str| {
        let id = d.element(css);
        let (status, v) = d.call(
            "POST",
            &format!("/element/{id}/value"),
            serde_json::json!({ "text": text }),
        );
        assert_eq!(status, 200, "{v}");
    };
    type_into(r#"form.login input[name="user"]"#, "alice");
    type_into(r#"form.login input[name="password"]"#, ALICE_PW);
    d.click("form.login button");
    let who = crate::common::wait_for("the header to name the user", || {
        let t = d.text("#me .who");
        (!t.is_empty()).then_some(t)
    });
    assert_eq!(who, "alice");
    assert_eq!(d.text("#me a.logout"), "log out");
    // The page keeps no trace of the password (the field is emptied).
    let (status, source) = d.call("GET", "/source", Value::Null);
    assert_eq!(status, 200);
    assert!(!source.to_string().contains(ALICE_PW), "{source}");

    // The force form: on core-linux (the role's `core-*`), not on web.
    d.go(&format!("{base}#/builders/web"));
    crate::common::wait_for("the web builder's page", || {
        (d.text("main h1") == "web").then_some(())
    });
    let (status, forms) = d.call(
        "POST",
        "/elements",
        serde_json::json!({"using": "css selector", "value": "form.force"}),
    );
    assert_eq!(status, 200, "{forms}");
    assert_eq!(forms.as_array().map(Vec::len), Some(0), "{forms}");
    d.go(&format!("{base}#/builders/core-linux"));
    let before = c.pending();
    d.click("form.force button");
    let said = crate::common::wait_for("the page to say it queued the build", || {
        let t = d.text("form.force span.muted");
        t.starts_with("queued").then_some(t)
    });
    assert!(said.contains("build set"), "{said}");
    assert_eq!(c.pending(), before + 1);
    let forced_by_alice = c.audit().iter().any(|e| {
        e["who"] == "alice"
            && e["path"] == "/api/v1/builders/core-linux/force"
            && e["status"] == 201
    });
    assert!(forced_by_alice);

    // The same request from the page without the CSRF header: the cookie
    // goes with it (same origin), and the master refuses it.
    let (status, v) = d.call(
        "POST",
        "/execute/async",
        serde_json::json!({"script": r#"
            const done = arguments[arguments.length - 1];
            fetch("/api/v1/builders/core-linux/force", {
                method: "POST",
                headers: {"content-type": "application/json"},
                body: "{}",
            }).then((r) => r.json().then((j) => done([r.status, j.error ? j.error.message : ""])))
              .catch((e) => done([0, String(e)]));
        "#, "args": []}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0], 403, "{v}");
    assert!(
        v[1].as_str()
            .unwrap_or_default()
            .starts_with("missing or wrong CSRF token"),
        "{v}"
    );
    assert_eq!(c.pending(), before + 1, "the forged request queued a build");

    // A page of another origin (same site: 127.0.0.1, another port, so
    // the Lax cookie goes along) posts a form to the master: refused for
    // its Origin, recorded as alice's refused request, nothing queued.
    let evil = evil_page(&format!(
        "http://{}/api/v1/builders/core-linux/force",
        m.http
    ));
    d.go(&format!("http://{evil}/"));
    let said = crate::common::wait_for("the forged form's answer", || {
        let t = d.text("body");
        t.contains("cross-origin request refused").then_some(t)
    });
    assert!(said.contains("403"), "{said}");
    assert_eq!(c.pending(), before + 1, "the forged form queued a build");
    let refused = c
        .audit()
        .iter()
        .filter(|e| {
            e["who"] == "alice"
                && e["path"] == "/api/v1/builders/core-linux/force"
                && e["status"] == 403
        })
        .count();
    assert_eq!(refused, 2, "the page's fetch and the forged form");
    d.go(&base);

    // Log out: the private master shows the login form again, and the
    // browser's cookie identifies no one.
    d.click("#me a.logout");
    d.element("form.login");
    let (status, v) = d.call(
        "POST",
        "/execute/async",
        serde_json::json!({"script": r#"
            const done = arguments[arguments.length - 1];
            fetch("/api/v1/whoami").then((r) => r.json()).then((j) => done(j.caller));
        "#, "args": []}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, "anonymous");
}

/// Serves, on a port of its own (another origin), a page that submits a
/// form to `target` as soon as it loads: the classic forged request.
fn evil_page(target: &str) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
    let html = format!(
        "<!doctype html><form method=\"post\" action=\"{target}\" enctype=\"text/plain\">\
         <input name=\"{{}}\" value=\"\"></form><script>document.forms[0].submit()</script>"
    );
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    addr
}

/// The CSRF layer stands in front of every state-changing route: with
/// the session cookie and no token, each is refused before its handler
/// (an unknown build or source would otherwise be 404, a wrong method
/// 405); with the token each reaches its handler.
#[test]
fn every_state_changing_route_wants_the_csrf_token_with_a_cookie() {
    let dir = temp_dir("login-routes");
    secrets(&dir);
    let m = Master::start(&dir, &config(true));
    let mut c = Client {
        http: m.http.clone(),
        seen: vec![],
    };
    let ok = c.login("alice", ALICE_PW);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let cookie = cookie_pair(&ok.cookie().unwrap_or_default());
    let csrf = ok.body["csrf"].as_str().unwrap_or_default().to_string();
    let routes: &[(&str, &str, Option<&str>)] = &[
        ("POST", "/api/v1/builders/core-linux/force", Some("{}")),
        ("POST", "/api/v1/builds/1/cancel", None),
        ("POST", "/api/v1/requests/1/cancel", None),
        (
            "POST",
            "/api/v1/changes",
            Some(r#"{"repository": "r", "branch": "main", "revision": "abc"}"#),
        ),
        ("POST", "/api/v1/change_sources/nope/poll", None),
        ("POST", "/api/v1/config", Some("{}")),
        ("PUT", "/api/v1/builders/core-linux/force", Some("{}")),
        ("DELETE", "/api/v1/builds/1", None),
        ("PATCH", "/api/v1/config", Some("{}")),
        ("POST", "/api/v1/logout", None),
    ];
    let before = c.pending();
    for (method, path, body) in routes {
        let a = c.call(method, path, &[("Cookie", &cookie)], *body);
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert!(
            a.message().starts_with("missing or wrong CSRF token"),
            "{method} {path}: {}",
            a.body
        );
    }
    assert_eq!(c.pending(), before);
    // With the token, the same requests reach their handlers (whatever
    // those answer); logout last, it ends the session.
    for (method, path, body) in routes {
        let a = c.call(
            method,
            path,
            &[("Cookie", &cookie), ("x-bbc-csrf", &csrf)],
            *body,
        );
        assert!(
            !a.message().contains("CSRF"),
            "{method} {path}: {} {}",
            a.status,
            a.body
        );
    }
    assert_eq!(c.pending(), before + 1, "the force went through");
}

/// A public master with password users: a stranger's page offers "log
/// in" and shows no force form (the API would refuse it), where a master
/// without passwords would show the form and ask for a token.
#[test]
fn a_public_master_offers_log_in_and_hides_the_force_form_from_strangers() {
    use crate::test_web::{chromium, dump_dom};
    let Some(browser) = chromium() else { return };
    let dir = temp_dir("login-web-public");
    secrets(&dir);
    let m = Master::start(&dir, &config(true));
    let dom = dump_dom(
        &browser,
        &dir.join("chromium"),
        &format!("http://{}/#/builders/core-linux", m.http),
    );
    assert!(
        dom.contains(r##"<a href="#/login" class="login">log in</a>"##),
        "{dom}"
    );
    assert!(dom.contains("<h1>core-linux</h1>"), "{dom}");
    assert!(!dom.contains("Force build"), "{dom}");
}
