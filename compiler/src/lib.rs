//! bbc's configuration compiler: KDL source → checked model → lowered
//! [`graph::Graph`].
//!
//! The compiler is pure: it reads sources only through [`source::Sources`]
//! and returns data (a graph and diagnostics); rendering and I/O belong to
//! the caller.

pub mod check;
pub mod decode;
pub mod diagnostic;
pub mod expand;
pub mod expr;
pub mod fmt;
pub use bbc_graph as graph;
pub mod interp;
pub mod load;
pub mod lower;
pub mod reader;
pub mod render;
pub mod schema;
pub mod source;
pub mod stdlib;
pub mod syntax;

use diagnostic::{Code, Diagnostic, Severity};

/// The compiler's maps and sets keyed by names, texts and positions of
/// the config: a fixed fast hash, not SipHash, which showed in a
/// keystroke's profile (every entity, step and reference is looked up).
/// The config is the admin's own, so keys chosen to collide would only
/// slow its author's own check.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
/// See [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;
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

/// Reads `path` through `sources` and compiles it, following its imports.
pub fn compile(path: &str, sources: &dyn Sources) -> Compilation {
    match sources.read(path) {
        Ok(text) => compile_with(path, text, sources),
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

/// Compiles source text that is already in memory (it may import only the
/// standard library).
pub fn compile_source(name: &str, text: impl Into<String>) -> Compilation {
    compile_with(name, text.into(), &source::MemorySources::default())
}

/// Compiles `text` (the file `name`), reading its imports through `sources`.
pub fn compile_with(name: &str, text: String, sources: &dyn Sources) -> Compilation {
    compile_inner(name, text, sources, None, true, None).0
}

/// Checks `path` like [`compile`] for an editor: records what each node
/// accepts (the language server's completion table) and stops after the
/// checks, so the graph is always `None` (lowering and hashing produce no
/// diagnostic, and skipping them is a good part of a keystroke's cost).
/// The schema is `None` when the text could not be decoded (a syntax error
/// stops before decoding).
///
/// Recording the schema costs a few per cent of a compilation, so it is
/// done only when `schema` is set (the server asks until it has one).
pub fn compile_for_editor(
    path: &str,
    sources: &dyn Sources,
    schema: bool,
) -> (Compilation, Editor) {
    match sources.read(path) {
        Ok(text) => compile_inner(path, text, sources, Some(schema), false, None),
        Err(_) => (compile(path, sources), Editor::default()),
    }
}

/// What an editor wants beside the diagnostics ([`compile_for_editor`]).
#[derive(Default)]
pub struct Editor {
    /// What each node accepts; `None` when decoding did not run.
    pub schema: Option<schema::Schema>,
    /// Each `use` and `matrix` written in a file (its file and span there)
    /// and one line per node it expanded to.
    pub expansions: Vec<(FileId, syntax::Span, Vec<String>)>,
}

fn compile_inner(
    name: &str,
    text: String,
    sources: &dyn Sources,
    // `None`: not for an editor; `Some(schema)`: for one, recording the
    // schema when `schema`.
    editor: Option<bool>,
    lower: bool,
    // The expander's threads and the matrix size from which it uses them
    // (tests); `None`: the machine's cores.
    threads: Option<(usize, usize)>,
) -> (Compilation, Editor) {
    let mut l = load::Loader::new(sources);
    l.load_root(name, text);
    let load::Loader {
        map,
        spans,
        docs,
        mut diags,
        sites,
        syntax_failed,
        ..
    } = l;
    // After a syntax error the tree is partial; checking it would report
    // consequences of the same mistake, so stop at syntax.
    if syntax_failed {
        return (finish(map, &spans, &sites, diags, None), Editor::default());
    }
    let expand = |threads: Option<(usize, usize)>| {
        let mut ex = expand::Expander::new(&map, spans.clone());
        if let Some((n, min)) = threads {
            ex.threads(n, min);
        }
        if editor.is_some() {
            ex.record_expansions();
        }
        for d in &docs {
            ex.declare(d);
        }
        let doc = ex.expand(&docs);
        (ex, doc)
    };
    let (mut ex, mut doc) = expand(threads);
    if ex.redo_serially() {
        (ex, doc) = expand(Some((1, usize::MAX)));
    }
    drop(docs);
    let expansions = ex.take_expansions();
    let (spans, mut ediags, run_parts) = ex.finish();
    diags.append(&mut ediags);
    let mut cx = reader::Cx {
        file: FileId(0),
        source: source::SrcText {
            sources: &map,
            spans: &spans,
        },
        diags: Vec::new(),
        run_parts,
        checked: Default::default(),
        schema: (editor == Some(true)).then(|| {
            let mut s = Box::new(schema::Schema::new());
            s.learn_paths(&doc.nodes);
            s
        }),
    };
    let model = decode::decode(&mut cx, &doc);
    // The tree is the largest structure; free it before checking, with the
    // run-time parts of strings no run-time setting read.
    drop(doc);
    drop(std::mem::take(&mut cx.run_parts));
    diags.append(&mut cx.diags);
    check::check(FileId(0), &model, &mut diags);
    let errors = diags.iter().any(|d| d.severity == Severity::Error);
    let model = (!errors && lower).then_some(model);
    let editor = Editor {
        schema: cx.schema.take().map(|b| *b),
        expansions: expansions
            .into_iter()
            .filter_map(|(site, names)| {
                let (file, span, origins) = spans.resolve(site);
                // Only what is written in a file, not copies of a body.
                origins.is_empty().then_some((file, span, names))
            })
            .collect(),
    };
    (finish(map, &spans, &sites, diags, model), editor)
}

fn finish(
    map: SourceMap,
    spans: &source::SpanMap,
    sites: &[Option<syntax::Span>],
    diags: Vec<Diagnostic>,
    model: Option<decode::Model>,
) -> Compilation {
    let mut tagged: Vec<(Diagnostic, bool)> = diags
        .into_iter()
        .map(|d| load::remap(d, spans, sites))
        .collect();
    tagged.sort_by(|(a, _), (b, _)| {
        (a.primary.file, a.primary.span.start, a.code).cmp(&(
            b.primary.file,
            b.primary.span.start,
            b.code,
        ))
    });
    // One mistake in a template or matrix body is one diagnostic, however
    // often the body was expanded (the first expansion is shown).
    tagged.dedup_by(|(a, expanded), (b, _)| {
        a == b
            || (*expanded && a.code == b.code && a.primary == b.primary && a.message == b.message)
    });
    let diagnostics: Vec<Diagnostic> = tagged.into_iter().map(|(d, _)| d).collect();
    let graph = match model {
        Some(m) if !diagnostics.iter().any(|d| d.severity == Severity::Error) => {
            Some(lower::lower(m))
        }
        _ => None,
    };
    Compilation {
        sources: map,
        diagnostics,
        graph,
    }
}

pub(crate) fn syntax_diagnostic(file: FileId, e: syntax::ParseError) -> Diagnostic {
    let mut d = Diagnostic::new(Code::Syntax, file, e.span, e.message)
        .label(e.label.unwrap_or_else(|| "here".into()));
    d.help = Some(e.help.unwrap_or_else(|| {
        "fix the KDL 2.0 syntax at the marked place (the language reference is docs/language.md)".into()
    }));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expanding large matrices on several threads gives exactly what one
    /// thread gives: the same diagnostics in the same order, the same
    /// graph, for every example and golden case (with matrices of two
    /// combinations on split too, so the small cases fork as well).
    #[test]
    fn threads_do_not_change_the_result() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for dir in ["examples", "tests/golden", "runtime/tests/graphs"] {
            let Ok(rd) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            files.extend(
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "kdl")),
            );
        }
        files.sort();
        assert!(files.len() > 100, "found only {} configs", files.len());
        let sources = source::DiskSources;
        let mut forked = 0;
        for f in &files {
            let path = f.to_string_lossy();
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            let run = |threads| {
                let (c, e) =
                    compile_inner(&path, text.clone(), &sources, Some(false), true, threads);
                let graph = c
                    .graph
                    .as_ref()
                    .map(|g| serde_json::to_string(g).unwrap_or_default());
                (c.diagnostics, graph, e.expansions)
            };
            let one = run(Some((1, usize::MAX)));
            for threads in [2, 3] {
                let many = run(Some((threads, 2)));
                assert!(
                    one.0 == many.0,
                    "{path}: diagnostics differ on {threads} threads"
                );
                assert!(
                    one.1 == many.1,
                    "{path}: graphs differ on {threads} threads"
                );
                assert!(
                    one.2 == many.2,
                    "{path}: expansions differ on {threads} threads"
                );
            }
            forked += usize::from(text.contains("matrix"));
        }
        assert!(forked > 5, "only {forked} configs have a matrix");
    }

    /// A fork that meets a template with a mistake (reported once, at its
    /// first use, by one thread) hands its run back; the result is still
    /// exactly one thread's, wherever the first use falls.
    #[test]
    fn threads_agree_on_templates_with_mistakes() {
        let sources = source::MemorySources::default();
        for first_bad in [0, 17, 39] {
            let text = format!(
                r#"
worker "w" password=(secret)"w"
template "loop-a" extends="loop-b" {{ shell "a" }}
template "loop-b" extends="loop-a" {{ shell "b" }}
template "ok" {{ param "x"; shell "echo ${{{{ x }}}}" }}
matrix {{
    axis "i" 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
    builder "b-${{{{ i }}}}" {{
        workers "w"
        steps {{
            use "ok" x="${{{{ i }}}}"
            use "loop-a" when="${{{{ i >= {first_bad} }}}}"
            use "missing" when="${{{{ i >= {first_bad} && i % 3 == 0 }}}}"
            shell "${{{{ nope }}}}" when="${{{{ i == 38 }}}}"
        }}
    }}
}}
"#
            );
            let run = |threads| {
                let (c, e) =
                    compile_inner("m.kdl", text.clone(), &sources, Some(false), true, threads);
                (c.diagnostics, e.expansions)
            };
            let one = run(Some((1, usize::MAX)));
            assert!(one.0.len() >= 3, "{:?}", one.0);
            for threads in [2, 3, 4] {
                let many = run(Some((threads, 2)));
                assert!(
                    one == many,
                    "{threads} threads, first bad use at {first_bad}"
                );
            }
        }
    }
}
