//! Builds tied to their changes, and a CLI that tells green from red
//! (issue 13), on a real master and worker with a real git repository:
//! a build names its reason, source and the changes that caused it; a
//! change names its builds; `bbc status` shows each builder's last
//! result; `force --wait` prints the steps and the builder's number;
//! `--format json` for `status`, `force` and `list`.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::common::{
    bbc, get_json, git, http, stderr, stdout, temp_dir, wait_for, write_secret, Master,
};

fn config(repo: &Path) -> String {
    format!(
        r#"worker "w" password=(secret)"w" max-builds=2
scheduler "force" kind="force" {{
    builders "g" "red"
}}
scheduler "ci" kind="single-branch" {{
    branch "main"
    tree-stable-timer "100ms"
    builders "g"
}}
builder "g" {{
    workers "w"
    steps {{
        git repo="{}" branch="main" mode="full" method="fresh"
        shell "cat hello.txt" name="show"
    }}
}}
builder "red" {{
    workers "w"
    steps {{
        shell "echo going red; exit 3" name="break"
    }}
}}
"#,
        repo.display()
    )
}

fn cli(m: &Master, args: &[&str]) -> Output {
    bbc()
        .args(args)
        .arg("--url")
        .arg(format!("http://{}", m.http))
        .env_remove("BBC_TOKEN")
        .env_remove("BBC_CA")
        .env_remove("BBC_URL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn json_out(o: &Output) -> Value {
    serde_json::from_str(&stdout(o))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(o), stderr(o)))
}

/// A repository with one commit by Ada; its hash.
fn repo_with_commit(repo: &Path) -> String {
    std::fs::create_dir_all(repo).unwrap_or_else(|e| panic!("{e}"));
    git(repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "v1\n").unwrap_or_else(|e| panic!("{e}"));
    git(repo, &["add", "."]);
    git(
        repo,
        &["commit", "-q", "-m", "Add the widget\n\nA longer body."],
    );
    git(repo, &["rev-parse", "HEAD"])
}

/// Stores a change through the API; its id.
fn add_change(m: &Master, body: &Value) -> u64 {
    let (st, resp) = http("POST", &m.http, "/api/v1/changes", Some(&body.to_string()));
    assert_eq!(st, 201, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap_or_default();
    v["change"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no change id in {v}"))
}

/// The position of `needle` in `hay`, failing the test when absent.
fn at(hay: &str, needle: &str) -> usize {
    hay.find(needle)
        .unwrap_or_else(|| panic!("no `{needle}` in:\n{hay}"))
}

#[test]
fn builds_name_their_changes_and_the_cli_tells_green_from_red() {
    let dir = temp_dir("views");
    let repo = dir.join("repo");
    let sha = repo_with_commit(&repo);
    write_secret(&dir, "w", "pw-views");
    let m = Master::start(&dir, &config(&repo));
    let _w = m.worker("w", "pw-views");
    m.wait_connected("w");

    // A change (as a poller or webhook would store it) starts a build.
    let body = serde_json::json!({
        "repository": repo.display().to_string(), "branch": "main", "revision": sha,
        "author": "Ada <ada@example.org>", "comments": "Add the widget\n\nA longer body.",
        "files": ["hello.txt"],
    });
    let (st, resp) = http("POST", &m.http, "/api/v1/changes", Some(&body.to_string()));
    assert_eq!(st, 201, "{resp}");
    let change: Value = serde_json::from_str(&resp).unwrap_or_default();
    let cid = change["change"]["id"].as_u64().unwrap_or_default();
    let b = wait_for("the change's build to finish", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=g");
        let b = v["builds"].as_array()?.first()?.clone();
        (b["complete"] == true).then_some(b)
    });
    assert_eq!(b["result"], "success", "{b}");
    let o = &b["origin"];
    assert_eq!(o["scheduler"], "ci", "{o}");
    assert_eq!(o["branch"], "main", "{o}");
    assert_eq!(o["revision"], sha.as_str(), "{o}");
    assert_eq!(o["got_revision"], sha.as_str(), "{o}");
    assert_eq!(o["repository"], repo.display().to_string(), "{o}");
    let c = &o["changes"][0];
    assert_eq!(c["id"], cid, "{o}");
    assert_eq!(c["author"], "Ada <ada@example.org>", "{o}");
    assert_eq!(c["revision"], sha.as_str(), "{o}");
    assert_eq!(c["title"], "Add the widget", "{o}");
    // A local path has no web page.
    assert_eq!(c["link"], Value::Null, "{o}");
    assert_eq!(o["changes"].as_array().map(Vec::len), Some(1), "{o}");
    let bid = b["id"].as_u64().unwrap_or_default();
    // One build's page says the same.
    let one = get_json(&m.http, &format!("/api/v1/builds/{bid}"));
    assert_eq!(one["build"]["origin"], *o);

    // The change names its build, alone and in the list.
    let ch = get_json(&m.http, &format!("/api/v1/changes/{cid}"));
    let builds = &ch["change"]["builds"];
    assert_eq!(builds[0]["id"], bid, "{ch}");
    assert_eq!(builds[0]["builder"], "g", "{ch}");
    assert_eq!(builds[0]["number"], 1, "{ch}");
    assert_eq!(builds[0]["result"], "success", "{ch}");
    assert_eq!(ch["change"]["builds_complete"], true, "{ch}");
    let list = get_json(&m.http, "/api/v1/changes");
    assert_eq!(list["changes"][0]["builds"][0]["id"], bid, "{list}");
    // Unknown and malformed ids are precise errors.
    let (st, v) = http("GET", &m.http, "/api/v1/changes/999999", None);
    assert_eq!(st, 404, "{v}");
    assert!(v.contains("no change 999999"), "{v}");
    let (st, v) = http("GET", &m.http, "/api/v1/changes/abc", None);
    assert_eq!(st, 400, "{v}");
    assert!(v.contains("\"error\""), "{v}");

    // A change on a forge links to its commit, and no build has it yet.
    let body = serde_json::json!({
        "repository": "https://github.com/o/r.git", "branch": "other", "revision": "abc123",
        "author": "Bo", "comments": "elsewhere",
    });
    let (st, resp) = http("POST", &m.http, "/api/v1/changes", Some(&body.to_string()));
    assert_eq!(st, 201, "{resp}");
    let id2 = serde_json::from_str::<Value>(&resp).unwrap_or_default()["change"]["id"].clone();
    let ch = get_json(&m.http, &format!("/api/v1/changes/{id2}"));
    assert_eq!(
        ch["change"]["link"], "https://github.com/o/r/commit/abc123",
        "{ch}"
    );
    assert_eq!(ch["change"]["builds"], serde_json::json!([]), "{ch}");

    // `force --wait`: the steps as they start and end, the builder's number.
    let f = cli(&m, &["force", "g", "--wait", "--reason", "try it"]);
    let out = stdout(&f);
    assert!(f.status.success(), "{out}{}", stderr(&f));
    let start = at(&out, "g #2 started on w (build id ");
    let reason = at(&out, ": try it");
    let s1 = at(&out, "g #2: step show started");
    let s2 = at(&out, "g #2: step show success (");
    let end = at(&out, "g #2: success");
    assert!(
        start < reason && reason < s1 && s1 < s2 && s2 < end,
        "{out}"
    );
    // A forced build and a commit build look different in the list.
    let v = get_json(&m.http, "/api/v1/builds?builder=g");
    let (newest, older) = (&v["builds"][0]["origin"], &v["builds"][1]["origin"]);
    assert_eq!(newest["reason"], "try it", "{v}");
    assert_eq!(newest["scheduler"], "force", "{v}");
    assert_eq!(newest["changes"], serde_json::json!([]), "{v}");
    assert_eq!(older["scheduler"], "ci", "{v}");
    assert_ne!(newest["reason"], older["reason"], "{v}");

    // Red: the exit status says so, and so does the output.
    let f = cli(&m, &["force", "red", "--wait"]);
    let out = stdout(&f);
    assert!(!f.status.success(), "{out}");
    at(&out, "red #1: step break failure (");
    at(&out, "red #1: failure");

    // `status`: each builder's last build and its result.
    let s = cli(&m, &["status"]);
    let out = stdout(&s);
    assert!(s.status.success(), "{out}{}", stderr(&s));
    at(&out, "  g: #2 success, finished ");
    at(&out, "s ago: try it");
    at(&out, "  red: #1 failure, finished ");
    let s = cli(&m, &["status", "--format", "json"]);
    assert!(s.status.success(), "{}", stderr(&s));
    let v = json_out(&s);
    let by_name = |n: &str| {
        v["builders"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["name"] == n).cloned())
            .unwrap_or_else(|| panic!("no builder {n} in {v}"))
    };
    assert_eq!(by_name("g")["last_build"]["number"], 2, "{v}");
    assert_eq!(by_name("g")["last_build"]["result"], "success", "{v}");
    assert_eq!(by_name("red")["last_build"]["result"], "failure", "{v}");
    assert_eq!(v["workers"][0]["name"], "w", "{v}");
    assert_eq!(v["running"], serde_json::json!([]), "{v}");

    // `force --format json`: the request, or with --wait the build.
    let f = cli(&m, &["force", "g", "--format", "json"]);
    assert!(f.status.success(), "{}", stderr(&f));
    let v = json_out(&f);
    assert_eq!(v["requests"][0]["builder"], "g", "{v}");
    let set = v["buildset"]["id"].as_u64().unwrap_or_default();
    m.wait_buildset(set);
    let f = cli(&m, &["force", "red", "--wait", "--format", "json"]);
    assert!(!f.status.success());
    let v = json_out(&f);
    assert_eq!(v["result"], "failure", "{v}");
    assert_eq!(v["build"]["number"], 2, "{v}");
    assert_eq!(v["build"]["builder"], "red", "{v}");
    assert_eq!(v["build"]["steps"][0]["result"], "failure", "{v}");

    // `list --format json` reads the config, no master needed.
    let cfg = dir.join("master.kdl");
    let o = bbc()
        .args(["list", "builders"])
        .arg(&cfg)
        .args(["--format", "json"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v[0]["name"], "g", "{v}");
    assert_eq!(v[0]["workers"], serde_json::json!(["w"]), "{v}");
    assert_eq!(v[1]["name"], "red", "{v}");
    let o = bbc()
        .args(["list", "schedulers"])
        .arg(&cfg)
        .args(["--format", "json"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let v = json_out(&o);
    let ci = v
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "ci").cloned())
        .unwrap_or_default();
    assert_eq!(ci["builders"], serde_json::json!(["g"]), "{v}");
}

/// The web UI in a real browser: the build page shows the revision,
/// branch, reason and changes; build lists tell a forced build from a
/// commit build; the changes page links each change to its builds, and
/// to its commit only by a web address.
#[test]
fn pages_tie_builds_to_their_changes() {
    let Some(browser) = crate::test_web::chromium() else {
        return;
    };
    let dir = temp_dir("views-web");
    let repo = dir.join("repo");
    let sha = repo_with_commit(&repo);
    write_secret(&dir, "w", "pw-views-web");
    let m = Master::start(&dir, &config(&repo));
    let _w = m.worker("w", "pw-views-web");
    m.wait_connected("w");
    let cid = add_change(
        &m,
        &serde_json::json!({
            "repository": repo.display().to_string(), "branch": "main", "revision": sha,
            "author": "Ada <ada@example.org>", "comments": "Add the widget\n\nA longer body.",
        }),
    );
    let commit_build = wait_for("the change's build to finish", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=g");
        let b = v["builds"].as_array()?.first()?.clone();
        (b["complete"] == true).then_some(b)
    });
    let forced = m.force_and_wait("g", r#"{"reason": "forced-from-test"}"#);
    assert_eq!(forced["result"], "success", "{forced}");
    add_change(
        &m,
        &serde_json::json!({
            "repository": "https://gitea.example/o/r.git", "branch": "topic",
            "revision": "abc123", "author": "Bo", "comments": "on a forge",
        }),
    );
    add_change(
        &m,
        &serde_json::json!({
            "repository": "/srv/r", "branch": "topic", "revision": "def456",
            "author": "Eve", "comments": "sneaky",
            "properties": {"pr_url": "javascript:alert(1)"},
        }),
    );
    let profile = dir.join("chromium");
    let base = format!("http://{}/", m.http);
    let short = &sha[..10];

    // The list: reason, branch and revision columns; the two builds differ.
    let dom = crate::test_web::dump_dom(&browser, &profile, &format!("{base}#/builds"));
    assert!(
        dom.contains("<th>reason</th><th>branch</th><th>revision</th>"),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<span class="reason">forced-from-test</span>"#),
        "{dom}"
    );
    let reason = commit_build["origin"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(!reason.is_empty(), "{commit_build}");
    assert!(
        dom.contains(&format!(r#"<span class="reason">{reason}</span>"#)),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            r#"<td>main</td><td><code class="rev" title="{sha}">{short}</code></td>"#
        )),
        "{dom}"
    );

    // The commit build's page: revision, branch, reason and its change.
    let id = commit_build["id"].as_u64().unwrap_or_default();
    let dom = crate::test_web::dump_dom(&browser, &profile, &format!("{base}#/builds/{id}"));
    assert!(
        dom.contains(&format!(r#"<dd class="revision">{sha}</dd>"#)),
        "{dom}"
    );
    assert!(dom.contains(r#"<dd class="branch">main</dd>"#), "{dom}");
    assert!(
        dom.contains(&format!(r#"<dd class="reason">{reason}</dd>"#)),
        "{dom}"
    );
    assert!(dom.contains("Ada &lt;ada@example.org&gt;"), "{dom}");
    assert!(
        dom.contains(r#"<span class="title">Add the widget</span>"#),
        "{dom}"
    );
    assert!(!dom.contains("A longer body"), "{dom}");

    // The forced build's page says no commit started it.
    let fid = forced["id"].as_u64().unwrap_or_default();
    let dom = crate::test_web::dump_dom(&browser, &profile, &format!("{base}#/builds/{fid}"));
    assert!(
        dom.contains(r#"<dd class="reason">forced-from-test</dd>"#),
        "{dom}"
    );
    assert!(
        dom.contains("No changes: this build was not started by a commit."),
        "{dom}"
    );

    // The changes page: each change's builds, forge commits linked, and a
    // `javascript:` address never a link.
    let dom = crate::test_web::dump_dom(&browser, &profile, &format!("{base}#/changes"));
    assert!(
        dom.contains(&format!(
            r##"<a href="#/builds/{id}">g #1</a> <span class="result success">success</span>"##
        )),
        "change {cid} does not link its build: {dom}"
    );
    assert!(
        dom.contains(r#"<a href="https://gitea.example/o/r/commit/abc123">abc123</a>"#),
        "{dom}"
    );
    assert!(!dom.contains("javascript:"), "{dom}");
    assert!(dom.contains("<td>def456</td>"), "{dom}");
    assert!(
        dom.contains(r#"<span class="muted">no builds</span>"#),
        "{dom}"
    );
}
