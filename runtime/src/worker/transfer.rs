//! Uploads (worker → master) and downloads (master → worker) of files and
//! directories, streamed in CHUNK pieces: no file is ever held in memory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{elapsed_ms, finished_error, work_dir};
use crate::protocol::{check_relative_path, Frame, Message, CHUNK};

/// Permission bits carried by `file-begin` (no setuid, setgid or sticky:
/// a transferred file must not gain privileges).
const MODE_MASK: u32 = 0o777;

pub(super) struct UploadSpec {
    pub id: u64,
    pub builder_dir: String,
    pub workdir: String,
    pub src: String,
    pub directory: bool,
}

/// Sends `src` as file-begin / file-data / file-end frames; returns the
/// `finished` that follows them.
pub(super) async fn upload(basedir: &Path, spec: UploadSpec, out: &mpsc::Sender<Frame>) -> Message {
    let started = Instant::now();
    let id = spec.id;
    match upload_inner(basedir, &spec, out).await {
        Ok(()) => success(id, started),
        Err(err) => finished_error(id, err, Some(started)),
    }
}

async fn upload_inner(
    basedir: &Path,
    spec: &UploadSpec,
    out: &mpsc::Sender<Frame>,
) -> Result<(), String> {
    let dir = work_dir(basedir, &spec.builder_dir, &spec.workdir)?;
    check_relative_path(&spec.src).map_err(|e| format!("source: {e}"))?;
    let src = dir.join(&spec.src);
    let meta = tokio::fs::metadata(&src)
        .await
        .map_err(|e| format!("{}: {e}", src.display()))?;
    if spec.directory {
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", src.display()));
        }
        for (relative, path) in regular_files(&src).await? {
            send_file(spec.id, relative, &path, out).await?;
        }
        Ok(())
    } else {
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", src.display()));
        }
        send_file(spec.id, String::new(), &src, out).await
    }
}

/// Every regular file under `root` (recursively, not following symbolic
/// links, which could loop or leave the tree), as (path relative to `root`
/// with `/` separators, full path), sorted so uploads are reproducible.
async fn regular_files(root: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        loop {
            let entry = match entries.next_entry().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            };
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(format!("{}: the file name is not UTF-8", path.display()));
            };
            let relative = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if kind.is_dir() {
                pending.push((relative, path));
            } else if kind.is_file() {
                files.push((relative, path));
            } else {
                tracing::debug!("upload skips {} (not a regular file)", path.display());
            }
        }
    }
    files.sort();
    Ok(files)
}

async fn send_file(
    id: u64,
    relative: String,
    path: &Path,
    out: &mpsc::Sender<Frame>,
) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = File::open(path).await.map_err(failed)?;
    let mode = file.metadata().await.map_err(failed)?.permissions().mode() & MODE_MASK;
    send(
        out,
        Frame::Message(Message::FileBegin {
            id,
            path: relative,
            mode,
        }),
    )
    .await?;
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let read = file
            .read_buf(&mut (&mut buf).limit(CHUNK))
            .await
            .map_err(failed)?;
        if read == 0 {
            break;
        }
        let data = buf.split().freeze();
        send(out, Frame::FileData { id, data }).await?;
    }
    send(out, Frame::Message(Message::FileEnd { id })).await
}

async fn send(out: &mpsc::Sender<Frame>, frame: Frame) -> Result<(), String> {
    out.send(frame)
        .await
        .map_err(|_| "the connection to the master is closed".to_string())
}

fn success(id: u64, started: Instant) -> Message {
    Message::Finished {
        id,
        exit_code: Some(0),
        signal: None,
        stopped: None,
        error: None,
        duration_ms: elapsed_ms(started),
    }
}

pub(super) struct DownloadSpec {
    pub id: u64,
    pub builder_dir: String,
    pub workdir: String,
    pub dest: String,
    pub directory: bool,
}

/// A download's frames, forwarded by the session's reader.
#[derive(Debug)]
pub(crate) enum DownloadEvent {
    Begin { path: String, mode: u32 },
    Data(Bytes),
    End,
    Done,
}

/// Receives files until `download-done`; returns the `finished` to send,
/// or `None` if the session ended first (nobody to tell).
///
/// After an error, the remaining frames are read and dropped until
/// `download-done`, so the master's stream stays in step; `finished` then
/// carries the first error.
pub(super) async fn download(
    basedir: &Path,
    spec: DownloadSpec,
    mut events: mpsc::Receiver<DownloadEvent>,
) -> Option<Message> {
    let started = Instant::now();
    let mut receiver = Receiver::new(basedir, &spec).await;
    loop {
        let event = events.recv().await?;
        let done = matches!(event, DownloadEvent::Done);
        if let Ok(active) = &mut receiver {
            if let Err(err) = active.handle(event, &spec).await {
                active.discard();
                receiver = Err(err);
            }
        }
        if done {
            break;
        }
    }
    Some(match receiver {
        Ok(_) => success(spec.id, started),
        Err(err) => finished_error(spec.id, err, Some(started)),
    })
}

/// Where a download writes.
struct Receiver {
    /// The destination directory (`directory`) or file.
    dest: PathBuf,
    /// The file being written, if any.
    current: Option<Partial>,
    /// Files completed (a single-file download takes exactly one).
    files: usize,
}

/// A file being received: written under a temporary name next to its
/// destination and renamed at file-end, so a failed download never leaves
/// a truncated file under the real name. Dropped before it is complete
/// (an error, the connection lost), it removes the temporary file.
struct Partial {
    file: File,
    temporary: PathBuf,
    dest: PathBuf,
    mode: u32,
    complete: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.complete {
            // Blocking, but a single unlink, on an error path only; Drop
            // cannot await. The file may not exist any more.
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

impl Receiver {
    async fn new(basedir: &Path, spec: &DownloadSpec) -> Result<Receiver, String> {
        let dir = work_dir(basedir, &spec.builder_dir, &spec.workdir)?;
        check_relative_path(&spec.dest).map_err(|e| format!("destination: {e}"))?;
        let dest = dir.join(&spec.dest);
        if spec.directory {
            tokio::fs::create_dir_all(&dest)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        } else if !has_name(&spec.dest) {
            return Err(format!("destination {:?} does not name a file", spec.dest));
        }
        Ok(Receiver {
            dest,
            current: None,
            files: 0,
        })
    }

    async fn handle(&mut self, event: DownloadEvent, spec: &DownloadSpec) -> Result<(), String> {
        match event {
            DownloadEvent::Begin { path, mode } => {
                if self.current.is_some() {
                    return Err("file-begin while a file is still open".into());
                }
                let dest = if spec.directory {
                    check_relative_path(&path).map_err(|e| format!("file in download: {e}"))?;
                    if !has_name(&path) {
                        return Err(format!("file in download: {path:?} does not name a file"));
                    }
                    self.dest.join(&path)
                } else {
                    if !path.is_empty() {
                        return Err(format!(
                            "single-file download carries a path ({path:?}); it must be empty"
                        ));
                    }
                    if self.files > 0 {
                        return Err("a single-file download carries several files".into());
                    }
                    self.dest.clone()
                };
                self.current = Some(Partial::create(dest, mode).await?);
                Ok(())
            }
            DownloadEvent::Data(data) => match &mut self.current {
                Some(partial) => partial
                    .file
                    .write_all(&data)
                    .await
                    .map_err(|e| format!("{}: {e}", partial.temporary.display())),
                None => Err("file data outside a file (no file-begin)".into()),
            },
            DownloadEvent::End => match self.current.take() {
                Some(partial) => {
                    partial.finish().await?;
                    self.files += 1;
                    Ok(())
                }
                None => Err("file-end without file-begin".into()),
            },
            DownloadEvent::Done => {
                if self.current.is_some() {
                    return Err("download-done while a file is still open".into());
                }
                if !spec.directory && self.files == 0 {
                    return Err("no file received".into());
                }
                Ok(())
            }
        }
    }

    /// Drops the partly written file after an error (see `Partial`'s drop).
    fn discard(&mut self) {
        self.current = None;
    }
}

impl Partial {
    async fn create(dest: PathBuf, mode: u32) -> Result<Partial, String> {
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(format!("{} does not name a file", dest.display()));
        };
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(".bbc-part");
        let temporary = parent.join(temporary_name);
        let file = File::create(&temporary)
            .await
            .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
        Ok(Partial {
            file,
            temporary,
            dest,
            mode,
            complete: false,
        })
    }

    /// Completes the file under its real name (on error, dropping `self`
    /// removes it).
    async fn finish(mut self) -> Result<(), String> {
        self.move_into_place().await?;
        self.complete = true;
        Ok(())
    }

    async fn move_into_place(&mut self) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("{}: {e}", self.temporary.display());
        // tokio's File writes in the background: flush to see its errors.
        self.file.flush().await.map_err(failed)?;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(self.mode & MODE_MASK))
            .await
            .map_err(failed)?;
        tokio::fs::rename(&self.temporary, &self.dest)
            .await
            .map_err(|e| format!("cannot move into {}: {e}", self.dest.display()))
    }
}

/// Whether a (checked) relative path names something below its base, as
/// opposed to `""` or `.`, which name the base itself.
fn has_name(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| matches!(c, Component::Normal(_)))
}
