//! Compiler golden cases: `tests/golden/NAME.kdl` beside `NAME.out`, the
//! diagnostics rendered without colour at 80 columns and, when the header
//! comment says `// options: graph`, the lowered graph. `BLESS=1 cargo test`
//! rewrites the expected files.

use std::collections::BTreeSet;

use bbc_compiler::diagnostic::Code;
use bbc_compiler::render::{self, HumanOptions};

use crate::common::{files, root};

struct RootSources;

impl bbc_compiler::source::Sources for RootSources {
    fn read(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(root().join(path))
    }
}

fn render_case(name: &str, text: &str) -> (String, BTreeSet<&'static str>) {
    let graph_wanted = text
        .lines()
        .take_while(|l| l.starts_with("//"))
        .any(|l| l.trim_start_matches('/').trim().starts_with("options:") && l.contains("graph"));
    // Imports are read relative to the repository root, like the CLI does
    // from the working directory.
    let c = bbc_compiler::compile_with(name, text.to_string(), &RootSources);
    let opts = HumanOptions {
        color: false,
        width: 80,
    };
    let mut out = String::new();
    let mut codes = BTreeSet::new();
    for d in &c.diagnostics {
        // Every diagnostic says where (a labelled span) and what to do (help).
        assert!(
            !d.primary.message.is_empty(),
            "{name}: `{}` has no label",
            d.message
        );
        assert!(
            d.help.as_deref().is_some_and(|h| !h.is_empty()),
            "{name}: `{}` has no help",
            d.message
        );
        codes.insert(d.code.as_str());
        out.push_str(&render::human(&c.sources, d, opts));
    }
    out.push_str(&render::summary(c.errors(), c.warnings(), name));
    out.push('\n');
    if graph_wanted {
        match &c.graph {
            Some(g) => {
                out.push_str("--- graph ---\n");
                out.push_str(&g.to_json());
            }
            None => out.push_str("--- no graph: the config has errors ---\n"),
        }
    }
    (out, codes)
}

#[test]
fn golden_cases() {
    let dir = root().join("tests/golden");
    let bless = std::env::var_os("BLESS").is_some();
    let cases = files(&dir, "kdl");
    assert!(
        cases.len() >= 60,
        "expected at least 60 golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut covered: BTreeSet<&'static str> = BTreeSet::new();
    for case in &cases {
        let text =
            std::fs::read_to_string(case).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let stem = case.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let name = format!("tests/golden/{stem}.kdl");
        let (actual, codes) = render_case(&name, &text);
        covered.extend(codes);
        let expected_path = case.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {name}: expected ---\n{expected}\n--- actual ---\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ (BLESS=1 cargo test to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every diagnostic the compiler can give is exercised by some case.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != Code::Io.as_str() && !covered.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a golden case: {missing:?}"
    );
}

#[test]
fn every_code_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/diagnostics.md")).unwrap_or_default();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !doc.contains(&format!("## {}", c.as_str())))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/diagnostics.md has no section for {missing:?}"
    );
}

/// The examples in docs/diagnostics.md are golden cases: their rendered
/// output must be the current one (`BLESS=1` rewrites it).
#[test]
fn diagnostics_doc_shows_current_output() {
    let path = root().join("docs/diagnostics.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let marker = "Example (`tests/golden/";
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc.as_str();
    let mut stale = Vec::new();
    let mut examples = 0;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let Some(end) = after.find(".kdl`") else {
            break;
        };
        let case = &after[..end];
        // The rendered output is the first ```text block after the marker.
        let Some(open) = after.find("```text\n") else {
            break;
        };
        let body_start = at + marker.len() + open + "```text\n".len();
        // An empty block (a new entry before its first BLESS) closes at
        // once; searching on would swallow the entries after it.
        let empty = rest[body_start..].starts_with("```");
        let close = if empty {
            0
        } else {
            let Some(close) = rest[body_start..].find("\n```") else {
                break;
            };
            close
        };
        let current = &rest[body_start..body_start + close];
        let expected = std::fs::read_to_string(root().join(format!("tests/golden/{case}.out")))
            .unwrap_or_default();
        let expected = expected.trim_end();
        if current != expected {
            stale.push(case.to_string());
        }
        examples += 1;
        out.push_str(&rest[..body_start]);
        out.push_str(expected);
        if empty && !expected.is_empty() {
            out.push('\n');
        }
        rest = &rest[body_start + close..];
    }
    out.push_str(rest);
    assert!(
        examples >= 25,
        "expected examples in docs/diagnostics.md, found {examples}"
    );
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, out).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    assert!(
        stale.is_empty(),
        "docs/diagnostics.md shows old output for {stale:?}; run BLESS=1 cargo test"
    );
}
