//! The KDL nodes `dump.py` describes, and their text: one node a line,
//! four spaces a level, comments above the node they are about.

use std::fmt::Write;

use serde::Deserialize;
use serde_json::Value;

/// One KDL node as dump.py wrote it. Values are JSON scalars, or
/// `{"secret": NAME}` for `(secret)"NAME"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub args: Vec<Value>,
    #[serde(default)]
    pub props: Vec<(String, Value)>,
    #[serde(default)]
    pub children: Option<Vec<Node>>,
    /// Written as `//` lines above the node.
    #[serde(default)]
    pub comments: Vec<String>,
}

/// A KDL string, quoted, with the escapes KDL 2.0 needs.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A node or property name: bare when KDL reads it as that identifier,
/// quoted otherwise (environment variable names such as `MY.VAR`).
pub fn ident(s: &str) -> String {
    let bare = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(s, "true" | "false" | "null" | "inf" | "nan");
    if bare {
        s.to_string()
    } else {
        quote(s)
    }
}

/// One value, or None for a JSON null or a shape dump.py never writes.
pub fn value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(quote(s)),
        Value::Bool(b) => Some(if *b { "#true" } else { "#false" }.into()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => match o.get("secret") {
            Some(Value::String(name)) => Some(format!("(secret){}", quote(name))),
            _ => None,
        },
        Value::Null | Value::Array(_) => None,
    }
}

/// Appends `node` at `depth` (four spaces a level) to `out`.
pub fn write_node(out: &mut String, node: &Node, depth: usize) {
    let pad = "    ".repeat(depth);
    for c in &node.comments {
        for line in c.lines() {
            let _ = writeln!(out, "{pad}// {line}");
        }
    }
    out.push_str(&pad);
    out.push_str(&ident(&node.name));
    for a in &node.args {
        if let Some(v) = value(a) {
            out.push(' ');
            out.push_str(&v);
        }
    }
    for (k, v) in &node.props {
        if let Some(v) = value(v) {
            let _ = write!(out, " {}={v}", ident(k));
        }
    }
    match &node.children {
        Some(ch) if !ch.is_empty() => {
            out.push_str(" {\n");
            for c in ch {
                write_node(out, c, depth + 1);
            }
            out.push_str(&pad);
            out.push_str("}\n");
        }
        Some(_) if node.args.is_empty() && node.props.is_empty() => out.push_str(" {}\n"),
        _ => out.push('\n'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_values_names_and_blocks() {
        let n: Node = serde_json::from_value(json!({
            "name": "shell", "args": ["echo \"hi\"\n", 3],
            "props": [["name", "a b"], ["halt-on-failure", true]],
            "children": [{"name": "env", "children": [{"name": "MY.VAR", "args": [{"secret": "t"}]}]}],
            "comments": ["why"]
        }))
        .unwrap();
        let mut s = String::new();
        write_node(&mut s, &n, 1);
        assert_eq!(
            s,
            "    // why\n    shell \"echo \\\"hi\\\"\\n\" 3 name=\"a b\" halt-on-failure=#true {\n        env {\n            \"MY.VAR\" (secret)\"t\"\n        }\n    }\n"
        );
    }

    #[test]
    fn keywords_and_odd_names_are_quoted() {
        assert_eq!(ident("true"), "\"true\"");
        assert_eq!(ident("1x"), "\"1x\"");
        assert_eq!(ident("PATH"), "PATH");
        assert_eq!(quote("\u{7}"), "\"\\u{7}\"");
    }
}
