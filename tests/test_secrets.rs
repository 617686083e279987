//! Secrets in steps: `env { TOKEN (secret)"NAME" }` reaches the step's
//! process (it prints the value's SHA-256) and nothing else — not the
//! state directory, not the API, not the log — and is sent only over TLS
//! or loopback.

use std::path::Path;

use crate::common::*;
use crate::recorder::Recorder;

const SECRET: &str = "deploy-token-7c1e9a4b2f66d0";

fn config() -> String {
    config_reporting("")
}

/// The config, with `reporter` (a reporter node) appended.
fn config_reporting(reporter: &str) -> String {
    r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {
    builders "b"
}
builder "b" {
    workers "w"
    env {
        TOKEN (secret)"deploy-token"
    }
    steps {
        shell "echo token=$TOKEN; printf %s \"$TOKEN\" | sha256sum" name="builder-env"
        shell "printf %s \"$STEP_TOKEN\" | sha256sum" name="step-env" {
            env STEP_TOKEN=(secret)"deploy-token"
        }
        set-property "leaked" command="echo x-$TOKEN-y"
    }
}
"#
    .to_string()
        + reporter
}

/// The digest `sha256sum` prints for `s` (what the steps print).
fn hex_sha256(s: &str) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("sha256sum: {e}"));
    if let Some(mut i) = c.stdin.take() {
        i.write_all(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    let o = c.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Every file under `dir` holding `needle`.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[test]
fn a_secret_in_env_reaches_the_step_and_nothing_else() {
    let dir = temp_dir("secret_env");
    write_secret(&dir, "w", "pw-secret-env-1");
    write_secret(&dir, "deploy-token", SECRET);
    // A reporter whose message carries the property a step set from the
    // secret's output.
    let hook = Recorder::start();
    let reporter = format!(
        "reporter \"push\" kind=\"http\" {{\n    url \"http://{}/push\"\n    template \"{{\\\"leaked\\\": \\\"{{{{properties.leaked}}}}\\\"}}\"\n    when \"all\"\n}}\n",
        hook.addr
    );
    let m = Master::start(&dir, &config_reporting(&reporter));
    let _w = m.worker("w", "pw-secret-env-1");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    let want = hex_sha256(SECRET);
    // The steps received the value: their output is its digest.
    let log0 = m.log(id, 0);
    assert!(log0.contains(&want), "builder env not received: {log0}");
    assert!(log0.contains("token=[secret]"), "{log0}");
    assert!(m.log(id, 1).contains(&want), "step env not received");
    // The property and the reporter's message say [secret], not the value.
    assert_eq!(b["properties"]["leaked"], "x-[secret]-y", "{b}");
    let sent = hook.wait_n("/push", 1);
    let body = &sent[0].body;
    assert!(body.contains("x-[secret]-y"), "{body}");
    assert!(
        !body.contains(SECRET),
        "the reporter's message holds the secret"
    );

    // Nothing shown or stored holds it.
    let mut answers = String::new();
    for path in [
        format!("/api/v1/builds/{id}"),
        format!("/api/v1/builds/{id}/steps/0/log"),
        format!("/api/v1/builds/{id}/steps/1/log"),
        "/api/v1/builders".into(),
        "/api/v1/builders/b".into(),
        "/api/v1/config".into(),
        "/api/v1/workers".into(),
        "/".into(),
    ] {
        let (status, body) = http("GET", &m.http, &path, None);
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body);
    }
    assert!(!answers.contains(SECRET), "an API answer holds the secret");
    drop(_w);
    drop(m);
    let hits = files_holding(&dir.join("state"), SECRET.as_bytes());
    assert!(
        hits.is_empty(),
        "the state directory holds the secret: {hits:?}"
    );
}

/// A non-loopback address of this machine (the source of its default
/// route), if it has one.
fn local_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A worker connected over plain TCP from another address gets no secret:
/// the step ends as exception, saying why.
#[test]
fn secrets_are_not_sent_over_plain_tcp_beyond_loopback() {
    let Some(ip) = local_address() else {
        eprintln!("skipped: this machine has no non-loopback address");
        return;
    };
    let dir = temp_dir("secret_plain");
    write_secret(&dir, "w", "pw-secret-plain-1");
    write_secret(&dir, "deploy-token", SECRET);
    let m = Master::start_on(&dir, &config(), &format!("{ip}:0"));
    let _w = m.worker("w", "pw-secret-plain-1");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "exception", "{b}");
    let step = &b["steps"][0];
    assert_eq!(step["result"], "exception", "{b}");
    let why = step["summary"].to_string() + &b.to_string();
    assert!(why.contains("secrets go only over TLS or loopback"), "{b}");
    assert!(why.contains("$TOKEN"), "{b}");
}

/// `secrets-command` answers for secrets found in neither the secrets
/// directory nor the environment: here the worker's password and the
/// step's token come from a script playing a password manager, which is
/// asked once per secret.
#[test]
fn secrets_come_from_a_command_when_not_in_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("secret_command");
    let script = dir.join("vault.sh");
    let asked = dir.join("asked");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $BBC_SECRET_NAME\" >> {asked}\ncase \"$1\" in\n  w) echo pw-from-command-1;;\n  deploy-token) echo {SECRET};;\n  *) echo \"$1 is not in the store\" >&2; exit 1;;\nesac\n",
            asked = asked.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = format!(
        "master {{\n    secrets-command \"{}\" \"{{name}}\"\n}}\n{}",
        script.display(),
        config()
    );
    let m = Master::start(&dir, &cfg);
    let _w = m.worker("w", "pw-from-command-1");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    assert!(m.log(id, 0).contains(&hex_sha256(SECRET)));
    let asked = std::fs::read_to_string(&asked).unwrap_or_default();
    let mut lines: Vec<&str> = asked.lines().collect();
    lines.sort();
    assert_eq!(lines, ["deploy-token deploy-token", "w w"]);

    // A secret the command does not know stops the master with its name
    // and the command's own words.
    let dir2 = temp_dir("secret_command_missing");
    let cfg2 = cfg.replace(r#"(secret)"deploy-token""#, r#"(secret)"nowhere""#);
    std::fs::write(dir2.join("master.kdl"), &cfg2).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = bbc();
    let o = bbc_testkit::master_args(&mut cmd, &dir2.join("master.kdl"), &dir2)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("nowhere"), "{err}");
    assert!(err.contains("nowhere is not in the store"), "{err}");
}
