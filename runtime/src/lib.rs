//! bbc's runtime: loads a lowered build graph (it never parses KDL) and runs
//! it — the master (worker listener, build queue, builds, HTTP API, store)
//! and the worker.

#[cfg(test)]
#[macro_use]
mod fixtures;

pub mod api_error;
pub mod auth;
pub mod backup;
pub mod buildbot_worker;
pub mod change_json;
pub mod changes;
pub mod control;
pub mod glob;
pub mod http;
pub mod master;
pub mod password;
pub mod protocol;
pub mod reporters;
pub mod secrets;
pub mod state;
pub mod store;
pub mod test_results;
pub mod tls;
pub mod web;
pub mod worker;
