//! Rebuilds (`POST /api/v1/builds/{id}/rebuild`, `bbc rebuild`) on a real
//! master and worker with a real git repository: the new build checks out
//! the commit the original built (not the branch's newer head) with the
//! original's properties, and what cannot be rebuilt is refused with a
//! reason.

use std::path::Path;

use serde_json::Value;

use crate::common::{
    bbc, get_json, git, http, stderr, stdout, temp_dir, wait_for, write_secret, Master,
};

fn config(repo: &Path, gate: &Path, with_g: bool) -> String {
    let g = if with_g {
        format!(
            r#"builder "g" {{
    workers "w"
    steps {{
        git repo="{}" branch="main" mode="full" method="fresh"
        shell "cat hello.txt; echo who=${{{{ prop.who }}}}" name="show"
    }}
}}
"#,
            repo.display()
        )
    } else {
        String::new()
    };
    format!(
        r#"worker "w" password=(secret)"w" max-builds=2
scheduler "force" kind="force" {{
    builders {builders}
    param "who" type="string" default="nobody"
}}
{g}builder "slow" {{
    workers "w"
    steps {{
        shell "while [ ! -f '{gate}' ]; do sleep 0.05; done"
    }}
}}
"#,
        builders = if with_g { r#""g" "slow""# } else { r#""slow""# },
        gate = gate.display(),
    )
}

fn post(m: &Master, path: &str) -> (u16, Value) {
    let (st, body) = http("POST", &m.http, path, None);
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_rebuild_builds_the_same_commit_with_the_same_properties() {
    let dir = temp_dir("rebuild-same");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "v1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let gate = dir.join("gate");
    write_secret(&dir, "w", "pw-rebuild-1");
    let m = Master::start(&dir, &config(&repo, &gate, true));
    let _w = m.worker("w", "pw-rebuild-1");
    m.wait_connected("w");

    // Forced on the branch's head, with a parameter given.
    let b = m.force_and_wait("g", r#"{"properties": {"who": "rita"}}"#);
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["properties"]["got_revision"], first.as_str(), "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    // The branch moves on.
    std::fs::write(repo.join("hello.txt"), "v2\n").unwrap_or_else(|e| panic!("{e}"));
    git(&repo, &["commit", "-q", "-am", "two"]);

    let o = bbc()
        .args(["rebuild", &id.to_string(), "--wait", "--url"])
        .arg(format!("http://{}", m.http))
        .env_remove("BBC_TOKEN")
        .env_remove("BBC_CA")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("rebuild of g #1"), "{out}");
    assert!(out.contains("g #2: success"), "{out}");
    let v = get_json(&m.http, "/api/v1/builds?builder=g&limit=1");
    let r = &v["builds"][0];
    assert_eq!(r["number"], 2, "{r}");
    assert_eq!(r["result"], "success", "{r}");
    // The same commit, not the new head; the same parameter.
    assert_eq!(r["properties"]["got_revision"], first.as_str(), "{r}");
    assert_eq!(r["properties"]["revision"], first.as_str(), "{r}");
    assert_eq!(r["properties"]["who"], "rita", "{r}");
    assert_eq!(r["properties"]["branch"], b["properties"]["branch"], "{r}");
    assert_eq!(r["properties"]["reason"], "rebuild of g #1", "{r}");
    let log = m.log(r["id"].as_u64().unwrap_or_default(), 1);
    assert!(log.contains("v1") && log.contains("who=rita"), "{log}");
    assert!(!log.contains("v2"), "{log}");

    // A running build cannot be rebuilt; an unknown one does not exist.
    let set = m.force("slow", "{}");
    let running = wait_for("the slow build to start", || {
        let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
        r["requests"][0]["build"].as_u64()
    });
    let (st, v) = post(&m, &format!("/api/v1/builds/{running}/rebuild"));
    assert_eq!(st, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("still running"), "{v}");
    let (st, v) = post(&m, "/api/v1/builds/999999/rebuild");
    assert_eq!(
        (st, &v["error"]["message"]),
        (404, &Value::from("no build 999999"))
    );
    let (st, v) = post(&m, "/api/v1/builds/nope/rebuild");
    assert_eq!(st, 400, "{v}");
    std::fs::write(&gate, "").unwrap_or_else(|e| panic!("{e}"));
    m.wait_buildset(set);

    // A builder the config no longer has: refused, saying so.
    drop(_w);
    drop(m);
    let m = Master::start(&dir, &config(&repo, &gate, false));
    let (st, v) = post(&m, &format!("/api/v1/builds/{id}/rebuild"));
    assert_eq!(st, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("builder `g` is no longer in the config"),
        "{v}"
    );
    // The CLI says the master's reason and fails.
    let o = bbc()
        .args(["rebuild", &id.to_string(), "--url"])
        .arg(format!("http://{}", m.http))
        .env_remove("BBC_TOKEN")
        .env_remove("BBC_CA")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no longer in the config"),
        "{}",
        stderr(&o)
    );
}
