//! The `bbc` command line. Library code lives in `compiler/` (and later
//! `runtime/`); this crate parses arguments, renders, and picks exit codes.

mod bench;
mod bench_changes;
mod cli;
mod client;
mod command_error;
mod diff;
mod local_run;
mod serve;

use std::process::ExitCode;

// The compiler builds and frees many small values; mimalloc halves the
// time `bbc check` spends in the allocator (docs/perf.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run()
}
