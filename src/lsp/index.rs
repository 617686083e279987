//! What the editor navigates: the named things of a config (entities,
//! templates, variables) and the places that refer to them, read from the
//! syntax trees of every file of one compilation.
//!
//! References are found where the language puts them: in a node or
//! property whose name says the kind (`workers "a"`, `builders=`, `lock`,
//! `roles=`, `use "template"`, `extends=`), as whole words of the string
//! (lists like `roles="a b"` hold several), and variables inside `${{ … }}`.
//! Names are unique per kind, so a kind and a name identify a definition.

use bbc_compiler::syntax::{Document, Entry, Node, Span, Value};

/// The entity kinds whose first argument is their name.
const ENTITY_KINDS: &[&str] = &[
    "worker",
    "lock",
    "change-source",
    "scheduler",
    "builder",
    "reporter",
    "role",
    "user",
    "template",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    /// `worker`, `builder`, …, `template` or `variable`.
    pub kind: &'static str,
    pub name: String,
    pub file: usize,
    /// The name's token.
    pub name_span: Span,
    /// The whole node.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub kind: &'static str,
    pub name: String,
    pub file: usize,
    pub span: Span,
}

#[derive(Debug, Default, Clone)]
pub struct Index {
    pub defs: Vec<Def>,
    pub refs: Vec<Ref>,
    /// Build property names the config declares somewhere (`property`,
    /// `param`, `set-property`, `copy-properties`), for `prop.` completion.
    pub properties: std::collections::BTreeSet<String>,
}

impl Index {
    /// Indexes files given as their trees and texts (in the compilation's
    /// order).
    pub fn build(docs: &[Document], texts: &[&str]) -> Index {
        let mut ix = Index::default();
        for (file, doc) in docs.iter().enumerate() {
            for n in &doc.nodes {
                ix.define(file, n);
            }
        }
        for (file, doc) in docs.iter().enumerate() {
            for n in &doc.nodes {
                ix.refer(file, texts[file], n, true);
            }
        }
        ix
    }

    fn define(&mut self, file: usize, n: &Node) {
        let kind: &str = &n.name.value;
        if kind == "let" {
            for e in &n.entries {
                let (name, span) = match (&e.name, &e.value) {
                    (Some(p), _) => (p.value.to_string(), p.span),
                    (None, Value::String(s)) if e.span == first_arg_span(n) => {
                        (s.to_string(), e.value_span)
                    }
                    _ => continue,
                };
                self.defs.push(Def {
                    kind: "variable",
                    name,
                    file,
                    name_span: span,
                    span: n.span,
                });
            }
            return;
        }
        let Some(kind) = ENTITY_KINDS.iter().copied().find(|k| *k == kind) else {
            return;
        };
        if let Some(Entry {
            value: Value::String(s),
            value_span,
            ..
        }) = n.entries.iter().find(|e| e.name.is_none())
        {
            self.defs.push(Def {
                kind,
                name: s.to_string(),
                file,
                name_span: *value_span,
                span: n.span,
            });
        }
    }

    fn refer(&mut self, file: usize, text: &str, n: &Node, top: bool) {
        let declared = match &*n.name.value {
            "property" | "param" | "set-property" => 1,
            "copy-properties" => usize::MAX,
            _ => 0,
        };
        let args = n.entries.iter().filter(|e| e.name.is_none());
        for e in args.take(declared) {
            if let Value::String(s) = &e.value {
                self.properties.insert(s.to_string());
            }
        }
        let defining = top && ENTITY_KINDS.contains(&&*n.name.value);
        let first = first_arg_span(n);
        for e in &n.entries {
            let Value::String(_) = &e.value else { continue };
            if defining && e.span == first {
                continue;
            }
            let raw = text
                .get(e.value_span.start as usize..e.value_span.end as usize)
                .unwrap_or("");
            self.variables_in(file, raw, e.value_span.start);
            let context: &str = match &e.name {
                Some(p) => &p.value,
                None => &n.name.value,
            };
            if let Some(kind) = hinted_kind(context) {
                for (at, word) in words(raw) {
                    if self.defs.iter().any(|d| d.kind == kind && d.name == word) {
                        let start = e.value_span.start + at as u32;
                        self.refs.push(Ref {
                            kind,
                            name: word.to_string(),
                            file,
                            span: Span {
                                start,
                                end: start + word.len() as u32,
                            },
                        });
                    }
                }
            }
        }
        if let Some(c) = &n.children {
            for child in &c.nodes {
                self.refer(file, text, child, false);
            }
        }
    }

    /// Variables named inside `${{ … }}` of a string token.
    fn variables_in(&mut self, file: usize, raw: &str, base: u32) {
        let mut rest = 0;
        while let Some(open) = raw[rest..].find("${{") {
            let from = rest + open + 3;
            let to = raw[from..].find("}}").map_or(raw.len(), |c| from + c);
            let expr = &raw[from..to];
            let mut i = 0;
            let bytes = expr.as_bytes();
            while i < bytes.len() {
                if is_ident_start(bytes[i]) && (i == 0 || bytes[i - 1] != b'.') {
                    let s = i;
                    while i < bytes.len() && is_ident(bytes[i]) {
                        i += 1;
                    }
                    let word = &expr[s..i];
                    if self
                        .defs
                        .iter()
                        .any(|d| d.kind == "variable" && d.name == word)
                    {
                        let start = base + (from + s) as u32;
                        self.refs.push(Ref {
                            kind: "variable",
                            name: word.to_string(),
                            file,
                            span: Span {
                                start,
                                end: start + word.len() as u32,
                            },
                        });
                    }
                } else {
                    i += 1;
                }
            }
            rest = to.min(raw.len());
            if rest >= raw.len() {
                break;
            }
        }
    }

    /// The definition named at `offset` of `file`: the one a reference
    /// there points to, or the one whose name is there.
    pub fn def_at(&self, file: usize, offset: u32) -> Option<&Def> {
        let inside = |s: Span| s.start <= offset && offset <= s.end;
        if let Some(r) = self.refs.iter().find(|r| r.file == file && inside(r.span)) {
            return self.def_of(r.kind, &r.name);
        }
        self.defs
            .iter()
            .find(|d| d.file == file && inside(d.name_span))
    }

    pub fn def_of(&self, kind: &str, name: &str) -> Option<&Def> {
        self.defs.iter().find(|d| d.kind == kind && d.name == name)
    }

    pub fn refs_to<'a>(&'a self, d: &'a Def) -> impl Iterator<Item = &'a Ref> + 'a {
        self.refs
            .iter()
            .filter(move |r| r.kind == d.kind && r.name == d.name)
    }
}

fn first_arg_span(n: &Node) -> Span {
    n.entries
        .iter()
        .find(|e| e.name.is_none())
        .map_or(Span::default(), |e| e.span)
}

/// The kind a node or property name refers to: `workers`, `worker`,
/// `builders`, `lock`, `locks`, `roles`, `use`, `extends`, ….
fn hinted_kind(context: &str) -> Option<&'static str> {
    let c = context.trim_end_matches('s');
    Some(match c {
        "worker" => "worker",
        "builder" | "trigger" => "builder",
        "lock" => "lock",
        "change-source" | "source" => "change-source",
        "scheduler" => "scheduler",
        "role" => "role",
        "user" => "user",
        "use" | "extend" => "template",
        _ => return None,
    })
}

/// The whitespace-separated words of a string token (quotes and `#`s of a
/// raw string are not part of a word), with their byte offsets.
fn words(raw: &str) -> impl Iterator<Item = (usize, &str)> {
    let body_start = raw.find('"').map_or(0, |q| q + 1);
    let body_end = raw
        .rfind('"')
        .filter(|e| *e >= body_start)
        .unwrap_or(raw.len());
    let body = &raw[body_start..body_end];
    body.split_whitespace().map(move |w| {
        let at = w.as_ptr() as usize - body.as_ptr() as usize;
        (body_start + at, w)
    })
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbc_compiler::syntax;

    const CONFIG: &str = r#"let jobs=4
worker "w1" password=(secret)"w1"
lock "db" kind="master" max=1
builder "b" {
    workers "w1"
    steps { shell "make -j${{ jobs }}" }
}
scheduler "s" kind="force" {
    builders "b"
}
role "dev" grant="view"
user "u" token=(secret)"t" roles="dev"
"#;

    #[test]
    fn definitions_and_references_by_kind() {
        let ix = Index::build(&[syntax::parse(CONFIG).0], &[CONFIG]);
        let kinds: Vec<_> = ix.defs.iter().map(|d| (d.kind, d.name.as_str())).collect();
        assert_eq!(
            kinds,
            [
                ("variable", "jobs"),
                ("worker", "w1"),
                ("lock", "db"),
                ("builder", "b"),
                ("scheduler", "s"),
                ("role", "dev"),
                ("user", "u"),
            ]
        );
        let refs: Vec<_> = ix
            .refs
            .iter()
            .map(|r| (r.kind, &CONFIG[r.span.start as usize..r.span.end as usize]))
            .collect();
        // `password=(secret)"w1"` names a secret, not the worker.
        assert_eq!(
            refs,
            [
                ("worker", "w1"),
                ("variable", "jobs"),
                ("builder", "b"),
                ("role", "dev"),
            ]
        );
        let at = CONFIG.find("builders \"b\"").unwrap_or(0) as u32 + 10;
        let d = ix.def_at(0, at).map(|d| (d.kind, d.name.as_str()));
        assert_eq!(d, Some(("builder", "b")));
    }

    #[test]
    fn words_of_strings() {
        let w: Vec<_> = words(r#""a  bc""#).collect();
        assert_eq!(w, [(1, "a"), (4, "bc")]);
        let w: Vec<_> = words(r##"#"x"#"##).collect();
        assert_eq!(w, [(2, "x")]);
        let w: Vec<_> = words("bare").collect();
        assert_eq!(w, [(0, "bare")]);
    }
}
