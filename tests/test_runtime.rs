//! The master and workers as real processes on 127.0.0.1, running real
//! shell commands and real git.

use crate::common::{get_json, git, http, temp_dir, wait_for, write_secret, Master};

fn config(builders: &str) -> String {
    format!(
        r#"master {{
    title "test"
    property "greeting" "hello"
}}
worker "w1" password=(secret)"w1" max-builds=4
worker "w2" password=(secret)"w2" max-builds=4
lock "db" kind="master"
{builders}
"#
    )
}

fn setup(name: &str, builders: &str) -> (std::path::PathBuf, Master) {
    let dir = temp_dir(name);
    write_secret(&dir, "w1", "pw-one-1234");
    write_secret(&dir, "w2", "pw-two-5678");
    let m = Master::start(&dir, &config(builders));
    (dir, m)
}

fn step<'a>(b: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    b["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {b}"))
}

#[test]
fn hello_world_build_end_to_end() {
    let (_dir, m) = setup(
        "hello",
        r#"scheduler "force" kind="force" {
    builders "hello"
    param "who" type="string" default="world"
    param "n" type="int" default=1
}
builder "hello" {
    workers "w1"
    steps {
        shell "echo ${{ prop.greeting }}, ${{ prop.who }}; echo to-stderr >&2" name="greet"
        set-property "answer" command="echo 42"
        shell "echo answer=${{ prop.answer }} n=${{ prop.n }} build=${{ prop.buildnumber }} $HOME_IS_SHELL" name="use"
        shell "echo pw-one-1234 leaked" name="leak"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = m.force_and_wait("hello", r#"{"properties": {"who": "bbc", "n": 7}}"#);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["number"], 1);
    assert_eq!(b["properties"]["answer"], "42");
    let id = b["id"].as_u64().unwrap_or(0);
    let greet = m.log(id, 0);
    assert!(greet.contains("hello, bbc\n"), "{greet}");
    assert!(greet.contains("to-stderr"), "{greet}");
    let used = m.log(id, 2);
    assert!(used.contains("answer=42 n=7 build=1"), "{used}");
    let leak = m.log(id, 3);
    assert!(
        leak.contains("[secret] leaked") && !leak.contains("pw-one-1234"),
        "secret not redacted: {leak}"
    );
    assert_eq!(step(&b, "greet")["result"], "success");
    // Typed parameters are validated like the compiler validates config.
    let (status, body) = http(
        "POST",
        &m.http,
        "/api/v1/builders/hello/force",
        Some(r#"{"properties": {"n": "many"}}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("must be an integer"), "{body}");
    let (status, body) = http(
        "POST",
        &m.http,
        "/api/v1/builders/hello/force",
        Some(r#"{"properties": {"nope": 1}}"#),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = http("POST", &m.http, "/api/v1/builders/nope/force", Some("{}"));
    assert_eq!(status, 404);
    let (status, _) = http("GET", &m.http, "/api/v1/builds/999", None);
    assert_eq!(status, 404);
}

#[test]
fn step_options_and_results() {
    let (_dir, m) = setup(
        "options",
        r#"scheduler "force" kind="force" {
    builders "opts" "halting"
}
builder "opts" {
    workers "w1"
    env {
        FROM_BUILDER "b-env"
    }
    steps {
        shell "exit 3" name="tolerated" flunk-on-failure=#false warn-on-failure=#true
        shell "echo $FROM_BUILDER $FROM_STEP; pwd" name="env" workdir="sub/dir" {
            env {
                FROM_STEP "s-env"
            }
        }
        shell "echo never" name="skipped" do-step-if="${{ prop.branch == 'nope' }}"
        shell "exit 2" name="decoded" {
            decode-rc "2"="warnings"
        }
        compile "echo 'warning: one'; echo 'fine'; echo 'warning: two'" name="warned" warn-on-warnings=#true
        shell "sleep 30" name="quiet" timeout="1s" flunk-on-failure=#false
    }
}
builder "halting" {
    workers "w1"
    steps {
        shell "exit 1" name="fails" halt-on-failure=#true
        shell "echo should-not-run" name="after"
        shell "echo cleanup" name="cleanup" always-run=#true
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = m.force_and_wait("opts", "{}");
    assert_eq!(b["result"], "warnings", "{b}");
    assert_eq!(step(&b, "tolerated")["result"], "failure");
    let id = b["id"].as_u64().unwrap_or(0);
    let env = m.log(id, 1);
    assert!(env.contains("b-env s-env"), "{env}");
    assert!(env.contains("/opts/sub/dir"), "{env}");
    assert_eq!(step(&b, "skipped")["result"], "skipped");
    assert_eq!(step(&b, "decoded")["result"], "warnings");
    assert_eq!(step(&b, "warned")["result"], "warnings");
    assert_eq!(step(&b, "warned")["warnings"], 2);
    assert_eq!(step(&b, "quiet")["result"], "failure");
    assert!(
        step(&b, "quiet")["state_string"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{b}"
    );

    let h = m.force_and_wait("halting", "{}");
    assert_eq!(h["result"], "failure");
    assert_eq!(step(&h, "after")["result"], "skipped");
    assert_eq!(step(&h, "cleanup")["result"], "success");
}

#[test]
fn git_step_checks_out_and_sets_got_revision() {
    let repo = temp_dir("git-repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "v1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let builders = format!(
        r#"scheduler "force" kind="force" {{
    builders "g"
}}
builder "g" {{
    workers "w1"
    steps {{
        git repo="{}" branch="main" mode="full" method="fresh"
        shell "cat hello.txt; echo rev=${{{{ prop.got_revision }}}}" name="show"
    }}
}}
"#,
        repo.display()
    );
    let (_dir, m) = setup("git", &builders);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = m.force_and_wait("g", "{}");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["properties"]["got_revision"], sha.as_str());
    let show = m.log(b["id"].as_u64().unwrap_or(0), 1);
    assert!(
        show.contains("v1") && show.contains(&format!("rev={sha}")),
        "{show}"
    );
    // A second commit; the next build fetches it (incremental update).
    std::fs::write(repo.join("hello.txt"), "v2\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "two"]);
    let b = m.force_and_wait("g", "{}");
    let show = m.log(b["id"].as_u64().unwrap_or(0), 1);
    assert!(show.contains("v2"), "{show}");
}

#[test]
fn wrong_password_and_malformed_frames_leave_the_master_serving() {
    let (_dir, m) = setup(
        "auth",
        r#"scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        shell "echo ok"
    }
}
"#,
    );
    let _bad = m.worker("w1", "wrong-password");
    // Garbage on the worker port: a frame far too long, then bytes.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&m.workers).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        let mut s2 = std::net::TcpStream::connect(&m.workers).unwrap_or_else(|e| panic!("{e}"));
        let _ = s2.write_all(&[0, 0, 0, 5, 1, b'{', b'x', b'}', b'!']);
    }
    let v = get_json(&m.http, "/api/v1/workers");
    assert_eq!(
        v["workers"][0]["connected"], false,
        "a wrong password must not connect: {v}"
    );
    let _good = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success");
}

#[test]
fn forced_requests_are_never_collapsed() {
    let (_dir, m) = setup(
        "collapse",
        r#"scheduler "force" kind="force" {
    builders "c"
}
builder "c" {
    workers "w1"
    collapse-requests #true
    steps {
        shell "echo ok"
    }
}
"#,
    );
    // No worker yet: the three requests wait in the queue, for the same
    // source. Collapsing is for requests that came from changes (see
    // test_requests.rs); forced ones each get their build.
    let mut sets = Vec::new();
    for _ in 0..3 {
        let (status, body) = http(
            "POST",
            &m.http,
            "/api/v1/builders/c/force",
            Some(r#"{"branch": "main"}"#),
        );
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        sets.push(v["buildset"]["id"].as_u64().unwrap_or(0));
    }
    let pending = get_json(&m.http, "/api/v1/requests?state=pending");
    assert_eq!(pending["requests"].as_array().map(Vec::len), Some(3));
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let mut builds: Vec<u64> = sets
        .iter()
        .map(|s| m.wait_buildset(*s)["id"].as_u64().unwrap_or(0))
        .collect();
    builds.sort_unstable();
    builds.dedup();
    assert_eq!(builds.len(), 3, "a build each: {builds:?}");
}

#[test]
fn killed_worker_means_retry_and_the_request_runs_again() {
    let (dir, m) = setup(
        "retry",
        r#"scheduler "force" kind="force" {
    builders "r"
}
builder "r" {
    workers "w1"
    steps {
        shell "if [ -f ../../marker ]; then echo second; else touch ../../marker; echo started; sleep 60; fi" name="maybe-slow"
    }
}
"#,
    );
    let w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let (status, body) = http("POST", &m.http, "/api/v1/builders/r/force", Some("{}"));
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let set = v["buildset"]["id"].as_u64().unwrap_or(0);
    // Wait until the first run is inside its long command.
    wait_for("the first run to start", || {
        dir.join("workers/w1/marker").exists().then_some(())
    });
    drop(w); // kills the worker process
    let first = wait_for("the first build to end as retry", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=r");
        v["builds"]
            .as_array()?
            .iter()
            .find(|b| b["result"] == "retry")
            .cloned()
    });
    assert_eq!(first["number"], 1);
    let _w2 = m.worker("w1", "pw-one-1234");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["number"], 2);
    assert!(m.log(b["id"].as_u64().unwrap_or(0), 0).contains("second"));
}

#[test]
fn master_killed_loses_no_acknowledged_request() {
    let dir = temp_dir("kill9");
    write_secret(&dir, "w1", "pw-one-1234");
    write_secret(&dir, "w2", "pw-two-5678");
    let builders = r#"scheduler "force" kind="force" {
    builders "k"
}
builder "k" {
    workers "w1"
    steps {
        shell "echo survived"
    }
}
"#;
    let mut m = Master::start(&dir, &config(builders));
    let (status, body) = http("POST", &m.http, "/api/v1/builders/k/force", Some("{}"));
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let set = v["buildset"]["id"].as_u64().unwrap_or(0);
    // kill -9: no chance to flush anything.
    let _ = m.proc.0.kill();
    let _ = m.proc.0.wait();
    let m = Master::start(&dir, &config(builders));
    let _w = m.worker("w1", "pw-one-1234");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success");
}

#[test]
fn upload_download_trigger_and_locks() {
    let (dir, m) = setup(
        "transfer",
        r#"scheduler "force" kind="force" {
    builders "parent" "locked-a" "locked-b"
}
scheduler "child" kind="triggerable" {
    builders "child"
}
builder "parent" {
    workers "w1"
    steps {
        shell "mkdir -p out/sub && echo payload > out/a.txt && echo deep > out/sub/b.txt" name="make"
        upload "out/a.txt" to="up/a.txt"
        upload "out" to="up/tree" directory=#true
        download "up/tree/sub/b.txt" to="fetched.txt"
        shell "cat fetched.txt" name="show"
        trigger "child" wait=#true {
            property "from" "${{ prop.builder }}"
        }
    }
}
builder "child" {
    workers "w2"
    steps {
        shell "echo child of ${{ prop.from }}; exit 1" name="child-step"
    }
}
builder "locked-a" {
    workers "w1"
    lock "db" access="exclusive"
    steps {
        shell "echo start-a >> ../../../order; sleep 0.3; echo end-a >> ../../../order"
    }
}
builder "locked-b" {
    workers "w2"
    steps {
        shell "echo start-b >> ../../../order; sleep 0.3; echo end-b >> ../../../order" locks="db"
    }
}
"#,
    );
    let _w1 = m.worker("w1", "pw-one-1234");
    let _w2 = m.worker("w2", "pw-two-5678");
    m.wait_connected("w1");
    m.wait_connected("w2");
    let b = m.force_and_wait("parent", "{}");
    let files = dir.join("state/files/up");
    assert_eq!(
        std::fs::read_to_string(files.join("a.txt")).unwrap_or_default(),
        "payload\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("tree/sub/b.txt")).unwrap_or_default(),
        "deep\n"
    );
    assert!(m.log(b["id"].as_u64().unwrap_or(0), 4).contains("deep"));
    // The child failed, so the waiting trigger step fails the parent.
    assert_eq!(step(&b, "trigger")["result"], "failure", "{b}");
    assert_eq!(b["result"], "failure");
    let child = get_json(&m.http, "/api/v1/builds?builder=child");
    let cb = child["builds"][0]["id"].as_u64().unwrap_or(0);
    assert!(m.log(cb, 0).contains("child of parent"));

    // Exclusive master lock: the two builds never overlap.
    let (s1, _) = http(
        "POST",
        &m.http,
        "/api/v1/builders/locked-a/force",
        Some("{}"),
    );
    let (s2, _) = http(
        "POST",
        &m.http,
        "/api/v1/builders/locked-b/force",
        Some("{}"),
    );
    assert_eq!((s1, s2), (201, 201));
    let order = wait_for("both locked builds", || {
        let t = std::fs::read_to_string(dir.join("workers/order")).ok()?;
        (t.lines().count() == 4).then_some(t)
    });
    let lines: Vec<&str> = order.lines().collect();
    assert!(
        lines[0].starts_with("start")
            && lines[1].starts_with("end")
            && lines[2].starts_with("start"),
        "overlap: {lines:?}"
    );
    assert_eq!(
        &lines[0][6..],
        &lines[1][4..],
        "a build ended before the other started: {lines:?}"
    );
}

#[test]
fn a_50_mb_log_is_stored_whole() {
    let (_dir, m) = setup(
        "biglog",
        r#"scheduler "force" kind="force" {
    builders "big"
}
builder "big" {
    workers "w1"
    steps {
        shell "head -c 50000000 /dev/zero | tr '\\0' 'x'; echo; echo tail-marker" name="spew"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = m.force_and_wait("big", "{}");
    assert_eq!(b["result"], "success");
    let s = step(&b, "spew");
    let len = s["log_len"].as_u64().unwrap_or(0);
    assert!(len > 50_000_000, "log length {len}");
    let id = b["id"].as_u64().unwrap_or(0);
    // Read the tail from an offset, as a client following a log does.
    let (status, tail) = http(
        "GET",
        &m.http,
        &format!("/api/v1/builds/{id}/steps/0/log?offset={}", len - 200),
        None,
    );
    assert_eq!(status, 200);
    assert!(tail.contains("tail-marker"), "{tail}");
}

#[test]
fn cancel_master_shell_and_more_step_kinds() {
    let (dir, m) = setup(
        "cancel",
        r#"scheduler "force" kind="force" {
    builders "long" "misc"
}
builder "long" {
    workers "w1"
    steps {
        shell "echo begun; sleep 60" name="sleeper"
        shell "echo cleanup" name="cleanup" always-run=#true
    }
}
builder "misc" {
    workers "w1"
    steps {
        set-property "flavour" value="plain-${{ prop.builder }}"
        master-shell "echo on-master ${{ prop.flavour }}; pwd" name="on-master"
        shell "echo hidden" name="hidden-one" hide-step-if="${{ prop.flavour != '' }}"
        shell "sleep 30" name="capped" max-time="1s" flunk-on-failure=#false
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let (status, body) = http("POST", &m.http, "/api/v1/builders/long/force", Some("{}"));
    assert_eq!(status, 201, "{body}");
    let running = wait_for("the long build to run its first step", || {
        let v = get_json(&m.http, "/api/v1/builds?running=true");
        let b = v["builds"].as_array()?.first()?.clone();
        let id = b["id"].as_u64()?;
        let (_, log) = http(
            "GET",
            &m.http,
            &format!("/api/v1/builds/{id}/steps/0/log"),
            None,
        );
        log.contains("begun").then_some(id)
    });
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/builds/{running}/cancel"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let b = wait_for("the cancelled build to end", || {
        let b = get_json(&m.http, &format!("/api/v1/builds/{running}"))["build"].clone();
        b["complete"].as_bool().filter(|c| *c).map(|_| b)
    });
    assert_eq!(b["result"], "cancelled", "{b}");
    assert_eq!(step(&b, "sleeper")["result"], "cancelled");
    assert_eq!(
        step(&b, "cleanup")["result"],
        "success",
        "always-run steps run after a cancel"
    );
    let (status, _) = http(
        "POST",
        &m.http,
        &format!("/api/v1/builds/{running}/cancel"),
        None,
    );
    assert_eq!(status, 409, "a finished build cannot be cancelled");

    let b = m.force_and_wait("misc", "{}");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["properties"]["flavour"], "plain-misc");
    let on_master = m.log(b["id"].as_u64().unwrap_or(0), 1);
    assert!(on_master.contains("on-master plain-misc"), "{on_master}");
    assert!(
        on_master.contains(
            &dir.join("state/master-work/misc")
                .to_string_lossy()
                .into_owned()
        ),
        "{on_master}"
    );
    assert_eq!(step(&b, "hidden-one")["hidden"], true);
    assert_eq!(step(&b, "capped")["result"], "failure");
    assert!(step(&b, "capped")["state_string"]
        .as_str()
        .unwrap_or("")
        .contains("max-time"));
}

#[test]
fn a_missing_secret_stops_the_master_with_its_name() {
    let dir = temp_dir("nosecret");
    write_secret(&dir, "w1", "pw-one-1234");
    let cfg = dir.join("master.kdl");
    std::fs::write(&cfg, config("")).unwrap_or_else(|e| panic!("{e}"));
    let o = crate::common::bbc()
        .args(["master", &cfg.to_string_lossy(), "--state"])
        .arg(dir.join("state"))
        .arg("--secrets")
        .arg(dir.join("secrets"))
        .env_remove("BBC_SECRET_W2")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("w2") && err.contains("BBC_SECRET_W2"), "{err}");
}

#[test]
fn bbc_run_runs_a_builder_locally() {
    let dir = temp_dir("localrun");
    let cfg = dir.join("c.kdl");
    std::fs::write(
        &cfg,
        r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {
    builders "ok" "bad"
    param "who" default="nobody"
}
builder "ok" {
    workers "w"
    steps {
        shell "echo hi ${{ prop.who }}" name="hi"
    }
}
builder "bad" {
    workers "w"
    steps {
        shell "echo failing; exit 4" name="boom"
    }
}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = cfg.to_string_lossy().into_owned();
    let o = crate::common::run(&["run", &c, "ok", "--prop", "who=there"]);
    let out = crate::common::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("hi there"), "{out}");
    assert!(out.contains("build ok: success"), "{out}");
    let o = crate::common::run(&["run", &c, "bad"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(crate::common::stdout(&o).contains("exit code 4"));
    let o = crate::common::run(&["run", &c, "nope"]);
    assert_eq!(o.status.code(), Some(2));
    // For scripts: one JSON document, with the failed step's last lines.
    let o = crate::common::run(&["run", &c, "bad", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let out = crate::common::stdout(&o);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["builder"], "bad", "{v}");
    assert_eq!(v["number"], 1, "{v}");
    assert_eq!(v["result"], "failure", "{v}");
    assert_eq!(v["steps"][0]["name"], "boom", "{v}");
    assert_eq!(v["steps"][0]["result"], "failure", "{v}");
    assert!(
        v["steps"][0]["log_tail"]
            .as_str()
            .is_some_and(|t| t.contains("failing")),
        "{v}"
    );
    assert_eq!(v["uploads"], serde_json::Value::Null, "{v}");
    // Without --prop, the force parameter's default, as a forced build on
    // a master would have it.
    let o = crate::common::run(&["run", &c, "ok"]);
    let out = crate::common::stdout(&o);
    assert!(out.contains("hi nobody"), "{out}");
}

/// `bbc run` keeps what upload steps wrote and says where.
#[test]
fn bbc_run_keeps_uploads_and_says_where() {
    let dir = temp_dir("localrun_uploads");
    let cfg = dir.join("c.kdl");
    std::fs::write(
        &cfg,
        r#"worker "w" password=(secret)"w"
builder "pkg" {
    workers "w"
    steps {
        shell "echo artefact > out.txt" name="make"
        upload "out.txt" to="pkg/out.txt"
    }
}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = crate::common::run(&["run", &cfg.to_string_lossy(), "pkg"]);
    let out = crate::common::stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("── uploads kept in "))
        .unwrap_or_else(|| panic!("no uploads line in {out}"));
    let kept = std::path::Path::new(dir).join("pkg/out.txt");
    let text = std::fs::read_to_string(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()));
    assert_eq!(text, "artefact\n");
    let _ = std::fs::remove_dir_all(
        std::path::Path::new(dir)
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(std::path::Path::new(dir)),
    );
}

#[test]
fn cli_force_wait_status_and_sendchange() {
    let (_dir, m) = setup(
        "cli",
        r#"scheduler "force" kind="force" {
    builders "b" "f"
    param "n" type="int" default=1
}
builder "b" {
    workers "w1"
    steps {
        shell "echo n=${{ prop.n }}"
    }
}
builder "f" {
    workers "w1"
    steps {
        shell "exit 1"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let url = format!("http://{}", m.http);
    let o = crate::common::run(&["force", "b", "--prop", "n=5", "--wait", "--url", &url]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::common::stdout(&o));
    assert!(crate::common::stdout(&o).contains("b #1: success"));
    let o = crate::common::run(&["force", "f", "--wait", "--url", &url]);
    assert_eq!(o.status.code(), Some(1));
    let o = crate::common::run(&["force", "b", "--prop", "n=x", "--url", &url]);
    assert_eq!(o.status.code(), Some(2));
    assert!(crate::common::stderr(&o).contains("must be an integer"));
    let o = crate::common::run(&["status", "--url", &url]);
    let out = crate::common::stdout(&o);
    assert!(
        out.contains("w1: idle") && out.contains("  b: #1 success, finished "),
        "{out}"
    );
    let o = crate::common::run(&[
        "sendchange",
        "--branch",
        "main",
        "--revision",
        "abc123",
        "--who",
        "ann",
        "--file",
        "src/x.rs",
        "--url",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::common::stderr(&o));
    let v = get_json(&m.http, "/api/v1/changes");
    let c = &v["changes"][0];
    assert_eq!(
        (
            c["branch"].as_str(),
            c["revision"].as_str(),
            c["author"].as_str()
        ),
        (Some("main"), Some("abc123"), Some("ann"))
    );
    assert_eq!(c["files"][0], "src/x.rs");
    let (status, _) = http("POST", &m.http, "/api/v1/changes", Some("{not json"));
    assert_eq!(status, 400);
}

#[test]
fn running_builds_carry_an_eta_from_history() {
    let (dir, m) = setup(
        "eta",
        r#"scheduler "force" kind="force" {
    builders "e"
}
builder "e" {
    workers "w1"
    steps {
        shell "if [ -f ../../../hold ]; then while [ ! -f ../../../release ]; do sleep 0.05; done; fi; echo done" name="maybe-hold"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    for _ in 0..2 {
        let b = m.force_and_wait("e", "{}");
        assert_eq!(b["result"], "success");
        assert!(b["eta"].is_null(), "a finished build has no ETA");
        // The build ran with the definition it started with.
        let def = get_json(&m.http, "/api/v1/builders/e");
        assert_eq!(b["builder_hash"], def["builder"]["hash"]);
    }
    std::fs::write(dir.join("workers/hold"), "").unwrap_or_else(|e| panic!("{e}"));
    let (status, _) = http("POST", &m.http, "/api/v1/builders/e/force", Some("{}"));
    assert_eq!(status, 201);
    let running = wait_for("the third build to run its step", || {
        let v = get_json(&m.http, "/api/v1/builds?running=true");
        let b = v["builds"].as_array()?.first().cloned()?;
        let id = b["id"].as_u64()?;
        // The build exists a moment before its first step record does.
        let full = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
        full["steps"][0]["started_at"].as_i64().map(|_| b)
    });
    let started = running["started_at"].as_i64().unwrap_or(0);
    let eta = running["eta"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ETA: {running}"));
    assert!(eta >= started, "ETA {eta} before start {started}");
    let id = running["id"].as_u64().unwrap_or(0);
    let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
    assert!(
        b["steps"][0]["eta"].as_i64().is_some(),
        "the running step has an ETA: {b}"
    );
    std::fs::write(dir.join("workers/release"), "").unwrap_or_else(|e| panic!("{e}"));
    wait_for("the held build to end", || {
        let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
        (b["result"] == "success").then_some(())
    });
}

#[test]
fn api_filters_pages_and_errors() {
    let (_dir, m) = setup(
        "api",
        r#"scheduler "force" kind="force" {
    builders "good" "bad"
}
builder "good" {
    workers "w1"
    steps {
        shell "true"
    }
}
builder "bad" {
    workers "w1"
    steps {
        shell "false"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    for _ in 0..3 {
        m.force_and_wait("good", "{}");
    }
    m.force_and_wait("bad", "{}");
    let all = get_json(&m.http, "/api/v1/builds");
    let ids: Vec<u64> = all["builds"]
        .as_array()
        .map(|v| v.iter().filter_map(|b| b["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![4, 3, 2, 1], "newest first");
    let page = get_json(&m.http, "/api/v1/builds?limit=2");
    assert_eq!(page["builds"].as_array().map(Vec::len), Some(2));
    let next = get_json(&m.http, "/api/v1/builds?limit=2&before=3");
    let ids: Vec<u64> = next["builds"]
        .as_array()
        .map(|v| v.iter().filter_map(|b| b["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(ids, vec![2, 1]);
    let failed = get_json(&m.http, "/api/v1/builds?result=failure");
    assert_eq!(failed["builds"].as_array().map(Vec::len), Some(1));
    assert_eq!(failed["builds"][0]["builder"], "bad");
    let good = get_json(&m.http, "/api/v1/builds?builder=good");
    assert_eq!(good["builds"].as_array().map(Vec::len), Some(3));
    assert_eq!(good["builds"][0]["number"], 3, "numbers count per builder");
    let done = get_json(&m.http, "/api/v1/requests?state=complete");
    assert_eq!(done["requests"].as_array().map(Vec::len), Some(4));
    // Errors are JSON with a status that fits.
    for (path, status) in [
        ("/api/v1/builds?result=great", 400),
        ("/api/v1/requests?state=sleeping", 400),
        ("/api/v1/nothing-here", 404),
        ("/api/v1/builders/nope", 404),
        ("/api/v1/builds/1/steps/9/log", 404),
    ] {
        let (s, body) = http("GET", &m.http, path, None);
        assert_eq!(s, status, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert_eq!(v["error"]["status"], status, "{path}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }
    let (s, _) = http("POST", &m.http, "/api/v1/requests/1/cancel", None);
    assert_eq!(s, 409, "a complete request cannot be cancelled");
    let sched = get_json(&m.http, "/api/v1/schedulers");
    assert_eq!(sched["schedulers"][0]["kind"], "force");
    let workers = get_json(&m.http, "/api/v1/workers");
    assert_eq!(workers["workers"][0]["state"], "idle");
    assert_eq!(workers["workers"][1]["state"], "offline");
}

#[test]
fn a_control_token_guards_actions_on_builds() {
    let dir = temp_dir("control-token");
    write_secret(&dir, "w1", "pw-one-1234");
    write_secret(&dir, "w2", "pw-two-5678");
    write_secret(&dir, "bbc-control-token", "ctl-token-0001");
    write_secret(&dir, "bbc-admin-token", "adm-token-0002");
    let m = Master::start(
        &dir,
        &config(
            r#"scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1" "w2"
    steps {
        shell "true"
    }
}
"#,
        ),
    );
    let post = |path: &str, token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        crate::common::http_with("POST", &m.http, path, &headers, Some("{}"))
    };
    // Without the token, or with a wrong one: 401, nothing queued.
    let (status, body) = post("/api/v1/builders/b/force", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(post("/api/v1/builders/b/force", Some("nope")).0, 401);
    let change = r#"{"branch": "main", "revision": "abc"}"#;
    let (status, _) = http("POST", &m.http, "/api/v1/changes", Some(change));
    assert_eq!(status, 401);
    let reqs = get_json(&m.http, "/api/v1/requests");
    assert_eq!(reqs["requests"].as_array().map(Vec::len), Some(0), "{reqs}");
    assert_eq!(
        get_json(&m.http, "/api/v1/changes")["changes"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    // Reading stays open.
    assert_eq!(http("GET", &m.http, "/api/v1/builders", None).0, 200);
    // The control token, and the admin token, are accepted.
    let (status, body) = post("/api/v1/builders/b/force", Some("ctl-token-0001"));
    assert_eq!(status, 201, "{body}");
    let (status, body) = post("/api/v1/builders/b/force", Some("adm-token-0002"));
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}"));
    let req = v["requests"][0]["id"].as_u64().unwrap_or(0);
    // Cancelling needs it too (no worker is connected: the request waits).
    let cancel = format!("/api/v1/requests/{req}/cancel");
    assert_eq!(post(&cancel, None).0, 401);
    let (status, body) = post(&cancel, Some("ctl-token-0001"));
    assert_eq!(status, 200, "{body}");
    // `bbc force` sends $BBC_TOKEN.
    let url = format!("http://{}", m.http);
    let o = crate::common::bbc()
        .args(["force", "b", "--url", &url])
        .env_remove("BBC_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"));
    let o = crate::common::bbc()
        .args(["force", "b", "--url", &url])
        .env("BBC_TOKEN", "ctl-token-0001")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_event_stream_tells_of_changes_sets_and_builds() {
    use std::io::{BufRead, BufReader, Write};
    let (_dir, m) = setup(
        "events",
        r#"scheduler "force" kind="force" {
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
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let mut sock = std::net::TcpStream::connect(&m.http).unwrap_or_else(|e| panic!("{e}"));
    // A bound on a broken stream, not a synchronisation.
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    write!(
        sock,
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        m.http
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rd = BufReader::new(sock);
    let mut head = String::new();
    while rd.read_line(&mut head).unwrap_or(0) > 0 && !head.ends_with("\r\n\r\n") {}
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    // Subscribed once the headers are out: what follows is seen.
    let (status, body) = http(
        "POST",
        &m.http,
        "/api/v1/changes",
        Some(r#"{"branch": "main", "revision": "abc123"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let b = m.force_and_wait("b", "{}");
    let id = b["id"].as_u64().unwrap_or(0);
    // Read events until the build's end; each is `event:` then `data:`.
    let mut seen = Vec::new();
    let mut kind = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the stream ended; saw {seen:?}");
        }
        let l = line.trim_end();
        if let Some(k) = l.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            let v: serde_json::Value =
                serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
            seen.push((kind.clone(), v.clone()));
            if kind == "build" && v["id"] == id && v["phase"] == "finished" {
                assert_eq!(v["result"], "success", "{v}");
                break;
            }
        }
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        seen.iter()
            .any(|(k, v)| k == "change" && v["revision"] == "abc123"),
        "{seen:?}"
    );
    let set = kinds.iter().position(|k| *k == "buildset");
    let started = seen
        .iter()
        .position(|(k, v)| k == "build" && v["id"] == id && v["phase"] == "started");
    assert!(
        set.is_some() && started.is_some() && set < started,
        "the set comes before its build starts: {seen:?}"
    );
}

/// The missing-timeout used to be read and never acted on: a worker that
/// went away was never reported. Now, past its timeout, the master logs
/// one WARN line and `GET /api/v1/workers` marks it missing; when it comes
/// back, one INFO line and the mark goes.
#[test]
fn a_worker_away_past_its_missing_timeout_is_reported_until_it_returns() {
    let dir = temp_dir("missing_worker");
    write_secret(&dir, "w", "pw-missing-1234");
    let config = r#"worker "w" password=(secret)"w" missing-timeout="1s"
worker "w2" password=(secret)"w" missing-timeout="1s"
worker "far" password=(secret)"w" missing-timeout="1h"
builder "b" {
    workers "w" "w2" "far"
    steps {
        shell "true"
    }
}
"#;
    let m = Master::start_logged(&dir, config);
    let worker = |v: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        v["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
    };
    let w = m.worker("w", "pw-missing-1234");
    let w2 = m.worker("w2", "pw-missing-1234");
    // Connected and not (or no longer: a slow start may exceed 1 s) missing.
    wait_for("both workers up and not missing", || {
        let v = get_json(&m.http, "/api/v1/workers");
        ["w", "w2"]
            .iter()
            .all(|n| worker(&v, n).is_some_and(|x| x["connected"] == true && x["missing"] == false))
            .then_some(())
    });
    let log = dir.join("master.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // Only lines from here on count.
    let from = read().len();
    let tail = || read().get(from..).unwrap_or_default().to_string();

    drop(w);
    let gone = wait_for("w to be reported missing", || {
        let v = get_json(&m.http, "/api/v1/workers");
        worker(&v, "w").filter(|x| x["missing"] == true)
    });
    assert_eq!(gone["connected"], false, "{gone}");
    assert!(gone["missing_since"].as_i64().is_some(), "{gone}");
    // Another worker going away wakes the timer again: w is not reported
    // a second time.
    drop(w2);
    wait_for("w2 to be reported missing", || {
        let v = get_json(&m.http, "/api/v1/workers");
        worker(&v, "w2").filter(|x| x["missing"] == true)
    });
    let text = tail();
    assert_eq!(
        text.matches("worker w has been missing for").count(),
        1,
        "{text}"
    );
    assert!(text.contains("WARN"), "{text}");
    // Never connected, but well within its timeout.
    let far = worker(&get_json(&m.http, "/api/v1/workers"), "far");
    assert_eq!(
        far.as_ref().map(|x| x["missing"].clone()),
        Some(false.into()),
        "{far:?}"
    );

    let _w = m.worker("w", "pw-missing-1234");
    let back = wait_for("w back and no longer missing", || {
        let v = get_json(&m.http, "/api/v1/workers");
        worker(&v, "w").filter(|x| x["connected"] == true && x["missing"] == false)
    });
    assert!(back["missing_since"].is_null(), "{back}");
    let text = tail();
    assert_eq!(
        text.matches("worker w is back after being missing for")
            .count(),
        1,
        "{text}"
    );
    drop(m);
}

/// Properties declared on the master, on a worker and on a builder reach
/// the build that runs there, the narrower one winning: master < worker <
/// builder (docs/language.md, "Build properties"; Buildbot's worker and
/// builder `properties`).
#[test]
fn worker_and_builder_properties_at_run_time() {
    let dir = temp_dir("props-runtime");
    write_secret(&dir, "w1", "pw-one-1234");
    write_secret(&dir, "w2", "pw-two-5678");
    let m = Master::start(
        &dir,
        r#"master {
    property "scope" "master"
}
worker "w1" password=(secret)"w1" {
    property "os" "linux"
    property "scope" "worker"
}
worker "w2" password=(secret)"w2" {
    property "os" "macos"
}
builder "on-w1" {
    workers "w1"
    property "flavour" "release"
    steps {
        shell "echo os=${{ prop.os }} flavour=${{ prop.flavour }} scope=${{ prop.scope }}" name="show"
    }
}
builder "on-w2" {
    workers "w2"
    steps {
        shell "echo os=${{ prop.os }} scope=${{ prop.scope }}" name="show"
    }
}
builder "narrowest" {
    workers "w1"
    property "scope" "builder"
    steps {
        shell "echo scope=${{ prop.scope }}" name="show"
    }
}
scheduler "force" kind="force" {
    builders "on-w1" "on-w2" "narrowest"
}
"#,
    );
    let _w1 = m.worker("w1", "pw-one-1234");
    let _w2 = m.worker("w2", "pw-two-5678");
    m.wait_connected("w1");
    m.wait_connected("w2");
    for (builder, line, props) in [
        (
            "on-w1",
            "os=linux flavour=release scope=worker\n",
            [("os", "linux"), ("scope", "worker")],
        ),
        (
            "on-w2",
            "os=macos scope=master\n",
            [("os", "macos"), ("scope", "master")],
        ),
        (
            "narrowest",
            "scope=builder\n",
            [("os", "linux"), ("scope", "builder")],
        ),
    ] {
        let b = m.force_and_wait(builder, "{}");
        assert_eq!(b["result"], "success", "{b}");
        let log = m.log(b["id"].as_u64().unwrap_or(0), 0);
        // The command's own output line (the log also has the command
        // and its exit).
        assert!(
            log.lines().any(|l| l == line.trim_end()),
            "{builder}: {log}"
        );
        for (k, v) in props {
            assert_eq!(b["properties"][k], v, "{builder}: {b}");
        }
    }
}
