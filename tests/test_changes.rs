//! Change sources against real processes: git pollers on real repositories
//! made in temporary directories, and webhook deliveries (payloads shaped
//! like the forges' documented examples, in `tests/fixtures/webhooks/`)
//! signed as the forges sign them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{get_json, http, root, temp_dir, wait_for, write_secret, Master};

// --- a git repository to poll

struct Repo {
    dir: PathBuf,
    /// Commit dates advance by a minute per commit, from a fixed start,
    /// so `when` is predictable.
    clock: std::cell::Cell<i64>,
}

const AUTHOR: &str = "Ada Lovelace <ada@example.org>";
const COMMITTER: &str = "Charles Babbage <charles@example.org>";

impl Repo {
    fn new(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).unwrap();
        let r = Repo {
            dir: dir.to_path_buf(),
            clock: std::cell::Cell::new(1_700_000_000),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git(&self, args: &[&str]) -> String {
        let date = format!("{} +0000", self.clock.get());
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            // The host's git configuration must not matter (signing,
            // hooks, default branch).
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ada Lovelace")
            .env("GIT_AUTHOR_EMAIL", "ada@example.org")
            .env("GIT_COMMITTER_NAME", "Charles Babbage")
            .env("GIT_COMMITTER_EMAIL", "charles@example.org")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commits `files` (each given new content) on the checked-out branch;
    /// returns the commit's sha.
    fn commit(&self, files: &[&str], msg: &str) -> String {
        self.clock.set(self.clock.get() + 60);
        for f in files {
            let p = self.dir.join(f);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(&p, format!("{msg} {}\n", self.clock.get())).unwrap();
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn checkout(&self, branch: &str) {
        self.git(&["checkout", "-q", branch]);
    }

    /// The commit time of `sha`, in ms.
    fn when(&self, sha: &str) -> i64 {
        self.git(&["show", "-s", "--format=%ct", sha])
            .parse::<i64>()
            .unwrap()
            * 1000
    }
}

fn poller_config(repo: &Path, name: &str, body: &str) -> String {
    format!(
        "change-source \"{name}\" kind=\"git-poller\" {{\n    repo \"{}\"\n{body}    poll-interval \"1h\"\n}}\n",
        repo.display()
    )
}

/// Triggers a poll and returns the ids of the changes it stored.
fn poll(m: &Master, name: &str) -> Vec<u64> {
    let (status, body) = http(
        "POST",
        &m.http,
        &format!("/api/v1/change_sources/{name}/poll"),
        None,
    );
    assert_eq!(status, 200, "poll {name}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Every stored change, oldest first.
fn changes(m: &Master) -> Vec<Value> {
    let v = get_json(&m.http, "/api/v1/changes?limit=1000");
    let mut list = v["changes"].as_array().unwrap().clone();
    list.reverse();
    list
}

/// Waits until `n` changes are stored and checks there are no more.
fn wait_changes(m: &Master, n: usize) -> Vec<Value> {
    let list = wait_for(&format!("{n} change(s)"), || {
        let c = changes(m);
        (c.len() >= n).then_some(c)
    });
    assert_eq!(list.len(), n, "{list:#?}");
    list
}

fn source(m: &Master, name: &str) -> Value {
    get_json(&m.http, &format!("/api/v1/change_sources/{name}"))["change_source"].clone()
}

/// Waits for the poll the master makes when it starts.
fn wait_first_poll(m: &Master, name: &str) -> Value {
    wait_for("the first poll", || {
        let s = source(m, name);
        s["status"]["last_success_at"].as_i64().map(|_| s)
    })
}

fn revisions(list: &[Value]) -> Vec<&str> {
    list.iter()
        .map(|c| c["revision"].as_str().unwrap())
        .collect()
}

#[test]
fn git_poller_reports_new_commits_on_watched_branches() {
    let dir = temp_dir("poller-branches");
    let repo = Repo::new(&dir.join("repo"));
    repo.commit(&["README"], "first");
    let c2 = repo.commit(&["README"], "second");
    repo.git(&["checkout", "-q", "-b", "other"]);
    let c3 = repo.commit(&["other.txt"], "on other");
    repo.checkout("main");
    let m = Master::start(
        &dir,
        &poller_config(&repo.dir, "repo", "    branches \"main\" \"release/*\"\n"),
    );

    // First start: the heads are recorded, old history is no news.
    let s = wait_first_poll(&m, "repo");
    assert_eq!(s["heads"]["main"], c2.as_str(), "{s}");
    assert_eq!(s["heads"]["other"], c3.as_str(), "{s}");
    assert!(poll(&m, "repo").is_empty());
    assert!(changes(&m).is_empty());

    // One commit: one change with the commit's details.
    let c4 = repo.commit(
        &["a.txt", "dir/b.txt"],
        "Add a and b\n\nA longer explanation\nover two lines.",
    );
    let ids = poll(&m, "repo");
    assert_eq!(ids.len(), 1);
    let list = wait_changes(&m, 1);
    let c = &list[0];
    assert_eq!(c["id"], ids[0]);
    assert_eq!(c["revision"], c4.as_str());
    assert_eq!(c["branch"], "main");
    assert_eq!(c["source"], "repo");
    assert_eq!(c["repository"], repo.dir.display().to_string());
    assert_eq!(c["author"], AUTHOR);
    assert_eq!(c["committer"], COMMITTER);
    assert_eq!(
        c["comments"],
        "Add a and b\n\nA longer explanation\nover two lines."
    );
    assert_eq!(c["files"], serde_json::json!(["a.txt", "dir/b.txt"]));
    assert_eq!(c["when"], repo.when(&c4));
    assert_eq!(c["properties"]["event"], "push");

    // Two commits: two changes, oldest first.
    let c5 = repo.commit(&["a.txt"], "five");
    let c6 = repo.commit(&["b.txt"], "six");
    assert_eq!(poll(&m, "repo").len(), 2);
    let list = wait_changes(&m, 3);
    assert_eq!(revisions(&list[1..]), [c5.as_str(), c6.as_str()]);
    assert_eq!(list[2]["files"], serde_json::json!(["b.txt"]));

    // A branch nobody watches: no change, but its head is tracked.
    repo.checkout("other");
    let c7 = repo.commit(&["other.txt"], "seven");
    assert!(poll(&m, "repo").is_empty());
    assert_eq!(source(&m, "repo")["heads"]["other"], c7.as_str());

    // A new branch matching `release/*`: only the commit it adds.
    repo.git(&["checkout", "-q", "-b", "release/1.0", "main"]);
    let c8 = repo.commit(&["version"], "release 1.0");
    assert_eq!(poll(&m, "repo").len(), 1);
    let list = wait_changes(&m, 4);
    assert_eq!(list[3]["revision"], c8.as_str());
    assert_eq!(list[3]["branch"], "release/1.0");

    // A new matching branch at a known commit: one change for its head.
    repo.git(&["branch", "release/2.0", "main"]);
    // `*` stays within a segment: release/old/x is not watched.
    repo.git(&["branch", "release/old/x", "main"]);
    assert_eq!(poll(&m, "repo").len(), 1);
    let list = wait_changes(&m, 5);
    assert_eq!(list[4]["revision"], c6.as_str());
    assert_eq!(list[4]["branch"], "release/2.0");

    // A deleted branch leaves the state; nothing is reported.
    repo.checkout("main");
    repo.git(&["branch", "-D", "release/1.0"]);
    assert!(poll(&m, "repo").is_empty());
    let heads = source(&m, "repo")["heads"].clone();
    assert!(heads.get("release/1.0").is_none(), "{heads}");
    assert_eq!(heads["release/2.0"], c6.as_str());
    wait_changes(&m, 5);
}

#[test]
fn git_poller_force_push_reports_only_new_commits() {
    let dir = temp_dir("poller-force");
    let repo = Repo::new(&dir.join("repo"));
    let a = repo.commit(&["f"], "a");
    repo.commit(&["f"], "b");
    repo.commit(&["f"], "c");
    let m = Master::start(&dir, &poller_config(&repo.dir, "repo", ""));
    wait_first_poll(&m, "repo");
    // Rewrite history: b and c are gone, d and e are new.
    repo.git(&["reset", "-q", "--hard", &a]);
    let d = repo.commit(&["g"], "d");
    let e = repo.commit(&["g"], "e");
    assert_eq!(poll(&m, "repo").len(), 2);
    let list = wait_changes(&m, 2);
    assert_eq!(revisions(&list), [d.as_str(), e.as_str()]);
    assert_eq!(source(&m, "repo")["heads"]["main"], e.as_str());
    // Moving the branch back to a commit already seen reports nothing.
    repo.git(&["reset", "-q", "--hard", &d]);
    assert!(poll(&m, "repo").is_empty());
    wait_changes(&m, 2);
}

#[test]
fn git_poller_survives_an_unreachable_repository() {
    let dir = temp_dir("poller-unreachable");
    let repo = Repo::new(&dir.join("repo"));
    repo.commit(&["f"], "a");
    let m = Master::start_logged(&dir, &poller_config(&repo.dir, "repo", ""));
    let log = dir.join("master.log");
    wait_first_poll(&m, "repo");

    let away = dir.join("repo-away");
    std::fs::rename(&repo.dir, &away).unwrap();
    for n in 1..=2 {
        let (status, body) = http("POST", &m.http, "/api/v1/change_sources/repo/poll", None);
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("git fetch failed"), "{body}");
        let s = source(&m, "repo")["status"].clone();
        assert_eq!(s["consecutive_failures"], n, "{s}");
        assert!(s["last_error"].as_str().unwrap().contains("fetch"), "{s}");
        assert_eq!(s["running"], true);
    }
    // The master keeps serving.
    assert!(get_json(&m.http, "/api/v1")["title"].is_string());
    wait_for("the failure in the log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("polling failed (2 in a row").then_some(())
    });

    // Back again: the poller recovers and reports what it missed.
    std::fs::rename(&away, &repo.dir).unwrap();
    let b = repo.commit(&["f"], "b");
    assert_eq!(poll(&m, "repo").len(), 1);
    assert_eq!(revisions(&wait_changes(&m, 1)), [b.as_str()]);
    let s = source(&m, "repo")["status"].clone();
    assert_eq!(s["consecutive_failures"], 0, "{s}");
    assert!(s["last_error"].is_null(), "{s}");
}

#[test]
fn git_poller_restart_neither_repeats_nor_loses() {
    let dir = temp_dir("poller-restart");
    let repo = Repo::new(&dir.join("repo"));
    repo.commit(&["f"], "a");
    let config = poller_config(&repo.dir, "repo", "");
    let m = Master::start(&dir, &config);
    wait_first_poll(&m, "repo");
    let x = repo.commit(&["f"], "x");
    assert_eq!(poll(&m, "repo").len(), 1);
    drop(m); // SIGKILL: nothing but the store survives.

    let y = repo.commit(&["f"], "y");
    let z = repo.commit(&["g"], "z");
    // The poll at start-up catches up on what was pushed meanwhile.
    let m = Master::start(&dir, &config);
    let list = wait_changes(&m, 3);
    assert_eq!(revisions(&list), [x.as_str(), y.as_str(), z.as_str()]);
    assert!(poll(&m, "repo").is_empty());
    drop(m);

    let m = Master::start(&dir, &config);
    wait_first_poll(&m, "repo");
    assert!(poll(&m, "repo").is_empty());
    wait_changes(&m, 3);
}

#[test]
fn git_poller_only_tags() {
    let dir = temp_dir("poller-tags");
    let repo = Repo::new(&dir.join("repo"));
    repo.commit(&["f"], "a");
    repo.git(&["tag", "v0.1"]);
    let m = Master::start(
        &dir,
        &poller_config(&repo.dir, "tags", "    only-tags #true\n"),
    );
    let s = wait_first_poll(&m, "tags");
    assert!(s["heads"]["v0.1"].is_string(), "{s}");
    // Commits alone are not news for a tag poller.
    let b = repo.commit(&["f"], "b");
    assert!(poll(&m, "tags").is_empty());
    // An annotated tag reports the commit it points to.
    repo.git(&["tag", "-a", "-m", "Version 1.0", "v1.0", &b]);
    let c = repo.commit(&["f"], "c");
    repo.git(&["tag", "v1.1"]);
    assert_eq!(poll(&m, "tags").len(), 2);
    let list = wait_changes(&m, 2);
    assert_eq!(list[0]["branch"], "v1.0");
    assert_eq!(list[0]["revision"], b.as_str());
    assert_eq!(list[0]["comments"], "b");
    assert_eq!(list[1]["branch"], "v1.1");
    assert_eq!(list[1]["revision"], c.as_str());
    assert_eq!(list[1]["properties"]["event"], "tag");
    repo.git(&["tag", "-d", "v0.1"]);
    assert!(poll(&m, "tags").is_empty());
    assert!(source(&m, "tags")["heads"].get("v0.1").is_none());
}

// --- webhooks

/// POST with extra headers; returns the status and the JSON body.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

fn fixture(name: &str) -> String {
    let p = root().join("tests/fixtures/webhooks").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sign(secret: &str, body: &str) -> String {
    bbc_runtime::changes::webhook::hmac_sha256_hex(secret.as_bytes(), body.as_bytes())
}

fn ids(v: &Value) -> Vec<u64> {
    v["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn change(m: &Master, id: u64) -> Value {
    changes(m)
        .into_iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no change {id}"))
}

const HOOKS: &str = r#"change-source "github" kind="github-webhook" {
    secret (secret)"github-hook"
}
change-source "github-open" kind="github-webhook"
change-source "gitlab" kind="gitlab-webhook" {
    secret (secret)"gitlab-hook"
}
change-source "gitea" kind="gitea-webhook" {
    secret (secret)"gitea-hook"
}
change-source "json" kind="json-webhook" {
    secret (secret)"json-hook"
}
change-source "json-open" kind="json-webhook"
"#;

fn hooks_master(name: &str) -> Master {
    let dir = temp_dir(name);
    write_secret(&dir, "github-hook", "It's a Secret to Everybody");
    write_secret(&dir, "gitlab-hook", "gl-token-0123");
    write_secret(&dir, "gitea-hook", "gitea secret");
    write_secret(&dir, "json-hook", "json secret");
    Master::start(&dir, HOOKS)
}

#[test]
fn github_webhook() {
    // The signing helper agrees with GitHub's documented example.
    assert_eq!(
        sign("It's a Secret to Everybody", "Hello, World!"),
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    let m = hooks_master("hook-github");
    let secret = "It's a Secret to Everybody";
    let push = fixture("github-push.json");
    let sig = format!("sha256={}", sign(secret, &push));
    let ev = |e: &'static str| ("X-GitHub-Event", e);

    // Unsigned, wrongly signed, signed with another secret: refused,
    // nothing stored.
    let (st, v) = post(&m.http, "/change_hook/github", &[ev("push")], &push);
    assert_eq!(st, 401, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Hub-Signature-256"));
    let wrong = format!("sha256={}", sign("other", &push));
    for bad in [
        wrong.as_str(),
        "sha256=00",
        "nonsense",
        sig.trim_start_matches("sha256="),
    ] {
        let (st, v) = post(
            &m.http,
            "/change_hook/github",
            &[ev("push"), ("X-Hub-Signature-256", bad)],
            &push,
        );
        assert_eq!(st, 403, "{bad}: {v}");
    }
    // The signature covers the body: the same signature on another body fails.
    let (st, _) = post(
        &m.http,
        "/change_hook/github",
        &[ev("push"), ("X-Hub-Signature-256", &sig)],
        &push.replace("Update README", "Update READYOU"),
    );
    assert_eq!(st, 403);
    assert!(changes(&m).is_empty());

    // A signed push: one change per commit, oldest first.
    let (st, v) = post(
        &m.http,
        "/change_hook/github",
        &[ev("push"), ("X-Hub-Signature-256", &sig)],
        &push,
    );
    assert_eq!(st, 201, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 2);
    let c = change(&m, got[0]);
    assert_eq!(c["source"], "github");
    assert_eq!(c["revision"], "5d2d2bf3e3bc0e1b1a4f2cd1a7a0a2e3c9f0b8a1");
    assert_eq!(c["branch"], "main");
    assert_eq!(
        c["repository"],
        "https://github.com/baxterthehacker/public-repo.git"
    );
    assert_eq!(c["project"], "baxterthehacker/public-repo");
    assert_eq!(
        c["author"],
        "baxterthehacker <baxterthehacker@users.noreply.github.com>"
    );
    assert_eq!(c["committer"], "GitHub <noreply@github.com>");
    assert_eq!(c["comments"], "Update README\n\nExplain the build.");
    assert_eq!(
        c["files"],
        serde_json::json!(["docs/build.md", "README.md"])
    );
    assert_eq!(c["when"], 1_430_869_185_000i64);
    assert_eq!(c["properties"]["event"], "push");
    let c = change(&m, got[1]);
    assert_eq!(c["revision"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert_eq!(c["files"], serde_json::json!(["README.md", "old.sh"]));

    let signed = |event: &'static str, body: &str| {
        let s = format!("sha256={}", sign(secret, body));
        post(
            &m.http,
            "/change_hook/github",
            &[ev(event), ("X-Hub-Signature-256", &s)],
            body,
        )
    };
    // A tag push lists no commits: one change for the head commit, the
    // tag as its branch.
    let mut tag: Value = serde_json::from_str(&push).unwrap();
    tag["ref"] = "refs/tags/v1.2.0".into();
    tag["commits"] = serde_json::json!([]);
    let (st, v) = signed("push", &tag.to_string());
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "v1.2.0");
    assert_eq!(c["revision"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert_eq!(c["properties"]["event"], "tag");
    // A deleted branch: nothing to build.
    let mut del: Value = serde_json::from_str(&push).unwrap();
    del["deleted"] = true.into();
    del["after"] = "0000000000000000000000000000000000000000".into();
    del["commits"] = serde_json::json!([]);
    del["head_commit"] = Value::Null;
    let (st, v) = signed("push", &del.to_string());
    assert_eq!(st, 200, "{v}");
    assert!(ids(&v).is_empty());

    // A pull request: its head commit, with the PR as properties.
    let pr = fixture("github-pull_request.json");
    let (st, v) = signed("pull_request", &pr);
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "changes");
    assert_eq!(c["revision"], "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert_eq!(c["author"], "octocat");
    let p = &c["properties"];
    assert_eq!(p["pr_number"], 42);
    assert_eq!(p["pr_title"], "Update the README with new information");
    assert_eq!(p["pr_author"], "octocat");
    assert_eq!(p["pr_labels"], "bug,ci");
    assert_eq!(p["pr_target_branch"], "main");
    assert_eq!(p["event"], "pull_request");
    assert_eq!(
        p["pr_head_repository"],
        "https://github.com/octocat/public-repo.git"
    );
    for (action, status, stored) in [
        ("synchronize", 201, 1),
        ("labeled", 201, 1),
        ("closed", 200, 0),
        ("assigned", 200, 0),
    ] {
        let body = pr.replacen("\"opened\"", &format!("\"{action}\""), 1);
        let (st, v) = signed("pull_request", &body);
        assert_eq!(st, status, "{action}: {v}");
        assert_eq!(ids(&v).len(), stored, "{action}: {v}");
    }

    // ping, unknown events, malformed payloads.
    let (st, v) = signed("ping", r#"{"zen": "Design for failure.", "hook_id": 1}"#);
    assert_eq!(st, 200, "{v}");
    let (st, v) = signed("issues", r#"{"action": "opened"}"#);
    assert_eq!(st, 202, "{v}");
    assert!(v["ignored"].as_str().unwrap().contains("issues"), "{v}");
    let (st, v) = signed("push", "{not json");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));
    let (st, v) = signed(
        "push",
        &push.replacen(
            "\"id\": \"5d2d2bf3e3bc0e1b1a4f2cd1a7a0a2e3c9f0b8a1\",",
            "",
            1,
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["message"], "missing field `commits[0].id`");
    let (st, v) = signed("pull_request", r#"{"action": "opened", "number": 1}"#);
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("pull_request"));
    let (st, v) = post(
        &m.http,
        "/change_hook/github",
        &[("X-Hub-Signature-256", &sig)],
        &push,
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-GitHub-Event"));
    let before = changes(&m).len();
    assert_eq!(before, 6);

    // A source without a secret takes unsigned deliveries.
    let (st, v) = post(&m.http, "/change_hook/github-open", &[ev("push")], &push);
    assert_eq!(st, 201, "{v}");
    assert_eq!(change(&m, ids(&v)[0])["source"], "github-open");

    // Unknown sources and non-webhook paths.
    let (st, _) = post(&m.http, "/change_hook/nope", &[ev("push")], &push);
    assert_eq!(st, 404);
}

#[test]
fn gitlab_webhook() {
    let m = hooks_master("hook-gitlab");
    let push = fixture("gitlab-push.json");
    let token = ("X-Gitlab-Token", "gl-token-0123");
    let ev = |e: &'static str| ("X-Gitlab-Event", e);
    let (st, _) = post(&m.http, "/change_hook/gitlab", &[ev("Push Hook")], &push);
    assert_eq!(st, 401);
    let (st, _) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Push Hook"), ("X-Gitlab-Token", "gl-token-0124")],
        &push,
    );
    assert_eq!(st, 403);
    assert!(changes(&m).is_empty());

    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Push Hook"), token],
        &push,
    );
    assert_eq!(st, 201, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 2);
    let c = change(&m, got[0]);
    assert_eq!(c["source"], "gitlab");
    assert_eq!(c["branch"], "master");
    assert_eq!(c["revision"], "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327");
    assert_eq!(c["repository"], "http://example.com/mike/diaspora.git");
    assert_eq!(c["project"], "mike/diaspora");
    assert_eq!(c["author"], "Jordi Mallach <jordi@softcatala.org>");
    assert_eq!(
        c["files"],
        serde_json::json!(["CHANGELOG", "app/controller/application.rb"])
    );
    assert_eq!(c["when"], 1_323_692_851_000i64);
    assert_eq!(
        change(&m, got[1])["revision"],
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );

    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Tag Push Hook"), token],
        &fixture("gitlab-tag_push.json"),
    );
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "v1.0.0");
    assert_eq!(c["revision"], "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
    assert_eq!(c["author"], "John Smith <john@example.com>");
    assert_eq!(c["comments"], "Tag message");
    assert_eq!(c["properties"]["event"], "tag");

    let mr = fixture("gitlab-merge_request.json");
    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Merge Request Hook"), token],
        &mr,
    );
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "ms-viewport");
    assert_eq!(c["revision"], "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        c["repository"],
        "http://example.com/awesome_space/awesome_project.git"
    );
    assert_eq!(c["author"], "root");
    let p = &c["properties"];
    assert_eq!(p["pr_number"], 1);
    assert_eq!(p["pr_title"], "MS-Viewport");
    assert_eq!(p["pr_author"], "root");
    assert_eq!(p["pr_labels"], "API,needs-review");
    assert_eq!(p["pr_target_branch"], "master");
    assert_eq!(p["event"], "pull_request");
    let merged = mr.replace("\"action\": \"open\"", "\"action\": \"merge\"");
    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Merge Request Hook"), token],
        &merged,
    );
    assert_eq!(st, 200, "{v}");
    assert!(ids(&v).is_empty());

    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Pipeline Hook"), token],
        "{}",
    );
    assert_eq!(st, 202, "{v}");
    let (st, v) = post(
        &m.http,
        "/change_hook/gitlab",
        &[ev("Push Hook"), token],
        r#"{"ref": "refs/heads/x", "commits": []}"#,
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("project.git_http_url"));
    assert_eq!(changes(&m).len(), 4);
}

#[test]
fn gitea_webhook() {
    let m = hooks_master("hook-gitea");
    let push = fixture("gitea-push.json");
    let ev = |e: &'static str| ("X-Gitea-Event", e);
    let sig = sign("gitea secret", &push);
    let (st, _) = post(&m.http, "/change_hook/gitea", &[ev("push")], &push);
    assert_eq!(st, 401);
    let wrong = sign("gitea secret!", &push);
    let (st, _) = post(
        &m.http,
        "/change_hook/gitea",
        &[ev("push"), ("X-Gitea-Signature", &wrong)],
        &push,
    );
    assert_eq!(st, 403);
    assert!(changes(&m).is_empty());

    let (st, v) = post(
        &m.http,
        "/change_hook/gitea",
        &[ev("push"), ("X-Gitea-Signature", &sig)],
        &push,
    );
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["source"], "gitea");
    assert_eq!(c["branch"], "develop");
    assert_eq!(c["revision"], "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(c["repository"], "http://localhost:3000/gitea/webhooks.git");
    assert_eq!(c["author"], "Gitea <someone@gitea.io>");
    assert_eq!(c["comments"], "Webhooks Yay!");
    // `removed` is null in older Gitea versions.
    assert_eq!(c["files"], serde_json::json!(["src/hooks.rs", "README.md"]));

    let pr = fixture("gitea-pull_request.json");
    let sig = sign("gitea secret", &pr);
    let (st, v) = post(
        &m.http,
        "/change_hook/gitea",
        &[ev("pull_request"), ("X-Gitea-Signature", &sig)],
        &pr,
    );
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "feature/hooks");
    assert_eq!(c["revision"], "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(c["repository"], "http://localhost:3000/gitea/webhooks.git");
    let p = &c["properties"];
    assert_eq!(p["pr_number"], 7);
    assert_eq!(p["pr_title"], "Add hooks");
    assert_eq!(p["pr_author"], "contributor");
    assert_eq!(p["pr_labels"], "enhancement");
    assert_eq!(p["pr_target_branch"], "master");
    assert_eq!(p["event"], "pull_request");

    let closed = pr.replacen("\"synchronized\"", "\"closed\"", 1);
    let sig = sign("gitea secret", &closed);
    let (st, v) = post(
        &m.http,
        "/change_hook/gitea",
        &[ev("pull_request"), ("X-Gitea-Signature", &sig)],
        &closed,
    );
    assert_eq!(st, 200, "{v}");
    let body = r#"{"ref": "v1", "ref_type": "tag"}"#;
    let sig = sign("gitea secret", body);
    let (st, v) = post(
        &m.http,
        "/change_hook/gitea",
        &[ev("create"), ("X-Gitea-Signature", &sig)],
        body,
    );
    assert_eq!(st, 202, "{v}");
    assert_eq!(changes(&m).len(), 2);
}

#[test]
fn json_webhook() {
    let m = hooks_master("hook-json");
    let one = r#"{"repository": "https://git.example.org/widget.git", "branch": "main",
        "revision": "1234abcd", "author": "Ada <ada@example.org>", "comments": "Fix it",
        "files": ["src/lib.rs"], "project": "widget", "when": 1700000000000,
        "properties": {"priority": 3, "urgent": true, "reviewer": "bob"}}"#;
    let hdr = |body: &str| format!("sha256={}", sign("json secret", body));
    let (st, _) = post(&m.http, "/change_hook/json", &[], one);
    assert_eq!(st, 401);
    let (st, _) = post(
        &m.http,
        "/change_hook/json",
        &[("X-BBC-Signature-256", &hdr("other body"))],
        one,
    );
    assert_eq!(st, 403);
    assert!(changes(&m).is_empty());

    let (st, v) = post(
        &m.http,
        "/change_hook/json",
        &[("X-BBC-Signature-256", &hdr(one))],
        one,
    );
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["source"], "json");
    assert_eq!(c["revision"], "1234abcd");
    assert_eq!(c["branch"], "main");
    assert_eq!(c["project"], "widget");
    assert_eq!(c["when"], 1_700_000_000_000i64);
    assert_eq!(c["files"], serde_json::json!(["src/lib.rs"]));
    assert_eq!(c["properties"]["priority"], 3);
    assert_eq!(c["properties"]["urgent"], true);

    // An array, unsigned, to the source without a secret (as `curl -d`
    // sends it: labelled as a form).
    let many = r#"[{"branch": "a"}, {"revision": "ffff"}]"#;
    let (st, v) = post(
        &m.http,
        "/change_hook/json-open",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        many,
    );
    assert_eq!(st, 201, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 2);
    let c = change(&m, got[0]);
    assert_eq!(c["branch"], "a");
    assert_eq!(c["source"], "json-open");
    assert!(c["when"].as_i64().unwrap() > 0);

    for (body, why) in [
        ("{", "invalid JSON"),
        ("42", "change object"),
        (
            r#"{"branch": "a", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (r#"{"author": "x"}"#, "`branch` or a `revision`"),
        (
            r#"[{"branch": "a"}, {"branch": 3}]"#,
            "field `[1].branch` must be a string",
        ),
        (r#"{"branch": "a", "files": "x"}"#, "`files`"),
        (r#"{"branch": "a", "when": "yesterday"}"#, "`when`"),
        (
            r#"{"branch": "a", "properties": {"p": [1]}}"#,
            "field `properties.p`",
        ),
        (r#"{"branch": "a", "source": "me"}"#, "`source`"),
    ] {
        let (st, v) = post(&m.http, "/change_hook/json-open", &[], body);
        assert_eq!(st, 400, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(why), "{body}: {msg}");
        assert_eq!(v["error"]["status"], 400);
    }
    assert_eq!(changes(&m).len(), 3);

    // The listing names every source and never shows a secret.
    let list = get_json(&m.http, "/api/v1/change_sources");
    let text = list.to_string();
    assert!(!text.contains("json secret"), "{text}");
    let json = list["change_sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "json")
        .unwrap()
        .clone();
    assert_eq!(json["kind"], "json-webhook");
    assert_eq!(json["signed"], true);
    assert_eq!(json["hook"], "/change_hook/json");
    let (st, _) = http("POST", &m.http, "/api/v1/change_sources/json/poll", None);
    assert_eq!(st, 404);
    let (st, _) = http("GET", &m.http, "/api/v1/change_sources/nope", None);
    assert_eq!(st, 404);
}

#[test]
fn webhook_to_a_poller_is_not_found() {
    let dir = temp_dir("hook-to-poller");
    let repo = Repo::new(&dir.join("repo"));
    repo.commit(&["f"], "a");
    let m = Master::start(&dir, &poller_config(&repo.dir, "repo", ""));
    let (st, v) = post(&m.http, "/change_hook/repo", &[], r#"{"branch": "main"}"#);
    assert_eq!(st, 404, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a webhook"));
    wait_first_poll(&m, "repo");
    assert!(changes(&m).is_empty());
}

const BITBUCKET_HOOKS: &str = r#"change-source "bbc-cloud" kind="bitbucket-cloud-webhook" {
    secret (secret)"bb-cloud-hook"
}
change-source "bbc-server" kind="bitbucket-server-webhook" {
    secret (secret)"bb-server-hook"
}
change-source "bb-open" kind="bitbucket-cloud-webhook"
"#;

/// Bitbucket Cloud: signed with `X-Hub-Signature: sha256=…`, the event in
/// `X-Event-Key`; one change per ref a push moved, for its new head.
#[test]
fn bitbucket_cloud_webhook() {
    let dir = temp_dir("hook-bb-cloud");
    let secret = "bb cloud secret";
    write_secret(&dir, "bb-cloud-hook", secret);
    write_secret(&dir, "bb-server-hook", "bb server secret");
    let m = Master::start(&dir, BITBUCKET_HOOKS);
    let push = fixture("bitbucket-cloud-push.json");
    let sig = format!("sha256={}", sign(secret, &push));
    let ev = |e: &'static str| ("X-Event-Key", e);
    let hook = "/change_hook/bbc-cloud";

    // Unsigned, wrongly signed, another body, GitHub's newer header: refused.
    let (st, v) = post(&m.http, hook, &[ev("repo:push")], &push);
    assert_eq!(st, 401, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("missing X-Hub-Signature header"), "{msg}");
    let wrong = format!("sha256={}", sign("bb server secret", &push));
    for bad in [wrong.as_str(), "sha256=", sig.trim_start_matches("sha256=")] {
        let (st, v) = post(
            &m.http,
            hook,
            &[ev("repo:push"), ("X-Hub-Signature", bad)],
            &push,
        );
        assert_eq!(st, 403, "{bad}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("X-Hub-Signature header does not match"),
            "{msg}"
        );
    }
    let (st, _) = post(
        &m.http,
        hook,
        &[ev("repo:push"), ("X-Hub-Signature", &sig)],
        &push.replace("spin", "stop"),
    );
    assert_eq!(st, 403);
    let (st, _) = post(
        &m.http,
        hook,
        &[ev("repo:push"), ("X-Hub-Signature-256", &sig)],
        &push,
    );
    assert_eq!(st, 401);
    assert!(changes(&m).is_empty());

    let signed = |event: &'static str, body: &str| {
        let s = format!("sha256={}", sign(secret, body));
        post(&m.http, hook, &[ev(event), ("X-Hub-Signature", &s)], body)
    };
    let (st, v) = signed("repo:push", &push);
    assert_eq!(st, 201, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 1);
    let c = change(&m, got[0]);
    assert_eq!(c["source"], "bbc-cloud");
    assert_eq!(c["revision"], "f3b2a5c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4");
    assert_eq!(c["branch"], "main");
    assert_eq!(c["repository"], "https://bitbucket.org/acme/widget");
    assert_eq!(c["project"], "acme/widget");
    assert_eq!(c["author"], "Ada Lovelace <ada@acme.example>");
    assert_eq!(
        c["comments"],
        "Make the widget spin\n\nIt was standing still.\n"
    );
    assert_eq!(c["when"], 1_709_374_830_000i64);
    assert_eq!(c["properties"]["event"], "push");

    // A tag: the tag's name as the branch, event `tag`.
    let mut tag: Value = serde_json::from_str(&push).unwrap();
    tag["push"]["changes"][0]["new"]["type"] = "tag".into();
    tag["push"]["changes"][0]["new"]["name"] = "v1.2.0".into();
    tag["push"]["changes"][0]["old"] = Value::Null;
    tag["push"]["changes"][0]["commits"] = serde_json::json!([]);
    let (st, v) = signed("repo:push", &tag.to_string());
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "v1.2.0");
    assert_eq!(c["revision"], "f3b2a5c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4");
    assert_eq!(c["properties"]["event"], "tag");
    // A deleted branch: `new` is null; nothing to build.
    let mut del: Value = serde_json::from_str(&push).unwrap();
    del["push"]["changes"][0]["new"] = Value::Null;
    del["push"]["changes"][0]["closed"] = true.into();
    let (st, v) = signed("repo:push", &del.to_string());
    assert_eq!(st, 200, "{v}");
    assert!(ids(&v).is_empty());
    assert!(v["ignored"]
        .as_str()
        .unwrap()
        .contains("`main` was deleted"));

    // A pull request: its head commit, the PR as properties.
    let pr = fixture("bitbucket-cloud-pullrequest.json");
    let (st, v) = signed("pullrequest:created", &pr);
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "faster");
    assert_eq!(c["revision"], "9a8b7c6d5e4f");
    assert_eq!(c["repository"], "https://bitbucket.org/acme/widget");
    assert_eq!(c["author"], "grace");
    assert_eq!(c["comments"], "Spin faster\n\nDoubles the speed.");
    let p = &c["properties"];
    assert_eq!(p["pr_number"], 17);
    assert_eq!(p["pr_title"], "Spin faster");
    assert_eq!(p["pr_target_branch"], "main");
    assert_eq!(p["pr_action"], "created");
    assert_eq!(p["event"], "pull_request");
    assert_eq!(
        p["pr_head_repository"],
        "https://bitbucket.org/grace/widget"
    );
    assert_eq!(
        p["pr_url"],
        "https://bitbucket.org/acme/widget/pull-requests/17"
    );
    let (st, _) = signed("pullrequest:updated", &pr);
    assert_eq!(st, 201);
    let merged = pr.replacen("\"OPEN\"", "\"MERGED\"", 1);
    let (st, v) = signed("pullrequest:fulfilled", &merged);
    assert_eq!(st, 200, "{v}");
    let (st, v) = signed("repo:commit_comment_created", "{}");
    assert_eq!(st, 202, "{v}");
    assert!(v["ignored"]
        .as_str()
        .unwrap()
        .contains("repo:commit_comment_created"));

    // Malformed: the message names the field by its path.
    let mut no_hash: Value = serde_json::from_str(&push).unwrap();
    if let Some(t) = no_hash["push"]["changes"][0]["new"]["target"].as_object_mut() {
        t.remove("hash");
    }
    let (st, v) = signed("repo:push", &no_hash.to_string());
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "missing field `push.changes[0].new.target.hash`"
    );
    let (st, v) = post(&m.http, hook, &[("X-Hub-Signature", &sig)], &push);
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-Event-Key"));
    assert_eq!(changes(&m).len(), 4);

    // Without a secret, unsigned deliveries are taken.
    let (st, v) = post(&m.http, "/change_hook/bb-open", &[ev("repo:push")], &push);
    assert_eq!(st, 201, "{v}");
    assert_eq!(change(&m, ids(&v)[0])["source"], "bb-open");

    let list = get_json(&m.http, "/api/v1/change_sources").to_string();
    assert!(!list.contains(secret), "{list}");
    assert!(list.contains("bitbucket-cloud-webhook"), "{list}");
}

/// Bitbucket Server / Data Center: `repo:refs_changed` lists refs and
/// their new commits (no commits); one change per ref moved.
#[test]
fn bitbucket_server_webhook() {
    let dir = temp_dir("hook-bb-server");
    let secret = "bb server secret";
    write_secret(&dir, "bb-cloud-hook", "bb cloud secret");
    write_secret(&dir, "bb-server-hook", secret);
    let m = Master::start(&dir, BITBUCKET_HOOKS);
    let push = fixture("bitbucket-server-refs_changed.json");
    let ev = |e: &'static str| ("X-Event-Key", e);
    let hook = "/change_hook/bbc-server";

    let (st, _) = post(&m.http, hook, &[ev("repo:refs_changed")], &push);
    assert_eq!(st, 401);
    let wrong = format!("sha256={}", sign("bb cloud secret", &push));
    let (st, _) = post(
        &m.http,
        hook,
        &[ev("repo:refs_changed"), ("X-Hub-Signature", &wrong)],
        &push,
    );
    assert_eq!(st, 403);
    assert!(changes(&m).is_empty());

    let signed = |event: &'static str, body: &str| {
        let s = format!("sha256={}", sign(secret, body));
        post(&m.http, hook, &[ev(event), ("X-Hub-Signature", &s)], body)
    };
    let (st, v) = signed("diagnostics:ping", r#"{"test": true}"#);
    assert_eq!(st, 200, "{v}");
    let (st, v) = signed("repo:refs_changed", &push);
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["source"], "bbc-server");
    assert_eq!(c["revision"], "f3b2a5c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4");
    assert_eq!(c["branch"], "main");
    assert_eq!(
        c["repository"],
        "https://bitbucket.acme.example/scm/acme/widget.git"
    );
    assert_eq!(c["project"], "ACME/widget");
    assert_eq!(c["author"], "Ada Lovelace <ada@acme.example>");
    assert_eq!(c["when"], 1_709_338_830_000i64);
    assert_eq!(c["properties"]["event"], "push");

    // Two refs in one push: a new tag and a deleted branch.
    let mut two: Value = serde_json::from_str(&push).unwrap();
    two["changes"] = serde_json::json!([
        {"ref": {"id": "refs/tags/v2.0", "displayId": "v2.0", "type": "TAG"},
         "refId": "refs/tags/v2.0",
         "fromHash": "0000000000000000000000000000000000000000",
         "toHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc", "type": "ADD"},
        {"ref": {"id": "refs/heads/old", "displayId": "old", "type": "BRANCH"},
         "refId": "refs/heads/old",
         "fromHash": "178864a7d521b6f5e720b386b2c2b0ef8563e0dc",
         "toHash": "0000000000000000000000000000000000000000", "type": "DELETE"}
    ]);
    let (st, v) = signed("repo:refs_changed", &two.to_string());
    assert_eq!(st, 201, "{v}");
    let got = ids(&v);
    assert_eq!(got.len(), 1, "{v}");
    let c = change(&m, got[0]);
    assert_eq!(c["branch"], "v2.0");
    assert_eq!(c["revision"], "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    assert_eq!(c["properties"]["event"], "tag");
    // Only a deleted branch: nothing.
    two["changes"] = serde_json::json!([two["changes"][1].clone()]);
    let (st, v) = signed("repo:refs_changed", &two.to_string());
    assert_eq!(st, 200, "{v}");
    assert!(v["ignored"].as_str().unwrap().contains("`old` was deleted"));

    let pr = fixture("bitbucket-server-pr_opened.json");
    let (st, v) = signed("pr:opened", &pr);
    assert_eq!(st, 201, "{v}");
    let c = change(&m, ids(&v)[0]);
    assert_eq!(c["branch"], "faster");
    assert_eq!(c["revision"], "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b");
    assert_eq!(
        c["repository"],
        "https://bitbucket.acme.example/scm/acme/widget.git"
    );
    assert_eq!(c["author"], "grace");
    assert_eq!(c["when"], 1_709_418_600_000i64);
    let p = &c["properties"];
    assert_eq!(p["pr_number"], 17);
    assert_eq!(p["pr_target_branch"], "main");
    assert_eq!(p["pr_action"], "opened");
    assert_eq!(p["event"], "pull_request");
    assert_eq!(
        p["pr_url"],
        "https://bitbucket.acme.example/projects/ACME/repos/widget/pull-requests/17"
    );
    let (st, _) = signed("pr:from_ref_updated", &pr);
    assert_eq!(st, 201);
    let (st, v) = signed("pr:merged", &pr);
    assert_eq!(st, 200, "{v}");
    let (st, v) = signed("pr:comment:added", &pr);
    assert_eq!(st, 202, "{v}");

    let (st, v) = signed(
        "repo:refs_changed",
        &push.replacen(
            "\"toHash\": \"f3b2a5c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4\",",
            "",
            1,
        ),
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["message"], "missing field `changes[0].toHash`");
    assert_eq!(changes(&m).len(), 4);
}
