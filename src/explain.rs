//! `bbc explain CODE`: the long explanation of a diagnostic code.

use bbc_compiler::diagnostic::Code;

use crate::command_error::CommandError;

/// The long explanation: the code's section of docs/diagnostics.md, which
/// is shipped inside the binary.
const DIAGNOSTICS_DOC: &str = include_str!("../docs/diagnostics.md");

pub fn explain(code: &str) -> Result<(), CommandError> {
    let Some(c) = Code::parse(code) else {
        return Err(CommandError::Usage(format!(
            "unknown diagnostic code `{code}`; codes look like E0201 (see docs/diagnostics.md)"
        )));
    };
    match section(c) {
        Some(s) => println!("{s}"),
        None => println!("{} ({}): {}", c.as_str(), c.slug(), c.summary()),
    }
    Ok(())
}

/// The code's section of docs/diagnostics.md (Markdown), if it has one.
pub fn section(c: Code) -> Option<String> {
    let heading = format!("## {} ", c.as_str());
    DIAGNOSTICS_DOC.find(&heading).map(|at| {
        let rest = &DIAGNOSTICS_DOC[at..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
        rest[..end].trim_end().to_string()
    })
}
