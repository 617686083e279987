//! bbc's configuration compiler: KDL source → checked model → lowered
//! [`graph::Graph`].
//!
//! The compiler is pure: it reads sources only through [`source::Sources`]
//! and returns data (a graph and diagnostics); rendering and I/O belong to
//! the caller.

pub mod check;
pub mod decode;
pub mod diagnostic;
pub mod graph;
pub mod interp;
pub mod lower;
pub mod reader;
pub mod render;
pub mod source;
pub mod syntax;

use diagnostic::{Code, Diagnostic, Severity};
use graph::Graph;
use source::{FileId, SourceFile, SourceMap, Sources};

/// The result of compiling one configuration.
pub struct Compilation {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
    /// The lowered graph, present when there are no errors.
    pub graph: Option<Graph>,
}

impl Compilation {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }
}

/// Reads `path` through `sources` and compiles it.
pub fn compile(path: &str, sources: &dyn Sources) -> Compilation {
    match sources.read(path) {
        Ok(text) => compile_source(path, text),
        Err(e) => {
            let mut map = SourceMap::default();
            let id = map.add(SourceFile::new(path, String::new()));
            let d = Diagnostic::new(
                Code::Io,
                id,
                syntax::Span::default(),
                format!("cannot read `{path}`: {e}"),
            )
            .help("check the path and that the file is readable");
            Compilation {
                sources: map,
                diagnostics: vec![d],
                graph: None,
            }
        }
    }
}

/// Compiles source text that is already in memory.
pub fn compile_source(name: &str, text: impl Into<String>) -> Compilation {
    let mut map = SourceMap::default();
    let file = map.add(SourceFile::new(name, text));
    let (doc, parse_errors) = syntax::parse(&map.get(file).text);
    let mut diagnostics: Vec<Diagnostic> = parse_errors
        .into_iter()
        .map(|e| syntax_diagnostic(file, e))
        .collect();
    // After a syntax error the tree is partial; checking it would report
    // consequences of the same mistake, so stop at syntax.
    if !diagnostics.is_empty() {
        return Compilation {
            sources: map,
            diagnostics,
            graph: None,
        };
    }
    let mut cx = reader::Cx {
        file,
        source: map.get(file),
        diags: Vec::new(),
    };
    let model = decode::decode(&mut cx, &doc);
    // The tree is the largest structure; free it before checking.
    drop(doc);
    diagnostics.append(&mut cx.diags);
    check::check(file, &model, &mut diagnostics);
    diagnostics.sort_by(|a, b| {
        (a.primary.file, a.primary.span.start, a.code).cmp(&(
            b.primary.file,
            b.primary.span.start,
            b.code,
        ))
    });
    diagnostics.dedup();
    let graph = if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        None
    } else {
        Some(lower::lower(model))
    };
    Compilation {
        sources: map,
        diagnostics,
        graph,
    }
}

fn syntax_diagnostic(file: FileId, e: syntax::ParseError) -> Diagnostic {
    let mut d = Diagnostic::new(Code::Syntax, file, e.span, e.message)
        .label(e.label.unwrap_or_else(|| "here".into()));
    d.help = Some(e.help.unwrap_or_else(|| {
        "fix the KDL 2.0 syntax at the marked place (the language reference is docs/language.md)".into()
    }));
    d
}
