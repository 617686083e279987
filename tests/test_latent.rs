//! Latent workers (docs/latent-workers.md): started by the master when a
//! build needs one, stopped when idle.
//!
//! `kind="command"`: real shell commands that start a real `bbc worker`
//! process and kill it. `kind="docker"`: the real Docker engine with an
//! image the test builds from a minimal root file system (the `bbc`
//! binary, the shared libraries `ldd` lists, `sh` and `sleep`) and
//! removes after; nothing is pulled. Without an engine the docker test
//! says it skipped, unless `BBC_REQUIRE_DOCKER=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{get_json, http, temp_dir, wait_for, write_secret, Master};

const BBC: &str = env!("CARGO_BIN_EXE_bbc");

/// A start script that runs `bbc worker` in the background with what the
/// master passes in the environment, and records what it was given; a
/// stop script that kills it.
fn scripts(dir: &Path) {
    let start = format!(
        r#"set -e
echo "$BBC_WORKER_NAME $BBC_MASTER" >> {d}/starts
printf '%s\n' "$BBC_WORKER_PASSWORD" >> {d}/tokens
{bbc} worker --master "$BBC_MASTER" --name "$BBC_WORKER_NAME" --basedir {d}/wd > {d}/worker.log 2>&1 &
echo $! > {d}/worker.pid
"#,
        d = dir.display(),
        bbc = BBC
    );
    std::fs::write(dir.join("start.sh"), start).unwrap_or_else(|e| panic!("{e}"));
    let stop = format!(
        r#"kill "$(cat {d}/worker.pid)" 2>/dev/null || true
echo "stopped $BBC_WORKER_NAME password=${{BBC_WORKER_PASSWORD:-none}}" >> {d}/stops
"#,
        d = dir.display()
    );
    std::fs::write(dir.join("stop.sh"), stop).unwrap_or_else(|e| panic!("{e}"));
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The worker's `latent` object in `GET /api/v1/workers`.
fn latent_of(m: &Master, name: &str) -> serde_json::Value {
    let v = get_json(&m.http, "/api/v1/workers");
    v["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == name))
        .map(|w| w["latent"].clone())
        .unwrap_or_default()
}

fn connected(m: &Master, name: &str) -> bool {
    let v = get_json(&m.http, "/api/v1/workers");
    v["workers"].as_array().is_some_and(|ws| {
        ws.iter()
            .any(|w| w["name"] == name && w["connected"] == true)
    })
}

/// The builds of `builder` with result `result`.
fn builds_with(m: &Master, builder: &str, result: &str) -> Vec<serde_json::Value> {
    let v = get_json(
        &m.http,
        &format!("/api/v1/builds?builder={builder}&result={result}"),
    );
    v["builds"].as_array().cloned().unwrap_or_default()
}

fn command_config(dir: &Path, name: &str, start: &str, steps: &str) -> String {
    format!(
        r#"worker "{name}" password=(secret)"w" kind="command" idle="1s" start-timeout="60s" start="{start}" stop="sh {d}/stop.sh"
scheduler "force" kind="force" {{
    builders "b"
}}
builder "b" {{
    workers "{name}"
    steps {{
        {steps}
    }}
}}
"#,
        d = dir.display()
    )
}

#[test]
fn command_worker_starts_for_a_build_and_stops_when_idle() {
    let dir = temp_dir("latent-cmd");
    scripts(&dir);
    write_secret(&dir, "w", "configured-pass-4711");
    let cfg = command_config(
        &dir,
        "lat-cmd",
        &format!("sh {}/start.sh", dir.display()),
        r#"shell "echo built-by-$PPID-on-latent""#,
    );
    let m = Master::start_logged(&dir, &cfg);
    // Nothing is started before a build needs it.
    assert!(!dir.join("starts").exists());
    assert!(!connected(&m, "lat-cmd"));
    let l = latent_of(&m, "lat-cmd");
    assert_eq!(l["kind"], "command", "{l}");
    assert_eq!(l["phase"], "stopped", "{l}");
    let set = m.force("b", "{}");
    let b = m.wait_buildset(set);
    // For docs/perf.md: request → first step on a cold command worker.
    let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
    let submitted = r["requests"][0]["submitted_at"].as_i64().unwrap_or(0);
    let first_step = b["steps"][0]["started_at"].as_i64().unwrap_or(0);
    eprintln!(
        "cold command worker: request → first step {} ms",
        first_step - submitted
    );
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["worker"], "lat-cmd", "{b}");
    let id = b["id"].as_u64().unwrap_or(0);
    assert!(m.log(id, 0).contains("-on-latent"), "{}", m.log(id, 0));
    // The start command got the worker's name and the master's address.
    let starts = lines(&dir.join("starts"));
    assert_eq!(starts, vec![format!("lat-cmd {}", m.workers)]);
    // Idle for its second: the stop command runs (without the password)
    // and the worker is gone.
    wait_for("the idle worker's stop", || {
        (!lines(&dir.join("stops")).is_empty()).then_some(())
    });
    assert_eq!(
        lines(&dir.join("stops")),
        vec!["stopped lat-cmd password=none".to_string()]
    );
    wait_for("the worker to disconnect", || {
        (!connected(&m, "lat-cmd")).then_some(())
    });
    // The next build starts it again, with a new one-time password.
    let b2 = m.force_and_wait("b", "{}");
    assert_eq!(b2["result"], "success", "{b2}");
    assert_eq!(lines(&dir.join("starts")).len(), 2);
    let tokens = lines(&dir.join("tokens"));
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    for t in &tokens {
        assert_eq!(t.len(), 32, "{t}");
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
        assert_ne!(t, "configured-pass-4711");
    }
    assert_ne!(tokens[0], tokens[1]);
    // The one-time passwords are in no log of the master.
    let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
    assert!(log.contains("latent worker started"), "{log}");
    assert!(!tokens.iter().any(|t| log.contains(t.as_str())), "{log}");
}

#[test]
fn command_worker_killed_mid_build_retries_on_a_new_one() {
    let dir = temp_dir("latent-cmd-kill");
    scripts(&dir);
    write_secret(&dir, "w", "configured-pass-4712");
    let marker = dir.join("first-run");
    let cfg = command_config(
        &dir,
        "lat-kill",
        &format!("sh {}/start.sh", dir.display()),
        &format!(
            r#"shell "if [ -e {m} ]; then echo second-run; else touch {m}; sleep 60; fi""#,
            m = marker.display()
        ),
    );
    let m = Master::start_logged(&dir, &cfg);
    let set = m.force("b", "{}");
    wait_for("the first run's step", || marker.exists().then_some(()));
    let pid = std::fs::read_to_string(dir.join("worker.pid")).unwrap_or_default();
    let killed = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed, "kill -9 {pid}");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    assert!(
        m.log(b["id"].as_u64().unwrap_or(0), 0)
            .contains("second-run"),
        "{b}"
    );
    let retried = builds_with(&m, "b", "retry");
    assert_eq!(retried.len(), 1, "{retried:?}");
    // The dead worker was cleaned up with the stop command, and a new one
    // started for the rerun.
    assert!(!lines(&dir.join("stops")).is_empty());
    assert_eq!(lines(&dir.join("starts")).len(), 2);
}

#[test]
fn a_failing_start_ends_the_build_as_retry_with_the_reason() {
    let dir = temp_dir("latent-cmd-fail");
    scripts(&dir);
    write_secret(&dir, "w", "configured-pass-4713");
    let cfg = command_config(
        &dir,
        "lat-fail",
        "echo the-cloud-said-no-quota >&2; exit 7",
        r#"shell "echo never""#,
    );
    let m = Master::start_logged(&dir, &cfg);
    let set = m.force("b", "{}");
    let b = wait_for("a retried build", || {
        builds_with(&m, "b", "retry").into_iter().next()
    });
    let state = b["state_string"].as_str().unwrap_or("").to_string();
    assert!(
        state.contains("latent worker `lat-fail` did not start"),
        "{state}"
    );
    assert!(state.contains("the-cloud-said-no-quota"), "{state}");
    assert!(state.contains("will retry"), "{state}");
    // The request waits for the next start (after a back-off), still
    // pending; the master serves on.
    let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
    assert_ne!(r["requests"][0]["state"], "complete", "{r}");
    let (status, _) = http("GET", &m.http, "/api/v1/health", None);
    assert_eq!(status, 200);
    // The API says why it waits (until the next start's try).
    let l = wait_for("the failure in the workers API", || {
        let l = latent_of(&m, "lat-fail");
        (l["phase"] == "failed").then_some(l)
    });
    assert!(
        l["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("the-cloud-said-no-quota")),
        "{l}"
    );
    wait_for("the failure in the master's log", || {
        let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
        log.contains("the-cloud-said-no-quota").then_some(())
    });
    // The stop command cleaned up after the failed start.
    wait_for("the cleanup", || {
        (!lines(&dir.join("stops")).is_empty()).then_some(())
    });
}

/// Whether a Docker engine answers here; else the test skips, unless
/// `BBC_REQUIRE_DOCKER=1`.
fn docker_engine() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("BBC_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("a Docker engine is required (BBC_REQUIRE_DOCKER=1) but `docker info` failed");
        }
        eprintln!("skipped: no Docker engine answers `docker info`");
    }
    ok
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test's image and containers, removed when the test ends however
/// it ends.
struct DockerCleanup {
    image: String,
    label: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &self.label])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker")
                .args(["rm", "-f", id])
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .stdout(Stdio::null())
            .status();
    }
}

/// Copies `path` and the shared libraries it needs (as `ldd` lists them)
/// into the root file system `root`.
fn copy_with_libraries(root: &Path, path: &Path) {
    let mut files = vec![path.to_path_buf()];
    let ldd = Command::new("ldd")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ldd: {e}"));
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
            files.push(PathBuf::from(lib));
        }
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").unwrap_or(&f));
        std::fs::create_dir_all(to.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
        // The file itself, not a link to it.
        std::fs::copy(&f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

/// Builds an image from a minimal root file system: `bbc` as
/// /usr/local/bin/bbc, `sh` and `sleep`, their libraries.
fn build_image(dir: &Path, tag: &str) {
    let root = dir.join("rootfs");
    copy_with_libraries(&root, Path::new(BBC));
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(
        root.join(Path::new(BBC).strip_prefix("/").unwrap_or(Path::new(BBC))),
        root.join("usr/local/bin/bbc"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for tool in ["/bin/sh", "/bin/sleep"] {
        let real = std::fs::canonicalize(tool).unwrap_or_else(|e| panic!("{tool}: {e}"));
        copy_with_libraries(&root, &real);
        let at = root.join(&tool[1..]);
        std::fs::create_dir_all(at.parent().unwrap_or(&root)).unwrap_or_else(|e| panic!("{e}"));
        if !at.exists() {
            std::fs::copy(&real, &at).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "tar of the root file system");
    docker(&["import", &tar.to_string_lossy(), tag]);
}

#[test]
fn docker_worker_runs_builds_in_a_container_it_starts_and_stops() {
    if !docker_engine() {
        return;
    }
    let dir = temp_dir("latent-docker");
    let tag = format!("bbc-latent-test:{}", std::process::id());
    let worker = format!("dock-{}", std::process::id());
    let label = format!("label=org.bbc.worker={worker}");
    let _cleanup = DockerCleanup {
        image: tag.clone(),
        label: label.clone(),
    };
    build_image(&dir, &tag);
    write_secret(&dir, "w", "configured-pass-4714");
    let cfg = format!(
        r#"worker "{worker}" password=(secret)"w" kind="docker" image="{tag}" idle="1s"
worker "dock-bad-{pid}" password=(secret)"w" kind="docker" image="bbc-no-such-image:0"
scheduler "force" kind="force" {{
    builders "ok" "slow" "bad"
}}
builder "ok" {{
    workers "{worker}"
    steps {{
        shell "[ -e /.dockerenv ] && echo in-a-container"
    }}
}}
builder "slow" {{
    workers "{worker}"
    steps {{
        shell "echo slow-started; sleep 3; echo slow-done"
    }}
}}
builder "bad" {{
    workers "dock-bad-{pid}"
    steps {{
        shell "echo never"
    }}
}}
"#,
        pid = std::process::id()
    );
    let mut m = Master::start_logged(&dir, &cfg);
    let running = || docker(&["ps", "-q", "--filter", &label]);
    assert_eq!(running(), "", "a container before any build");

    // A build starts a container; it runs there.
    let set = m.force("ok", "{}");
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or(0);
    assert!(m.log(id, 0).contains("in-a-container"), "{}", m.log(id, 0));
    // For docs/perf.md: request → first step on a cold container.
    let r = get_json(&m.http, &format!("/api/v1/requests?buildset={set}"));
    let submitted = r["requests"][0]["submitted_at"].as_i64().unwrap_or(0);
    let first_step = b["steps"][0]["started_at"].as_i64().unwrap_or(0);
    eprintln!(
        "cold docker worker: request → first step {} ms",
        first_step - submitted
    );
    // Idle: stopped and removed.
    wait_for("the idle container's removal", || {
        let all = docker(&["ps", "-aq", "--filter", &label]);
        all.is_empty().then_some(())
    });

    // A container killed through the engine mid-build: the build ends as
    // retry and the request runs again on a new container.
    let set = m.force("slow", "{}");
    let container = wait_for("the slow step in its container", || {
        let c = running();
        let steps = get_json(&m.http, "/api/v1/builds?builder=slow&running=true");
        let on = steps["builds"].as_array().is_some_and(|b| !b.is_empty());
        (on && !c.is_empty()).then_some(c)
    });
    wait_for("the slow step's output", || {
        let v = get_json(&m.http, "/api/v1/builds?builder=slow&running=true");
        let id = v["builds"][0]["id"].as_u64()?;
        let (s, log) = http(
            "GET",
            &m.http,
            &format!("/api/v1/builds/{id}/steps/0/log"),
            None,
        );
        (s == 200 && log.contains("slow-started")).then_some(())
    });
    docker(&["kill", &container]);
    let b = m.wait_buildset(set);
    assert_eq!(b["result"], "success", "{b}");
    let retried = builds_with(&m, "slow", "retry");
    assert_eq!(retried.len(), 1, "{retried:?}");

    // An image the engine does not have: retry with the engine's reason.
    m.force("bad", "{}");
    let bad = wait_for("the bad image's retried build", || {
        builds_with(&m, "bad", "retry").into_iter().next()
    });
    let state = bad["state_string"].as_str().unwrap_or("").to_string();
    assert!(state.contains("did not start"), "{state}");
    assert!(state.to_lowercase().contains("no such image"), "{state}");

    // A master stopping stops its containers.
    m.force("slow", "{}");
    wait_for("a container for the good worker", || {
        (!running().is_empty()).then_some(())
    });
    let pid = m.proc.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = m.proc.0.wait();
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &label]),
        "",
        "a container outlived its master"
    );
}
