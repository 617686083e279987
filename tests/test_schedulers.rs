//! Schedulers in a real master: changes submitted through the API (the
//! same path as pollers and webhooks) turn into builds exactly once.

use crate::common::{get_json, git, temp_dir, wait_for, write_secret, Master};

const CONFIG: &str = r#"worker "w1" password=(secret)"w1"
scheduler "ci" kind="single-branch" {
    branch "main"
    tree-stable-timer "1500ms"
    files-important "src/**"
    builders "b"
}
scheduler "after" kind="dependent" {
    upstream "ci"
    builders "d"
}
builder "b" {
    workers "w1"
    steps {
        shell "echo building ${{ prop.revision }} on ${{ prop.branch }}"
    }
}
builder "d" {
    workers "w1"
    steps {
        shell "echo after ${{ prop.revision }}"
    }
}
"#;

fn sendchange(m: &Master, branch: &str, rev: &str, file: &str) -> u64 {
    let url = format!("http://{}", m.http);
    let o = crate::common::run(&[
        "sendchange",
        "--branch",
        branch,
        "--revision",
        rev,
        "--file",
        file,
        "--url",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::common::stderr(&o));
    let out = crate::common::stdout(&o);
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

fn builds(m: &Master, builder: &str) -> Vec<serde_json::Value> {
    get_json(&m.http, &format!("/api/v1/builds?builder={builder}"))["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finished(m: &Master, builder: &str, n: usize) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} finished build(s) of {builder}"), || {
        let b = builds(m, builder);
        (b.len() >= n && b.iter().all(|x| x["complete"] == true)).then_some(b)
    })
}

#[test]
fn pushes_within_the_tree_stable_timer_build_once_then_dependents_follow() {
    let dir = temp_dir("sched-stable");
    write_secret(&dir, "w1", "pw-one-1234");
    let m = Master::start(&dir, CONFIG);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    // Unimportant alone: no build; then two important pushes close together.
    sendchange(&m, "main", "r1", "docs/readme.md");
    sendchange(&m, "main", "r2", "src/a.rs");
    sendchange(&m, "main", "r3", "src/b.rs");
    sendchange(&m, "dev", "x1", "src/a.rs");
    let b = finished(&m, "b", 1);
    assert_eq!(b.len(), 1, "one build for the three main changes: {b:?}");
    assert_eq!(b[0]["properties"]["revision"], "r3");
    assert_eq!(b[0]["properties"]["branch"], "main");
    // The dependent scheduler runs after the upstream set succeeded.
    let d = finished(&m, "d", 1);
    assert_eq!(d[0]["properties"]["revision"], "r3");
    assert_eq!(builds(&m, "b").len(), 1, "still exactly one build");
}

#[test]
fn a_master_killed_during_the_timer_builds_the_change_once_after_restart() {
    let dir = temp_dir("sched-restart");
    write_secret(&dir, "w1", "pw-one-1234");
    let slow = CONFIG.replace("1500ms", "2s");
    let mut m = Master::start(&dir, &slow);
    sendchange(&m, "main", "r9", "src/a.rs");
    // The change is stored before the API answers; the scheduler holds it
    // in its timer when the master dies.
    let _ = m.proc.0.kill();
    let _ = m.proc.0.wait();
    let m = Master::start(&dir, &slow);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let b = finished(&m, "b", 1);
    assert_eq!(b[0]["properties"]["revision"], "r9");
    // Another change after the restart builds once more, not the old one again.
    sendchange(&m, "main", "r10", "src/a.rs");
    let b = finished(&m, "b", 2);
    let revs: Vec<&str> = b
        .iter()
        .filter_map(|x| x["properties"]["revision"].as_str())
        .collect();
    assert_eq!(revs.iter().filter(|r| **r == "r9").count(), 1, "{revs:?}");
    assert!(revs.contains(&"r10"), "{revs:?}");
}

#[test]
fn cancelling_a_waiting_parent_cancels_its_triggered_builds() {
    let dir = temp_dir("sched-trigger-cancel");
    write_secret(&dir, "w1", "pw-one-1234");
    let m = Master::start(
        &dir,
        r#"worker "w1" password=(secret)"w1" max-builds=4
scheduler "force" kind="force" {
    builders "parent"
}
scheduler "kids" kind="triggerable" {
    builders "child" "child2"
}
builder "parent" {
    workers "w1"
    steps {
        trigger "kids" wait=#true
    }
}
builder "child" {
    workers "w1"
    steps {
        shell "echo child-running; sleep 60"
    }
}
builder "child2" {
    workers "w1"
    steps {
        shell "echo child2-running; sleep 60"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    let (status, body) =
        crate::common::http("POST", &m.http, "/api/v1/builders/parent/force", Some("{}"));
    assert_eq!(status, 201, "{body}");
    // Wait until both children run their long command.
    let kids = wait_for("both children to run", || {
        let b = builds(&m, "child");
        let b2 = builds(&m, "child2");
        let (c, c2) = (b.first()?.clone(), b2.first()?.clone());
        let started = |x: &serde_json::Value| {
            let id = x["id"].as_u64().unwrap_or(0);
            crate::common::http(
                "GET",
                &m.http,
                &format!("/api/v1/builds/{id}/steps/0/log"),
                None,
            )
            .1
            .contains("running")
        };
        (started(&c) && started(&c2)).then_some((c["id"].as_u64()?, c2["id"].as_u64()?))
    });
    let parent = builds(&m, "parent")[0]["id"].as_u64().unwrap_or(0);
    let (status, body) = crate::common::http(
        "POST",
        &m.http,
        &format!("/api/v1/builds/{parent}/cancel"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    for id in [kids.0, kids.1, parent] {
        let b = wait_for("the build to end", || {
            let b = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
            (b["complete"] == true).then_some(b)
        });
        assert_eq!(b["result"], "cancelled", "{b}");
    }
}

/// A real push: a commit in a real repository, seen by the git poller,
/// scheduled by a single-branch scheduler, built once at that commit.
#[test]
fn a_git_push_builds_once_at_its_commit() {
    let repo = temp_dir("push-repo");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("f.txt"), "1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let dir = temp_dir("push");
    write_secret(&dir, "w1", "pw-one-1234");
    let cfg = format!(
        r#"worker "w1" password=(secret)"w1"
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
    workers "w1"
    steps {{
        git repo="{repo}"
        shell "cat f.txt; echo at=${{{{ prop.got_revision }}}}"
    }}
}}
"#,
        repo = repo.display()
    );
    let m = Master::start(&dir, &cfg);
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    // The start-up poll records the current head without building it.
    wait_for("the first poll", || {
        let v = get_json(&m.http, "/api/v1/change_sources/repo");
        v["change_source"]["status"]["last_success_at"]
            .as_i64()
            .map(|_| ())
    });
    std::fs::write(repo.join("f.txt"), "2\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "second"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let (status, body) =
        crate::common::http("POST", &m.http, "/api/v1/change_sources/repo/poll", None);
    assert_eq!(status, 200, "{body}");
    let b = finished(&m, "b", 1);
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["result"], "success", "{}", b[0]);
    assert_eq!(b[0]["properties"]["got_revision"], sha.as_str());
    assert_eq!(b[0]["properties"]["revision"], sha.as_str());
    let id = b[0]["id"].as_u64().unwrap_or(0);
    let (_, log) = crate::common::http(
        "GET",
        &m.http,
        &format!("/api/v1/builds/{id}/steps/1/log"),
        None,
    );
    assert!(
        log.contains("2\n") && log.contains(&format!("at={sha}")),
        "{log}"
    );
    // Polling again finds nothing new: still one build.
    let (status, _) =
        crate::common::http("POST", &m.http, "/api/v1/change_sources/repo/poll", None);
    assert_eq!(status, 200);
    assert_eq!(builds(&m, "b").len(), 1);
}
