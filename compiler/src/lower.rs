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
    let mut master = m.master;
    master.access.roles = m.roles.into_iter().map(|d| d.item).collect();
    master.access.users = m.users.into_iter().map(|d| d.item).collect();
    // Sorted by name, like every entity list, so lookups can bisect.
    master.access.roles.sort_by(|a, b| a.name.cmp(&b.name));
    master.access.users.sort_by(|a, b| a.name.cmp(&b.name));
    let mut g = Graph {
        format: FORMAT.to_string(),
        version: VERSION,
        master,
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

    /// Three builders whose steps share long warning patterns, as in issue
    /// 12's production config; `edit` changes the text of the config.
    fn patterns_graph(edit: impl Fn(String) -> String) -> crate::graph::Graph {
        let pattern =
            |k: usize| format!("(?im)^tool-{k}: (?:warning|note)[: ]+[a-z_]+ at line [0-9]+");
        let mut src = String::from("worker \"w\" password=(secret)\"w\"\n");
        for b in 0..3 {
            src.push_str(&format!(
                "builder \"b{b}\" {{\n    workers \"w\"\n    steps {{\n"
            ));
            if b == 1 {
                // A secret in `env`: part of the builder's hash (its name).
                src = src.replacen(
                    "builder \"b1\" {\n",
                    "builder \"b1\" {\n    env { T (secret)\"t\"; }\n",
                    1,
                );
            }
            for k in 0..3 {
                src.push_str(&format!(
                    "        compile \"make {k}\" name=\"s{k}\" warning-pattern=\"{}\"\n",
                    pattern(k)
                ));
            }
            src.push_str("    }\n}\n");
        }
        let c = crate::compile_source("t.kdl", edit(src));
        match c.graph {
            Some(g) => g,
            None => panic!("does not compile: {:?}", c.diagnostics),
        }
    }

    #[test]
    fn a_builder_hash_changes_with_one_character_of_one_step_and_only_its_own() {
        let g = patterns_graph(|s| s);
        assert_eq!(verify_hashes(&g), Ok(()));
        // Identical steps (the same pattern in every builder) hash the
        // same; the builders differ by name, so their hashes do not.
        assert_eq!(g.builders[0].steps[1].hash, g.builders[2].steps[1].hash);
        assert_ne!(g.builders[0].hash, g.builders[2].hash);
        // One character of one step's pattern in builder b1.
        let e = patterns_graph(|s| {
            let at = s.find("builder \"b1\"").unwrap_or(0);
            let (head, tail) = s.split_at(at);
            format!("{head}{}", tail.replacen("tool-2: ", "tool-2; ", 1))
        });
        assert_eq!(verify_hashes(&e), Ok(()));
        for (i, (old, new)) in g.builders.iter().zip(&e.builders).enumerate() {
            assert_eq!(old.name, new.name);
            if i == 1 {
                assert_ne!(old.hash, new.hash, "the edited builder's hash changes");
                assert_ne!(old.steps[2].hash, new.steps[2].hash, "so does its step's");
                assert_eq!(old.steps[0].hash, new.steps[0].hash);
                assert_eq!(old.steps[1].hash, new.steps[1].hash);
            } else {
                assert_eq!(old, new, "builder {} is untouched", old.name);
            }
        }
        assert_eq!(g.workers, e.workers);
        assert_ne!(graph_hash(&g), graph_hash(&e));
        // A step edited in a graph from outside is caught on the builder,
        // whether or not its recorded hash was updated, and whatever it is.
        let mut stale = g.clone();
        if let bbc_graph::StepKind::Compile {
            warning_pattern: Some(p),
            ..
        } = &mut stale.builders[1].steps[2].kind
        {
            *p = format!("{p}x").into();
        } else {
            panic!("not a compile step with a pattern")
        }
        let err = verify_hashes(&stale).err().unwrap_or_default();
        assert!(
            err.contains("builder `b1`") && err.contains("1 content hash"),
            "{err}"
        );
        let mut rehashed = stale.clone();
        let st = &mut rehashed.builders[1].steps[2];
        st.hash.clear();
        st.hash = bbc_graph::hash::content_hash(&*st);
        let err = verify_hashes(&rehashed).err().unwrap_or_default();
        assert!(
            err.contains("builder `b1`"),
            "the builder's hash covers it: {err}"
        );
    }

    /// The builder hash is what docs/graph.md says: SHA-256 (16 bytes, hex)
    /// of the builder's compact JSON with each step replaced by its hash
    /// and `hash` empty.
    #[test]
    fn a_builder_hash_is_taken_over_its_step_hashes() {
        use sha2::{Digest, Sha256};
        let g = patterns_graph(|s| s);
        for b in &g.builders {
            let mut shell = b.clone();
            shell.steps.clear();
            shell.hash.clear();
            let json = serde_json::to_string(&shell).unwrap_or_default();
            let steps: Vec<String> = b.steps.iter().map(|s| format!("\"{}\"", s.hash)).collect();
            let json = json.replacen(
                "\"steps\":[]",
                &format!("\"steps\":[{}]", steps.join(",")),
                1,
            );
            assert!(json.contains(&b.steps[0].hash));
            let digest = Sha256::digest(json.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(b.hash, hex, "builder {}", b.name);
        }
    }

    /// Step hashes are remembered by content within one compilation
    /// (`bbc_graph::hash::set_hashes`): steps that share a long pattern but
    /// differ elsewhere, or share everything but the pattern, or differ
    /// only in being a `test` rather than a `shell` step, each get the hash
    /// of their own serialisation.
    #[test]
    fn remembered_step_hashes_are_each_steps_own() {
        let long = |k: usize| format!("(?m)^(?:{}) warning {k}", "gcc|clang|rustc|javac".repeat(5));
        let mut src = String::from("worker \"w\" password=(secret)\"w\"\n");
        for b in 0..4 {
            src.push_str(&format!(
                "builder \"b{b}\" {{\n    workers \"w\"\n    steps {{\n"
            ));
            for (k, kind) in ["shell", "test", "shell", "compile"].iter().enumerate() {
                src.push_str(&format!(
                    "        {kind} \"make {}\" name=\"s{k}\" warning-pattern=\"{}\"\n",
                    k % 2,
                    long((b + k) % 3)
                ));
            }
            src.push_str("        compile \"make\" name=\"short\"\n    }\n}\n");
        }
        let c = crate::compile_source("t.kdl", src);
        let g = c.graph.unwrap_or_else(|| panic!("{:?}", c.diagnostics));
        assert_eq!(verify_hashes(&g), Ok(()));
        let mut distinct = std::collections::BTreeSet::new();
        for b in &g.builders {
            for st in &b.steps {
                let mut fresh = st.clone();
                fresh.hash.clear();
                assert_eq!(
                    st.hash,
                    bbc_graph::hash::content_hash(&fresh),
                    "{} {}",
                    b.name,
                    st.name
                );
                distinct.insert(st.hash.clone());
            }
        }
        // 4 positions × 3 patterns met in 4 builders, and the short step.
        assert_eq!(distinct.len(), 4 * 3 + 1, "{distinct:?}");
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
