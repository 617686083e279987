//! `bbc check`: compiles each config and reports every diagnostic at once,
//! for people, as JSON, as GitHub Actions annotations or as SARIF.

use std::io::{IsTerminal, Write};

use bbc_compiler::diagnostic::Severity;
use bbc_compiler::render;
use bbc_compiler::source::DiskSources;
use clap::ValueEnum;

use crate::command_error::CommandError;
use crate::output::{check_human, check_json_doc, human_options, is_io_error, ColorChoice};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// rustc-like reports with source excerpts
    Human,
    /// one JSON document (schema in docs/diagnostics.md)
    Json,
    /// GitHub Actions workflow annotations
    Github,
    /// SARIF 2.1.0, for code scanning (GitHub's upload-sarif and others)
    Sarif,
}

pub fn check(
    files: &[String],
    format: Format,
    deny_warnings: bool,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let mut failed = false;
    let mut io_failed = false;
    let mut json_diags = Vec::new();
    let mut json_files = Vec::new();
    let mut sarif = render::sarif::SarifLog::default();
    let opts = human_options(color, std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    for f in files {
        let c = bbc_compiler::compile(f, &DiskSources);
        let errors = c.errors();
        let warnings = c.warnings();
        io_failed |= is_io_error(&c);
        failed |= errors > 0 || (deny_warnings && warnings > 0);
        match format {
            Format::Human => {
                let _ = write!(out, "{}", check_human(&c, f, opts));
            }
            Format::Github => {
                for d in &c.diagnostics {
                    let mut line = render::github(&c.sources, d);
                    if deny_warnings && d.severity == Severity::Warning {
                        line = line.replacen("::warning ", "::error ", 1);
                    }
                    let _ = writeln!(out, "{line}");
                }
            }
            Format::Json => {
                json_diags.extend(
                    c.diagnostics
                        .iter()
                        .map(|d| render::json_diagnostic(&c.sources, d)),
                );
                json_files
                    .push(serde_json::json!({"file": f, "errors": errors, "warnings": warnings}));
            }
            Format::Sarif => {
                for d in &c.diagnostics {
                    sarif.add(&c.sources, d, deny_warnings);
                }
            }
        }
        // Freeing a large graph value by value takes longer than building
        // parts of it; the process is about to exit, so let it go.
        std::mem::forget(c);
    }
    if format == Format::Json {
        let _ = write!(
            out,
            "{}",
            check_json_doc(!failed && !io_failed, json_files, json_diags)
        );
    }
    if format == Format::Sarif {
        let doc = sarif.render(env!("CARGO_PKG_VERSION"), &|c| crate::explain::section(c));
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    }
    let _ = out.flush();
    if io_failed {
        Err(CommandError::Usage("some files could not be read".into()))
    } else if failed {
        Err(CommandError::Invalid)
    } else {
        Ok(())
    }
}
