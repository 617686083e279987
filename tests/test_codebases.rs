//! Codebases (issue 14): one build set spanning two repositories, fed by
//! two git pollers on real local repositories, checked out by two git
//! steps on a real worker; and requests collapsing only when their
//! codebases agree.

use std::path::Path;

use crate::common::{get_json, git, http, temp_dir, wait_for, write_secret, Master};

fn commit(repo: &Path, file: &str, text: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap_or_else(|e| panic!("{e}"));
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", text.trim()]);
    git(repo, &["rev-parse", "HEAD"])
}

fn builds(m: &Master, builder: &str) -> Vec<serde_json::Value> {
    get_json(&m.http, &format!("/api/v1/builds?builder={builder}"))["builds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `n`th build of `builder` (1-based), once it has finished.
fn finished(m: &Master, builder: &str, n: usize) -> serde_json::Value {
    wait_for(&format!("build {n} of {builder} to finish"), || {
        builds(m, builder)
            .into_iter()
            .find(|b| b["number"] == n as u64 && b["complete"] == true)
    })
}

fn poll(m: &Master, source: &str) {
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/change_sources/{source}/poll"),
        None,
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_scheduler_with_two_codebases_builds_both_from_two_pollers() {
    let root = temp_dir("codebases-repos");
    let (app, lib) = (root.join("app"), root.join("lib"));
    for r in [&app, &lib] {
        std::fs::create_dir_all(r).unwrap_or_else(|e| panic!("{e}"));
        git(r, &["init", "-q", "-b", "main"]);
    }
    commit(&app, "app.txt", "app 1\n");
    let lib1 = commit(&lib, "lib.txt", "lib 1\n");
    let dir = temp_dir("codebases");
    write_secret(&dir, "w", "pw-codebases-1");
    let cfg = format!(
        r#"worker "w" password=(secret)"w"
change-source "app" kind="git-poller" {{
    repo "{app}"
    branches "main"
    poll-interval "1h"
    codebase "app"
}}
change-source "lib" kind="git-poller" {{
    repo "{lib}"
    branches "main"
    poll-interval "1h"
    codebase "lib"
}}
scheduler "ci" kind="single-branch" {{
    branch "main"
    codebase "app" repository="{app}"
    codebase "lib" repository="{lib}"
    builders "b"
}}
builder "b" {{
    workers "w"
    steps {{
        git repo="{app}" codebase="app" workdir="build/app" name="app"
        git repo="{lib}" codebase="lib" workdir="build/lib" name="lib"
        shell "cat app/app.txt lib/lib.txt" name="show"
    }}
}}
"#,
        app = app.display(),
        lib = lib.display()
    );
    let m = Master::start(&dir, &cfg);
    let _w = m.worker("w", "pw-codebases-1");
    m.wait_connected("w");
    // The start-up polls record the heads without building them.
    for s in ["app", "lib"] {
        wait_for(&format!("the first poll of {s}"), || {
            get_json(&m.http, &format!("/api/v1/change_sources/{s}"))["change_source"]["status"]
                ["last_success_at"]
                .as_i64()
        });
    }
    // A push to app: one build of both, app at the push, lib at its head.
    let app2 = commit(&app, "app.txt", "app 2\n");
    poll(&m, "app");
    let b = finished(&m, "b", 1);
    assert_eq!(b["result"], "success", "{b}");
    let p = &b["properties"];
    assert_eq!(p["got_revision.app"], app2.as_str(), "{p}");
    assert_eq!(p["got_revision.lib"], lib1.as_str(), "{p}");
    // The default codebase is the first the scheduler names.
    assert_eq!(p["got_revision"], app2.as_str(), "{p}");
    assert_eq!(
        (&p["codebase"], &p["revision"]),
        (&"app".into(), &app2.as_str().into())
    );
    let sources = &b["origin"]["sources"];
    assert_eq!(sources[0]["codebase"], "app", "{sources}");
    assert_eq!(sources[0]["revision"], app2.as_str(), "{sources}");
    assert_eq!(sources[1]["codebase"], "lib", "{sources}");
    assert_eq!(
        sources[1]["revision"], "",
        "lib untouched: its head: {sources}"
    );
    assert_eq!(sources[1]["got_revision"], lib1.as_str(), "{sources}");
    let id = b["id"].as_u64().unwrap_or_default();
    let show = m.log(id, 2);
    assert!(show.contains("app 2") && show.contains("lib 1"), "{show}");
    // App moves on unseen (no poll); then a push to lib: the build takes
    // lib at the push and app at its branch's head, the unseen commit.
    let app3 = commit(&app, "app.txt", "app 3\n");
    let lib2 = commit(&lib, "lib.txt", "lib 2\n");
    poll(&m, "lib");
    let b = finished(&m, "b", 2);
    assert_eq!(b["result"], "success", "{b}");
    let p = &b["properties"];
    assert_eq!(p["got_revision.lib"], lib2.as_str(), "{p}");
    assert_eq!(p["got_revision.app"], app3.as_str(), "{p}");
    let sources = &b["origin"]["sources"];
    assert_eq!(sources[0]["revision"], "", "{sources}");
    assert_eq!(sources[1]["revision"], lib2.as_str(), "{sources}");
    let id = b["id"].as_u64().unwrap_or_default();
    let show = m.log(id, 2);
    assert!(show.contains("app 3") && show.contains("lib 2"), "{show}");
    // A rebuild pins both codebases at what build 2 checked out, though
    // app has moved on again.
    commit(&app, "app.txt", "app 4\n");
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/builds/{id}/rebuild"),
        None,
    );
    assert_eq!(status, 201, "{body}");
    let b = finished(&m, "b", 3);
    let p = &b["properties"];
    assert_eq!(p["got_revision.app"], app3.as_str(), "{p}");
    assert_eq!(p["got_revision.lib"], lib2.as_str(), "{p}");
}

/// Changes through the API naming their codebase; the worker connects
/// once every set is queued, so the queue sees them all at once.
#[test]
fn requests_collapse_only_when_their_codebases_agree() {
    let dir = temp_dir("codebases-collapse");
    write_secret(&dir, "w", "pw-codebases-2");
    let cfg = r#"worker "w" password=(secret)"w"
scheduler "both" kind="single-branch" {
    branch "main"
    codebase "app" repository="https://example.org/app.git"
    codebase "lib" repository="https://example.org/lib.git"
    builders "b"
}
scheduler "app-only" kind="single-branch" {
    branch "main"
    codebase "app" repository="https://example.org/app.git"
    builders "b"
}
builder "b" {
    workers "w"
    steps {
        shell "echo ${{ prop.scheduler }}"
    }
}
"#;
    let m = Master::start(&dir, cfg);
    let change = |codebase: &str, rev: &str| {
        let body = format!(
            r#"{{"branch": "main", "revision": "{rev}", "codebase": "{codebase}", "repository": "https://example.org/{codebase}.git"}}"#
        );
        let (status, out) = http("POST", &m.http, "/api/v1/changes", Some(&body));
        assert!(status == 200 || status == 201, "{status} {out}");
    };
    change("app", "a1");
    change("lib", "l1");
    // A change of a codebase neither scheduler names starts nothing.
    change("doc", "d1");
    // both: two sets (app@a1, lib@l1); app-only: one set (app@a1).
    let requests = wait_for("three pending requests", || {
        let r = get_json(&m.http, "/api/v1/requests?builder=b&state=pending")["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (r.len() >= 3).then_some(r)
    });
    assert_eq!(requests.len(), 3, "{requests:?}");
    let _w = m.worker("w", "pw-codebases-2");
    m.wait_connected("w");
    // One build for both of `both`'s sets (same codebases, repositories
    // and branches), another for app-only's (one codebase fewer).
    let done = wait_for("every request complete", || {
        let r = get_json(&m.http, "/api/v1/requests?builder=b")["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (r.len() == 3 && r.iter().all(|x| x["state"] == "complete")).then_some(r)
    });
    let mut ran: Vec<u64> = done.iter().filter_map(|r| r["build"].as_u64()).collect();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran.len(), 2, "{done:?}");
    let collapsed = done.iter().filter(|r| r["collapsed_into"].is_u64()).count();
    assert_eq!(collapsed, 1, "{done:?}");
    let all = builds(&m, "b");
    assert_eq!(all.len(), 2, "{all:?}");
    let schedulers: Vec<&str> = all
        .iter()
        .filter_map(|b| b["properties"]["scheduler"].as_str())
        .collect();
    assert!(
        schedulers.contains(&"both") && schedulers.contains(&"app-only"),
        "{schedulers:?}"
    );
}
