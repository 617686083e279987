//! The `bbc` command line. Library code lives in `compiler/` (and later
//! `runtime/`); this crate parses arguments, renders, and picks exit codes.

mod bench;
mod cli;
mod command_error;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
