//! The server's state: the texts the editor has open, and for each root
//! config the last compilation of it with its files, diagnostics and index.
//!
//! A file opened in the editor is checked as part of the root that imports
//! it when one is known (the `*.kdl` files at the top of the workspace
//! folder are read at start to learn their imports), else as a root itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use bbc_compiler::diagnostic::{Diagnostic, Severity};
use bbc_compiler::source::{SourceFile, SourceMap, Sources};
use bbc_compiler::syntax::Document;
use lsp_types as lsp;
use lsp_types::Url;

use super::complete;
use super::index::{Def, Index};
use super::reference;
use super::reuse::{same_tree, Shift};
use super::text::LineIndex;

struct OpenDoc {
    text: String,
    version: i32,
}

/// One compilation of a root config.
#[derive(Clone)]
struct Analysis {
    /// Every file it read, in the compiler's order: a path, or `None` for
    /// a file of the embedded standard library that has no source on this
    /// machine ([`stdlib_source`]).
    files: Vec<(Option<PathBuf>, String)>,
    /// Each file's name as the compiler knows it (`std/…` for the standard
    /// library's).
    names: Vec<String>,
    /// Each file's syntax tree (as `syntax::parse` gives it; a partial one
    /// after a syntax error).
    trees: Vec<Document>,
    /// The compiler's diagnostics, in file-local spans.
    raw: Vec<Diagnostic>,
    diagnostics: BTreeMap<PathBuf, Vec<lsp::Diagnostic>>,
    /// Files whose earlier diagnostics are to be cleared when published.
    cleared: Vec<PathBuf>,
    index: Index,
    /// What each node accepted in this compilation, until merged into
    /// [`Workspace::schema`]; `None` when it stopped before decoding.
    schema: Option<bbc_compiler::schema::Schema>,
    /// Each `use` and `matrix` written in a file (file index, span) and
    /// what it expanded to.
    expansions: Vec<(usize, bbc_compiler::syntax::Span, Vec<String>)>,
}

impl Analysis {
    fn file_index(&self, path: &Path) -> Option<usize> {
        self.files
            .iter()
            .position(|(p, _)| p.as_deref() == Some(path))
    }
}

pub struct Workspace {
    open: HashMap<PathBuf, OpenDoc>,
    analyses: BTreeMap<PathBuf, Analysis>,
    /// Roots whose files changed since their last compilation.
    dirty: BTreeSet<PathBuf>,
    /// Roots compiled (for a request) but not yet published: the debounced
    /// check publishes them without compiling again.
    unpublished: BTreeSet<PathBuf>,
    /// What each node accepts, merged from every compilation that got as
    /// far as decoding: completion keeps working while the text has a
    /// syntax error.
    schema: bbc_compiler::schema::Schema,
    /// Whether the next compilation records the schema: until one has
    /// (recording costs a few per cent of each keystroke's compilation),
    /// and again when completion meets a node it does not know.
    want_schema: bool,
    /// Build property names declared in any compilation so far: a text
    /// being typed often does not parse past the cursor, so the names
    /// declared further down survive from the versions that did.
    properties: std::collections::BTreeSet<String>,
    /// Where each diagnostic code's documentation is: a URL of
    /// docs/diagnostics.md, to which the code's anchor is appended
    /// ([`docs_url`]); `None` gives diagnostics no link.
    docs_url: Option<String>,
    /// Node paths completion asked the schema to be recorded again for.
    retried: BTreeSet<String>,
}

/// Reads the editor's text for open files, the disk for the rest; never
/// writes.
struct Overlay<'a>(&'a HashMap<PathBuf, OpenDoc>);

impl Sources for Overlay<'_> {
    fn read(&self, path: &str) -> std::io::Result<String> {
        match self.0.get(Path::new(path)) {
            Some(d) => Ok(d.text.clone()),
            None => std::fs::read_to_string(path),
        }
    }
}

impl Workspace {
    pub fn new(params: &lsp::InitializeParams) -> Workspace {
        let mut ws = Workspace {
            open: HashMap::new(),
            analyses: BTreeMap::new(),
            dirty: BTreeSet::new(),
            unpublished: BTreeSet::new(),
            schema: bbc_compiler::schema::Schema::new(),
            want_schema: true,
            properties: Default::default(),
            docs_url: docs_url(params.initialization_options.as_ref()),
            retried: BTreeSet::new(),
        };
        let mut folders: Vec<PathBuf> = params
            .workspace_folders
            .iter()
            .flatten()
            .filter_map(|f| f.uri.to_file_path().ok())
            .collect();
        #[allow(deprecated)]
        if let Some(root) = params.root_uri.as_ref().and_then(|u| u.to_file_path().ok()) {
            folders.push(root);
        }
        for dir in folders {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut roots: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
                .collect();
            roots.sort();
            for r in roots {
                let a = ws.analyse(&r, None);
                ws.analyses.insert(r, a);
                ws.merge_schemas();
            }
        }
        ws
    }

    pub fn open(&mut self, uri: Url, text: String, version: i32) {
        if let Ok(path) = uri.to_file_path() {
            self.open.insert(path.clone(), OpenDoc { text, version });
            self.touch(path);
        }
    }

    pub fn change(&mut self, uri: Url, text: String, version: i32) {
        self.open(uri, text, version);
    }

    pub fn close(&mut self, uri: &Url) {
        if let Ok(path) = uri.to_file_path() {
            self.open.remove(&path);
            self.touch(path);
        }
    }

    /// Marks the roots that read `path` (or `path` itself) to be checked.
    fn touch(&mut self, path: PathBuf) {
        let roots: Vec<PathBuf> = self
            .analyses
            .iter()
            .filter(|(_, a)| a.file_index(&path).is_some())
            .map(|(r, _)| r.clone())
            .collect();
        if roots.is_empty() {
            self.dirty.insert(path);
        } else {
            self.dirty.extend(roots);
        }
    }

    /// Compiles `root`; `old`, its last compilation, lends the trees of
    /// the files that did not change.
    fn analyse(&self, root: &Path, old: Option<&Analysis>) -> Analysis {
        let name = root.to_string_lossy();
        let (c, editor) =
            bbc_compiler::compile_for_editor(&name, &Overlay(&self.open), self.want_schema);
        let names: Vec<String> = c.sources.files().map(|(_, f)| f.name.clone()).collect();
        let files: Vec<(Option<PathBuf>, String)> = c
            .sources
            .files()
            .map(|(_, f)| {
                let p = match f.name.strip_prefix("std/") {
                    Some(name) => stdlib_source(name, &f.text),
                    None => Some(PathBuf::from(&f.name)),
                };
                (p, f.text.clone())
            })
            .collect();
        let trees: Vec<Document> = c
            .sources
            .files()
            .map(|(_, f)| {
                let kept = old.and_then(|o| {
                    let i = o.names.iter().position(|n| *n == f.name)?;
                    (o.files[i].1 == f.text).then(|| o.trees[i].clone())
                });
                kept.unwrap_or_else(|| bbc_compiler::syntax::parse(&f.text).0)
            })
            .collect();
        let diagnostics = lsp_diagnostics(&c.sources, &c.diagnostics, self.docs_url.as_deref());
        let texts: Vec<&str> = files.iter().map(|(_, t)| t.as_str()).collect();
        let index = Index::build(&trees, &texts);
        Analysis {
            files,
            names,
            trees,
            raw: c.diagnostics,
            diagnostics,
            cleared: Vec::new(),
            index,
            schema: editor.schema,
            expansions: editor
                .expansions
                .into_iter()
                .map(|(f, span, names)| (f.0 as usize, span, names))
                .collect(),
        }
    }

    /// `old` again for the texts as they are now, without compiling, when
    /// no file changed but between its tokens (a comment typed, a line
    /// added, indentation: reuse.rs says why the findings are then the
    /// same, moved); `None` when it has to be compiled again.
    fn reuse(&self, old: &Analysis) -> Option<Analysis> {
        use bbc_compiler::diagnostic::Code;
        // A completion asked for the schema, which takes a compilation;
        // an import that failed may be there now; after a syntax error the
        // old tree is partial (an unclosed `/*` closed now: same nodes).
        if self.want_schema
            || old
                .raw
                .iter()
                .any(|d| matches!(d.code, Code::Io | Code::UnknownImport | Code::Syntax))
        {
            return None;
        }
        let mut changed = None;
        for (i, (path, text)) in old.files.iter().enumerate() {
            if old.names[i].starts_with("std/") {
                continue;
            }
            let now = match self.open.get(path.as_deref()?) {
                Some(d) => std::borrow::Cow::Borrowed(d.text.as_str()),
                None => std::borrow::Cow::Owned(std::fs::read_to_string(path.as_deref()?).ok()?),
            };
            if now != text.as_str() {
                if changed.is_some() {
                    return None;
                }
                changed = Some((i, now.into_owned()));
            }
        }
        let mut a = old.clone();
        a.cleared = Vec::new();
        a.schema = None;
        let Some((file, text)) = changed else {
            return Some(a);
        };
        let (tree, errors) = bbc_compiler::syntax::parse(&text);
        let shift = Shift::between(&a.files[file].1, &text)?;
        if !errors.is_empty() || !same_tree(&a.trees[file], &tree, &shift) {
            return None;
        }
        let id = bbc_compiler::source::FileId(file as u32);
        for d in &mut a.raw {
            for l in std::iter::once(&mut d.primary).chain(&mut d.secondary) {
                if l.file == id {
                    l.span = shift.span(l.span)?;
                }
            }
        }
        for (f, span, _) in &mut a.expansions {
            if *f == file {
                *span = shift.span(*span)?;
            }
        }
        a.files[file].1 = text;
        a.trees[file] = tree;
        let mut map = SourceMap::default();
        for (n, (_, t)) in a.names.iter().zip(&a.files) {
            map.add(SourceFile::new(n.clone(), t.clone()));
        }
        a.diagnostics = lsp_diagnostics(&map, &a.raw, self.docs_url.as_deref());
        let texts: Vec<&str> = a.files.iter().map(|(_, t)| t.as_str()).collect();
        a.index = Index::build(&a.trees, &texts);
        Some(a)
    }

    /// Checks every root marked dirty; the diagnostics to publish, per
    /// file (an empty list clears a file's earlier ones).
    pub fn check_dirty(&mut self) -> Vec<(Url, Vec<lsp::Diagnostic>, Option<i32>)> {
        self.compile_dirty();
        let mut out = Vec::new();
        for root in std::mem::take(&mut self.unpublished) {
            let Some(a) = self.analyses.get(&root) else {
                continue;
            };
            for gone in &a.cleared {
                if let Ok(uri) = Url::from_file_path(gone) {
                    out.push((uri, Vec::new(), None));
                }
            }
            for (p, ds) in &a.diagnostics {
                if let Ok(uri) = Url::from_file_path(p) {
                    let version = self.open.get(p).map(|d| d.version);
                    out.push((uri, ds.clone(), version));
                }
            }
        }
        out
    }

    /// Compiles the dirty roots; each is then due to be published.
    fn compile_dirty(&mut self) {
        for root in std::mem::take(&mut self.dirty) {
            let old = self.analyses.get(&root);
            let mut a = match old.and_then(|o| self.reuse(o)) {
                Some(a) => a,
                None => self.analyse(&root, old),
            };
            // Files the last compilation of this root had diagnostics for
            // and this one does not read any more (an import removed).
            if let Some(old) = self.analyses.get(&root) {
                a.cleared = old
                    .diagnostics
                    .keys()
                    .filter(|p| !a.diagnostics.contains_key(*p))
                    .cloned()
                    .collect();
            }
            self.analyses.insert(root.clone(), a);
            self.merge_schemas();
            self.unpublished.insert(root);
        }
    }

    /// The analysis that holds `uri`'s file, checked first if due.
    fn analysis_of(&mut self, uri: &Url) -> Option<(&Analysis, usize)> {
        let path = uri.to_file_path().ok()?;
        // Answers reflect the text the editor sent last; publishing stays
        // with the debounced check, which will not compile it again.
        self.compile_dirty();
        if !self
            .analyses
            .values()
            .any(|a| a.file_index(&path).is_some())
        {
            let a = self.analyse(&path, None);
            self.analyses.insert(path.clone(), a);
            self.merge_schemas();
        }
        self.analyses
            .values()
            .find_map(|a| a.file_index(&path).map(|i| (a, i)))
    }

    pub fn format(&mut self, p: &lsp::DocumentFormattingParams) -> Option<Vec<lsp::TextEdit>> {
        let path = p.text_document.uri.to_file_path().ok()?;
        let text = match self.open.get(&path) {
            Some(d) => d.text.clone(),
            None => std::fs::read_to_string(&path).ok()?,
        };
        let out = bbc_compiler::fmt::format_source(&path.to_string_lossy(), &text).ok()?;
        if out == text {
            return Some(Vec::new());
        }
        let ix = LineIndex::new(&text);
        Some(vec![lsp::TextEdit {
            range: ix.range(0, text.len()),
            new_text: out,
        }])
    }

    #[allow(deprecated)]
    pub fn symbols(
        &mut self,
        p: &lsp::DocumentSymbolParams,
    ) -> Option<lsp::DocumentSymbolResponse> {
        let (a, file) = self.analysis_of(&p.text_document.uri)?;
        let ix = LineIndex::new(&a.files[file].1);
        let syms = a
            .index
            .defs
            .iter()
            .filter(|d| d.file == file)
            .map(|d| lsp::DocumentSymbol {
                name: d.name.clone(),
                detail: Some(d.kind.to_string()),
                kind: symbol_kind(d.kind),
                tags: None,
                deprecated: None,
                range: ix.range(d.span.start as usize, d.span.end as usize),
                selection_range: ix.range(d.name_span.start as usize, d.name_span.end as usize),
                children: None,
            })
            .collect();
        Some(lsp::DocumentSymbolResponse::Nested(syms))
    }

    fn def_at(&mut self, p: &lsp::TextDocumentPositionParams) -> Option<(&Analysis, Def)> {
        let (a, file) = self.analysis_of(&p.text_document.uri)?;
        let offset = LineIndex::new(&a.files[file].1).offset(p.position) as u32;
        let d = a.index.def_at(file, offset)?.clone();
        Some((a, d))
    }

    pub fn definition(
        &mut self,
        p: &lsp::GotoDefinitionParams,
    ) -> Option<lsp::GotoDefinitionResponse> {
        let (a, d) = self.def_at(&p.text_document_position_params)?;
        let loc = location(a, d.file, d.name_span)?;
        Some(lsp::GotoDefinitionResponse::Scalar(loc))
    }

    pub fn references(&mut self, p: &lsp::ReferenceParams) -> Option<Vec<lsp::Location>> {
        let with_decl = p.context.include_declaration;
        let (a, d) = self.def_at(&p.text_document_position)?;
        let mut out = Vec::new();
        if with_decl {
            out.extend(location(a, d.file, d.name_span));
        }
        out.extend(
            a.index
                .refs_to(&d)
                .filter_map(|r| location(a, r.file, r.span)),
        );
        Some(out)
    }

    pub fn hover(&mut self, p: &lsp::HoverParams) -> Option<lsp::Hover> {
        if let Some(h) = self.hover_expansion(&p.text_document_position_params) {
            return Some(h);
        }
        let Some((a, d)) = self.def_at(&p.text_document_position_params) else {
            return self.hover_reference(p);
        };
        let (path, text) = &a.files[d.file];
        let ix = LineIndex::new(text);
        let line = ix.position(d.span.start as usize).line;
        let first = text[d.span.start as usize..].lines().next().unwrap_or("");
        let place = match path {
            Some(p) => format!("{}:{}", p.display(), line + 1),
            None => "the standard library".to_string(),
        };
        let uses = a.index.refs_to(&d).count();
        let value = format!(
            "**{}** `{}` — defined at {place}, referred to {uses} time{}\n\n```kdl\n{first}\n```",
            d.kind,
            d.name,
            if uses == 1 { "" } else { "s" }
        );
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value,
            }),
            range: None,
        })
    }

    /// Completion at the cursor, from the text the editor sent last (which
    /// may not parse) and what the compilations recorded (complete.rs).
    pub fn completion(&mut self, p: &lsp::CompletionParams) -> Option<lsp::CompletionResponse> {
        let pos = &p.text_document_position;
        let path = pos.text_document.uri.to_file_path().ok()?;
        let text = match self.open.get(&path) {
            Some(d) => d.text.clone(),
            None => std::fs::read_to_string(&path).ok()?,
        };
        let ix = LineIndex::new(&text);
        let offset = ix.offset(pos.position);
        let (place, start) = complete::place(&text, offset);
        self.analysis_of(&pos.text_document.uri);
        let unknown = place
            .path()
            .filter(|p| !self.schema.knows(p))
            .map(|p| p.join("/"));
        // A node the recorded schema has not met at this path: record
        // again (now, if the text decodes; else at the next compilation),
        // once per path (one written inside a template or matrix is never
        // in the expanded tree).
        if unknown.is_some_and(|p| !self.want_schema && self.retried.insert(p)) {
            self.want_schema = true;
            self.touch(path.clone());
            self.compile_dirty();
        }
        let index = self
            .analyses
            .values()
            .find(|a| a.file_index(&path).is_some())
            .map(|a| &a.index);
        let range = ix.range(start, offset);
        let items = complete::items(&place, &self.schema, index, &self.properties)
            .into_iter()
            .map(|i| lsp::CompletionItem {
                label: i.label.clone(),
                detail: Some(i.detail.to_string()),
                kind: Some(match i.detail {
                    "node" => lsp::CompletionItemKind::KEYWORD,
                    "property" => lsp::CompletionItemKind::PROPERTY,
                    "value" => lsp::CompletionItemKind::ENUM_MEMBER,
                    "variable" => lsp::CompletionItemKind::VARIABLE,
                    _ => lsp::CompletionItemKind::REFERENCE,
                }),
                text_edit: Some(lsp::CompletionTextEdit::Edit(lsp::TextEdit {
                    range,
                    new_text: i.label,
                })),
                ..Default::default()
            })
            .collect();
        Some(lsp::CompletionResponse::Array(items))
    }

    fn merge_schemas(&mut self) {
        for a in self.analyses.values_mut() {
            self.properties.extend(a.index.properties.iter().cloned());
            if let Some(s) = a.schema.take() {
                self.schema.merge(s);
                self.want_schema = false;
            }
        }
    }

    /// Hover on a `use` or `matrix` (its keyword, or the template it
    /// names): what it expanded to, as the compiler's expansion recorded.
    fn hover_expansion(&mut self, p: &lsp::TextDocumentPositionParams) -> Option<lsp::Hover> {
        const SHOWN: usize = 20;
        let (a, file) = self.analysis_of(&p.text_document.uri)?;
        let text = &a.files[file].1;
        let ix = LineIndex::new(text);
        let offset = ix.offset(p.position) as u32;
        let on_template = a.index.def_at(file, offset).map(|d| d.kind == "template");
        if on_template == Some(false) {
            return None;
        }
        // The innermost `use`/`matrix` around the cursor (a `use` inside a
        // matrix's body is written inside it).
        let (_, span, names) = a
            .expansions
            .iter()
            .filter(|(f, s, _)| *f == file && s.start <= offset && offset <= s.end)
            .min_by_key(|(_, s, _)| s.end - s.start)?;
        let head = text
            .get(span.start as usize..)
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .trim_end_matches('{')
            .trim_end();
        let mut value = format!(
            "`{head}` expands to {} node{}:\n",
            names.len(),
            if names.len() == 1 { "" } else { "s" }
        );
        for n in names.iter().take(SHOWN) {
            value.push_str(&format!("\n- `{n}`"));
        }
        if names.len() > SHOWN {
            value.push_str(&format!("\n- … and {} more", names.len() - SHOWN));
        }
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value,
            }),
            range: Some(ix.range(span.start as usize, span.end as usize)),
        })
    }

    /// Hover on a name the language defines: a diagnostic code gets `bbc
    /// explain`'s text, a node or property name its language reference.
    fn hover_reference(&mut self, p: &lsp::HoverParams) -> Option<lsp::Hover> {
        let pos = &p.text_document_position_params;
        let path = pos.text_document.uri.to_file_path().ok()?;
        let text = match self.open.get(&path) {
            Some(d) => d.text.clone(),
            None => std::fs::read_to_string(&path).ok()?,
        };
        let offset = LineIndex::new(&text).offset(pos.position);
        let b = text.as_bytes();
        let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        let mut s = offset.min(b.len());
        while s > 0 && is_word(b[s - 1]) {
            s -= 1;
        }
        let mut e = offset.min(b.len());
        while e < b.len() && is_word(b[e]) {
            e += 1;
        }
        let word = text.get(s..e)?;
        let value = if let Some(code) = bbc_compiler::diagnostic::Code::parse(word) {
            crate::explain::section(code).unwrap_or_else(|| {
                format!("{} ({}): {}", code.as_str(), code.slug(), code.summary())
            })
        } else {
            let place = complete::place(&text, s).0;
            let within = place.path().and_then(|p| p.last().map(|n| n.to_string()));
            reference::entry(word, within.as_deref())?
        };
        let ix = LineIndex::new(&text);
        Some(lsp::Hover {
            contents: lsp::HoverContents::Markup(lsp::MarkupContent {
                kind: lsp::MarkupKind::Markdown,
                value,
            }),
            range: Some(ix.range(s, e)),
        })
    }

    /// Quick fixes: each diagnostic that carries a replacement (its "did
    /// you mean") offers it; one that names a missing child offers to add
    /// it inside the node (creating the block if there is none).
    pub fn code_actions(&mut self, p: &lsp::CodeActionParams) -> Vec<lsp::CodeActionOrCommand> {
        let uri = &p.text_document.uri;
        let text = uri
            .to_file_path()
            .ok()
            .and_then(|path| match self.open.get(&path) {
                Some(d) => Some(d.text.clone()),
                None => std::fs::read_to_string(&path).ok(),
            });
        p.context
            .diagnostics
            .iter()
            .filter_map(|d| {
                let data = d.data.as_ref()?;
                let (title, edit) = if let Some(new) = data.get("replace").and_then(|v| v.as_str())
                {
                    let edit = lsp::TextEdit {
                        range: d.range,
                        new_text: new.to_string(),
                    };
                    (format!("replace with `{new}`"), edit)
                } else {
                    let child = data.get("add_child")?.as_str()?;
                    let edit = add_child_edit(text.as_deref()?, d.range.start, child)?;
                    (format!("add `{child}`"), edit)
                };
                let changes = [(uri.clone(), vec![edit])].into_iter().collect();
                Some(lsp::CodeActionOrCommand::CodeAction(lsp::CodeAction {
                    title,
                    kind: Some(lsp::CodeActionKind::QUICKFIX),
                    diagnostics: Some(vec![d.clone()]),
                    edit: Some(lsp::WorkspaceEdit {
                        changes: Some(changes),
                        ..Default::default()
                    }),
                    is_preferred: Some(true),
                    ..Default::default()
                }))
            })
            .collect()
    }
}

/// Where a file of the embedded standard library can be shown (go to
/// definition of `use "cargo-test"`): its source in the bbc checkout this
/// binary was built from, when that is on this machine and says the same
/// as the embedded copy. The server writes no file, so without such a
/// checkout the definition has nowhere to go (hover still shows it).
/// Looked up once per file name.
fn stdlib_source(name: &str, text: &str) -> Option<PathBuf> {
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<String, Option<PathBuf>>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    let mut found = found.lock().unwrap_or_else(|e| e.into_inner());
    found
        .entry(name.to_string())
        .or_insert_with(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("stdlib")
                .join(name);
            (std::fs::read_to_string(&p).ok()? == text).then_some(p)
        })
        .clone()
}

/// The edit that adds the line `child` inside the node whose name starts
/// at `at`: before the closing brace of its block (on a line of its own,
/// indented one step more than the node, when the brace has one; else
/// right after the opening brace), or as a new block after its last entry.
fn add_child_edit(text: &str, at: lsp::Position, child: &str) -> Option<lsp::TextEdit> {
    use bbc_compiler::syntax::Node;
    fn find(nodes: &[Node], start: u32) -> Option<&Node> {
        nodes.iter().find_map(|n| {
            if n.name.span.start == start {
                return Some(n);
            }
            find(&n.children.as_ref()?.nodes, start)
        })
    }
    let ix = LineIndex::new(text);
    let start = ix.offset(at);
    let (doc, _) = bbc_compiler::syntax::parse(text);
    let node = find(&doc.nodes, start as u32)?;
    let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
    let indent: String = text[line_start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    let (offset, new_text) = match &node.children {
        Some(c) => {
            let close = (c.span.end as usize).checked_sub(1)?;
            let brace_line = text[..close].rfind('\n').map_or(0, |n| n + 1);
            if text[brace_line..close].trim().is_empty() {
                (brace_line, format!("{indent}    {child}\n"))
            } else {
                (c.span.start as usize + 1, format!(" {child};"))
            }
        }
        None => (
            node.span.end as usize,
            format!(" {{\n{indent}    {child}\n{indent}}}"),
        ),
    };
    let p = ix.position(offset);
    Some(lsp::TextEdit {
        range: lsp::Range::new(p, p),
        new_text,
    })
}

fn location(a: &Analysis, file: usize, span: bbc_compiler::syntax::Span) -> Option<lsp::Location> {
    let (path, text) = a.files.get(file)?;
    let uri = Url::from_file_path(path.as_ref()?).ok()?;
    let ix = LineIndex::new(text);
    Some(lsp::Location {
        uri,
        range: ix.range(span.start as usize, span.end as usize),
    })
}

fn symbol_kind(kind: &str) -> lsp::SymbolKind {
    match kind {
        "worker" => lsp::SymbolKind::OBJECT,
        "builder" => lsp::SymbolKind::FUNCTION,
        "scheduler" => lsp::SymbolKind::EVENT,
        "lock" => lsp::SymbolKind::KEY,
        "change-source" => lsp::SymbolKind::INTERFACE,
        "reporter" => lsp::SymbolKind::METHOD,
        "role" | "user" => lsp::SymbolKind::STRUCT,
        "template" => lsp::SymbolKind::CLASS,
        "variable" => lsp::SymbolKind::VARIABLE,
        _ => lsp::SymbolKind::MODULE,
    }
}

/// Where diagnostic codes are documented (docs/diagnostics.md), in this
/// order: the client's `initializationOptions.diagnosticsUrl`; the
/// repository named in bbc's Cargo.toml (`repository`), on its `main`
/// branch; the file in the bbc checkout this binary was built from, when it
/// is on this machine. `None`: diagnostics carry no link (hover on the code
/// still shows `bbc explain`'s text).
fn docs_url(options: Option<&serde_json::Value>) -> Option<String> {
    if let Some(u) = options
        .and_then(|o| o.get("diagnosticsUrl"))
        .and_then(|u| u.as_str())
        .filter(|u| Url::parse(u).is_ok())
    {
        return Some(u.trim_end_matches('#').to_string());
    }
    let repo = env!("CARGO_PKG_REPOSITORY").trim_end_matches('/');
    if !repo.is_empty() {
        return Some(format!("{repo}/blob/main/docs/diagnostics.md"));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md");
    if local.is_file() {
        return Url::from_file_path(&local).ok().map(String::from);
    }
    None
}

/// The anchor of a code's section in docs/diagnostics.md, as Markdown
/// renderers (GitHub, mdBook) derive it from the heading `## E0104
/// missing-value`.
fn code_anchor(code: bbc_compiler::diagnostic::Code) -> String {
    format!("{}-{}", code.as_str().to_ascii_lowercase(), code.slug())
}

/// The replacement a "did you mean `X`?" help offers.
fn suggestion(help: &str) -> Option<&str> {
    let at = help.find("did you mean `")? + "did you mean `".len();
    let rest = &help[at..];
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// The diagnostics of a compilation as LSP shows them, per file: every
/// file it read that is not the standard library's has a list, empty when
/// it has no findings (publishing it clears the earlier ones).
fn lsp_diagnostics(
    map: &SourceMap,
    raw: &[Diagnostic],
    docs: Option<&str>,
) -> BTreeMap<PathBuf, Vec<lsp::Diagnostic>> {
    let mut out: BTreeMap<PathBuf, Vec<lsp::Diagnostic>> = BTreeMap::new();
    for (_, f) in map.files() {
        if !f.name.starts_with("std/") {
            out.entry(PathBuf::from(&f.name)).or_default();
        }
    }
    for d in raw {
        let file = map.get(d.primary.file);
        if file.name.starts_with("std/") {
            continue;
        }
        out.entry(PathBuf::from(&file.name))
            .or_default()
            .push(to_lsp(map, d, docs));
    }
    out
}

/// A diagnostic as LSP shows it: the code, the message with its label and
/// help, the other labels as related places, and a replacement when there
/// is one (for the quick fix).
fn to_lsp(map: &SourceMap, d: &Diagnostic, docs: Option<&str>) -> lsp::Diagnostic {
    let f = map.get(d.primary.file);
    let ix = LineIndex::new(&f.text);
    let mut message = d.message.clone();
    if !d.primary.message.is_empty() {
        message.push_str(&format!(" ({})", d.primary.message));
    }
    if let Some(h) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(h);
    }
    let related: Vec<lsp::DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|l| {
            let lf = map.get(l.file);
            let uri = Url::from_file_path(&lf.name).ok()?;
            let lix = LineIndex::new(&lf.text);
            Some(lsp::DiagnosticRelatedInformation {
                location: lsp::Location {
                    uri,
                    range: lix.range(l.span.start as usize, l.span.end as usize),
                },
                message: l.message.clone(),
            })
        })
        .collect();
    lsp::Diagnostic {
        range: ix.range(d.primary.span.start as usize, d.primary.span.end as usize),
        severity: Some(match d.severity {
            Severity::Error => lsp::DiagnosticSeverity::ERROR,
            Severity::Warning => lsp::DiagnosticSeverity::WARNING,
        }),
        code: Some(lsp::NumberOrString::String(d.code.as_str().to_string())),
        code_description: docs.and_then(|base| {
            Some(lsp::CodeDescription {
                href: Url::parse(&format!("{base}#{}", code_anchor(d.code))).ok()?,
            })
        }),
        source: Some("bbc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        tags: None,
        data: {
            let mut data = serde_json::Map::new();
            if let Some(s) = d.help.as_deref().and_then(suggestion) {
                data.insert("replace".into(), s.into());
            }
            if let Some(c) = &d.add_child {
                data.insert("add_child".into(), c.as_str().into());
            }
            (!data.is_empty()).then_some(serde_json::Value::Object(data))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_child_is_added_inside_the_block_or_as_a_new_one() {
        // The diagnostic's range starts at the node's name.
        let apply = |text: &str, name: &str| -> String {
            let ix = LineIndex::new(text);
            let at = ix.position(text.find(name).unwrap_or(0));
            let e = add_child_edit(text, at, "workers \"NAME\"")
                .unwrap_or_else(|| panic!("no edit for {text}"));
            let o = ix.offset(e.range.start);
            format!("{}{}{}", &text[..o], e.new_text, &text[o..])
        };
        assert_eq!(
            apply("builder \"b\" {\n    steps { shell \"x\" }\n}\n", "builder"),
            "builder \"b\" {\n    steps { shell \"x\" }\n    workers \"NAME\"\n}\n"
        );
        assert_eq!(
            apply("x\n  builder \"b\" { steps { shell \"x\" } }\n", "builder"),
            "x\n  builder \"b\" { workers \"NAME\"; steps { shell \"x\" } }\n"
        );
        assert_eq!(
            apply("  scheduler \"s\" kind=\"force\"\n", "scheduler"),
            "  scheduler \"s\" kind=\"force\" {\n      workers \"NAME\"\n  }\n"
        );
        assert!(add_child_edit("builder \"b\"", lsp::Position::new(0, 3), "x").is_none());
    }

    #[test]
    fn every_code_links_to_its_section_of_the_diagnostics_docs() {
        let doc = include_str!("../../docs/diagnostics.md");
        for c in bbc_compiler::diagnostic::Code::ALL {
            let heading = format!("\n## {} {}\n", c.as_str(), c.slug());
            assert!(doc.contains(&heading), "{heading:?} in docs/diagnostics.md");
            // GitHub's anchor of that heading: lower case, spaces to `-`.
            let anchor = heading
                .trim()
                .trim_start_matches("## ")
                .to_lowercase()
                .replace(' ', "-");
            assert_eq!(code_anchor(*c), anchor);
        }
        let opts =
            serde_json::json!({"diagnosticsUrl": "https://example.org/bbc/docs/diagnostics.md"});
        assert_eq!(
            docs_url(Some(&opts)).as_deref(),
            Some("https://example.org/bbc/docs/diagnostics.md")
        );
        let bad = serde_json::json!({"diagnosticsUrl": "not a url"});
        assert_eq!(docs_url(Some(&bad)), docs_url(None));
    }

    #[test]
    fn suggestions_are_read_from_help() {
        assert_eq!(suggestion("did you mean `max-builds`?"), Some("max-builds"));
        assert_eq!(suggestion("rename one of them"), None);
    }
}
