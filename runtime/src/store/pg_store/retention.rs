//! Retention in PostgreSQL: `prune` finds what the policy lets go and
//! deletes it in one short transaction (records, steps and log rows
//! together, so there is no order between files and records to keep);
//! `builder_usage` sums the `logs` rows of a builder's builds.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{GenericClient, Transaction};

use super::{col, exec, json, key, pg_err, record, row, rows, unsigned};
use crate::store::{Build, BuilderUsage, Millis, Pruned, Result, Retention};

pub(super) async fn prune(
    c: &mut deadpool_postgres::Client,
    policy: Retention,
    now: Millis,
    after: u64,
    scan: usize,
    limit: usize,
) -> Result<Pruned> {
    let horizon = match policy.prune_horizon(after, scan, limit) {
        Ok(h) => h,
        Err(done) => return Ok(done),
    };
    let mut out = Pruned::default();
    let t = c.transaction().await.map_err(pg_err)?;
    let rs = rows(
        &t,
        "SELECT id, rec::text FROM builds WHERE id > $1 ORDER BY id LIMIT $2",
        &[
            &key(after),
            &(i64::try_from(scan).unwrap_or(i64::MAX - 1) + 1),
        ],
    )
    .await?;
    // Per builder, its newest `keep_last` finished builds.
    let mut kept: HashMap<String, HashSet<u64>> = HashMap::new();
    let (mut whole, mut logs_only) = (Vec::new(), Vec::new());
    for r in &rs {
        let b: Build = record(r, 0, 1)?;
        if out.scanned >= scan as u64 {
            out.next = Some(b.id - 1);
            break;
        }
        out.scanned += 1;
        if b.build.started_at >= horizon {
            break;
        }
        let Some(finished) = b.finished_at else {
            continue;
        };
        let all = policy.builds_before.is_some_and(|t| finished < t);
        let logs =
            !all && b.logs_deleted_at.is_none() && policy.logs_before.is_some_and(|t| finished < t);
        if !all && !logs {
            continue;
        }
        if policy.keep_last > 0 {
            let builder = &b.build.builder;
            if !kept.contains_key(builder) {
                let newest = rows(
                    &t,
                    "SELECT id FROM builds WHERE builder = $1 AND finished_at IS NOT NULL \
                     ORDER BY id DESC LIMIT $2",
                    &[builder, &key(policy.keep_last)],
                )
                .await?
                .iter()
                .map(|r| col::<i64>(r, 0).and_then(|v| unsigned(v, "build id")))
                .collect::<Result<HashSet<u64>>>()?;
                kept.insert(builder.clone(), newest);
            }
            if kept.get(builder).is_some_and(|k| k.contains(&b.id)) {
                continue;
            }
        }
        // A request of the build may still run: the build is kept for it.
        let reqs: Vec<i64> = b.build.requests.iter().map(|&r| key(r)).collect();
        let live = row(
            &t,
            "SELECT 1 FROM requests WHERE id = ANY($1) AND state IN ('pending', 'claimed') LIMIT 1",
            &[&reqs],
        )
        .await?;
        if live.is_some() {
            continue;
        }
        if all {
            whole.push(b);
        } else {
            logs_only.push(b);
        }
        if whole.len() + logs_only.len() >= limit {
            out.next = Some(r_id(r)?);
            break;
        }
    }
    for b in &whole {
        out.log_bytes += delete_logs(&t, b.id).await?;
        exec(&t, "DELETE FROM steps WHERE build = $1", &[&key(b.id)]).await?;
        exec(&t, "DELETE FROM builds WHERE id = $1", &[&key(b.id)]).await?;
        out.builds += 1;
    }
    for b in &mut logs_only {
        out.log_bytes += delete_logs(&t, b.id).await?;
        b.logs_deleted_at = Some(now);
        let rec = json("build", &*b)?;
        exec(
            &t,
            "UPDATE builds SET rec = $2::text::json WHERE id = $1",
            &[&key(b.id), &rec],
        )
        .await?;
        out.logs += 1;
    }
    t.commit().await.map_err(pg_err)?;
    Ok(out)
}

fn r_id(r: &tokio_postgres::Row) -> Result<u64> {
    unsigned(col(r, 0)?, "build id")
}

/// Deletes a build's logs and returns the bytes they took.
async fn delete_logs(t: &Transaction<'_>, build: u64) -> Result<u64> {
    let r = row(
        t,
        "SELECT COALESCE(sum(stored), 0)::bigint FROM logs WHERE build = $1",
        &[&key(build)],
    )
    .await?;
    let bytes = match r {
        Some(r) => unsigned(col(&r, 0)?, "log bytes")?,
        None => 0,
    };
    exec(t, "DELETE FROM log_chunks WHERE build = $1", &[&key(build)]).await?;
    exec(t, "DELETE FROM logs WHERE build = $1", &[&key(build)]).await?;
    Ok(bytes)
}

pub(super) async fn builder_usage(c: &impl GenericClient, builder: String) -> Result<BuilderUsage> {
    let r = row(
        c,
        "SELECT (SELECT count(*) FROM builds WHERE builder = $1), \
         count(l.build), COALESCE(sum(l.len), 0)::bigint, COALESCE(sum(l.stored), 0)::bigint \
         FROM builds b JOIN logs l ON l.build = b.id WHERE b.builder = $1",
        &[&builder],
    )
    .await?;
    let Some(r) = r else {
        return Ok(BuilderUsage::default());
    };
    Ok(BuilderUsage {
        builds: unsigned(col(&r, 0)?, "builds")?,
        logs: unsigned(col(&r, 1)?, "logs")?,
        log_bytes: unsigned(col(&r, 2)?, "log bytes")?,
        log_bytes_stored: unsigned(col(&r, 3)?, "log bytes")?,
    })
}
