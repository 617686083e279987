//! This master among others on one store (`store::lease`): who it is,
//! its lease times, and the named leases it holds now. The service that
//! renews them and listens to the others is `master/peers.rs`; the
//! services a lease gates (schedulers, pollers) read [`Peers::holds`] and
//! watch [`Peers::watch`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::store::{LeaseTimes, MasterIdentity};

/// The named lease under which the schedulers and the change sources'
/// pollers run: on one master at a time (they feed each other through
/// that master's own channels).
pub const SCHEDULERS: &str = "schedulers";

pub struct Peers {
    /// `None`: this master is alone on its store (redb), holds every
    /// lease and runs everything.
    pub me: Option<MasterIdentity>,
    pub times: LeaseTimes,
    held: watch::Sender<BTreeSet<String>>,
    /// Notified when another master stored a change: the schedulers read
    /// the changes back from the store. Only through [`Peers::changed_elsewhere`],
    /// which also counts it in `changes_heard`.
    pub changes_elsewhere: tokio::sync::Notify,
    /// How many notices of changes stored elsewhere (or of notices that
    /// may have been missed) this master heard: the schedulers read the
    /// changes again when it moved, also for a notice that came while
    /// they were not waiting for one.
    changes_heard: AtomicU64,
    /// Notified when a config was shared (or notices may have been
    /// missed): the follower looks at the newest shared config
    /// (`master::apply::shared_config`).
    pub config_shared: tokio::sync::Notify,
    /// The sequence number of the newest shared config this master has
    /// handled (applied, refused, or shared itself); 0: none yet.
    config_seen: AtomicU64,
}

impl Peers {
    pub fn alone() -> Peers {
        Peers {
            me: None,
            times: LeaseTimes::default(),
            held: watch::channel(BTreeSet::new()).0,
            changes_elsewhere: tokio::sync::Notify::new(),
            changes_heard: AtomicU64::new(0),
            config_shared: tokio::sync::Notify::new(),
            config_seen: AtomicU64::new(0),
        }
    }

    pub fn shared(me: MasterIdentity, times: LeaseTimes) -> Peers {
        Peers {
            me: Some(me),
            times,
            held: watch::channel(BTreeSet::new()).0,
            changes_elsewhere: tokio::sync::Notify::new(),
            changes_heard: AtomicU64::new(0),
            config_shared: tokio::sync::Notify::new(),
            config_seen: AtomicU64::new(0),
        }
    }

    /// Another master stored a change, or notices may have been missed.
    pub fn changed_elsewhere(&self) {
        self.changes_heard.fetch_add(1, Ordering::SeqCst);
        self.changes_elsewhere.notify_waiters();
    }

    /// The count [`Peers::changed_elsewhere`] moves.
    pub fn changes_heard(&self) -> u64 {
        self.changes_heard.load(Ordering::SeqCst)
    }

    /// Whether this master holds the named lease now (always, alone).
    pub fn holds(&self, name: &str) -> bool {
        self.me.is_none() || self.held.borrow().contains(name)
    }

    /// Changes whenever a lease is taken or lost.
    pub fn watch(&self) -> watch::Receiver<BTreeSet<String>> {
        self.held.subscribe()
    }

    /// The newest shared config this master has handled (0: none).
    pub fn config_seen(&self) -> u64 {
        self.config_seen.load(Ordering::Acquire)
    }

    /// This master has handled shared config `seq` (and every older one).
    pub(crate) fn saw_config(&self, seq: u64) {
        self.config_seen.fetch_max(seq, Ordering::AcqRel);
    }

    /// Records whether this master holds `name`; `true` when that changed.
    pub(crate) fn set_held(&self, name: &str, held: bool) -> bool {
        self.held.send_if_modified(|s| {
            if held {
                s.insert(name.to_string())
            } else {
                s.remove(name)
            }
        })
    }
}
