//! What each kind of node accepts, as the decoders asked for it: the
//! property and child names a [`crate::reader::NodeReader`] was asked for,
//! and the words a value may be (`kind=`, `grant=`, booleans, …).
//!
//! This is the language server's completion table. It is not written by
//! hand: it is recorded while decoding (a side table in `reader::Cx` that
//! exists only when asked for, so `bbc check` pays nothing), so it can never
//! disagree with what "unknown, did you mean" accepts. A node kind is keyed
//! by its name alone: `lock` at the top level and `lock` inside a builder
//! share one entry (the union), which completion can afford.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::syntax::Span;

/// What one node name accepts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeSchema {
    pub props: BTreeSet<&'static str>,
    pub kids: BTreeSet<&'static str>,
}

#[derive(Debug, Default, Clone)]
pub struct Schema {
    /// Node name → what it accepts; `""` is the top level.
    pub nodes: BTreeMap<String, NodeSchema>,
    /// Node name → property name → the words its value may be.
    pub values: BTreeMap<String, BTreeMap<&'static str, BTreeSet<&'static str>>>,
    /// Value words recorded for an entry (by its span) not yet attributed
    /// to a node: `NodeReader::finish` moves them under its node's name.
    pub(crate) pending: HashMap<Span, Vec<&'static str>>,
}

impl Schema {
    /// A table holding what the compiler knows without decoding anything:
    /// the top-level kinds and the step kinds.
    pub fn new() -> Schema {
        let mut s = Schema::default();
        let top = s.nodes.entry(String::new()).or_default();
        top.kids.extend(crate::decode::TOP_LEVEL.iter().copied());
        top.kids.extend(crate::expand::DECLARATIONS.iter().copied());
        let steps = s.nodes.entry("steps".to_string()).or_default();
        steps.kids.extend(crate::decode::STEP_KINDS.iter().copied());
        steps.kids.insert("use");
        s
    }

    /// Adds what another compilation recorded.
    pub fn merge(&mut self, other: Schema) {
        for (k, v) in other.nodes {
            let e = self.nodes.entry(k).or_default();
            e.props.extend(v.props);
            e.kids.extend(v.kids);
        }
        for (k, v) in other.values {
            let e = self.values.entry(k).or_default();
            for (p, w) in v {
                e.entry(p).or_default().extend(w);
            }
        }
    }

    pub(crate) fn record_node(
        &mut self,
        name: &str,
        props: &[&'static str],
        kids: &[&'static str],
        entries: &[crate::syntax::Entry],
    ) {
        // Looked up before inserting: one allocation per node kind, not
        // per node.
        let e = match self.nodes.get_mut(name) {
            Some(e) => e,
            None => self.nodes.entry(name.to_string()).or_default(),
        };
        e.props.extend(props.iter().copied());
        e.kids.extend(kids.iter().copied());
        if self.pending.is_empty() {
            return;
        }
        for en in entries {
            let Some(p) = &en.name else { continue };
            let Some(words) = self.pending.remove(&en.value_span) else {
                continue;
            };
            // The property's name as the decoder spelt it (a `'static`
            // from `props`), so the key needs no allocation per entry.
            if let Some(pn) = props.iter().copied().find(|n| *n == p.value.as_str()) {
                let by_prop = match self.values.get_mut(name) {
                    Some(m) => m,
                    None => self.values.entry(name.to_string()).or_default(),
                };
                by_prop.entry(pn).or_default().extend(words);
            }
        }
    }

    pub(crate) fn record_values(&mut self, span: Span, words: impl Iterator<Item = &'static str>) {
        self.pending.entry(span).or_default().extend(words);
    }

    /// The properties and children `node` accepts.
    pub fn node(&self, node: &str) -> Option<&NodeSchema> {
        self.nodes.get(node)
    }

    /// The words `node`'s property `prop` may be.
    pub fn values_of(&self, node: &str, prop: &str) -> Vec<&'static str> {
        self.values
            .get(node)
            .and_then(|m| m.get(prop))
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::source::MemorySources;

    #[test]
    fn the_decoders_questions_are_recorded() {
        let mut src = MemorySources::default();
        src.0.insert(
            "m.kdl".to_string(),
            "worker \"w\" password=(secret)\"w\"\nrole \"dev\" grant=\"view\"\nbuilder \"b\" {\n    workers \"w\"\n    steps { shell \"make\" }\n}\nscheduler \"s\" kind=\"force\" { builders \"b\"; }\n"
                .to_string(),
        );
        let (c, ed) = crate::compile_for_editor("m.kdl", &src, true);
        assert!(
            c.graph.is_none(),
            "an editor's compilation stops before lowering"
        );
        let s = ed.schema.unwrap_or_default();
        let b = s.node("builder").cloned().unwrap_or_default();
        assert!(
            b.kids.contains("workers") && b.kids.contains("steps"),
            "{b:?}"
        );
        assert!(s.node("steps").is_some_and(|n| n.kids.contains("git")));
        assert!(s.values_of("scheduler", "kind").contains(&"periodic"));
        assert!(s.values_of("role", "grant").contains(&"force"));
        let (_, ed) = crate::compile_for_editor("m.kdl", &src, false);
        assert!(ed.schema.is_none(), "recorded only when asked");
    }
}
