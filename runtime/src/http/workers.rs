//! Workers: configured and connected, with what they run.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api_error::ApiResult as R;
use crate::state::{now_ms, Shared};

type S = State<Arc<Shared>>;

pub(super) async fn workers(State(s): S) -> R<Json<Value>> {
    let g = s.graph();
    let conns: Vec<String> = s
        .workers
        .lock()
        .map(|w| w.keys().cloned().collect())
        .unwrap_or_default();
    let running: Vec<(String, String, Option<u64>)> = s
        .queue
        .lock()
        .map(|q| {
            q.running()
                .map(|r| (r.worker.clone(), r.builder.clone(), r.build_id))
                .collect()
        })
        .unwrap_or_default();
    let missing = s.missing.lock().map(|m| m.clone()).unwrap_or_default();
    let records = s.db(|st| st.workers()).await?;
    let mut v: Vec<Value> = g
        .workers
        .iter()
        .map(|w| {
            let busy: Vec<Value> = running
                .iter()
                .filter(|r| r.0 == w.name)
                .map(|r| json!({"builder": r.1, "build": r.2}))
                .collect();
            let rec = records.iter().find(|r| r.name == w.name);
            json!({
                "name": w.name,
                "connected": conns.contains(&w.name),
                "state": if !conns.contains(&w.name) { "offline" } else if busy.is_empty() { "idle" } else { "busy" },
                "max_builds": w.max_builds,
                "running": busy,
                "in_downtime": crate::state::queue::in_downtime(&w.downtime, now_ms()),
                "last_connected": rec.map(|r| r.last_connected),
                "info": rec.map(|r| r.info.clone()),
                // Away longer than its missing-timeout (master/missing.rs),
                // and since when it has been away.
                "missing": missing.contains_key(&w.name),
                "missing_since": missing.get(&w.name),
                // Started by the master when needed (docs/latent-workers.md).
                "latent": w.latent.as_ref().map(|l| latent_json(&s, &w.name, l)),
            })
        })
        .collect();
    // Removed from the config but still connected: finishing their builds
    // before they are disconnected.
    for name in conns.iter().filter(|n| g.worker(n).is_none()) {
        let busy: Vec<Value> = running
            .iter()
            .filter(|r| &r.0 == name)
            .map(|r| json!({"builder": r.1, "build": r.2}))
            .collect();
        let rec = records.iter().find(|r| &r.name == name);
        v.push(json!({
            "name": name,
            "connected": true,
            "state": "removed",
            "missing": false,
            "missing_since": null,
            "running": busy,
            "last_connected": rec.map(|r| r.last_connected),
            "info": rec.map(|r| r.info.clone()),
        }));
    }
    Ok(Json(json!({ "workers": v })))
}

/// A latent worker's kind and where it is in its life; the reason its
/// last start failed, while it waits to start again.
fn latent_json(s: &Shared, name: &str, l: &bbc_graph::Latent) -> Value {
    use crate::state::latent::Phase;
    let kind = match l.kind {
        bbc_graph::LatentKind::Docker { .. } => "docker",
        bbc_graph::LatentKind::Command { .. } => "command",
    };
    let (phase, failure) = match s.latent.phase(name) {
        Phase::Stopped => ("stopped", None),
        Phase::Starting => ("starting", None),
        Phase::Up => ("up", None),
        Phase::Stopping => ("stopping", None),
        Phase::Failed(why) => ("failed", Some(why)),
    };
    json!({ "kind": kind, "phase": phase, "last_failure": failure })
}
