//! Changes, build sets, requests, builds and steps in PostgreSQL.
//!
//! Requests and builds take their ids from sequences (`nextval`, no lock
//! held: two masters storing at once never wait for each other, and never
//! get the same id; an id taken by a call that then failed is skipped).
//! Changes and build sets take theirs from their rows of `counters`
//! (`change`, `buildset`), in the transaction that stores them (`UPDATE …
//! RETURNING`): the lock, held to commit, makes them visible in id order,
//! which the schedulers' reading of "the changes after the last one seen"
//! and the dependent schedulers' of the build sets need. Build numbers come from a per-builder row in
//! `build_numbers` the same way, which retention never lowers. A claim
//! locks its requests (`SELECT … FOR UPDATE`, in id order) before it
//! checks they are pending: a second master's claim of the same request
//! waits for the first to commit, then sees it claimed and fails with
//! `Conflict`. Completing a build set locks the set's row first, so two
//! builds of one set ending at once on two masters cannot both miss the
//! other's result.

use bbc_graph::BuildResult;
use deadpool_postgres::{GenericClient, Transaction};

use super::{col, decode, exec, json, key, pg_err, record, row, rows, storable, unsigned};
use crate::store::{
    Build, BuildFilter, BuildRequest, BuildSet, Change, Millis, NewBuild, NewBuildSet, NewChange,
    Page, Properties, RequestFilter, RequestState, Result, StepRecord, StoreError,
};

/// A page as SQL bounds: ids below `before`, at most `limit` rows.
pub(super) fn page(p: &Page) -> (i64, i64) {
    (
        p.before.map_or(i64::MAX, key),
        i64::try_from(p.limit).unwrap_or(i64::MAX),
    )
}

/// Takes the next change id from its counter row, which stays locked
/// until the transaction ends.
async fn next_change_id(t: &Transaction<'_>) -> Result<u64> {
    let r = row(
        t,
        "UPDATE counters SET value = value + 1 WHERE name = 'change' RETURNING value",
        &[],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("the `change` counter is missing".to_string()))?;
    unsigned(col(&r, 0)?, "counter")
}

/// Takes the next audit entry id from its sequence.
pub(super) async fn next_audit_id(c: &impl GenericClient) -> Result<u64> {
    let r = row(c, "SELECT nextval('audit_ids')", &[])
        .await?
        .ok_or_else(|| StoreError::Io("no audit id was returned".to_string()))?;
    unsigned(col(&r, 0)?, "audit id")
}

fn state_name(s: RequestState) -> &'static str {
    match s {
        RequestState::Pending => "pending",
        RequestState::Claimed => "claimed",
        RequestState::Complete => "complete",
        RequestState::Cancelled => "cancelled",
    }
}

async fn put_request(t: &Transaction<'_>, r: &BuildRequest) -> Result<()> {
    let rec = json("build request", r)?;
    exec(
        t,
        "INSERT INTO requests (id, buildset, builder, state, rec) VALUES ($1, $2, $3, $4, $5::text::json) \
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, rec = EXCLUDED.rec",
        &[
            &key(r.id),
            &key(r.buildset),
            &r.builder,
            &state_name(r.state),
            &rec,
        ],
    )
    .await
    .map(|_| ())
}

async fn put_build(t: &Transaction<'_>, b: &Build) -> Result<()> {
    let rec = json("build", b)?;
    exec(
        t,
        "UPDATE builds SET finished_at = $2, rec = $3::text::json WHERE id = $1",
        &[&key(b.id), &b.finished_at, &rec],
    )
    .await
    .map(|_| ())
}

pub(super) async fn add_change(
    c: &mut deadpool_postgres::Client,
    change: NewChange,
    now: Millis,
) -> Result<Change> {
    let mut change = Change {
        id: 0,
        received_at: now,
        change,
    };
    storable(&mut change.change.properties);
    let t = c.transaction().await.map_err(pg_err)?;
    change.id = next_change_id(&t).await?;
    let rec = json("change", &change)?;
    exec(
        &t,
        "INSERT INTO changes (id, rec) VALUES ($1, $2::text::json)",
        &[&key(change.id), &rec],
    )
    .await?;
    // The master running the schedulers reads it back (docs/store.md).
    super::masters::notify(&t, "changes").await?;
    t.commit().await.map_err(pg_err)?;
    Ok(change)
}

pub(super) async fn add_buildset(
    c: &mut deadpool_postgres::Client,
    set: NewBuildSet,
    builders: Vec<(String, i64)>,
    master: Option<String>,
) -> Result<(BuildSet, Vec<BuildRequest>)> {
    let mut set = BuildSet {
        id: 0,
        set,
        result: None,
        completed_at: None,
    };
    storable(&mut set.set.properties);
    let t = c.transaction().await.map_err(pg_err)?;
    // The set's id and its requests', in one statement. The set's comes
    // from its counter row, locked until this transaction commits, so that
    // sets become visible in id order (`Store::buildsets_after`); the
    // requests' from a sequence.
    let n = key(builders.len() as u64);
    let ids = row(
        &t,
        "WITH s AS (UPDATE counters SET value = value + 1 WHERE name = 'buildset' \
         RETURNING value) \
         SELECT s.value, \
         ARRAY(SELECT nextval('request_ids') FROM generate_series(1, $1::bigint)) FROM s",
        &[&n],
    )
    .await?
    .ok_or_else(|| StoreError::Io("no build set id was returned".to_string()))?;
    set.id = unsigned(col(&ids, 0)?, "build set id")?;
    let mut request_ids = col::<Vec<i64>>(&ids, 1)?
        .into_iter()
        .map(|id| unsigned(id, "request id"))
        .collect::<Result<Vec<u64>>>()?;
    // In the builders' order, ascending.
    request_ids.sort_unstable();
    if request_ids.len() != builders.len() {
        return Err(StoreError::Io(format!(
            "{} request ids were returned for {} builders",
            request_ids.len(),
            builders.len()
        )));
    }
    if builders.is_empty() {
        // Nothing to run: the worst result of no requests is the best
        // one, and nobody must wait for the set.
        set.result = Some(BuildResult::Success);
        set.completed_at = Some(set.set.submitted_at);
    }
    let rec = json("build set", &set)?;
    exec(
        &t,
        "INSERT INTO buildsets (id, rec) VALUES ($1, $2::text::json)",
        &[&key(set.id), &rec],
    )
    .await?;
    let mut requests = Vec::with_capacity(builders.len());
    if !builders.is_empty() {
        for ((builder, priority), id) in builders.into_iter().zip(request_ids) {
            let req = BuildRequest {
                id,
                buildset: set.id,
                builder,
                priority,
                request_priority: set.set.priority,
                submitted_at: set.set.submitted_at,
                state: RequestState::Pending,
                build: None,
                result: None,
                completed_at: None,
                collapsed_into: None,
            };
            put_request(&t, &req).await?;
            requests.push(req);
        }
        // Every master's queue learns of them (docs/store.md).
        super::masters::notify(&t, "requests").await?;
    }
    // The schedulers' master follows it for its dependent schedulers,
    // whichever master stored it; the master that did knows it already.
    if let Some(m) = master {
        super::masters::notify(&t, &format!("buildset {} {m}", set.id)).await?;
    }
    t.commit().await.map_err(pg_err)?;
    Ok((set, requests))
}

pub(super) async fn requests(
    c: &impl GenericClient,
    f: RequestFilter,
    p: Page,
) -> Result<Vec<BuildRequest>> {
    let (before, limit) = page(&p);
    let state = f.state.map(state_name);
    let set = f.buildset.map(key);
    // NULL parameters drop their condition; the planner picks the index.
    let rs = rows(
        c,
        "SELECT id, rec::text FROM requests WHERE id < $1 \
         AND ($2::text IS NULL OR builder = $2) \
         AND ($3::bigint IS NULL OR buildset = $3) \
         AND ($4::text IS NULL OR state = $4) \
         ORDER BY id DESC LIMIT $5",
        &[&before, &f.builder, &set, &state, &limit],
    )
    .await?;
    rs.iter().map(|r| record(r, 0, 1)).collect()
}

pub(super) async fn builds(c: &impl GenericClient, f: BuildFilter, p: Page) -> Result<Vec<Build>> {
    let (before, limit) = page(&p);
    let result = match f.result {
        Some(r) => Some(serde_json::to_value(r).map_err(|e| StoreError::Io(e.to_string()))?),
        None => None,
    };
    let result = result.and_then(|v| v.as_str().map(str::to_string));
    let rs = rows(
        c,
        "SELECT id, rec::text FROM builds WHERE id < $1 \
         AND ($2::text IS NULL OR builder = $2) \
         AND ($3::text IS NULL OR rec->>'result' = $3) \
         AND (NOT $4 OR finished_at IS NULL) \
         ORDER BY id DESC LIMIT $5",
        &[&before, &f.builder, &result, &f.running, &limit],
    )
    .await?;
    rs.iter().map(|r| record(r, 0, 1)).collect()
}

/// Locks a build set and gives it its result once no request of it is
/// pending or claimed.
async fn maybe_complete_buildset(t: &Transaction<'_>, id: u64, now: Millis) -> Result<()> {
    let r = row(
        t,
        "SELECT id, rec::text FROM buildsets WHERE id = $1 FOR UPDATE",
        &[&key(id)],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("build set {id} is referenced but missing")))?;
    let mut set: BuildSet = record(&r, 0, 1)?;
    if set.result.is_some() {
        return Ok(());
    }
    let mut worst = BuildResult::Success;
    for r in rows(
        t,
        "SELECT id, rec::text FROM requests WHERE buildset = $1",
        &[&key(id)],
    )
    .await?
    {
        let req: BuildRequest = record(&r, 0, 1)?;
        let Some(result) = crate::store::request_result(&req) else {
            return Ok(());
        };
        worst = worst.max(result);
    }
    set.result = Some(worst);
    set.completed_at = Some(now);
    let rec = json("build set", &set)?;
    exec(
        t,
        "UPDATE buildsets SET rec = $2::text::json WHERE id = $1",
        &[&key(id), &rec],
    )
    .await
    .map(|_| ())
}

pub(super) async fn cancel_request(
    c: &mut deadpool_postgres::Client,
    id: u64,
    now: Millis,
) -> Result<bool> {
    let t = c.transaction().await.map_err(pg_err)?;
    let Some(r) = row(
        &t,
        "SELECT id, rec::text FROM requests WHERE id = $1 FOR UPDATE",
        &[&key(id)],
    )
    .await?
    else {
        return Ok(false);
    };
    let mut req: BuildRequest = record(&r, 0, 1)?;
    if req.state != RequestState::Pending {
        return Ok(false);
    }
    req.state = RequestState::Cancelled;
    req.result = Some(BuildResult::Cancelled);
    req.completed_at = Some(now);
    put_request(&t, &req).await?;
    maybe_complete_buildset(&t, req.buildset, now).await?;
    super::masters::notify(&t, "requests").await?;
    t.commit().await.map_err(pg_err)?;
    Ok(true)
}

pub(super) async fn start_build(
    c: &mut deadpool_postgres::Client,
    new: NewBuild,
    master: Option<String>,
) -> Result<Build> {
    let mut build = Build {
        id: 0,
        number: 0,
        build: new,
        finished_at: None,
        result: None,
        state_string: "starting".to_string(),
        logs_deleted_at: None,
        master,
    };
    storable(&mut build.build.properties);
    // Any error below drops the transaction, which rolls it back: either
    // every request is claimed and the build exists, or nothing changed.
    let t = c.transaction().await.map_err(pg_err)?;
    let mut wanted: Vec<i64> = build.build.requests.iter().map(|&r| key(r)).collect();
    wanted.sort_unstable();
    let locked = rows(
        &t,
        "SELECT id, rec::text FROM requests WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&wanted],
    )
    .await?;
    let mut reqs = Vec::with_capacity(locked.len());
    for r in &locked {
        reqs.push(record::<BuildRequest>(r, 0, 1)?);
    }
    for &rid in &build.build.requests {
        let Some(req) = reqs.iter().find(|r| r.id == rid) else {
            return Err(StoreError::Conflict(format!(
                "request {rid} does not exist"
            )));
        };
        if req.state != RequestState::Pending {
            return Err(StoreError::Conflict(format!(
                "request {rid} is {:?}, not pending",
                req.state
            )));
        }
    }
    // The build's id and its number, in one statement.
    let n = row(
        &t,
        "WITH n AS (INSERT INTO build_numbers (builder, last) VALUES ($1, 1) \
             ON CONFLICT (builder) DO UPDATE SET last = build_numbers.last + 1 RETURNING last) \
         SELECT nextval('build_ids'), last FROM n",
        &[&build.build.builder],
    )
    .await?
    .ok_or_else(|| StoreError::Io("no build number was returned".to_string()))?;
    build.id = unsigned(col(&n, 0)?, "build id")?;
    build.number = unsigned(col(&n, 1)?, "build number")?;
    for mut req in reqs {
        crate::store::claim_request(&mut req, &build);
        put_request(&t, &req).await?;
    }
    let rec = json("build", &build)?;
    exec(
        &t,
        "INSERT INTO builds (id, builder, number, finished_at, master, rec) \
         VALUES ($1, $2, $3, NULL, $4, $5::text::json)",
        &[
            &key(build.id),
            &build.build.builder,
            &key(build.number),
            &build.master,
            &rec,
        ],
    )
    .await?;
    // The other masters drop the claimed requests from their queues.
    super::masters::notify(&t, "requests").await?;
    t.commit().await.map_err(pg_err)?;
    Ok(build)
}

/// Ends a running build: its requests complete with `result`, or are
/// pending again when it is `Retry`.
pub(super) async fn finish(
    t: &Transaction<'_>,
    id: u64,
    result: BuildResult,
    state_string: Option<&str>,
    now: Millis,
) -> Result<()> {
    let state = EndState {
        state_string,
        properties: None,
    };
    finish_with(t, id, result, state, now).await
}

/// What a build's end replaces in its record besides its result, if given.
pub(super) struct EndState<'a> {
    pub state_string: Option<&'a str>,
    pub properties: Option<Properties>,
}

/// [`finish`], with the build's last state line and properties written in
/// the same rewrite of its record.
pub(super) async fn finish_with(
    t: &Transaction<'_>,
    id: u64,
    result: BuildResult,
    state: EndState<'_>,
    now: Millis,
) -> Result<()> {
    let Some(r) = row(
        t,
        "SELECT id, rec::text FROM builds WHERE id = $1 FOR UPDATE",
        &[&key(id)],
    )
    .await?
    else {
        return Err(StoreError::Conflict(format!("build {id} does not exist")));
    };
    let mut build: Build = record(&r, 0, 1)?;
    if build.finished_at.is_some() {
        return Err(StoreError::Conflict(format!(
            "build {id} has already finished"
        )));
    }
    build.finished_at = Some(now);
    build.result = Some(result);
    if let Some(s) = state.state_string {
        build.state_string = s.to_string();
    }
    if let Some(p) = state.properties {
        build.build.properties = p;
    }
    put_build(t, &build).await?;
    let mut wanted: Vec<i64> = build.build.requests.iter().map(|&r| key(r)).collect();
    wanted.sort_unstable();
    let mut sets = Vec::new();
    for r in rows(
        t,
        "SELECT id, rec::text FROM requests WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&wanted],
    )
    .await?
    {
        let mut req: BuildRequest = record(&r, 0, 1)?;
        if !crate::store::end_request(&mut req, id, result, now) {
            continue;
        }
        if req.state == RequestState::Complete && !sets.contains(&req.buildset) {
            sets.push(req.buildset);
        }
        put_request(t, &req).await?;
    }
    sets.sort_unstable();
    for set in sets {
        maybe_complete_buildset(t, set, now).await?;
    }
    // Waiters on build ends on every master look again; a retry's
    // requests are pending again, for every master's queue.
    super::masters::notify(t, "builds").await?;
    if result == BuildResult::Retry {
        super::masters::notify(t, "requests").await?;
    }
    Ok(())
}

/// Replaces a build's state line and properties in one statement (on a
/// relaxed connection): the record's other fields are kept as stored,
/// field by field (`json_each` keeps each value's text as it is).
pub(super) async fn set_build_state(
    c: &impl GenericClient,
    id: u64,
    state_string: String,
    properties: Properties,
) -> Result<()> {
    // Both as JSON texts: a NUL in them is an escape there, never a byte
    // the server refuses in a text parameter.
    let state = json("build state", &state_string)?;
    let props = json("build properties", &properties)?;
    let n = exec(
        c,
        "UPDATE builds SET rec = (SELECT json_object_agg(e.key, CASE e.key \
             WHEN 'state_string' THEN $2::text::json \
             WHEN 'properties' THEN $3::text::json ELSE e.value END) \
           FROM json_each(builds.rec) AS e) \
         WHERE id = $1",
        &[&key(id), &state, &props],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("build {id} does not exist")));
    }
    Ok(())
}

pub(super) async fn put_step(c: &impl GenericClient, build: u64, step: StepRecord) -> Result<()> {
    let rec = json("step", &step)?;
    let idx = super::logs::step_key(step.index)?;
    // Only for a build that exists (a late record of a build retention
    // deleted is not stored). One statement on a relaxed connection.
    let n = exec(
        c,
        "INSERT INTO steps (build, idx, rec) SELECT $1, $2, $3::text::json \
         WHERE EXISTS (SELECT 1 FROM builds WHERE id = $1) \
         ON CONFLICT (build, idx) DO UPDATE SET rec = EXCLUDED.rec",
        &[&key(build), &idx, &rec],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "build {build} does not exist"
        )));
    }
    Ok(())
}

pub(super) async fn steps(c: &impl GenericClient, build: u64) -> Result<Vec<StepRecord>> {
    // The log's own length, whatever the record said when it was put.
    let rs = rows(
        c,
        "SELECT s.idx, s.rec::text, COALESCE(l.len, 0) FROM steps s \
         LEFT JOIN logs l ON l.build = s.build AND l.step = s.idx \
         WHERE s.build = $1 ORDER BY s.idx",
        &[&key(build)],
    )
    .await?;
    let mut out = Vec::with_capacity(rs.len());
    for r in &rs {
        let index: i32 = col(r, 0)?;
        let mut step: StepRecord = decode(&format!("step {build}/{index}"), r, 1)?;
        if i64::from(step.index) != i64::from(index) {
            return Err(StoreError::Corrupt(format!(
                "step {build}/{index} is stored with index {}",
                step.index
            )));
        }
        step.log_len = unsigned(col(r, 2)?, "log length")?;
        out.push(step);
    }
    Ok(out)
}
