//! `bbc fmt`: rewrites configs in the canonical layout, or (`--check`)
//! reports the files that are not in it, with a diff, for CI.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use bbc_compiler::fmt::{format_source, FormatError};
use bbc_compiler::render;

use crate::command_error::CommandError;
use crate::output::{human_options, ColorChoice};

/// Where a config to format comes from.
enum Input {
    Stdin,
    File(PathBuf),
}

pub fn fmt(paths: &[String], check: bool, color: ColorChoice) -> Result<(), CommandError> {
    let mut inputs = Vec::new();
    for p in paths {
        if p == "-" {
            inputs.push(Input::Stdin);
            continue;
        }
        let path = Path::new(p);
        if path.is_dir() {
            let mut found = Vec::new();
            collect_kdl(path, &mut found)
                .map_err(|e| CommandError::Usage(format!("cannot read `{p}`: {e}")))?;
            found.sort();
            inputs.extend(found.into_iter().map(Input::File));
        } else {
            inputs.push(Input::File(path.to_path_buf()));
        }
    }
    let opts = human_options(color, std::io::stderr().is_terminal());
    let mut invalid = 0usize;
    let mut unformatted = Vec::new();
    let mut out = std::io::stdout().lock();
    for input in &inputs {
        let (name, text) = match input {
            Input::Stdin => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| CommandError::Usage(format!("cannot read standard input: {e}")))?;
                ("<stdin>".to_owned(), s)
            }
            Input::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CommandError::Usage(format!("cannot read `{}`: {e}", path.display()))
                })?;
                (path.display().to_string(), text)
            }
        };
        let formatted = match format_source(&name, &text) {
            Ok(f) => f,
            Err(FormatError::Syntax {
                sources,
                diagnostics,
            }) => {
                let mut err = std::io::stderr().lock();
                for d in &diagnostics {
                    let _ = write!(err, "{}", render::human(&sources, d, opts));
                }
                let _ = writeln!(err, "{name}: not formatted: it is not valid KDL 2.0");
                invalid += 1;
                continue;
            }
            Err(FormatError::Unsafe(msg)) => {
                eprintln!("error: {msg}");
                invalid += 1;
                continue;
            }
        };
        let changed = formatted != text;
        match (input, check) {
            (Input::Stdin, false) => out.write_all(formatted.as_bytes())?,
            (_, true) => {
                if changed {
                    let diff = similar::TextDiff::from_lines(&text, &formatted);
                    let _ = write!(
                        out,
                        "{}",
                        diff.unified_diff()
                            .context_radius(2)
                            .header(&name, &format!("{name} (formatted)"))
                    );
                    unformatted.push(name);
                }
            }
            (Input::File(path), false) => {
                if changed {
                    write_atomically(path, &formatted)
                        .map_err(|e| CommandError::Usage(format!("cannot write `{name}`: {e}")))?;
                    eprintln!("formatted {name}");
                }
            }
        }
    }
    let _ = out.flush();
    if !unformatted.is_empty() {
        eprintln!(
            "{} of {} file{} not formatted: run `bbc fmt {}`",
            unformatted.len(),
            inputs.len(),
            if inputs.len() == 1 { " is" } else { "s are" },
            unformatted.join(" ")
        );
    }
    if invalid > 0 || !unformatted.is_empty() {
        return Err(CommandError::Invalid);
    }
    Ok(())
}

/// Every `*.kdl` below `dir`, skipping hidden directories and `target`.
fn collect_kdl(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect_kdl(&path, found)?;
            }
        } else if name.ends_with(".kdl") {
            found.push(path);
        }
    }
    Ok(())
}

/// Replaces `path` by writing a sibling and renaming it over, so a crash
/// never leaves a half-written config; the file's permissions are kept.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.bbc-fmt-{}",
        file_name.unwrap_or_default(),
        std::process::id()
    ));
    let perms = std::fs::metadata(path)?.permissions();
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, perms)?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
