//! What the commands print and how: colour and width for people, the
//! diagnostics of a compiled config (human and JSON), and writing a result
//! to a file or standard output. Every command module prints through here,
//! so `bbc check`, `bbc apply` and the rest agree on the look.

use std::io::{IsTerminal, Write};

use bbc_compiler::diagnostic::Code;
use bbc_compiler::graph::Graph;
use bbc_compiler::render::{self, HumanOptions};
use bbc_compiler::source::DiskSources;
use bbc_compiler::Compilation;
use clap::ValueEnum;

use crate::command_error::CommandError;

/// `--color`: declared here rather than with the other arguments because
/// the printing helpers take it.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// `--format` of the API clients and `bbc list`: lines for people, or one
/// JSON document for scripts (docs/operations.md, "Command-line clients").
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Human,
    Json,
}

pub fn human_options(color: ColorChoice, stream_is_tty: bool) -> HumanOptions {
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100);
    HumanOptions { color, width }
}

/// Colour and width for diagnostics written to standard error.
pub fn stderr_options() -> HumanOptions {
    human_options(ColorChoice::Auto, std::io::stderr().is_terminal())
}

/// The config could not be read at all (its diagnostic is the only one).
pub fn is_io_error(c: &Compilation) -> bool {
    c.diagnostics.iter().any(|d| d.code == Code::Io)
}

/// Prints diagnostics for people on stderr; returns Err when there are errors.
fn report_human(c: &Compilation, color: ColorChoice, file: &str) -> Result<(), CommandError> {
    let opts = human_options(color, std::io::stderr().is_terminal());
    let mut err = std::io::stderr().lock();
    for d in &c.diagnostics {
        let _ = write!(err, "{}", render::human(&c.sources, d, opts));
    }
    if is_io_error(c) {
        return Err(CommandError::Usage(c.diagnostics[0].message.clone()));
    }
    if c.errors() > 0 {
        let _ = writeln!(err, "{}", render::summary(c.errors(), c.warnings(), file));
        return Err(CommandError::Invalid);
    }
    Ok(())
}

/// Compiles a config for a command that needs its graph, printing its
/// diagnostics on stderr; errors refuse.
pub fn compile_graph(file: &str, color: ColorChoice) -> Result<Graph, CommandError> {
    let c = bbc_compiler::compile(file, &DiskSources);
    report_human(&c, color, file)?;
    c.graph.ok_or(CommandError::Invalid)
}

/// What `bbc check FILE` prints for one compiled file (human format).
pub fn check_human(c: &Compilation, file: &str, opts: HumanOptions) -> String {
    let mut s = String::new();
    for d in &c.diagnostics {
        s.push_str(&render::human(&c.sources, d, opts));
    }
    s.push_str(&render::summary(c.errors(), c.warnings(), file));
    s.push('\n');
    s
}

/// What `bbc check --format json` prints.
pub fn check_json_doc(
    ok: bool,
    files: Vec<serde_json::Value>,
    diagnostics: Vec<render::JsonDiagnostic>,
) -> String {
    let doc = serde_json::json!({
        "version": render::JSON_VERSION,
        "ok": ok,
        "files": files,
        "diagnostics": diagnostics,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `bbc check --format json FILE` for one compiled file.
pub fn check_json(c: &Compilation, file: &str) -> String {
    check_json_doc(
        c.errors() == 0 && !is_io_error(c),
        vec![serde_json::json!({"file": file, "errors": c.errors(), "warnings": c.warnings()})],
        c.diagnostics
            .iter()
            .map(|d| render::json_diagnostic(&c.sources, d))
            .collect(),
    )
}

/// Writes a command's result to `output`, or standard output when it is
/// absent or `-`.
pub fn write_output(output: Option<&str>, text: &str) -> Result<(), CommandError> {
    match output {
        None | Some("-") => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Some(path) => std::fs::write(path, text)
            .map_err(|e| CommandError::Usage(format!("cannot write `{path}`: {e}"))),
    }
}
