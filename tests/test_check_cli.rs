//! `bbc check`, `bbc compile`, `bbc graph` and `bbc explain` as a user runs them.

use crate::common::{run, stderr, stdout, temp_dir};

#[test]
fn clean_config_exits_zero() {
    let o = run(&["check", "examples/hello.kdl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("examples/hello.kdl: ok"));
}

#[test]
fn errors_exit_one_and_are_all_reported() {
    let dir = temp_dir("errors");
    let f = dir.join("bad.kdl");
    std::fs::write(
        &f,
        "worker \"w\" password=(secret)\"w\" max-bilds=2\nbuilder \"b\" {\n    workers \"w2\"\n    steps { shel \"make\" }\n}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = f.to_string_lossy().into_owned();
    let o = run(&["check", &path]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("E0102"), "{out}");
    assert!(out.contains("did you mean `max-builds`?"), "{out}");
    assert!(out.contains("E0201"), "{out}");
    assert!(out.contains("E0101"), "{out}");
    assert!(out.contains("3 errors"), "{out}");
}

#[test]
fn missing_file_exits_two() {
    let o = run(&["check", "does/not/exist.kdl"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["check"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    let o = run(&["check", "--format", "yaml", "examples/hello.kdl"]);
    assert_eq!(o.status.code(), Some(2), "bad flag value");
}

#[test]
fn json_output_follows_the_schema() {
    let dir = temp_dir("json");
    let f = dir.join("c.kdl");
    std::fs::write(&f, "worker \"w\" password=\"hunter2\"\n").unwrap_or_else(|e| panic!("{e}"));
    let path = f.to_string_lossy().into_owned();
    let o = run(&["check", "--format", "json", &path]);
    assert_eq!(o.status.code(), Some(0), "warnings alone do not fail");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], true);
    let diags = v["diagnostics"].as_array().cloned().unwrap_or_default();
    let plain = diags
        .iter()
        .find(|d| d["code"] == "W0504")
        .unwrap_or_else(|| panic!("no W0504 in {v}"));
    assert_eq!(plain["severity"], "warning");
    assert_eq!(plain["name"], "plain-secret");
    assert_eq!(plain["line"], 1);
    assert_eq!(plain["column"], 21);
    assert_eq!(plain["span"]["start"], 20);
    assert_eq!(plain["span"]["end"], 29);
    assert!(plain["help"]
        .as_str()
        .is_some_and(|h| h.contains("(secret)")));
    assert_eq!(plain["labels"][0]["primary"], true);

    let o = run(&["check", "--format", "json", "--deny", "warnings", &path]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "--deny warnings fails on warnings"
    );
}

#[test]
fn github_annotations() {
    let dir = temp_dir("github");
    let f = dir.join("c.kdl");
    std::fs::write(
        &f,
        "builder \"b\" {\n    workers \"nope\"\n    steps { shell \"true\" }\n}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = f.to_string_lossy().into_owned();
    let o = run(&["check", "--format", "github", &path]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.contains("E0201"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("::error file="), "{line}");
    assert!(line.contains(",line=2,col=13,"), "{line}");
    assert!(line.contains("unknown worker `nope`"), "{line}");
}

#[test]
fn compile_writes_the_graph_and_refuses_broken_configs() {
    let dir = temp_dir("compile");
    let out = dir.join("graph.json");
    let out_s = out.to_string_lossy().into_owned();
    let o = run(&["compile", "examples/multi-platform.kdl", "-o", &out_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let g = bbc_compiler::graph::Graph::from_json(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.version, bbc_compiler::graph::VERSION);
    // The secret is a reference, never a value.
    assert!(text.contains("\"secret\": \"gitea-token\""));

    let bad = dir.join("bad.kdl");
    std::fs::write(&bad, "builder \"b\" {}\n").unwrap_or_else(|e| panic!("{e}"));
    let o = run(&["compile", &bad.to_string_lossy(), "-o", &out_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("E0104"), "{}", stderr(&o));
}

#[test]
fn graph_draws_the_flow() {
    let o = run(&["graph", "examples/multi-platform.kdl"]);
    assert_eq!(o.status.code(), Some(0));
    let dot = stdout(&o);
    assert!(dot.starts_with("digraph bbc {"));
    assert!(dot.contains("\"cs:widget\" -> \"s:main\""), "{dot}");
    assert!(dot.contains("\"s:main\" -> \"b:linux\""), "{dot}");
    assert!(dot.contains("\"b:linux\" -> \"s:package\""), "{dot}");
    assert!(
        dot.contains("\"s:main\" -> \"s:docs-after-linux\""),
        "{dot}"
    );
    // A two-line label: DOT's `\n` escape, one backslash (two would draw
    // a literal backslash and n).
    assert!(
        dot.contains("[label=\"main\\n(single-branch)\" shape=ellipse]"),
        "{dot}"
    );
}

#[test]
fn explain_knows_every_code() {
    for c in bbc_compiler::diagnostic::Code::ALL {
        let o = run(&["explain", c.as_str()]);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains(c.summary()));
    }
    let o = run(&["explain", "E9999"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn diff_shows_what_changes_entity_by_entity() {
    let dir = temp_dir("diff");
    let old = std::fs::read_to_string("examples/multi-platform.kdl").unwrap_or_default();
    let new = old
        .replace(
            "shell \"cargo clippy -- -D warnings\" name=\"clippy\"",
            "shell \"cargo clippy --all -- -D warnings\" name=\"clippy\"",
        )
        .replace(
            "worker \"win-1\" password=(secret)\"win-1\" {",
            "worker \"win-1\" password=(secret)\"win-1\" max-builds=3 {",
        )
        .replace(
            "reporter \"push\" kind=\"http\" {",
            "reporter \"push2\" kind=\"http\" {",
        );
    let (a, b) = (dir.join("old.kdl"), dir.join("new.kdl"));
    std::fs::write(&a, &old).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&b, &new).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (
        a.to_string_lossy().into_owned(),
        b.to_string_lossy().into_owned(),
    );
    let o = run(&["diff", &a, &b]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("~ builder linux (steps)\n    step ~clippy\n"),
        "{out}"
    );
    assert!(out.contains("~ worker win-1 (max_builds)"), "{out}");
    assert!(
        out.contains("+ reporter push2") && out.contains("- reporter push\n"),
        "{out}"
    );
    assert!(out.contains("1 added, 2 changed, 1 removed"), "{out}");
    let o = run(&["diff", &a, &a]);
    assert_eq!(stdout(&o), "no changes\n");
    let o = run(&["diff", "--format", "json", &a, &b]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    assert_eq!(v["changes"].as_array().map(Vec::len), Some(4), "{v}");
}

#[test]
fn list_shows_expanded_entities() {
    let o = run(&["list", "builders", "examples/large.kdl", "--tag", "core"]);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.lines().all(|l| l.starts_with("core-")), "{out}");
    let o = run(&["list", "workers", "examples/large.kdl"]);
    assert_eq!(stdout(&o).lines().count(), 11);
    let o = run(&["explain", "E0105"]);
    assert!(
        stdout(&o).contains("Example (`tests/golden/duplicate_builder.kdl`)"),
        "{}",
        stdout(&o)
    );
}
