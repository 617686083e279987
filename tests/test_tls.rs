//! TLS between real `bbc master` and `bbc worker` processes: what crosses
//! the wire (read by a recording proxy between them), and every way the
//! worker's trust can fail (wrong CA, wrong fingerprint, an expired
//! certificate, a plaintext worker on a TLS port).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::*;

const PASSWORD: &str = "pw-on-the-wire-5b1f0c";
const OUTPUT: &str = "build-output-on-the-wire-9d2e";

fn config(tls: &str) -> String {
    format!(
        "master {{\n    {tls}\n}}\nworker \"w\" password=(secret)\"w\"\nscheduler \"force\" kind=\"force\" {{\n    builders \"b\"\n}}\nbuilder \"b\" {{\n    workers \"w\"\n    steps {{\n        shell \"echo {OUTPUT}\"\n    }}\n}}\n"
    )
}

const TLS: &str = r#"tls cert="master.crt" key="master.key" http=#false"#;

/// `bbc cert` in `dir`; returns the fingerprint it printed.
fn make_cert(dir: &Path, prefix: &str) -> String {
    let o = bbc()
        .current_dir(dir)
        .args(["cert", "--name", "127.0.0.1"])
        .args(["--cert", &format!("{prefix}.crt"), "--key"])
        .arg(format!("{prefix}.key"))
        .output()
        .unwrap_or_else(|e| panic!("bbc cert: {e}"));
    assert!(o.status.success(), "bbc cert: {}", stderr(&o));
    let out = stdout(&o);
    out.lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {out}"))
        .to_string()
}

/// A worker with extra arguments, its standard error in `DIR/NAME.log`.
fn worker(m: &Master, master: &str, extra: &[&str], log: &str) -> (Proc, PathBuf) {
    let pw = m.dir.join("w.password");
    std::fs::write(&pw, PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    let log = m.dir.join(log);
    let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let child = bbc_testkit::worker_args(&mut bbc(), master, "w", &pw, &m.dir)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn worker: {e}"));
    (Proc(child), log)
}

fn wait_line(path: &Path, needle: &str) -> String {
    wait_for(&format!("`{needle}` in {}", path.display()), || {
        let text = std::fs::read_to_string(path).ok()?;
        text.contains(needle).then_some(text)
    })
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A TCP proxy on 127.0.0.1 that forwards to `to` and records every byte
/// in both directions.
fn recording_proxy(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone(), server.try_clone()),
                (server.try_clone(), client.try_clone()),
            ]
            .into_iter()
            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
            {
                let seen = s2.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if let Ok(mut s) = seen.lock() {
                            s.extend_from_slice(&buf[..n]);
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (addr, seen)
}

/// Runs one build through a recording proxy; returns what crossed it.
fn build_through_proxy(name: &str, tls: &str, trust: &[&str]) -> Vec<u8> {
    let dir = temp_dir(name);
    if !tls.is_empty() {
        make_cert(&dir, "master");
    }
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start(&dir, &config(tls));
    let (proxy, seen) = recording_proxy(m.workers.clone());
    let fp;
    let mut extra = trust.to_vec();
    if extra == ["--master-fingerprint"] {
        fp = bbc_runtime::tls::fingerprint_of_file(&dir.join("master.crt"))
            .unwrap_or_else(|e| panic!("{e}"));
        extra.push(&fp);
    }
    let (_w, _) = worker(&m, &proxy, &extra, "worker.log");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    assert!(m.log(id, 0).contains(OUTPUT), "the step did not run");
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    seen
}

/// The password (in `hello`) and the build's output cross the wire in
/// clear without TLS, and not at all with it.
#[test]
fn tls_hides_the_worker_password_and_build_output_on_the_wire() {
    let plain = build_through_proxy("tls_wire_plain", "", &[]);
    assert!(contains(&plain, PASSWORD), "the proxy saw no password");
    assert!(contains(&plain, OUTPUT), "the proxy saw no output");

    let tls = build_through_proxy("tls_wire_tls", TLS, &["--master-fingerprint"]);
    assert!(tls.len() > 1000, "only {} bytes crossed", tls.len());
    assert!(!contains(&tls, PASSWORD), "the password crossed in clear");
    assert!(!contains(&tls, OUTPUT), "build output crossed in clear");
}

#[test]
fn a_worker_trusting_the_ca_connects_and_builds() {
    let dir = temp_dir("tls_ca");
    make_cert(&dir, "master");
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start(&dir, &config(TLS));
    let ca = dir.join("master.crt");
    let ca = ca.to_string_lossy();
    let (_w, _) = worker(&m, &m.workers, &["--master-ca", &ca], "worker.log");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
}

/// Every failed trust ends the same way: the worker says why and retries,
/// the master refuses the connection and logs it, no session starts.
#[test]
fn wrong_trust_and_plaintext_workers_are_refused() {
    let dir = temp_dir("tls_refused");
    make_cert(&dir, "master");
    let other = make_cert(&dir, "other");
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start_logged(&dir, &config(TLS));
    let master_log = dir.join("master.log");

    let other_ca = dir.join("other.crt");
    let other_ca = other_ca.to_string_lossy().to_string();
    let cases: [(&str, Vec<&str>, &str); 3] = [
        (
            "wrong-ca",
            vec!["--master-ca", &other_ca],
            "invalid peer certificate",
        ),
        (
            "wrong-fingerprint",
            vec!["--master-fingerprint", &other],
            "not the pinned one",
        ),
        // No TLS at all: the master's TLS handshake fails on the hello.
        ("plaintext", vec![], "the master speaks TLS on this port"),
    ];
    for (name, args, says) in cases {
        let (w, log) = worker(&m, &m.workers, &args, &format!("{name}.log"));
        let text = wait_line(&log, says);
        assert!(text.contains("reconnecting in"), "{name}: {text}");
        drop(w);
        let v = get_json(&m.http, "/api/v1/workers");
        assert_eq!(v["workers"][0]["connected"], false, "{name}: {v}");
    }
    let text = wait_line(&master_log, "TLS handshake failed");
    assert!(text.contains("worker connection refused"), "{text}");
}

/// A CA-trusting worker refuses a master whose certificate has expired.
#[test]
fn an_expired_certificate_is_refused() {
    let dir = temp_dir("tls_expired");
    let names = ["127.0.0.1".to_string()];
    let (cert, key) = bbc_runtime::tls::self_signed(&names, -10).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("master.crt"), cert).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("master.key"), key).unwrap_or_else(|e| panic!("{e}"));
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start(&dir, &config(TLS));
    let ca = dir.join("master.crt");
    let ca = ca.to_string_lossy();
    let (_w, log) = worker(&m, &m.workers, &["--master-ca", &ca], "worker.log");
    let text = wait_line(&log, "certificate expired");
    assert!(text.contains("TLS handshake failed"), "{text}");
}

/// A master whose TLS files cannot be read does not start, and says why.
#[test]
fn a_missing_certificate_stops_the_master_with_a_clear_error() {
    let dir = temp_dir("tls_missing");
    write_secret(&dir, "w", PASSWORD);
    std::fs::write(dir.join("master.kdl"), config(TLS)).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = bbc();
    let cfg = dir.join("master.kdl");
    let o = bbc_testkit::master_args(&mut cmd, &cfg, &dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cannot set up TLS on the worker port"),
        "{err}"
    );
    assert!(err.contains("master.crt"), "{err}");
    assert!(err.contains("bbc cert"), "{err}");
}

/// curl (a real HTTPS client) against the master: `args` before the URL.
fn curl(args: &[&str], url: &str) -> (bool, String) {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// With `tls` on the HTTP port the API answers over HTTPS to a client that
/// trusts the certificate, and plain HTTP on that port gets nothing.
#[test]
fn https_serves_the_api_to_clients_that_trust_the_certificate() {
    let dir = temp_dir("tls_https");
    make_cert(&dir, "master");
    write_secret(&dir, "w", PASSWORD);
    let m = Master::start(
        &dir,
        &config(r#"tls cert="master.crt" key="master.key" workers=#false"#),
    );
    let ca = dir.join("master.crt");
    let ca = ca.to_string_lossy();
    let url = format!("https://{}/api/v1/builders", m.http);
    let (ok, body) = curl(&["--cacert", &ca], &url);
    assert!(ok, "{body}");
    assert!(body.contains("\"b\""), "{body}");
    // Without trust in the certificate: refused by the client.
    let (ok, body) = curl(&[], &url);
    assert!(!ok, "curl trusted a self-signed certificate: {body}");
    // Plain HTTP on the HTTPS port: no answer.
    let (ok, body) = curl(&[], &format!("http://{}/api/v1/builders", m.http));
    assert!(!ok || !body.contains("builders"), "{body}");
    // The master still serves after both.
    let (ok, body) = curl(&["--cacert", &ca], &url);
    assert!(ok, "{body}");
}

/// The CLI's API commands over HTTPS to a master with a self-signed
/// certificate: refused without trust (saying how to give it), accepted
/// with `--ca`, with the right `--fingerprint` and with `BBC_CA` (either
/// form), refused with a wrong pin.
#[test]
fn the_cli_trusts_a_self_signed_master_only_when_told() {
    let dir = temp_dir("tls_cli");
    let fp = make_cert(&dir, "master");
    let other = make_cert(&dir, "other");
    write_secret(&dir, "w", PASSWORD);
    write_secret(&dir, "bbc-control-token", "ctl-tls-cli-0001");
    let m = Master::start(
        &dir,
        &config(r#"tls cert="master.crt" key="master.key" workers=#false"#),
    );
    let url = format!("https://{}", m.http);
    let ca = dir.join("master.crt").to_string_lossy().to_string();
    let home = dir.join("home");
    let cli = |args: &[&str], env: Option<&str>| {
        let mut c = bbc();
        c.args(args)
            .env("XDG_CONFIG_HOME", &home)
            .env_remove("BBC_TOKEN")
            .env_remove("BBC_CA")
            .env_remove("BBC_URL");
        if let Some(v) = env {
            c.env("BBC_CA", v);
        }
        let o = c.output().unwrap_or_else(|e| panic!("{e}"));
        (o.status.success(), stdout(&o) + &stderr(&o))
    };
    let status = ["status", "--url", &url];
    let (ok, text) = cli(&status, None);
    assert!(!ok, "trusted a self-signed certificate: {text}");
    assert!(text.contains("certificate"), "{text}");
    assert!(
        text.contains("--ca FILE") && text.contains("--fingerprint"),
        "no fix named: {text}"
    );
    for (args, env) in [
        (vec!["--ca", &ca], None),
        (vec!["--fingerprint", &fp], None),
        (vec![], Some(ca.as_str())),
        (vec![], Some(fp.as_str())),
    ] {
        let all: Vec<&str> = status.iter().copied().chain(args.clone()).collect();
        let (ok, text) = cli(&all, env);
        assert!(ok, "{args:?} BBC_CA={env:?}: {text}");
        assert!(text.contains("builders:") && text.contains("  b"), "{text}");
    }
    let all: Vec<&str> = status
        .iter()
        .copied()
        .chain(["--fingerprint", &other])
        .collect();
    let (ok, text) = cli(&all, None);
    assert!(!ok, "a wrong pin was accepted: {text}");
    assert!(text.contains("not the pinned one"), "{text}");
    let (ok, text) = cli(&status, Some(&other));
    assert!(!ok && text.contains("not the pinned one"), "{text}");
    let (ok, text) = cli(
        &["status", "--url", &url, "--fingerprint", "sha256:12"],
        None,
    );
    assert!(!ok && text.contains("--fingerprint"), "{text}");
    let (ok, text) = cli(&["status", "--url", &url, "--ca", "/nonexistent.pem"], None);
    assert!(!ok && text.contains("/nonexistent.pem"), "{text}");

    // The other commands take the same options: login (then force with
    // the stored token), sendchange, apply.
    let token = dir.join("token");
    std::fs::write(&token, "ctl-tls-cli-0001").unwrap_or_else(|e| panic!("{e}"));
    let token = token.to_string_lossy().to_string();
    let login = ["login", "--url", &url, "--token-file", &token];
    let (ok, text) = cli(&login, None);
    assert!(!ok && text.contains("--ca FILE"), "{text}");
    let with_ca: Vec<&str> = login.iter().copied().chain(["--ca", &ca]).collect();
    let (ok, text) = cli(&with_ca, None);
    assert!(ok && text.contains("as control-token"), "{text}");
    let (ok, text) = cli(&["force", "b", "--url", &url, "--fingerprint", &fp], None);
    assert!(ok && text.contains("queued build request"), "{text}");
    let (ok, text) = cli(&["force", "b", "--url", &url], None);
    assert!(!ok && text.contains("--ca FILE"), "{text}");
    let change = ["sendchange", "--url", &url, "--branch", "main"];
    let (ok, text) = cli(&change, Some(&ca));
    assert!(ok && text.contains("stored"), "{text}");
    let (ok, text) = cli(&change, None);
    assert!(!ok && text.contains("--ca FILE"), "{text}");
    let cfg = dir.join("master.kdl").to_string_lossy().to_string();
    let apply = ["apply", &cfg, "--master", &url, "--dry-run"];
    let (ok, text) = cli(&apply, None);
    assert!(!ok && text.contains("--ca FILE"), "{text}");
    let with_ca: Vec<&str> = apply.iter().copied().chain(["--ca", &ca]).collect();
    let (ok, text) = cli(&with_ca, None);
    assert!(ok, "{text}");
}
