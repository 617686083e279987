//! Upload and download steps: files between the worker's build directory
//! and the master's files directory (`STATE/files`), which a transfer may
//! not leave.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bbc_graph::{BuildResult, Step};
use bytes::Bytes;

use super::{Ctx, Outcome};
use crate::protocol::{Frame, Message, CHUNK};
use crate::state::connection::{CmdEvent, WorkerConn};

impl Ctx {
    /// The worker of a transfer and the master-side path (`what` is
    /// "source" or "destination"), which must stay inside the master's
    /// files directory.
    fn transfer_ends(&self, path: &str, what: &str) -> Result<(Arc<WorkerConn>, PathBuf), Outcome> {
        let Some(conn) = self.conn.clone() else {
            return Err(Outcome::of(BuildResult::Retry, "worker lost"));
        };
        match master_path(&self.shared.state_dir, path) {
            Some(p) => Ok((conn, p)),
            None => Err(Outcome::of(
                BuildResult::Exception,
                format!("{what} `{path}` leaves the master's files directory"),
            )),
        }
    }

    /// A transfer the worker reported done (`verb` is "upload" or
    /// "download"): its log line and outcome. `sent` says where to and how
    /// much.
    async fn transfer_done(
        &self,
        index: u32,
        verb: &str,
        error: Option<String>,
        src: &str,
        sent: String,
    ) -> Outcome {
        if let Some(e) = error {
            self.log(index, format!("{verb} failed: {e}\n").as_bytes())
                .await;
            return Outcome::of(BuildResult::Failure, format!("{verb} failed: {e}"));
        }
        self.log(index, format!("{verb}ed {src} → {sent}\n").as_bytes())
            .await;
        Outcome::of(BuildResult::Success, format!("{verb}ed {src}"))
    }

    pub(super) async fn upload(
        &mut self,
        index: u32,
        step: &Step,
        src: String,
        dest: String,
        directory: bool,
    ) -> Outcome {
        let (conn, dest_path) = match self.transfer_ends(&dest, "destination") {
            Ok(ends) => ends,
            Err(o) => return o,
        };
        let id = self.shared.next_id();
        let msg = Message::Upload {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir: self.workdir(step),
            src: src.clone(),
            directory,
        };
        let mut rx = match open_transfer(&conn, id, msg).await {
            Ok(rx) => rx,
            Err(o) => return o,
        };
        let mut file: Option<tokio::fs::File> = None;
        let mut files = 0u64;
        let mut bytes = 0u64;
        loop {
            match rx.recv().await {
                Some(CmdEvent::FileBegin { path, .. }) => {
                    let target = if directory {
                        match safe_join(&dest_path, &path) {
                            Some(p) => p,
                            None => {
                                return Outcome::of(
                                    BuildResult::Exception,
                                    format!("worker sent a bad path `{path}`"),
                                )
                            }
                        }
                    } else {
                        dest_path.clone()
                    };
                    if let Some(parent) = target.parent() {
                        let _ = tokio::fs::create_dir_all(parent).await;
                    }
                    file = match tokio::fs::File::create(&target).await {
                        Ok(f) => Some(f),
                        Err(e) => {
                            return Outcome::of(
                                BuildResult::Exception,
                                format!("cannot write {}: {e}", target.display()),
                            )
                        }
                    };
                    files += 1;
                }
                Some(CmdEvent::FileData(d)) => {
                    use tokio::io::AsyncWriteExt;
                    bytes += d.len() as u64;
                    if let Some(f) = file.as_mut() {
                        if let Err(e) = f.write_all(&d).await {
                            return Outcome::of(
                                BuildResult::Exception,
                                format!("write failed: {e}"),
                            );
                        }
                    }
                }
                Some(CmdEvent::FileEnd) => {
                    if let Some(mut f) = file.take() {
                        use tokio::io::AsyncWriteExt;
                        let _ = f.flush().await;
                    }
                }
                Some(CmdEvent::Finished { error, .. }) => {
                    let sent = format!("{dest}: {files} file(s), {bytes} bytes");
                    return self.transfer_done(index, "upload", error, &src, sent).await;
                }
                None | Some(CmdEvent::Lost) => {
                    return Outcome::of(BuildResult::Retry, "worker lost")
                }
                Some(_) => {}
            }
        }
    }

    pub(super) async fn download(
        &mut self,
        index: u32,
        step: &Step,
        src: String,
        dest: String,
        directory: bool,
    ) -> Outcome {
        let (conn, src_path) = match self.transfer_ends(&src, "source") {
            Ok(ends) => ends,
            Err(o) => return o,
        };
        let files: Vec<(String, PathBuf)> = if directory {
            let root = src_path.clone();
            match tokio::task::spawn_blocking(move || list_files(&root)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    return Outcome::of(BuildResult::Failure, format!("cannot read {src}: {e}"))
                }
                Err(e) => return Outcome::of(BuildResult::Exception, e.to_string()),
            }
        } else {
            vec![(String::new(), src_path.clone())]
        };
        let id = self.shared.next_id();
        let msg = Message::Download {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir: self.workdir(step),
            dest: dest.clone(),
            directory,
        };
        let mut rx = match open_transfer(&conn, id, msg).await {
            Ok(rx) => rx,
            Err(o) => return o,
        };
        let mut bytes = 0u64;
        for (rel, path) in &files {
            use tokio::io::AsyncReadExt;
            let mut f = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = conn
                        .send(Frame::Message(Message::DownloadDone { id }))
                        .await;
                    return Outcome::of(
                        BuildResult::Failure,
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            };
            if !conn
                .send(Frame::Message(Message::FileBegin {
                    id,
                    path: rel.clone(),
                    mode: 0o644,
                }))
                .await
            {
                return Outcome::of(BuildResult::Retry, "worker lost");
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        if !conn
                            .send(Frame::FileData {
                                id,
                                data: Bytes::copy_from_slice(&buf[..n]),
                            })
                            .await
                        {
                            return Outcome::of(BuildResult::Retry, "worker lost");
                        }
                    }
                    Err(e) => {
                        return Outcome::of(BuildResult::Exception, format!("read failed: {e}"))
                    }
                }
            }
            if !conn.send(Frame::Message(Message::FileEnd { id })).await {
                return Outcome::of(BuildResult::Retry, "worker lost");
            }
        }
        if !conn
            .send(Frame::Message(Message::DownloadDone { id }))
            .await
        {
            return Outcome::of(BuildResult::Retry, "worker lost");
        }
        loop {
            match rx.recv().await {
                Some(CmdEvent::Finished { error, .. }) => {
                    let sent = format!("{dest}: {} file(s), {bytes} bytes", files.len());
                    return self
                        .transfer_done(index, "download", error, &src, sent)
                        .await;
                }
                None | Some(CmdEvent::Lost) => {
                    return Outcome::of(BuildResult::Retry, "worker lost")
                }
                Some(_) => {}
            }
        }
    }
}

/// `rel` under the master's files directory, refusing anything that leaves it.
pub fn master_path(state_dir: &Path, rel: &str) -> Option<PathBuf> {
    safe_join(&state_dir.join("files"), rel)
}

fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() {
        return Some(base.to_path_buf());
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(base.join(p))
}

fn list_files(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sends a transfer request; its events arrive on the returned channel.
async fn open_transfer(
    conn: &WorkerConn,
    id: u64,
    msg: Message,
) -> Result<tokio::sync::mpsc::Receiver<CmdEvent>, Outcome> {
    let rx = conn.expect(id);
    if conn.send(Frame::Message(msg)).await {
        Ok(rx)
    } else {
        Err(Outcome::of(BuildResult::Retry, "worker lost"))
    }
}
