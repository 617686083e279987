use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn bbc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bbc"));
    c.current_dir(root());
    // Deterministic rendering whatever the caller's terminal says.
    c.env("NO_COLOR", "1").env("COLUMNS", "80");
    c
}

pub fn run(args: &[&str]) -> Output {
    match bbc().args(args).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run bbc: {e}"),
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Files with extension `ext` directly in `dir`, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bbc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

/// A minimal HTTP/1.1 client for the API (GET and POST with a JSON body).
pub fn http(method: &str, addr: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_with(method, addr, path, &[], body)
}

/// [`http`] with extra request headers.
pub fn http_with(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_full(method, addr, path, headers, body);
    (status, body)
}

/// [`http_with`], also answering the response's head (status line and
/// headers, as sent) for the tests of cookies and other headers.
pub fn http_full(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => panic!("connect {addr}: {e}"),
    };
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    // Read to the end of the body: by Content-Length when given (some
    // servers, chromedriver among them, keep the connection open despite
    // `Connection: close`), else to the end of the stream.
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| out.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    // Chunked bodies: join the chunks.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut rest = body.as_str();
        let mut joined = String::new();
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            joined.push_str(&after[..n.min(after.len())]);
            rest = after.get(n + 2..).unwrap_or("");
        }
        joined
    } else {
        body
    };
    (status, head, body)
}

pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http("GET", addr, path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Polls `f` until it returns Some: for waiting on a state the system
/// reaches by itself (a worker connecting, a build ending). Bounded.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..3000 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// Shared with the benchmarks: a child process killed when dropped.
pub use bbc_testkit::Proc;

/// A running `bbc master` on ephemeral ports with its state in `dir`.
pub struct Master {
    pub proc: Proc,
    pub workers: String,
    pub http: String,
    pub dir: PathBuf,
}

impl Master {
    pub fn start(dir: &Path, config: &str) -> Master {
        Master::spawn(dir, config, false)
    }

    /// A master whose standard error goes to `DIR/master.log` (for tests
    /// that wait for a log line).
    pub fn start_logged(dir: &Path, config: &str) -> Master {
        Master::spawn(dir, config, true)
    }

    /// A master whose worker port listens on `worker_listen`.
    pub fn start_on(dir: &Path, config: &str, worker_listen: &str) -> Master {
        Master::spawn_with(dir, config, false, worker_listen, &[])
    }

    /// [`Master::start_logged`] with extra arguments to `bbc master`.
    pub fn start_logged_with(dir: &Path, config: &str, args: &[&str]) -> Master {
        Master::spawn_with(dir, config, true, "127.0.0.1:0", args)
    }

    fn spawn(dir: &Path, config: &str, logged: bool) -> Master {
        Master::spawn_with(dir, config, logged, "127.0.0.1:0", &[])
    }

    fn spawn_with(
        dir: &Path,
        config: &str,
        logged: bool,
        worker_listen: &str,
        args: &[&str],
    ) -> Master {
        let cfg = dir.join("master.kdl");
        std::fs::write(&cfg, config).unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = bbc();
        bbc_testkit::master_args_on(&mut cmd, &cfg, dir, worker_listen)
            .args(args)
            .stderr(if logged {
                std::fs::File::create(dir.join("master.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|e| panic!("master.log: {e}"))
            } else {
                std::process::Stdio::inherit()
            });
        let started =
            bbc_testkit::spawn_announced(&mut cmd).unwrap_or_else(|e| panic!("spawn master: {e}"));
        let ports = started.ports();
        // Owned before any panic below, so that it is killed then too.
        let proc = Proc(started.child);
        let ports =
            ports.unwrap_or_else(|| panic!("unexpected first line: {:?}", started.first_line));
        Master {
            proc,
            workers: ports.workers,
            http: ports.http,
            dir: dir.to_path_buf(),
        }
    }

    pub fn worker(&self, name: &str, password: &str) -> Proc {
        let pw = self.dir.join(format!("{name}.password"));
        std::fs::write(&pw, password).unwrap_or_else(|e| panic!("{e}"));
        let child = bbc_testkit::worker_args(&mut bbc(), &self.workers, name, &pw, &self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn worker: {e}"));
        Proc(child)
    }

    pub fn wait_connected(&self, name: &str) {
        wait_for(&format!("worker {name} to connect"), || {
            let v = get_json(&self.http, "/api/v1/workers");
            v["workers"]
                .as_array()?
                .iter()
                .find(|w| w["name"] == name && w["connected"] == true)
                .map(|_| ())
        });
    }

    /// Forces a build; returns its build set's id once acknowledged (201).
    pub fn force(&self, builder: &str, body: &str) -> u64 {
        let (status, resp) = http(
            "POST",
            &self.http,
            &format!("/api/v1/builders/{builder}/force"),
            Some(body),
        );
        assert_eq!(status, 201, "force {builder}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap_or_else(|e| panic!("{e}"));
        v["buildset"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no buildset in {v}"))
    }

    /// Forces a build and waits for its end; returns the build JSON (with steps).
    pub fn force_and_wait(&self, builder: &str, body: &str) -> serde_json::Value {
        let set = self.force(builder, body);
        self.wait_buildset(set)
    }

    pub fn wait_buildset(&self, set: u64) -> serde_json::Value {
        let build = wait_for("the build to finish", || {
            let r = get_json(&self.http, &format!("/api/v1/requests?buildset={set}"));
            let rq = r["requests"].as_array()?.first()?.clone();
            (rq["state"] == "complete")
                .then(|| rq["build"].as_u64())
                .flatten()
        });
        get_json(&self.http, &format!("/api/v1/builds/{build}"))["build"].clone()
    }

    pub fn log(&self, build: u64, step: u64) -> String {
        let (status, body) = http(
            "GET",
            &self.http,
            &format!("/api/v1/builds/{build}/steps/{step}/log"),
            None,
        );
        assert_eq!(status, 200, "log: {body}");
        body
    }
}

pub fn write_secret(dir: &Path, name: &str, value: &str) {
    let d = dir.join("secrets");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join(name), value).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs git in `dir` with a fixed identity; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .unwrap_or_else(|e| panic!("git: {e}"));
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The HTTP address in the line `bbc master` and `bbc up` print first
/// ("bbc master: workers on A, http on http://B/").
pub fn http_addr_in(line: &str) -> String {
    bbc_testkit::http_addr_in(line).unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
}
