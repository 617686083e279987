//! The queue's order and request collapsing in a real master (issue 14):
//! a request's own priority (a scheduler's, the force form's, `bbc force
//! --priority`) before its builder's, then age; requests that came from
//! changes on one branch collapse into one build of the newest revision,
//! forced ones and other branches never do.
//!
//! A builder `hold` whose step waits for a file keeps the only worker slot
//! busy while the requests queue up; the test then creates the file.

use std::path::Path;

use crate::common::{get_json, http, run, stderr, temp_dir, wait_for, write_secret, Master};

/// A worker with one slot and a builder that holds it until `release`
/// exists, plus `rest`.
fn config(release: &Path, rest: &str) -> String {
    format!(
        r#"worker "w1" password=(secret)"w1" max-builds=1
scheduler "hold" kind="force" {{
    builders "hold"
}}
builder "hold" {{
    workers "w1"
    steps {{
        shell "while [ ! -e '{}' ]; do sleep 0.05; done" name="wait"
    }}
}}
{rest}"#,
        release.display()
    )
}

fn start(name: &str, rest: &str) -> (std::path::PathBuf, Master) {
    let dir = temp_dir(name);
    write_secret(&dir, "w1", "pw-one-1234");
    let m = Master::start(&dir, &config(&dir.join("release"), rest));
    (dir, m)
}

/// Starts the `hold` build and waits until it runs: from then on every
/// other request waits in the queue.
fn hold(m: &Master) {
    let _ = m.force("hold", "{}");
    wait_for("the hold build to run", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=hold");
        v["builds"]
            .as_array()?
            .iter()
            .find(|b| b["complete"] != true)
            .map(|_| ())
    });
}

fn pending(m: &Master) -> Vec<serde_json::Value> {
    get_json(&m.http, "/api/v1/views/pending")["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_pending(m: &Master, n: usize) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} pending requests"), || {
        let p = pending(m);
        (p.len() == n).then_some(p)
    })
}

/// The requests of a build set.
fn requests(m: &Master, set: u64) -> Vec<serde_json::Value> {
    get_json(&m.http, &format!("/api/v1/requests?buildset={set}"))["requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The finished build that ran `builder`'s request of a build set.
fn build_of(m: &Master, set: u64, builder: &str) -> serde_json::Value {
    let id = wait_for(
        &format!("{builder}'s request of set {set} to complete"),
        || {
            let r = requests(m, set)
                .into_iter()
                .find(|r| r["builder"] == builder)?;
            (r["state"] == "complete")
                .then(|| r["build"].as_u64())
                .flatten()
        },
    );
    get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone()
}

fn force_set(m: &Master, builder: &str, body: &str) -> u64 {
    m.force(builder, body)
}

/// Sends a change through `bbc sendchange`; with a tree-stable timer of
/// 0 its set (one request per builder of the scheduler, two here) is
/// queued at once: waits until `n` requests are pending.
fn change(m: &Master, n: &mut usize, branch: &str, rev: &str) {
    let url = format!("http://{}", m.http);
    let o = run(&[
        "sendchange",
        "--branch",
        branch,
        "--revision",
        rev,
        "--file",
        "src/a.rs",
        "--url",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    *n += 2;
    wait_pending(m, *n);
}

#[test]
fn requests_start_by_their_priority_then_the_builders_then_age() {
    let (dir, m) = start(
        "req-priority",
        r#"scheduler "force" kind="force" {
    builders "p"
}
scheduler "urgent" kind="force" {
    builders "q"
    priority 3
}
builder "p" {
    workers "w1"
    steps {
        shell "echo p"
    }
}
builder "q" {
    workers "w1"
    priority 10
    steps {
        shell "echo q"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    hold(&m);
    // A: priority 1 (the API), B: 5 (`bbc force --priority`), C: 3, then
    // D on `q`: no priority given, so its scheduler's 3; same as C, but
    // q's builder priority (10) puts it before C.
    let a = force_set(&m, "p", r#"{"priority": 1}"#);
    let url = format!("http://{}", m.http);
    let o = run(&[
        "force",
        "p",
        "--priority",
        "5",
        "--format",
        "json",
        "--url",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    let b = out["buildset"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no build set in {out}"));
    assert_eq!(out["requests"][0]["request_priority"], 5, "{out}");
    let c = force_set(&m, "p", r#"{"priority": 3}"#);
    let d = force_set(&m, "q", "{}");
    // Out of range: refused, nothing queued.
    let (status, body) = http(
        "POST",
        &m.http,
        "/api/v1/builders/p/force",
        Some(r#"{"priority": 5000000}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("priority 5000000 is out of range"), "{body}");
    // The pending view shows them in the queue's order.
    let p = wait_pending(&m, 4);
    let order: Vec<(u64, i64, i64)> = p
        .iter()
        .map(|r| {
            (
                r["buildset"].as_u64().unwrap_or(0),
                r["request_priority"].as_i64().unwrap_or(-1),
                r["priority"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        order,
        [(b, 5, 0), (d, 3, 10), (c, 3, 0), (a, 1, 0)],
        "{p:?}"
    );
    assert_eq!(requests(&m, d)[0]["request_priority"], 3);
    std::fs::write(dir.join("release"), "").unwrap_or_else(|e| panic!("{e}"));
    // One slot: the builds start one after another, their ids in the
    // order they started.
    let started: Vec<u64> = [b, d, c, a]
        .iter()
        .map(|s| m.wait_buildset(*s)["id"].as_u64().unwrap_or(0))
        .collect();
    let mut sorted = started.clone();
    sorted.sort_unstable();
    assert_eq!(started, sorted, "builds of B, D, C, A in that order");
}

#[test]
fn changes_on_one_branch_collapse_into_the_newest_forced_and_other_branches_do_not() {
    let (dir, m) = start(
        "req-collapse",
        r#"scheduler "ci" kind="any-branch" {
    builders "b" "each"
    priority 2
}
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w1"
    steps {
        shell "echo building ${{ prop.revision }} on ${{ prop.branch }}"
    }
}
builder "each" {
    workers "w1"
    collapse-requests #false
    steps {
        shell "echo each ${{ prop.revision }}"
    }
}
"#,
    );
    let _w = m.worker("w1", "pw-one-1234");
    m.wait_connected("w1");
    hold(&m);
    let mut n = 0;
    change(&m, &mut n, "main", "r1");
    change(&m, &mut n, "main", "r2");
    // A forced request between them, on the same branch.
    let forced = force_set(&m, "b", r#"{"branch": "main"}"#);
    n += 1;
    wait_pending(&m, n);
    change(&m, &mut n, "main", "r3");
    change(&m, &mut n, "dev", "d1");
    let sets: Vec<u64> = pending(&m)
        .iter()
        .filter(|r| r["builder"] == "b" && r["scheduler"] == "ci")
        .map(|r| r["buildset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(sets.len(), 4, "{sets:?}");
    let (r1, r2, r3, d1) = (sets[0], sets[1], sets[2], sets[3]);
    assert_eq!(requests(&m, r1)[0]["request_priority"], 2);
    std::fs::write(dir.join("release"), "").unwrap_or_else(|e| panic!("{e}"));
    let newest = build_of(&m, r3, "b");
    assert_eq!(newest["properties"]["revision"], "r3", "{newest}");
    assert_eq!(newest["result"], "success", "{newest}");
    // r1 and r2 were satisfied by that build, collapsed into r3's request.
    let r3_req = requests(&m, r3)
        .into_iter()
        .find(|r| r["builder"] == "b")
        .unwrap_or_default();
    assert_eq!(r3_req["collapsed_into"], serde_json::Value::Null);
    for set in [r1, r2] {
        let built = build_of(&m, set, "b");
        let req = requests(&m, set)
            .into_iter()
            .find(|r| r["builder"] == "b")
            .unwrap_or_default();
        assert_eq!(built["id"], newest["id"], "{req}");
        assert_eq!(req["collapsed_into"], r3_req["id"], "{req}");
        assert_eq!(req["result"], "success", "{req}");
    }
    // The forced request and the other branch ran builds of their own.
    let f = m.wait_buildset(forced);
    let dev = build_of(&m, d1, "b");
    assert_ne!(f["id"], newest["id"]);
    assert_eq!(dev["properties"]["branch"], "dev");
    assert_ne!(dev["id"], newest["id"]);
    let b_builds = wait_for("three builds of b", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=b");
        let all = v["builds"].as_array()?.clone();
        (all.len() == 3 && all.iter().all(|x| x["complete"] == true)).then_some(all)
    });
    assert_eq!(b_builds.len(), 3);
    // `each` turned collapsing off: a build per change.
    let each = wait_for("four builds of each", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=each");
        let all = v["builds"].as_array()?.clone();
        (all.len() == 4 && all.iter().all(|x| x["complete"] == true)).then_some(all)
    });
    let mut revs: Vec<&str> = each
        .iter()
        .filter_map(|b| b["properties"]["revision"].as_str())
        .collect();
    revs.sort_unstable();
    assert_eq!(revs, ["d1", "r1", "r2", "r3"]);
}
