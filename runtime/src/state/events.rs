//! Build events: the master publishes one when the store has recorded the
//! start or the end of a build ([`Hub::publish`]); the reporters and the
//! API's event stream receive them through a broadcast channel.
//!
//! Architecture invariant: publishing never waits (a broadcast send) and
//! nothing is published when no one listens, so a slow listener never
//! delays or fails a build.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bbc_graph::BuildResult;
use tokio::sync::{broadcast, OnceCell};

use crate::store::{Build, BuildSet, Change, StepRecord};

/// Events a reporter may have waiting; past that its oldest ones are
/// dropped (with a warning), so a slow endpoint never holds builds back.
pub const QUEUE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Started,
    Finished,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Finished => "finished",
        }
    }
}

/// A build that started or finished, as the store recorded it.
pub struct BuildEvent {
    pub phase: Phase,
    pub build: Build,
    pub set: Arc<BuildSet>,
    /// What the reporters read from the store about the build, loaded by
    /// the first one that needs it.
    facts: OnceCell<Arc<Facts>>,
}

impl BuildEvent {
    pub fn new(phase: Phase, build: Build, set: Arc<BuildSet>) -> BuildEvent {
        BuildEvent {
            phase,
            build,
            set,
            facts: OnceCell::new(),
        }
    }

    /// Steps, the previous build's result and the changes: `load`ed by
    /// the first reporter that needs them, shared by the others.
    pub async fn facts<F, Fut>(&self, load: F) -> Arc<Facts>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Arc<Facts>>,
    {
        self.facts.get_or_init(load).await.clone()
    }
}

/// What the reporters read from the store about a build.
#[derive(Debug, Default)]
pub struct Facts {
    pub steps: Vec<StepRecord>,
    /// The result of the builder's previous finished build (ignoring
    /// builds that ended as `retry`); only looked up for finished builds.
    pub previous: Option<BuildResult>,
    pub changes: Vec<Change>,
    /// The last lines of the first visible failed step's log, for a
    /// finished build that failed.
    pub log_tail: Option<LogTail>,
}

/// The end of a step's log, as messages quote it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogTail {
    /// The step's position and name.
    pub step: u32,
    pub name: String,
    /// At most `LOG_TAIL_LINES` lines from its last `LOG_TAIL_BYTES`.
    pub text: String,
}

/// The build events channel. One field of `Shared`.
pub struct Hub {
    events: broadcast::Sender<Arc<BuildEvent>>,
    /// Where the API listens, for build links when the master has no `url`.
    http_addr: SocketAddr,
}

impl Hub {
    pub fn new(http_addr: SocketAddr) -> Hub {
        Hub {
            events: broadcast::channel(QUEUE).0,
            http_addr,
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Build events from now on (the API's event stream listens here too).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BuildEvent>> {
        self.events.subscribe()
    }

    /// Tells the reporters about a build; never waits. Call it after the
    /// store has recorded the start or the end.
    pub fn publish(&self, phase: Phase, build: &Build, set: &Arc<BuildSet>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let ev = BuildEvent::new(phase, build.clone(), set.clone());
        let _ = self.events.send(Arc::new(ev));
    }
}
