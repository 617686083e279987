//! `bbc apply`, `POST /api/v1/config` and SIGHUP: a running master takes a
//! new config without interrupting builds. Real `bbc master` and `bbc
//! worker` processes on 127.0.0.1; a build is held mid-step by a shell
//! loop waiting for a file the test creates.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::{
    bbc, files, get_json, http, http_with, root, run, stderr, stdout, temp_dir, wait_for,
    write_secret, Master,
};

const TOKEN: &str = "admin-token-5678";
const PW1: &str = "pw-one-1234";
const PW2: &str = "pw-two-5678";
const WORKERS: &str = r#"worker "w1" password=(secret)"w1" max-builds=4
worker "w2" password=(secret)"w2" max-builds=4
"#;
/// For configs where w2 would be unused (and warned about).
const WORKER1: &str = "worker \"w1\" password=(secret)\"w1\" max-builds=4\n";

fn setup(dir: &Path, config: &str, token: bool, logged: bool) -> Master {
    write_secret(dir, "w1", PW1);
    write_secret(dir, "w2", PW2);
    if token {
        write_secret(dir, "bbc-admin-token", TOKEN);
    }
    if logged {
        Master::start_logged(dir, config)
    } else {
        Master::start(dir, config)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p.to_string_lossy().into_owned()
}

fn token_file(dir: &Path, value: &str) -> String {
    write(dir, "token", &format!("{value}\n"))
}

/// `bbc apply ARGS --master http://MASTER` (standard input not a terminal).
fn apply(m: &Master, args: &[&str]) -> Output {
    let url = format!("http://{}", m.http);
    match bbc()
        .arg("apply")
        .args(args)
        .args(["--master", &url])
        .env_remove("BBC_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run bbc apply: {e}"),
    }
}

fn config(m: &Master) -> Value {
    get_json(&m.http, "/api/v1/config")
}

fn sighup(m: &Master) {
    let pid = m.proc.0.id() as libc::pid_t;
    // SAFETY: sends a signal to our own child process.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {pid}");
}

fn force(m: &Master, builder: &str) -> u64 {
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/builders/{builder}/force"),
        Some("{}"),
    );
    assert_eq!(status, 201, "force {builder}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["buildset"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no build set in {v}"))
}

/// The build that took the build set's request.
fn build_of(m: &Master, set: u64) -> u64 {
    wait_for("the build to start", || {
        let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
        r["requests"].as_array()?.first()?["build"].as_u64()
    })
}

fn step_names(b: &Value) -> Vec<String> {
    b["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A shell step that says it started (a file) and then waits for `go`.
fn held_step(started: &Path, go: &Path) -> String {
    format!(
        r#"shell "touch {}; while [ ! -f {} ]; do sleep 0.05; done; echo waited" name="wait""#,
        started.display(),
        go.display()
    )
}

fn entity<'a>(report: &'a Value, kind: &str, name: &str) -> &'a Value {
    report["entities"]
        .as_array()
        .and_then(|v| v.iter().find(|e| e["kind"] == kind && e["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {report}"))
}

#[test]
fn apply_changes_a_running_builder_and_adds_a_builder_and_a_scheduler() {
    let dir = temp_dir("apply-live");
    let (started, go) = (dir.join("started"), dir.join("go"));
    let old = format!(
        r#"{WORKERS}scheduler "force" kind="force" {{
    builders "slow"
}}
builder "slow" {{
    workers "w1"
    steps {{
        shell "echo old-one" name="one"
        {held}
        shell "echo old-final" name="final"
    }}
}}
"#,
        held = held_step(&started, &go)
    );
    let m = setup(&dir, &old, true, false);
    let _w = m.worker("w1", PW1);
    m.wait_connected("w1");
    let set = force(&m, "slow");
    wait_for("the build to reach its held step", || {
        started.exists().then_some(())
    });
    let first = build_of(&m, set);

    let new = format!(
        r#"{WORKERS}scheduler "force" kind="force" {{
    builders "slow"
}}
scheduler "force-extra" kind="force" {{
    builders "extra"
}}
builder "slow" {{
    workers "w1"
    steps {{
        shell "echo new-one" name="one"
        shell "echo new-final" name="final"
    }}
}}
builder "extra" {{
    workers "w1" "w2"
    steps {{
        shell "echo extra-ran"
    }}
}}
"#
    );
    let path = write(&dir, "new.kdl", &new);
    let tok = token_file(&dir, TOKEN);
    let o = apply(
        &m,
        &[&path, "--token-file", &tok, "--yes", "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(doc["applied"], true, "{doc}");
    // The plan: `bbc diff`'s entity-level changes.
    let slow = doc["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["name"] == "slow"))
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(slow["change"], "changed");
    assert_eq!(
        slow["steps"],
        serde_json::json!(["~final", "~one", "-wait"])
    );
    let report = &doc["report"];
    assert!(
        entity(report, "builder", "slow")["effect"]
            .as_str()
            .is_some_and(|e| e.contains("1 running build finishes on the old definition")),
        "{report}"
    );
    assert_eq!(entity(report, "builder", "extra")["change"], "added");
    assert_eq!(
        entity(report, "scheduler", "force-extra")["change"],
        "added"
    );
    let running = config(&m);
    assert_eq!(running["hash"], report["hash"]);
    assert_eq!(running["via"], "api");
    assert_eq!(running["history"].as_array().map(Vec::len), Some(2));
    assert!(running["graph"]["builders"]
        .as_array()
        .is_some_and(|b| b.iter().any(|x| x["name"] == "extra")));

    // The held build was not interrupted; released, it ends on its old steps.
    let b = get_json(&m.http, &format!("/api/v1/builds/{first}"))["build"].clone();
    assert_eq!(b["complete"], false, "{b}");
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let b = m.wait_buildset(set);
    assert_eq!(b["id"].as_u64(), Some(first));
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(step_names(&b), ["one", "wait", "final"]);
    assert!(m.log(first, 2).contains("old-final"));

    // A new build runs the new steps.
    let b2 = m.force_and_wait("slow", "{}");
    assert_eq!(b2["result"], "success", "{b2}");
    assert_eq!(step_names(&b2), ["one", "final"]);
    let id2 = b2["id"].as_u64().unwrap_or(0);
    assert!(m.log(id2, 0).contains("new-one"));
    assert_ne!(b2["builder_hash"], b["builder_hash"]);

    // The new builder runs, started by the new scheduler.
    let e = m.force_and_wait("extra", "{}");
    assert_eq!(e["result"], "success", "{e}");
    assert!(m
        .log(e["id"].as_u64().unwrap_or(0), 0)
        .contains("extra-ran"));
}

const SIMPLE: &str = r#"scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        shell "echo b"
    }
}
"#;

#[test]
fn a_config_with_errors_or_missing_secrets_changes_nothing() {
    let dir = temp_dir("apply-errors");
    let m = setup(&dir, &format!("{WORKER1}{SIMPLE}"), true, false);
    let before = config(&m);
    let tok = token_file(&dir, TOKEN);

    let bad = write(
        &dir,
        "bad.kdl",
        &format!("{WORKER1}{SIMPLE}builder \"c\" {{\n    workers \"w9\"\n}}\n"),
    );
    // Printed exactly as `bbc check` prints it; nothing sent.
    let o = apply(&m, &[&bad, "--token-file", &tok, "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let check = run(&["check", &bad]);
    assert_eq!(check.status.code(), Some(1));
    assert_eq!(stderr(&o), stdout(&check));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let o = apply(
        &m,
        &[&bad, "--token-file", &tok, "--yes", "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        stdout(&run(&["check", "--format", "json", &bad]))
    );

    // Valid, but naming a secret the master does not have: the master
    // refuses it and names the secret.
    let missing = write(
        &dir,
        "missing.kdl",
        &format!("{WORKER1}{SIMPLE}worker \"w3\" password=(secret)\"w3-secret\"\n"),
    );
    let o = apply(&m, &[&missing, "--token-file", &tok, "--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("w3-secret"), "{}", stderr(&o));

    let after = config(&m);
    assert_eq!(after["hash"], before["hash"]);
    assert_eq!(after["history"], before["history"]);
}

#[test]
fn the_config_endpoint_needs_the_admin_token() {
    let dir = temp_dir("apply-token");
    let m = setup(&dir, &format!("{WORKER1}{SIMPLE}"), false, false);
    let before = config(&m)["hash"].clone();
    let new = write(
        &dir,
        "new.kdl",
        &format!("{WORKER1}{SIMPLE}builder \"c\" {{\n    workers \"w1\"\n    steps {{\n        shell \"true\"\n    }}\n}}\n"),
    );
    let compiled = run(&["compile", &new]);
    assert_eq!(compiled.status.code(), Some(0));
    let graph = stdout(&compiled);
    let bearer = format!("Bearer {TOKEN}");
    let path = "/api/v1/config";

    // No token configured: 403, saying how to configure one.
    let (status, body) = http_with(
        "POST",
        &m.http,
        path,
        &[("Authorization", &bearer)],
        Some(&graph),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("bbc-admin-token") && body.contains("BBC_SECRET_BBC_ADMIN_TOKEN"),
        "{body}"
    );
    let tok = token_file(&dir, TOKEN);
    let o = apply(&m, &[&new, "--token-file", &tok, "--yes"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("403"), "{}", stderr(&o));

    // The token added as a secret; SIGHUP reads secrets again.
    write_secret(&dir, "bbc-admin-token", TOKEN);
    sighup(&m);
    wait_for("the master to read the admin token", || {
        let (status, _) = http_with(
            "POST",
            &m.http,
            path,
            &[("Authorization", "Bearer wrong")],
            Some(&graph),
        );
        (status == 401).then_some(())
    });
    let (status, body) = http("POST", &m.http, path, Some(&graph));
    assert_eq!(status, 401, "no Authorization header: {body}");
    let wrong = token_file(&dir, "not-the-token");
    let o = apply(&m, &[&new, "--token-file", &wrong, "--yes"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // Malformed bodies: 400 with a precise error.
    let auth = [("Authorization", bearer.as_str())];
    let (status, body) = http_with("POST", &m.http, path, &auth, Some("{not json"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a graph file"), "{body}");
    let current = format!("\"version\": {},", bbc_graph::VERSION);
    let v99 = graph.replacen(&current, "\"version\": 99,", 1);
    assert_ne!(v99, graph, "the edit must apply");
    let (status, body) = http_with("POST", &m.http, path, &auth, Some(&v99));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("version Some(99) is not supported"), "{body}");
    // Edited after compiling (a step's command changed, hashes kept): 400.
    let edited = graph.replacen("\"true\"", "\"rm -rf /\"", 1);
    assert_ne!(edited, graph, "the edit must apply");
    let (status, body) = http_with("POST", &m.http, path, &auth, Some(&edited));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("do not match their entity"), "{body}");
    // A plan made against another config: 412.
    let stale = [
        ("Authorization", bearer.as_str()),
        ("If-Match", "\"0123456789abcdef\""),
    ];
    let (status, body) = http_with("POST", &m.http, path, &stale, Some(&graph));
    assert_eq!(status, 412, "{body}");
    assert_eq!(config(&m)["hash"], before);

    // The right token applies it.
    let (status, body) = http_with("POST", &m.http, path, &auth, Some(&graph));
    assert_eq!(status, 200, "{body}");
    assert_ne!(config(&m)["hash"], before);
}

#[test]
fn a_removed_worker_finishes_its_build_then_is_disconnected() {
    let dir = temp_dir("apply-worker");
    let (started, go) = (dir.join("started"), dir.join("go"));
    let builders = |slow_on: &str, extra: &str| {
        format!(
            r#"{extra}scheduler "force" kind="force" {{
    builders "slow"
}}
builder "slow" {{
    workers "{slow_on}"
    steps {{
        {held}
    }}
}}
"#,
            held = held_step(&started, &go)
        )
    };
    let m = setup(&dir, &builders("w2", WORKERS), true, false);
    let _w1 = m.worker("w1", PW1);
    let _w2 = m.worker("w2", PW2);
    m.wait_connected("w1");
    m.wait_connected("w2");
    let set = force(&m, "slow");
    wait_for("the build to reach its held step", || {
        started.exists().then_some(())
    });
    let first = build_of(&m, set);

    // w2 leaves the config; its builder moves to w1.
    let new = write(
        &dir,
        "new.kdl",
        &builders("w1", "worker \"w1\" password=(secret)\"w1\" max-builds=4\n"),
    );
    let tok = token_file(&dir, TOKEN);
    let o = apply(&m, &[&new, "--token-file", &tok, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "- worker w2: takes no new builds; disconnected once 1 running build has ended"
        ),
        "{}",
        stdout(&o)
    );
    let w2 = |m: &Master| {
        get_json(&m.http, "/api/v1/workers")["workers"]
            .as_array()
            .and_then(|v| v.iter().find(|w| w["name"] == "w2").cloned())
    };
    let shown = w2(&m).unwrap_or_else(|| panic!("w2 not listed while its build runs"));
    assert_eq!(shown["state"], "removed", "{shown}");
    assert_eq!(shown["running"][0]["build"].as_u64(), Some(first));

    // Its build is not interrupted; a new build goes to w1.
    let set2 = force(&m, "slow");
    let second = build_of(&m, set2);
    let b2 = get_json(&m.http, &format!("/api/v1/builds/{second}"))["build"].clone();
    assert_eq!(b2["worker"], "w1", "{b2}");
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["worker"], "w2");
    assert_eq!(m.wait_buildset(set2)["result"], "success");
    // Then it is disconnected (and refused when it tries again).
    wait_for("w2 to be disconnected", || w2(&m).is_none().then_some(()));
}

#[test]
fn sighup_reloads_the_config_file_and_keeps_it_on_errors() {
    let dir = temp_dir("apply-sighup");
    let m = setup(&dir, &format!("{WORKER1}{SIMPLE}"), false, true);
    let _w = m.worker("w1", PW1);
    m.wait_connected("w1");
    let first = config(&m)["hash"].clone();
    let file = dir.join("master.kdl");
    write(
        &dir,
        "master.kdl",
        &format!(
            "{WORKER1}{SIMPLE}scheduler \"force-hup\" kind=\"force\" {{\n    builders \"hup\"\n}}\nbuilder \"hup\" {{\n    workers \"w1\"\n    steps {{\n        shell \"echo reloaded\"\n    }}\n}}\n"
        ),
    );
    sighup(&m);
    let reloaded = wait_for("the reload", || {
        let c = config(&m);
        (c["via"] == "sighup").then_some(c)
    });
    assert_ne!(reloaded["hash"], first);
    let b = m.force_and_wait("hup", "{}");
    assert_eq!(b["result"], "success", "{b}");
    assert!(m.log(b["id"].as_u64().unwrap_or(0), 0).contains("reloaded"));

    // A broken file: logged, and the master keeps what it runs.
    std::fs::write(&file, "builder \"b\" {\n    workers \"nope\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    sighup(&m);
    let log = dir.join("master.log");
    wait_for("the failed reload in the log", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("has errors (above); still running config")
            .then_some(())
    });
    assert_eq!(config(&m)["hash"], reloaded["hash"]);
    assert_eq!(m.force_and_wait("hup", "{}")["result"], "success");
}

#[test]
fn dry_run_unchanged_and_unconfirmed_applies_change_nothing() {
    let dir = temp_dir("apply-dry");
    let same = format!("{WORKER1}{SIMPLE}");
    let m = setup(&dir, &same, true, false);
    let before = config(&m);
    let new = write(
        &dir,
        "new.kdl",
        &format!("{WORKER1}{SIMPLE}builder \"c\" {{\n    workers \"w1\"\n    steps {{\n        shell \"true\"\n    }}\n}}\n"),
    );
    // --dry-run: the plan, no token needed, nothing applied.
    let o = apply(&m, &[&new, "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("+ builder c"), "{out}");
    assert!(out.contains("dry run: nothing applied"), "{out}");
    // Not a terminal and no --yes: refused with a hint.
    let tok = token_file(&dir, TOKEN);
    let o = apply(&m, &[&new, "--token-file", &tok]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    // The running config itself: nothing to change.
    let path = write(&dir, "same.kdl", &same);
    let o = apply(&m, &[&path, "--token-file", &tok, "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to change"), "{}", stdout(&o));
    let after = config(&m);
    assert_eq!(after["hash"], before["hash"]);
    assert_eq!(after["history"], before["history"]);
    assert!(!after["graph"]["builders"]
        .as_array()
        .is_some_and(|b| b.iter().any(|x| x["name"] == "c")));
}

/// Graphs the compiler produces pass the master's own checks of a graph
/// it receives (sorted names, resolved references).
#[test]
fn compiled_graphs_pass_the_masters_checks() {
    let mut n = 0;
    let paths: Vec<PathBuf> = files(&root().join("examples"), "kdl")
        .into_iter()
        .chain(files(&root().join("tests/golden"), "kdl"))
        .collect();
    for p in paths {
        let c = bbc_compiler::compile(&p.to_string_lossy(), &bbc_compiler::source::DiskSources);
        if let Some(g) = c.graph {
            n += 1;
            if let Err(e) = bbc_runtime::master::apply::validate(&g) {
                panic!("{}: {e}", p.display());
            }
            if let Err(e) = bbc_graph::hash::verify_hashes(&g) {
                panic!("{}: {e}", p.display());
            }
        }
    }
    assert!(n >= 5, "only {n} graphs checked");
}

#[test]
fn a_rotated_worker_password_takes_effect_at_the_next_connection() {
    let dir = temp_dir("apply-rotate");
    let m = setup(&dir, &format!("{WORKER1}{SIMPLE}"), false, true);
    let first = m.worker("w1", PW1);
    m.wait_connected("w1");
    // The secret changes; SIGHUP reads secrets again (the graph is the same).
    write_secret(&dir, "w1", "pw-rotated-9999");
    sighup(&m);
    let log = dir.join("master.log");
    wait_for("the reload to read the secrets", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("secrets read again")
            .then_some(())
    });
    // The connection made with the old password stays.
    let v = get_json(&m.http, "/api/v1/workers");
    assert_eq!(v["workers"][0]["connected"], true, "{v}");
    assert_eq!(m.force_and_wait("b", "{}")["result"], "success");
    // Reconnecting with the old password is refused...
    drop(first);
    wait_for("w1 to disconnect", || {
        let v = get_json(&m.http, "/api/v1/workers");
        (v["workers"][0]["connected"] == false).then_some(())
    });
    let _old = m.worker("w1", PW1);
    wait_for("the old password to be refused", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("wrong name or password")
            .then_some(())
    });
    let v = get_json(&m.http, "/api/v1/workers");
    assert_eq!(v["workers"][0]["connected"], false, "{v}");
    drop(_old);
    // ...and the new one works.
    let _new = m.worker("w1", "pw-rotated-9999");
    m.wait_connected("w1");
    assert_eq!(m.force_and_wait("b", "{}")["result"], "success");
}
