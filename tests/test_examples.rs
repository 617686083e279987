//! Every example config checks clean, compiles deterministically, and its
//! graph survives a round trip through the file format.

use bbc_compiler::graph::{Credential, Graph};

use crate::common::{files, root, run, stdout};

#[test]
fn examples_check_clean_and_compile() {
    let examples = files(&root().join("examples"), "kdl");
    assert!(examples.len() >= 3, "expected at least 3 examples");
    for ex in examples {
        let rel = format!(
            "examples/{}",
            ex.file_name().and_then(|s| s.to_str()).unwrap_or("?")
        );
        let c = bbc_compiler::compile(&rel, &bbc_compiler::source::DiskSources);
        let rendered: Vec<String> = c
            .diagnostics
            .iter()
            .map(|d| {
                bbc_compiler::render::human(
                    &c.sources,
                    d,
                    bbc_compiler::render::HumanOptions {
                        color: false,
                        width: 100,
                    },
                )
            })
            .collect();
        assert!(
            c.diagnostics.is_empty(),
            "{rel} is not clean:\n{}",
            rendered.join("\n")
        );
        let g = c.graph.unwrap_or_else(|| panic!("{rel}: no graph"));
        assert!(!g.builders.is_empty());
        // Every entity carries a content hash.
        assert!(g
            .builders
            .iter()
            .all(|b| b.hash.len() == 32 && b.steps.iter().all(|s| s.hash.len() == 32)));
        assert!(g.workers.iter().all(|w| w.hash.len() == 32));
        let json = g.to_json();
        let back = Graph::from_json(&json).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(back, g, "{rel}: graph changed in a round trip");
        // Secrets stay references.
        assert!(
            g.workers
                .iter()
                .all(|w| matches!(w.password, Credential::Secret { .. })),
            "{rel}: a worker password is not a secret reference"
        );

        // Same bytes from the CLI, twice.
        let a = run(&["compile", &rel]);
        let b = run(&["compile", &rel]);
        assert!(a.status.success(), "bbc compile {rel} failed");
        assert_eq!(stdout(&a), stdout(&b), "{rel}: output is not deterministic");
        assert_eq!(stdout(&a), json);
    }
}

#[test]
fn large_example_routes_by_tag() {
    let c = bbc_compiler::compile("examples/large.kdl", &bbc_compiler::source::DiskSources);
    let g = c
        .graph
        .unwrap_or_else(|| panic!("large.kdl does not compile"));
    assert_eq!(g.builders.len(), 41);
    let force = g
        .scheduler("force")
        .unwrap_or_else(|| panic!("no force scheduler"));
    assert_eq!(
        force.builders.len(),
        40,
        "force selects every component builder by tag"
    );
    let gh = g
        .reporters
        .iter()
        .find(|r| r.name == "github")
        .unwrap_or_else(|| panic!("no github reporter"));
    assert_eq!(gh.builders.len(), 40);
    let core = g
        .scheduler("core-main")
        .unwrap_or_else(|| panic!("no core-main"));
    assert_eq!(core.builders.len(), 5);
    assert!(core.builders.iter().all(|b| b.starts_with("core-")));
}

/// The README's first command, `bbc up examples/local.kdl --force hello`
/// (on ephemeral ports and a temporary state directory): the master and
/// its local worker start, the forced build succeeds, SIGHUP reloads the
/// config, SIGTERM stops it all cleanly.
#[test]
fn bbc_up_runs_the_local_example_and_reloads_on_sighup() {
    let dir = crate::common::temp_dir("up-local");
    let config = dir.join("local.kdl");
    let text = std::fs::read_to_string(root().join("examples/local.kdl"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&config, &text).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = crate::common::bbc();
    cmd.args([
        "up",
        &config.to_string_lossy(),
        "--force",
        "hello",
        "--state",
    ])
    .arg(dir.join("state"))
    .args([
        "--worker-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .stderr(std::process::Stdio::null());
    let started =
        bbc_testkit::spawn_announced(&mut cmd).unwrap_or_else(|e| panic!("spawn bbc up: {e}"));
    let proc = crate::common::Proc(started.child);
    let http = crate::common::http_addr_in(&started.first_line);
    // The forced build of `hello` runs on the local worker and succeeds.
    let b = crate::common::wait_for("the forced build to finish", || {
        let v = crate::common::get_json(&http, "/api/v1/builds?builder=hello");
        let b = v["builds"].as_array()?.first()?.clone();
        b["finished_at"].as_u64().map(|_| b)
    });
    assert_eq!(b["result"], "success", "{b}");
    assert_eq!(b["worker"], "local", "{b}");
    // SIGHUP: an edited config (a second builder) is applied.
    let before = crate::common::get_json(&http, "/api/v1/config")["hash"].clone();
    let added = text.replacen(
        "builder \"hello\" {",
        "builder \"again\" {\n    workers \"local\"\n    steps {\n        shell \"true\"\n    }\n}\n\nbuilder \"hello\" {",
        1,
    );
    std::fs::write(&config, added).unwrap_or_else(|e| panic!("{e}"));
    let pid = proc.0.id() as libc::pid_t;
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    crate::common::wait_for("the reload", || {
        let h = crate::common::get_json(&http, "/api/v1/config")["hash"].clone();
        (h != before).then_some(())
    });
    let v = crate::common::get_json(&http, "/api/v1/builders");
    assert!(
        v["builders"]
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x["name"] == "again")),
        "{v}"
    );
    // SIGTERM: a clean stop.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut proc = proc;
    let status = proc.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "bbc up exited with {status}");
}

/// `bbc up examples/secure.kdl` on a fresh checkout: it makes a
/// self-signed certificate where the config names one, its local worker
/// pins it, the forced deploy gets its token through `env` over TLS, and
/// the API answers over HTTPS to a client that trusts that certificate.
#[test]
fn bbc_up_runs_the_secure_example_over_tls() {
    let dir = crate::common::temp_dir("up-secure");
    let config = dir.join("secure.kdl");
    let text = std::fs::read_to_string(root().join("examples/secure.kdl"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&config, &text).unwrap_or_else(|e| panic!("{e}"));
    // The admin's token, as an admin would put it in the secrets
    // directory; the other secrets are made up by `bbc up`.
    let secrets = dir.join("secure-state/secrets");
    std::fs::create_dir_all(&secrets).unwrap_or_else(|e| panic!("{e}"));
    let olga = "olga-token-3f9a1c";
    std::fs::write(secrets.join("olga-token"), olga).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = crate::common::bbc();
    cmd.current_dir(&dir)
        .args(["up", "secure.kdl", "--force", "deploy"])
        .args([
            "--worker-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stderr(std::process::Stdio::null());
    let started =
        bbc_testkit::spawn_announced(&mut cmd).unwrap_or_else(|e| panic!("spawn bbc up: {e}"));
    let _proc = crate::common::Proc(started.child);
    assert!(
        started.first_line.contains("https://"),
        "{}",
        started.first_line
    );
    let http = crate::common::http_addr_in(&started.first_line);
    let cert = dir.join("secure-state/tls/master.crt");
    assert!(cert.is_file(), "no certificate made at {}", cert.display());
    let cert = cert.to_string_lossy().to_string();
    let bearer = format!("authorization: Bearer {olga}");
    // A private master: anonymous reads are refused.
    let o = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &cert,
        ])
        .arg(format!("https://{http}/api/v1/builders"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
    let get = |path: &str| -> Option<serde_json::Value> {
        let o = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "--cacert", &cert, "-H", &bearer])
            .arg(format!("https://{http}{path}"))
            .output()
            .ok()?;
        serde_json::from_slice(&o.stdout).ok()
    };
    let b = crate::common::wait_for("the forced deploy to finish", || {
        let v = get("/api/v1/builds?builder=deploy")?;
        let b = v["builds"].as_array()?.first()?.clone();
        b["finished_at"].as_u64().map(|_| b)
    });
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    let o = std::process::Command::new("curl")
        .args(["-sS", "--cacert", &cert, "-H", &bearer])
        .arg(format!("https://{http}/api/v1/builds/{id}/steps/0/log"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(log.contains("token received: [secret]"), "{log}");
}
