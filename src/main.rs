//! The `bbc` command line. Library code lives in `graph/`, `compiler/` and
//! `runtime/`; this crate parses arguments (`cli`), runs each command in its
//! module, prints through `output`, and picks exit codes (`command_error`).
//! The benchmarks are a separate binary, `bbc-bench` (bench/).

mod apply;
mod backup;
mod cert;
mod check;
mod cli;
mod client;
mod command_error;
mod diff;
mod dot;
mod explain;
mod fmt;
mod follow;
mod https;
mod import;
mod listing;
mod local_run;
mod lsp;
mod output;
mod passwd;
mod serve;
mod status;

use std::process::ExitCode;

// The compiler builds and frees many small values; mimalloc halves the
// time `bbc check` spends in the allocator (docs/perf.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc takes transparent huge pages per thread heap; with tokio's
    // blocking pool that made the master's RSS grow with its thread count
    // (docs/perf.md). Small pages keep it bounded at the same speed.
    #[cfg(target_os = "linux")]
    // SAFETY: a process-wide flag set before any thread starts.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // reqwest is built with rustls but no crypto provider of its own (the
    // runtime's reporters choose ring): install it before any client.
    bbc_runtime::reporters::install_crypto_provider();
    cli::run()
}
