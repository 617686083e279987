//! Step logs as append-only files beside the database:
//! `<state_dir>/logs/<build / 1000>/<build>/<step>.log`.
//!
//! Why files and not redb chunks: see docs/store.md ("Logs"). In short,
//! appending to a file is a `write(2)` into the page cache, several times
//! faster than a redb commit per chunk, costs no process memory, and keeps
//! hundreds of MB of log out of the B-tree file whose size every durable
//! commit works against.
//!
//! The length of a log is the length of its file. After `kill -9` every
//! byte that `append_log` wrote is in the page cache and so in the file;
//! after a power loss, everything up to the last `sync_log` is (fdatasync
//! persists the size too), and a tail written after it may be missing or,
//! on some file systems, zero-filled. Either way `log_len` and `read_log`
//! agree, because both look at the same file.
//!
//! Files are opened lazily and kept in a small LRU, so the number of open
//! descriptors stays bounded however many logs are being written.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::{Result, StoreError};

/// How many log files stay open. A master runs a few dozen steps at once at
/// most; a step's log that falls out is reopened on its next append.
const OPEN_FILES: usize = 32;

type LogKey = (u64, u32);

pub(super) struct LogFiles {
    dir: PathBuf,
    open: Mutex<Lru>,
    /// Directories this process created whose entry in their parent has
    /// not been synced yet.
    new_dirs: Mutex<HashSet<PathBuf>>,
    /// Held by whatever replaces or removes log files (sealing a log,
    /// deleting a build's logs), so the two never meet in one directory.
    /// Appends and reads do not take it.
    maintenance: Mutex<()>,
}

/// What sealing a log did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Bytes of log, and of the file that now holds them.
    pub raw: u64,
    pub stored: u64,
}

/// The log files of one build, as [`LogFiles::usage`] counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub logs: u64,
    /// Bytes of log (uncompressed) and bytes on disk.
    pub raw: u64,
    pub stored: u64,
}

struct LogFile {
    file: File,
    /// The file's length, as this process has written it. Appends hold the
    /// lock, so two appends to the same log never interleave.
    len: Mutex<u64>,
    /// Whether the directory entries leading to the file have been synced
    /// since this process opened it (a new file is lost on power failure
    /// unless its directory is synced too).
    dirs_synced: Mutex<bool>,
    /// Whether this process created the file. A file it only opened may
    /// come from a process that died before syncing its directories, so
    /// all three are synced; for a new one, only those with new entries.
    created: bool,
}

struct Lru {
    tick: u64,
    files: HashMap<LogKey, (u64, Arc<LogFile>)>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(super::records::io_message(
        &format!("{what} {}", path.display()),
        &e,
    ))
}

/// A poisoned lock only means another thread panicked while holding it; the
/// data it guards (a length, a flag, a cache) is still meaningful.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogFiles {
    pub(super) fn new(dir: PathBuf) -> LogFiles {
        LogFiles {
            dir,
            open: Mutex::new(Lru {
                tick: 0,
                files: HashMap::new(),
            }),
            new_dirs: Mutex::new(HashSet::new()),
            maintenance: Mutex::new(()),
        }
    }

    fn build_dir(&self, build: u64) -> PathBuf {
        // A shard level keeps every directory to about a thousand entries.
        self.dir
            .join(format!("{}", build / 1000))
            .join(build.to_string())
    }

    fn path(&self, build: u64, step: u32) -> PathBuf {
        self.build_dir(build).join(format!("{step}.log"))
    }

    /// Where the log is once sealed (`sealed.rs`).
    fn sealed_path(&self, build: u64, step: u32) -> PathBuf {
        self.build_dir(build).join(format!("{step}.log.zst"))
    }

    /// The open file of a log; `None` when it does not exist and `create`
    /// is false.
    fn get(&self, build: u64, step: u32, create: bool) -> Result<Option<Arc<LogFile>>> {
        let key = (build, step);
        {
            let mut lru = lock(&self.open);
            lru.tick += 1;
            let tick = lru.tick;
            if let Some(entry) = lru.files.get_mut(&key) {
                entry.0 = tick;
                return Ok(Some(entry.1.clone()));
            }
        }
        // Opened outside the cache lock: opening (and creating directories)
        // touches the disk, and other logs must not wait for it.
        let path = self.path(build, step);
        let mut options = OpenOptions::new();
        options.read(true).append(true);
        let (file, created) = match options.open(&path) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A sealed log is finished: nothing appends to it, and a
                // new file beside it would hide it.
                if self.sealed_path(build, step).exists() {
                    return Err(StoreError::Conflict(format!(
                        "log {build}/{step} is finished and sealed; nothing can be appended"
                    )));
                }
                self.create_dirs(build)?;
                let f = options
                    .create(true)
                    .open(&path)
                    .map_err(|e| io("creating", &path, e))?;
                (f, true)
            }
            Err(e) => return Err(io("opening", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| io("reading the length of", &path, e))?
            .len();
        let opened = Arc::new(LogFile {
            file,
            len: Mutex::new(len),
            dirs_synced: Mutex::new(false),
            created,
        });
        let mut lru = lock(&self.open);
        lru.tick += 1;
        let tick = lru.tick;
        // Another thread may have opened the same log meanwhile: keep one
        // handle, so that appends to it are serialised by one lock.
        if let Some(entry) = lru.files.get_mut(&key) {
            entry.0 = tick;
            return Ok(Some(entry.1.clone()));
        }
        if lru.files.len() >= OPEN_FILES {
            let oldest = lru
                .files
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                // The file closes when the last user of its Arc is done.
                lru.files.remove(&oldest);
            }
        }
        lru.files.insert(key, (tick, opened.clone()));
        Ok(Some(opened))
    }

    pub(super) fn append(&self, build: u64, step: u32, data: &[u8]) -> Result<u64> {
        let Some(log) = self.get(build, step, true)? else {
            return Err(StoreError::Io(format!(
                "log {build}/{step} could not be created"
            )));
        };
        let mut len = lock(&log.len);
        if let Err(e) = (&log.file).write_all(data) {
            // Part of the data may have been written: the file length stays
            // the truth, so re-read it rather than guess.
            if let Ok(m) = log.file.metadata() {
                *len = m.len();
            }
            return Err(io("appending to", &self.path(build, step), e));
        }
        *len += data.len() as u64;
        Ok(*len)
    }

    pub(super) fn sync(&self, build: u64, step: u32) -> Result<()> {
        let Some(log) = self.get(build, step, false)? else {
            // Nothing was ever appended: nothing to make durable.
            return Ok(());
        };
        let path = self.path(build, step);
        // fdatasync persists the file's size along with its data.
        log.file.sync_data().map_err(|e| io("syncing", &path, e))?;
        let mut dirs_synced = lock(&log.dirs_synced);
        if !*dirs_synced {
            let build_dir = self.build_dir(build);
            let shard_dir = build_dir.parent().unwrap_or(&self.dir).to_path_buf();
            // The file's entry; then each directory's entry in its parent
            // when it is new (or, for a file this process did not create,
            // may be).
            sync_dir(&build_dir)?;
            for (dir, parent) in [
                (build_dir.as_path(), shard_dir.as_path()),
                (shard_dir.as_path(), self.dir.as_path()),
            ] {
                let new = lock(&self.new_dirs).contains(dir);
                if new || !log.created {
                    sync_dir(parent)?;
                    lock(&self.new_dirs).remove(dir);
                }
            }
            *dirs_synced = true;
        }
        Ok(())
    }

    /// Creates the directories of a build's logs, remembering which are
    /// new.
    fn create_dirs(&self, build: u64) -> Result<()> {
        let build_dir = self.build_dir(build);
        let shard_dir = build_dir.parent().unwrap_or(&self.dir).to_path_buf();
        for dir in [&shard_dir, &build_dir] {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                // The logs directory itself is gone (removed by hand?).
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?
                }
                Err(e) => return Err(io("creating", dir, e)),
            }
            // A build's directory is created once, by the process that runs
            // it (ids are never reused), so an existing one was synced by
            // whoever created its first log, or belongs to a build that
            // `interrupt_running` ended.
            lock(&self.new_dirs).insert(dir.clone());
        }
        Ok(())
    }

    pub(super) fn len(&self, build: u64, step: u32) -> Result<u64> {
        {
            let lru = lock(&self.open);
            if let Some((_, log)) = lru.files.get(&(build, step)) {
                return Ok(*lock(&log.len));
            }
        }
        // Not open: a stat is cheaper than opening, and does not push
        // a log being written out of the cache.
        let path = self.path(build, step);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let path = self.sealed_path(build, step);
                match File::open(&path) {
                    Ok(f) => super::sealed::len(&f, &path),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
                    Err(e) => Err(io("opening", &path, e)),
                }
            }
            Err(e) => Err(io("reading the length of", &path, e)),
        }
    }

    pub(super) fn read(&self, build: u64, step: u32, offset: u64, max: usize) -> Result<Vec<u8>> {
        let Some(log) = self.get(build, step, false)? else {
            // Sealing renames the sealed file into place before it
            // removes the plain one: a log is always in one of the two.
            let path = self.sealed_path(build, step);
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io("opening", &path, e)),
            };
            let idx = super::sealed::index(&file, &path)?;
            return super::sealed::read(&file, &path, &idx, offset, max);
        };
        let len = *lock(&log.len);
        if offset >= len || max == 0 {
            return Ok(Vec::new());
        }
        // Never allocate more than is there, whatever `max` says.
        let want = usize::try_from(len - offset).map_or(max, |rest| rest.min(max));
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match log.file.read_at(&mut buf[got..], offset + got as u64) {
                // The file is shorter than recorded (changed behind our
                // back): return what is there.
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading", &self.path(build, step), e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Compresses a finished log into its sealed file (`sealed.rs`) and
    /// removes the plain one; `None` when there is no plain log (none was
    /// written, it is sealed already, or its build was deleted).
    ///
    /// Crash safety: the sealed file is written under a temporary name,
    /// synced, renamed into place and its directory synced before the
    /// plain file goes, so a crash leaves the plain log, or both (reads
    /// take the plain one, and sealing again finishes the job), never
    /// neither. A reader holding the plain file open keeps reading it.
    pub(super) fn seal(&self, build: u64, step: u32) -> Result<Option<Sealed>> {
        let _m = lock(&self.maintenance);
        let path = self.path(build, step);
        let src = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("opening", &path, e)),
        };
        let raw = src
            .metadata()
            .map_err(|e| io("reading the length of", &path, e))?
            .len();
        let sealed = self.sealed_path(build, step);
        let tmp = self.build_dir(build).join(format!("{step}.log.zst.tmp"));
        let dst = File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        let written = super::sealed::write(&src, &path, raw, &dst, &tmp).and_then(|n| {
            dst.sync_data().map_err(|e| io("syncing", &tmp, e))?;
            std::fs::rename(&tmp, &sealed).map_err(|e| io("renaming", &tmp, e))?;
            sync_dir(&self.build_dir(build))?;
            Ok(n)
        });
        let stored = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Out of the cache first: a later read opens the sealed file.
        lock(&self.open).files.remove(&(build, step));
        std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
        Ok(Some(Sealed { raw, stored }))
    }

    /// The steps of a build that have a plain (unsealed) log, ascending.
    pub(super) fn plain_steps(&self, build: u64) -> Result<Vec<u32>> {
        let dir = self.build_dir(build);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io("reading", &dir, e))?;
            let name = entry.file_name();
            if let Some(step) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                out.push(step);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes every log of a build (its directory); returns what they
    /// held.
    pub(super) fn remove_build(&self, build: u64) -> Result<Usage> {
        let _m = lock(&self.maintenance);
        let usage = self.usage_locked(build)?;
        lock(&self.open).files.retain(|k, _| k.0 != build);
        let dir = self.build_dir(build);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &dir, e)),
        }
        lock(&self.new_dirs).remove(&dir);
        Ok(usage)
    }

    /// What a build's logs hold and take on disk: one directory listing,
    /// and a 16-byte read per sealed log (its length).
    pub(super) fn usage(&self, build: u64) -> Result<Usage> {
        let _m = lock(&self.maintenance);
        self.usage_locked(build)
    }

    fn usage_locked(&self, build: u64) -> Result<Usage> {
        let dir = self.build_dir(build);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Usage::default()),
            Err(e) => return Err(io("reading", &dir, e)),
        };
        let mut u = Usage::default();
        for entry in entries {
            let entry = entry.map_err(|e| io("reading", &dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let stored = || -> Result<u64> {
                Ok(entry
                    .metadata()
                    .map_err(|e| io("reading the length of", &path, e))?
                    .len())
            };
            if name.ends_with(".log") {
                let n = stored()?;
                u.logs += 1;
                u.raw += n;
                u.stored += n;
            } else if let Some(step) = name.strip_suffix(".log.zst") {
                u.stored += stored()?;
                // Both files exist only after a crash in the middle of
                // sealing: the log is counted once.
                if !dir.join(format!("{step}.log")).exists() {
                    let f = File::open(&path).map_err(|e| io("opening", &path, e))?;
                    u.logs += 1;
                    u.raw += super::sealed::len(&f, &path)?;
                }
            } else {
                // A temporary file of a sealing cut short.
                u.stored += stored()?;
            }
        }
        Ok(u)
    }

    #[cfg(test)]
    pub(super) fn open_count(&self) -> usize {
        lock(&self.open).files.len()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing directory", dir, e))
}
