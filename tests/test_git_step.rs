//! The git step's options Buildbot users rely on (issue 14), with real git
//! on a real worker: `submodules`, `shallow` (also for a revision the
//! branch's last commits do not reach), `retry` against a server that
//! fails the first time, and `ssh-key` / `ssh-known-hosts` against a real
//! sshd on 127.0.0.1 (Debian's openssh-server; the test says it skipped
//! where `sshd` is missing, unless `BBC_REQUIRE_SSHD=1`, as in CI).

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::test_secrets::files_holding;

/// A master whose force scheduler starts `builders` (the given builder
/// nodes, on worker `w`), with a worker connected.
fn start(name: &str, builders: &str) -> (PathBuf, Master, Proc) {
    let dir = temp_dir(name);
    write_secret(&dir, "w", "pw-git-step-1");
    let config = format!(
        "worker \"w\" password=(secret)\"w\"\nscheduler \"force\" kind=\"force\" {{\n    builders \"b\"\n}}\n{builders}"
    );
    let m = Master::start(&dir, &config);
    let w = m.worker("w", "pw-git-step-1");
    m.wait_connected("w");
    (dir, m, w)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A repository at `dir` on branch `main` with one commit per text of
/// `versions` (each writing `file`); returns the commits, oldest first.
fn repo(dir: &Path, file: &str, versions: &[&str]) -> Vec<String> {
    git(dir, &["init", "-q", "-b", "main"]);
    versions
        .iter()
        .map(|v| {
            write(&dir.join(file), v);
            git(dir, &["add", "."]);
            git(dir, &["commit", "-q", "-m", v]);
            git(dir, &["rev-parse", "HEAD"])
        })
        .collect()
}

fn id(b: &serde_json::Value) -> u64 {
    b["id"].as_u64().unwrap_or_default()
}

#[test]
fn submodules_are_checked_out_and_cleaned() {
    let root = temp_dir("git-submodules-repos");
    let sub = root.join("sub");
    let top = root.join("top");
    std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&top).unwrap_or_else(|e| panic!("{e}"));
    repo(&sub, "sub.txt", &["from the submodule\n"]);
    repo(&top, "top.txt", &["top\n"]);
    let sub_url = format!("file://{}", sub.display());
    git(
        &top,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &sub_url,
            "libsub",
        ],
    );
    git(&top, &["commit", "-q", "-m", "add libsub"]);
    // Modern git fetches file:// submodules only when allowed.
    let builders = format!(
        r#"builder "b" {{
    workers "w"
    steps {{
        git repo="file://{}" branch="main" mode="full" method="fresh" submodules=#true {{
            env GIT_CONFIG_COUNT="1" GIT_CONFIG_KEY_0="protocol.file.allow" GIT_CONFIG_VALUE_0="always"
        }}
        shell "cat libsub/sub.txt; ls libsub | sed s/^/in-sub:/; touch libsub/untracked.tmp" name="show"
    }}
}}
"#,
        top.display()
    );
    let (_dir, m, _w) = start("git-submodules", &builders);
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b} {}", m.log(id(&b), 0));
    let show = m.log(id(&b), 1);
    assert!(show.contains("from the submodule"), "{show}");
    assert!(!show.contains("in-sub:untracked.tmp"), "{show}");
    // The next build's `fresh` cleans inside the submodule too.
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let show = m.log(id(&b), 1);
    assert!(
        show.contains("from the submodule") && !show.contains("in-sub:untracked.tmp"),
        "{show}"
    );
}

#[test]
fn a_shallow_checkout_holds_n_commits_and_fetches_an_older_revision() {
    let src = temp_dir("git-shallow-repo");
    let commits = repo(&src, "f.txt", &["one\n", "two\n", "three\n", "four\n"]);
    let builders = format!(
        r#"builder "b" {{
    workers "w"
    steps {{
        git repo="file://{0}" branch="main" mode="full" method="clobber" shallow=#true
        shell "echo count=$(git rev-list --count HEAD); cat f.txt" name="count"
        git repo="file://{0}" branch="main" mode="full" method="clobber" shallow=2 workdir="two" name="two"
        shell "echo count=$(git rev-list --count HEAD)" name="count2" workdir="two"
    }}
}}
"#,
        src.display()
    );
    let (_dir, m, _w) = start("git-shallow", &builders);
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b} {}", m.log(id(&b), 0));
    let log = m.log(id(&b), 1);
    assert!(log.contains("count=1") && log.contains("four"), "{log}");
    let log = m.log(id(&b), 3);
    assert!(log.contains("count=2"), "{log}");
    assert_eq!(b["properties"]["got_revision"], commits[3].as_str());
    // A build for the second commit: not among the branch's last one, so
    // the step fetches the revision itself, still shallow.
    let b = m.force_and_wait("b", &format!("{{\"revision\": \"{}\"}}", commits[1]));
    assert_eq!(b["result"], "success", "{b} {}", m.log(id(&b), 0));
    let log = m.log(id(&b), 1);
    assert!(log.contains("count=1") && log.contains("two"), "{log}");
    assert_eq!(b["properties"]["got_revision"], commits[1].as_str());
}

#[test]
fn a_fetch_that_fails_once_is_retried() {
    let root = temp_dir("git-retry-repo");
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    repo(&src, "f.txt", &["retried\n"]);
    // The server side fails its first pack (git's own hook for the
    // command that packs a fetch's objects), then serves normally.
    let mark = root.join("failed-once");
    let hook = root.join("pack-hook.sh");
    write(
        &hook,
        &format!(
            "#!/bin/sh\nif [ ! -e '{0}' ]; then touch '{0}'; echo 'server: failing this once' >&2; exit 1; fi\nexec \"$@\"\n",
            mark.display()
        ),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The hook is read only from protected (e.g. global) configuration,
    // which a local fetch passes on to its server side.
    let global = root.join("gitconfig");
    write(
        &global,
        &format!("[uploadpack]\n\tpackObjectsHook = {}\n", hook.display()),
    );
    let builders = format!(
        r#"builder "b" {{
    workers "w"
    steps {{
        git repo="file://{}" branch="main" retry=2 retry-delay="0s" {{
            env GIT_CONFIG_GLOBAL="{}"
        }}
        shell "cat f.txt" name="show"
    }}
}}
"#,
        src.display(),
        global.display()
    );
    let (_dir, m, _w) = start("git-retry", &builders);
    let b = m.force_and_wait("b", "{}");
    let log = m.log(id(&b), 0);
    assert_eq!(b["result"], "success", "{b} {log}");
    assert!(mark.exists(), "the server never failed: {log}");
    assert!(log.contains("server: failing this once"), "{log}");
    assert!(
        log.contains("bbc: git fetch failed; try 2 of 3 in 0s"),
        "{log}"
    );
    assert!(m.log(id(&b), 1).contains("retried"));
}

#[test]
fn a_step_without_retry_fails_when_the_fetch_fails() {
    let builders = r#"builder "b" {
    workers "w"
    steps {
        git repo="file:///nonexistent/bbc-no-such-repo.git" branch="main"
    }
}
"#;
    let (_dir, m, _w) = start("git-no-retry", builders);
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "failure", "{b}");
    assert!(!m.log(id(&b), 0).contains("bbc: git fetch failed"));
}

// --- ssh

/// A free port on 127.0.0.1 (bound, then released for sshd).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn sshd() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/sbin/sshd");
    if p.exists() {
        return Some(p);
    }
    if std::env::var("BBC_REQUIRE_SSHD").as_deref() == Ok("1") {
        panic!("sshd is required (BBC_REQUIRE_SSHD=1) but /usr/sbin/sshd is missing");
    }
    eprintln!("skipped: no /usr/sbin/sshd (Debian's openssh-server)");
    None
}

fn keygen(path: &Path) {
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bbc-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A real sshd on 127.0.0.1, killed when dropped.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd(bin: &Path, dir: &Path, authorized: &Path) -> Sshd {
    use std::io::BufRead;
    // Its privilege separation directory (made by the service otherwise).
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = dir.join("sshd_config");
    write(
        &config,
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPidFile {pid}\n",
            host = dir.join("host_key").display(),
            auth = authorized.display(),
            pid = dir.join("sshd.pid").display(),
        ),
    );
    let mut child = std::process::Command::new(bin)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("sshd: {e}"));
    let err = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = std::io::BufReader::new(err).lines();
    let mut said = String::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Server listening") => break,
            Some(Ok(l)) => said.push_str(&(l + "\n")),
            _ => panic!("sshd did not start: {said}"),
        }
    }
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Sshd { child, port }
}

#[test]
fn an_ssh_key_from_a_secret_fetches_over_ssh_and_leaves_nothing_behind() {
    let Some(bin) = sshd() else { return };
    let root = temp_dir("git-ssh");
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    repo(&src, "f.txt", &["over ssh\n"]);
    keygen(&root.join("host_key"));
    keygen(&root.join("user_key"));
    let authorized = root.join("authorized_keys");
    std::fs::copy(root.join("user_key.pub"), &authorized).unwrap_or_else(|e| panic!("{e}"));
    let server = start_sshd(&bin, &root, &authorized);
    let key = std::fs::read_to_string(root.join("user_key")).unwrap_or_else(|e| panic!("{e}"));
    let host_pub =
        std::fs::read_to_string(root.join("host_key.pub")).unwrap_or_else(|e| panic!("{e}"));
    let known = format!("[127.0.0.1]:{} {}", server.port, host_pub.trim());
    let user = String::from_utf8_lossy(
        &std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
            .stdout,
    )
    .trim()
    .to_string();
    // The step's temporary files go here, so the test sees them go.
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("ssh://{user}@127.0.0.1:{}{}", server.port, src.display());
    let builders = format!(
        r#"builder "b" {{
    workers "w"
    steps {{
        git repo="{url}" branch="main" ssh-key=(secret)"deploy-key" ssh-known-hosts="{known}" halt-on-failure=#true {{
            env TMPDIR="{tmp}"
        }}
        shell "cat f.txt" name="show"
    }}
}}
builder "bad" {{
    workers "w"
    steps {{
        git repo="{url}-missing" branch="main" ssh-key=(secret)"deploy-key" ssh-known-hosts="{known}" {{
            env TMPDIR="{tmp}"
        }}
    }}
}}
"#,
        tmp = tmp.display()
    );
    let dir = temp_dir("git-ssh-master");
    write_secret(&dir, "w", "pw-git-step-1");
    write_secret(&dir, "deploy-key", &key);
    let config = format!(
        "worker \"w\" password=(secret)\"w\"\nscheduler \"force\" kind=\"force\" {{\n    builders \"b\" \"bad\"\n}}\n{builders}"
    );
    let m = Master::start(&dir, &config);
    let w = m.worker("w", "pw-git-step-1");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    let log = m.log(id(&b), 0);
    assert_eq!(b["result"], "success", "{b} {log}");
    assert!(m.log(id(&b), 1).contains("over ssh"));
    // The script the log shows points ssh at a key file, not at the key.
    assert!(
        log.contains("export GIT_SSH_COMMAND=\"ssh -o BatchMode=yes -i")
            && log.contains("IdentitiesOnly=yes")
            && log.contains("StrictHostKeyChecking=yes"),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the key's directory was left: {left:?}");
    // A fetch that fails removes it too.
    let bad = m.force_and_wait("bad", "{}");
    assert_eq!(bad["result"], "failure", "{bad}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "a failed step left: {left:?}");

    // The key is nowhere the master shows or stores: one of its lines
    // (the base64 body) is searched for, as it is the secret part.
    let needle = key
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .unwrap_or_else(|| panic!("no key body in {key}"))
        .to_string();
    let mut answers = String::new();
    for path in [
        format!("/api/v1/builds/{}", id(&b)),
        format!("/api/v1/builds/{}/steps/0/log", id(&b)),
        format!("/api/v1/builds/{}/steps/0/log", id(&bad)),
        "/api/v1/builders/b".into(),
        "/api/v1/config".into(),
        "/".into(),
    ] {
        let (status, body) = http("GET", &m.http, &path, None);
        assert_eq!(status, 200, "{path}: {body}");
        answers.push_str(&body);
    }
    assert!(!answers.contains(&needle), "an API answer holds the key");
    drop(w);
    drop(m);
    let hits = files_holding(&dir.join("state"), needle.as_bytes());
    assert!(
        hits.is_empty(),
        "the state directory holds the key: {hits:?}"
    );
    drop(server);
}
