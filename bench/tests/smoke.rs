//! The benchmarks still run: the shape they generate is a valid config and
//! `check` measures it in a child process. (The runtime benches need a
//! built `bbc` beside `bbc-bench` and a minute; docs/perf.md runs them.)

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bbc-bench"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bbc-bench: {e}"))
}

#[test]
fn generated_shape_compiles_clean() {
    let o = bench(&["generate", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let c = bbc_compiler::compile_source("bench.kdl", text);
    assert_eq!(c.errors(), 0, "{:?}", c.diagnostics);
    assert_eq!(c.graph.map(|g| g.builders.len()), Some(3));
}

#[test]
fn check_prints_a_row_per_size() {
    let o = bench(&["check", "--sizes", "2,5", "--runs", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\n| 2 | "), "{out}");
    assert!(out.contains("\n| 5 | "), "{out}");
}
