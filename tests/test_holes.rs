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
    let m = Master::start(&dir, r#"worker "w1" password="pw-plain-1""#);
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
