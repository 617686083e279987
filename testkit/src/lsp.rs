//! A `bbc lsp` process and the LSP base protocol's framing
//! (`Content-Length: N\r\n\r\n` + N bytes of JSON), for the tests and the
//! benchmark that drive it as an editor does. Messages are bytes here; the
//! callers parse the JSON.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct LspProcess {
    child: std::process::Child,
    stdin: ChildStdin,
    inbox: mpsc::Receiver<Vec<u8>>,
}

impl LspProcess {
    /// Starts `exe lsp` in `cwd`; its messages are read on a thread.
    pub fn start(exe: &Path, cwd: &Path) -> std::io::Result<LspProcess> {
        let mut child = Command::new(exe)
            .arg("lsp")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let missing = || std::io::Error::other("no pipe to bbc lsp");
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let (tx, inbox) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            while let Some(body) = read_message(&mut r) {
                if tx.send(body).is_err() {
                    return;
                }
            }
        });
        Ok(LspProcess {
            child,
            stdin,
            inbox,
        })
    }

    pub fn send(&mut self, body: &[u8]) -> std::io::Result<()> {
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len())?;
        self.stdin.write_all(body)?;
        self.stdin.flush()
    }

    /// The next message, or `None` when the server closed its output or
    /// sent nothing for `guard`.
    pub fn recv(&self, guard: Duration) -> Option<Vec<u8>> {
        self.inbox.recv_timeout(guard).ok()
    }

    /// The server's process id (the benchmark reads its CPU time).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit (after `exit`).
    pub fn wait(mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }
}

impl Drop for LspProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One message's body; `None` at the end of the stream or on a malformed
/// header.
fn read_message(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.parse::<usize>().ok();
        }
    }
    let mut body = vec![0; len?];
    r.read_exact(&mut body).ok()?;
    Some(body)
}
