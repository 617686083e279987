//! The KDL examples in the documentation are real: every block parses, and
//! blocks made of entities or steps use only names the compiler accepts.

use bbc_compiler::diagnostic::Code;

use crate::common::{files, root};

const ENTITIES: &[&str] = &[
    "master",
    "worker",
    "lock",
    "change-source",
    "scheduler",
    "builder",
    "reporter",
];
const STEPS: &[&str] = &[
    "shell",
    "compile",
    "test",
    "git",
    "upload",
    "download",
    "trigger",
    "set-property",
    "master-shell",
];

/// Mistakes in the words of the language (as opposed to a fragment that
/// refers to entities it does not define).
fn is_schema_error(c: Code) -> bool {
    !matches!(
        c,
        Code::UnknownReference
            | Code::WrongReferenceKind
            | Code::MissingValue
            | Code::UnknownBuildProperty
            | Code::Cycle
            | Code::NotYetSupported
    ) && c.severity() == bbc_compiler::diagnostic::Severity::Error
}

fn kdl_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut cur {
            None if line.trim_start().starts_with("```kdl") => cur = Some((i + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some((_, s)) => {
                s.push_str(line);
                s.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn documented_kdl_is_real() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in files(&root().join("docs"), "md")
        .into_iter()
        .chain([root().join("README.md")])
    {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let name = doc
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        // Its examples are wrong on purpose; they are golden cases.
        if name == "diagnostics.md" {
            continue;
        }
        for (line, block) in kdl_blocks(&text) {
            checked += 1;
            let (tree, errors) = bbc_compiler::syntax::parse(&block);
            if let Some(e) = errors.first() {
                problems.push(format!("{name}:{line}: not KDL: {}", e.message));
                continue;
            }
            let tops: Vec<&str> = tree.nodes.iter().map(|n| n.name.value.as_str()).collect();
            let source = if tops.iter().all(|t| ENTITIES.contains(t)) {
                block.clone()
            } else if tops.iter().all(|t| STEPS.contains(t)) {
                format!("builder \"doc\" {{\nworkers \"w\"\nsteps {{\n{block}}}\n}}\n")
            } else {
                continue;
            };
            let c = bbc_compiler::compile_source(&format!("{name}:{line}"), source);
            for d in &c.diagnostics {
                if is_schema_error(d.code) {
                    problems.push(format!("{name}:{line}: {} {}", d.code.as_str(), d.message));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "expected KDL examples in the docs, found {checked}"
    );
    assert!(
        problems.is_empty(),
        "documentation examples the compiler rejects:\n{}",
        problems.join("\n")
    );
}

/// Every stdlib template has a reference entry: docs/language.md names the
/// template and each of its parameters.
#[test]
fn stdlib_templates_are_documented() {
    let doc = std::fs::read_to_string(root().join("docs/language.md")).unwrap_or_default();
    let mut missing = Vec::new();
    let mut count = 0;
    for f in files(&root().join("stdlib"), "kdl") {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let (tree, errors) = bbc_compiler::syntax::parse(&text);
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
        for t in tree.nodes.iter().filter(|n| n.name.value == "template") {
            let Some(bbc_compiler::syntax::Value::String(name)) =
                t.entries.first().map(|e| &e.value)
            else {
                continue;
            };
            count += 1;
            let Some(at) = doc.find(&format!("`{name}`")) else {
                missing.push(format!("template `{name}`"));
                continue;
            };
            let params = t
                .children
                .iter()
                .flat_map(|c| c.nodes.iter())
                .filter(|n| n.name.value == "param");
            for p in params {
                if let Some(bbc_compiler::syntax::Value::String(pn)) =
                    p.entries.first().map(|e| &e.value)
                {
                    if !doc[at..].contains(&**pn) {
                        missing.push(format!("parameter `{pn}` of `{name}`"));
                    }
                }
            }
        }
    }
    assert!(count >= 10, "expected stdlib templates, found {count}");
    assert!(missing.is_empty(), "docs/language.md lacks: {missing:?}");
}
