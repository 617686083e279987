//! `bbc import master.cfg`: a Buildbot configuration as a bbc one.
//!
//! Buildbot's configuration is a Python program, so only Buildbot can read
//! it: `dump.py` (embedded here) runs in a Python that has Buildbot, loads
//! the file with Buildbot's own `FileLoader`, and prints the bbc entities
//! it translates to as JSON KDL nodes, with what it could not translate and
//! where. This module writes them as KDL, folds builders and schedulers
//! that differ in a few values into matrices (`group`), and checks the
//! result with the compiler before writing it: an import that does not
//! check is a bug of the importer, and is said to be one.

mod group;
mod kdl;

use std::path::Path;
use std::process::Command;

use bbc_compiler::render;
use bbc_compiler::source::MemorySources;
use serde::Deserialize;

use crate::command_error::CommandError;
use crate::output::stderr_options;

const DUMP_PY: &str = include_str!("dump.py");

/// What dump.py exits with when the Python has no Buildbot.
const NO_BUILDBOT: i32 = 3;
/// What dump.py exits with when Buildbot refused the config.
const CONFIG_ERRORS: i32 = 4;

#[derive(Deserialize)]
struct Dump {
    buildbot: String,
    #[serde(default)]
    header: Vec<String>,
    sections: Vec<Section>,
    #[serde(default)]
    untranslated: Vec<Lost>,
}

#[derive(Deserialize)]
struct Section {
    title: String,
    nodes: Vec<kdl::Node>,
}

#[derive(Deserialize)]
struct Lost {
    #[serde(rename = "where")]
    at: String,
    what: String,
}

/// `bbc import MASTER_CFG [--python PY] [-o OUT]`.
pub fn import(cfg: &str, python: Option<&str>, output: Option<&str>) -> Result<(), CommandError> {
    if !Path::new(cfg).is_file() {
        return Err(CommandError::Usage(format!(
            "cannot read `{cfg}`: no such file"
        )));
    }
    let json = run_dump(cfg, python)?;
    let dump: Dump = serde_json::from_slice(&json).map_err(|e| {
        CommandError::Usage(format!(
            "bbc import: the Buildbot loader's output could not be read ({e}); this is a bug of bbc import"
        ))
    })?;
    let text = render_config(cfg, &dump);
    // Checked under the name it is written as, so diagnostics point there.
    let name = output.filter(|o| *o != "-").unwrap_or("master.kdl");
    let mut files = MemorySources::default();
    files.0.insert(name.to_string(), text.clone());
    let c = bbc_compiler::compile(name, &files);
    let opts = stderr_options();
    for d in &c.diagnostics {
        eprint!("{}", render::human(&c.sources, d, opts));
    }
    if c.errors() > 0 {
        eprintln!(
            "error: the imported config does not check ({} error(s)); this is a bug of bbc import, please report it with the master.cfg. Nothing was written.",
            c.errors()
        );
        return Err(CommandError::Invalid);
    }
    crate::output::write_output(output, &text)?;
    if !dump.untranslated.is_empty() {
        eprintln!(
            "bbc import: {} thing(s) not translated; they are listed at the top of the config and marked where they occurred",
            dump.untranslated.len()
        );
    }
    Ok(())
}

/// The Pythons to try: the one given, or every `python3` and `python` on
/// PATH in order.
fn candidates(python: Option<&str>) -> Vec<String> {
    if let Some(p) = python {
        return vec![p.to_string()];
    }
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            for exe in ["python3", "python"] {
                let p = dir.join(exe);
                if p.is_file() {
                    out.push(p.to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// Can `py` import Buildbot's config loader?
fn has_buildbot(py: &str) -> bool {
    Command::new(py)
        .args(["-c", "import buildbot.config.master"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs dump.py on `cfg` in the first candidate Python that has Buildbot.
fn run_dump(cfg: &str, python: Option<&str>) -> Result<Vec<u8>, CommandError> {
    let tried = candidates(python);
    let mut why = Vec::new();
    for py in &tried {
        // Any Python may be found (even Python 2): ask it for Buildbot's
        // loader before handing it the script.
        if !has_buildbot(py) {
            why.push(format!("{py}: no `buildbot` module"));
            continue;
        }
        let out = match Command::new(py).arg("-c").arg(DUMP_PY).arg(cfg).output() {
            Ok(o) => o,
            Err(e) => {
                why.push(format!("{py}: {e}"));
                continue;
            }
        };
        match out.status.code() {
            Some(0) => return Ok(out.stdout),
            Some(NO_BUILDBOT) => {
                why.push(format!("{py}: no `buildbot` module"));
                continue;
            }
            Some(CONFIG_ERRORS) => {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                eprintln!("error: Buildbot's loader refused `{cfg}` (with {py}); fix it so that `buildbot checkconfig` passes, then import again");
                return Err(CommandError::Invalid);
            }
            _ => {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                return Err(CommandError::Usage(format!(
                    "loading `{cfg}` with {py} failed ({})",
                    out.status
                )));
            }
        }
    }
    let listed = if tried.is_empty() {
        "no python3 or python on PATH".to_string()
    } else {
        why.join("; ")
    };
    Err(CommandError::Usage(format!(
        "bbc import needs a Python with Buildbot installed, to read master.cfg as Buildbot does, and found none ({listed}). Install it (`python3 -m venv bb && bb/bin/pip install buildbot`) and pass `--python bb/bin/python`"
    )))
}

/// The whole config: the header (untranslated things first), then each
/// section under a comment, builders and schedulers folded into matrices.
fn render_config(cfg: &str, dump: &Dump) -> String {
    let mut s = format!(
        "// Imported from {} by `bbc import` (Buildbot {}).\n",
        cfg, dump.buildbot
    );
    if !dump.untranslated.is_empty() {
        s.push_str(
            "//\n// NOT TRANSLATED: each is marked below with \"bbc import: not translated\".\n",
        );
        for l in &dump.untranslated {
            s.push_str(&format!("//   - {}: {}\n", l.at, l.what.replace('\n', " ")));
        }
    }
    for h in &dump.header {
        s.push_str("//\n");
        for line in wrap(h, 76) {
            s.push_str(&format!("// {line}\n"));
        }
    }
    let mut lets = 0;
    for sec in &dump.sections {
        s.push_str(&format!("\n// --- {}\n\n", sec.title));
        let fold = matches!(sec.title.as_str(), "Builders" | "Schedulers");
        let items = if fold {
            group::group(sec.nodes.clone())
        } else {
            sec.nodes.iter().cloned().map(group::Item::Plain).collect()
        };
        for it in &items {
            match it {
                group::Item::Plain(n) => kdl::write_node(&mut s, n, 0),
                group::Item::Matrix(m) => {
                    lets += 1;
                    s.push_str(&format!(
                        "// {} {} that differ only in {}: one matrix.\n",
                        m.rows.len(),
                        sec.title.to_lowercase(),
                        m.fields.join(", ")
                    ));
                    group::write_matrix(&mut s, m, &format!("rows_{lets}"));
                }
            }
        }
    }
    s
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for w in text.split_whitespace() {
        let last = lines.last_mut().map(|l| l.len()).unwrap_or(0);
        if last > 0 && last + 1 + w.len() > width {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(w);
        }
    }
    lines
}
