//! Several real `bbc master` processes on one PostgreSQL schema (issue
//! 15; docs/store.md, "Several masters"), each with its own ports and its
//! own real `bbc worker`:
//! - a request forced through one master runs on a worker of the other;
//!   either master's API shows every build, and the live log of a build
//!   running on one master is read through the other;
//! - `kill -9` of the master running a build: the survivor marks the
//!   build interrupted once the dead master's lease expires, and runs the
//!   request again to success: no request lost, none built twice;
//! - a build running on one master is cancelled through the other;
//! - the git poller and the schedulers run on one master at a time: a
//!   commit is seen once, and after the holder dies the other master takes
//!   over and sees the next commit, once;
//! - `bbc apply` through one master reaches the other (a builder new in
//!   the config is forced and built through the other), a master that
//!   lacks a secret of the new config says so and keeps its own, and a
//!   master starting with an older file takes the shared config;
//! - a dependent scheduler on the master holding the schedulers' lease
//!   fires when its upstream build set, submitted and built on the other
//!   master, completes;
//! - the build taken over from the killed master is reported (an HTTP
//!   reporter) once as interrupted, by the survivor, and once more when
//!   its request succeeds.
//!
//! The masters run with a 1.5 s lease (`BBC_MASTER_LEASE_MS`), so the
//! take-over comes quickly; the tests wait for events, never for time.

use std::path::Path;

use crate::common::{
    bbc, get_json, git, http, http_full, stdout, temp_dir, wait_for, write_secret, Master, Proc,
};
use crate::recorder::Recorder;
use crate::test_postgres::{psql, server, split_password, DropSchema};

/// A master on the shared schema, with a short lease, its standard error
/// in `DIR/master.log`.
pub(crate) fn start(dir: &Path, config: &str) -> Master {
    let cfg = dir.join("master.kdl");
    std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = bbc();
    bbc_testkit::master_args(&mut cmd, &cfg, dir)
        .env("BBC_MASTER_LEASE_MS", "1500")
        .stderr(
            std::fs::File::create(dir.join("master.log"))
                .map(std::process::Stdio::from)
                .unwrap_or_else(|e| panic!("master.log: {e}")),
        );
    let started =
        bbc_testkit::spawn_announced(&mut cmd).unwrap_or_else(|e| panic!("spawn master: {e}"));
    let ports = started.ports();
    let proc = Proc(started.child);
    let ports = ports.unwrap_or_else(|| panic!("unexpected first line: {:?}", started.first_line));
    Master {
        proc,
        workers: ports.workers,
        http: ports.http,
        dir: dir.to_path_buf(),
    }
}

/// Two directories with the secrets of the workers `wa`, `wb` and of the
/// database.
pub(crate) fn dirs(name: &str, password: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let a = temp_dir(&format!("{name}_a"));
    let b = temp_dir(&format!("{name}_b"));
    for d in [&a, &b] {
        write_secret(d, "wa", "pw-worker-a-1234");
        write_secret(d, "wb", "pw-worker-b-1234");
        write_secret(d, "pg", password);
    }
    (a, b)
}

pub(crate) fn kill9(m: &mut Master) {
    // `Child::kill` is SIGKILL: no clean stop, no lease given back.
    let _ = m.proc.0.kill();
    let _ = m.proc.0.wait();
}

pub(crate) fn builds_of(m: &Master, builder: &str) -> Vec<serde_json::Value> {
    get_json(&m.http, &format!("/api/v1/builds?builder={builder}"))["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn masters_share_requests_builds_and_logs_and_take_over_a_dead_ones_builds() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcmm_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("multi_master", &password);
    let go = da.join("go");
    // Every master reports `long`'s builds here.
    let rec = Recorder::start();
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
worker "wb" password=(secret)"wb"
reporter "push" kind="http" {{
    url "http://{rec}/push"
    builders "long"
}}
scheduler "force" kind="force" {{
    builders "on-b" "long"
}}
builder "on-b" {{
    workers "wb"
    steps {{
        shell "echo ran on b" name="greet"
    }}
}}
builder "long" {{
    workers "wa" "wb"
    steps {{
        shell "echo started; while [ ! -e '{go}' ]; do sleep 0.05; done; echo done" name="wait"
    }}
}}
"#,
        go = go.display(),
        rec = rec.addr
    );
    let mut ma = start(&da, &config);
    let mut mb = start(&db, &config);
    let wa = ma.worker("wa", "pw-worker-a-1234");
    let wb = mb.worker("wb", "pw-worker-b-1234");
    ma.wait_connected("wa");
    mb.wait_connected("wb");

    // Forced through A, built by B's only worker: the request reached B.
    let set = ma.force("on-b", "{}");
    let built = ma.wait_buildset(set);
    assert_eq!(built["result"], "success", "{built}");
    assert_eq!(built["worker"], "wb", "{built}");
    let on_b = built["id"].as_u64().expect("a build id");
    // Both APIs show it, with the master that ran it (B).
    let via_b = get_json(&mb.http, &format!("/api/v1/builds/{on_b}"))["build"].clone();
    assert_eq!(via_b["result"], "success", "{via_b}");
    let master_b = via_b["master"]
        .as_str()
        .expect("the build's master")
        .to_string();
    assert!(ma.log(on_b, 0).contains("ran on b"));

    // A long build, forced through A; it runs on one of them.
    let set = ma.force("long", "{}");
    let (first, runner_worker) = wait_for("the long build to start", || {
        let r = get_json(&ma.http, &format!("/api/v1/requests?buildset={set}"));
        let rq = r["requests"].as_array()?.first()?.clone();
        let id = rq["build"].as_u64()?;
        let b = get_json(&ma.http, &format!("/api/v1/builds/{id}"))["build"].clone();
        Some((id, b["worker"].as_str()?.to_string()))
    });
    let (runner, other) = if runner_worker == "wa" {
        (&mut ma, &mut mb)
    } else {
        (&mut mb, &mut ma)
    };
    // Both masters show it running; the one that does not run it follows
    // its live log from the store.
    for m in [&*runner, &*other] {
        let b = get_json(&m.http, &format!("/api/v1/builds/{first}"))["build"].clone();
        assert!(b["finished_at"].is_null(), "{b}");
    }
    wait_for("the live log through the other master", || {
        let (status, head, body) = http_full(
            "GET",
            &other.http,
            &format!("/api/v1/builds/{first}/steps/0/log"),
            &[],
            None,
        );
        (status == 200
            && body.contains("started")
            && head.to_ascii_lowercase().contains("x-log-complete: false"))
        .then_some(())
    });
    let runner_id = get_json(&other.http, &format!("/api/v1/builds/{first}"))["build"]["master"]
        .as_str()
        .expect("the running build's master")
        .to_string();
    assert!(runner_worker != "wb" || runner_id == master_b);

    // The master running it dies mid-build.
    kill9(runner);
    let killed = std::time::Instant::now();
    let interrupted = wait_for("the survivor to take the build over", || {
        let b = get_json(&other.http, &format!("/api/v1/builds/{first}"))["build"].clone();
        (!b["finished_at"].is_null()).then_some(b)
    });
    assert_eq!(interrupted["result"], "retry", "{interrupted}");
    assert_eq!(interrupted["state_string"], "interrupted", "{interrupted}");
    // A figure for docs/perf.md, not a check: kill -9 to take-over.
    eprintln!(
        "bbc-figure takeover_ms={} (lease 1500 ms)",
        killed.elapsed().as_millis()
    );
    // The request runs again on the survivor's worker, and succeeds.
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let again = other.wait_buildset(set);
    assert_eq!(again["result"], "success", "{again}");
    assert_ne!(again["id"].as_u64(), Some(first));
    let survivor_worker = if runner_worker == "wa" { "wb" } else { "wa" };
    assert_eq!(again["worker"], survivor_worker, "{again}");
    // No request lost, none built twice: two builds of `long` in all,
    // the interrupted one and the one that succeeded.
    let all = builds_of(other, "long");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        all.iter().filter(|b| b["result"] == "success").count(),
        1,
        "{all:?}"
    );
    let reqs = get_json(&other.http, &format!("/api/v1/requests?buildset={set}"));
    let reqs = reqs["requests"].as_array().cloned().unwrap_or_default();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["state"], "complete");
    // The dead master's row is gone; the survivor's remains.
    assert_eq!(
        psql(
            &url,
            &format!("SELECT count(*) FROM {schema}.masters WHERE id = '{runner_id}'")
        ),
        "0"
    );
    assert_eq!(
        psql(&url, &format!("SELECT count(*) FROM {schema}.masters")),
        "1"
    );
    // The reporters: the interrupted build is reported once (by the
    // survivor, which took it over: the master that ran it is dead), and
    // the build that ran the request again once.
    let pushes = rec.wait("the reports of both builds of `long`", "/push", |r| {
        r.iter().any(|q| q.json()["result"] == "success")
    });
    let results: Vec<(u64, String)> = pushes
        .iter()
        .map(|q| {
            let v = q.json();
            (
                v["build_id"].as_u64().unwrap_or(0),
                v["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let again_id = again["id"].as_u64().unwrap_or(0);
    assert_eq!(
        results,
        vec![
            (first, "retry".to_string()),
            (again_id, "success".to_string())
        ],
        "{pushes:#?}"
    );
    drop((wa, wb));
}

#[test]
fn pollers_and_schedulers_run_on_one_master_and_move_when_it_dies() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcmp_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let repo = temp_dir("multi_master_repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("f.txt"), "1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let (da, db) = dirs("multi_poll", &password);
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
worker "wb" password=(secret)"wb"
change-source "repo" kind="git-poller" {{
    repo "{repo}"
    branches "main"
    poll-interval "1h"
}}
scheduler "ci" kind="single-branch" {{
    branch "main"
    builders "b"
}}
builder "b" {{
    workers "wa" "wb"
    steps {{
        shell "echo built"
    }}
}}
"#,
        repo = repo.display()
    );
    let mut ma = start(&da, &config);
    let mut mb = start(&db, &config);
    let _wa = ma.worker("wa", "pw-worker-a-1234");
    let _wb = mb.worker("wb", "pw-worker-b-1234");
    ma.wait_connected("wa");
    mb.wait_connected("wb");
    let poll = |m: &Master| http("POST", &m.http, "/api/v1/change_sources/repo/poll", None);
    // One master holds the lease: its poller polls, the other's refuses.
    let a_holds = wait_for("one master to hold the schedulers' lease", || {
        match (poll(&ma).0, poll(&mb).0) {
            (200, 502) => Some(true),
            (502, 200) => Some(false),
            _ => None,
        }
    });
    let (holder, standby) = if a_holds {
        (&mut ma, &mut mb)
    } else {
        (&mut mb, &mut ma)
    };
    std::fs::write(repo.join("f.txt"), "2\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "second"]);
    let (status, body) = poll(holder);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(1), "{v}");
    let (status, body) = poll(standby);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("another master"), "{body}");
    wait_for("the build of the second commit", || {
        let b = builds_of(standby, "b");
        (b.len() == 1 && b[0]["result"] == "success").then_some(())
    });
    // A change posted to the master that does not run the schedulers is
    // stored there; the holder hears of it and its scheduler builds it.
    let (status, body) = http(
        "POST",
        &standby.http,
        "/api/v1/changes",
        Some(r#"{"branch": "main", "revision": "posted-elsewhere"}"#),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    wait_for("the build of the change posted to the standby", || {
        let b = builds_of(holder, "b");
        (b.len() == 2 && b.iter().all(|b| b["result"] == "success")).then_some(())
    });

    // The holder dies; the other master takes the lease over once it
    // expires, and its poller starts from the heads the first one saved.
    kill9(holder);
    let first = wait_for("the survivor to poll", || {
        let (status, body) = poll(standby);
        (status == 200).then_some(body)
    });
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v["changes"].as_array().map(Vec::len),
        Some(0),
        "seen twice: {v}"
    );
    std::fs::write(repo.join("f.txt"), "3\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "third"]);
    let (status, body) = poll(standby);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(1), "{v}");
    // Its schedulers build it, once.
    wait_for("the build of the third commit", || {
        let b = builds_of(standby, "b");
        (b.len() == 3 && b.iter().all(|b| b["result"] == "success")).then_some(())
    });
    let changes = get_json(&standby.http, "/api/v1/changes");
    let changes = changes["changes"].as_array().cloned().unwrap_or_default();
    assert_eq!(changes.len(), 3, "{changes:?}");
}

/// A running build is cancelled through a master that does not run it:
/// that master finds the build running in the shared store and tells the
/// others; the one running it stops it.
#[test]
fn a_build_running_on_one_master_is_cancelled_through_the_other() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcmc_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("multi_cancel", &password);
    // Never created: the step runs until it is cancelled.
    let go = da.join("go");
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wb" password=(secret)"wb"
scheduler "force" kind="force" {{
    builders "long"
}}
builder "long" {{
    workers "wb"
    steps {{
        shell "echo started; while [ ! -e '{go}' ]; do sleep 0.05; done" name="wait"
    }}
}}
"#,
        go = go.display()
    );
    let ma = start(&da, &config);
    let mb = start(&db, &config);
    let _wb = mb.worker("wb", "pw-worker-b-1234");
    mb.wait_connected("wb");

    // Forced through A, running on B's only worker.
    let set = ma.force("long", "{}");
    let id = wait_for("the build to run its step on B", || {
        let r = get_json(&ma.http, &format!("/api/v1/requests?buildset={set}"));
        let id = r["requests"].as_array()?.first()?["build"].as_u64()?;
        let (status, log) = http(
            "GET",
            &ma.http,
            &format!("/api/v1/builds/{id}/steps/0/log"),
            None,
        );
        (status == 200 && log.contains("started")).then_some(id)
    });
    // Cancelled through A, which does not run it.
    let (status, body) = http(
        "POST",
        &ma.http,
        &format!("/api/v1/builds/{id}/cancel"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let b = ma.wait_buildset(set);
    assert_eq!(b["id"].as_u64(), Some(id), "{b}");
    assert_eq!(b["result"], "cancelled", "{b}");
    let (status, _) = http(
        "POST",
        &mb.http,
        &format!("/api/v1/builds/{id}/cancel"),
        None,
    );
    assert_eq!(status, 409, "an ended build cannot be cancelled");
}

const TOKEN: &str = "admin-token-mm-5678";

/// `bbc apply FILE --yes` through master `m`, with the admin token.
fn apply(m: &Master, config: &Path, json: bool) -> std::process::Output {
    let token = m.dir.join("token");
    std::fs::write(&token, TOKEN).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = bbc();
    cmd.arg("apply")
        .arg(config)
        .args(["--yes", "--token-file"])
        .arg(&token)
        .args(["--master", &format!("http://{}", m.http)])
        .env_remove("BBC_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null());
    if json {
        cmd.args(["--format", "json"]);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run bbc apply: {e}"))
}

fn running_hash(m: &Master) -> String {
    get_json(&m.http, "/api/v1/config")["hash"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `GET /api/v1/masters`' row of the master with that id.
fn master_row(m: &Master, id: &str) -> Option<serde_json::Value> {
    get_json(&m.http, "/api/v1/masters")["masters"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
}

pub(crate) fn my_id(m: &Master) -> String {
    wait_for("the master's own row", || {
        get_json(&m.http, "/api/v1/masters")["masters"]
            .as_array()?
            .iter()
            .find(|r| r["this"] == true)?["id"]
            .as_str()
            .map(str::to_string)
    })
}

#[test]
fn an_apply_through_one_master_reaches_every_master() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcma_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("multi_apply", &password);
    write_secret(&da, "bbc-admin-token", TOKEN);
    // Only A has the secret a later config needs.
    write_secret(&da, "wc", "pw-worker-c-1234");
    let head = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
worker "wb" password=(secret)"wb"
"#
    );
    let first = format!(
        r#"{head}scheduler "force" kind="force" {{
    builders "old"
}}
builder "old" {{
    workers "wa" "wb"
    steps {{
        shell "echo old"
    }}
}}
"#
    );
    let ma = start(&da, &first);
    let mb = start(&db, &first);
    let _wb = mb.worker("wb", "pw-worker-b-1234");
    mb.wait_connected("wb");
    let (id_a, id_b) = (my_id(&ma), my_id(&mb));

    // A builder and its scheduler new in the second config, applied
    // through A only.
    let second = format!(
        r#"{head}scheduler "force" kind="force" {{
    builders "old" "new"
}}
builder "new" {{
    workers "wb"
    steps {{
        shell "echo built by the new builder" name="greet"
    }}
}}
builder "old" {{
    workers "wa" "wb"
    steps {{
        shell "echo old"
    }}
}}
"#
    );
    let file = da.join("second.kdl");
    std::fs::write(&file, &second).unwrap_or_else(|e| panic!("{e}"));
    let out = apply(&ma, &file, true);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let hash = doc["config"].as_str().unwrap_or_default().to_string();
    let masters = doc["report"]["masters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Both masters are listed, A (the one asked) first, and A runs it.
    assert_eq!(masters.len(), 2, "{doc}");
    assert_eq!(masters[0]["id"], id_a.as_str(), "{doc}");
    assert_eq!(masters[0]["this"], true, "{doc}");
    assert_eq!(masters[0]["state"], "applied", "{doc}");
    assert_eq!(masters[1]["id"], id_b.as_str(), "{doc}");
    // B applied it: its config, and its row as either master shows it.
    wait_for("B to run the new config", || {
        (running_hash(&mb) == hash).then_some(())
    });
    assert_eq!(get_json(&mb.http, "/api/v1/config")["via"], "shared");
    for m in [&ma, &mb] {
        let row = wait_for("B's row to say so", || {
            master_row(m, &id_b).filter(|r| r["config"] == hash.as_str())
        });
        assert!(row["config_failed"].is_null(), "{row}");
        assert_eq!(
            get_json(&m.http, "/api/v1/masters")["shared_config"]["hash"],
            hash.as_str()
        );
    }
    // The new builder is forced through B, and B's worker builds it.
    let set = mb.force("new", "{}");
    let built = mb.wait_buildset(set);
    assert_eq!(built["result"], "success", "{built}");
    let id = built["id"].as_u64().expect("a build id");
    assert!(ma.log(id, 0).contains("built by the new builder"));

    // A third master starting with the first file takes the shared config.
    let dc = temp_dir("multi_apply_c");
    write_secret(&dc, "wa", "pw-worker-a-1234");
    write_secret(&dc, "wb", "pw-worker-b-1234");
    write_secret(&dc, "pg", &password);
    let mc = start(&dc, &first);
    wait_for("C to take the shared config", || {
        (running_hash(&mc) == hash).then_some(())
    });
    let id_c = my_id(&mc);

    // A config with a secret only A has: A runs it; B and C say they
    // cannot, and keep the config they run. The apply succeeds.
    let third = second
        .replace(
            "worker \"wb\" password=(secret)\"wb\"\n",
            "worker \"wb\" password=(secret)\"wb\"\nworker \"wc\" password=(secret)\"wc\"\n",
        )
        .replace("workers \"wa\" \"wb\"", "workers \"wa\" \"wb\" \"wc\"");
    let file = da.join("third.kdl");
    std::fs::write(&file, &third).unwrap_or_else(|e| panic!("{e}"));
    let out = apply(&ma, &file, false);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("(this one): applied"), "{text}");
    let third_hash = running_hash(&ma);
    assert_ne!(third_hash, hash);
    for id in [&id_b, &id_c] {
        let row = wait_for("the refusal in the master's row", || {
            master_row(&ma, id).filter(|r| r["config_failed"] == third_hash.as_str())
        });
        assert!(
            row["config_error"].as_str().unwrap_or("").contains("wc"),
            "{row}"
        );
        assert_eq!(row["config"], hash.as_str(), "{row}");
    }
    assert_eq!(running_hash(&mb), hash);
    assert_eq!(running_hash(&mc), hash);
}

#[test]
fn a_dependent_scheduler_follows_a_build_set_of_the_other_master() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcmd_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let (da, db) = dirs("multi_dependent", &password);
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "wa" password=(secret)"wa"
worker "wb" password=(secret)"wb"
scheduler "force" kind="force" {{
    builders "up"
}}
scheduler "after" kind="dependent" {{
    upstream "force"
    builders "down"
}}
builder "up" {{
    workers "wb"
    steps {{
        shell "echo up"
    }}
}}
builder "down" {{
    workers "wa"
    steps {{
        shell "echo down"
    }}
}}
"#
    );
    let ma = start(&da, &config);
    let mb = start(&db, &config);
    // Which master runs the schedulers: each says for itself.
    let a_holds = wait_for("one master to hold the schedulers' lease", || {
        let holds = |m: &Master| {
            get_json(&m.http, "/api/v1/masters")["masters"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["this"] == true).cloned())
                .map(|r| r["schedulers"] == true)
        };
        match (holds(&ma)?, holds(&mb)?) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    });
    let (holder, other) = if a_holds { (&ma, &mb) } else { (&mb, &ma) };
    // `up` is forced through the other master and built by its worker;
    // `down` by the holder's.
    let _wb = other.worker("wb", "pw-worker-b-1234");
    let _wa = holder.worker("wa", "pw-worker-a-1234");
    other.wait_connected("wb");
    holder.wait_connected("wa");
    let set = other.force("up", "{}");
    let up = other.wait_buildset(set);
    assert_eq!(up["result"], "success", "{up}");
    let down = wait_for("the dependent scheduler's build", || {
        let b = builds_of(holder, "down");
        (b.len() == 1 && b[0]["result"] == "success").then(|| b[0].clone())
    });
    assert_eq!(down["worker"], "wa", "{down}");
    // Its build set is the dependent scheduler's, after the upstream one.
    let id = down["id"].as_u64().expect("a build id");
    let b = get_json(&other.http, &format!("/api/v1/builds/{id}"))["build"].clone();
    assert_eq!(b["origin"]["scheduler"], "after", "{b}");
    assert_eq!(builds_of(other, "down").len(), 1);
}
