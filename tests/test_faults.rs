//! Faults an operator meets over months, reproduced with real processes:
//! each test failed before its fix.

use crate::common::{get_json, temp_dir, wait_for, write_secret, Master};

const CONFIG: &str = r#"worker "w" password=(secret)"w" keepalive="1s"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w"
    steps {
        shell "echo still-here" name="hello"
    }
}
"#;

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child this test started and still owns.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

fn connected(m: &Master, name: &str) -> Option<bool> {
    let v = get_json(&m.http, "/api/v1/workers");
    v["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["connected"].as_bool())
}

/// A worker stopped (SIGSTOP) for longer than its keepalive allows and
/// then resumed finds its connection dead on both halves at once; it used
/// to panic ("JoinHandle polled after completion") in about half of such
/// resumes and never reconnect. Three rounds make a regression near certain
/// to show.
#[test]
fn a_worker_paused_past_its_keepalive_reconnects_when_resumed() {
    let dir = temp_dir("paused_worker");
    write_secret(&dir, "w", "pw-paused-1234");
    let m = Master::start(&dir, CONFIG);
    let mut w = m.worker("w", "pw-paused-1234");
    m.wait_connected("w");
    for round in 1..=3 {
        signal(w.0.id(), libc::SIGSTOP);
        // The master gives up on the silent connection.
        wait_for(
            &format!("round {round}: master to drop the paused worker"),
            || (connected(&m, "w") == Some(false)).then_some(()),
        );
        signal(w.0.id(), libc::SIGCONT);
        m.wait_connected("w");
        assert!(
            matches!(w.0.try_wait(), Ok(None)),
            "round {round}: the worker exited after being resumed"
        );
    }
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
}
