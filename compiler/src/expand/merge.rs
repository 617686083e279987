//! Merging an extending template's body into its parent's.

use super::*;

/// Applies an extending template's body to its parent's.
///
/// At every level: a node without annotation is added after the parent's
/// nodes; `(replace)NAME` replaces the parent's `NAME` nodes; `(merge)NAME`
/// merges into them (arguments replaced when given, properties set,
/// children merged by these same rules); `(remove)NAME` removes them.
pub fn merge(parent: &[Node], child: &[Node]) -> Vec<Node> {
    let mut out: Vec<Node> = parent.to_vec();
    for c in child {
        let mode = c.ty.as_ref().map(|t| t.value.as_str());
        let mut plain = c.clone();
        plain.ty = None;
        match mode {
            Some("replace") => {
                let at = out.iter().position(|n| n.name.value == c.name.value);
                out.retain(|n| n.name.value != c.name.value);
                let at = at.unwrap_or(out.len()).min(out.len());
                out.insert(at, plain);
            }
            Some("remove") => out.retain(|n| n.name.value != c.name.value),
            Some("merge") => {
                let mut found = false;
                for n in out.iter_mut().filter(|n| n.name.value == c.name.value) {
                    found = true;
                    if plain.entries.iter().any(|e| e.name.is_none()) {
                        n.entries.retain(|e| e.name.is_some());
                        let mut a: Vec<Entry> = plain
                            .entries
                            .iter()
                            .filter(|e| e.name.is_none())
                            .cloned()
                            .collect();
                        a.append(&mut n.entries);
                        n.entries = a;
                    }
                    for e in plain.entries.iter().filter(|e| e.name.is_some()) {
                        let k = e.name.as_ref().map(|k| k.value.as_str());
                        n.entries
                            .retain(|x| x.name.as_ref().map(|k| k.value.as_str()) != k);
                        n.entries.push(e.clone());
                    }
                    if let Some(cc) = &plain.children {
                        match &mut n.children {
                            Some(nc) => nc.nodes = merge(&nc.nodes, &cc.nodes),
                            None => {
                                n.children = Some(Children {
                                    nodes: merge(&[], &cc.nodes),
                                    span: cc.span,
                                })
                            }
                        }
                    }
                }
                if !found {
                    out.push(plain);
                }
            }
            Some("append") => out.push(plain),
            _ => out.push(c.clone()),
        }
    }
    out
}
