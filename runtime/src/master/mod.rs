//! The master: accepts workers, keeps the build queue, assigns requests to
//! workers (honouring max-builds, locks, downtime and priority), runs
//! builds, and serves the HTTP API.
//!
//! [`start()`] (in `start.rs`) wires the services together over the shared
//! state of `crate::state`; see there for the layering.

pub mod apply;
pub mod build;
mod janitor;
mod latent;
mod missing;
pub mod peers;
pub mod properties;
pub mod queue;
pub mod schedulers;
pub mod start;
pub mod workers;

// The paths the `bbc` binary and older callers use.
pub use crate::state::{now_ms, HttpLimits, MasterConfig, Shared, WorkerConn};
pub use start::{start, MasterHandle};
