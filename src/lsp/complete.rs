//! Completion, read from the text before the cursor rather than from the
//! syntax tree: while a name is being typed the text is usually not valid
//! KDL, so a light scan finds the enclosing nodes (braces, outside strings
//! and comments) and what is being typed. What may go there comes from the
//! compiler's recorded schema (`bbc_compiler::schema`, kept from the last
//! compilations that got as far as decoding) and the index's names.

use bbc_compiler::schema::Schema;

use super::index::Index;

/// What the cursor is in.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// A node name being typed inside the nodes `path` (empty: the top
    /// level; the parent is the last).
    NodeName { path: Vec<String> },
    /// A property name, or an argument, being typed of the node `path`
    /// ends with (the enclosing nodes before it).
    Entry { path: Vec<String> },
    /// The value of the property `prop` of the node `path` ends with.
    Value { path: Vec<String>, prop: String },
    /// Inside `${{ … }}`.
    Expr,
    /// A build property's name after `prop.` inside `${{ … }}`.
    Prop,
}

/// The place at byte `offset` of `text`, and the start of the word typed.
pub fn place(text: &str, offset: usize) -> (Place, usize) {
    let mut offset = offset.min(text.len());
    // A position inside a character (a client's bad arithmetic) is read
    // as the start of that character, never a panic.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text.as_bytes()[..offset];
    let mut stack: Vec<String> = Vec::new();
    // The statement being read: where it started, its first word.
    let mut stmt_start = 0;
    let mut i = 0;
    // Inside a string: the bytes that close it (`"`, `"""`, `"#`, …) and
    // whether a backslash escapes (not in raw strings).
    let mut in_string: Option<(Vec<u8>, bool)> = None;
    while i < before.len() {
        let b = before[i];
        if let Some((close, escapes)) = &in_string {
            if *escapes && b == b'\\' {
                i += 2;
                continue;
            }
            if before[i..].starts_with(close) {
                i += close.len();
                in_string = None;
                continue;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'#' => {
                // `#` opens a raw string only when quotes follow the
                // hashes (`##"…"##`); otherwise it is a keyword (`#true`).
                let hashes = before[i..].iter().take_while(|c| **c == b'#').count();
                if before.get(i + hashes) != Some(&b'"') {
                    i += hashes.max(1);
                    continue;
                }
                let multi = before[i + hashes..].starts_with(b"\"\"\"");
                let quotes = if multi { 3 } else { 1 };
                let mut close = vec![b'"'; quotes];
                close.extend(std::iter::repeat_n(b'#', hashes));
                in_string = Some((close, hashes == 0));
                i += hashes + quotes;
                continue;
            }
            b'/' if before.get(i + 1) == Some(&b'/') => {
                while i < before.len() && before[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if before.get(i + 1) == Some(&b'*') => {
                // Block comments nest in KDL.
                let mut depth = 0usize;
                while i < before.len() {
                    if before[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if before[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'{' => {
                stack.push(first_word(&text[stmt_start..i]).to_string());
                stmt_start = i + 1;
            }
            b'}' => {
                stack.pop();
                stmt_start = i + 1;
            }
            b'\n' | b';' => stmt_start = i + 1,
            _ => {}
        }
        i += 1;
    }
    let in_string = in_string.is_some();
    let stmt = &text[stmt_start..offset];
    if in_string {
        if let Some(open) = stmt.rfind("${{") {
            if !stmt[open..].contains("}}") {
                let w = word_start(stmt.as_bytes());
                let place = if stmt[..w].ends_with("prop.") {
                    Place::Prop
                } else {
                    Place::Expr
                };
                return (place, stmt_start + w);
            }
        }
    }
    let trimmed = stmt.trim_start();
    let node = first_word(trimmed);
    if !trimmed.contains(|c: char| c.is_whitespace()) {
        let start = offset - trimmed.len();
        return (Place::NodeName { path: stack }, start);
    }
    // The last entry typed so far.
    let last_ws = stmt.rfind(|c: char| c.is_whitespace()).map_or(0, |w| w + 1);
    let entry = &stmt[last_ws..];
    if let Some(eq) = entry.find('=') {
        let prop = entry[..eq].to_string();
        stack.push(node.to_string());
        return (
            Place::Value { path: stack, prop },
            stmt_start + last_ws + eq + 1,
        );
    }
    stack.push(node.to_string());
    (Place::Entry { path: stack }, stmt_start + last_ws)
}

impl Place {
    /// The node whose name, entries or children are being written: the
    /// enclosing node's path for a node name, else the node's own.
    pub fn path(&self) -> Option<Vec<&str>> {
        match self {
            Place::NodeName { path } | Place::Entry { path } | Place::Value { path, .. } => {
                Some(path.iter().map(String::as_str).collect())
            }
            Place::Expr | Place::Prop => None,
        }
    }
}

fn first_word(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .find(|c: char| c.is_whitespace() || c == '{' || c == ';')
        .unwrap_or(s.len());
    &s[..end]
}

fn word_start(b: &[u8]) -> usize {
    let mut i = b.len();
    while i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'-') {
        i -= 1;
    }
    i
}

/// One offered completion: the text and what it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub label: String,
    pub detail: &'static str,
}

/// The completions for a place.
pub fn items(
    place: &Place,
    schema: &Schema,
    index: Option<&Index>,
    properties: &std::collections::BTreeSet<String>,
) -> Vec<Item> {
    let item = |label: &str, detail: &'static str| Item {
        label: label.to_string(),
        detail,
    };
    let names_of = |kind: &str| -> Vec<Item> {
        index
            .map(|ix| {
                ix.defs
                    .iter()
                    .filter(|d| d.kind == kind)
                    .map(|d| Item {
                        label: format!("\"{}\"", d.name),
                        detail: d.kind,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    match place {
        Place::NodeName { path } => {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let Some(s) = schema.node_at(&path) else {
                return Vec::new();
            };
            let mut out: Vec<Item> = s.kids.iter().map(|k| item(k, "node")).collect();
            // Settings written as properties may also be children in KDL's
            // eyes; offer only what the decoder reads as children.
            out.dedup();
            out
        }
        Place::Entry { path } => {
            let mut out = Vec::new();
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            // An argument naming another entity.
            match path.last().copied().unwrap_or_default() {
                "workers" => out.extend(names_of("worker")),
                "builders" | "trigger" => out.extend(names_of("builder")),
                "lock" => out.extend(names_of("lock")),
                "use" => out.extend(names_of("template")),
                _ => {}
            }
            if let Some(s) = schema.node_at(&path) {
                out.extend(s.props.iter().map(|p| Item {
                    label: format!("{p}="),
                    detail: "property",
                }));
            }
            out
        }
        Place::Value { path, prop } => {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let mut out: Vec<Item> = schema
                .values_at(&path, prop)
                .into_iter()
                .map(|w| {
                    let label = if w.starts_with('#') || w.starts_with('"') {
                        w.to_string()
                    } else {
                        format!("\"{w}\"")
                    };
                    Item {
                        label,
                        detail: "value",
                    }
                })
                .collect();
            match prop.as_str() {
                "workers" => out.extend(names_of("worker")),
                "builders" => out.extend(names_of("builder")),
                "roles" => out.extend(names_of("role")),
                "extends" => out.extend(names_of("template")),
                _ => {}
            }
            out
        }
        Place::Prop => {
            // Built in, or declared somewhere in the config (`property`,
            // `param`, `set-property`, `copy-properties`; kept from every
            // compilation, see `Workspace::properties`): the names that
            // can exist in some builder. Whether one exists at this point
            // of this builder is the checker's E0401, shown as you type.
            let mut names: Vec<&str> = bbc_compiler::interp::BUILTIN_PROPERTIES.to_vec();
            names.extend(properties.iter().map(String::as_str));
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .map(|n| Item {
                    label: n.to_string(),
                    detail: "property",
                })
                .collect()
        }
        Place::Expr => names_of("variable")
            .into_iter()
            .map(|i| Item {
                label: i.label.trim_matches('"').to_string(),
                detail: "variable",
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Place {
        let o = text.find('|').unwrap_or(text.len());
        let t = text.replace('|', "");
        place(&t, o).0
    }

    #[test]
    fn places_are_read_from_broken_text() {
        assert_eq!(
            at("builder \"b\" {\n  wor|"),
            Place::NodeName {
                path: vec!["builder".into()]
            }
        );
        assert_eq!(
            at("builder \"b\" {\n steps {\n sh|\n}\n}"),
            Place::NodeName {
                path: vec!["builder".into(), "steps".into()]
            }
        );
        assert_eq!(
            at("scheduler \"s\" ki|"),
            Place::Entry {
                path: vec!["scheduler".into()]
            }
        );
        assert_eq!(
            at("scheduler \"s\" kind=\"|"),
            Place::Value {
                path: vec!["scheduler".into()],
                prop: "kind".into()
            }
        );
        assert_eq!(at("x { y \"a{\" }\nbu|"), Place::NodeName { path: vec![] });
        assert_eq!(at("builder \"b\" { steps { shell \"${{ jo|"), Place::Expr);
        assert_eq!(
            at("builder \"b\" { steps { shell \"${{ prop.got_|"),
            Place::Prop
        );
        // Braces inside raw, multi-line and raw multi-line strings, and
        // inside (nested) block comments, open nothing.
        assert_eq!(
            at("x r=#\"a{\"b\"# {\n y\n}\nbu|"),
            Place::NodeName { path: vec![] }
        );
        assert_eq!(
            at("x \"\"\"\n{ \"\n\"\"\" {\n}\nbu|"),
            Place::NodeName { path: vec![] }
        );
        assert_eq!(
            at("x ##\"\"\"\n{ \"\"\"#\n\"\"\"## {\n}\nbu|"),
            Place::NodeName { path: vec![] }
        );
        assert_eq!(
            at("/* a { /* b { */ c { */\nbuilder \"b\" {\n  wor|"),
            Place::NodeName {
                path: vec!["builder".into()]
            }
        );
        assert_eq!(
            at("x #true {\n  y|"),
            Place::NodeName {
                path: vec!["x".into()]
            }
        );
        assert_eq!(
            at("builder \"b\" {\n steps {\n  shell \"\"\"\n   echo ${{ prop.|"),
            Place::Prop
        );
        // Nested: the path of enclosing nodes.
        assert_eq!(
            at("master {\n    tls c|"),
            Place::Entry {
                path: vec!["master".into(), "tls".into()]
            }
        );
        assert_eq!(
            at("builder \"b\" { steps { shell \"x\" timeout=|"),
            Place::Value {
                path: vec!["builder".into(), "steps".into(), "shell".into()],
                prop: "timeout".into()
            }
        );
        // Inside a multi-byte character: no panic.
        let t = "builder \"é\" { ma";
        for o in 0..=t.len() + 2 {
            let _ = place(t, o);
        }
    }
}
