//! What each kind of node accepts, as the decoders asked for it: the
//! property and child names a [`crate::reader::NodeReader`] was asked for,
//! and the words a value may be (`kind=`, `grant=`, booleans, …).
//!
//! This is the language server's completion table. It is not written by
//! hand: it is recorded while decoding (a side table in `reader::Cx` that
//! exists only when asked for, so `bbc check` pays nothing), so it can never
//! disagree with what "unknown, did you mean" accepts. A node is keyed by
//! its path in the expanded tree, the names of its ancestors and its own
//! (`master/tls`, `reporter/tls`, `builder/steps/shell/env`), so one name
//! under two parents keeps what each parent's decoder reads; a lookup by a
//! path written in the text (which may sit inside a `template` or
//! `matrix`) takes the longest tail of it that was recorded
//! ([`Schema::node_at`]).

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
    /// Node path (names joined by `/`) → what it accepts; `""` is the top
    /// level.
    pub nodes: BTreeMap<String, NodeSchema>,
    /// Node path → property name → the words its value may be.
    pub values: BTreeMap<String, BTreeMap<&'static str, BTreeSet<&'static str>>>,
    /// Value words recorded for an entry (by its span) not yet attributed
    /// to a node: `NodeReader::finish` moves them under its node's path.
    pub(crate) pending: HashMap<Span, Vec<&'static str>>,
    /// The path of each node of the tree being decoded, by the span of its
    /// name ([`Schema::learn_paths`]); a node not in it (none is expected)
    /// is keyed by its name.
    pub(crate) paths: HashMap<Span, String>,
}

impl Schema {
    /// A table holding what the compiler knows without decoding anything:
    /// the top-level kinds and the step kinds.
    pub fn new() -> Schema {
        let mut s = Schema::default();
        let top = s.nodes.entry(String::new()).or_default();
        top.kids.extend(crate::decode::TOP_LEVEL.iter().copied());
        top.kids.extend(crate::expand::DECLARATIONS.iter().copied());
        let steps = s.nodes.entry("builder/steps".to_string()).or_default();
        steps.kids.extend(crate::decode::STEP_KINDS.iter().copied());
        steps.kids.insert("use");
        s
    }

    /// Learns the path of every node of the expanded tree, before it is
    /// decoded (the decoders see one node at a time).
    pub(crate) fn learn_paths(&mut self, nodes: &[crate::syntax::Node]) {
        fn walk(paths: &mut HashMap<Span, String>, prefix: &str, nodes: &[crate::syntax::Node]) {
            for n in nodes {
                let path = if prefix.is_empty() {
                    n.name.value.to_string()
                } else {
                    format!("{prefix}/{}", n.name.value)
                };
                if let Some(c) = &n.children {
                    walk(paths, &path, &c.nodes);
                }
                paths.insert(n.name.span, path);
            }
        }
        walk(&mut self.paths, "", nodes);
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
        node: &crate::syntax::Node,
        props: &[&'static str],
        kids: &[&'static str],
    ) {
        let name: &str = match self.paths.get(&node.name.span) {
            Some(p) => p,
            None => &node.name.value,
        };
        let entries = &node.entries;
        // Looked up before inserting: one allocation per node path, not
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

    /// The properties and children the node at `path` accepts (`path`
    /// names the node and its ancestors; empty: the top level).
    ///
    /// A path as written in a file need not be one the expanded tree has:
    /// a template's body or a matrix's is written inside `template` or
    /// `matrix` and decoded elsewhere. So the longest tail of `path` that
    /// some recorded path ends with is the key, and when several recorded
    /// paths end with it (`["template", "env"]`: `env` of a builder, of a
    /// step, …) the answer is their union.
    pub fn node_at(&self, path: &[&str]) -> Option<NodeSchema> {
        if path.is_empty() {
            return self.nodes.get("").cloned();
        }
        let mut out: Option<NodeSchema> = None;
        for key in self.keys_at(self.nodes.keys(), path) {
            if let Some(n) = self.nodes.get(key) {
                let o = out.get_or_insert_with(NodeSchema::default);
                o.props.extend(n.props.iter().copied());
                o.kids.extend(n.kids.iter().copied());
            }
        }
        out
    }

    /// Whether a node at exactly `path` was recorded.
    pub fn knows(&self, path: &[&str]) -> bool {
        self.nodes.contains_key(&path.join("/"))
    }

    /// The words the property `prop` of the node at `path` may be (the
    /// path is matched as [`Schema::node_at`] does).
    pub fn values_at(&self, path: &[&str], prop: &str) -> Vec<&'static str> {
        let mut out = BTreeSet::new();
        let with_prop = self
            .values
            .iter()
            .filter(|(_, m)| m.contains_key(prop))
            .map(|(k, _)| k);
        for key in self.keys_at(with_prop, path) {
            if let Some(w) = self.values.get(key).and_then(|m| m.get(prop)) {
                out.extend(w.iter().copied());
            }
        }
        out.into_iter().collect()
    }

    /// The recorded keys for `path`: an exact match, else those ending with
    /// the longest tail of `path` any of them ends with (`path` itself
    /// first: `steps/shell` is `builder/steps/shell`).
    fn keys_at<'k>(
        &self,
        keys: impl Iterator<Item = &'k String> + Clone,
        path: &[&str],
    ) -> Vec<&'k String> {
        let joined = path.join("/");
        if let Some(k) = keys.clone().find(|k| **k == joined) {
            return vec![k];
        }
        for from in 0..path.len() {
            let tail = path[from..].join("/");
            let found: Vec<&String> = keys
                .clone()
                .filter(|k| {
                    k.strip_suffix(tail.as_str())
                        .is_some_and(|head| head.is_empty() || head.ends_with('/'))
                })
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
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
        let b = s.node_at(&["builder"]).unwrap_or_default();
        assert!(
            b.kids.contains("workers") && b.kids.contains("steps"),
            "{b:?}"
        );
        assert!(s
            .node_at(&["builder", "steps"])
            .is_some_and(|n| n.kids.contains("git")));
        assert!(s.values_at(&["scheduler"], "kind").contains(&"periodic"));
        assert!(s.values_at(&["role"], "grant").contains(&"force"));
        // Written inside a template, a step is found by its tail.
        assert!(s
            .node_at(&["template", "shell"])
            .is_some_and(|n| n.props.contains("name")));
        let (_, ed) = crate::compile_for_editor("m.kdl", &src, false);
        assert!(ed.schema.is_none(), "recorded only when asked");
    }

    #[test]
    fn one_name_under_two_parents_keeps_each_parents_schema() {
        let mut src = MemorySources::default();
        src.0.insert(
            "m.kdl".to_string(),
            "master {\n    tls cert=\"/c.pem\" key=\"/k.pem\"\n}\nreporter \"irc\" kind=\"irc\" {\n    server \"irc.libera.chat:6697\"\n    channel \"#ci\"\n    tls #true\n}\n"
                .to_string(),
        );
        let (_, ed) = crate::compile_for_editor("m.kdl", &src, true);
        let s = ed.schema.unwrap_or_default();
        let master = s.node_at(&["master", "tls"]).unwrap_or_default();
        assert!(
            master.props.contains("cert") && master.props.contains("key"),
            "{master:?}"
        );
        let irc = s.node_at(&["reporter", "tls"]).unwrap_or_default();
        assert!(!irc.props.contains("cert"), "{irc:?}");
        assert_ne!(master, irc);
        // Where the text's path is not in the tree, the union.
        let any = s.node_at(&["template", "tls"]).unwrap_or_default();
        assert!(any.props.contains("cert"), "{any:?}");
    }
}
