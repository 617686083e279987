//! Precompiled graphs for the unit tests: the runtime never compiles KDL,
//! not even in its tests, so they read the JSON `bbc compile` wrote for each
//! `runtime/tests/graphs/NAME.kdl`. The integration test
//! `tests/test_graph_fixtures.rs` recompiles every one and fails when a
//! `.json` no longer matches its `.kdl` (`BBC_BLESS=1` rewrites them).

/// The graph of fixture `NAME` (`runtime/tests/graphs/NAME.json`), embedded
/// at compile time.
macro_rules! fixture {
    ($name:literal) => {
        $crate::fixtures::parse(
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/graphs/",
                $name,
                ".json"
            )),
        )
    };
}

pub fn parse(name: &str, json: &str) -> bbc_graph::Graph {
    bbc_graph::Graph::from_json(json).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
