//! `Shared::apply` on an in-process master (no workers): validation,
//! secrets, the history, pollers stopping and starting.

use super::*;
use crate::master::{start, MasterConfig};
use std::time::Duration;

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
            ..MasterConfig::default()
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
    let good = fixture!("apply_base");
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
    let mut g = fixture!("plain_worker_password");
    let hash = g.workers[0].hash.clone();
    assert!(has_plain_credentials(&g));
    assert!(!has_plain_credentials(&fixture!("apply_base")));
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
    let h = master(dir.path(), fixture!("apply_with_poller")).await;
    let s = h.shared.clone();
    assert!(h.pollers.is_running("repo"));
    let first = s.config_info();
    assert_eq!(first.via, "start");

    // A secret the master does not have: refused, naming it; nothing changes.
    let missing = fixture!("apply_with_missing_secret");
    let e = s.apply(missing, "api", None).await.err();
    assert!(
        matches!(&e, Some(ApplyError::Secrets(m)) if m.contains("w2-secret")),
        "{e:?}"
    );
    assert_eq!(s.config_info().hash, first.hash);

    // Planned against another config: refused.
    let e = s
        .apply(fixture!("apply_base"), "api", Some("0000"))
        .await
        .err();
    assert!(matches!(e, Some(ApplyError::Stale { .. })), "{e:?}");

    // The same config again: nothing changes.
    let r = s
        .apply(fixture!("apply_with_poller"), "api", Some(&first.hash))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.changed);
    assert_eq!(r.hash, first.hash);

    // Without the poller: it stops (it would otherwise sleep for an hour).
    let r = s
        .apply(fixture!("apply_base"), "api", Some(&first.hash))
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
    until("the poller to stop", || !h.pollers.is_running("repo")).await;
    assert_eq!(s.graph().change_sources.len(), 0);
    assert_eq!(s.config_info().via, "api");

    // Back again: it starts.
    let r = s
        .apply(fixture!("apply_with_poller"), "sighup", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.changed);
    assert!(h.pollers.is_running("repo"));

    let hist = history(&s).await.unwrap_or_else(|e| panic!("{e}"));
    let vias: Vec<&str> = hist.iter().map(|h| h.via.as_str()).collect();
    assert_eq!(vias, ["sighup", "api", "start"]);
    assert_eq!(hist[2].hash, first.hash);
    h.shutdown().await;
}

#[tokio::test]
async fn listen_addresses_and_state_need_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let h = master(dir.path(), fixture!("apply_base")).await;
    let g = fixture!("apply_master_listen_changed");
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
