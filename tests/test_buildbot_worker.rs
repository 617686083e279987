//! Buildbot's own worker (`buildbot-worker` from PyPI, its WebSocket +
//! msgpack protocol) connected to a real `bbc master`: login, shell steps
//! with env and workdir, redaction, exit codes, cancel, a killed worker.
//!
//! The worker is the real package: `$BBC_BUILDBOT_WORKER` names its
//! executable, else a virtual environment under `target/` is made once
//! (`python3 -m venv`, `pip install buildbot-worker`). Without it the
//! tests say they skipped, unless `BBC_REQUIRE_BUILDBOT_WORKER=1` (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::{get_json, git, http, root, temp_dir, wait_for, write_secret, Master, Proc};

fn buildbot_worker() -> Option<PathBuf> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let exe = EXE.get_or_init(|| {
        if let Some(p) = std::env::var_os("BBC_BUILDBOT_WORKER") {
            return Some(PathBuf::from(p)).filter(|p| p.exists());
        }
        let venv = root().join("target/buildbot-worker-venv");
        let exe = venv.join("bin/buildbot-worker");
        if exe.exists() {
            return Some(exe);
        }
        let ok = |c: &mut Command| c.stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        let made = ok(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            && ok(Command::new(venv.join("bin/pip")).args(["install", "-q", "buildbot-worker"]));
        made.then_some(exe).filter(|e| e.exists())
    });
    if exe.is_none() {
        if std::env::var("BBC_REQUIRE_BUILDBOT_WORKER").as_deref() == Ok("1") {
            panic!("buildbot-worker is required (BBC_REQUIRE_BUILDBOT_WORKER=1) but could not be installed");
        }
        eprintln!(
            "skipped: buildbot-worker not available (set BBC_BUILDBOT_WORKER or allow pip install)"
        );
    }
    exe.clone()
}

/// Creates a worker directory for the msgpack protocol and starts the
/// worker in the foreground (killed when the `Proc` drops).
fn start_worker(exe: &Path, m: &Master, dir: &Path, name: &str, password: &str) -> Proc {
    let out = Command::new(exe)
        .args([
            "create-worker",
            "--force",
            "--protocol",
            "msgpack_experimental_v7",
        ])
        .arg(dir)
        .args([m.workers.as_str(), name, password])
        .output()
        .unwrap_or_else(|e| panic!("buildbot-worker create-worker: {e}"));
    assert!(
        out.status.success(),
        "create-worker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Command::new(exe)
        .args(["start", "--nodaemon"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("buildbot-worker start: {e}"));
    Proc(child)
}

fn config(steps: &str) -> String {
    format!(
        r#"worker "bb" password=(secret)"bb" protocol="buildbot" keepalive="2s"
worker "own" password=(secret)"own"
scheduler "force" kind="force" {{
    builders "b" "own-b"
}}
builder "b" {{
    workers "bb"
    steps {{
{steps}
    }}
}}
builder "own-b" {{
    workers "own"
    steps {{
        shell "true"
    }}
}}
"#
    )
}

fn setup(name: &str, steps: &str) -> (PathBuf, Master) {
    let dir = temp_dir(name);
    write_secret(&dir, "bb", "bb-pass-2468");
    write_secret(&dir, "own", "own-pass-1357");
    write_secret(&dir, "token", "tok-secret-9753");
    let m = Master::start_logged(&dir, &config(steps));
    (dir, m)
}

fn step<'a>(b: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    b["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {b}"))
}

fn master_log_has(m: &Master, what: &str) -> Option<String> {
    let log = std::fs::read_to_string(m.dir.join("master.log")).unwrap_or_default();
    log.lines().find(|l| l.contains(what)).map(str::to_string)
}

#[test]
fn shell_steps_run_on_a_buildbot_worker() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup(
        "bbw-shell",
        r#"        shell "echo out-$GREETING; echo err-line >&2; pwd; echo tok-secret-9753" name="greet" workdir="sub/dir" {
            env GREETING="hello"
        }
        shell "printf 'no newline'" name="partial"
        shell "exit 3" name="fails" flunk-on-failure=#false
        shell "echo after" name="after"
        shell "echo $TOKEN" name="with-secret" flunk-on-failure=#false {
            env TOKEN=(secret)"token"
        }"#,
    );
    let wdir = dir.join("bbw");
    let _w = start_worker(&exe, &m, &wdir, "bb", "bb-pass-2468");
    m.wait_connected("bb");
    // The worker's own description, without its environment (recorded
    // just after the connection is registered: waited for).
    let me = wait_for("the worker's info", || {
        let v = get_json(&m.http, "/api/v1/workers");
        v["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == "bb" && w["info"].is_object())
            .cloned()
    });
    let shown = me.to_string();
    assert_eq!(me["info"]["protocol"], "buildbot", "{shown}");
    assert_eq!(me["info"]["os"], "posix", "{shown}");
    assert!(!shown.contains("environ"), "{shown}");
    let b = m.force_and_wait("b", "{}");
    let id = b["id"].as_u64().unwrap_or(0);
    let greet = m.log(id, 0);
    assert!(greet.contains("out-hello\n"), "{greet}");
    assert!(greet.contains("err-line\n"), "{greet}");
    // Builds run in basedir/builder directory/workdir, as on bbc workers.
    let cwd = wdir.join("b/sub/dir");
    assert!(greet.contains(&format!("{}\n", cwd.display())), "{greet}");
    assert!(greet.contains("[secret]"), "{greet}");
    assert!(
        !greet.contains("tok-secret-9753"),
        "secret not redacted: {greet}"
    );
    assert_eq!(step(&b, "greet")["result"], "success", "{b}");
    // The master's keepalives (every 2 s here) are answered, and the worker
    // stays.
    wait_for("a keepalive the worker confirmed", || {
        let log = std::fs::read_to_string(wdir.join("twistd.log")).unwrap_or_default();
        log.contains("Connection keepalive confirmed").then_some(())
    });
    m.wait_connected("bb");
    // Output without a final newline arrives when the command ends.
    assert!(m.log(id, 1).contains("no newline"), "{}", m.log(id, 1));
    assert_eq!(step(&b, "fails")["result"], "failure", "{b}");
    assert!(
        step(&b, "fails")["state_string"]
            .as_str()
            .unwrap_or("")
            .contains("exit 3"),
        "{b}"
    );
    assert!(m.log(id, 3).contains("after"));
    // Buildbot's worker logs what the master sends: no secrets go to it.
    let secret_step = step(&b, "with-secret");
    assert_eq!(secret_step["result"], "exception", "{b}");
    assert!(
        secret_step["state_string"]
            .as_str()
            .unwrap_or("")
            .contains("is a Buildbot worker"),
        "{b}"
    );
    let wlog = std::fs::read_to_string(wdir.join("twistd.log")).unwrap_or_default();
    assert!(
        !wlog.contains("'TOKEN'"),
        "a secret variable reached the worker's log"
    );
    // flunk-on-failure=false: the failing step does not fail the build;
    // the refused secret is an exception, which always ends it so.
    assert_eq!(b["result"], "exception", "{b}");
}

#[test]
fn wrong_password_and_wrong_protocol_are_refused() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup("bbw-refused", r#"        shell "true""#);
    // A wrong password: the upgrade is refused and the master says why.
    let w = start_worker(&exe, &m, &dir.join("bad"), "bb", "not-the-password");
    let line = wait_for("the refused login in the master's log", || {
        master_log_has(&m, "wrong name or password for `bb`")
    });
    assert!(!line.contains("not-the-password"), "{line}");
    drop(w);
    let v = get_json(&m.http, "/api/v1/workers");
    let connected = v["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == "bb"))
        .map(|w| w["connected"].clone());
    assert_eq!(connected, Some(serde_json::Value::Bool(false)), "{v}");
    // A Buildbot worker under a bbc worker's entry, and the other way round.
    let _w = start_worker(&exe, &m, &dir.join("as-own"), "own", "own-pass-1357");
    wait_for("the protocol mismatch in the master's log", || {
        master_log_has(
            &m,
            "worker `own` is configured with protocol=\"bbc\" but connected with the buildbot protocol",
        )
    });
    let pw = dir.join("bb.password");
    std::fs::write(&pw, "bb-pass-2468").unwrap_or_else(|e| panic!("{e}"));
    let _own = m.worker("bb", "bb-pass-2468");
    wait_for("the other mismatch in the master's log", || {
        master_log_has(
            &m,
            "worker `bb` is configured with protocol=\"buildbot\" but connected with the bbc protocol",
        )
    });
}

#[test]
fn cancel_interrupts_and_a_killed_worker_means_retry() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup(
        "bbw-cancel",
        r#"        shell "if [ -f ../again ]; then echo second; else touch ../started; sleep 60; fi" name="slow"
        shell "echo cleanup" name="cleanup" always-run=#true"#,
    );
    let wdir = dir.join("bbw");
    let started = wdir.join("b/started");
    let w = start_worker(&exe, &m, &wdir, "bb", "bb-pass-2468");
    m.wait_connected("bb");
    // Cancel: the worker interrupts the command; always-run steps still run.
    let set = m.force("b", "{}");
    wait_for("the command to start", || started.exists().then_some(()));
    let running = get_json(&m.http, "/api/v1/builds?running=true")["builds"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no running build"));
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/builds/{running}/cancel"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "cancelled", "{b}");
    assert_eq!(step(&b, "slow")["result"], "cancelled", "{b}");
    assert_eq!(step(&b, "cleanup")["result"], "success", "{b}");
    assert!(
        m.log(running, 0).contains("cancelled"),
        "{}",
        m.log(running, 0)
    );
    // A killed worker: the build ends as retry and runs again once the
    // worker is back.
    std::fs::remove_file(&started).unwrap_or_else(|e| panic!("{e}"));
    let set = m.force("b", "{}");
    wait_for("the second build's command to start", || {
        started.exists().then_some(())
    });
    drop(w);
    let retried = wait_for("the build to end as retry", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=b");
        v["builds"]
            .as_array()?
            .iter()
            .find(|b| b["result"] == "retry")
            .cloned()
    });
    let rid = retried["id"].as_u64().unwrap_or(0);
    assert!(
        m.log(rid, 0).contains("worker connection lost"),
        "{}",
        m.log(rid, 0)
    );
    std::fs::write(wdir.join("b/again"), "").unwrap_or_else(|e| panic!("{e}"));
    let _w2 = start_worker(&exe, &m, &wdir, "bb", "bb-pass-2468");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    assert!(m.log(b["id"].as_u64().unwrap_or(0), 0).contains("second"));
}

#[test]
fn files_go_up_and_down_through_a_buildbot_worker() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup(
        "bbw-files",
        r#"        shell "mkdir -p out/sub && echo payload > out/a.txt && seq 1 60000 > out/big.txt && echo deep > out/sub/deep.txt" name="make"
        upload "out/a.txt" to="up/a.txt"
        upload "out/big.txt" to="up/big.txt"
        download "up/big.txt" to="back/big.txt"
        shell "cmp out/big.txt back/big.txt && echo same" name="compare"
        upload "missing.txt" to="up/missing.txt" flunk-on-failure=#false name="missing"
        upload "out" to="up/tree" directory=#true name="tree"
        download "up/tree" to="tree-back" directory=#true flunk-on-failure=#false name="tree-down""#,
    );
    let _w = start_worker(&exe, &m, &dir.join("bbw"), "bb", "bb-pass-2468");
    m.wait_connected("bb");
    let b = m.force_and_wait("b", "{}");
    let id = b["id"].as_u64().unwrap_or(0);
    let files = dir.join("state/files/up");
    assert_eq!(
        std::fs::read_to_string(files.join("a.txt")).unwrap_or_default(),
        "payload\n"
    );
    // Several blocks each way (the file is ~340 KB, blocks are 64 KiB).
    let expected: String = (1..=60000).map(|n| format!("{n}\n")).collect();
    assert_eq!(
        std::fs::read_to_string(files.join("big.txt")).unwrap_or_default(),
        expected
    );
    assert!(m.log(id, 4).contains("same"), "{}", m.log(id, 4));
    assert_eq!(step(&b, "compare")["result"], "success", "{b}");
    // A file that is not there fails the step with the worker's words.
    assert_eq!(step(&b, "missing")["result"], "failure", "{b}");
    assert!(m.log(id, 5).contains("missing.txt"), "{}", m.log(id, 5));
    // A directory goes up as a tarball the master unpacks.
    assert_eq!(step(&b, "tree")["result"], "success", "{b}");
    let tree = files.join("tree");
    assert_eq!(
        std::fs::read_to_string(tree.join("sub/deep.txt")).unwrap_or_default(),
        "deep\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.join("big.txt")).unwrap_or_default(),
        expected
    );
    assert!(m.log(id, 6).contains("3 file(s)"), "{}", m.log(id, 6));
    // Directory downloads are not supported yet, and say so.
    assert_eq!(step(&b, "tree-down")["result"], "failure", "{b}");
    let down = m.log(id, 7);
    assert!(
        down.contains("directory downloads are not supported on Buildbot workers yet"),
        "{down}"
    );
}

#[test]
fn git_steps_run_with_the_workers_git() {
    let Some(exe) = buildbot_worker() else { return };
    let repo = temp_dir("bbw-git-repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "v1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let steps = format!(
        r#"        git repo="{}" branch="main" mode="full" method="fresh"
        shell "cat hello.txt; echo rev=${{{{ prop.got_revision }}}}" name="show""#,
        repo.display()
    );
    let (dir, m) = setup("bbw-git", &steps);
    let _w = start_worker(&exe, &m, &dir.join("bbw"), "bb", "bb-pass-2468");
    m.wait_connected("bb");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["properties"]["got_revision"], sha.as_str(), "{b}");
    let show = m.log(b["id"].as_u64().unwrap_or(0), 1);
    assert!(
        show.contains("v1\n") && show.contains(&format!("rev={sha}")),
        "{show}"
    );
}

/// A WebSocket upgrade by hand, as a stranger or a broken worker would
/// send it; returns the socket and the master's answer up to the blank
/// line.
fn upgrade(m: &Master, auth: Option<&str>) -> (std::net::TcpStream, String) {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(&m.workers).unwrap_or_else(|e| panic!("{e}"));
    let auth = auth
        .map(|a| format!("Authorization: Basic {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut r = BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}")));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    // A refusal's body follows the head; read what there is.
    if !head.starts_with("HTTP/1.1 101") {
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut body);
        head.push_str(&body);
    }
    (s, head)
}

#[test]
fn bad_upgrades_and_bad_messages_are_refused_precisely() {
    // No buildbot-worker needed: the peer here is this test.
    let (_dir, m) = setup("bbw-raw", r#"        shell "true""#);
    let (_, no_auth) = upgrade(&m, None);
    assert!(no_auth.starts_with("HTTP/1.1 401"), "{no_auth}");
    assert!(no_auth.contains("worker credentials required"), "{no_auth}");
    // "bb:nope"
    let (_, wrong) = upgrade(&m, Some("YmI6bm9wZQ=="));
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(wrong.contains("wrong worker name or password"), "{wrong}");
    // "bb:bb-pass-2468", then a frame that is not msgpack.
    let (mut s, ok) = upgrade(&m, Some("YmI6YmItcGFzcy0yNDY4"));
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    // A masked binary frame (clients must mask) holding 0x81: a map of
    // one entry that never comes.
    use std::io::Write;
    s.write_all(&[0x82, 0x81, 1, 2, 3, 4, 0x81 ^ 1])
        .unwrap_or_else(|e| panic!("{e}"));
    let line = wait_for("the bad message in the master's log", || {
        master_log_has(&m, "buildbot worker `bb`: not msgpack")
    });
    assert!(line.contains("refused"), "{line}");
    // The master serves on: a bbc worker still gets in.
    let _own = m.worker("own", "own-pass-1357");
    m.wait_connected("own");

    // A worker that answers the introduction, then falls silent, is let
    // go after three unanswered keepalives.
    let (mut s, ok) = upgrade(&m, Some("YmI6YmItcGFzcy0yNDY4"));
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let info = [&[0x81][..], &mp_str("basedir"), &mp_str("/tmp/bbw-raw")].concat();
    for (seq, result) in [(0u8, info), (1, vec![0xc0])] {
        let msg = [
            &[0x83][..],
            &mp_str("op"),
            &mp_str("response"),
            &mp_str("seq_number"),
            &[seq],
            &mp_str("result"),
            &result,
        ]
        .concat();
        // Masked with the key 0 (XOR with zeros leaves the payload as is).
        let frame = [&[0x82, 0x80 | msg.len() as u8, 0, 0, 0, 0][..], &msg].concat();
        s.write_all(&frame).unwrap_or_else(|e| panic!("{e}"));
    }
    m.wait_connected("bb");
    wait_for("the silent worker to be let go", || {
        master_log_has(&m, "worker disconnected: no answer to 3 keepalives")
    });
}

/// A msgpack string shorter than 32 bytes.
fn mp_str(s: &str) -> Vec<u8> {
    [&[0xa0 | s.len() as u8][..], s.as_bytes()].concat()
}

#[test]
fn a_reload_that_removes_the_worker_disconnects_it() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup("bbw-retire", r#"        shell "true""#);
    let wdir = dir.join("bbw");
    let _w = start_worker(&exe, &m, &wdir, "bb", "bb-pass-2468");
    m.wait_connected("bb");
    // The same config without the Buildbot worker.
    let without = config(r#"        shell "true""#)
        .replace(
            "worker \"bb\" password=(secret)\"bb\" protocol=\"buildbot\" keepalive=\"2s\"\n",
            "",
        )
        .replace("workers \"bb\"", "workers \"own\"");
    assert!(!without.contains("\"bb\""), "{without}");
    std::fs::write(dir.join("master.kdl"), without).unwrap_or_else(|e| panic!("{e}"));
    let pid = m.proc.0.id() as libc::pid_t;
    // SAFETY: sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("the master to let the worker go", || {
        master_log_has(
            &m,
            "worker disconnected: disconnected by the master: worker `bb` is no longer in the master's configuration",
        )
    });
    // The worker saw the WebSocket close with the reason.
    wait_for("the close in the worker's log", || {
        let log = std::fs::read_to_string(wdir.join("twistd.log")).unwrap_or_default();
        log.contains("no longer in the master").then_some(())
    });
}

#[test]
fn timeouts_stop_commands_on_a_buildbot_worker() {
    let Some(exe) = buildbot_worker() else { return };
    let (dir, m) = setup(
        "bbw-timeouts",
        r#"        shell "echo quiet; sleep 30" name="silent" timeout="1s" flunk-on-failure=#false
        shell "while true; do echo busy; sleep 0.2; done" name="endless" max-time="1s" flunk-on-failure=#false
        shell "kill -9 $$" name="killed" flunk-on-failure=#false"#,
    );
    let _w = start_worker(&exe, &m, &dir.join("bbw"), "bb", "bb-pass-2468");
    m.wait_connected("bb");
    let b = m.force_and_wait("b", "{}");
    let state = |name: &str| {
        step(&b, name)["state_string"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(step(&b, "silent")["result"], "failure", "{b}");
    assert_eq!(state("silent"), "timed out: no output for 1 s", "{b}");
    assert_eq!(step(&b, "endless")["result"], "failure", "{b}");
    assert_eq!(state("endless"), "killed: ran longer than max-time", "{b}");
    // A command killed by a signal: the worker says so in a header line.
    assert_eq!(step(&b, "killed")["result"], "failure", "{b}");
    assert_eq!(state("killed"), "killed by signal 9", "{b}");
}
