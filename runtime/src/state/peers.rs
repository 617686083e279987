//! This master among others on one store (`store::lease`): who it is,
//! its lease times, and the named leases it holds now. The service that
//! renews them and listens to the others is `master/peers.rs`; the
//! services a lease gates (schedulers, pollers) read [`Peers::holds`] and
//! watch [`Peers::watch`].

use std::collections::BTreeSet;

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
    /// the changes back from the store.
    pub changes_elsewhere: tokio::sync::Notify,
}

impl Peers {
    pub fn alone() -> Peers {
        Peers {
            me: None,
            times: LeaseTimes::default(),
            held: watch::channel(BTreeSet::new()).0,
            changes_elsewhere: tokio::sync::Notify::new(),
        }
    }

    pub fn shared(me: MasterIdentity, times: LeaseTimes) -> Peers {
        Peers {
            me: Some(me),
            times,
            held: watch::channel(BTreeSet::new()).0,
            changes_elsewhere: tokio::sync::Notify::new(),
        }
    }

    /// Whether this master holds the named lease now (always, alone).
    pub fn holds(&self, name: &str) -> bool {
        self.me.is_none() || self.held.borrow().contains(name)
    }

    /// Changes whenever a lease is taken or lost.
    pub fn watch(&self) -> watch::Receiver<BTreeSet<String>> {
        self.held.subscribe()
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
