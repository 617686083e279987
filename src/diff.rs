//! `bbc diff OLD NEW`: what changes between two configs, at the level of
//! the lowered graph. Entities are matched by kind and name and compared
//! by content hash; a changed builder lists its changed steps and fields.
//! This is the plan `bbc apply` shows before it reloads a master.

pub use bbc_graph::diff::{diff, Change};
use clap::ValueEnum;

use crate::command_error::CommandError;
use crate::output::{compile_graph, write_output, ColorChoice};

/// `--format` of `bbc diff` and `bbc apply`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Human,
    Json,
}

pub fn human(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".into();
    }
    let mut s = String::new();
    for c in changes {
        let mark = match c.change {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        s.push_str(&format!("{mark} {} {}", c.kind, c.name));
        if !c.fields.is_empty() {
            s.push_str(&format!(" ({})", c.fields.join(", ")));
        }
        s.push('\n');
        for st in &c.steps {
            s.push_str(&format!("    step {st}\n"));
        }
    }
    let count = |k: &str| changes.iter().filter(|c| c.change == k).count();
    s.push_str(&format!(
        "{} added, {} changed, {} removed\n",
        count("added"),
        count("changed"),
        count("removed")
    ));
    s
}

/// `bbc diff OLD NEW`.
pub fn command(
    old: &str,
    new: &str,
    format: DiffFormat,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let a = compile_graph(old, color)?;
    let b = compile_graph(new, color)?;
    let changes = diff(&a, &b);
    let text = match format {
        DiffFormat::Human => human(&changes),
        DiffFormat::Json => {
            let mut t = serde_json::to_string_pretty(
                &serde_json::json!({"version": 1, "changes": changes}),
            )
            .unwrap_or_default();
            t.push('\n');
            t
        }
    };
    write_output(None, &text)
}
