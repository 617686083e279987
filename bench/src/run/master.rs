//! The processes the scenarios measure: a `bbc master` and `bbc worker`s
//! on 127.0.0.1, each with its standard error in a log file of the
//! scenario's directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{err, BenchError};

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Owns `child`: stopped when dropped.
    pub fn of(child: Child) -> Proc {
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no clean stop, nothing given back (a master's lease
    /// stays until it expires).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `bbc master` child and what it announced.
pub struct Master {
    pub proc: Proc,
    pub workers_addr: String,
    pub http: String,
    /// From spawn to the line announcing its ports.
    pub started_in: Duration,
    /// Its standard error.
    pub log: PathBuf,
    /// With TLS on the worker port: the certificate's fingerprint, which
    /// the workers pin.
    pub fingerprint: Option<String>,
}

/// Makes a self-signed pair in `dir` with `bbc cert` (once) and puts TLS
/// on both ports of `config` (whose first line opens `master {`);
/// returns the fingerprint.
fn with_tls(exe: &Path, dir: &Path, config: &Path) -> Result<String, BenchError> {
    let cert = dir.join("master.crt");
    let o = Command::new(exe)
        .args(["cert", "--force", "--name", "127.0.0.1", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(dir.join("master.key"))
        .output()?;
    if !o.status.success() {
        return Err(err(format!(
            "bbc cert failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .ok_or_else(|| err(format!("no fingerprint in {out}")))?
        .to_string();
    let text = std::fs::read_to_string(config)?;
    let Some(rest) = text.strip_prefix("master {\n") else {
        return Err(err("the scenario's config does not start with `master {`"));
    };
    let tls = format!(
        "master {{\n    tls cert=\"{}\" key=\"{}\"\n",
        cert.display(),
        dir.join("master.key").display()
    );
    std::fs::write(config, tls + rest)?;
    Ok(fp)
}

pub fn start_master(
    exe: &Path,
    dir: &Path,
    config: &Path,
    tag: &str,
    tls: bool,
) -> Result<Master, BenchError> {
    start_master_with(exe, dir, config, tag, tls, &[])
}

/// As [`start_master`], with more environment variables for the master.
pub fn start_master_with(
    exe: &Path,
    dir: &Path,
    config: &Path,
    tag: &str,
    tls: bool,
    env: &[(&str, String)],
) -> Result<Master, BenchError> {
    let fingerprint = if tls {
        Some(with_tls(exe, dir, config)?)
    } else {
        None
    };
    let log = dir.join(format!("master-{tag}.log"));
    let stderr = std::fs::File::create(&log)?;
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    bbc_testkit::master_args(&mut cmd, config, dir)
        // The debug events of `bbc_timing` say when each build started.
        .env("BBC_LOG", "warn,bbc_timing=debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(stderr);
    let started = bbc_testkit::spawn_announced(&mut cmd)?;
    let started_in = started.announced_at.duration_since(t);
    let ports = started.ports();
    let line = started.first_line;
    let proc = Proc {
        child: started.child,
    };
    let Some(ports) = ports else {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(err(format!(
            "the master did not start (first line {line:?}): {log_text}"
        )));
    };
    Ok(Master {
        proc,
        workers_addr: ports.workers,
        http: ports.http,
        started_in,
        log,
        fingerprint,
    })
}

pub fn start_worker(exe: &Path, dir: &Path, m: &Master, name: &str) -> Result<Proc, BenchError> {
    let stderr = std::fs::File::create(dir.join(format!("worker-{name}.log")))?;
    let password = dir.join("secrets").join(name);
    let child = bbc_testkit::worker_args(
        &mut Command::new(exe),
        &m.workers_addr,
        name,
        &password,
        dir,
    )
    .args(
        m.fingerprint
            .as_deref()
            .map(|fp| ["--master-fingerprint", fp])
            .into_iter()
            .flatten(),
    )
    .env("BBC_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr)
    .spawn()?;
    Ok(Proc { child })
}

pub fn write_secrets(dir: &Path, names: &[String]) -> Result<(), BenchError> {
    let d = dir.join("secrets");
    std::fs::create_dir_all(&d)?;
    for n in names {
        std::fs::write(d.join(n), format!("bench-password-{n}"))?;
    }
    Ok(())
}
