//! Users, roles and the audit log through a real `bbc master` on
//! 127.0.0.1: every mutating endpoint against every kind of caller, a
//! private master's reads, and the audit log (who, never a token).
//!
//! A worker runs one build of each builder first (what rebuilds name),
//! then leaves: forced builds stay pending after it, and each caller
//! allowed to cancel has a request of its own to cancel.

use std::path::Path;

use serde_json::Value;

use crate::common::{git, http_with, run, stdout, temp_dir, write_secret, Master};

const CONTROL: &str = "control-tok-0001";
const ADMIN: &str = "admin-tok-0002";
/// (user, token): vic may only view, carol forces, cancels and rebuilds
/// `web*` only, alice does all three everywhere, bob is an admin.
const USERS: &[(&str, &str)] = &[
    ("vic", "vic-tok-0003"),
    ("carol", "carol-tok-0004"),
    ("alice", "alice-tok-0005"),
    ("bob", "bob-tok-0006"),
];
const WRONG: &str = "wrong-tok-0007";

/// The config; `repo` is a git repository the poller `repo` polls.
fn config(private: bool, repo: &Path) -> String {
    format!(
        r#"master {{
    private #{private}
}}
worker "w" password=(secret)"w"
change-source "repo" kind="git-poller" {{
    repo "{}"
    poll-interval "1h"
}}
scheduler "force" kind="force" {{
    builders "core-linux" "web"
}}
builder "core-linux" {{
    workers "w"
    steps {{
        shell "true"
    }}
}}
builder "web" {{
    workers "w"
    steps {{
        shell "true"
    }}
}}
role "viewer" grant="view"
role "webdev" grant="force cancel rebuild" builders="web*"
role "developer" grant="view force cancel rebuild"
role "ops" grant="admin"
user "vic" token=(secret)"vic-token" roles="viewer"
user "carol" token=(secret)"carol-token" roles="webdev"
user "alice" token=(secret)"alice-token" roles="developer"
user "bob" token=(secret)"bob-token" roles="ops"
"#,
        repo.display()
    )
}

/// A git repository with one commit on `main`.
fn repo(dir: &Path) -> std::path::PathBuf {
    let r = dir.join("repo");
    std::fs::create_dir_all(&r).unwrap_or_else(|e| panic!("{e}"));
    git(&r, &["init", "-q", "-b", "main"]);
    git(&r, &["commit", "-q", "--allow-empty", "-m", "first"]);
    r
}

fn start(dir: &Path, private: bool) -> (Master, String) {
    write_secret(dir, "w", "worker-pw-0008");
    write_secret(dir, "bbc-control-token", CONTROL);
    write_secret(dir, "bbc-admin-token", ADMIN);
    for (name, tok) in USERS {
        write_secret(dir, &format!("{name}-token"), tok);
    }
    let text = config(private, &repo(dir));
    let file = dir.join("master.kdl");
    std::fs::write(&file, &text).unwrap_or_else(|e| panic!("{e}"));
    let compiled = run(&["compile", &file.to_string_lossy()]);
    assert_eq!(compiled.status.code(), Some(0), "{compiled:?}");
    (Master::start(dir, &text), stdout(&compiled))
}

/// The callers of the table, by the `Authorization` they send.
const CALLERS: &[&str] = &[
    "anonymous",
    "wrong",
    "vic",
    "carol",
    "alice",
    "bob",
    "control",
    "admin",
];

fn token_of(caller: &str) -> Option<&'static str> {
    match caller {
        "anonymous" => None,
        "wrong" => Some(WRONG),
        "control" => Some(CONTROL),
        "admin" => Some(ADMIN),
        user => USERS.iter().find(|(n, _)| *n == user).map(|(_, t)| *t),
    }
}

/// Every answer read, so the test can search them all for token bytes.
struct Client<'a> {
    m: &'a Master,
    seen: Vec<String>,
}

impl Client<'_> {
    fn call(&mut self, caller: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let bearer = token_of(caller).map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        let (status, text) = http_with(method, &self.m.http, path, &headers, body);
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.seen.push(text);
        (status, v)
    }

    /// A pending request of `builder`, forced with the control token.
    fn pending(&mut self, builder: &str) -> u64 {
        let (st, v) = self.call(
            "control",
            "POST",
            &format!("/api/v1/builders/{builder}/force"),
            Some("{}"),
        );
        assert_eq!(st, 201, "{v}");
        let set = v["buildset"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{v}"));
        let (st, r) = self.call(
            "control",
            "GET",
            &format!("/api/v1/requests?buildset={set}"),
            None,
        );
        assert_eq!(st, 200, "{r}");
        r["requests"][0]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no request in {r}"))
    }
}

#[test]
fn every_mutating_endpoint_by_every_caller() {
    let dir = temp_dir("users-table");
    let (m, graph) = start(&dir, false);
    let mut c = Client {
        m: &m,
        seen: vec![],
    };
    // One finished build per builder, for the rebuilds; then no worker.
    let mut finished = std::collections::HashMap::new();
    {
        let _w = m.worker("w", "worker-pw-0008");
        m.wait_connected("w");
        for b in ["core-linux", "web"] {
            let req = c.pending(b);
            let build = crate::common::wait_for("the build to finish", || {
                let (_, r) = c.call("control", "GET", "/api/v1/requests?state=complete", None);
                r["requests"].as_array()?.iter().find(|x| x["id"] == req)?["build"].as_u64()
            });
            finished.insert(b, build);
        }
    }
    crate::common::wait_for("the worker to leave", || {
        let v = crate::common::get_json(&m.http, "/api/v1/workers");
        (v["workers"][0]["connected"] == false).then_some(())
    });
    let change = r#"{"branch": "main", "revision": "abc"}"#;
    // endpoint → expected status per caller, in CALLERS order.
    let table: &[(&str, [u16; 8])] = &[
        ("force core-linux", [401, 401, 403, 403, 201, 201, 201, 201]),
        ("force web", [401, 401, 403, 201, 201, 201, 201, 201]),
        (
            "cancel core-linux",
            [401, 401, 403, 403, 200, 200, 200, 200],
        ),
        ("cancel web", [401, 401, 403, 200, 200, 200, 200, 200]),
        (
            "rebuild core-linux",
            [401, 401, 403, 403, 201, 201, 201, 201],
        ),
        ("rebuild web", [401, 401, 403, 201, 201, 201, 201, 201]),
        ("change", [401, 401, 403, 403, 201, 201, 201, 201]),
        ("poll", [401, 401, 403, 403, 200, 200, 200, 200]),
        ("config", [401, 401, 403, 403, 403, 200, 403, 200]),
        ("audit", [401, 401, 403, 403, 403, 200, 403, 200]),
    ];
    for (what, want) in table {
        for (caller, want) in CALLERS.iter().zip(want) {
            let (st, v) = match *what {
                "force core-linux" | "force web" => {
                    let b = what.trim_start_matches("force ");
                    let path = format!("/api/v1/builders/{b}/force");
                    c.call(caller, "POST", &path, Some("{}"))
                }
                "cancel core-linux" | "cancel web" => {
                    let id = c.pending(what.trim_start_matches("cancel "));
                    let path = format!("/api/v1/requests/{id}/cancel");
                    c.call(caller, "POST", &path, None)
                }
                "rebuild core-linux" | "rebuild web" => {
                    let id = finished[what.trim_start_matches("rebuild ")];
                    let path = format!("/api/v1/builds/{id}/rebuild");
                    c.call(caller, "POST", &path, None)
                }
                "change" => c.call(caller, "POST", "/api/v1/changes", Some(change)),
                "poll" => c.call(caller, "POST", "/api/v1/change_sources/repo/poll", None),
                "config" => c.call(caller, "POST", "/api/v1/config", Some(&graph)),
                _ => c.call(caller, "GET", "/api/v1/audit?limit=5", None),
            };
            assert_eq!(st, *want, "{what} by {caller}: {v}");
            if st >= 400 {
                assert_eq!(
                    v["error"]["status"], st,
                    "{what} by {caller}: JSON error {v}"
                );
            }
        }
    }
    // The audit log bounds its pages like every list.
    for bad in ["/api/v1/audit?limit=0", "/api/v1/audit?limit=1001"] {
        let (st, v) = c.call("bob", "GET", bad, None);
        assert_eq!(st, 400, "{bad}: {v}");
    }

    // Newest first; every caller named, refused requests included.
    let (st, log) = c.call("bob", "GET", "/api/v1/audit?limit=1000", None);
    assert_eq!(st, 200, "{log}");
    let entries = log["audit"].as_array().cloned().unwrap_or_default();
    let ids: Vec<u64> = entries.iter().filter_map(|e| e["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let who = |name: &str, path: &str, status: u16| {
        entries.iter().any(|e| {
            e["who"] == name
                && e["method"] == "POST"
                && e["path"] == path
                && e["status"] == status
                && e["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:"))
        })
    };
    let force = "/api/v1/builders/core-linux/force";
    assert!(who("alice", force, 201), "{log}");
    assert!(who("carol", force, 403), "{log}");
    // 401s change nothing and are not kept (anyone could fill the disk).
    assert!(!entries.iter().any(|e| e["status"] == 401), "{log}");
    assert!(who("control-token", force, 201), "{log}");
    assert!(who("bob", "/api/v1/config", 200), "{log}");
    // A rebuild names the build it repeats; a refused one too.
    let rebuild = format!("/api/v1/builds/{}/rebuild", finished["core-linux"]);
    assert!(who("alice", &rebuild, 201), "{log}");
    assert!(who("carol", &rebuild, 403), "{log}");
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == rebuild.as_str() && e["build"] == finished["core-linux"]),
        "{log}"
    );
    assert!(who("admin-token", "/api/v1/changes", 201), "{log}");
    assert!(
        entries
            .iter()
            .any(|e| e["path"] == force && e["builder"] == "core-linux"),
        "{log}"
    );

    // No answer, audit log included, carries a token's bytes.
    let all = c.seen.join("\n");
    for t in [CONTROL, ADMIN, WRONG]
        .into_iter()
        .chain(USERS.iter().map(|(_, t)| *t))
    {
        assert!(!all.contains(t), "token {t} in an answer");
    }
}

#[test]
fn a_private_master_answers_only_viewers() {
    let dir = temp_dir("users-private");
    let (m, _) = start(&dir, true);
    let mut c = Client {
        m: &m,
        seen: vec![],
    };
    let cases: &[(&str, &str, u16)] = &[
        ("anonymous", "/api/v1/builders", 401),
        ("anonymous", "/api/v1", 401),
        ("anonymous", "/api/v1/change_sources", 401),
        ("wrong", "/api/v1/builders", 401),
        ("carol", "/api/v1/builders", 403),
        ("vic", "/api/v1/builders", 200),
        ("alice", "/api/v1/builds", 200),
        ("bob", "/api/v1/builders", 200),
        ("control", "/api/v1/workers", 200),
        ("anonymous", "/metrics", 401),
        ("vic", "/metrics", 200),
        // Load balancers need no token.
        ("anonymous", "/api/v1/health", 200),
        // The overview pages, badges and uploaded files say as much as
        // the API: the same rule.
        ("anonymous", "/api/v1/views/waterfall", 401),
        ("anonymous", "/api/v1/views/console", 401),
        ("anonymous", "/api/v1/views/pending", 401),
        ("anonymous", "/badges/web.svg", 401),
        ("anonymous", "/badges/tag/none.svg", 401),
        ("anonymous", "/files/any.txt", 401),
        ("carol", "/badges/web.svg", 403),
        ("vic", "/badges/web.svg", 200),
        ("vic", "/api/v1/views/waterfall", 200),
        ("vic", "/files/any.txt", 404),
    ];
    for (caller, path, want) in cases {
        let (st, v) = c.call(caller, "GET", path, None);
        assert_eq!(st, *want, "GET {path} by {caller}: {v}");
        if *want == 200 && *path == "/api/v1/builders" {
            assert_eq!(v["builders"].as_array().map(Vec::len), Some(2), "{v}");
        }
    }
}

/// Cancelling a running build checks `cancel` on that build's builder.
/// Each build is held by a step waiting for a file that never comes,
/// until its cancel interrupts it.
#[test]
fn cancelling_a_running_build_needs_cancel_on_its_builder() {
    let dir = temp_dir("users-cancel");
    let gate = dir.join("never");
    let held = format!(
        r#"shell "while [ ! -f {} ]; do sleep 0.05; done""#,
        gate.display()
    );
    let text = config(false, &repo(&dir))
        .replace(r#"shell "true""#, &held)
        .replace(
            r#"password=(secret)"w""#,
            r#"password=(secret)"w" max-builds=2"#,
        );
    write_secret(&dir, "w", "worker-pw-0008");
    write_secret(&dir, "bbc-control-token", CONTROL);
    for (name, tok) in USERS {
        write_secret(&dir, &format!("{name}-token"), tok);
    }
    let m = Master::start(&dir, &text);
    let _w = m.worker("w", "worker-pw-0008");
    m.wait_connected("w");
    let mut c = Client {
        m: &m,
        seen: vec![],
    };
    let running = |c: &mut Client, builder: &str| -> u64 {
        let req = c.pending(builder);
        crate::common::wait_for("the build to start", || {
            let (_, r) = c.call("control", "GET", "/api/v1/requests?state=claimed", None);
            r["requests"].as_array()?.iter().find(|x| x["id"] == req)?["build"].as_u64()
        })
    };
    for (builder, refused, allowed) in [
        (
            "core-linux",
            &[("anonymous", 401), ("vic", 403), ("carol", 403)][..],
            "alice",
        ),
        ("web", &[("anonymous", 401), ("vic", 403)][..], "carol"),
    ] {
        let build = running(&mut c, builder);
        let path = format!("/api/v1/builds/{build}/cancel");
        for (caller, want) in refused {
            let (st, v) = c.call(caller, "POST", &path, None);
            assert_eq!(st, *want, "cancel {builder} by {caller}: {v}");
        }
        let (st, v) = c.call(allowed, "POST", &path, None);
        assert_eq!(st, 200, "cancel {builder} by {allowed}: {v}");
        let b = crate::common::wait_for("the cancelled build to end", || {
            let (_, v) = c.call("control", "GET", &format!("/api/v1/builds/{build}"), None);
            v["build"]["finished_at"]
                .as_u64()
                .map(|_| v["build"].clone())
        });
        assert_eq!(b["result"], "cancelled", "{b}");
    }
}

/// Users and roles change with the config: an apply that removes a user
/// takes its token away at once, and says what changed.
#[test]
fn an_apply_without_a_user_takes_its_token_away() {
    let dir = temp_dir("users-apply");
    let (m, _) = start(&dir, false);
    let mut c = Client {
        m: &m,
        seen: vec![],
    };
    let force = "/api/v1/builders/web/force";
    let (st, v) = c.call("carol", "POST", force, Some("{}"));
    assert_eq!(st, 201, "{v}");
    let text = std::fs::read_to_string(dir.join("master.kdl")).unwrap_or_else(|e| panic!("{e}"));
    let without = text.replace(
        "user \"carol\" token=(secret)\"carol-token\" roles=\"webdev\"\n",
        "",
    );
    assert_ne!(text, without, "carol's line is in the config");
    let file = dir.join("without-carol.kdl");
    std::fs::write(&file, &without).unwrap_or_else(|e| panic!("{e}"));
    let compiled = run(&["compile", &file.to_string_lossy()]);
    assert_eq!(compiled.status.code(), Some(0), "{compiled:?}");
    let (st, report) = c.call("bob", "POST", "/api/v1/config", Some(&stdout(&compiled)));
    assert_eq!(st, 200, "{report}");
    let said = report["report"].to_string();
    assert!(said.contains("users, roles and privacy"), "{report}");
    let (st, v) = c.call("carol", "POST", force, Some("{}"));
    assert_eq!(st, 401, "{v}");
    let (st, v) = c.call("alice", "POST", force, Some("{}"));
    assert_eq!(st, 201, "{v}");
}

/// `bbc login` checks a token (`GET /api/v1/whoami`) and keeps it, mode
/// 0600, for `bbc force`; a wrong token is refused and stores nothing.
#[test]
fn bbc_login_keeps_a_checked_token_for_the_cli() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("users_login");
    let (m, _) = start(&dir, false);
    let url = format!("http://{}", m.http);
    let home = dir.join("home");
    let cli = |args: &[&str]| {
        crate::common::bbc()
            .args(args)
            .env("XDG_CONFIG_HOME", &home)
            .env_remove("BBC_TOKEN")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // Without a token, forcing is refused.
    let o = cli(&["force", "core-linux", "--url", &url]);
    assert!(!o.status.success());
    assert!(crate::common::stderr(&o).contains("401"), "{o:?}");
    // A wrong token is refused by the master; nothing is stored.
    let wrong = dir.join("wrong.token");
    std::fs::write(&wrong, WRONG).unwrap_or_else(|e| panic!("{e}"));
    let o = cli(&[
        "login",
        "--url",
        &url,
        "--token-file",
        &wrong.to_string_lossy(),
    ]);
    assert!(!o.status.success(), "{o:?}");
    assert!(
        crate::common::stderr(&o).contains("refused the token"),
        "{o:?}"
    );
    assert!(!home.join("bbc/tokens").exists());
    // alice's token: logged in as alice, and `bbc force` uses it.
    let good = dir.join("alice.token");
    std::fs::write(&good, "alice-tok-0005\n").unwrap_or_else(|e| panic!("{e}"));
    let o = cli(&[
        "login",
        "--url",
        &url,
        "--token-file",
        &good.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("as alice"), "{o:?}");
    let stored = home.join("bbc/tokens");
    let mode = std::fs::metadata(&stored)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_default();
    assert_eq!(mode, 0o600);
    let o = cli(&["force", "core-linux", "--url", &url]);
    assert!(o.status.success(), "{o:?}");
    let audit = crate::common::http_with(
        "GET",
        &m.http,
        "/api/v1/audit",
        &[("authorization", "Bearer admin-tok-0002")],
        None,
    );
    assert!(audit.1.contains("\"alice\""), "{audit:?}");
}
