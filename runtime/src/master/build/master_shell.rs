//! A master-shell step: a command run by the master itself, in
//! `STATE/master-work/BUILDER`, its output redacted into the step's log.

use bbc_graph::{BuildResult, Command, Step};
use bytes::Bytes;

use super::command::exit_result;
use super::{Ctx, Outcome};
use crate::protocol::{WireCommand, CHUNK};

impl Ctx {
    pub(super) async fn master_shell(
        &mut self,
        index: u32,
        step: &Step,
        command: &Command,
    ) -> Outcome {
        let dir = self
            .shared
            .state_dir
            .join("master-work")
            .join(&self.builder.workdir);
        let env = match self.env(step, None) {
            Ok(env) => env,
            Err(why) => return Outcome::of(BuildResult::Exception, why),
        };
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            return Outcome::of(
                BuildResult::Exception,
                format!("cannot create {}: {e}", dir.display()),
            );
        }
        let mut c = match self.wire(command) {
            WireCommand::Shell(s) => {
                self.log(index, format!("$ {s}\n").as_bytes()).await;
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(s);
                c
            }
            WireCommand::Argv(v) => {
                self.log(index, format!("$ {}\n", v.join(" ")).as_bytes())
                    .await;
                let Some((prog, args)) = v.split_first() else {
                    return Outcome::of(BuildResult::Exception, "empty command");
                };
                let mut c = tokio::process::Command::new(prog);
                c.args(args);
                c
            }
        };
        c.current_dir(&dir)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match c.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::of(BuildResult::Exception, format!("could not run: {e}")),
        };
        let pid = child.id();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, tx.clone()));
        }
        drop(tx);
        let mut redact = self.redactor();
        let mut cancelled = false;
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(b) => {
                        let clean = redact.push(&b);
                        self.log(index, &clean).await;
                    }
                    None => break,
                },
                _ = self.cancel.changed(), if !cancelled => {
                    if *self.cancel.borrow() {
                        cancelled = true;
                        if let Some(pid) = pid {
                            // SAFETY: plain syscall on a process group we created.
                            unsafe { libc::killpg(pid as i32, libc::SIGTERM) };
                        }
                    }
                }
            }
        }
        let tail = redact.finish();
        self.log(index, &tail).await;
        let status = child.wait().await;
        match status {
            _ if cancelled => Outcome::of(BuildResult::Cancelled, "cancelled"),
            Ok(s) => match s.code() {
                Some(code) => {
                    let (r, state) = exit_result(step, code);
                    self.log(index, format!("\nexit code {code}\n").as_bytes())
                        .await;
                    Outcome::of(r, state)
                }
                None => Outcome::of(BuildResult::Failure, "killed by a signal"),
            },
            Err(e) => Outcome::of(BuildResult::Exception, format!("wait failed: {e}")),
        }
    }
}

/// Copies a pipe into a channel in chunks as they come.
async fn pump<R: tokio::io::AsyncRead + Unpin>(mut r: R, tx: tokio::sync::mpsc::Sender<Bytes>) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
}
