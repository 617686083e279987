//! `Store::backup` for PostgreSQL: a snapshot schema in the same database.
//!
//! One `REPEATABLE READ` transaction (one snapshot; writers go on) creates
//! the schema `<schema>_bk_<milliseconds>` with the same tables and
//! indexes and copies every row into it, each step log cut at the length
//! its finished step's record gives it, as redb's backup does; the logs of
//! steps the snapshot does not have are left out. The directory `out`
//! gets [`BACKUP_FILE`] naming the schema: `store … schema="…"` on a master
//! opens the copy. It lives in the same database, so it guards against a
//! bad upgrade or a mistake, not against losing the server: that is
//! `pg_dump`'s and the server's backups' job (docs/operations.md).

use std::io::Write;
use std::path::Path;

use super::schema::{SEQUENCES, TABLES};
use super::{col, exec, pg_err, row, unsigned};
use crate::store::{BackupReport, Result, StoreError};

/// The file in a backup directory that names the snapshot schema.
pub const BACKUP_FILE: &str = "postgres-backup.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Named {
    schema: String,
}

/// The schema a backup directory names, if `dir` holds one.
pub fn backup_schema(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(BACKUP_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(format!("{}: {e}", path.display()))),
    };
    let n: Named = serde_json::from_slice(&text)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
    if !super::valid_schema(&n.schema) {
        return Err(StoreError::Corrupt(format!(
            "{} names `{}`, not a schema",
            path.display(),
            n.schema
        )));
    }
    Ok(Some(n.schema))
}

pub(super) async fn backup(
    c: &mut deadpool_postgres::Client,
    schema: &str,
    out: &Path,
) -> Result<BackupReport> {
    let now = crate::state::now_ms();
    let copy = format!("{schema}_bk_{now}");
    if !super::valid_schema(&copy) {
        return Err(StoreError::Io(format!(
            "the backup schema name `{copy}` is too long: use a shorter schema"
        )));
    }
    let t = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg_err)?;
    let mut report = BackupReport::default();
    let mut ddl = format!("CREATE SCHEMA {copy};");
    for table in TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE {copy}.{table} (LIKE {schema}.{table} INCLUDING ALL);"
        ));
    }
    // Each sequence where the original's stands now: at or past every id
    // the snapshot holds (a sequence is not part of a snapshot), so the
    // copy never gives an id twice.
    for seq in SEQUENCES {
        ddl.push_str(&format!(
            "CREATE SEQUENCE {copy}.{seq}; \
             SELECT setval('{copy}.{seq}', last_value, is_called) FROM {schema}.{seq};"
        ));
    }
    t.batch_execute(&ddl).await.map_err(pg_err)?;
    for table in TABLES {
        // Masters and their leases are the live processes', not data: a
        // restored store starts with none.
        if matches!(*table, "logs" | "log_chunks" | "masters" | "leases") {
            continue;
        }
        report.records += exec(
            &t,
            &format!("INSERT INTO {copy}.{table} SELECT * FROM {schema}.{table}"),
            &[],
        )
        .await?;
    }
    // Logs of the snapshot's steps: a finished step's cut at its record's
    // length (what was appended after is not part of it), a running
    // step's as written; a sealed log whole.
    report.records += exec(
        &t,
        &format!(
            "INSERT INTO {copy}.logs (build, step, len, stored, sealed) \
             SELECT l.build, l.step, c.len, CASE WHEN l.sealed THEN l.stored ELSE c.len END, l.sealed \
             FROM {schema}.logs l JOIN {schema}.steps s ON s.build = l.build AND s.idx = l.step \
             CROSS JOIN LATERAL (SELECT CASE \
                 WHEN NOT l.sealed AND s.rec->>'finished_at' IS NOT NULL \
                 THEN LEAST(l.len, (s.rec->>'log_len')::bigint) ELSE l.len END AS len) c"
        ),
        &[],
    )
    .await?;
    report.records += exec(
        &t,
        &format!(
            "INSERT INTO {copy}.log_chunks (build, step, off, raw_len, zstd, data) \
             SELECT k.build, k.step, k.off, \
                 CASE WHEN k.zstd THEN k.raw_len ELSE LEAST(k.raw_len, n.len - k.off)::integer END, \
                 k.zstd, \
                 CASE WHEN k.zstd THEN k.data \
                 ELSE substring(k.data FROM 1 FOR LEAST(k.raw_len, n.len - k.off)::integer) END \
             FROM {schema}.log_chunks k JOIN {copy}.logs n ON n.build = k.build AND n.step = k.step \
             WHERE k.off < n.len"
        ),
        &[],
    )
    .await?;
    let r = row(
        &t,
        &format!(
            "SELECT (SELECT count(*) FROM {copy}.builds), \
             (SELECT count(*) FROM {copy}.logs), \
             (SELECT COALESCE(sum(CASE WHEN sealed THEN stored ELSE len END), 0)::bigint FROM {copy}.logs), \
             (SELECT count(*) FROM {copy}.logs l JOIN {copy}.steps s \
                 ON s.build = l.build AND s.idx = l.step WHERE s.rec->>'finished_at' IS NULL), \
             (SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{copy}' AND c.relkind = 'r')"
        ),
        &[],
    )
    .await?
    .ok_or_else(|| StoreError::Io("the backup's counts are missing".to_string()))?;
    report.builds = unsigned(col(&r, 0)?, "builds")?;
    report.logs = unsigned(col(&r, 1)?, "logs")?;
    report.log_bytes = unsigned(col(&r, 2)?, "log bytes")?;
    report.logs_running = unsigned(col(&r, 3)?, "logs")?;
    report.db_bytes = unsigned(col(&r, 4)?, "bytes")?;
    t.commit().await.map_err(pg_err)?;
    write_name(out, &copy)?;
    Ok(report)
}

/// Writes and syncs the file that names the copy.
fn write_name(out: &Path, schema: &str) -> Result<()> {
    let path = out.join(BACKUP_FILE);
    let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", path.display()));
    let text = serde_json::to_vec(&Named {
        schema: schema.to_string(),
    })
    .map_err(|e| StoreError::Io(e.to_string()))?;
    let mut f = std::fs::File::create(&path).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .map_err(io)
}
