//! Every example config checks clean, compiles deterministically, and its
//! graph survives a round trip through the file format.

use bbc_compiler::graph::{Credential, Graph};

use crate::common::{files, root, run, stdout};

#[test]
fn examples_check_clean_and_compile() {
    let examples = files(&root().join("examples"), "kdl");
    assert!(examples.len() >= 3, "expected at least 3 examples");
    for ex in examples {
        let rel = format!(
            "examples/{}",
            ex.file_name().and_then(|s| s.to_str()).unwrap_or("?")
        );
        let c = bbc_compiler::compile(&rel, &bbc_compiler::source::DiskSources);
        let rendered: Vec<String> = c
            .diagnostics
            .iter()
            .map(|d| {
                bbc_compiler::render::human(
                    &c.sources,
                    d,
                    bbc_compiler::render::HumanOptions {
                        color: false,
                        width: 100,
                    },
                )
            })
            .collect();
        assert!(
            c.diagnostics.is_empty(),
            "{rel} is not clean:\n{}",
            rendered.join("\n")
        );
        let g = c.graph.unwrap_or_else(|| panic!("{rel}: no graph"));
        assert!(!g.builders.is_empty());
        // Every entity carries a content hash.
        assert!(g
            .builders
            .iter()
            .all(|b| b.hash.len() == 32 && b.steps.iter().all(|s| s.hash.len() == 32)));
        assert!(g.workers.iter().all(|w| w.hash.len() == 32));
        let json = g.to_json();
        let back = Graph::from_json(&json).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(back, g, "{rel}: graph changed in a round trip");
        // Secrets stay references.
        assert!(
            g.workers
                .iter()
                .all(|w| matches!(w.password, Credential::Secret { .. })),
            "{rel}: a worker password is not a secret reference"
        );

        // Same bytes from the CLI, twice.
        let a = run(&["compile", &rel]);
        let b = run(&["compile", &rel]);
        assert!(a.status.success(), "bbc compile {rel} failed");
        assert_eq!(stdout(&a), stdout(&b), "{rel}: output is not deterministic");
        assert_eq!(stdout(&a), json);
    }
}

#[test]
fn large_example_routes_by_tag() {
    let c = bbc_compiler::compile("examples/large.kdl", &bbc_compiler::source::DiskSources);
    let g = c
        .graph
        .unwrap_or_else(|| panic!("large.kdl does not compile"));
    assert_eq!(g.builders.len(), 41);
    let force = g
        .scheduler("force")
        .unwrap_or_else(|| panic!("no force scheduler"));
    assert_eq!(
        force.builders.len(),
        40,
        "force selects every component builder by tag"
    );
    let gh = g
        .reporters
        .iter()
        .find(|r| r.name == "github")
        .unwrap_or_else(|| panic!("no github reporter"));
    assert_eq!(gh.builders.len(), 40);
    let core = g
        .scheduler("core-main")
        .unwrap_or_else(|| panic!("no core-main"));
    assert_eq!(core.builders.len(), 5);
    assert!(core.builders.iter().all(|b| b.starts_with("core-")));
}
