//! Retention against a real master and worker: `master { retention }`
//! with a one-second janitor deletes old logs, then (after a reload) old
//! builds, keeping each builder's newest and never a running build; a
//! finished log is compressed at rest and read back through the API as it
//! was; the usage endpoint counts it all.

use std::path::Path;

use serde_json::Value;

use crate::common::{get_json, http, temp_dir, wait_for, write_secret, Master};

fn config(retention: &str, go: &Path) -> String {
    format!(
        r#"master {{
    retention {{
{retention}
        every "1s"
    }}
}}
worker "w1" password=(secret)"w1" max-builds=4
scheduler "force" kind="force" {{
    builders "hello" "big" "slow"
}}
builder "hello" {{
    workers "w1"
    steps {{
        shell "echo hello ${{{{ prop.buildnumber }}}}" name="print"
    }}
}}
builder "big" {{
    workers "w1"
    steps {{
        shell "seq 1 200000" name="print"
    }}
}}
builder "slow" {{
    workers "w1"
    steps {{
        shell "echo waiting; while [ ! -e {go} ]; do sleep 0.05; done; echo done" name="wait"
    }}
}}
"#,
        go = go.display()
    )
}

fn builds(m: &Master, builder: &str) -> Vec<Value> {
    get_json(&m.http, &format!("/api/v1/builds?builder={builder}"))["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn numbers(m: &Master, builder: &str) -> Vec<u64> {
    builds(m, builder)
        .iter()
        .filter_map(|b| b["number"].as_u64())
        .collect()
}

fn usage(m: &Master, builder: &str) -> Value {
    get_json(&m.http, &format!("/api/v1/builders/{builder}/usage"))
}

fn log_of(m: &Master, build: u64) -> (u16, String) {
    http(
        "GET",
        &m.http,
        &format!("/api/v1/builds/{build}/steps/0/log"),
        None,
    )
}

fn sighup(m: &Master) {
    let pid = m.proc.0.id() as libc::pid_t;
    // SAFETY: sends a signal to our own child process.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {pid}");
}

#[test]
fn old_logs_then_old_builds_go_keeping_the_newest_and_running_ones() {
    let dir = temp_dir("retention");
    let go = dir.join("go");
    write_secret(&dir, "w1", "pw1");
    // Logs of every finished build go at once, except each builder's
    // newest; records stay.
    let m = Master::start_logged(
        &dir,
        &config("        logs \"0s\"\n        keep-last 1", &go),
    );
    let _w = m.worker("w1", "pw1");
    m.wait_connected("w1");

    // A build running all along: old enough, but never touched.
    let slow_set = m.force("slow", "{}");
    let slow = wait_for("the slow build to start", || {
        builds(&m, "slow").first()?["id"].as_u64()
    });
    wait_for("the slow build's output", || {
        log_of(&m, slow).1.contains("waiting").then_some(())
    });

    let big = m.force_and_wait("big", "{}");
    assert_eq!(big["result"], "success", "{big}");
    let big_id = big["id"].as_u64().unwrap_or(0);
    let hello: Vec<u64> = (0..3)
        .map(|_| m.force_and_wait("hello", "{}")["id"].as_u64().unwrap_or(0))
        .collect();

    // The big log is compressed once its build ends: the usage shows it.
    let u = wait_for("the big log to be compressed", || {
        let u = usage(&m, "big");
        (u["log_bytes_stored"].as_u64()? < u["log_bytes"].as_u64()?).then_some(u)
    });
    let raw = u["log_bytes"].as_u64().unwrap_or(0);
    let seq: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(raw >= seq.len() as u64, "{u}");
    assert!(
        u["log_bytes_stored"].as_u64().unwrap_or(u64::MAX) < raw / 3,
        "{u}"
    );
    assert_eq!(
        (u["builds"].as_u64(), u["logs"].as_u64()),
        (Some(1), Some(1))
    );
    // Read back through the API exactly as it was written, whole and in
    // pieces (as the web UI follows a log), with its length unchanged.
    let (status, whole) = http(
        "GET",
        &m.http,
        &format!("/api/v1/builds/{big_id}/steps/0/log?limit=8388608"),
        None,
    );
    assert_eq!(status, 200);
    // After the command line the step's log starts with.
    let at = whole.find("\n1\n2\n3\n").map_or(0, |i| i + 1);
    assert_eq!(&whole[at..at + seq.len()], seq, "the command's output");
    assert_eq!(whole.len() as u64, raw);
    let b = get_json(&m.http, &format!("/api/v1/builds/{big_id}"))["build"].clone();
    assert_eq!(b["steps"][0]["log_len"].as_u64(), Some(raw));
    let mut pieces = String::new();
    while (pieces.len() as u64) < raw {
        let (status, part) = http(
            "GET",
            &m.http,
            &format!(
                "/api/v1/builds/{big_id}/steps/0/log?offset={}&limit=300000",
                pieces.len()
            ),
            None,
        );
        assert_eq!(status, 200);
        assert!(!part.is_empty());
        pieces.push_str(&part);
    }
    assert_eq!(pieces, whole);

    // Logs of hello #1 and #2 go; #3 (the newest) keeps its log.
    wait_for("old logs to be deleted", || {
        let b = get_json(&m.http, &format!("/api/v1/builds/{}", hello[1]))["build"].clone();
        b["logs_deleted_at"].is_i64().then_some(())
    });
    for &id in &hello[..2] {
        let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
        assert!(b["logs_deleted_at"].is_i64(), "{b}");
        assert_eq!(b["steps"][0]["log_len"].as_u64(), Some(0));
        assert_eq!(log_of(&m, id), (200, String::new()));
    }
    assert!(log_of(&m, hello[2]).1.contains("hello 3"));
    assert!(
        log_of(&m, slow).1.contains("waiting"),
        "a running build's log"
    );
    assert_eq!(numbers(&m, "hello"), [3, 2, 1], "records are kept");
    wait_for("the janitor's report in the master's log", || {
        std::fs::read_to_string(dir.join("master.log"))
            .ok()?
            .contains("retention: deleted 0 builds and the logs of")
            .then_some(())
    });

    // Now whole builds: every finished one but each builder's newest.
    std::fs::write(
        dir.join("master.kdl"),
        config("        builds \"0s\"\n        keep-last 1", &go),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    sighup(&m);
    wait_for("hello #1 and #2 to be deleted", || {
        (numbers(&m, "hello") == [3]).then_some(())
    });
    for &id in &hello[..2] {
        let (status, _) = http("GET", &m.http, &format!("/api/v1/builds/{id}"), None);
        assert_eq!(status, 404);
    }
    assert_eq!(usage(&m, "hello")["builds"].as_u64(), Some(1));
    assert_eq!(numbers(&m, "big"), [1]);
    let s = get_json(&m.http, &format!("/api/v1/builds/{slow}"))["build"].clone();
    assert!(s["finished_at"].is_null(), "still running: {s}");
    // Numbers go on from the deleted ones.
    let next = m.force_and_wait("hello", "{}");
    assert_eq!(next["number"].as_u64(), Some(4), "{next}");
    wait_for("hello #3 to go too, now that #4 is the newest", || {
        (numbers(&m, "hello") == [4]).then_some(())
    });

    // The running build ends normally and is kept as its builder's newest.
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let done = m.wait_buildset(slow_set);
    assert_eq!(done["result"], "success", "{done}");
    assert!(log_of(&m, slow).1.contains("done"));
    let (status, _) = http("GET", &m.http, "/api/v1/builders/nobody/usage", None);
    assert_eq!(status, 404);
}

#[test]
fn logs_of_a_build_interrupted_by_a_kill_are_compressed_at_the_next_start() {
    let dir = temp_dir("retention-interrupted");
    let go = dir.join("go");
    write_secret(&dir, "w1", "pw1");
    let cfg = config("        keep-last 5", &go);
    let mut m = Master::start(&dir, &cfg);
    let mut w = m.worker("w1", "pw1");
    m.wait_connected("w1");
    m.force("slow", "{}");
    let id = wait_for("the slow build to start", || {
        builds(&m, "slow").first()?["id"].as_u64()
    });
    wait_for("its output", || {
        log_of(&m, id).1.contains("waiting").then_some(())
    });
    let before = log_of(&m, id).1;
    let _ = m.proc.0.kill();
    let _ = m.proc.0.wait();
    let _ = w.0.kill();
    let _ = w.0.wait();
    let plain = dir.join(format!("state/logs/0/{id}/0.log"));
    assert!(plain.is_file(), "{}", plain.display());
    // What the log holds is what the master wrote before it died (output
    // may have arrived after `before` was read).
    let at_kill = std::fs::read(&plain).unwrap_or_else(|e| panic!("{e}"));
    assert!(at_kill.starts_with(before.as_bytes()));

    // No worker this time: the build stays interrupted, its request pending.
    let m = Master::start(&dir, &cfg);
    let sealed = dir.join(format!("state/logs/0/{id}/0.log.zst"));
    wait_for("the interrupted build's log to be compressed", || {
        (sealed.is_file() && !plain.exists()).then_some(())
    });
    let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
    assert_eq!(b["state_string"], "interrupted", "{b}");
    // Its step record waited in memory and died with the master (the
    // store's documented loss after kill -9), so the API has no step to
    // serve; the usage shows the log whole, from the compressed file.
    let u = usage(&m, "slow");
    assert_eq!(u["logs"].as_u64(), Some(1), "{u}");
    assert_eq!(u["log_bytes"].as_u64(), Some(at_kill.len() as u64), "{u}");
}

/// `retention { audit }`: kept while unset (the janitor runs every
/// second meanwhile), then, after a reload sets an age, old entries go.
#[test]
fn the_audit_log_is_pruned_once_retention_names_an_age() {
    let dir = temp_dir("retention-audit");
    let go = dir.join("go");
    write_secret(&dir, "w1", "pw1");
    write_secret(&dir, "bbc-admin-token", "admin-audit-0001");
    let m = Master::start_logged(&dir, &config("", &go));
    let audit = || {
        let (st, body) = crate::common::http_with(
            "GET",
            &m.http,
            "/api/v1/audit",
            &[("authorization", "Bearer admin-audit-0001")],
            None,
        );
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["audit"].as_array().cloned().unwrap_or_default()
    };
    m.force("hello", "{}");
    let log = dir.join("master.log");
    // Two janitor runs without an audit age: the entry stays.
    wait_for("two janitor runs", || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.matches("and 0 audit entries").count() >= 2).then_some(())
    });
    let kept = audit();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["path"], "/api/v1/builders/hello/force");

    std::fs::write(dir.join("master.kdl"), config("        audit \"1s\"", &go))
        .unwrap_or_else(|e| panic!("{e}"));
    sighup(&m);
    wait_for("the old entry to go", || audit().is_empty().then_some(()));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("and 1 audit entries"), "{text}");
}
