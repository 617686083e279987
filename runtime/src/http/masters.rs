//! `GET /api/v1/masters`: the masters sharing this master's store, and
//! the config each runs (docs/api.md; docs/store.md, "Several masters").

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api_error::ApiResult as R;
use crate::state::peers::SCHEDULERS;
use crate::state::{now_ms, Shared};
use crate::store::lease::expired;

type S = State<Arc<Shared>>;

pub(super) async fn masters(State(s): S) -> R<Json<Value>> {
    let running = s.config_info().hash.clone();
    let Some(me) = s.peers.me.clone() else {
        // Alone on its store: this master is the only one.
        return Ok(Json(json!({
            "shared": false,
            "masters": [{ "this": true, "live": true, "config": running, "schedulers": true }],
            "shared_config": null,
        })));
    };
    let (rows, newest) = s.db(|st| Ok((st.masters()?, st.newest_config()?))).await?;
    let now = now_ms();
    let masters: Vec<Value> = rows
        .iter()
        .map(|m| {
            let this = m.id == me.id;
            json!({
                "id": m.id,
                "name": m.name,
                "this": this,
                // A row whose lease expired is a dead master's, until a
                // live one takes its builds over and deletes it.
                "live": !expired(m.expires_at, now),
                "started_at": m.started_at,
                "last_seen": m.last_seen,
                "expires_at": m.expires_at,
                "config": if this { Some(running.clone()) } else { m.config.clone() },
                "config_failed": m.config_failed,
                "config_error": m.config_error,
                // Known for this master only (the lease's holder is
                // another master's business).
                "schedulers": if this { Some(s.peers.holds(SCHEDULERS)) } else { None },
            })
        })
        .collect();
    let shared = newest.map(
        |n| json!({ "seq": n.seq, "hash": n.hash, "applied_at": n.applied_at, "master": n.master }),
    );
    Ok(Json(json!({
        "shared": true,
        "masters": masters,
        "shared_config": shared,
    })))
}
