//! Real `bbc` processes for the integration tests and the benchmarks. Both
//! start `bbc master` on ports the kernel picks and learn them from the
//! first line it prints, so that parsing lives here once. `SmallDisk`
//! (a tmpfs that fills up) serves the full-disk tests of both the runtime
//! and the integration tests. `lsp::LspProcess` runs `bbc lsp` with the
//! protocol's framing, for its tests and its benchmark.

mod disk;
pub mod lsp;

pub use disk::SmallDisk;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A child process killed when dropped (so a failing test or benchmark
/// leaves none behind).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The addresses a master announces in the first line it prints (`bbc
/// master` and `bbc up` alike): "bbc master: workers on A, http on http://B/".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// Where workers connect (`--worker-listen`).
    pub workers: String,
    /// The HTTP API and web UI, as host:port (`--http-listen`).
    pub http: String,
}

impl Ports {
    pub fn parse(line: &str) -> Option<Ports> {
        let workers = line.split("workers on ").nth(1)?.split(',').next()?;
        Some(Ports {
            workers: workers.to_string(),
            http: http_addr_in(line)?,
        })
    }
}

/// The HTTP address (host:port) in a master's first line (`http://` or,
/// with TLS, `https://`).
pub fn http_addr_in(line: &str) -> Option<String> {
    let url = line.split("http on ").nth(1)?.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    Some(rest.trim_end_matches('/').to_string())
}

/// Adds the arguments of `bbc master CONFIG` on ephemeral loopback ports,
/// its state in `DIR/state` and its secrets in `DIR/secrets`, to a command
/// that runs `bbc`.
pub fn master_args<'a>(cmd: &'a mut Command, config: &Path, dir: &Path) -> &'a mut Command {
    master_args_on(cmd, config, dir, "127.0.0.1:0")
}

/// As [`master_args`], with the worker port on `worker_listen`.
pub fn master_args_on<'a>(
    cmd: &'a mut Command,
    config: &Path,
    dir: &Path,
    worker_listen: &str,
) -> &'a mut Command {
    cmd.arg("master")
        .arg(config)
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--secrets")
        .arg(dir.join("secrets"))
        .args([
            "--worker-listen",
            worker_listen,
            "--http-listen",
            "127.0.0.1:0",
        ])
}

/// Adds the arguments of `bbc worker NAME` connecting to a master's worker
/// address, its password in `password_file` and its directory in
/// `DIR/workers/NAME`, to a command that runs `bbc`.
pub fn worker_args<'a>(
    cmd: &'a mut Command,
    master: &str,
    name: &str,
    password_file: &Path,
    dir: &Path,
) -> &'a mut Command {
    cmd.args(["worker", "--master", master, "--name", name])
        .arg("--password-file")
        .arg(password_file)
        .arg("--basedir")
        .arg(dir.join("workers").join(name))
}

/// A process started by [`spawn_announced`].
pub struct Announced {
    pub child: Child,
    /// Its first line of standard output, with the line end (empty when it
    /// printed none).
    pub first_line: String,
    /// When that line was read: a master's ports listen from then on.
    pub announced_at: Instant,
}

impl Announced {
    /// The ports in the first line, when it is a master's announcement.
    pub fn ports(&self) -> Option<Ports> {
        Ports::parse(&self.first_line)
    }
}

/// Spawns `cmd` with its standard output piped here and reads the first
/// line. The rest of the output is drained by a thread, so that a later
/// print never meets a closed pipe. Fails only when the process cannot be
/// spawned; a process that prints nothing gives an empty line.
pub fn spawn_announced(cmd: &mut Command) -> std::io::Result<Announced> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut first_line = String::new();
    let Some(out) = child.stdout.take() else {
        return Ok(Announced {
            child,
            first_line,
            announced_at: Instant::now(),
        });
    };
    let mut reader = BufReader::new(out);
    let _ = reader.read_line(&mut first_line);
    let announced_at = Instant::now();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Ok(Announced {
        child,
        first_line,
        announced_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_a_masters_first_line() {
        let p =
            Ports::parse("bbc master: workers on 127.0.0.1:4001, http on http://127.0.0.1:8010/\n");
        assert_eq!(
            p,
            Some(Ports {
                workers: "127.0.0.1:4001".into(),
                http: "127.0.0.1:8010".into()
            })
        );
        assert_eq!(Ports::parse("error: no config\n"), None);
    }
}
