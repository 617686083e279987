//! The master's log: one line per build start and end, as text or as JSON
//! objects (`--log-format json`, `BBC_LOG_FORMAT=json`).

use std::path::Path;

use crate::common::{bbc, temp_dir, wait_for, write_secret, Master, Proc};

const CONFIG: &str = r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {
    builders "b"
    param "code" type="int" default=0
}
builder "b" {
    workers "w"
    steps {
        shell "exit ${{ prop.code }}" name="exit"
    }
}
"#;

const PASSWORD: &str = "pw-logging-1234";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of `text` that contain all of `words`.
fn lines_with<'a>(text: &'a str, words: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .collect()
}

#[test]
fn each_build_start_and_end_is_logged_once() {
    let dir = temp_dir("log_build_lines");
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start_logged(&dir, CONFIG);
    let _w = m.worker("w", PASSWORD);
    m.wait_connected("w");
    let ok = m.force_and_wait("b", "{}");
    assert_eq!(ok["result"], "success", "{ok}");
    let bad = m.force_and_wait("b", r#"{"properties": {"code": 3}}"#);
    assert_eq!(bad["result"], "failure", "{bad}");
    let (ok_id, bad_id) = (ok["id"].as_u64(), bad["id"].as_u64());
    let log = dir.join("master.log");
    // The end is logged after the store recorded it, which the API shows
    // first: wait for the line.
    let text = wait_for("the second build's end in the log", || {
        let text = read(&log);
        (lines_with(&text, &["build finished", "number=2"]).len() == 1).then_some(text)
    });
    for (id, number, result) in [(ok_id, 1, "success"), (bad_id, 2, "failure")] {
        let id = id.unwrap_or_else(|| panic!("no build id"));
        let build = format!("build_id={id} ");
        let number = format!("number={number} ");
        let started = lines_with(
            &text,
            &["INFO", "build started", "builder=b ", &number, &build],
        );
        assert_eq!(started.len(), 1, "one start line for build {id}:\n{text}");
        assert!(started[0].ends_with("worker=w"), "{}", started[0]);
        let finished = lines_with(
            &text,
            &[
                "INFO",
                "build finished",
                "builder=b ",
                &number,
                &build,
                "worker=w ",
                &format!("result={result} "),
                "duration_ms=",
            ],
        );
        assert_eq!(finished.len(), 1, "one end line for build {id}:\n{text}");
    }
    assert_eq!(lines_with(&text, &["build started"]).len(), 2, "{text}");
    assert_eq!(lines_with(&text, &["build finished"]).len(), 2, "{text}");
}

/// Every line of a JSON log, parsed; a line that is not a JSON object
/// fails the test.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(v) => panic!("not a JSON object: {v}\n{text}"),
            Err(e) => panic!("not JSON ({e}): {l:?}\n{text}"),
        })
        .collect()
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = temp_dir("log_json");
    write_secret(&dir, "w", PASSWORD);
    let cfg = dir.join("master.kdl");
    std::fs::write(&cfg, CONFIG).unwrap_or_else(|e| panic!("{e}"));
    let master_log = dir.join("master.log");
    let file = |p: &Path| {
        std::fs::File::create(p)
            .map(std::process::Stdio::from)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let mut cmd = bbc();
    bbc_testkit::master_args(&mut cmd, &cfg, &dir)
        .args(["--log-format", "json"])
        .stderr(file(&master_log));
    let started =
        bbc_testkit::spawn_announced(&mut cmd).unwrap_or_else(|e| panic!("spawn master: {e}"));
    let ports = started.ports();
    let proc = Proc(started.child);
    let ports = ports.unwrap_or_else(|| panic!("unexpected first line: {:?}", started.first_line));
    let m = Master {
        proc,
        workers: ports.workers,
        http: ports.http,
        dir: dir.clone(),
    };
    // The worker takes the format from the environment.
    let pw = dir.join("w.password");
    std::fs::write(&pw, PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    let worker_log = dir.join("worker.log");
    let child = bbc_testkit::worker_args(&mut bbc(), &m.workers, "w", &pw, &dir)
        .env("BBC_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(file(&worker_log))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn worker: {e}"));
    let _w = Proc(child);
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64();

    let lines = wait_for("the build's end in the JSON log", || {
        let lines = json_lines(&read(&master_log));
        lines
            .iter()
            .any(|l| l.get("message").and_then(|m| m.as_str()) == Some("build finished"))
            .then_some(lines)
    });
    for l in &lines {
        assert!(l["timestamp"].is_string(), "{l:?}");
        assert!(l["level"].is_string(), "{l:?}");
        assert!(l["message"].is_string(), "{l:?}");
    }
    let with = |message: &str| -> Vec<&serde_json::Map<String, serde_json::Value>> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let started = with("build started");
    assert_eq!(started.len(), 1, "{lines:?}");
    let s = started[0];
    assert_eq!(s["level"], "INFO", "{s:?}");
    assert_eq!(s["builder"], "b", "{s:?}");
    assert_eq!(s["number"], 1, "{s:?}");
    assert_eq!(s["build_id"].as_u64(), id, "{s:?}");
    assert_eq!(s["worker"], "w", "{s:?}");
    let finished = with("build finished");
    assert_eq!(finished.len(), 1, "{lines:?}");
    let f = finished[0];
    assert_eq!(f["level"], "INFO", "{f:?}");
    assert_eq!(f["builder"], "b", "{f:?}");
    assert_eq!(f["number"], 1, "{f:?}");
    assert_eq!(f["build_id"].as_u64(), id, "{f:?}");
    assert_eq!(f["worker"], "w", "{f:?}");
    assert_eq!(f["result"], "success", "{f:?}");
    assert!(
        f["duration_ms"].is_u64() || f["duration_ms"].is_i64(),
        "{f:?}"
    );
    // The worker's log, in JSON too (its connection is logged).
    let worker = wait_for("the worker's JSON log", || {
        let lines = json_lines(&read(&worker_log));
        lines
            .iter()
            .any(|l| l["message"] == "connected to the master")
            .then_some(lines)
    });
    assert!(worker.iter().all(|l| l["level"].is_string()), "{worker:?}");
    drop(m);
}
