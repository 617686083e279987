//! Step logs in PostgreSQL: a `logs` row per log (its length, the bytes
//! it takes, whether it is sealed) and its bytes in `log_chunks` rows.
//!
//! In the database, not in files beside one master: every master sharing
//! the database reads every log (docs/store.md, "Logs in PostgreSQL", has
//! the measurements). An append is one statement (so one transaction)
//! on a relaxed connection (`synchronous_commit = off`) that adds to the `logs` row's length (its
//! row lock orders appends to one log) and stores the bytes at the old
//! length, in rows of at most [`CHUNK`]; `sync_log` is a durable commit,
//! which flushes the WAL past every append before it. Sealing replaces a
//! finished log's rows by zstd frames of about [`FRAME`] of log each
//! (`zstd` true), in one transaction per log; reads decompress only the
//! frames their range touches. A log of at most [`SMALL`] bytes is sealed
//! as it is (its plain rows stay, `stored` is its length).

use deadpool_postgres::GenericClient;

use super::{col, exec, key, pg_err, row, rows, unsigned};
use crate::store::{Result, Sealed, StoreError};

/// The most log bytes in one plain row: appends are cut into rows of this
/// size, so a read never loads much more than it returns.
const CHUNK: usize = 256 * 1024;
/// The log a sealed frame holds (at least; its last chunk may take it up
/// to `FRAME + CHUNK`).
const FRAME: usize = 1 << 20;
/// The most raw bytes any row holds: how far before an offset a read
/// looks for the row that covers it.
const MAX_ROW: i64 = (FRAME + CHUNK) as i64;
/// zstd's level for sealed frames, as in redb's sealed files.
const LEVEL: i32 = 3;
/// A log this short is sealed as it is stored, not compressed: a one-line
/// step's log would gain nothing, and sealing it costs one statement
/// instead of a read, a delete and an insert.
const SMALL: i64 = 4096;

/// A step index as the `integer` column.
pub(super) fn step_key(step: u32) -> Result<i32> {
    i32::try_from(step)
        .map_err(|_| StoreError::Conflict(format!("step index {step} is out of range")))
}

pub(super) async fn len(c: &impl GenericClient, build: u64, step: u32) -> Result<u64> {
    let Ok(idx) = i32::try_from(step) else {
        return Ok(0);
    };
    match row(
        c,
        "SELECT len FROM logs WHERE build = $1 AND step = $2",
        &[&key(build), &idx],
    )
    .await?
    {
        Some(r) => unsigned(col(&r, 0)?, "log length"),
        None => Ok(0),
    }
}

pub(super) async fn append(
    c: &impl GenericClient,
    build: u64,
    step: u32,
    data: Vec<u8>,
) -> Result<u64> {
    let idx = step_key(step)?;
    if data.is_empty() {
        return len(c, build, step).await;
    }
    let n = i64::try_from(data.len())
        .map_err(|_| StoreError::Conflict("a log append is too large".to_string()))?;
    // The rows of at most CHUNK, by their offset in this append.
    let pieces: Vec<&[u8]> = data.chunks(CHUNK).collect();
    let at: Vec<i64> = (0..pieces.len()).map(|i| (i * CHUNK) as i64).collect();
    // `piece.len()` is at most CHUNK, which fits an integer.
    let lens: Vec<i32> = pieces.iter().map(|p| p.len() as i32).collect();
    // One statement, so one transaction without a `BEGIN` (on a relaxed
    // connection): the `logs` row's length grows (its row lock orders
    // appends to one log; a sealed log gives no row, and nothing is
    // written) and the bytes go in at the old length. A data-modifying
    // `WITH` runs whether or not the outer query reads it.
    let Some(r) = row(
        c,
        "WITH l AS (INSERT INTO logs (build, step, len, stored) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (build, step) DO UPDATE \
             SET len = logs.len + EXCLUDED.len, stored = logs.stored + EXCLUDED.len \
             WHERE NOT logs.sealed RETURNING len), \
         c AS (INSERT INTO log_chunks (build, step, off, raw_len, zstd, data) \
             SELECT $1, $2, l.len - $3 + p.at, p.n, false, p.data \
             FROM l, unnest($4::bigint[], $5::integer[], $6::bytea[]) AS p(at, n, data)) \
         SELECT len FROM l",
        &[&key(build), &idx, &n, &at, &lens, &pieces],
    )
    .await?
    else {
        return Err(StoreError::Conflict(format!(
            "the log of build {build} step {step} is sealed"
        )));
    };
    unsigned(col(&r, 0)?, "log length")
}

/// Makes a log durable and returns its length (0 for a log never
/// appended to).
pub(super) async fn sync(c: &impl GenericClient, build: u64, step: u32) -> Result<u64> {
    let Ok(idx) = i32::try_from(step) else {
        return Ok(0);
    };
    // A durable commit that writes: PostgreSQL flushes the WAL up to it,
    // and with it every earlier relaxed commit of the log's appends. A
    // log with no row has nothing to make durable.
    match row(
        c,
        "UPDATE logs SET len = len WHERE build = $1 AND step = $2 RETURNING len",
        &[&key(build), &idx],
    )
    .await?
    {
        Some(r) => unsigned(col(&r, 0)?, "log length"),
        None => Ok(0),
    }
}

/// A row's raw bytes: as stored, or its frame decompressed and checked.
fn raw(zstd: bool, data: Vec<u8>, raw_len: i32, at: i64) -> Result<Vec<u8>> {
    let want = usize::try_from(raw_len)
        .map_err(|_| StoreError::Corrupt(format!("a log row at {at} has length {raw_len}")))?;
    let bytes = if zstd {
        zstd::bulk::decompress(&data, want)
            .map_err(|e| StoreError::Corrupt(format!("a sealed log frame at {at}: {e}")))?
    } else {
        data
    };
    if bytes.len() != want {
        return Err(StoreError::Corrupt(format!(
            "a log row at {at} holds {} bytes, not {want}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub(super) async fn read(
    c: &impl GenericClient,
    build: u64,
    step: u32,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>> {
    let (Ok(idx), Ok(start)) = (i32::try_from(step), i64::try_from(offset)) else {
        return Ok(Vec::new());
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let end = start.saturating_add(i64::try_from(max).unwrap_or(i64::MAX));
    // The rows that overlap [start, end): none starts more than MAX_ROW
    // before the row that covers `start`, so the index range is bounded.
    let rs = rows(
        c,
        "SELECT off, raw_len, zstd, data FROM log_chunks \
         WHERE build = $1 AND step = $2 AND off >= $3 AND off < $4 ORDER BY off",
        &[&key(build), &idx, &start.saturating_sub(MAX_ROW), &end],
    )
    .await?;
    let mut out = Vec::new();
    let mut pos = start;
    for r in rs {
        let off: i64 = col(&r, 0)?;
        let raw_len: i32 = col(&r, 1)?;
        if off + i64::from(raw_len) <= pos {
            continue;
        }
        if off > pos {
            return Err(StoreError::Corrupt(format!(
                "the log of build {build} step {step} has no bytes at {pos}"
            )));
        }
        let bytes = raw(col(&r, 2)?, col(&r, 3)?, raw_len, off)?;
        let from = (pos - off) as usize;
        let to = (end.min(off + i64::from(raw_len)) - off) as usize;
        out.extend_from_slice(&bytes[from..to]);
        pos = off + to as i64;
    }
    Ok(out)
}

/// Seals every plain log of a finished build. A log of at most [`SMALL`]
/// bytes is sealed as it is stored (zstd would save next to nothing, and
/// its frame header may cost more than it saves), in the statement that
/// lists the others; each larger one is compressed in a transaction of its
/// own ([`seal`]).
pub(super) async fn seal_build(c: &mut deadpool_postgres::Client, build: u64) -> Result<Sealed> {
    let Some(r) = row(
        &*c,
        "SELECT finished_at IS NOT NULL FROM builds WHERE id = $1",
        &[&key(build)],
    )
    .await?
    else {
        // Deleted by retention already: nothing is left to seal.
        return Ok(Sealed::default());
    };
    if !col::<bool>(&r, 0)? {
        return Err(StoreError::Conflict(format!(
            "build {build} is still running; its logs cannot be sealed"
        )));
    }
    // The outer query sees the logs as they were before the update: every
    // plain log the update did not seal (larger, or grown meanwhile) is
    // listed for compression, which locks and looks at it again.
    let logs = rows(
        &*c,
        "WITH s AS (UPDATE logs SET sealed = true \
             WHERE build = $1 AND NOT sealed AND len <= $2 RETURNING step, len, stored) \
         SELECT step, len, stored, true FROM s \
         UNION ALL \
         SELECT step, 0, 0, false FROM logs \
             WHERE build = $1 AND NOT sealed AND step NOT IN (SELECT step FROM s) \
         ORDER BY 1",
        &[&key(build), &SMALL],
    )
    .await?;
    let mut out = Sealed::default();
    for l in logs {
        let idx: i32 = col(&l, 0)?;
        let done = if col::<bool>(&l, 3)? {
            Some((
                unsigned(col(&l, 1)?, "log length")?,
                unsigned(col(&l, 2)?, "log bytes")?,
            ))
        } else {
            seal(c, build, idx).await?
        };
        if let Some((raw, stored)) = done {
            out.logs += 1;
            out.raw += raw;
            out.stored += stored;
        }
    }
    Ok(out)
}

/// Replaces one log's plain rows by zstd frames, holding a frame and a
/// few chunks in memory at most. `None` when it was sealed meanwhile.
async fn seal(
    c: &mut deadpool_postgres::Client,
    build: u64,
    idx: i32,
) -> Result<Option<(u64, u64)>> {
    let t = c.transaction().await.map_err(pg_err)?;
    // The row lock keeps appends out until the frames are in.
    let Some(l) = row(
        &t,
        "SELECT len, sealed FROM logs WHERE build = $1 AND step = $2 FOR UPDATE",
        &[&key(build), &idx],
    )
    .await?
    else {
        return Ok(None);
    };
    let len: i64 = col(&l, 0)?;
    if col::<bool>(&l, 1)? {
        return Ok(None);
    }
    let mut frame: Vec<u8> = Vec::with_capacity(FRAME + CHUNK);
    let mut frame_at = 0i64;
    let mut next = 0i64;
    let mut stored = 0u64;
    loop {
        let rs = rows(
            &t,
            "SELECT off, raw_len, zstd, data FROM log_chunks \
             WHERE build = $1 AND step = $2 AND off >= $3 ORDER BY off LIMIT 4",
            &[&key(build), &idx, &next],
        )
        .await?;
        let done = rs.is_empty();
        for r in rs {
            let off: i64 = col(&r, 0)?;
            let raw_len: i32 = col(&r, 1)?;
            if off != next {
                return Err(StoreError::Corrupt(format!(
                    "the log of build {build} step {idx} has no bytes at {next}"
                )));
            }
            frame.extend(raw(col(&r, 2)?, col(&r, 3)?, raw_len, off)?);
            next = off + i64::from(raw_len);
            if frame.len() >= FRAME {
                stored += put_frame(&t, build, idx, frame_at, &frame).await?;
                frame.clear();
                frame_at = next;
            }
        }
        if done {
            break;
        }
    }
    if !frame.is_empty() {
        stored += put_frame(&t, build, idx, frame_at, &frame).await?;
    }
    if next != len {
        return Err(StoreError::Corrupt(format!(
            "the log of build {build} step {idx} holds {next} bytes, its length says {len}"
        )));
    }
    exec(
        &t,
        "UPDATE logs SET sealed = true, stored = $3 WHERE build = $1 AND step = $2",
        &[&key(build), &idx, &(stored as i64)],
    )
    .await?;
    t.commit().await.map_err(pg_err)?;
    Ok(Some((unsigned(len, "log length")?, stored)))
}

/// Replaces the plain rows of `[at, at + raw.len())` by one frame and
/// returns its compressed size.
async fn put_frame(
    t: &deadpool_postgres::Transaction<'_>,
    build: u64,
    idx: i32,
    at: i64,
    raw: &[u8],
) -> Result<u64> {
    let z = zstd::bulk::compress(raw, LEVEL)
        .map_err(|e| StoreError::Io(format!("compressing a log: {e}")))?;
    let end = at + raw.len() as i64;
    exec(
        t,
        "DELETE FROM log_chunks WHERE build = $1 AND step = $2 AND off >= $3 AND off < $4",
        &[&key(build), &idx, &at, &end],
    )
    .await?;
    exec(
        t,
        "INSERT INTO log_chunks (build, step, off, raw_len, zstd, data) VALUES ($1, $2, $3, $4, true, $5)",
        &[&key(build), &idx, &at, &(raw.len() as i32), &z],
    )
    .await?;
    Ok(z.len() as u64)
}
