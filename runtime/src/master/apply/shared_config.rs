//! `bbc apply` through one master reaches every master sharing its store
//! (PostgreSQL; docs/store.md, "Several masters"; docs/operations.md).
//!
//! - The master asked applies the config as a master alone does, then
//!   shares it ([`share`]): the graph goes into the store
//!   ([`Store::share_config`], with a sequence number) and every master
//!   hears of it. The answer waits up to [`ACK_WAIT`] for each live master
//!   to say it runs the config, or why it could not, and lists them
//!   ([`ApplyReport::masters`]); one that does not answer in time is listed
//!   as `no-answer`, and the apply still succeeds.
//! - Every master follows the shared configs ([`spawn_follower`]): on each
//!   notice, and every [`RESYNC`] in case one was missed, it looks at the
//!   newest; one newer than it handled and other than the one it runs is
//!   applied through the same [`Shared::apply_locked`] path, with this
//!   master's own secrets. A refusal (a secret missing here) is logged and
//!   written in its row, and it keeps its config.
//! - A master starting with a config file other than the newest shared
//!   config applies the shared one (logged): the masters run one config,
//!   and it changes through `bbc apply`, not by restarting one of them
//!   with another file (which would otherwise undo, or race, the others).
//! - Secrets are names in the graph, never values; but a config may hold a
//!   plain-text credential (`password="…"`), and the store never holds
//!   one: such a config is applied on the master asked only, and the
//!   answer says so ([`ApplyReport::not_shared`]).
//!
//! [`Store::share_config`]: crate::store::Store::share_config
//! [`RESYNC`]: crate::master::peers::RESYNC

use std::sync::Arc;
use std::time::Duration;

use bbc_graph::Graph;
use tokio::sync::MutexGuard;

use super::{has_plain_credentials, ApplyReport, MasterApplied};
use crate::master::peers::RESYNC;
use crate::state::{now_ms, Shared};
use crate::store::lease::{config_acks, must_apply, ConfigAck};
use crate::store::Notice;

/// How long an apply waits for the other masters to say they run the
/// config: a peer applies what the master asked did (validation, secrets,
/// each service reconciling), so this is the same order of time.
pub const ACK_WAIT: Duration = Duration::from_secs(15);
/// How often the waiting apply reads the masters' rows without a notice.
const ACK_RECHECK: Duration = Duration::from_millis(500);

/// Shares the config `report` says was just applied here (module docs),
/// then gives the apply lock back and waits for the others' answers.
pub(super) async fn share(
    shared: &Arc<Shared>,
    report: &mut ApplyReport,
    lock: MutexGuard<'_, ()>,
) {
    let g = shared.graph();
    if has_plain_credentials(&g) {
        report.not_shared = Some(
            "not given to the other masters sharing the store: the config holds a plain-text \
             credential, and bbc never stores one; refer to secrets instead \
             (`password=(secret)\"NAME\"`), or apply this config to each master"
                .to_string(),
        );
        tracing::warn!("{}", report.not_shared.as_deref().unwrap_or_default());
        return;
    }
    // Subscribed before sharing: no answer is missed.
    let notices = shared.store.notices();
    let json = match tokio::task::spawn_blocking(move || g.to_json()).await {
        Ok(j) => j,
        Err(e) => {
            report.not_shared = Some(format!("not given to the other masters: {e}"));
            return;
        }
    };
    let (hash, now) = (report.hash.clone(), now_ms());
    match shared.db(move |s| s.share_config(&hash, &json, now)).await {
        Ok(seq) => shared.peers.saw_config(seq),
        Err(e) => {
            report.not_shared = Some(format!(
                "not given to the other masters: the store refused it: {e}; apply it again"
            ));
            tracing::error!("{}", report.not_shared.as_deref().unwrap_or_default());
            return;
        }
    }
    // Others may apply while this one waits for their answers.
    drop(lock);
    report.masters = answers(shared, &report.hash, notices).await;
    for m in &report.masters {
        match m.state.as_str() {
            "failed" => tracing::error!(
                master = %m.id,
                "another master could not apply config {}: {}",
                report.hash,
                m.error.as_deref().unwrap_or_default()
            ),
            "no-answer" => tracing::warn!(
                master = %m.id,
                "another master did not say in {} s whether it applied config {}",
                ACK_WAIT.as_secs(),
                report.hash
            ),
            _ => {}
        }
    }
}

/// Each live master's answer to config `hash`, this one first, once all
/// answered or [`ACK_WAIT`] passed.
async fn answers(
    shared: &Arc<Shared>,
    hash: &str,
    mut notices: Option<tokio::sync::broadcast::Receiver<Notice>>,
) -> Vec<MasterApplied> {
    let deadline = tokio::time::Instant::now() + ACK_WAIT;
    let me = shared.peers.me.as_ref().map(|m| m.id.clone());
    loop {
        let rows = shared.db(|s| s.masters()).await;
        let late = tokio::time::Instant::now() >= deadline;
        if let Ok(rows) = &rows {
            let (live, done) = config_acks(rows, hash, now_ms());
            if done || late {
                let mut out: Vec<MasterApplied> = live
                    .into_iter()
                    .map(|(m, ack)| {
                        let (state, error) = match ack {
                            ConfigAck::Applied => ("applied", None),
                            ConfigAck::Failed(e) => ("failed", Some(e)),
                            ConfigAck::Waiting => ("no-answer", None),
                        };
                        MasterApplied {
                            this: me.as_deref() == Some(m.id.as_str()),
                            id: m.id,
                            name: m.name,
                            state: state.to_string(),
                            error,
                        }
                    })
                    .collect();
                out.sort_by_key(|m| !m.this);
                return out;
            }
        } else if late {
            return Vec::new();
        }
        let next = deadline.min(tokio::time::Instant::now() + ACK_RECHECK);
        let heard = async {
            match notices.as_mut() {
                // Any notice may be a master's answer (`masters`); the
                // rows say.
                Some(rx) => {
                    let _ = rx.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = heard => {}
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// The task that follows the configs the other masters share (module
/// docs): at start, on each notice, and every [`RESYNC`].
pub(crate) fn spawn_follower(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Its row says which config it runs from the start.
        let running = shared.config_info().hash.clone();
        if let Err(e) = shared.db(move |s| s.report_config(&running, None)).await {
            tracing::warn!("cannot record this master's config in the store: {e}");
        }
        loop {
            follow(&shared).await;
            if shared.is_shutting_down() {
                return;
            }
            tokio::select! {
                _ = shared.peers.config_shared.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    })
}

/// Applies the newest shared config if this master must
/// ([`must_apply`]), and says in its row how that went.
async fn follow(shared: &Arc<Shared>) {
    // Under the apply lock: an apply through this master and this one
    // never interleave, so the newest read here is still the newest.
    let lock = shared.apply_lock.lock().await;
    let newest = match shared.db(|s| s.newest_config()).await {
        Ok(Some(n)) => n,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("cannot read the newest shared config: {e}");
            return;
        }
    };
    let seen = shared.peers.config_seen();
    let running = shared.config_info().hash.clone();
    if !must_apply(Some((newest.seq, &newest.hash)), seen, &running) {
        shared.peers.saw_config(newest.seq);
        return;
    }
    if seen == 0 {
        tracing::warn!(
            file = %running,
            shared = %newest.hash,
            through = %newest.master,
            "this master started with another config than the one the masters sharing its store run: \
             it applies theirs (change the config of all of them with `bbc apply` to any one)"
        );
    }
    let seq = newest.seq;
    let text = match shared.db(move |s| s.config_graph(seq)).await {
        Ok(Some(t)) => t,
        // A newer one replaced it meanwhile: the next look finds that.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("cannot read shared config {}: {e}", newest.hash);
            return;
        }
    };
    let result = match tokio::task::spawn_blocking(move || Graph::from_json(&text)).await {
        Ok(Ok(g)) => shared
            .apply_locked(g, "shared", None, false)
            .await
            .map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("invalid graph: {e}")),
        Err(e) => Err(e.to_string()),
    };
    shared.peers.saw_config(seq);
    drop(lock);
    let failed = match &result {
        Ok(r) => {
            tracing::info!(
                hash = %r.hash,
                through = %newest.master,
                changes = r.entities.len(),
                "applied the config shared through another master"
            );
            None
        }
        Err(e) => {
            tracing::error!(
                through = %newest.master,
                "cannot apply config {} shared through another master: {e}; this master keeps \
                 running config {running}",
                newest.hash
            );
            Some((newest.hash.clone(), e.clone()))
        }
    };
    let running = shared.config_info().hash.clone();
    let r = shared
        .db(move |s| {
            s.report_config(
                &running,
                failed.as_ref().map(|(h, e)| (h.as_str(), e.as_str())),
            )
        })
        .await;
    if let Err(e) = r {
        tracing::warn!("cannot record this master's config in the store: {e}");
    }
}
