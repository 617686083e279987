//! `bbc-bench`: the benchmarks behind the figures in docs/perf.md, kept out
//! of the shipped `bbc` binary. They run the `bbc` binary found next to
//! this one (build both: `cargo build --release --workspace`), except the
//! compile measurement, which runs in a fresh `bbc-bench` process.

mod api;
mod changes;
mod check;
mod error;
mod fleet;
mod lsp;
mod procfs;
mod run;
mod stats;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{err, BenchError};

// The same allocator as `bbc`, so that the compile measured in `one`
// costs what it costs in `bbc check` (docs/perf.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bbc-bench",
    version,
    about = "Benchmarks of bbc (figures in docs/perf.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `bbc check` on generated configs of 100, 1,000 and 10,000 builders
    Check {
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Changes through the webhook endpoint to build requests and builds
    Changes {
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// The runtime: a `bbc master` and `bbc worker` processes on 127.0.0.1
    Run(run::RunArgs),
    /// Write a generated benchmark config to standard output
    Generate {
        builders: usize,
        /// Issue 12's shape instead (7 steps per builder, no schedulers but
        /// one force scheduler): `with` 12 shared ~600-character
        /// warning-patterns, `without` them
        #[arg(long, value_parser = ["with", "without"])]
        patterns: Option<String>,
    },
    /// `bbc lsp` while a config is typed: keystroke → answer
    Lsp {
        #[arg(long, default_value = "examples/production.kdl")]
        file: String,
        #[arg(long, default_value_t = 30)]
        keystrokes: usize,
        /// Type right after the first occurrence of this text (e.g. inside
        /// a string, so each keystroke changes a token) instead of into a
        /// comment added at the end
        #[arg(long)]
        type_after: Option<String>,
    },
    /// One master with thousands of simulated workers connected, idle and
    /// then under a steady rate of forced builds
    Fleet(fleet::FleetArgs),
    /// (internal) one measured compile in this process
    #[command(hide = true)]
    One { file: String },
}

/// The `bbc` binary the benchmarks run: the one beside this executable,
/// as cargo builds them into the same directory.
fn bbc_exe() -> Result<PathBuf, BenchError> {
    let me = std::env::current_exe()?;
    let exe = me
        .with_file_name("bbc")
        .with_extension(std::env::consts::EXE_EXTENSION);
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(err(format!(
            "cannot find bbc at {} (next to bbc-bench): build both, e.g. `cargo build --release --workspace`",
            exe.display()
        )))
    }
}

fn main() -> ExitCode {
    // As `bbc` does: small pages keep RSS figures those of the shipped
    // binary (docs/perf.md).
    #[cfg(target_os = "linux")]
    // SAFETY: a process-wide flag set before any thread starts.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // reqwest is built with rustls but no crypto provider of its own (the
    // runtime's reporters choose ring): install it before any client.
    bbc_runtime::reporters::install_crypto_provider();
    // clap prints usage errors and exits 2, help and version 0.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { sizes, runs } => check::check(&sizes, runs.max(1)),
        Command::Changes { changes, samples } => {
            bbc_exe().and_then(|bbc| changes::run(&bbc, changes, samples))
        }
        Command::Run(args) => bbc_exe().and_then(|bbc| run::run(&bbc, &args)),
        Command::Generate { builders, patterns } => {
            let text = match patterns.as_deref() {
                None => workload::generate(builders),
                Some(p) => workload::generate_patterns(builders, p == "with"),
            };
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .map_err(BenchError::from)
        }
        Command::Lsp {
            file,
            keystrokes,
            type_after,
        } => bbc_exe()
            .and_then(|bbc| lsp::run(&bbc, &file, keystrokes.max(1), type_after.as_deref())),
        Command::Fleet(a) => bbc_exe().and_then(|bbc| fleet::fleet(&bbc, &a)),
        Command::One { file } => check::one(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
