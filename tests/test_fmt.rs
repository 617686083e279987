//! `bbc fmt`: the canonical layout, kept comments, idempotence over every
//! config in the tree, `--check` for CI, and files left alone on errors.

use std::io::Write;
use std::process::Stdio;

use bbc_compiler::fmt::{format_source, FormatError};

use crate::common::{bbc, files, root, run, stderr, stdout, temp_dir};

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn shipped_configs_are_formatted() {
    // Examples and the stdlib are what users copy: they stay canonical.
    let o = run(&["fmt", "--check", "examples", "stdlib"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "", "no diff expected");
}

#[test]
fn every_config_in_the_tree_formats_idempotently() {
    let mut inputs = files(&root().join("tests/golden"), "kdl");
    inputs.extend(files(&root().join("examples"), "kdl"));
    inputs.extend(files(&root().join("examples/production"), "kdl"));
    inputs.extend(files(&root().join("stdlib"), "kdl"));
    let mut formatted = 0;
    for path in &inputs {
        let name = path.display().to_string();
        let text = read(path);
        match format_source(&name, &text) {
            Ok(once) => {
                let twice = format_source(&name, &once)
                    .unwrap_or_else(|e| panic!("{name}: second pass: {e:?}"));
                assert_eq!(twice, once, "{name}: formatting is not idempotent");
                formatted += 1;
            }
            // Only the golden cases about syntax errors may fail to parse.
            Err(FormatError::Syntax { .. }) => {
                let out = read(&path.with_extension("out"));
                assert!(
                    out.contains("E0001"),
                    "{name}: syntax error not in its golden output"
                );
            }
            Err(e) => panic!("{name}: {e:?}"),
        }
    }
    assert!(formatted > 150, "only {formatted} configs formatted");
}

const MESSY: &str = "// the workers\nworker \"w1\"  password=(secret)\"pw\" ; worker \"w2\" password=(secret)\"pw\"\n\n\n\nbuilder \"b\"{\n  workers \"w1\" \"w2\" // both\n  steps {\n      shell \"make\"   /-name=\"old\"\n  }\n}\n";

const CANONICAL: &str = "// the workers\nworker \"w1\" password=(secret)\"pw\"\nworker \"w2\" password=(secret)\"pw\"\n\nbuilder \"b\" {\n    workers \"w1\" \"w2\" // both\n    steps {\n        shell \"make\" /-name=\"old\"\n    }\n}\n";

#[test]
fn fmt_rewrites_files_in_place_and_keeps_comments() {
    let dir = temp_dir("fmt-write");
    let f = dir.join("master.kdl");
    std::fs::write(&f, MESSY).unwrap_or_else(|e| panic!("{e}"));
    let path = f.to_string_lossy().into_owned();
    let o = run(&["fmt", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("formatted"), "{}", stderr(&o));
    assert_eq!(read(&f), CANONICAL);
    // Already canonical: nothing to do, nothing said.
    let o = run(&["fmt", &path]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o), "");
    assert_eq!(read(&f), CANONICAL);
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn check_prints_a_diff_and_changes_nothing() {
    let dir = temp_dir("fmt-check");
    let messy = dir.join("messy.kdl");
    let clean = dir.join("clean.kdl");
    std::fs::write(&messy, MESSY).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&clean, CANONICAL).unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["fmt", "--check", &dir.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("messy.kdl (formatted)"), "{out}");
    assert!(out.contains("-  workers \"w1\" \"w2\" // both"), "{out}");
    assert!(out.contains("+    workers \"w1\" \"w2\" // both"), "{out}");
    assert!(!out.contains("clean.kdl"), "{out}");
    assert!(
        stderr(&o).contains("1 of 2 files are not formatted"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read(&messy), MESSY, "--check must not write");
    let o = run(&["fmt", "--check", &clean.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn syntax_errors_leave_the_file_alone() {
    let dir = temp_dir("fmt-bad");
    let f = dir.join("bad.kdl");
    let bad = "builder \"b {\n    workers \"w\"\n}\n";
    std::fs::write(&f, bad).unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["fmt", &f.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("E0001") && err.contains("unterminated string"),
        "{err}"
    );
    assert!(err.contains("not formatted"), "{err}");
    assert_eq!(read(&f), bad);
    let o = run(&["fmt", "does/not/exist.kdl"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn stdin_to_stdout() {
    let mut child = bbc()
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut i) = child.stdin.take() {
        i.write_all(MESSY.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), CANONICAL);
}

#[test]
fn formatted_config_compiles_to_the_same_graph() {
    // The strongest form of "meaning kept": the lowered graph is identical.
    for name in ["examples/production.kdl", "examples/multi-platform.kdl"] {
        let dir = temp_dir(&format!("fmt-graph-{}", name.replace('/', "-")));
        let src = root().join(name);
        let messy: String = read(&src)
            .lines()
            .map(|l| {
                let indent = l.len() - l.trim_start().len();
                format!("{}{}\n", " ".repeat(indent / 2), l.trim_start())
            })
            .collect();
        // Keep relative imports working: copy the example's directory.
        let copy = dir.join(src.file_name().unwrap_or_default());
        std::fs::write(&copy, &messy).unwrap_or_else(|e| panic!("{e}"));
        if name.contains("production") {
            let comp = dir.join("production");
            std::fs::create_dir_all(&comp).unwrap_or_else(|e| panic!("{e}"));
            std::fs::copy(
                root().join("examples/production/components.kdl"),
                comp.join("components.kdl"),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let copy = copy.to_string_lossy().into_owned();
        let before = run(&["compile", &copy]);
        assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
        let o = run(&["fmt", &copy]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(read(std::path::Path::new(&copy)), read(&src), "{name}");
        let after = run(&["compile", &copy]);
        assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
        // Spans are not in the graph, so the bytes must match exactly.
        assert_eq!(stdout(&before), stdout(&after), "{name}: graph changed");
    }
}
