//! `bbc graph --format dot`: a Graphviz drawing of how work flows through
//! a config, change sources → schedulers → builders → triggered schedulers.

use bbc_compiler::graph::{Graph, SchedulerKind, StepKind};

/// A quoted DOT string: backslashes and quotes in names are escaped.
fn q(s: &str) -> String {
    lines(&[s])
}

/// A quoted DOT label of several lines. The line break `\n` is DOT's own
/// escape, so it is added between the escaped lines, never escaped itself
/// (Graphviz would draw a literal `\n`).
fn lines(parts: &[&str]) -> String {
    let escaped: Vec<String> = parts
        .iter()
        .map(|p| p.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

/// Graphviz drawing of how work flows through the config.
pub fn dot(g: &Graph) -> String {
    let mut s = String::from("digraph bbc {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    for c in &g.change_sources {
        s.push_str(&format!(
            "  {} [label={} shape=cds];\n",
            q(&format!("cs:{}", c.name)),
            q(&c.name)
        ));
    }
    for sc in &g.schedulers {
        s.push_str(&format!(
            "  {} [label={} shape=ellipse];\n",
            q(&format!("s:{}", sc.name)),
            lines(&[&sc.name, &format!("({})", sc.kind.name())])
        ));
    }
    for b in &g.builders {
        s.push_str(&format!(
            "  {} [label={} shape=box];\n",
            q(&format!("b:{}", b.name)),
            q(&b.name)
        ));
    }
    for sc in &g.schedulers {
        let filter = match &sc.kind {
            SchedulerKind::SingleBranch { filter, .. }
            | SchedulerKind::AnyBranch { filter, .. } => Some(filter),
            SchedulerKind::Nightly {
                filter,
                only_if_changed: true,
                ..
            } => Some(filter),
            _ => None,
        };
        if let Some(f) = filter {
            for c in &g.change_sources {
                if f.change_sources.is_empty() || f.change_sources.contains(&c.name) {
                    s.push_str(&format!(
                        "  {} -> {};\n",
                        q(&format!("cs:{}", c.name)),
                        q(&format!("s:{}", sc.name))
                    ));
                }
            }
        }
        if let SchedulerKind::Dependent { upstream } = &sc.kind {
            s.push_str(&format!(
                "  {} -> {} [style=dashed label=\"after\"];\n",
                q(&format!("s:{upstream}")),
                q(&format!("s:{}", sc.name))
            ));
        }
        for b in &sc.builders {
            s.push_str(&format!(
                "  {} -> {};\n",
                q(&format!("s:{}", sc.name)),
                q(&format!("b:{b}"))
            ));
        }
    }
    for b in &g.builders {
        for st in &b.steps {
            if let StepKind::Trigger {
                schedulers, wait, ..
            } = &st.kind
            {
                for t in schedulers {
                    s.push_str(&format!(
                        "  {} -> {} [label={}{}];\n",
                        q(&format!("b:{}", b.name)),
                        q(&format!("s:{t}")),
                        q(&st.name),
                        if *wait { " style=bold" } else { "" }
                    ));
                }
            }
        }
    }
    s.push_str("}\n");
    s
}
