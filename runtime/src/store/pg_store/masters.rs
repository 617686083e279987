//! Several masters on one schema: their rows and leases (`masters`,
//! `leases`), the take-over of a dead master's builds, and the connection
//! that LISTENs for what the other masters did (docs/store.md, "Several
//! masters"). The decisions are `store::lease`'s pure functions; this
//! module reads the rows they need and writes what they say, in one
//! transaction each.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use super::{builds, col, exec, pg_err, row, rows, unsigned};
use crate::store::lease::{self, MasterIdentity, MasterRecord};
use crate::store::{Millis, Notice, Result};
use bbc_graph::BuildResult;

/// The channel every bbc master LISTENs on; the payload is the schema and
/// what changed (`SCHEMA requests`), so that masters of other schemas on
/// the same database ignore it.
pub(super) const CHANNEL: &str = "bbc";

/// Sends a notice to every master of this schema when the transaction
/// commits (PostgreSQL delivers NOTIFY at commit, and folds duplicates of
/// one transaction into one).
pub(super) async fn notify(c: &impl deadpool_postgres::GenericClient, what: &str) -> Result<()> {
    exec(
        c,
        "SELECT pg_notify('bbc', current_schema() || ' ' || $1)",
        &[&what],
    )
    .await
    .map(|_| ())
}

/// Sends `cancel ID` to every master when build `id` is running (the one
/// running it cancels it); `false` when it is not running.
pub(super) async fn request_cancel(
    c: &impl deadpool_postgres::GenericClient,
    id: u64,
) -> Result<bool> {
    let running = row(
        c,
        "SELECT 1 FROM builds WHERE id = $1 AND finished_at IS NULL",
        &[&super::key(id)],
    )
    .await?
    .is_some();
    if running {
        notify(c, &format!("cancel {id}")).await?;
    }
    Ok(running)
}

fn master_row(r: &tokio_postgres::Row) -> Result<MasterRecord> {
    Ok(MasterRecord {
        id: col(r, 0)?,
        name: col(r, 1)?,
        started_at: col(r, 2)?,
        last_seen: col(r, 3)?,
        expires_at: col(r, 4)?,
        config: col(r, 5)?,
        config_failed: col(r, 6)?,
        config_error: col(r, 7)?,
    })
}

const MASTER_COLS: &str =
    "id, name, started_at, last_seen, expires_at, config, config_failed, config_error";

/// Shared configs kept: the newest is the one that matters; a few before
/// it are there for a master that is slow to read (and to look at).
const CONFIGS_KEPT: i64 = 10;

/// `Store::share_config`: the next sequence number is one above the
/// highest; the table is locked for that moment so two masters sharing at
/// once get two numbers, in commit order.
pub(super) async fn share_config(
    c: &mut deadpool_postgres::Client,
    me: &MasterIdentity,
    hash: &str,
    packed: &[u8],
    raw_len: i64,
    now: Millis,
) -> Result<u64> {
    let t = c.transaction().await.map_err(pg_err)?;
    exec(&t, "LOCK TABLE configs IN EXCLUSIVE MODE", &[]).await?;
    let seq: i64 = match row(&t, "SELECT max(seq) FROM configs", &[]).await? {
        Some(r) => col::<Option<i64>>(&r, 0)?.unwrap_or(0) + 1,
        None => 1,
    };
    exec(
        &t,
        "INSERT INTO configs (seq, hash, applied_at, master, raw_len, graph) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&seq, &hash, &now, &me.id, &raw_len, &packed],
    )
    .await?;
    exec(
        &t,
        "DELETE FROM configs WHERE seq <= $1",
        &[&(seq - CONFIGS_KEPT)],
    )
    .await?;
    // The master it was applied through runs it already.
    exec(
        &t,
        "UPDATE masters SET config = $2, config_failed = NULL, config_error = NULL WHERE id = $1",
        &[&me.id, &hash],
    )
    .await?;
    notify(&t, "config").await?;
    t.commit().await.map_err(pg_err)?;
    unsigned(seq, "config sequence number")
}

pub(super) async fn newest_config(
    c: &impl deadpool_postgres::GenericClient,
) -> Result<Option<crate::store::SharedConfig>> {
    let Some(r) = row(
        c,
        "SELECT seq, hash, applied_at, master FROM configs ORDER BY seq DESC LIMIT 1",
        &[],
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(Some(crate::store::SharedConfig {
        seq: unsigned(col(&r, 0)?, "config sequence number")?,
        hash: col(&r, 1)?,
        applied_at: col(&r, 2)?,
        master: col(&r, 3)?,
    }))
}

/// The compressed graph of shared config `seq` and its length unpacked.
pub(super) async fn config_graph(
    c: &impl deadpool_postgres::GenericClient,
    seq: u64,
) -> Result<Option<(Vec<u8>, usize)>> {
    let Some(r) = row(
        c,
        "SELECT graph, raw_len FROM configs WHERE seq = $1",
        &[&super::key(seq)],
    )
    .await?
    else {
        return Ok(None);
    };
    let len = unsigned(col(&r, 1)?, "config length")?;
    Ok(Some((col(&r, 0)?, len as usize)))
}

/// `Store::report_config`.
pub(super) async fn report_config(
    c: &impl deadpool_postgres::GenericClient,
    me: &MasterIdentity,
    running: &str,
    failed: Option<(String, String)>,
) -> Result<()> {
    let (fh, fe) = failed.unzip();
    exec(
        c,
        "UPDATE masters SET config = $2, config_failed = $3, config_error = $4 WHERE id = $1",
        &[&me.id, &running, &fh, &fe],
    )
    .await?;
    notify(c, "masters").await
}

pub(super) async fn all(c: &impl deadpool_postgres::GenericClient) -> Result<Vec<MasterRecord>> {
    rows(
        c,
        &format!("SELECT {MASTER_COLS} FROM masters ORDER BY id"),
        &[],
    )
    .await?
    .iter()
    .map(master_row)
    .collect()
}

pub(super) async fn join(
    c: &deadpool_postgres::Client,
    me: &MasterIdentity,
    now: Millis,
    lease_ms: Millis,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO masters (id, name, started_at, last_seen, expires_at) VALUES ($1, $2, $3, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET last_seen = EXCLUDED.last_seen, expires_at = EXCLUDED.expires_at",
        &[&me.id, &me.name, &now, &(now + lease_ms)],
    )
    .await
    .map(|_| ())
}

/// Renews `me`'s row; `false` when it was gone (and is back now).
pub(super) async fn heartbeat(
    c: &deadpool_postgres::Client,
    me: &MasterIdentity,
    now: Millis,
    lease_ms: Millis,
) -> Result<bool> {
    let n = exec(
        c,
        "UPDATE masters SET last_seen = $2, expires_at = $3 WHERE id = $1",
        &[&me.id, &now, &(now + lease_ms)],
    )
    .await?;
    if n == 1 {
        return Ok(true);
    }
    join(c, me, now, lease_ms).await?;
    Ok(false)
}

/// Ends the running builds `pick` chooses among `(build, master)` pairs
/// as interrupted, in `t`. Returns their ids.
async fn interrupt(
    t: &deadpool_postgres::Transaction<'_>,
    running: &[(u64, Option<String>)],
    pick: impl Fn(Option<&str>) -> bool,
    now: Millis,
) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for (id, master) in running {
        if pick(master.as_deref()) {
            builds::finish(t, *id, BuildResult::Retry, Some("interrupted"), now).await?;
            ids.push(*id);
        }
    }
    if !ids.is_empty() {
        notify(t, "requests").await?;
        notify(t, "builds").await?;
    }
    Ok(ids)
}

async fn running(t: &deadpool_postgres::Transaction<'_>) -> Result<Vec<(u64, Option<String>)>> {
    rows(
        t,
        "SELECT id, master FROM builds WHERE finished_at IS NULL ORDER BY id FOR UPDATE",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((unsigned(col(r, 0)?, "build id")?, col(r, 1)?)))
    .collect()
}

/// `Store::interrupt_running`: the running builds left without a live
/// master ([`lease::orphaned`]); every one when `me` is `None`. The rows
/// of `me`'s previous incarnations go with their builds.
pub(super) async fn interrupt_orphans(
    c: &mut deadpool_postgres::Client,
    me: Option<MasterIdentity>,
    now: Millis,
) -> Result<Vec<u64>> {
    let t = c.transaction().await.map_err(pg_err)?;
    let run = running(&t).await?;
    let masters = all(&t).await?;
    let ids = interrupt(
        &t,
        &run,
        |m| lease::orphaned(m, &masters, me.as_ref(), now),
        now,
    )
    .await?;
    if let Some(me) = &me {
        exec(
            &t,
            "DELETE FROM masters WHERE name = $1 AND id <> $2",
            &[&me.name, &me.id],
        )
        .await?;
    }
    t.commit().await.map_err(pg_err)?;
    Ok(ids)
}

/// `Store::take_over`: every master whose lease expired at `now` (other
/// than `me`). Their rows are locked with SKIP LOCKED, so a second master
/// doing the same at once skips them and finds them gone afterwards.
pub(super) async fn take_over(
    c: &mut deadpool_postgres::Client,
    me: &MasterIdentity,
    now: Millis,
) -> Result<Vec<u64>> {
    let t = c.transaction().await.map_err(pg_err)?;
    let dead: Vec<MasterRecord> = rows(
        &t,
        &format!(
            "SELECT {MASTER_COLS} FROM masters WHERE id <> $1 AND expires_at <= $2 \
             ORDER BY id FOR UPDATE SKIP LOCKED"
        ),
        &[&me.id, &now],
    )
    .await?
    .iter()
    .map(master_row)
    .collect::<Result<Vec<_>>>()?
    .into_iter()
    .filter(|m| lease::expired(m.expires_at, now))
    .collect();
    if dead.is_empty() {
        return Ok(Vec::new());
    }
    let run = running(&t).await?;
    let ids = interrupt(
        &t,
        &run,
        |m| m.is_some_and(|m| dead.iter().any(|d| d.id == m)),
        now,
    )
    .await?;
    for d in &dead {
        exec(&t, "DELETE FROM leases WHERE holder = $1", &[&d.id]).await?;
        exec(&t, "DELETE FROM masters WHERE id = $1", &[&d.id]).await?;
        tracing::warn!(
            master = %d.id,
            name = %d.name,
            builds = ?ids,
            "a master's lease expired: its running builds are interrupted and will run again"
        );
    }
    t.commit().await.map_err(pg_err)?;
    Ok(ids)
}

/// `Store::take_lease`, decided by [`lease::can_take`] on the locked row.
pub(super) async fn take_lease(
    c: &mut deadpool_postgres::Client,
    me: &MasterIdentity,
    name: &str,
    now: Millis,
    lease_ms: Millis,
) -> Result<bool> {
    let t = c.transaction().await.map_err(pg_err)?;
    let until = now + lease_ms;
    let held = row(
        &t,
        "SELECT holder, expires_at FROM leases WHERE name = $1 FOR UPDATE",
        &[&name],
    )
    .await?;
    let taken = match held {
        None => {
            // Two masters inserting at once: one row wins, the other
            // inserts nothing and does not hold it.
            exec(
                &t,
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &me.id, &until],
            )
            .await?
                == 1
        }
        Some(r) => {
            let holder: String = col(&r, 0)?;
            let expires: Millis = col(&r, 1)?;
            if lease::can_take(Some((&holder, expires)), &me.id, now) {
                exec(
                    &t,
                    "UPDATE leases SET holder = $2, expires_at = $3 WHERE name = $1",
                    &[&name, &me.id, &until],
                )
                .await?;
                true
            } else {
                false
            }
        }
    };
    t.commit().await.map_err(pg_err)?;
    Ok(taken)
}

pub(super) async fn release_leases(
    c: &deadpool_postgres::Client,
    me: &MasterIdentity,
) -> Result<()> {
    exec(c, "DELETE FROM leases WHERE holder = $1", &[&me.id])
        .await
        .map(|_| ())
}

/// The notices with an argument: `cancel ID`, and `buildset ID MASTER`
/// (none when `me` stored it: it knows it already).
fn parse_notice(s: &str, me: &str) -> Option<Notice> {
    if let Some(id) = s.strip_prefix("cancel ") {
        return id.parse().ok().map(Notice::Cancel);
    }
    let (id, by) = s.strip_prefix("buildset ")?.split_once(' ')?;
    if by == me {
        return None;
    }
    id.parse().ok().map(Notice::BuildSet)
}

/// The connection that LISTENs: one of its own (not the pool's, which
/// hands connections to any caller), on the store's runtime, reconnecting
/// after a second when the server goes away. Each notice of `schema` goes
/// to `tx`; every (re)connection sends [`Notice::Reconnected`], since
/// notices may have been missed while it was down.
pub(super) async fn listen(
    pg: tokio_postgres::Config,
    schema: String,
    me: String,
    tx: broadcast::Sender<Notice>,
) {
    let prefix = format!("{schema} ");
    let mut logged = false;
    loop {
        match pg.connect(tokio_postgres::NoTls).await {
            Ok((client, mut conn)) => {
                let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if ntx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!("the database connection that listens for other masters failed: {e}");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if logged {
                            tracing::info!("listening for other masters again");
                        }
                        logged = false;
                        let _ = tx.send(Notice::Reconnected);
                        while let Some(p) = nrx.recv().await {
                            let notice = match p.strip_prefix(&prefix) {
                                Some("requests") => Notice::Requests,
                                Some("builds") => Notice::Builds,
                                Some("changes") => Notice::Changes,
                                Some("config") => Notice::Config,
                                Some("masters") => Notice::Masters,
                                Some(s) => match parse_notice(s, &me) {
                                    Some(n) => n,
                                    None => continue,
                                },
                                None => continue,
                            };
                            let _ = tx.send(notice);
                        }
                    }
                    Err(e) => {
                        if !logged {
                            tracing::warn!("cannot LISTEN for other masters: {}", pg_err(e));
                            logged = true;
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(
                        "cannot connect to LISTEN for other masters (trying again every second): {}",
                        pg_err(e)
                    );
                    logged = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
