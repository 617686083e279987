//! The runtime's unit tests read precompiled graphs
//! (`runtime/tests/graphs/NAME.json`) because the runtime must not depend on
//! the compiler. This test keeps them honest: each `.json` must be exactly
//! what compiling its `.kdl` gives today. `BBC_BLESS=1` rewrites them.

use crate::common::{files, root};

#[test]
fn runtime_graph_fixtures_match_their_kdl() {
    let dir = root().join("runtime/tests/graphs");
    let bless = std::env::var_os("BBC_BLESS").is_some();
    let mut stale = Vec::new();
    let kdl = files(&dir, "kdl");
    assert!(!kdl.is_empty(), "no fixtures in {}", dir.display());
    for src in kdl {
        let c = bbc_compiler::compile(&src.to_string_lossy(), &bbc_compiler::source::DiskSources);
        assert_eq!(c.errors(), 0, "{}: {:?}", src.display(), c.diagnostics);
        let fresh = match &c.graph {
            Some(g) => g.to_json(),
            None => panic!("{}: no graph", src.display()),
        };
        let json = src.with_extension("json");
        let stored = std::fs::read_to_string(&json).unwrap_or_default();
        if stored == fresh {
            continue;
        }
        if bless {
            std::fs::write(&json, &fresh)
                .unwrap_or_else(|e| panic!("write {}: {e}", json.display()));
        } else {
            stale.push(json.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run with BBC_BLESS=1 to rewrite): {stale:?}"
    );
}
