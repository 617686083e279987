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
    async fn transfer_ends(
        &self,
        path: &str,
        what: &str,
    ) -> Result<(Arc<WorkerConn>, PathBuf), Outcome> {
        let Some(conn) = self.conn.clone() else {
            return Err(Outcome::of(BuildResult::Retry, "worker lost"));
        };
        match resolve(&self.shared.state_dir, path, what == "destination").await {
            Ok(p) => Ok((conn, p)),
            Err(why) => Err(Outcome::of(BuildResult::Exception, format!("{what} {why}"))),
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

    /// Remembers the files a build uploaded (paths under `STATE/files`),
    /// so that its page links them: a list under the store's state key
    /// `store::uploads_key`, appended by each upload step. A failure to record
    /// is logged and fails nothing: the files are there all the same.
    async fn record_uploads(&self, mut paths: Vec<String>) {
        if paths.is_empty() {
            return;
        }
        let key = crate::store::uploads_key(self.build.id);
        let r = self
            .shared
            .db(move |st| {
                let mut all: Vec<String> = match st.get_state(&key)? {
                    Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
                    None => Vec::new(),
                };
                all.append(&mut paths);
                all.truncate(MAX_LISTED);
                let v = serde_json::to_vec(&all).unwrap_or_default();
                st.put_state(&key, &v)
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(
                build = self.build.id,
                "cannot record the build's uploads: {e}"
            );
        }
    }

    pub(super) async fn upload(
        &mut self,
        index: u32,
        step: &Step,
        src: String,
        dest: String,
        directory: bool,
    ) -> Outcome {
        let (conn, dest_path) = match self.transfer_ends(&dest, "destination").await {
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
        // What the build page links to (the first few of a directory).
        let mut uploaded: Vec<String> = Vec::new();
        loop {
            match rx.recv().await {
                Some(CmdEvent::FileBegin { path, .. }) => {
                    let target = if directory {
                        // Each file is resolved again: a directory already
                        // under the destination may be a link out.
                        let rel = match safe_join(Path::new(&dest), &path) {
                            Some(p) => p.to_string_lossy().into_owned(),
                            None => {
                                return Outcome::of(
                                    BuildResult::Exception,
                                    format!("worker sent a bad path `{path}`"),
                                )
                            }
                        };
                        let target = match resolve(&self.shared.state_dir, &rel, true).await {
                            Ok(p) => p,
                            Err(why) => return Outcome::of(BuildResult::Exception, why),
                        };
                        if uploaded.len() < MAX_LISTED {
                            uploaded.push(rel);
                        }
                        target
                    } else {
                        if uploaded.is_empty() {
                            uploaded.push(dest.clone());
                        }
                        dest_path.clone()
                    };
                    if let Some(parent) = target.parent() {
                        let _ = tokio::fs::create_dir_all(parent).await;
                    }
                    file = match create_nofollow(&target).await {
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
                    if error.is_none() {
                        self.record_uploads(uploaded).await;
                    }
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
        let (conn, src_path) = match self.transfer_ends(&src, "source").await {
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
            let opened = tokio::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .await;
            let mut f = match opened {
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

/// How many uploaded files a build lists (a directory upload may hold
/// thousands; the files directory has them all).
const MAX_LISTED: usize = 200;

/// `rel` under the master's files directory, refusing anything that leaves
/// it: lexically (`..`, an absolute path) or through a symbolic link there.
/// Links are resolved: the deepest part of the path that exists is
/// canonicalized and must still be inside the (canonical) files directory;
/// what does not exist yet holds no link. The path returned is the resolved
/// one, so writing to it follows no link. Blocking (it reads the file
/// system); `create` makes the files directory when it is missing.
pub fn master_path(state_dir: &Path, rel: &str, create: bool) -> Result<PathBuf, String> {
    let leaves = || format!("`{rel}` leaves the master's files directory");
    let root = state_dir.join("files");
    let joined = safe_join(&root, rel).ok_or_else(leaves)?;
    if create {
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    // The deepest ancestor that exists (`symlink_metadata` sees a dangling
    // link too: it exists, and resolving it fails below).
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    while existing.symlink_metadata().is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) if existing != root => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let real = existing
        .canonicalize()
        .map_err(|e| format!("`{rel}`: cannot resolve {}: {e}", existing.display()))?;
    if !real.starts_with(&real_root) {
        return Err(format!(
            "`{rel}` leaves the master's files directory through a symbolic link ({} is {})",
            existing.display(),
            real.display()
        ));
    }
    Ok(rest.iter().rev().fold(real, |p, n| p.join(n)))
}

/// Opens a file to write an upload to, refusing a symbolic link as its
/// last component: one made after `master_path` looked must not be
/// followed either.
async fn create_nofollow(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .await
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

/// [`master_path`] on a blocking thread.
async fn resolve(state_dir: &Path, rel: &str, create: bool) -> Result<PathBuf, String> {
    let (dir, r) = (state_dir.to_path_buf(), rel.to_string());
    tokio::task::spawn_blocking(move || master_path(&dir, &r, create))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Sends a transfer request; its events arrive on the returned channel.
pub(super) async fn open_transfer(
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

#[cfg(test)]
mod tests {
    use super::master_path;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_path_may_not_leave_the_files_directory_lexically_or_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let out = t.path().join("out");
        std::fs::create_dir_all(state.join("files/in")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        symlink(&out, state.join("files/away")).unwrap();
        symlink(state.join("files/in"), state.join("files/near")).unwrap();
        symlink(t.path().join("nothing"), state.join("files/dangling")).unwrap();
        let files = state.join("files").canonicalize().unwrap();
        let ok = |rel: &str| master_path(&state, rel, true).unwrap();
        assert_eq!(ok("a/b.txt"), files.join("a/b.txt"));
        assert_eq!(ok(""), files);
        // A link that stays inside is resolved to where it points.
        assert_eq!(ok("near/x/y"), files.join("in/x/y"));
        for (rel, why) in [
            ("../x", "leaves the master's files directory"),
            ("/etc/passwd", "leaves the master's files directory"),
            ("away/x", "through a symbolic link"),
            ("away", "through a symbolic link"),
            ("away/deeper/x", "through a symbolic link"),
            ("dangling", "cannot resolve"),
        ] {
            let e = master_path(&state, rel, true).unwrap_err();
            assert!(e.contains(why), "{rel}: {e}");
        }
        // Reading: a missing files directory is an error, not created.
        let other = t.path().join("empty-state");
        assert!(master_path(&other, "x", false).is_err());
        assert!(!other.join("files").exists());
    }
}
