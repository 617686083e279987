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

/// Every golden case at once (every diagnostic code the suite knows, with
/// related locations), as SARIF: valid against the SARIF 2.1.0 schema
/// (validated by Python's `jsonschema`; `BBC_REQUIRE_JSONSCHEMA=1`, set by
/// `.ci/run`, makes its absence a failure), and the same findings, at the
/// same places, as `--format json`.
#[test]
fn sarif_output_is_valid_sarif_2_1_0_and_says_what_json_says() {
    use std::io::Write;
    let mut cases: Vec<String> = std::fs::read_dir("tests/golden")
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".kdl"))
        .collect();
    cases.sort();
    let mut args = vec!["check", "--format", "sarif"];
    args.extend(cases.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "golden cases have errors");
    let sarif: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    args[2] = "json";
    let j = run(&args);
    let json: serde_json::Value =
        serde_json::from_slice(&j.stdout).unwrap_or_else(|e| panic!("{e}"));

    // The same findings in the same order: code, level, file, place.
    let results = sarif["runs"][0]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let diags = json["diagnostics"].as_array().cloned().unwrap_or_default();
    assert!(diags.len() > 150, "{} diagnostics", diags.len());
    assert_eq!(results.len(), diags.len());
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut related = 0;
    for (r, d) in results.iter().zip(&diags) {
        assert_eq!(r["ruleId"], d["code"]);
        let rule = &rules[r["ruleIndex"].as_u64().unwrap_or(u64::MAX) as usize];
        assert_eq!(rule["id"], d["code"]);
        assert_eq!(rule["name"], d["name"]);
        assert_eq!(r["level"], d["severity"]);
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], d["file"]);
        assert_eq!(loc["region"]["startLine"], d["line"]);
        assert_eq!(loc["region"]["startColumn"], d["column"]);
        assert_eq!(loc["region"]["endLine"], d["end_line"]);
        assert_eq!(loc["region"]["endColumn"], d["end_column"]);
        let text = r["message"]["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(d["message"].as_str().unwrap_or("?")),
            "{text}"
        );
        let n = r["relatedLocations"].as_array().map_or(0, Vec::len);
        assert_eq!(n + 1, d["labels"].as_array().map_or(0, Vec::len));
        related += n;
    }
    assert!(related > 0, "some golden case has a related location");
    // Each rule carries `bbc explain`'s text.
    let e0101 = rules.iter().find(|r| r["id"] == "E0101");
    let help = e0101.map(|r| r["help"]["markdown"].to_string());
    assert!(help.is_some_and(|h| h.contains("## E0101")));

    let have = std::process::Command::new("python3")
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        if std::env::var("BBC_REQUIRE_JSONSCHEMA").is_ok_and(|v| v == "1") {
            panic!("BBC_REQUIRE_JSONSCHEMA=1 but python3 cannot import jsonschema (python3 -m pip install jsonschema)");
        }
        eprintln!("skipped the SARIF schema validation: python3 cannot import jsonschema");
        return;
    }
    let validate = |doc: &[u8]| {
        let mut child = std::process::Command::new("python3")
            .args([
                "tests/fixtures/sarif/validate.py",
                "tests/fixtures/sarif/sarif-schema-2.1.0.json",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(mut i) = child.stdin.take() {
            i.write_all(doc).unwrap_or_else(|e| panic!("{e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
    };
    let v = validate(&o.stdout);
    assert!(v.status.success(), "not valid SARIF: {}", stdout(&v));
    // The validator does refuse what breaks the schema.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    let v = validate(broken.to_string().as_bytes());
    assert!(!v.status.success(), "the validator accepted a wrong level");
    // A clean config is a run without results.
    let o = run(&["check", "--format", "sarif", "examples/hello.kdl"]);
    assert_eq!(o.status.code(), Some(0));
    let v = validate(&o.stdout);
    assert!(v.status.success(), "{}", stdout(&v));
}
