//! Latent workers started and stopped by commands the admin writes
//! (`kind="command"`): Kubernetes, cloud VMs or libvirt driven through
//! their own CLIs, with bbc knowing none of them.
//!
//! Each command runs as `sh -c COMMAND` in the state directory, in a
//! process group of its own, with `BBC_WORKER_NAME` and `BBC_MASTER` in
//! its environment (and `BBC_WORKER_PASSWORD`, the one-time password, for
//! `start` only); its output goes to `STATE/latent/NAME-start.log` (or
//! `-stop.log`), whose end is the reason given when it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// How much of a failed command's log goes into the reason.
const TAIL: u64 = 400;

/// Runs `script` for worker `worker` (`what`: "start" or "stop") and
/// waits for it to exit, at most `timeout`.
pub(super) async fn run(
    state_dir: &Path,
    worker: &str,
    what: &str,
    script: &str,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let dir = state_dir.join("latent");
    let log = dir.join(format!("{worker}-{what}.log"));
    let out = open_log(&dir, &log)
        .await
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(state_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run its {what} command: {e}"))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("its {what} command failed: {e}")),
        Err(_) => {
            // The whole group: what the shell started goes too.
            if let Some(pid) = child.id() {
                // SAFETY: killpg(2) takes plain integers; no memory involved.
                unsafe {
                    libc::killpg(pid as i32, libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            return Err(format!(
                "its {what} command did not finish within {} s{}",
                timeout.as_secs(),
                tail(&log).await
            ));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "its {what} command failed ({status}){}",
            tail(&log).await
        ))
    }
}

async fn open_log(dir: &Path, log: &PathBuf) -> std::io::Result<std::fs::File> {
    tokio::fs::create_dir_all(dir).await?;
    Ok(tokio::fs::File::create(log).await?.into_std().await)
}

/// The end of a command's log, as `: …` (empty when there is none).
async fn tail(log: &Path) -> String {
    let Ok(mut f) = tokio::fs::File::open(log).await else {
        return String::new();
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let _ = f
        .seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL)))
        .await;
    let mut b = Vec::new();
    let _ = f.take(TAIL).read_to_end(&mut b).await;
    let s = String::from_utf8_lossy(&b);
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {}", s.replace('\n', " / "))
    }
}
