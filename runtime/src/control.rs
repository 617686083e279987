//! The master's control socket, `STATE/control.sock`: local admin commands
//! (today `bbc backup`), one JSON request line answered by one JSON line.
//!
//! Security: the socket is created with mode 0600 (bound inside a private
//! directory, then moved into place, so it is never reachable with looser
//! permissions), so only the master's user (and root) can connect. No
//! token is asked for: whoever can connect can already read the state
//! directory, which is everything a command here reveals or copies.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::backup::BackupError;
use crate::state::Shared;
use crate::store::BackupReport;

/// The socket's name in the state directory.
pub const SOCKET: &str = "control.sock";

/// A request line is small; a longer one is refused unread.
const MAX_LINE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// A backup into `out`, an absolute path that does not exist yet.
    Backup { out: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Done {
        report: BackupReport,
    },
    /// The request cannot be carried out as asked (nothing was done).
    Refused {
        error: String,
    },
    /// It failed on the way (nothing was left behind).
    Failed {
        error: String,
    },
}

impl From<Result<BackupReport, BackupError>> for Answer {
    fn from(r: Result<BackupReport, BackupError>) -> Answer {
        match r {
            Ok(report) => Answer::Done { report },
            Err(BackupError::Refused(error)) => Answer::Refused { error },
            Err(BackupError::Failed(error)) => Answer::Failed { error },
        }
    }
}

/// The bound socket; its file is removed when this is dropped (the
/// master's control task ends), if it is still this socket's.
pub struct Listener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file this process bound.
    id: (u64, u64),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `STATE/control.sock`. The caller holds the store, so no other
/// master uses this directory: a socket file already there is a stale one
/// left by a master that died, and is replaced.
pub fn bind(state_dir: &Path) -> std::io::Result<Listener> {
    let path = state_dir.join(SOCKET);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bound in a directory only this user can enter, made 0600 there, then
    // moved into place: never reachable with the umask's permissions.
    let private = state_dir.join(format!(".control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    }
    let bound = (|| {
        let tmp = private.join(SOCKET);
        let l = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, &path)?;
        Ok::<_, std::io::Error>(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    let l = bound?;
    l.set_nonblocking(true)?;
    let m = std::fs::symlink_metadata(&path)?;
    Ok(Listener {
        inner: tokio::net::UnixListener::from_std(l)?,
        path,
        id: (m.dev(), m.ino()),
    })
}

/// Serves the control socket until the master stops (the task is aborted).
pub async fn serve(shared: Arc<Shared>, listener: Listener) {
    // One backup at a time: two would only compete for the same disk.
    let one = Arc::new(tokio::sync::Mutex::new(()));
    loop {
        let (sock, _) = match listener.inner.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accepting a control connection failed: {e}");
                // Not a busy loop if accept keeps failing (out of fds).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let s = shared.clone();
        let one = one.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(s, sock, one).await {
                tracing::warn!("control connection: {e}");
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    sock: tokio::net::UnixStream,
    one: Arc<tokio::sync::Mutex<()>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_LINE));
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(30), r.read_line(&mut line)).await;
    let answer = match read {
        Err(_) => Answer::Refused {
            error: "no request within 30 s".into(),
        },
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
            Err(e) => Answer::Refused {
                error: format!("not a control request: {e}"),
            },
            Ok(Request::Backup { out }) => {
                let _one = one.lock().await;
                tracing::info!(out = %out.display(), "backup requested");
                let store = shared.store.clone();
                let state_dir = shared.state_dir.clone();
                let out2 = out.clone();
                let r = tokio::task::spawn_blocking(move || {
                    crate::backup::run(store.as_ref(), &state_dir, &out2)
                })
                .await
                .unwrap_or_else(|e| Err(BackupError::Failed(format!("backup task failed: {e}"))));
                match &r {
                    Ok(rep) => {
                        tracing::info!(out = %out.display(), builds = rep.builds, logs = rep.logs, "backup done")
                    }
                    Err(e) => tracing::warn!(out = %out.display(), "backup not taken: {e}"),
                }
                r.into()
            }
        },
    };
    let mut text = serde_json::to_string(&answer).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

/// Why [`request`] got no answer.
#[derive(Debug)]
pub enum ClientError {
    /// No master listens on the state directory's socket (none, or a stale
    /// socket file of one that stopped).
    NoMaster,
    /// It listens, but the exchange failed.
    Io(String),
}

/// Sends one request to the master of `state_dir` and waits for its
/// answer, however long the work takes. Blocking.
pub fn request(state_dir: &Path, req: &Request) -> Result<Answer, ClientError> {
    let path = state_dir.join(SOCKET);
    let mut sock = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NoMaster)
        }
        Err(e) => {
            return Err(ClientError::Io(format!(
                "connecting to {}: {e}",
                path.display()
            )))
        }
    };
    let io = |e: std::io::Error| {
        ClientError::Io(format!("talking to the master at {}: {e}", path.display()))
    };
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Io(e.to_string()))?;
    line.push('\n');
    sock.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&mut sock, MAX_LINE))
        .read_line(&mut answer)
        .map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::Io(format!(
            "the master at {} closed the connection without answering (did it stop?)",
            path.display()
        )));
    }
    serde_json::from_str(answer.trim_end())
        .map_err(|e| ClientError::Io(format!("the master's answer is not understood: {e}")))
}
