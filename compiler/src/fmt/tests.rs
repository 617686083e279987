use super::{format_source, FormatError};

#[track_caller]
fn fmt(src: &str) -> String {
    match format_source("t.kdl", src) {
        Ok(out) => {
            // Idempotent: the canonical form is its own canonical form.
            match format_source("t.kdl", &out) {
                Ok(again) => assert_eq!(again, out, "second pass changed the output"),
                Err(e) => panic!("second pass failed: {e:?}"),
            }
            out
        }
        Err(e) => panic!("format failed: {e:?}"),
    }
}

#[test]
fn layout_is_canonical() {
    let src = "worker   \"w1\"   password=(secret)\"pw\";worker w2\nbuilder \"b\"{step \"shell\" command=\"make\"\n  step shell command=make  halt-on-failure=#true }\n";
    assert_eq!(
        fmt(src),
        "worker \"w1\" password=(secret)\"pw\"\nworker w2\nbuilder \"b\" {\n    step \"shell\" command=\"make\"\n    step shell command=make halt-on-failure=#true\n}\n"
    );
}

#[test]
fn values_are_kept_as_written() {
    let src = "n 0x1F 1_000 1.5e3 #\"raw \\d\"# #true #null #inf\n";
    assert_eq!(fmt(src), src);
}

#[test]
fn comments_stay_where_they_were() {
    let src = "// header\n\n\n// about a\na 1 // trailing\n/* block */ b\nc { // on the brace line\n    // inside\n    d\n    // last in block\n}\n// at the end\n";
    assert_eq!(
        fmt(src),
        "// header\n\n// about a\na 1 // trailing\n/* block */\nb\nc { // on the brace line\n    // inside\n    d\n    // last in block\n}\n// at the end\n"
    );
}

#[test]
fn trailing_comment_after_a_node_is_kept() {
    // The kdl crate's autoformat dropped this one.
    let src = "builder \"b\" {\n  step \"shell\" command=\"make\" // build it\n}\n";
    assert_eq!(
        fmt(src),
        "builder \"b\" {\n    step \"shell\" command=\"make\" // build it\n}\n"
    );
}

#[test]
fn slashdash_items_are_kept() {
    let src = "/-old-node 1 {\n  x\n}\nn 1 /-2 3 /-key=4\nm /-{ a; b }\np {\n  /-q\n}\n";
    assert_eq!(
        fmt(src),
        "/-old-node 1 {\n    x\n}\nn 1 /-2 3 /-key=4\nm /-{ a; b }\np {\n    /-q\n}\n"
    );
}

#[test]
fn comments_inside_entries_are_kept() {
    let src = "n 1 /* one */ 2 /* two */ { a; }\n";
    assert_eq!(fmt(src), "n 1 /* one */ 2 /* two */ {\n    a\n}\n");
}

#[test]
fn line_continuations_are_kept_and_indented() {
    let src = "builder b {\n  step shell \\\n        command=make \\ // why\n   timeout=10\n}\n";
    assert_eq!(
        fmt(src),
        "builder b {\n    step shell \\\n        command=make \\ // why\n        timeout=10\n}\n"
    );
}

#[test]
fn multi_line_strings_move_with_their_node() {
    let src =
        "b {\n  step shell command=\"\"\"\n    cargo build\n      --release\n\n    \"\"\"\n}\n";
    assert_eq!(
        fmt(src),
        "b {\n    step shell command=\"\"\"\n      cargo build\n        --release\n\n      \"\"\"\n}\n"
    );
    let deeper = "b {\n        step shell command=\"\"\"\n            x\n            \"\"\"\n}\n";
    assert_eq!(
        fmt(deeper),
        "b {\n    step shell command=\"\"\"\n        x\n        \"\"\"\n}\n"
    );
}

#[test]
fn multi_line_comments_move_with_their_node() {
    let src = "b {\n        /* one\n           two */\n        c\n}\n";
    assert_eq!(fmt(src), "b {\n    /* one\n       two */\n    c\n}\n");
}

#[test]
fn tabs_in_multi_line_strings_are_left_alone() {
    let src = "b {\n\tstep shell command=\"\"\"\n\t\tx\n\t\t\"\"\"\n}\n";
    let out = fmt(src);
    assert!(out.contains("\t\tx\n\t\t\"\"\""), "{out}");
}

#[test]
fn blank_lines_are_collapsed_and_dropped_at_block_edges() {
    let src = "\n\na\n\n\n\nb {\n\n  c\n\n  d\n\n}\n\n";
    assert_eq!(fmt(src), "a\n\nb {\n    c\n\n    d\n}\n");
}

#[test]
fn empty_children_and_empty_files() {
    assert_eq!(fmt("n {}\nm {\n}\n"), "n {}\nm {}\n");
    assert_eq!(fmt(""), "");
    assert_eq!(fmt("\n\n"), "");
    assert_eq!(fmt("// only a comment"), "// only a comment\n");
}

#[test]
fn crlf_becomes_lf() {
    assert_eq!(fmt("a 1\r\nb {\r\n  c\r\n}\r\n"), "a 1\nb {\n    c\n}\n");
}

#[test]
fn types_and_quoted_names() {
    let src = "(ty)\"node name\" (u8)1 \"a key\"=(t)#false\n";
    assert_eq!(fmt(src), src);
}

#[test]
fn syntax_errors_are_reported_not_formatted() {
    match format_source("bad.kdl", "a {\n  b \"unterminated\n}\n") {
        Err(FormatError::Syntax { diagnostics, .. }) => assert!(!diagnostics.is_empty()),
        other => panic!("expected syntax errors, got {other:?}"),
    }
}

#[test]
fn every_official_valid_case_keeps_its_meaning() {
    // The official KDL suite exercises every corner of the syntax; each
    // valid input must format (the meaning check inside `format_source`
    // compares the trees) and be idempotent.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/kdl-spec-tests/test_cases/input");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} is not here", dir.display());
        return;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let path = e.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with("_fail.kdl") {
            continue;
        }
        let Ok(src) = std::fs::read_to_string(&path) else {
            continue;
        };
        let out = match format_source(name, &src) {
            Ok(o) => o,
            Err(e) => panic!("{name}: {e:?}"),
        };
        match format_source(name, &out) {
            Ok(again) => assert_eq!(again, out, "{name}: not idempotent"),
            Err(e) => panic!("{name}: second pass: {e:?}"),
        }
        n += 1;
    }
    assert!(n > 100, "only {n} cases");
}
