//! The holes probing found (issue 11), each closed and kept closed: real
//! masters and workers, real TCP on 127.0.0.1.

use std::path::Path;

use crate::common::{bbc, get_json, http, temp_dir, write_secret, Master, Proc};

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    hits
}

/// Every file called `name` under `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ if e.file_name() == name => hits.push(e.path()),
                _ => {}
            }
        }
    }
    hits
}

const SECRET: &str = "pw-one-1234";

/// `set-property command=` used to store the command's raw stdout: a
/// secret the step printed came back from the API and sat in the store,
/// while the step's log showed `[secret]`.
#[test]
fn a_secret_printed_by_set_property_is_stored_redacted() {
    let dir = temp_dir("holes-setprop");
    write_secret(&dir, "w1", SECRET);
    let m = Master::start(
        &dir,
        r#"worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        set-property "p" command="echo x-$TOKEN-y; echo len=${#TOKEN} >&2"
        shell "echo got ${{ prop.p }}" name="use"
    }
}
"#,
    );
    // The secret reaches the step from the worker's environment, never
    // through the config (the graph is stored too).
    let pw = dir.join("w1.password");
    std::fs::write(&pw, SECRET).unwrap();
    let _w = Proc(
        bbc_testkit::worker_args(&mut bbc(), &m.workers, "w1", &pw, &dir)
            .env("TOKEN", SECRET)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    m.wait_connected("w1");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    // The step did print the secret: its log shows it masked, and its length.
    let log = m.log(b["id"].as_u64().unwrap(), 0);
    assert!(log.contains("x-[secret]-y"), "{log}");
    assert!(log.contains(&format!("len={}", SECRET.len())), "{log}");
    assert_eq!(b["properties"]["p"], "x-[secret]-y", "{b}");
    let used = m.log(b["id"].as_u64().unwrap(), 1);
    assert!(used.contains("got x-[secret]-y"), "{used}");
    for path in [
        format!("/api/v1/builds/{}", b["id"]),
        "/api/v1/builds".to_string(),
    ] {
        let (st, body) = http("GET", &m.http, &path, None);
        assert_eq!(st, 200, "{body}");
        assert!(
            !body.contains(SECRET),
            "GET {path} shows the secret: {body}"
        );
    }
    drop(m);
    let hits = files_containing(&dir.join("state"), SECRET.as_bytes());
    assert!(hits.is_empty(), "the secret is stored in {hits:?}");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// `POST /api/v1/changes` used to take the caller's `source` (a change
/// "from github" without any signature) and any field serde ignored; it now
/// reads changes exactly as the JSON webhook does, and its source is `api`.
#[test]
fn a_change_submitted_through_the_api_is_checked_and_its_source_is_api() {
    let dir = temp_dir("holes-changes");
    write_secret(&dir, "w1", SECRET);
    let m = Master::start(&dir, r#"worker "w1" password=(secret)"w1""#);
    for (body, status, why) in [
        (
            r#"{"source": "github", "branch": "main"}"#,
            400,
            "field `source` is not accepted",
        ),
        (
            r#"{"branch": "main", "colour": "red"}"#,
            400,
            "unknown field `colour`",
        ),
        (r#"{}"#, 400, "needs a `branch` or a `revision`"),
        (
            r#"{"author": "ann"}"#,
            400,
            "needs a `branch` or a `revision`",
        ),
        (
            r#"{"branch": "ma\u0000in"}"#,
            400,
            "field `branch` contains a NUL byte",
        ),
        (
            r#"{"branch": "main", "files": ["a", 3]}"#,
            400,
            "field `files[1]` must be a string",
        ),
        (
            r#"{"branch": "main", "properties": {"p": {}}}"#,
            400,
            "field `properties.p` must be a string, a number or a boolean",
        ),
        (
            r#"[{"branch": "main"}]"#,
            400,
            "the body must be a change object",
        ),
        (r#"{"branch": "#, 400, "invalid JSON"),
    ] {
        let (st, resp) = http("POST", &m.http, "/api/v1/changes", Some(body));
        assert_eq!(st, status, "{body}: {resp}");
        let v = json(&resp);
        assert_eq!(v["error"]["status"], status, "{resp}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{body}: {msg}");
    }
    let listed = get_json(&m.http, "/api/v1/changes");
    assert_eq!(listed["changes"], serde_json::json!([]), "{listed}");
    let (st, resp) = http(
        "POST",
        &m.http,
        "/api/v1/changes",
        Some(r#"{"branch": "main", "revision": "abc", "author": "ann"}"#),
    );
    assert_eq!(st, 201, "{resp}");
    assert_eq!(json(&resp)["change"]["source"], "api", "{resp}");
    // Larger than the body limit: 413, not 400, and in the error shape.
    let big = format!(
        r#"{{"branch": "main", "comments": "{}"}}"#,
        "x".repeat(3 << 20)
    );
    let (st, resp) = http("POST", &m.http, "/api/v1/changes", Some(&big));
    assert_eq!(st, 413, "{resp}");
    assert_eq!(json(&resp)["error"]["status"], 413, "{resp}");
}

/// Upload destinations were checked lexically only: a symbolic link inside
/// `STATE/files` was followed, so an upload could write (and a download
/// read) outside the state directory.
#[test]
fn transfers_do_not_follow_a_link_out_of_the_files_directory() {
    let dir = temp_dir("holes-symlink");
    write_secret(&dir, "w1", SECRET);
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("private.txt"), "not for workers\n").unwrap();
    let files = dir.join("state/files");
    std::fs::create_dir_all(files.join("tree")).unwrap();
    std::os::unix::fs::symlink(&outside, files.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, files.join("tree/sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("private.txt"), files.join("file-link")).unwrap();
    let m = Master::start(
        &dir,
        r#"worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {
    builders "inside" "file" "tree" "over" "down"
}
builder "inside" {
    workers "w1"
    steps {
        shell "mkdir -p o/sub && echo payload > o/a.txt && echo b > o/sub/b.txt"
        upload "o/a.txt" to="ok/a.txt"
        upload "o" to="ok/tree" directory=#true
    }
}
builder "file" {
    workers "w1"
    steps {
        shell "mkdir -p o/sub && echo payload > o/a.txt && echo b > o/sub/b.txt"
        upload "o/a.txt" to="link/a.txt"
    }
}
builder "tree" {
    workers "w1"
    steps {
        shell "mkdir -p o/sub && echo payload > o/a.txt && echo b > o/sub/b.txt"
        upload "o" to="tree" directory=#true
    }
}
builder "over" {
    workers "w1"
    steps {
        shell "mkdir -p o/sub && echo payload > o/a.txt && echo b > o/sub/b.txt"
        upload "o/a.txt" to="file-link"
    }
}
builder "down" {
    workers "w1"
    steps {
        download "link/private.txt" to="got.txt"
    }
}
"#,
    );
    let _w = m.worker("w1", SECRET);
    m.wait_connected("w1");
    let b = m.force_and_wait("inside", "{}");
    assert_eq!(b["result"], "success", "{b}");
    assert!(files.join("ok/a.txt").is_file() && files.join("ok/tree/sub/b.txt").is_file());
    for builder in ["file", "tree", "over", "down"] {
        let b = m.force_and_wait(builder, "{}");
        assert_eq!(b["result"], "exception", "{builder}: {b}");
        let last = b["steps"].as_array().and_then(|s| s.last()).cloned();
        let state = last
            .as_ref()
            .and_then(|s| s["state_string"].as_str())
            .unwrap_or("");
        assert!(
            state.contains("through a symbolic link"),
            "{builder}: {state}"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["private.txt"], "written outside the state directory");
    assert_eq!(
        std::fs::read_to_string(outside.join("private.txt")).unwrap(),
        "not for workers\n"
    );
    assert!(files_named(&dir.join("workers"), "got.txt").is_empty());
}

/// One raw HTTP/1.1 exchange (`Connection: close`): the status, the
/// headers (names lower-cased) and the body.
fn raw(addr: &str, request: &[u8]) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    // The server may close before reading a body it refuses (413): what it
    // answered is still there to read.
    let _ = s.read_to_end(&mut out);
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
    (status, headers, body.to_string())
}

fn request(method: &str, path: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Method, path, request headers, body; the status and a part of the
/// message expected.
type Case<'a> = (&'a str, &'a str, Vec<&'a str>, &'a str, u16, &'a str);

/// Every error of every route is `{"error": {"status", "message"}}` with a
/// fitting status, the framework's own rejections included (they were
/// plain text); `bearer` is accepted in any case; page limits outside
/// 1–1000 are refused.
#[test]
fn every_error_is_json_with_a_fitting_status() {
    let dir = temp_dir("holes-errors");
    write_secret(&dir, "w1", SECRET);
    write_secret(&dir, "bbc-control-token", "ctl-token-0001");
    let m = Master::start(
        &dir,
        r#"worker "w1" password=(secret)"w1"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        shell "true"
    }
}
"#,
    );
    let json_ct = "Content-Type: application/json";
    let auth = "Authorization: bearer ctl-token-0001";
    let big = format!(r#"{{"reason": "{}"}}"#, "x".repeat(3 << 20));
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/api/v1/nope",
            vec![],
            "",
            404,
            "no such API endpoint",
        ),
        (
            "GET",
            "/nope/at/all",
            vec![],
            "",
            404,
            "no such API endpoint",
        ),
        (
            "DELETE",
            "/api/v1/builds",
            vec![],
            "",
            405,
            "is not allowed on",
        ),
        (
            "POST",
            "/api/v1/events",
            vec![],
            "",
            405,
            "is not allowed on",
        ),
        ("GET", "/api/v1/builds/abc", vec![], "", 400, "parse"),
        (
            "GET",
            "/api/v1/builds/99999999999999999999999",
            vec![],
            "",
            400,
            "parse",
        ),
        (
            "GET",
            "/api/v1/builds/1/steps/x/log",
            vec![],
            "",
            400,
            "parse",
        ),
        (
            "GET",
            "/api/v1/builds?limit=0",
            vec![],
            "",
            400,
            "limit=0 is out of range",
        ),
        (
            "GET",
            "/api/v1/builds?limit=100000",
            vec![],
            "",
            400,
            "limit=100000 is out of range",
        ),
        ("GET", "/api/v1/builds?limit=ten", vec![], "", 400, "limit"),
        (
            "GET",
            "/api/v1/changes?limit=1001",
            vec![],
            "",
            400,
            "1 to 1000",
        ),
        (
            "GET",
            "/api/v1/requests?limit=0",
            vec![],
            "",
            400,
            "1 to 1000",
        ),
        (
            "GET",
            "/api/v1/builds?running=maybe",
            vec![],
            "",
            400,
            "running",
        ),
        (
            "POST",
            "/api/v1/builders/b/force",
            vec![auth, "Content-Type: text/plain"],
            "{}",
            415,
            "Content-Type",
        ),
        (
            "POST",
            "/api/v1/builders/b/force",
            vec![auth, json_ct],
            "{",
            400,
            "JSON",
        ),
        (
            "POST",
            "/api/v1/builders/b/force",
            vec![auth, json_ct],
            &big,
            413,
            "too large",
        ),
        (
            "POST",
            "/api/v1/changes",
            vec![auth, json_ct],
            &big,
            413,
            "too large",
        ),
        (
            "POST",
            "/api/v1/builders/b/force",
            vec![json_ct],
            "{}",
            401,
            "needs a token",
        ),
        (
            "POST",
            "/api/v1/builders/b/force",
            vec!["Authorization: bearer wrong", json_ct],
            "{}",
            401,
            "wrong token",
        ),
        (
            "POST",
            "/api/v1/config",
            vec![json_ct],
            "{}",
            403,
            "admin token",
        ),
    ];
    for (method, path, headers, body, status, why) in &cases {
        let (st, hdrs, resp) = raw(&m.http, &request(method, path, headers, body));
        let what = format!("{method} {path}");
        assert_eq!(st, *status, "{what}: {resp}");
        let ct = hdrs
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str());
        assert_eq!(ct, Some("application/json"), "{what}: {hdrs:?}");
        let v = json(&resp);
        assert_eq!(v["error"]["status"], *status, "{what}: {resp}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{what}: {msg}");
        if *status == 405 {
            let allow = hdrs
                .iter()
                .find(|(k, _)| k == "allow")
                .map(|(_, v)| v.as_str());
            assert_eq!(allow, Some("GET,HEAD"), "{what}: {hdrs:?}");
        }
    }
    // Within the bounds, and with the scheme in any case, it works.
    for path in [
        "/api/v1/builds?limit=1",
        "/api/v1/builds?limit=1000",
        "/api/v1/changes",
    ] {
        let (st, _, resp) = raw(&m.http, &request("GET", path, &[], ""));
        assert_eq!(st, 200, "{path}: {resp}");
    }
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let a = format!("Authorization: {scheme} ctl-token-0001");
        let (st, _, resp) = raw(
            &m.http,
            &request("POST", "/api/v1/builders/b/force", &[&a, json_ct], "{}"),
        );
        assert_eq!(st, 201, "{scheme}: {resp}");
    }
}

/// Reads until the server closes the connection; what it sent. A bound on
/// the wait keeps a broken server from hanging the test (it fails then).
fn until_closed(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

/// Slow clients used to hold their connections forever: a hundred clients
/// sending a byte of header a second all stayed open. Now a request's
/// headers have a deadline (`--http-header-timeout`), which closes idle
/// kept-alive connections too, and a body that stops coming for that long
/// fails.
#[test]
fn slow_and_idle_http_clients_are_disconnected() {
    use std::io::Write;
    let dir = temp_dir("holes-slowloris");
    write_secret(&dir, "w1", SECRET);
    let m = Master::start_logged_with(
        &dir,
        r#"worker "w1" password=(secret)"w1""#,
        &["--http-header-timeout", "1"],
    );
    // Each trickles a header a byte at a time, never finishing it, until
    // the server closes the connection.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&m.http).unwrap();
            s.write_all(b"GET /api/v1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            let mut w = s.try_clone().unwrap();
            let trickle = std::thread::spawn(move || {
                while w.write_all(b"a").is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
            (s, trickle)
        })
        .collect();
    for (mut s, trickle) in slow {
        let got = until_closed(&mut s);
        // Never answered as a request (hyper may say 408 first).
        assert!(!String::from_utf8_lossy(&got).contains(" 200 "), "{got:?}");
        trickle.join().unwrap();
    }
    // A kept-alive connection is answered, then closed once idle.
    let mut s = std::net::TcpStream::connect(&m.http).unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = String::from_utf8_lossy(&until_closed(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A body that stops coming fails the route's read of it.
    let mut s = std::net::TcpStream::connect(&m.http).unwrap();
    s.write_all(
        b"POST /api/v1/changes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"branch\": ",
    )
    .unwrap();
    let got = String::from_utf8_lossy(&until_closed(&mut s)).into_owned();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(
        got.contains("no part of the request body arrived for 1 s"),
        "{got}"
    );
    assert!(get_json(&m.http, "/api/v1/changes")["changes"] == serde_json::json!([]));
    // The master still serves.
    assert_eq!(get_json(&m.http, "/api/v1/health")["status"], "ok");
}

/// Connections over `--http-max-connections` are answered 503 at once
/// (in the API's error shape); once one closes, the next is served.
#[test]
fn http_connections_over_the_cap_are_refused_with_503() {
    let dir = temp_dir("holes-conncap");
    write_secret(&dir, "w1", SECRET);
    let m = Master::start_logged_with(
        &dir,
        r#"worker "w1" password=(secret)"w1""#,
        &[
            "--http-max-connections",
            "2",
            "--http-header-timeout",
            "3600",
        ],
    );
    // Two idle connections take both places (the listener accepts in the
    // order of connecting, so they are taken before the third).
    let a = std::net::TcpStream::connect(&m.http).unwrap();
    let _b = std::net::TcpStream::connect(&m.http).unwrap();
    let (st, _, body) = raw(&m.http, &request("GET", "/api/v1/health", &[], ""));
    assert_eq!(st, 503, "{body}");
    let v = json(&body);
    assert_eq!(v["error"]["status"], 503, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 2"),
        "{body}"
    );
    drop(a);
    crate::common::wait_for("a place to free", || {
        let (st, _, _) = raw(&m.http, &request("GET", "/api/v1/health", &[], ""));
        (st == 200).then_some(())
    });
}

/// One worker `hello` over a fresh connection: "welcome", or the master's
/// refusal reason.
fn hello(addr: &str, name: &str, password: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let msg = serde_json::json!({"type": "hello", "protocol": 1, "name": name,
                                 "password": password, "info": {}})
    .to_string();
    let mut frame = ((msg.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(msg.as_bytes());
    s.write_all(&frame).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(body[0], 1, "not a message frame");
    let v = json(&String::from_utf8_lossy(&body[1..]));
    match v["type"].as_str() {
        Some("welcome") => "welcome".into(),
        Some("refused") => v["reason"].as_str().unwrap_or("").to_string(),
        _ => panic!("unexpected answer {v}"),
    }
}

/// Wrong worker passwords could be tried as fast as the network allowed
/// (1,000 in 0.18 s), with a log line each. Now failures back off: after a
/// few, hellos are refused unchecked, the log has one line and a count,
/// and a worker that logged in from this address before still gets in.
#[test]
fn failed_worker_logins_back_off_and_are_logged_once() {
    let dir = temp_dir("holes-logins");
    write_secret(&dir, "w1", SECRET);
    write_secret(&dir, "w2", "pw-two-5678");
    let m = Master::start_logged(
        &dir,
        r#"worker "w1" password=(secret)"w1"
worker "w2" password=(secret)"w2"
"#,
    );
    // w1 has logged in from here before.
    let w = m.worker("w1", SECRET);
    m.wait_connected("w1");
    drop(w);
    crate::common::wait_for("w1 to be gone", || {
        let v = get_json(&m.http, "/api/v1/workers");
        let w1 = v["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == "w1")?
            .clone();
        (w1["connected"] == false).then_some(())
    });
    let reasons: Vec<String> = (0..50)
        .map(|i| hello(&m.workers, "intruder", &format!("guess-{i}")))
        .collect();
    assert_eq!(reasons[0], "wrong worker name or password");
    let checked = reasons
        .iter()
        .filter(|r| *r == "wrong worker name or password")
        .count();
    let throttled = reasons
        .iter()
        .filter(|r| r.starts_with("too many failed logins; the next attempt is checked in"))
        .count();
    assert_eq!(checked + throttled, 50, "{reasons:?}");
    assert!(throttled > 0 && checked < 10, "{reasons:?}");
    // Another worker's right password from this address is not even
    // looked at while the address is blocked...
    let w2 = hello(&m.workers, "w2", "pw-two-5678");
    assert!(w2.starts_with("too many failed logins"), "{w2}");
    // ... but the worker that logged in from here before gets in.
    assert_eq!(hello(&m.workers, "w1", SECRET), "welcome");
    // One line for the first failure; the rest are counted for a summary.
    let first = "wrong name or password for `intruder` from 127.0.0.1";
    let log = crate::common::wait_for("the first failure's log line", || {
        let log = std::fs::read_to_string(dir.join("master.log")).ok()?;
        log.contains(first).then_some(log)
    });
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed logins") || l.contains("wrong name or password"))
        .collect();
    assert_eq!(
        failed.iter().filter(|l| l.contains(first)).count(),
        1,
        "{failed:#?}"
    );
    assert!(failed.len() < 5, "{failed:#?}");
}
