//! Faults an operator meets over months and bugs found by reading the code
//! against the docs, reproduced with real processes: each test failed
//! before its fix.

pub(crate) use bbc_testkit::SmallDisk;

use crate::common::{get_json, http, temp_dir, wait_for, write_secret, Master};

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

/// The shape most of these tests use: worker `w` (password from the secret
/// `w`), a force scheduler, and builder `b` on `w` with `settings` and
/// `steps` (KDL lines).
fn one_builder(settings: &str, steps: &str) -> String {
    format!(
        "worker \"w\" password=(secret)\"w\"\nscheduler \"force\" kind=\"force\" {{\n    builders \"b\"\n}}\nbuilder \"b\" {{\n    workers \"w\"\n    {settings}\n    steps {{\n        {steps}\n    }}\n}}\n"
    )
}

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

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// A worker killed with SIGKILL cannot kill its commands' process groups;
/// they used to keep running and overlap the rerun of their build in the
/// same directory. The next worker on that basedir kills them before it
/// runs anything.
#[test]
fn processes_left_by_a_sigkilled_worker_die_before_the_rerun() {
    let dir = temp_dir("orphans");
    write_secret(&dir, "w", "pw-orphans-1234");
    let pidfile = dir.join("sleeper.pid");
    let marker = dir.join("first-run");
    let config = one_builder(
        "",
        &format!(
            r#"shell "if [ -e {marker} ]; then echo rerun; else touch {marker}; sleep 300 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait; fi" name="work""#,
            marker = marker.display(),
            pidfile = pidfile.display()
        ),
    );
    let m = Master::start(&dir, &config);
    let mut w = m.worker("w", "pw-orphans-1234");
    m.wait_connected("w");
    let set = m.force("b", "{}");
    let sleeper: i32 = wait_for("the step to start its sleeper", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    signal(w.0.id(), libc::SIGKILL);
    let _ = w.0.wait();
    assert!(
        alive(sleeper),
        "the sleeper should outlive a SIGKILLed worker"
    );

    let _w = m.worker("w", "pw-orphans-1234");
    let build = m.wait_buildset(set);
    assert_eq!(build["result"], "success", "the rerun: {build}");
    assert!(
        !alive(sleeper),
        "process {sleeper} of the killed worker's build still runs beside the rerun"
    );
}

/// The live log of a step that printed a line and then waits shows that
/// line. The redactor used to hold back `longest secret − 1` bytes until
/// more output came: with a 64-hex secret configured, a step that printed
/// one line and slept showed nothing until it ended.
#[test]
fn a_quiet_step_shows_its_last_line_while_it_waits() {
    let dir = temp_dir("quiet_tail");
    let token = "0123456789abcdef".repeat(4);
    write_secret(&dir, "w", &token);
    let go = dir.join("go");
    let config = one_builder(
        "",
        &format!(
            r#"shell "echo waiting-for-go; while [ ! -e {go} ]; do sleep 0.05; done" name="wait""#,
            go = go.display()
        ),
    );
    let m = Master::start(&dir, &config);
    let _w = m.worker("w", &token);
    m.wait_connected("w");
    let set = m.force("b", "{}");
    let build = wait_for("the build to start", || {
        let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
        r["requests"].as_array()?.first()?["build"].as_u64()
    });
    wait_for("the waiting step's line in its live log", || {
        let (status, body) = http(
            "GET",
            &m.http,
            &format!("/api/v1/builds/{build}/steps/0/log"),
            None,
        );
        (status == 200 && body.contains("waiting-for-go\n")).then_some(())
    });
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
}

/// Builder `max-time` limits the whole build (docs/language.md), not each
/// command: three steps that each fit in it must not all run.
#[test]
fn builder_max_time_limits_the_whole_build() {
    let dir = temp_dir("build_max_time");
    write_secret(&dir, "w", "pw-max-time-1234");
    let config = &one_builder(
        r#"max-time "1s""#,
        r#"shell "sleep 0.7" name="one"
shell "sleep 0.7" name="two"
shell "sleep 0.7" name="three"
shell "echo cleanup" name="cleanup" always-run=#true"#,
    );
    let m = Master::start(&dir, config);
    let _w = m.worker("w", "pw-max-time-1234");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "failure", "{b}");
    let steps = b["steps"].as_array().unwrap_or_else(|| panic!("{b}"));
    let state = |i: usize| steps[i]["state_string"].as_str().unwrap_or("").to_string();
    // However the time falls (a slow machine may stop step one already),
    // the third step never runs and the limit is named where it struck.
    assert_eq!(steps[2]["result"], "skipped", "{b}");
    assert!(
        (0..3).any(
            |i| state(i).contains("the build ran longer than its max-time")
                || state(i) == "skipped (the build reached its max-time)"
        ),
        "{b}"
    );
    assert_eq!(steps[3]["result"], "success", "cleanup still runs: {b}");
}

/// A step whose output does not fit on the disk: the log used to be
/// reported complete and the step successful, with one identical error
/// line per output chunk. Now the step ends as `exception` saying how much
/// was lost, and the master says so once.
#[test]
fn a_log_cut_short_by_a_full_disk_is_reported() {
    let dir = temp_dir("full_disk_log");
    let Some(disk) = SmallDisk::mount(&dir.join("state"), "24m") else {
        return;
    };
    write_secret(&dir, "w", "pw-full-disk-1234");
    let go = dir.join("go");
    let config = one_builder(
        "",
        &format!(
            r#"shell "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 30000000; while [ ! -e {go} ]; do sleep 0.05; done" name="loud""#,
            go = go.display()
        ),
    );
    let m = Master::start_logged(&dir, &config);
    let _w = m.worker("w", "pw-full-disk-1234");
    m.wait_connected("w");
    // Leave about 4 MB: the 30 MB of output cannot fit.
    let ballast = disk.fill_but("ballast", 4 << 20);
    let set = m.force("b", "{}");
    let log = dir.join("master.log");
    wait_for("the master to report the lost log", || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("could not be stored")
            .then_some(())
    });
    // Space comes back before the step ends, so its end can be recorded.
    std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "exception", "{b}");
    let step = &b["steps"][0];
    assert_eq!(step["result"], "exception", "{b}");
    let state = step["state_string"].as_str().unwrap_or("");
    assert!(
        state.contains("could not be stored (the log is incomplete)"),
        "{b}"
    );
    let lost = step["log_lost"].as_u64().unwrap_or(0);
    assert!(lost > 0, "{b}");
    let stored = step["log_len"].as_u64().unwrap_or(0);
    assert!(stored < 30_000_000 && stored + lost >= 30_000_000, "{b}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let reports = text.matches("could not be stored").count();
    assert_eq!(
        reports, 1,
        "one line for the lost log, not one per chunk:\n{text}"
    );
    drop(m);
}

/// POSTs a force of builder `b`; returns the status and the build set id.
fn force(m: &Master, body: &str) -> (u16, Option<u64>) {
    let (status, resp) = http("POST", &m.http, "/api/v1/builders/b/force", Some(body));
    let set = serde_json::from_str::<serde_json::Value>(&resp)
        .ok()
        .and_then(|v| v["buildset"]["id"].as_u64());
    (status, set)
}

/// The state disk fills while a build runs, so that the store cannot
/// record the build's end. That build used to stay "running" for ever, and
/// the store refused every later write ("Previous I/O error occurred.
/// Please close and re-open the database.") until the master restarted,
/// space or not: forces got 500. Now the build's end is tried again until
/// the disk has room, the store reopens its database by itself, and
/// nothing acknowledged is lost.
#[test]
fn a_build_ending_on_a_full_disk_is_recorded_once_space_returns() {
    let dir = temp_dir("full_disk_store");
    let Some(disk) = SmallDisk::mount(&dir.join("state"), "24m") else {
        return;
    };
    write_secret(&dir, "w", "pw-full-store-1234");
    let go = dir.join("go");
    let config = one_builder(
        "",
        &format!(
            r#"shell "echo started; while [ ! -e {go} ]; do sleep 0.05; done" name="wait""#,
            go = go.display()
        ),
    );
    let mut m = Master::start_logged(&dir, &config);
    let _w = m.worker("w", "pw-full-store-1234");
    m.wait_connected("w");
    // The build's end rewrites its build set, whose 1.5 MB reason needs a
    // large block of new pages: a commit that small could fit in pages the
    // database file already holds, this one cannot, so it fails for
    // certain once the disk is full.
    let body = serde_json::json!({ "reason": "r".repeat(1_500_000) }).to_string();
    let (status, first) = force(&m, &body);
    assert_eq!(status, 201);
    let first = first.unwrap_or_else(|| panic!("no build set"));
    let build = wait_for("the build to start", || {
        let r = get_json(&m.http, &format!("/api/v1/requests?buildset={first}"));
        r["requests"].as_array()?.first()?["build"].as_u64()
    });
    wait_for("the step's output in its log", || {
        let (status, body) = http(
            "GET",
            &m.http,
            &format!("/api/v1/builds/{build}/steps/0/log"),
            None,
        );
        (status == 200 && body.contains("started\n")).then_some(())
    });
    // Acknowledged before the disk fills, waiting behind the first build.
    let mut acked = vec![first];
    for _ in 0..3 {
        let (status, set) = force(&m, "{}");
        assert_eq!(status, 201);
        acked.extend(set);
    }

    let ballast = disk.fill("ballast");
    // The database file may still hold enough free pages for a 1.5 MB
    // commit (CI met that: every build's end fitted, and none failed).
    // Forces as large as the first set are taken until one is refused:
    // from then on no commit that size fits, so the first build's end,
    // which rewrites its 1.5 MB set, fails for certain.
    let mut refused = false;
    for _ in 0..40 {
        match force(&m, &body) {
            (201, set) => acked.extend(set),
            (500, _) => {
                refused = true;
                break;
            }
            (status, _) => panic!("a force on a full disk answered {status}"),
        }
    }
    assert!(
        refused,
        "40 forces of 1.5 MB each fitted on a full 24 MB disk"
    );
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("master.log");
    // Which build's end meets the full disk first is the first build's
    // (its set's 1.5 MB reason needs new pages), unless the refused force
    // left room after all; then the next one's, which starts as soon as
    // the first ends.
    let failed = "cannot record the end of build ";
    let stuck: u64 = wait_for("the master to fail to record a build's end", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let at = text.find(failed)? + failed.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));

    // (a) The build ends, with its result.
    let b = m.wait_buildset(first);
    assert_eq!(b["id"].as_u64(), Some(build), "{b}");
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["state_string"], "build successful", "{b}");
    assert_eq!(b["steps"][0]["result"], "success", "{b}");
    // (b) The same master takes a force again.
    let after = m.force_and_wait("b", "{}");
    assert_eq!(after["result"], "success", "{after}");
    // (c) Every request acknowledged before the disk filled ran. A build
    // that started while the disk was still full (when the first build's
    // end fitted in free pages, the next one starts at once) ends in
    // exception because its log could not be stored, and says so; every
    // other one succeeds.
    for set in acked {
        let b = m.wait_buildset(set);
        if b["result"] != "success" {
            assert_eq!(b["result"], "exception", "build set {set}: {b}");
            let why = b["steps"][0]["state_string"].as_str().unwrap_or_default();
            assert!(
                why.contains("could not be stored") && why.contains("the disk is full"),
                "build set {set}: {b}"
            );
        }
    }
    assert!(matches!(m.proc.0.try_wait(), Ok(None)), "the master exited");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("the disk is full ("), "{text}");
    assert!(
        text.contains(&format!("recorded the end of build {stuck}")),
        "{text}"
    );
    drop(m);
}

/// `GET /api/v1/health` says whether the store can write: 503 with the
/// reason while the state disk is full, 200 again once space returns, with
/// no restart. A force refused with 500 meanwhile used to leave no trace
/// in the master's log; every 5xx answer is logged now.
#[test]
fn health_fails_while_the_state_disk_is_full_and_recovers() {
    let dir = temp_dir("full_disk_health");
    let Some(disk) = SmallDisk::mount(&dir.join("state"), "24m") else {
        return;
    };
    write_secret(&dir, "w", "pw-health-1234");
    // The worker never connects: the forced builds only wait in the queue.
    let config = &one_builder("", r#"shell "true""#);
    let mut m = Master::start_logged(&dir, config);
    let health = || {
        let (status, body) = http("GET", &m.http, "/api/v1/health", None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, v)
    };
    let (status, v) = health();
    assert_eq!((status, &v["status"]), (200, &"ok".into()), "{v}");

    let ballast = disk.fill("ballast");
    // A commit this large needs new pages, which a full disk refuses (see
    // a_build_ending_on_a_full_disk_is_recorded_once_space_returns).
    let body = serde_json::json!({ "reason": "r".repeat(1_500_000) }).to_string();
    let (status, _) = force(&m, &body);
    assert_eq!(status, 500);
    let failing = wait_for("health to fail", || {
        let (status, v) = health();
        (status == 503).then_some(v)
    });
    assert_eq!(failing["status"], "failing", "{failing}");
    assert!(
        failing["store"].as_str().is_some_and(|s| !s.is_empty()),
        "{failing}"
    );
    // The metrics make the same check.
    let healthy = || {
        crate::test_metrics::scrape(&m.http)
            .get("bbc_store_healthy")
            .copied()
    };
    assert_eq!(healthy(), Some(0.0));
    let log = dir.join("master.log");
    let text = wait_for("the 500 in the log", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("POST /api/v1/builders/b/force answered 500")
            .then_some(text)
    });
    assert!(text.contains("ERROR"), "{text}");

    std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));
    wait_for("health to recover", || {
        let (status, v) = health();
        (status == 200 && v["status"] == "ok").then_some(())
    });
    assert_eq!(healthy(), Some(1.0));
    // The same master takes a force again.
    let (status, _) = force(&m, "{}");
    assert_eq!(status, 201);
    assert!(matches!(m.proc.0.try_wait(), Ok(None)), "the master exited");
    drop(m);
}

/// The disk fills while a request waits for a worker. Every try to start
/// its build failed, gave the worker back and woke the assignment loop,
/// which tried again straight away: one "cannot start a build" line per
/// try, as fast as the store could fail (thousands a second when it fails
/// fast), for as long as the disk stayed full. Now the loop backs off (100 ms, doubling up to 5 s), says so
/// once per step, and starts the build once space returns.
#[test]
fn starting_builds_on_a_full_disk_backs_off_until_space_returns() {
    let dir = temp_dir("full_disk_start");
    let Some(disk) = SmallDisk::mount(&dir.join("state"), "24m") else {
        return;
    };
    write_secret(&dir, "w", "pw-full-start-1234");
    let m = Master::start_logged(&dir, CONFIG);
    // No worker yet: the request waits. The build's properties hold the
    // 1.5 MB reason, so its start is a commit that needs a large block of
    // new pages: it fails for certain once the disk is full.
    let body = serde_json::json!({ "reason": "r".repeat(1_500_000) }).to_string();
    let (status, set) = force(&m, &body);
    assert_eq!(status, 201);
    let set = set.unwrap_or_else(|| panic!("no build set"));
    let ballast = disk.fill("ballast");
    // A free worker for the pending request. While the disk is full, wait
    // on the log only (the API reads the store).
    let _w = m.worker("w", "pw-full-start-1234");
    let log = dir.join("master.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let tries = |text: &str| text.matches("cannot start a build of b").count();
    // Four back-off steps: the loop tries again 100, 200, then 400 ms
    // after a failure, and says so once each time. Without the back-off,
    // each try followed the last at once, with a line each.
    let step_800 = "next try in 800 ms";
    let text = wait_for(
        "the loop to back off to 800 ms (or to try 20 times)",
        || {
            let text = read();
            (text.contains(step_800) || tries(&text) >= 20).then_some(text)
        },
    );
    let upto = text.find(step_800).map_or(text.as_str(), |at| &text[..at]);
    assert_eq!(
        tries(upto),
        4,
        "one line per back-off step (100, 200, 400, 800 ms):\n{text}"
    );
    assert!(
        text.contains("starting no builds for 100 ms"),
        "the first failure says the loop backs off:\n{text}"
    );
    assert!(!text.contains("build started"), "{text}");
    std::fs::remove_file(&ballast).unwrap_or_else(|e| panic!("{e}"));

    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    let text = wait_for("the build's end in the log", || {
        let text = read();
        text.contains("build finished").then_some(text)
    });
    assert!(
        text.contains("the store starts builds again"),
        "the end of the back-off is logged:\n{text}"
    );
    assert_eq!(text.matches("build started").count(), 1, "{text}");
    drop(m);
}
