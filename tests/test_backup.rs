//! `bbc backup STATE OUT` against a real master: taken while it runs (a
//! build running meanwhile), restored by starting a new master on OUT, and
//! checked through that master's API; refused for an existing OUT; taken
//! offline when no master runs.

use std::path::Path;

use crate::common::{
    get_json, http, run, stderr, stdout, temp_dir, wait_for, write_secret, Master,
};

fn config(timer: &str, go: &Path) -> String {
    format!(
        r#"worker "w1" password=(secret)"w1" max-builds=4
scheduler "force" kind="force" {{
    builders "hello" "slow" "fetch"
}}
scheduler "ci" kind="single-branch" {{
    branch "main"
    tree-stable-timer "{timer}"
    builders "hello"
}}
builder "hello" {{
    workers "w1"
    steps {{
        shell "seq 1 3000; echo build ${{{{ prop.buildnumber }}}}" name="print"
        shell "mkdir -p out && echo payload-${{{{ prop.buildnumber }}}} > out/a.txt" name="make"
        upload "out/a.txt" to="up/a.txt"
        shell "echo last step" name="last"
    }}
}}
builder "slow" {{
    workers "w1"
    steps {{
        shell "echo before-backup; while [ ! -e {go} ]; do sleep 0.05; done; echo after-backup" name="wait"
    }}
}}
builder "fetch" {{
    workers "w1"
    steps {{
        download "up/a.txt" to="a.txt"
        shell "cat a.txt" name="show"
    }}
}}
"#,
        go = go.display()
    )
}

fn sendchange(m: &Master, rev: &str) {
    let url = format!("http://{}", m.http);
    let o = run(&[
        "sendchange",
        "--branch",
        "main",
        "--revision",
        rev,
        "--file",
        "src/a.rs",
        "--url",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn builds(m: &Master) -> Vec<serde_json::Value> {
    get_json(&m.http, "/api/v1/builds?limit=100")["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn build(m: &Master, id: u64) -> serde_json::Value {
    get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone()
}

fn id(b: &serde_json::Value) -> u64 {
    b["id"].as_u64().unwrap_or_else(|| panic!("no id in {b}"))
}

/// Every step's log of a build, by step index.
fn logs(m: &Master, b: &serde_json::Value) -> Vec<String> {
    b["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| m.log(id(b), s["index"].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

fn backup(state: &Path, out: &Path) -> std::process::Output {
    let (s, o) = (state.to_string_lossy(), out.to_string_lossy());
    run(&["backup", &s, &o])
}

#[test]
fn a_backup_taken_while_the_master_runs_restores_into_a_new_master() {
    let dir = temp_dir("backup-live");
    let go = dir.join("go");
    write_secret(&dir, "w1", "pw-one-1234");
    let m = Master::start(&dir, &config("1h", &go));
    let w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let finished: Vec<serde_json::Value> =
        (0..3).map(|_| m.force_and_wait("hello", "{}")).collect();
    // Collected by the single-branch scheduler, whose timer will not fire
    // in this master's life: the change is in its state only.
    sendchange(&m, "r1");
    // A build running while the backup is taken, its log half written.
    let (status, resp) = http("POST", &m.http, "/api/v1/builders/slow/force", Some("{}"));
    assert_eq!(status, 201, "{resp}");
    let set: serde_json::Value = serde_json::from_str(&resp).unwrap_or_default();
    let set = set["buildset"]["id"].as_u64().unwrap_or(0);
    let slow = wait_for("the slow build to print", || {
        let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
        let b = r["requests"][0]["build"].as_u64()?;
        let (status, log) = http(
            "GET",
            &m.http,
            &format!("/api/v1/builds/{b}/steps/0/log"),
            None,
        );
        (status == 200 && log.lines().any(|l| l == "before-backup")).then_some(b)
    });

    let state = dir.join("state");
    // The control socket: only the master's user may connect; a line that
    // is not a request is answered with a refusal, not a dropped connection.
    {
        use std::io::{BufRead, Write};
        use std::os::unix::fs::PermissionsExt;
        let sock = state.join("control.sock");
        let mode = std::fs::metadata(&sock).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        let mut c =
            std::os::unix::net::UnixStream::connect(&sock).unwrap_or_else(|e| panic!("{e}"));
        c.write_all(b"hello\n").unwrap_or_else(|e| panic!("{e}"));
        let mut answer = String::new();
        std::io::BufReader::new(c)
            .read_line(&mut answer)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.contains(r#""answer":"refused""#), "{answer}");
    }
    let restored = temp_dir("backup-live-restored");
    let out = restored.join("state");
    let o = backup(&state, &out);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("by the running master"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("4 builds"), "{}", stdout(&o));
    assert!(
        !restored.join("state.tmp").exists(),
        "the temporary copy is renamed"
    );
    assert!(!out.join("secrets").exists() && !out.join("control.sock").exists());

    // The original goes on after the backup: its slow build ends.
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let slow_end = wait_for("the slow build to end", || {
        let b = build(&m, slow);
        (b["complete"] == true).then_some(b)
    });
    let slow_log = logs(&m, &slow_end)[0].clone();
    assert!(slow_log.lines().any(|l| l == "after-backup"), "{slow_log}");
    let uploaded = std::fs::read(state.join("files/up/a.txt")).unwrap_or_default();
    drop(w);

    // A new master on the copy, without a worker yet: it has every build.
    write_secret(&restored, "w1", "pw-one-1234");
    let r = Master::start(&restored, &config("1s", &go));
    let got = builds(&r);
    assert_eq!(got.len(), 4, "{got:?}");
    for b in &finished {
        let copy = build(&r, id(b));
        for field in [
            "number",
            "builder",
            "result",
            "properties",
            "steps",
            "started_at",
            "finished_at",
        ] {
            assert_eq!(copy[field], b[field], "build {} {field}", id(b));
        }
        assert_eq!(logs(&r, &copy), logs(&m, b), "logs of build {}", id(b));
        assert!(logs(&r, &copy)[0].contains("2999\n3000\n"));
    }
    // The running build: interrupted at the new master's start, its log
    // as far as it was written at the backup.
    let copy = build(&r, slow);
    assert_eq!(copy["state_string"], "interrupted", "{copy}");
    let cut = logs(&r, &copy)[0].clone();
    // (The log starts with the command, which names both markers.)
    let printed = |log: &str, what: &str| log.lines().any(|l| l == what);
    assert!(
        printed(&cut, "before-backup") && !printed(&cut, "after-backup"),
        "{cut}"
    );
    assert!(
        slow_log.starts_with(&cut),
        "{cut:?} is not a prefix of {slow_log:?}"
    );
    // The uploads, byte for byte.
    assert_eq!(
        std::fs::read(out.join("files/up/a.txt")).unwrap_or_default(),
        uploaded
    );
    assert_eq!(uploaded, b"payload-3\n");

    // With a worker: a download step finds the upload in the new master's
    // files; the scheduler still holds r1 (had its state not been copied,
    // it would start from "now" and r1 would never be built).
    let _w = r.worker("w1", "pw-one-1234");
    r.wait_connected("w1");
    let fetch = r.force_and_wait("fetch", "{}");
    assert!(logs(&r, &fetch)[1].contains("payload-3"), "{fetch}");
    sendchange(&r, "r2");
    wait_for("r1 and r2 built by the ci scheduler", || {
        let changes: u64 = builds(&r)
            .iter()
            .filter(|b| b["properties"]["scheduler"] == "ci" && b["complete"] == true)
            .filter_map(|b| {
                let reason = b["properties"]["reason"].as_str()?;
                reason
                    .strip_prefix("scheduler ci: ")?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        (changes == 2).then_some(())
    });
    drop(r);

    // No master on the original any more: `bbc backup` opens the store
    // itself, and has the slow build's whole log.
    drop(m);
    let again = temp_dir("backup-offline");
    let out2 = again.join("state");
    let o = backup(&state, &out2);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("no master runs"), "{}", stdout(&o));
    write_secret(&again, "w1", "pw-one-1234");
    let r2 = Master::start(&again, &config("1h", &go));
    assert_eq!(builds(&r2).len(), 4);
    assert_eq!(logs(&r2, &build(&r2, slow))[0], slow_log);
}

#[test]
fn an_existing_out_or_a_missing_state_is_refused() {
    let dir = temp_dir("backup-refused");
    let state = dir.join("state");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    let o = backup(&state, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    // Not a state directory: refused, and nothing created in its name.
    let o = backup(&state, &dir.join("new"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a state directory"),
        "{}",
        stderr(&o)
    );
    assert!(!state.exists() && !dir.join("new").exists());
}
