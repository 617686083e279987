//! `bbc backup STATE OUT`: a consistent copy of a state directory, taken
//! by the running master (through its control socket, `control.rs`) or,
//! when none runs, by `bbc backup` itself.
//!
//! What is copied: the store (`Store::backup`: the database from one
//! snapshot and the step logs cut at that snapshot) and the uploaded files
//! (`files/`). What is not, on purpose: `secrets/` (secrets belong in the
//! operator's secret management, not in every backup), `master-work/`
//! (scratch space of master-shell steps), the control socket, and anything
//! else in the directory. Restoring is starting a master with
//! `--state OUT`.
//!
//! The copy is written into `OUT.tmp` and renamed to `OUT` once complete
//! and synced, so `OUT` either does not exist or is a whole backup.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::store::{BackupReport, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupError {
    /// OUT cannot be used (relative, exists, no parent): nothing was
    /// written.
    Refused(String),
    /// The copy failed; nothing was left behind.
    Failed(String),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Refused(e) | BackupError::Failed(e) => f.write_str(e),
        }
    }
}

/// Where a backup into `out` is written before it is renamed to `out`.
pub fn temp_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Refuses an `out` that is not absolute or already exists.
pub fn check_out(out: &Path) -> Result<(), BackupError> {
    if !out.is_absolute() {
        return Err(BackupError::Refused(format!(
            "the backup directory must be an absolute path, not {}",
            out.display()
        )));
    }
    if out.symlink_metadata().is_ok() {
        return Err(BackupError::Refused(format!(
            "{} already exists; a backup goes into a new directory",
            out.display()
        )));
    }
    Ok(())
}

/// Backs up the store and the state directory's uploads into `out`, a
/// new directory. Blocking: async callers use `spawn_blocking`.
pub fn run(store: &dyn Store, state_dir: &Path, out: &Path) -> Result<BackupReport, BackupError> {
    check_out(out)?;
    let tmp = temp_path(out);
    // Private: the copy holds everything the store holds.
    let created = {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(&tmp)
    };
    match created {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(BackupError::Refused(format!(
                "{} exists (left by an interrupted backup?); remove it first",
                tmp.display()
            )))
        }
        Err(e) => {
            return Err(BackupError::Refused(format!(
                "cannot create {}: {e}",
                tmp.display()
            )))
        }
    }
    match fill(store, state_dir, &tmp, out) {
        Ok(report) => Ok(report),
        Err(e) => {
            // A partial copy is worth nothing and must not be mistaken
            // for a backup.
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn fill(
    store: &dyn Store,
    state_dir: &Path,
    tmp: &Path,
    out: &Path,
) -> Result<BackupReport, BackupError> {
    let failed = |e: String| BackupError::Failed(format!("backup into {}: {e}", out.display()));
    let mut report = store.backup(tmp).map_err(|e| failed(e.to_string()))?;
    let files = state_dir.join("files");
    if files.is_dir() {
        copy_tree(&files, &tmp.join("files"), &mut report).map_err(failed)?;
    }
    sync_dir(tmp).map_err(failed)?;
    rename_new(tmp, out)?;
    if let Some(parent) = out.parent() {
        sync_dir(parent).map_err(failed)?;
    }
    Ok(report)
}

/// Renames `from` to `to` unless `to` exists by now (a plain rename would
/// replace an empty directory created there meanwhile).
fn rename_new(from: &Path, to: &Path) -> Result<(), BackupError> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (Ok(f), Ok(t)) = (c(from), c(to)) else {
        return Err(BackupError::Refused("a path holds a NUL byte".into()));
    };
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD is ignored for
    // absolute ones (`out` is absolute, checked above).
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == ErrorKind::AlreadyExists {
        return Err(BackupError::Refused(format!(
            "{} was created while the backup ran; the backup is not kept",
            to.display()
        )));
    }
    Err(BackupError::Failed(format!(
        "renaming {} to {}: {e}",
        from.display(),
        to.display()
    )))
}

/// Copies the uploads: directories and regular files (synced), symlinks as
/// symlinks; anything else (a socket, a fifo) is not an upload and is left.
fn copy_tree(from: &Path, to: &Path, report: &mut BackupReport) -> Result<(), String> {
    let err = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    std::fs::create_dir(to).map_err(|e| err("creating", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| err("reading", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| err("reading", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ty = entry.file_type().map_err(|e| err("reading", &src, e))?;
        if ty.is_dir() {
            copy_tree(&src, &dst, report)?;
        } else if ty.is_file() {
            // An upload still being written is copied as far as it got.
            let mut r = File::open(&src).map_err(|e| err("opening", &src, e))?;
            let mut w = File::create(&dst).map_err(|e| err("creating", &dst, e))?;
            let n = std::io::copy(&mut r, &mut w).map_err(|e| err("copying", &src, e))?;
            w.sync_all().map_err(|e| err("syncing", &dst, e))?;
            report.files += 1;
            report.file_bytes += n;
        } else if ty.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| err("reading", &src, e))?;
            std::os::unix::fs::symlink(&target, &dst).map_err(|e| err("creating", &dst, e))?;
        }
    }
    sync_dir(to)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing directory {}: {e}", dir.display()))
}
