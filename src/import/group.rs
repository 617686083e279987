//! Folding entities that differ only in a few strings into one `matrix`.
//!
//! A Buildbot master.cfg builds its builders in Python loops, so a fleet of
//! a thousand builders is usually a few shapes with a name or a URL
//! changing. Two nodes have the same *shape* when they are equal except for
//! their string values. In a group of the same shape, each string that
//! varies is split into the common prefix, the varying middle and the
//! common suffix; middles that vary together (the `7` of `b-7`,
//! `project-7.git`, `out/b-7.tar.gz`) are one field. A group of at least
//! [`MIN_GROUP`] nodes with at most [`MAX_FIELDS`] fields becomes a matrix
//! whose axis runs over the fields' values.

use std::collections::HashMap;

use serde_json::Value;

use super::kdl::{ident, quote, write_node, Node};

/// Fewer similar nodes than this stay as written.
pub const MIN_GROUP: usize = 3;
/// More varying fields than this is not "a few values": written out.
pub const MAX_FIELDS: usize = 4;

/// What the grouped section is written as: nodes in their order, a matrix
/// standing where the first of its nodes stood.
pub enum Item {
    Plain(Node),
    Matrix(Matrix),
}

pub struct Matrix {
    /// The fields' names, in the order of their first use.
    pub fields: Vec<String>,
    /// One row per original node, one value per field.
    pub rows: Vec<Vec<String>>,
    /// The body: the first node with each varying string rewritten.
    pub body: Node,
}

/// Where a string leaf sits, for naming the field it feeds.
struct Leaf {
    label: String,
    text: String,
}

/// The node's shape (strings blanked) and its string leaves in order.
fn shape(n: &Node, leaves: &mut Vec<Leaf>, top: bool) -> String {
    let mut s = String::new();
    for c in &n.comments {
        s.push_str("//");
        s.push_str(c);
        s.push('\n');
    }
    s.push_str(&n.name);
    for (i, a) in n.args.iter().enumerate() {
        s.push(' ');
        match a {
            Value::String(t) => {
                let label = if top && i == 0 { "name" } else { &n.name };
                leaves.push(Leaf {
                    label: label.to_string(),
                    text: t.clone(),
                });
                s.push('$');
            }
            v => s.push_str(&v.to_string()),
        }
    }
    for (k, v) in &n.props {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        match v {
            // `kind="…"` picks the entity's variant: never a field.
            Value::String(t) if !(top && k == "kind") => {
                leaves.push(Leaf {
                    label: k.clone(),
                    text: t.clone(),
                });
                s.push('$');
            }
            v => s.push_str(&v.to_string()),
        }
    }
    if let Some(ch) = &n.children {
        s.push('{');
        for c in ch {
            s.push_str(&shape(c, leaves, false));
            s.push(';');
        }
        s.push('}');
    }
    s
}

/// Rewrites the string leaves of `n`, in the order `shape` visits them.
fn rewrite(n: &mut Node, texts: &mut impl Iterator<Item = String>, top: bool) {
    for a in n.args.iter_mut() {
        if let Value::String(t) = a {
            if let Some(new) = texts.next() {
                *t = new;
            }
        }
    }
    for (k, v) in n.props.iter_mut() {
        if let Value::String(t) = v {
            if top && k == "kind" {
                continue;
            }
            if let Some(new) = texts.next() {
                *t = new;
            }
        }
    }
    if let Some(ch) = n.children.as_mut() {
        for c in ch {
            rewrite(c, texts, false);
        }
    }
}

/// The longest common prefix of `texts`, not ending inside a `${{ … }}`.
fn common_prefix(texts: &[&str]) -> usize {
    let first = texts[0];
    let mut n = texts.iter().fold(first.len(), |n, t| {
        first
            .bytes()
            .zip(t.bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    while !first.is_char_boundary(n) {
        n -= 1;
    }
    let head = &first[..n];
    if let Some(open) = head.rfind("${{") {
        if !head[open..].contains("}}") {
            n = open;
        }
    }
    n
}

/// The longest common suffix of `texts` after `prefix` bytes, not starting
/// inside a `${{ … }}`.
fn common_suffix(texts: &[&str], prefix: usize) -> usize {
    let first = texts[0];
    let mut n = texts.iter().fold(first.len() - prefix, |n, t| {
        let limit = n.min(t.len() - prefix);
        first
            .bytes()
            .rev()
            .zip(t.bytes().rev())
            .take(limit)
            .take_while(|(a, b)| a == b)
            .count()
    });
    while !first.is_char_boundary(first.len() - n) {
        n -= 1;
    }
    let tail = &first[first.len() - n..];
    if let Some(close) = tail.find("}}") {
        if !tail[..close].contains("${{") {
            n -= close + 2;
        }
    }
    n
}

/// A field name usable as `row.NAME` in an expression.
fn field_name(label: &str, taken: &[String]) -> String {
    let mut base: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
        base.insert(0, 'f');
    }
    if matches!(
        base.as_str(),
        "if" | "then" | "else" | "in" | "true" | "false" | "null" | "prop" | "row"
    ) {
        base.push('_');
    }
    let mut name = base.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{base}{i}");
        i += 1;
    }
    name
}

/// The matrix of one group of same-shaped nodes, or None when they differ
/// in more than a few values or in a way a field cannot carry.
fn fold(nodes: &[&Node]) -> Option<Matrix> {
    let leaves: Vec<Vec<Leaf>> = nodes
        .iter()
        .map(|n| {
            let mut l = Vec::new();
            shape(n, &mut l, true);
            l
        })
        .collect();
    let width = leaves[0].len();
    let mut fields: Vec<String> = Vec::new();
    // The values of each field, one per node.
    let mut columns: Vec<Vec<String>> = Vec::new();
    let mut texts: Vec<String> = Vec::with_capacity(width);
    for col in 0..width {
        let vals: Vec<&str> = leaves.iter().map(|l| l[col].text.as_str()).collect();
        if vals.iter().all(|v| *v == vals[0]) {
            texts.push(vals[0].to_string());
            continue;
        }
        let p = common_prefix(&vals);
        let s = common_suffix(&vals, p);
        let middles: Vec<String> = vals.iter().map(|v| v[p..v.len() - s].to_string()).collect();
        // A value that is itself a run-time `${{ … }}` cannot be a field:
        // compile-time values are text.
        if middles
            .iter()
            .any(|m| m.contains("${{") || m.contains("}}"))
        {
            return None;
        }
        let f = match columns.iter().position(|c| *c == middles) {
            Some(i) => i,
            None => {
                if columns.len() == MAX_FIELDS {
                    return None;
                }
                fields.push(field_name(&leaves[0][col].label, &fields));
                columns.push(middles);
                columns.len() - 1
            }
        };
        texts.push(format!(
            "{}\u{1}{f}\u{1}{}",
            &vals[0][..p],
            &vals[0][vals[0].len() - s..]
        ));
    }
    if columns.is_empty() {
        return None;
    }
    // One field: a plain axis (`${{ name }}`); several: records (`row.f`).
    let single = columns.len() == 1;
    let texts = texts.into_iter().map(|t| {
        let mut out = String::new();
        let mut parts = t.split('\u{1}');
        out.push_str(parts.next().unwrap_or(""));
        while let (Some(f), Some(rest)) = (parts.next(), parts.next()) {
            let i: usize = f.parse().unwrap_or(0);
            if single {
                out.push_str(&format!("${{{{ {} }}}}", fields[i]));
            } else {
                out.push_str(&format!("${{{{ row.{} }}}}", fields[i]));
            }
            out.push_str(rest);
        }
        out
    });
    let mut body = nodes[0].clone();
    let mut texts = texts.collect::<Vec<_>>().into_iter();
    rewrite(&mut body, &mut texts, true);
    let rows = (0..nodes.len())
        .map(|r| columns.iter().map(|c| c[r].clone()).collect())
        .collect();
    Some(Matrix { fields, rows, body })
}

/// Groups `nodes` by shape and folds each large enough group.
pub fn group(nodes: Vec<Node>) -> Vec<Item> {
    let mut by_shape: HashMap<String, Vec<usize>> = HashMap::new();
    let mut shapes = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let s = shape(n, &mut Vec::new(), true);
        by_shape.entry(s.clone()).or_default().push(i);
        shapes.push(s);
    }
    let mut folded: HashMap<usize, Matrix> = HashMap::new();
    let mut member = vec![false; nodes.len()];
    for idx in by_shape.values() {
        if idx.len() < MIN_GROUP {
            continue;
        }
        let group: Vec<&Node> = idx.iter().map(|&i| &nodes[i]).collect();
        if let Some(m) = fold(&group) {
            for &i in idx {
                member[i] = true;
            }
            folded.insert(idx[0], m);
        }
    }
    let mut out = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        if let Some(m) = folded.remove(&i) {
            out.push(Item::Matrix(m));
        } else if !member[i] {
            out.push(Item::Plain(n));
        }
    }
    out
}

/// Writes a matrix; its rows go in a `let` named `rows` when it has
/// several fields (`let_name` must be unique in the file).
pub fn write_matrix(out: &mut String, m: &Matrix, let_name: &str) {
    if m.fields.len() == 1 {
        out.push_str("matrix {\n");
        out.push_str(&format!("    axis {}", quote(&m.fields[0])));
        for r in &m.rows {
            out.push(' ');
            out.push_str(&quote(&r[0]));
        }
        out.push('\n');
    } else {
        out.push_str(&format!("let {} {{\n", quote(let_name)));
        for r in &m.rows {
            out.push_str("    -");
            for (f, v) in m.fields.iter().zip(r) {
                out.push_str(&format!(" {}={}", ident(f), quote(v)));
            }
            out.push('\n');
        }
        out.push_str("}\nmatrix {\n");
        out.push_str(&format!("    axis \"row\" \"${{{{ {let_name} }}}}\"\n"));
    }
    write_node(out, &m.body, 1);
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn builder(i: usize) -> Node {
        serde_json::from_value(json!({
            "name": "builder", "args": [format!("b-{i}")],
            "children": [
                {"name": "workers", "args": ["w1"]},
                {"name": "tags", "args": [format!("t{}", i % 2)]},
                {"name": "steps", "children": [
                    {"name": "git", "props": [["repo", format!("https://x.org/p-{i}.git")]]},
                    {"name": "upload", "args": [format!("out/b-{i}.tgz")],
                     "props": [["to", format!("a/b-{i}/${{{{ prop.buildnumber }}}}.tgz")]]}
                ]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn similar_builders_become_one_matrix_with_shared_fields() {
        let items = group((0..5).map(builder).collect());
        assert_eq!(items.len(), 1);
        let Item::Matrix(m) = &items[0] else {
            panic!("not folded")
        };
        assert_eq!(m.fields, ["name", "tags"]);
        assert_eq!(m.rows[3], ["3", "1"]);
        let mut s = String::new();
        write_matrix(&mut s, m, "rows_1");
        assert!(s.contains("builder \"b-${{ row.name }}\""), "{s}");
        assert!(
            s.contains("to=\"a/b-${{ row.name }}/${{ prop.buildnumber }}.tgz\""),
            "{s}"
        );
        assert!(s.contains("- name=\"3\" tags=\"1\""), "{s}");
    }

    #[test]
    fn few_or_different_nodes_stay_plain() {
        let mut nodes: Vec<Node> = (0..2).map(builder).collect();
        let mut other = builder(9);
        other.children.as_mut().unwrap().pop();
        nodes.push(other);
        let items = group(nodes);
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|i| matches!(i, Item::Plain(_))));
    }

    #[test]
    fn prefixes_never_split_an_interpolation() {
        let v = ["x ${{ prop.a }}1", "x ${{ prop.b }}2"];
        let p = common_prefix(&v);
        assert_eq!(&v[0][..p], "x ");
        let w = ["1${{ prop.a }}", "2${{ prop.a }}"];
        let p = common_prefix(&w);
        let s = common_suffix(&w, p);
        assert_eq!(&w[0][w[0].len() - s..], "${{ prop.a }}");
        let z = ["a${{ prop.x }}", "b${{ prop.y }}"];
        let s = common_suffix(&z, common_prefix(&z));
        assert_eq!(s, 0);
    }
}
