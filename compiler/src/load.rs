//! Loading: the root file and everything it imports, each parsed into a
//! tree whose spans are in the global offset space ([`SpanMap`]); and, at
//! the end, turning global spans in diagnostics back into files.

use crate::diagnostic::{Code, Diagnostic, Label};
use crate::source::{FileId, SourceFile, SourceMap, Sources, SpanMap};
use crate::syntax::{self, Document, Node, Span};

pub struct Loader<'s> {
    sources: &'s dyn Sources,
    pub map: SourceMap,
    pub spans: SpanMap,
    /// Parsed files, imported ones before their importer.
    pub docs: Vec<Document>,
    pub diags: Vec<Diagnostic>,
    /// For each file, the `import` that loaded it (global span).
    pub sites: Vec<Option<Span>>,
    pub syntax_failed: bool,
    /// Paths being loaded, for cycle detection.
    stack: Vec<String>,
    loaded: Vec<String>,
}

impl<'s> Loader<'s> {
    pub fn new(sources: &'s dyn Sources) -> Self {
        Loader {
            sources,
            map: SourceMap::default(),
            spans: SpanMap::default(),
            docs: Vec::new(),
            diags: Vec::new(),
            sites: Vec::new(),
            syntax_failed: false,
            stack: Vec::new(),
            loaded: Vec::new(),
        }
    }

    pub fn load_root(&mut self, name: &str, text: String) {
        self.load(name, text, None);
    }

    fn load(&mut self, path: &str, text: String, site: Option<Span>) {
        let len = text.len();
        let id = self.map.add(SourceFile::new(path, text));
        self.sites.push(site);
        self.loaded.push(path.to_string());
        let Some(base) = self.spans.add_file(id, len) else {
            return;
        };
        let (mut doc, errors) = syntax::parse(&self.map.get(id).text);
        if !errors.is_empty() {
            self.syntax_failed = true;
            for mut e in errors {
                e.span = shift(e.span, base);
                self.diags.push(crate::syntax_diagnostic(FileId(0), e));
            }
            return;
        }
        if base != 0 {
            for n in &mut doc.nodes {
                shift_node(n, base);
            }
        }
        self.stack.push(path.to_string());
        for n in &doc.nodes {
            if n.name.value == "import" {
                self.import(path, n);
            }
        }
        self.stack.pop();
        self.docs.push(doc);
    }

    fn import(&mut self, from: &str, n: &Node) {
        let bad = |me: &mut Self, span: Span, msg: &str, label: &str| {
            me.diags.push(
                Diagnostic::new(Code::InvalidDeclaration, FileId(0), span, msg)
                    .label(label)
                    .help("write `import \"relative/path.kdl\"` or `import \"std/NAME.kdl\"`"),
            );
        };
        let mut args = n.entries.iter();
        let Some(e) = args.next() else {
            bad(self, n.name.span, "`import` needs a path", "path missing");
            return;
        };
        if let Some(extra) = args.next() {
            bad(self, extra.span, "`import` takes one path", "unexpected");
        }
        if n.children.is_some() {
            bad(self, n.name.span, "`import` takes no block", "has a block");
        }
        let syntax::Value::String(p) = &e.value else {
            bad(
                self,
                e.value_span,
                "an import path must be a string",
                "not a path",
            );
            return;
        };
        if e.name.is_some() {
            bad(self, e.span, "an import path is an argument", "a property");
            return;
        }
        if p.contains("://") {
            self.diags.push(
                Diagnostic::new(
                    Code::NotYetSupported,
                    FileId(0),
                    e.value_span,
                    "remote imports are not supported",
                )
                .label("a URL")
                .help("vendor the file next to the config and import it by relative path"),
            );
            return;
        }
        let path = if p.starts_with("std/") {
            String::from(&**p)
        } else if from.starts_with("std/") {
            // The standard library imports only itself.
            format!("std/{}", p.trim_start_matches("./"))
        } else {
            resolve_relative(from, p)
        };
        if let Some(at) = self.stack.iter().position(|s| *s == path) {
            let mut chain: Vec<&str> = self.stack[at..].iter().map(String::as_str).collect();
            chain.push(&path);
            self.diags.push(
                Diagnostic::new(
                    Code::ImportCycle,
                    FileId(0),
                    e.value_span,
                    format!("import cycle: {}", chain.join(" → ")),
                )
                .label("imports a file that is still being loaded")
                .help("files cannot import each other; move what both need into a third file"),
            );
            return;
        }
        if self.loaded.contains(&path) {
            return;
        }
        let text = if let Some(rest) = path.strip_prefix("std/") {
            match crate::stdlib::get(rest) {
                Some(t) => Ok(t.to_string()),
                None => Err(format!(
                    "the standard library has no `{rest}`; it has {}",
                    crate::stdlib::FILES
                        .iter()
                        .map(|(n, _)| format!("`std/{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        } else {
            self.sources.read(&path).map_err(|err| {
                format!("cannot read `{path}`: {err}; paths are relative to the importing file")
            })
        };
        match text {
            Ok(t) => self.load(&path, t, Some(e.value_span)),
            Err(help) => self.diags.push(
                Diagnostic::new(
                    Code::UnknownImport,
                    FileId(0),
                    e.value_span,
                    format!("cannot import `{p}`"),
                )
                .label("no such file")
                .help(help),
            ),
        }
    }
}

/// `dir/of/from` + `p`, with `.` and `..` folded.
fn resolve_relative(from: &str, p: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    if p.starts_with('/') {
        parts.clear();
        parts.push("");
    }
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != ".." && !l.is_empty()) {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn shift(s: Span, base: u32) -> Span {
    Span {
        start: s.start.saturating_add(base),
        end: s.end.saturating_add(base),
    }
}

fn shift_node(n: &mut Node, base: u32) {
    n.span = shift(n.span, base);
    n.name.span = shift(n.name.span, base);
    if let Some(t) = &mut n.ty {
        t.span = shift(t.span, base);
    }
    for e in &mut n.entries {
        e.span = shift(e.span, base);
        e.value_span = shift(e.value_span, base);
        if let Some(k) = &mut e.name {
            k.span = shift(k.span, base);
        }
        if let Some(t) = &mut e.ty {
            t.span = shift(t.span, base);
        }
    }
    if let Some(c) = &mut n.children {
        c.span = shift(c.span, base);
        for k in &mut c.nodes {
            shift_node(k, base);
        }
    }
}

/// Turns the global spans of a diagnostic into (file, span) labels, and
/// adds a label at each template use, matrix and import it came through.
/// The flag says whether it came from an expansion.
pub fn remap(mut d: Diagnostic, spans: &SpanMap, sites: &[Option<Span>]) -> (Diagnostic, bool) {
    let (file, span, origins) = spans.resolve(d.primary.span);
    let expanded = !origins.is_empty();
    let mut extra: Vec<Label> = Vec::new();
    // Each expansion site, and the sites that one was expanded at (a `use`
    // inside a matrix, a template used by a template, …).
    let mut pending: Vec<&crate::source::Origin> = origins.iter().rev().copied().collect();
    while let Some(o) = pending.pop() {
        if extra.len() >= 16 {
            break;
        }
        let (f, s, outer) = spans.resolve(o.span);
        let l = Label {
            file: f,
            span: s,
            message: o.note.to_string(),
        };
        if !extra.contains(&l) {
            extra.push(l);
        }
        pending.extend(outer.iter().rev().copied());
    }
    let mut f = file;
    for _ in 0..64 {
        let Some(Some(site)) = sites.get(f.0 as usize) else {
            break;
        };
        let (g, s, _) = spans.resolve(*site);
        extra.push(Label {
            file: g,
            span: s,
            message: "imported here".to_string(),
        });
        f = g;
    }
    d.primary.file = file;
    d.primary.span = span;
    for l in &mut d.secondary {
        let (f, s, o) = spans.resolve(l.span);
        l.file = f;
        l.span = s;
        if let Some(first) = o.first() {
            l.message = format!("{} ({})", l.message, first.note);
        }
    }
    d.secondary.extend(extra);
    (d, expanded)
}
