//! A real `bbc master` on PostgreSQL (`master { store "postgres://…" }`):
//! a forced build runs on a real worker, the API reads it back, the rows
//! are in the database (not in a redb file), and after a restart of the
//! master the build and its log are still there.
//!
//! `BBC_POSTGRES_URL` names the server (`.ci/run` makes one); without it
//! the test says it skipped, unless `BBC_REQUIRE_POSTGRES=1`.

use std::process::Command;

use crate::common::{get_json, temp_dir, wait_for, write_secret, Master};

pub(crate) fn server() -> Option<String> {
    match std::env::var("BBC_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("BBC_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL is required (BBC_REQUIRE_POSTGRES=1) but BBC_POSTGRES_URL is not set");
            }
            eprintln!("skipped: no PostgreSQL (set BBC_POSTGRES_URL)");
            None
        }
    }
}

/// `postgres://user:password@rest` as the URL without the password, and
/// the password.
pub(crate) fn split_password(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("BBC_POSTGRES_URL is not a postgres:// URL"));
    let (auth, host) = rest.split_once('@').expect("a user in BBC_POSTGRES_URL");
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    (format!("postgres://{user}@{host}"), password.to_string())
}

/// Runs SQL through `psql` (PostgreSQL's own client) and returns its
/// unaligned output.
pub(crate) fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Drops the test's schema at the end, also when it fails.
pub(crate) struct DropSchema<'a>(pub &'a str, pub String);

impl Drop for DropSchema<'_> {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", self.0, "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.1))
            .output();
    }
}

#[test]
fn a_master_on_postgres_keeps_its_builds_across_a_restart() {
    let Some(url) = server() else {
        return;
    };
    let (bare, password) = split_password(&url);
    let schema = format!("bbcit_{}", std::process::id());
    let _cleanup = DropSchema(&url, schema.clone());
    let dir = temp_dir("postgres_master");
    write_secret(&dir, "w", "pw-postgres-1234");
    write_secret(&dir, "pg", &password);
    let config = format!(
        r#"master {{
    store "{bare}" password=(secret)"pg" schema="{schema}"
}}
worker "w" password=(secret)"w"
scheduler "force" kind="force" {{
    builders "b"
}}
builder "b" {{
    workers "w"
    steps {{
        shell "echo hello from postgres" name="greet"
    }}
}}
"#
    );
    let m = Master::start(&dir, &config);
    let w = m.worker("w", "pw-postgres-1234");
    m.wait_connected("w");
    let build = m.force_and_wait("b", "{}");
    assert_eq!(build["result"], "success", "{build}");
    let id = build["id"].as_u64().expect("a build id");
    let log = m.log(id, 0);
    assert!(log.contains("hello from postgres"), "{log}");
    // The rows are in PostgreSQL, in the configured schema; the state
    // directory has no redb database.
    assert_eq!(
        psql(&url, &format!("SELECT count(*) FROM {schema}.builds")),
        "1"
    );
    assert_eq!(
        psql(
            &url,
            &format!("SELECT sum(len) > 0 FROM {schema}.logs WHERE build = {id}")
        ),
        "t"
    );
    assert!(
        !dir.join("state").join("bbc.redb").exists(),
        "a redb file was made beside the PostgreSQL store"
    );
    // The password is in no answer of the API.
    let cfg = get_json(&m.http, "/api/v1/config");
    assert!(!cfg.to_string().contains(&password) || password.is_empty());

    drop(w);
    drop(m);
    let m = Master::start(&dir, &config);
    let again = get_json(&m.http, &format!("/api/v1/builds/{id}"))["build"].clone();
    assert_eq!(again["result"], "success", "{again}");
    assert_eq!(again["number"], build["number"]);
    assert!(m.log(id, 0).contains("hello from postgres"));
    // And the restarted master goes on numbering where it was.
    let _w = m.worker("w", "pw-postgres-1234");
    m.wait_connected("w");
    let next = m.force_and_wait("b", "{}");
    assert_eq!(next["number"], 2, "{next}");
    wait_for("two builds in PostgreSQL", || {
        (psql(&url, &format!("SELECT count(*) FROM {schema}.builds")) == "2").then_some(())
    });
}
