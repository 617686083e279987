//! [`Store::backup`](crate::store::Store::backup) for redb: a copy of the
//! database from one read transaction, and of the step logs as long as
//! that snapshot says they are.
//!
//! Why a copy table by table and not of the file: the file changes under
//! a running master (and redb locks it), while a read transaction sees one
//! committed state however long it takes to read (MVCC) and holds up no
//! writer. Why the logs are cut at the snapshot's lengths: a log grows
//! while its step runs, and a copy longer than its step record says would
//! no longer match the records it is restored with.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use redb::{
    Database, Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, Value, WriteTransaction,
};

use super::records::{db_err, decode};
use super::tables::{
    AUDIT, BUILDS, BUILDSETS, BUILDS_BY_BUILDER, BUILD_NUMBERS, CHANGES, COUNTERS, META, PENDING,
    REQUESTS, REQUESTS_BY_BUILDER, REQUESTS_BY_BUILDSET, RUNNING, STATE, STEPS, WORKERS,
};
use super::{RedbStore, DB_FILE};
use crate::store::{BackupReport, Result, StepRecord, StoreError};

/// redb cache of the copy being written.
const COPY_CACHE: usize = 32 << 20;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// A step log's file under a state directory: the layout of `logs.rs`
/// (docs/store.md, "Files"); a test checks that the two agree.
pub(super) fn log_path(state_dir: &Path, build: u64, step: u32) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{}", build / 1000))
        .join(build.to_string())
        .join(format!("{step}.log"))
}

/// A step log to copy: how much of it belongs to the snapshot.
struct LogToCopy {
    build: u64,
    step: u32,
    /// `None` for a step still running at the snapshot: whatever the file
    /// holds when it is copied.
    len: Option<u64>,
}

pub(super) fn backup(store: &RedbStore, out: &Path) -> Result<BackupReport> {
    // Step records and build states waiting in memory (pending.rs) are
    // not in any snapshot yet: an empty write stores them first, so the
    // snapshot has every step that had started when the backup began.
    store.write(|_, _| Ok(()))?;
    let snapshot = store.read()?;
    let mut report = BackupReport::default();
    let db_path = out.join(DB_FILE);
    // A small cache: the copy is written once and never read here, and
    // its memory is the running master's (redb's default is 1 GiB, and
    // it spills dirty pages to the file past its share of the cache).
    let copy = Database::builder()
        .set_cache_size(COPY_CACHE)
        .create(&db_path)
        .map_err(db_err)?;
    let txn = copy.begin_write().map_err(db_err)?;
    report.records = copy_tables(&snapshot, &txn)?;
    let logs = logs_of(&snapshot, &mut report)?;
    // Durable (redb's default) once committed.
    txn.commit().map_err(db_err)?;
    drop(copy);
    report.db_bytes = std::fs::metadata(&db_path)
        .map_err(|e| io("reading the length of", &db_path, e))?
        .len();
    // The snapshot stays open until the logs are copied: it is what the
    // lengths are measured against (and it keeps nothing but freed pages
    // from being reused meanwhile).
    for log in logs {
        copy_log(store.dir(), out, &log, &mut report)?;
    }
    drop(snapshot);
    sync_tree(&out.join("logs"))?;
    sync_dir(out)?;
    Ok(report)
}

/// Copies every table of the schema; refuses a database with a table this
/// code does not know (a newer bbc's), since its copy would be missing it.
fn copy_tables(from: &ReadTransaction, to: &WriteTransaction) -> Result<u64> {
    let mut n = 0;
    let mut names = Vec::new();
    macro_rules! copy {
        ($($def:expr),* $(,)?) => {$(
            n += copy_table(from, to, $def)?;
            names.push($def.name().to_string());
        )*};
    }
    copy!(
        META,
        COUNTERS,
        CHANGES,
        BUILDSETS,
        REQUESTS,
        REQUESTS_BY_BUILDSET,
        REQUESTS_BY_BUILDER,
        PENDING,
        BUILDS,
        BUILDS_BY_BUILDER,
        BUILD_NUMBERS,
        RUNNING,
        STEPS,
        WORKERS,
        STATE,
        AUDIT,
    );
    for table in from.list_tables().map_err(db_err)? {
        if !names.iter().any(|n| n == table.name()) {
            return Err(StoreError::Corrupt(format!(
                "the store has a table `{}` this bbc does not know; it cannot back it up",
                table.name()
            )));
        }
    }
    if from
        .list_multimap_tables()
        .map_err(db_err)?
        .next()
        .is_some()
    {
        return Err(StoreError::Corrupt(
            "the store has a multimap table this bbc does not know; it cannot back it up".into(),
        ));
    }
    Ok(n)
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64> {
    let src = from.open_table(def).map_err(db_err)?;
    let mut dst = to.open_table(def).map_err(db_err)?;
    let mut n = 0;
    for entry in src.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        dst.insert(k.value(), v.value()).map_err(db_err)?;
        n += 1;
    }
    Ok(n)
}

/// Every step of the snapshot with the length of log it says it has;
/// counts the builds on the way.
fn logs_of(snapshot: &ReadTransaction, report: &mut BackupReport) -> Result<Vec<LogToCopy>> {
    report.builds = snapshot
        .open_table(BUILDS)
        .map_err(db_err)?
        .len()
        .map_err(db_err)?;
    let steps = snapshot.open_table(STEPS).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in steps.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let (build, step) = k.value();
        let rec: StepRecord = decode(&format!("step {build}/{step}"), v.value())?;
        // A step's final record is put with the log's length after its
        // last append (master/build/record.rs); one still running has only
        // its start record, whose length is already behind the file.
        let len = rec.finished_at.map(|_| rec.log_len);
        out.push(LogToCopy { build, step, len });
    }
    Ok(out)
}

fn copy_log(
    state_dir: &Path,
    out: &Path,
    log: &LogToCopy,
    report: &mut BackupReport,
) -> Result<()> {
    let mut src = log_path(state_dir, log.build, log.step);
    let mut dst = log_path(out, log.build, log.step);
    let mut sealed = false;
    let file = match File::open(&src) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Sealed (compressed at rest, `sealed.rs`): a finished log,
            // copied whole as it is. Sealing renames the sealed file into
            // place before removing the plain one, so one of them is there.
            src.set_extension("log.zst");
            dst.set_extension("log.zst");
            sealed = true;
            match File::open(&src) {
                Ok(f) => f,
                // A step that printed nothing has no file, nor has one
                // whose logs retention deleted.
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io("opening", &src, e)),
            }
        }
        Err(e) => return Err(io("opening", &src, e)),
    };
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    }
    let mut to = File::create(&dst).map_err(|e| io("creating", &dst, e))?;
    // Never more than the snapshot's length; less when the file is
    // shorter (a tail lost in a crash before the step's end was synced).
    // A running step's log: its length now, so that a copy never chases a
    // writer that keeps appending.
    let limit = match log.len {
        Some(len) if !sealed => len,
        _ => file
            .metadata()
            .map_err(|e| io("reading the length of", &src, e))?
            .len(),
    };
    let copied = std::io::copy(&mut file.take(limit), &mut to)
        .map_err(|e| io(&format!("copying {} to", src.display()), &dst, e))?;
    to.sync_all().map_err(|e| io("syncing", &dst, e))?;
    report.logs += 1;
    report.log_bytes += copied;
    if log.len.is_none() {
        report.logs_running += 1;
    }
    Ok(())
}

/// Syncs every directory under `dir` (and `dir`), so that the new files'
/// entries survive a power loss along with their contents.
fn sync_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("reading", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io("reading", dir, e))?;
        let ty = entry
            .file_type()
            .map_err(|e| io("reading", &entry.path(), e))?;
        if ty.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn log_paths_agree_with_the_log_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        s.append_log(1234, 3, b"x").unwrap();
        assert!(log_path(dir.path(), 1234, 3).is_file());
    }

    #[test]
    fn a_table_this_code_does_not_know_is_refused_not_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        let extra: TableDefinition<u64, u64> = TableDefinition::new("from_a_newer_bbc");
        let db = s.db().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(extra).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
        drop(db);
        let out = tempfile::tempdir().unwrap();
        match s.backup(out.path()) {
            Err(StoreError::Corrupt(e)) => assert!(e.contains("from_a_newer_bbc"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
