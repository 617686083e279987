//! Reporters against real processes: a real master and worker running real
//! shell steps (and a real git checkout), an HTTP server in the test that
//! records every request (it stands in for the forges' APIs and for push
//! endpoints, which are SaaS), and a real SMTP server (Python's aiosmtpd)
//! delivering into a maildir.
//!
//! Nothing waits by sleeping: the tests wait for recorded requests or
//! delivered files, with an overall timeout. "Not reported" is checked
//! through order: a reporter handles its builds one at a time, so once it
//! has reported a later build, it is done with the earlier ones.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{get_json, git, temp_dir, wait_for, write_secret, Master, Proc};
use crate::recorder::{Recorder, Request};

const TIMEOUT: Duration = Duration::from_secs(90);

// --- masters

fn start(name: &str, secrets: &[(&str, &str)], body: &str) -> (std::path::PathBuf, Master, Proc) {
    let dir = temp_dir(name);
    write_secret(&dir, "w1", "pw-one-1234");
    for (k, v) in secrets {
        write_secret(&dir, k, v);
    }
    let config = format!("worker \"w1\" password=(secret)\"w1\" max-builds=4\n{body}");
    let m = Master::start(&dir, &config);
    let w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    (dir, m, w)
}

fn force(m: &Master, builder: &str, body: &str) -> Value {
    let b = m.force_and_wait(builder, body);
    assert!(b["id"].as_u64().is_some(), "{b}");
    b
}

fn link(m: &Master, b: &Value) -> String {
    format!("http://{}/#/builds/{}", m.http, b["id"])
}

/// A port where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().map(|a| a.port()).unwrap_or(9)
}

// --- tests

#[test]
fn github_status_pending_then_final_on_the_checked_out_revision() {
    let rec = Recorder::start();
    let repo = temp_dir("rep-gh-repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("f.txt"), "1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let sha1 = git(&repo, &["rev-parse", "HEAD"]);
    let (_dir, m, _w) = start(
        "rep-gh",
        &[("gh-token", "ghp-secret-token-1")],
        &format!(
            r#"scheduler "force" kind="force" {{
    builders "app" "other"
}}
builder "app" {{
    workers "w1"
    steps {{
        git repo="{}" mode="full" method="fresh"
        shell "cat f.txt" name="show"
    }}
}}
builder "other" {{
    workers "w1"
    steps {{
        shell "true"
    }}
}}
reporter "gh" kind="github-status" {{
    token (secret)"gh-token"
    api-url "http://{}/api/v3/"
    builders "app"
}}
"#,
            repo.display(),
            rec.addr
        ),
    );
    let repository = r#""repository": "git@127.0.0.1:acme/widget.git", "branch": "main""#;
    // Not selected: no status.
    force(
        &m,
        "other",
        &format!("{{{repository}, \"revision\": \"{sha1}\"}}"),
    );
    // A build of a given revision: pending at start, success at the end.
    let b1 = force(
        &m,
        "app",
        &format!("{{{repository}, \"revision\": \"{sha1}\"}}"),
    );
    assert_eq!(b1["result"], "success", "{b1}");
    let reqs = rec.wait_n("/", 2);
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    for (r, state, desc) in [
        (&reqs[0], "pending", "Build #1 started"),
        (&reqs[1], "success", "Build #1: build successful"),
    ] {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, format!("/api/v3/repos/acme/widget/statuses/{sha1}"));
        assert_eq!(r.header("authorization"), Some("Bearer ghp-secret-token-1"));
        assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("bbc/")),
            "{r:?}"
        );
        let j = r.json();
        assert_eq!(j["state"], state, "{j}");
        assert_eq!(j["context"], "bbc/app");
        assert_eq!(j["description"], desc);
        assert_eq!(j["target_url"], link(&m, &b1));
    }
    // The branch's latest: no revision at start (no pending status), the
    // final status goes on what the git step checked out.
    std::fs::write(repo.join("f.txt"), "2\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "two"]);
    let sha2 = git(&repo, &["rev-parse", "HEAD"]);
    let b2 = force(&m, "app", &format!("{{{repository}}}"));
    assert_eq!(b2["properties"]["got_revision"], sha2.as_str());
    let reqs = rec.wait_n("/", 3);
    assert_eq!(
        reqs[2].path,
        format!("/api/v3/repos/acme/widget/statuses/{sha2}")
    );
    assert_eq!(reqs[2].json()["state"], "success");
    // A repository on another host is not this API's business.
    force(
        &m,
        "app",
        &format!(
            r#"{{"repository": "https://elsewhere.example/acme/widget.git", "branch": "main", "revision": "{sha1}"}}"#
        ),
    );
    let b4 = force(
        &m,
        "app",
        &format!("{{{repository}, \"revision\": \"{sha1}\"}}"),
    );
    let reqs = rec.wait_n("/", 5);
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    assert_eq!(reqs[3].json()["description"], "Build #4 started");
    assert_eq!(reqs[4].json()["target_url"], link(&m, &b4));
}

#[test]
fn gitlab_and_gitea_statuses() {
    let rec = Recorder::start();
    let (_dir, m, _w) = start(
        "rep-forges",
        &[("lab", "glpat-lab-token"), ("tea", "gitea-tea-token")],
        &format!(
            r#"scheduler "force" kind="force" {{
    builders "lab" "tea"
}}
builder "lab" {{
    workers "w1"
    steps {{
        shell "echo broken; exit 1" name="test"
    }}
}}
builder "tea" {{
    workers "w1"
    steps {{
        shell "exit 2" name="lint" warn-on-warnings=#true {{
            decode-rc "2"="warnings"
        }}
    }}
}}
reporter "lab" kind="gitlab-status" {{
    token (secret)"lab"
    api-url "http://{a}/api/v4"
    builders "lab"
}}
reporter "tea" kind="gitea-status" {{
    token (secret)"tea"
    api-url "http://{a}/api/v1"
    context "ci/{{{{builder}}}}/{{{{branch}}}}"
    builders "tea"
}}
"#,
            a = rec.addr
        ),
    );
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let lab = force(
        &m,
        "lab",
        &format!(
            r#"{{"repository": "http://127.0.0.1:1/group/sub/proj.git", "branch": "main", "revision": "{sha}"}}"#
        ),
    );
    assert_eq!(lab["result"], "failure");
    let reqs = rec.wait_n("/api/v4/", 2);
    for (r, state) in [(&reqs[0], "running"), (&reqs[1], "failed")] {
        assert_eq!(
            r.path,
            format!("/api/v4/projects/group%2Fsub%2Fproj/statuses/{sha}")
        );
        assert_eq!(r.header("private-token"), Some("glpat-lab-token"));
        assert_eq!(r.header("authorization"), None);
        let j = r.json();
        assert_eq!(j["state"], state, "{j}");
        assert_eq!(j["name"], "bbc/lab");
        assert_eq!(j["ref"], "main");
        assert_eq!(j["target_url"], link(&m, &lab));
    }
    assert_eq!(reqs[1].json()["description"], "Build #1: build failure");
    let tea = force(
        &m,
        "tea",
        &format!(
            r#"{{"repository": "git@127.0.0.1:acme/widget.git", "branch": "dev", "revision": "{sha}"}}"#
        ),
    );
    assert_eq!(tea["result"], "warnings");
    let reqs = rec.wait_n("/api/v1/", 2);
    for (r, state) in [(&reqs[0], "pending"), (&reqs[1], "warning")] {
        assert_eq!(r.path, format!("/api/v1/repos/acme/widget/statuses/{sha}"));
        assert_eq!(r.header("authorization"), Some("token gitea-tea-token"));
        let j = r.json();
        assert_eq!(j["state"], state, "{j}");
        assert_eq!(j["context"], "ci/tea/dev");
        assert_eq!(j["target_url"], link(&m, &tea));
    }
    assert_eq!(rec.count("/"), 4);
}

/// Bitbucket Cloud (an access token, Bearer; an app password with a user
/// name, Basic) and Server (Bearer): INPROGRESS at start, then SUCCESSFUL
/// or FAILED, on the documented endpoints; no token in the master's log,
/// its state directory or its API.
#[test]
fn bitbucket_cloud_and_server_statuses() {
    let rec = Recorder::start();
    let dir = temp_dir("rep-bitbucket");
    let tokens = [
        ("bb-cloud", "bbc-cloud-access-token-91"),
        ("bb-app", "app-password-4471"),
        ("bb-server", "bbs-http-token-5520"),
    ];
    write_secret(&dir, "w1", "pw-one-1234");
    for (k, v) in tokens {
        write_secret(&dir, k, v);
    }
    let config = format!(
        r#"worker "w1" password=(secret)"w1" max-builds=4
scheduler "force" kind="force" {{
    builders "cloud-ok" "cloud-bad" "server-ok" "server-bad"
}}
builder "cloud-ok" {{
    workers "w1"
    steps {{
        shell "true"
    }}
}}
builder "cloud-bad" {{
    workers "w1"
    steps {{
        shell "exit 1" name="test"
    }}
}}
builder "server-ok" {{
    workers "w1"
    steps {{
        shell "true"
    }}
}}
builder "server-bad" {{
    workers "w1"
    steps {{
        shell "exit 1" name="test"
    }}
}}
reporter "cloud" kind="bitbucket-cloud-status" {{
    token (secret)"bb-cloud"
    api-url "http://{a}/2.0"
    builders "cloud-ok"
}}
reporter "cloud-app" kind="bitbucket-cloud-status" {{
    token (secret)"bb-app"
    username "ci-bot"
    api-url "http://{a}/app/2.0"
    context "{{{{builder}}}}"
    builders "cloud-bad"
}}
reporter "server" kind="bitbucket-server-status" {{
    token (secret)"bb-server"
    api-url "http://{a}/bbs/"
    builders "server-ok" "server-bad"
}}
"#,
        a = rec.addr
    );
    let m = Master::start_logged(&dir, &config);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let sha = "f3b2a5c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4";
    let source = |repo: &str| {
        format!(r#"{{"repository": "{repo}", "branch": "main", "revision": "{sha}"}}"#)
    };

    // Cloud, access token: running → success.
    let ok = force(&m, "cloud-ok", &source("git@127.0.0.1:acme/widget.git"));
    assert_eq!(ok["result"], "success");
    let reqs = rec.wait_n("/2.0/", 2);
    for (r, state, desc) in [
        (&reqs[0], "INPROGRESS", "Build #1 started"),
        (&reqs[1], "SUCCESSFUL", "Build #1: build successful"),
    ] {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            format!("/2.0/repositories/acme/widget/commit/{sha}/statuses/build")
        );
        assert_eq!(
            r.header("authorization"),
            Some("Bearer bbc-cloud-access-token-91")
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let j = r.json();
        assert_eq!(j["state"], state, "{j}");
        assert_eq!(j["key"], "bbc/cloud-ok");
        assert_eq!(j["name"], "bbc/cloud-ok");
        assert_eq!(j["description"], desc);
        assert_eq!(j["url"], link(&m, &ok));
        assert_eq!(j.as_object().map(|o| o.len()), Some(5), "{j}");
    }

    // Cloud, app password: Basic user:password; running → failure.
    let bad = force(
        &m,
        "cloud-bad",
        &source("https://127.0.0.1/acme/widget.git"),
    );
    assert_eq!(bad["result"], "failure");
    let reqs = rec.wait_n("/app/2.0/", 2);
    // base64("ci-bot:app-password-4471")
    let basic = "Basic Y2ktYm90OmFwcC1wYXNzd29yZC00NDcx";
    for (r, state) in [(&reqs[0], "INPROGRESS"), (&reqs[1], "FAILED")] {
        assert_eq!(
            r.path,
            format!("/app/2.0/repositories/acme/widget/commit/{sha}/statuses/build")
        );
        assert_eq!(r.header("authorization"), Some(basic));
        let j = r.json();
        assert_eq!(j["state"], state, "{j}");
        assert_eq!(j["key"], "cloud-bad");
        assert_eq!(j["url"], link(&m, &bad));
    }
    assert_eq!(reqs[1].json()["description"], "Build #1: build failure");

    // Server: the build-status API by commit, Bearer; success and failure.
    let server_repo = "ssh://git@127.0.0.1:7999/acme/widget.git";
    let sok = force(&m, "server-ok", &source(server_repo));
    let sbad = force(&m, "server-bad", &source(server_repo));
    assert_eq!(sok["result"], "success");
    assert_eq!(sbad["result"], "failure");
    let reqs = rec.wait_n("/bbs/", 4);
    for r in &reqs {
        assert_eq!(r.path, format!("/bbs/rest/build-status/1.0/commits/{sha}"));
        assert_eq!(
            r.header("authorization"),
            Some("Bearer bbs-http-token-5520")
        );
    }
    let by_key = |key: &str| -> Vec<String> {
        reqs.iter()
            .map(|r| r.json())
            .filter(|j| j["key"] == key)
            .map(|j| j["state"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(by_key("bbc/server-ok"), ["INPROGRESS", "SUCCESSFUL"]);
    assert_eq!(by_key("bbc/server-bad"), ["INPROGRESS", "FAILED"]);
    let last_bad = reqs
        .iter()
        .map(|r| r.json())
        .rfind(|j| j["key"] == "bbc/server-bad")
        .unwrap_or_default();
    assert_eq!(last_bad["name"], "bbc/server-bad");
    assert_eq!(last_bad["url"], link(&m, &sbad));
    // A repository on another host: no status.
    force(
        &m,
        "server-ok",
        &source("https://bitbucket.elsewhere.example/scm/acme/widget.git"),
    );
    let last = force(&m, "server-ok", &source(server_repo));
    let reqs = rec.wait_n("/bbs/", 6);
    assert_eq!(reqs.len(), 6, "{reqs:#?}");
    assert_eq!(reqs[5].json()["url"], link(&m, &last));

    // The tokens are in no log line, stored file or API answer.
    let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
    let config_api = get_json(&m.http, "/api/v1/config").to_string();
    for (_, token) in tokens {
        assert!(!log.contains(token), "{token} in the log");
        assert!(!config_api.contains(token), "{token} in /api/v1/config");
        let hits = crate::test_secrets::files_holding(&dir.join("state"), token.as_bytes());
        assert!(hits.is_empty(), "{token} stored in {hits:?}");
    }
    assert!(
        config_api.contains("bitbucket-server-status"),
        "{config_api}"
    );
}

#[test]
fn http_push_when_filters_builders_retries_and_never_holds_a_build() {
    let rec = Recorder::start();
    rec.answer("/flaky", &[500]);
    rec.hang("/hang");
    let a = &rec.addr;
    let down = closed_port();
    let (_dir, m, _w) = start(
        "rep-push",
        &[],
        &format!(
            r#"scheduler "force" kind="force" {{
    builders "job" "side"
    param "code" type="int" default=0
}}
builder "job" {{
    workers "w1"
    steps {{
        shell "echo code ${{{{ prop.code }}}}; exit ${{{{ prop.code }}}}" name="run"
    }}
}}
builder "side" {{
    workers "w1"
    steps {{
        shell "true"
    }}
}}
reporter "failing" kind="http" {{
    url "http://{a}/failing"
    template "{{\"b\": {{{{json builder}}}}, \"n\": {{{{number}}}}, \"r\": \"{{{{result}}}}\"}}"
    when "failing"
    builders "job"
}}
reporter "change" kind="http" {{
    url "http://{a}/change"
    when "change"
    builders "job"
}}
reporter "flaky" kind="http" {{
    url "http://{a}/flaky"
    template "{{{{builder}}}} #{{{{number}}}} {{{{result}}}}"
    builders "job"
}}
reporter "side" kind="http" {{
    url "http://{a}/side"
    builders "side"
}}
reporter "down" kind="http" {{
    url "http://127.0.0.1:{down}/down"
}}
reporter "hang" kind="http" {{
    url "http://{a}/hang"
}}
"#
        ),
    );
    // success, failure, failure, success, failure
    let mut builds = Vec::new();
    for code in [0, 1, 1, 0, 1] {
        let b = force(
            &m,
            "job",
            &format!(r#"{{"properties": {{"code": {code}}}}}"#),
        );
        // An endpoint that is down and one that never answers (the client
        // gives up after 30 s) do not hold the build.
        let took = b["finished_at"].as_i64().unwrap_or(0) - b["started_at"].as_i64().unwrap_or(0);
        assert!(took < 15_000, "build took {took} ms: {b}");
        builds.push(b);
    }
    let results: Vec<&str> = builds.iter().filter_map(|b| b["result"].as_str()).collect();
    assert_eq!(
        results,
        ["success", "failure", "failure", "success", "failure"]
    );

    // `failing`: builds 2, 3, 5, with the rendered template as JSON.
    let failing = rec.wait("the failing reports", "/failing", |r| {
        r.iter().any(|x| x.json()["n"] == 5)
    });
    let got: Vec<Value> = failing.iter().map(Request::json).collect();
    assert_eq!(
        got,
        [2, 3, 5].map(|n| serde_json::json!({"b": "job", "n": n, "r": "failure"}))
    );
    assert_eq!(failing[0].header("content-type"), Some("application/json"));

    // `change`: a result that differs from the previous build's (2, 4, 5);
    // no template: the message context as JSON.
    let change = rec.wait("the change reports", "/change", |r| {
        r.iter().any(|x| x.json()["number"] == 5)
    });
    let numbers: Vec<Value> = change.iter().map(|r| r.json()["number"].clone()).collect();
    assert_eq!(numbers, [2, 4, 5]);
    let j = change[1].json();
    assert_eq!(j["builder"], "job");
    assert_eq!(j["result"], "success");
    assert_eq!(j["previous_result"], "failure");
    assert_eq!(j["event"], "finished");
    assert_eq!(j["url"], link(&m, &builds[3]));
    assert_eq!(j["properties"]["code"], 0);
    assert_eq!(j["steps"][0]["name"], "run");
    assert_eq!(j["steps"][0]["result"], "success");
    assert_eq!(change[0].json()["failed_steps"], serde_json::json!(["run"]));

    // `flaky` answered 500 first: the same report again, then the others.
    let flaky = rec.wait("the flaky reports", "/flaky", |r| {
        r.iter().any(|x| x.body == "job #5 failure")
    });
    let bodies: Vec<&str> = flaky.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "job #1 success",
            "job #1 success",
            "job #2 failure",
            "job #3 failure",
            "job #4 success",
            "job #5 failure"
        ]
    );
    assert_eq!(
        flaky[0].header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    // Builder selection: `side` reports only its builder.
    assert_eq!(rec.count("/side"), 0);
    force(&m, "side", "{}");
    let side = rec.wait_n("/side", 1);
    assert_eq!(side[0].json()["builder"], "side");
    // The hanging endpoint got the first report and holds it; the master
    // still serves and builds.
    assert!(rec.count("/hang") >= 1);
    assert_eq!(rec.count("/failing"), 3);
}

fn have_aiosmtpd() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The maildir's delivered messages, oldest first.
fn mails(maildir: &Path) -> Vec<String> {
    let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> =
        match std::fs::read_dir(maildir.join("new")) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .map(|e| {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, e.path())
                })
                .collect(),
            Err(_) => Vec::new(),
        };
    files.sort();
    files
        .iter()
        .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
        .collect()
}

fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    let head = mail.split("\n\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The SMTP server of tests/fixtures/smtp_server.py (login `ci` /
/// `mail-pass-123`): the process, its port, its maildir and logins file.
fn smtp_server(dir: &Path) -> (Proc, u16, std::path::PathBuf, std::path::PathBuf) {
    let maildir = dir.join("maildir");
    let logins = dir.join("logins");
    let script = crate::common::root().join("tests/fixtures/smtp_server.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(&maildir)
        .args(["ci", "mail-pass-123"])
        .arg(&logins)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the SMTP server: {e}"));
    let out = child.stdout.take();
    let smtp = Proc(child);
    let mut port = String::new();
    if let Some(out) = out {
        let _ = BufReader::new(out).read_line(&mut port);
    }
    let port: u16 = port
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the SMTP server did not start: {port:?}"));
    (smtp, port, maildir, logins)
}

/// A mail's body, its quoted-printable encoding (which long lines get)
/// undone.
fn text_body(mail: &str) -> String {
    let mail = mail.replace("\r\n", "\n");
    let body = mail.split_once("\n\n").map(|x| x.1).unwrap_or("");
    if header(&mail, "Content-Transfer-Encoding") != Some("quoted-printable") {
        return body.to_string();
    }
    let joined = body.replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the SMTP tests can run (aiosmtpd), failing under
/// BBC_REQUIRE_SMTP=1.
fn smtp_available(test: &str) -> bool {
    if have_aiosmtpd() {
        return true;
    }
    if std::env::var("BBC_REQUIRE_SMTP").is_ok_and(|v| v == "1") {
        panic!("BBC_REQUIRE_SMTP=1 but python3 cannot import aiosmtpd (python3 -m pip install aiosmtpd)");
    }
    eprintln!("{test}: skipped, aiosmtpd is not installed");
    false
}

/// The blamelist (issue 13): builds caused by changes mail their authors
/// (mapped, completed with the domain, or as they are) besides `to`, under
/// `when "problem" "change"`; the default body names the revision, the
/// changes, who, the failed step and the last lines of its log, with links.
#[test]
fn blamelist_mail_to_the_authors_of_the_changes() {
    if !smtp_available("blamelist_mail_to_the_authors_of_the_changes") {
        return;
    }
    let dir = temp_dir("rep-blame");
    let (smtp, port, maildir, _logins) = smtp_server(&dir);
    let red = dir.join("red");
    let (_dir, m, _w) = start(
        "rep-blame-m",
        &[("smtp", "mail-pass-123")],
        &format!(
            r#"master {{
    title "Acme CI"
    url "https://ci.acme.example/"
}}
scheduler "ci" kind="single-branch" {{
    branch "main"
    tree-stable-timer "100ms"
    builders "unit"
}}
builder "unit" {{
    workers "w1"
    steps {{
        shell "echo preparing" name="prepare"
        shell "echo first-line; echo the-last-words; test ! -e {red}" name="unit-tests"
    }}
}}
reporter "blame" kind="mail" {{
    smtp "127.0.0.1:{port}"
    from "Acme CI <ci@acme.example>"
    to "watch@acme.example"
    username "ci"
    password (secret)"smtp"
    when "problem" "change"
    blamelist {{
        domain "acme.example"
        address "Ada Lovelace" "ada@acme.example"
    }}
}}
"#,
            red = red.display()
        ),
    );
    let mut n = 0;
    let mut change = |author: &str, rev: &str, title: &str| -> Value {
        let body = serde_json::json!({
            "repository": "https://git.acme.example/widget.git", "branch": "main",
            "revision": rev, "author": author, "comments": format!("{title}\n\nMore."),
        });
        let (st, resp) =
            crate::common::http("POST", &m.http, "/api/v1/changes", Some(&body.to_string()));
        assert_eq!(st, 201, "{resp}");
        n += 1;
        let want = n;
        wait_for("the change's build", || {
            let v = get_json(&m.http, "/api/v1/builds?builder=unit");
            let b = v["builds"].as_array()?.first()?.clone();
            (b["number"] == want && b["complete"] == true).then_some(b)
        })
    };
    // Green first: neither a problem nor a change (no previous build).
    let b1 = change("Ada Lovelace <ada@home.example>", "aaaa1111", "Start");
    assert_eq!(b1["result"], "success", "{b1}");
    // Red after green: a problem; bob is a bare name, completed.
    std::fs::write(&red, "").unwrap_or_else(|e| panic!("{e}"));
    let b2 = change("bob", "bbbb2222", "Break the widget");
    assert_eq!(b2["result"], "failure", "{b2}");
    // Red again: no news.
    let b3 = change("Carol <carol@example.org>", "cccc3333", "Still broken");
    assert_eq!(b3["result"], "failure", "{b3}");
    // Green after red: a change; Ada's identity is mapped by her name.
    std::fs::remove_file(&red).unwrap_or_else(|e| panic!("{e}"));
    let b4 = change("Ada Lovelace <ada@home.example>", "dddd4444", "Fix it");
    assert_eq!(b4["result"], "success", "{b4}");
    let list = wait_for("two mails", || {
        let l = mails(&maildir);
        (l.len() >= 2).then_some(l)
    });
    // The reporter handles builds in order: by the mail about build 4 it
    // had decided about builds 1 and 3, and sent nothing for them.
    assert_eq!(list.len(), 2, "{list:#?}");
    let (fail, fixed) = (&list[0], &list[1]);
    assert_eq!(
        header(fail, "X-RcptTo"),
        Some("watch@acme.example, bob@acme.example")
    );
    assert_eq!(header(fail, "Subject"), Some("unit: failure on main"));
    assert_eq!(
        header(fixed, "X-RcptTo"),
        Some("watch@acme.example, ada@acme.example")
    );
    let body = text_body(fail);
    let id = b2["id"].as_u64().unwrap_or_default();
    for want in [
        "Acme CI: unit #2 failure (previous: success)".to_string(),
        format!("https://ci.acme.example/#/builds/{id}"),
        "Revision: bbbb2222 on main of https://git.acme.example/widget.git\n\nChanges:\n".into(),
        "  bbbb2222 bob: Break the widget".into(),
        "Blamelist: bob".into(),
        "Failed: unit-tests".into(),
        format!("The last lines of unit-tests's log (https://ci.acme.example/api/v1/builds/{id}/steps/1/log):"),
        "first-line\nthe-last-words\n".into(),
        "exit code 1 after".into(),
    ] {
        assert!(body.contains(&want), "no `{want}` in:\n{body}");
    }
    assert!(
        !body.contains("preparing"),
        "only the failed step's log: {body}"
    );
    let body = text_body(fixed);
    assert!(
        body.contains("unit #4 success (previous: failure)"),
        "{body}"
    );
    assert!(
        body.contains("Blamelist: Ada Lovelace <ada@home.example>"),
        "{body}"
    );
    assert!(
        !body.contains("Failed:") && !body.contains("The last lines"),
        "{body}"
    );
    drop(smtp);
}

#[test]
fn mail_through_a_real_smtp_server() {
    if !smtp_available("mail_through_a_real_smtp_server") {
        return;
    }
    let dir = temp_dir("rep-mail-smtp");
    let (smtp, port, maildir, logins) = smtp_server(&dir);
    let (_dir, m, _w) = start(
        "rep-mail",
        &[("smtp", "mail-pass-123")],
        &format!(
            r#"master {{
    title "Acme CI"
    url "https://ci.acme.example/"
}}
scheduler "force" kind="force" {{
    builders "job"
    param "code" type="int" default=0
}}
builder "job" {{
    workers "w1"
    steps {{
        shell "exit ${{{{ prop.code }}}}" name="unit-tests"
    }}
}}
reporter "mail" kind="mail" {{
    smtp "127.0.0.1:{port}"
    from "Acme CI <ci@acme.example>"
    to "dev@acme.example" "qa@acme.example"
    username "ci"
    password (secret)"smtp"
    subject "[{{{{title}}}}] {{{{builder}}}} #{{{{number}}}}: {{{{result}}}}"
    body "{{{{#if failed}}}}Broken{{{{else}}}}Fine{{{{/if}}}}: {{{{builder}}}} on {{{{branch}}}}\nfailed: {{{{#each failed_steps}}}}{{{{this}}}} {{{{/each}}}}\n{{{{url}}}}\n"
}}
"#
        ),
    );
    let pass = force(&m, "job", r#"{"properties": {"code": 0}}"#);
    assert_eq!(pass["result"], "success");
    let fail = force(
        &m,
        "job",
        r#"{"branch": "main", "properties": {"code": 3}}"#,
    );
    assert_eq!(fail["result"], "failure");
    let list = wait_for("the mail", || {
        let l = mails(&maildir);
        (!l.is_empty()).then_some(l)
    });
    // `when "failing"` (the default): the passing build sent nothing.
    assert_eq!(list.len(), 1, "{list:#?}");
    let mail = &list[0];
    assert_eq!(header(mail, "Subject"), Some("[Acme CI] job #2: failure"));
    assert_eq!(header(mail, "From"), Some("\"Acme CI\" <ci@acme.example>"));
    assert_eq!(header(mail, "X-MailFrom"), Some("ci@acme.example"));
    assert_eq!(
        header(mail, "X-RcptTo"),
        Some("dev@acme.example, qa@acme.example")
    );
    let body = mail.split_once("\n\n").map(|x| x.1).unwrap_or("");
    let body = body.replace("\r\n", "\n");
    assert_eq!(
        body.trim_end(),
        format!(
            "Broken: job on main\nfailed: unit-tests \nhttps://ci.acme.example/#/builds/{}",
            fail["id"]
        )
    );
    let logins = std::fs::read_to_string(&logins).unwrap_or_default();
    assert!(logins.lines().all(|l| l.ends_with(" ci ok")), "{logins}");
    assert!(!logins.is_empty());
    drop(smtp);
}

fn have_ngircd() -> bool {
    std::process::Command::new("ngircd")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A line-based IRC client for the test, with an overall deadline.
struct IrcClient {
    rd: BufReader<TcpStream>,
    wr: TcpStream,
    deadline: Instant,
}

impl IrcClient {
    fn connect(port: u16, nick: &str) -> IrcClient {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let wr = s.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut c = IrcClient {
            rd: BufReader::new(s),
            wr,
            deadline: Instant::now() + TIMEOUT,
        };
        c.send(&format!(
            "PASS srv-pass-1\r\nNICK {nick}\r\nUSER {nick} 0 * :watcher"
        ));
        c.until(|l| l.split_whitespace().nth(1) == Some("001"));
        c
    }

    fn send(&mut self, line: &str) {
        self.wr
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Reads lines (answering PINGs) until `f` accepts one; returns it.
    fn until(&mut self, f: impl Fn(&str) -> bool) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out reading from the IRC server");
            let _ = self.rd.get_ref().set_read_timeout(Some(left));
            let mut line = String::new();
            match self.rd.read_line(&mut line) {
                Ok(0) => panic!("the IRC server closed the connection"),
                Ok(_) => {}
                Err(e) => panic!("reading from the IRC server: {e}"),
            }
            let line = line.trim_end().to_string();
            if let Some(tok) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {tok}"));
                continue;
            }
            if f(&line) {
                return line;
            }
        }
    }
}

#[test]
fn irc_says_failing_and_changed_builds_in_the_channel() {
    if !have_ngircd() {
        if std::env::var("BBC_REQUIRE_IRC").is_ok_and(|v| v == "1") {
            panic!("BBC_REQUIRE_IRC=1 but ngircd is not installed (apt-get install ngircd)");
        }
        eprintln!(
            "irc_says_failing_and_changed_builds_in_the_channel: skipped, ngircd is not installed"
        );
        return;
    }
    let dir = temp_dir("rep-irc-server");
    let port = closed_port();
    let conf = dir.join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\n    Name = irc.bbc.test\n    Info = bbc test server\n    Listen = 127.0.0.1\n    Ports = {port}\n    Password = srv-pass-1\n    MotdPhrase = bbc test\n[Limits]\n    PingTimeout = 120\n    PongTimeout = 20\n[Options]\n    PAM = no\n    Ident = no\n    DNS = no\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec ngircd -n -f \"$0\" 2>&1")
        .arg(&conf)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ngircd: {e}"));
    let out = child.stdout.take();
    let server = Proc(child);
    // ngircd says when it listens.
    let mut out = BufReader::new(out.unwrap_or_else(|| panic!("no stdout")));
    let mut log = String::new();
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("ngircd stopped: {log}");
        }
        log.push_str(&l);
        if l.contains("ready") {
            break;
        }
    }
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });

    let mut watcher = IrcClient::connect(port, "watcher");
    watcher.send("JOIN #widget");
    watcher.until(|l| l.split_whitespace().nth(1) == Some("366"));

    let (_dir, m, _w) = start(
        "rep-irc",
        &[("irc", "srv-pass-1")],
        &format!(
            r##"master {{
    title "Acme"
}}
scheduler "force" kind="force" {{
    builders "job"
    param "code" type="int" default=0
}}
builder "job" {{
    workers "w1"
    steps {{
        shell "exit ${{{{ prop.code }}}}" name="run"
    }}
}}
reporter "chat" kind="irc" {{
    server "127.0.0.1:{port}"
    nick "bbc-ci"
    channel "#widget"
    password (secret)"irc"
    tls #false
}}
"##
        ),
    );
    // The bot joins the channel when the master starts.
    watcher.until(|l| l.starts_with(":bbc-ci!") && l.contains(" JOIN "));
    let mut builds = Vec::new();
    for code in [0, 1, 0] {
        builds.push(force(
            &m,
            "job",
            &format!(r#"{{"branch": "main", "properties": {{"code": {code}}}}}"#),
        ));
    }
    // `when "failing" "change"` (the default): build 2 (failing, and a
    // change) and build 3 (a change); build 1 was neither.
    let said: Vec<String> = (0..2)
        .map(|_| watcher.until(|l| l.starts_with(":bbc-ci!") && l.contains(" PRIVMSG #widget :")))
        .map(|l| {
            l.split_once(" :")
                .map(|x| x.1.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        said,
        [
            format!(
                "Acme: job #2 failure on main (was success) — {}",
                link(&m, &builds[1])
            ),
            format!(
                "Acme: job #3 success on main (was failure) — {}",
                link(&m, &builds[2])
            ),
        ]
    );
    // Both lines counted as delivered (the count follows the write the
    // watcher may see first), none as failed.
    let ok = r#"bbc_reporter_deliveries_total{reporter="chat",result="ok"}"#;
    let metrics = wait_for("the IRC deliveries counted", || {
        let s = crate::test_metrics::scrape(&m.http);
        (s.get(ok).copied() >= Some(2.0)).then_some(s)
    });
    assert_eq!(metrics.get(ok), Some(&2.0));
    // Its counters exist from the bot's start, at 0.
    let failed = r#"bbc_reporter_deliveries_total{reporter="chat",result="failed"}"#;
    assert_eq!(metrics.get(failed), Some(&0.0));
    drop(m);
    // The master stopped: the bot is gone.
    watcher.until(|l| l.starts_with(":bbc-ci!") && l.contains(" QUIT"));
    drop(server);
}

#[test]
fn a_reload_starts_and_stops_reporters() {
    let rec = Recorder::start();
    let a = &rec.addr;
    let builder = r#"scheduler "force" kind="force" {
    builders "job"
}
builder "job" {
    workers "w1"
    steps {
        shell "true"
    }
}
"#;
    let sentinel = format!(
        "reporter \"sentinel\" kind=\"http\" {{\n    url \"http://{a}/sentinel\"\n    when \"all\"\n}}\n"
    );
    let added = format!(
        "reporter \"added\" kind=\"http\" {{\n    url \"http://{a}/added\"\n    when \"all\"\n}}\n"
    );
    let (dir, m, _w) = start("rep-reload", &[], &format!("{builder}{sentinel}"));
    let reload = |body: &str| {
        let before = get_json(&m.http, "/api/v1/config")["hash"].clone();
        std::fs::write(
            dir.join("master.kdl"),
            format!("worker \"w1\" password=(secret)\"w1\" max-builds=4\n{body}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let pid = m.proc.0.id() as libc::pid_t;
        // SAFETY: sends a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        wait_for("the reload", || {
            let h = get_json(&m.http, "/api/v1/config")["hash"].clone();
            (h != before).then_some(())
        });
    };

    // Added by a reload: it reports the next build.
    reload(&format!("{builder}{sentinel}{added}"));
    force(&m, "job", "{}");
    rec.wait_n("/added", 1);
    rec.wait_n("/sentinel", 1);

    // Removed by a reload: the next build reaches the sentinel only.
    reload(&format!("{builder}{sentinel}"));
    force(&m, "job", "{}");
    rec.wait_n("/sentinel", 2);
    assert_eq!(rec.count("/added"), 1, "a removed reporter still reported");
}
