//! The one integration-test binary (as in jj): each `test_*` module covers
//! one area, all sharing the helpers in `common`.

mod common;
mod forge;
mod recorder;
mod test_apply;
mod test_backup;
mod test_buildbot_worker;
mod test_changes;
mod test_chaos;
mod test_check_cli;
mod test_docs;
mod test_env;
mod test_examples;
mod test_faults;
mod test_fmt;
mod test_golden;
mod test_graph_fixtures;
mod test_holes;
mod test_logging;
mod test_login;
mod test_lsp;
mod test_metrics;
mod test_no_panic;
mod test_oauth;
mod test_postgres;
mod test_rebuild;
mod test_reporters;
mod test_retention;
mod test_runtime;
mod test_schedulers;
mod test_secrets;
mod test_tls;
mod test_users;
mod test_views;
mod test_web;
