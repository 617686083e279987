//! Lowering: checked model → [`Graph`].
//!
//! Resolves tag selectors to builder names, sorts every entity list by
//! name and stamps each entity with the content hash of its definition.

use crate::check::Index;
use crate::decode::Model;
use crate::graph::*;

pub fn lower(m: Model) -> Graph {
    let ix = Index::new(&m);
    let scheduler_builders: Vec<Vec<String>> = ix
        .selected
        .iter()
        .map(|sel| Index::names(&m, sel))
        .collect();
    let all: Vec<String> = {
        let mut v: Vec<String> = m.builders.iter().map(|b| b.item.name.clone()).collect();
        v.sort();
        v
    };
    let reporter_builders: Vec<Vec<String>> = m
        .reporters
        .iter()
        .map(|d| {
            if d.selector.given {
                Index::names(&m, &ix.resolve(&m, &d.selector))
            } else {
                // No selector: a reporter reports every builder.
                all.clone()
            }
        })
        .collect();
    drop(ix);
    let mut g = Graph {
        format: FORMAT.to_string(),
        version: VERSION,
        master: m.master,
        workers: m.workers.into_iter().map(|d| d.item).collect(),
        locks: m.locks.into_iter().map(|d| d.item).collect(),
        change_sources: m.change_sources.into_iter().map(|d| d.item).collect(),
        schedulers: m
            .schedulers
            .into_iter()
            .zip(scheduler_builders)
            .map(|(d, builders)| Scheduler { builders, ..d.item })
            .collect(),
        builders: m.builders.into_iter().map(|d| d.item).collect(),
        reporters: m
            .reporters
            .into_iter()
            .zip(reporter_builders)
            .map(|(d, builders)| Reporter { builders, ..d.item })
            .collect(),
    };
    g.workers.sort_by(|a, b| a.name.cmp(&b.name));
    g.locks.sort_by(|a, b| a.name.cmp(&b.name));
    g.change_sources.sort_by(|a, b| a.name.cmp(&b.name));
    g.schedulers.sort_by(|a, b| a.name.cmp(&b.name));
    g.builders.sort_by(|a, b| a.name.cmp(&b.name));
    g.reporters.sort_by(|a, b| a.name.cmp(&b.name));

    bbc_graph::hash::set_hashes(&mut g);
    g
}

#[cfg(test)]
mod tests {
    use bbc_graph::hash::{graph_hash, verify_hashes};

    fn graph() -> crate::graph::Graph {
        let c = crate::compile_source(
            "t.kdl",
            "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {\n    builders \"b\"\n}\nbuilder \"b\" {\n    workers \"w\"\n    steps {\n        shell \"make\" name=\"m\"\n    }\n}\n",
        );
        match c.graph {
            Some(g) => g,
            None => panic!("does not compile: {:?}", c.diagnostics),
        }
    }

    #[test]
    fn compiled_graphs_verify_and_edits_are_caught() {
        let g = graph();
        assert_eq!(verify_hashes(&g), Ok(()));
        let mut edited = g.clone();
        edited.builders[0].steps[0].halt_on_failure = !edited.builders[0].steps[0].halt_on_failure;
        let err = verify_hashes(&edited).err().unwrap_or_default();
        assert!(err.contains("builder `b`"), "{err}");
        let mut renamed = g.clone();
        renamed.workers[0].max_builds += 1;
        let err = verify_hashes(&renamed).err().unwrap_or_default();
        assert!(
            err.contains("worker `w`") && err.contains("1 content hash"),
            "{err}"
        );
    }

    #[test]
    fn the_graph_hash_follows_every_entity() {
        let g = graph();
        let mut h = g.clone();
        assert_eq!(graph_hash(&g), graph_hash(&h), "deterministic");
        h.schedulers[0].hash = "0".repeat(32);
        assert_ne!(graph_hash(&g), graph_hash(&h));
        let mut v = g.clone();
        v.version += 1;
        assert_ne!(graph_hash(&g), graph_hash(&v));
    }

    /// Expressions the compiler leaves for the run time evaluate as the
    /// language reference says (the evaluator lives in `bbc-graph`).
    fn condition(s: &str) -> bbc_graph::Expr {
        let c = crate::compile_source(
            "t.kdl",
            format!(
                "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {{\n builders \"b\"\n param \"jobs\"\n param \"n\" type=\"int\"\n param \"clean\" type=\"bool\"\n}}\nbuilder \"b\" {{\n workers \"w\"\n steps {{\n shell \"x\" do-step-if=\"{s}\"\n }}\n}}\n"
            ),
        );
        let g = c.graph.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        g.builders[0].steps[0]
            .do_step_if
            .clone()
            .unwrap_or_else(|| panic!("no condition"))
    }

    #[test]
    fn compiled_conditions_evaluate_at_run_time() {
        use bbc_graph::eval::{eval, truthy, Properties};
        use bbc_graph::Scalar;
        let mut p = Properties::new();
        p.insert("branch".into(), Scalar::String("main".into()));
        p.insert("n".into(), Scalar::Int(3));
        p.insert("jobs".into(), Scalar::String("4".into()));
        p.insert("clean".into(), Scalar::Bool(true));
        let t = |s: &str| truthy(&eval(&condition(s), &p));
        assert!(t("${{ prop.branch == 'main' }}"));
        assert!(!t("${{ prop.branch != 'main' }}"));
        assert!(t("${{ prop.n < 10 && prop.n >= 3 }}"));
        assert!(
            t("${{ prop.jobs == 4 }}"),
            "numeric string compares as a number"
        );
        assert!(t("${{ prop.clean == true }}"));
        assert!(t("${{ !(prop.n > 5) || false }}"));
        assert!(!t("${{ prop.reason }}"), "unset is false");
    }

    #[test]
    fn compiled_texts_render_at_run_time() {
        let c = crate::compile_source(
            "t.kdl",
            "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {\n builders \"b\"\n}\nbuilder \"b\" {\n workers \"w\"\n steps {\n shell \"make B=${{ prop.branch }} N=${{ prop.buildnumber }} $HOME\"\n }\n}\n",
        );
        let g = c.graph.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        let bbc_graph::StepKind::Shell {
            command: bbc_graph::Command::Shell(t),
            ..
        } = &g.builders[0].steps[0].kind
        else {
            panic!("not a shell step")
        };
        let mut p = bbc_graph::eval::Properties::new();
        p.insert("branch".into(), bbc_graph::Scalar::String("main".into()));
        assert_eq!(bbc_graph::eval::render(t, &p), "make B=main N= $HOME");
    }
}
