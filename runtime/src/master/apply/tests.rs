//! `Shared::apply` on an in-process master (no workers): validation,
//! secrets, the history, pollers stopping and starting.

use super::*;
use crate::master::{start, MasterConfig};

fn compile(src: &str) -> Graph {
    let c = bbc_compiler::compile_source("t.kdl", src.to_string());
    assert_eq!(c.errors(), 0, "{:?}", c.diagnostics);
    c.graph.unwrap_or_else(|| panic!("no graph"))
}

const BASE: &str = r#"worker "w" password=(secret)"w"
builder "b" {
    workers "w"
    steps {
        shell "true"
    }
}
"#;

fn with(extra: &str) -> Graph {
    compile(&format!("{BASE}{extra}"))
}

async fn master(dir: &std::path::Path, g: Graph) -> crate::master::MasterHandle {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(secrets.join("w"), "pw-1234").unwrap_or_else(|e| panic!("{e}"));
    start(
        g,
        MasterConfig {
            state_dir: dir.join("state"),
            secrets_dir: Some(secrets),
            worker_listen: Some("127.0.0.1:0".into()),
            http_listen: Some("127.0.0.1:0".into()),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn validate_finds_what_the_compiler_would_have() {
    let good = with("");
    assert_eq!(validate(&good), Ok(()));
    let mut g = good.clone();
    g.version = 99;
    let e = validate(&g).err().unwrap_or_default();
    assert!(e.contains("version 99 is not supported"), "{e}");
    let mut g = good.clone();
    g.builders[0].workers = vec!["nope".into()];
    let e = validate(&g).err().unwrap_or_default();
    assert!(
        e.contains("builder `b` names an unknown worker `nope`"),
        "{e}"
    );
    let mut g = good.clone();
    let mut b2 = g.builders[0].clone();
    b2.name = "a".into();
    g.builders.push(b2);
    let e = validate(&g).err().unwrap_or_default();
    assert!(e.contains("not sorted"), "{e}");
    let mut g = good;
    let b = g.builders[0].clone();
    g.builders.push(b);
    let e = validate(&g).err().unwrap_or_default();
    assert!(e.contains("builder `b` is defined twice"), "{e}");
}

#[test]
fn plain_credentials_are_masked_and_hashes_kept() {
    let mut g = compile(
        "worker \"w\" password=\"plain-pw\"\nbuilder \"b\" {\n workers \"w\"\n steps {\n shell \"true\"\n }\n}\n",
    );
    let hash = g.workers[0].hash.clone();
    assert!(has_plain_credentials(&g));
    assert!(!has_plain_credentials(&with("")));
    redact_credentials(&mut g);
    assert_eq!(
        g.workers[0].password,
        bbc_graph::Credential::Plain("********".into())
    );
    assert_eq!(g.workers[0].hash, hash);
}

#[tokio::test]
async fn apply_checks_secrets_records_history_and_reconciles_pollers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let poller = r#"change-source "repo" kind="git-poller" {
    repo "/nonexistent/bbc-test-repo.git"
    poll-interval "1h"
}
"#;
    let h = master(dir.path(), with(poller)).await;
    let s = h.shared.clone();
    let state = s.state_dir.clone();
    assert!(crate::changes::poller::is_running(&state, "repo"));
    let first = s.config_info();
    assert_eq!(first.via, "start");

    // A secret the master does not have: refused, naming it; nothing changes.
    let missing = with(&format!(
        "{poller}worker \"w2\" password=(secret)\"w2-secret\"\n"
    ));
    let e = s.apply(missing, "api", None).await.err();
    assert!(
        matches!(&e, Some(ApplyError::Secrets(m)) if m.contains("w2-secret")),
        "{e:?}"
    );
    assert_eq!(s.config_info().hash, first.hash);

    // Planned against another config: refused.
    let e = s.apply(with(""), "api", Some("0000")).await.err();
    assert!(matches!(e, Some(ApplyError::Stale { .. })), "{e:?}");

    // The same config again: nothing changes.
    let r = s
        .apply(with(poller), "api", Some(&first.hash))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.changed);
    assert_eq!(r.hash, first.hash);

    // Without the poller: it stops (it would otherwise sleep for an hour).
    let r = s
        .apply(with(""), "api", Some(&first.hash))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.changed);
    assert_eq!(r.previous_hash, first.hash);
    assert!(
        r.entities.iter().any(|e| e.kind == "change-source"
            && e.change == "removed"
            && e.effect == "poller stopped"),
        "{r:?}"
    );
    until("the poller to stop", || {
        !crate::changes::poller::is_running(&state, "repo")
    })
    .await;
    assert_eq!(s.graph().change_sources.len(), 0);
    assert_eq!(s.config_info().via, "api");

    // Back again: it starts.
    let r = s
        .apply(with(poller), "sighup", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.changed);
    assert!(crate::changes::poller::is_running(&state, "repo"));

    let hist = history(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let vias: Vec<&str> = hist.iter().map(|h| h.via.as_str()).collect();
    assert_eq!(vias, ["sighup", "api", "start"]);
    assert_eq!(hist[2].hash, first.hash);
    h.shutdown().await;
}

#[tokio::test]
async fn listen_addresses_and_state_need_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let h = master(dir.path(), with("")).await;
    let g = compile(&format!(
        "master {{\n    listen workers=\"127.0.0.1:1\" http=\"127.0.0.1:2\"\n    title \"new\"\n}}\n{BASE}"
    ));
    let r = h
        .shared
        .apply(g, "api", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.restart_needed.len(), 2, "{r:?}");
    assert!(r.restart_needed[0].contains("worker listen address"));
    assert!(r.restart_needed[1].contains("HTTP listen address"));
    let m = r.entities.iter().find(|e| e.kind == "master");
    assert!(
        m.is_some_and(|m| m.effect.contains("title: apply now")),
        "{r:?}"
    );
    assert_eq!(h.shared.graph().master.title, "new");
    // Still reported while it differs from what the master started with.
    assert_eq!(h.shared.config_info().restart_needed.len(), 2);
    h.shutdown().await;
}
