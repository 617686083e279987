//! bbc's runtime: loads a lowered build graph (it never parses KDL) and runs
//! it — the master (worker listener, build queue, builds, HTTP API, store)
//! and the worker.

pub mod backup;
pub mod changes;
pub mod control;
pub mod glob;
pub mod http;
pub mod master;
pub mod protocol;
pub mod reporters;
pub mod secrets;
pub mod store;
pub mod web;
pub mod worker;
