//! Expansion: the pre-pass between parsing and decoding.
//!
//! It reads `let`, `template` and `import` declarations, substitutes
//! compile-time values into every string (`${{ name }}`), evaluates `when=`,
//! and expands `use` and `matrix` into plain nodes. The result is an
//! ordinary document that `decode` reads as if it had been written out,
//! plus the run-time expressions left in its strings, as values
//! ([`crate::interp::RunParts`], which says why a side table).
//!
//! Expanded copies keep spans into the text they were copied from: every
//! copy gets a fresh range of the global offset space ([`SpanMap`]) that
//! maps back to the template body or matrix child and remembers the call
//! site, so a diagnostic inside a template points at the body *and* the use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::expr::{self, Env, Error, Out, Val};
use crate::interp::{RunPart, RunParts, StrMap, BARE};
use crate::source::{FileId, Origin, SourceMap, SpanMap};
use crate::syntax::{Children, Document, Entry, Ident, Node, Span, Value};
use crate::FastMap;

/// Names that are declarations, not entities.
pub const DECLARATIONS: &[&str] = &["import", "let", "template", "matrix", "use"];

/// At most this many matrix combinations (a typo guard, not a limit of the
/// compiler: expansion is linear).
pub const MAX_COMBINATIONS: usize = 100_000;
/// Template uses nest at most this deep.
const MAX_DEPTH: usize = 32;

mod copy;
mod decl;
mod eval;
mod fork;
mod matrix;
mod merge;
mod template;

use copy::{moved, moved_entry, moved_entry_with, moved_ident, shifted};
use decl::*;
use eval::Interp;
pub use merge::merge;

pub struct Expander<'a> {
    sources: &'a SourceMap,
    spans: RefCell<SpanMap>,
    diags: RefCell<Vec<Diagnostic>>,
    lets: RefCell<FastMap<String, LetState>>,
    let_order: Vec<String>,
    /// Shared with the expander's forks ([`fork`]); filled by `declare`.
    templates: Arc<std::collections::BTreeMap<String, Template>>,
    resolved: RefCell<FastMap<String, Option<Arc<Resolved>>>>,
    resolving: RefCell<Vec<String>>,
    depth: RefCell<usize>,
    notes: RefCell<FastMap<String, Arc<str>>>,
    /// The run-time expressions left in strings, for the decoder.
    run_parts: RefCell<RunParts>,
    /// What each `use` and `matrix` produced (its span, then one line per
    /// node: `builder "x"`, or a step's kind and name), recorded only when
    /// asked (the language server's hover; `record_expansions`).
    expansions: RefCell<Option<Vec<Expansion>>>,
    /// Each distinct expression text, parsed once: a matrix or template
    /// body is the same text in every copy, so the 1,000-builder example
    /// parsed the same few dozen expressions tens of thousands of times.
    asts: RefCell<FastMap<Box<str>, Parsed>>,
    /// How a large top-level matrix may be split across threads.
    threads: fork::Threads,
    /// Set in a fork that met what it cannot do as the serial expansion
    /// would ([`fork`]); its work is then done again by the expander it
    /// was forked from.
    bailed: std::cell::Cell<bool>,
    /// Whether this is a fork (then it forks no further).
    is_fork: bool,
    /// Whether a matrix was expanded in parallel.
    forked: std::cell::Cell<bool>,
}

/// An expression text parsed, or its mistake.
type Parsed = Result<Arc<expr::Ast>, Error>;

/// A `use` or `matrix` (its span) and one line per node it produced.
pub type Expansion = (Span, Vec<String>);

/// Where names come from while evaluating.
struct Scope<'e, 'a> {
    ex: &'e Expander<'a>,
    locals: &'e [(String, Val)],
    runtime: bool,
}

impl Env for Scope<'_, '_> {
    fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        self.ex.global(name, start, end, self)
    }
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.locals.iter().map(|(n, _)| n.clone()).collect();
        v.extend(self.ex.let_order.iter().cloned());
        v
    }
    fn runtime_ok(&self) -> bool {
        self.runtime
    }
}

fn string_of(e: &Entry) -> Option<&str> {
    match &e.value {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn args(n: &Node) -> impl Iterator<Item = &Entry> {
    n.entries.iter().filter(|e| e.name.is_none())
}

fn prop<'n>(n: &'n Node, name: &str) -> Option<&'n Entry> {
    n.entries
        .iter()
        .rev()
        .find(|e| e.name.as_ref().is_some_and(|k| k.value == name))
}

fn kids(n: &Node) -> &[Node] {
    n.children
        .as_ref()
        .map(|c| c.nodes.as_slice())
        .unwrap_or(&[])
}

fn to_value(v: &Val) -> Option<Value> {
    Some(match v {
        Val::Null => Value::Null,
        // Text: the reader takes an interpolated "4" where an integer goes.
        Val::Bool(b) => Value::String(b.to_string().into()),
        Val::Int(i) => Value::String(i.to_string().into()),
        Val::Str(s) => Value::String(s.as_ref().into()),
        _ => return None,
    })
}

impl<'a> Expander<'a> {
    pub fn new(sources: &'a SourceMap, spans: SpanMap) -> Self {
        Expander {
            sources,
            spans: RefCell::new(spans),
            diags: RefCell::new(Vec::new()),
            lets: RefCell::new(HashMap::default()),
            let_order: Vec::new(),
            templates: Default::default(),
            resolved: RefCell::new(HashMap::default()),
            resolving: RefCell::new(Vec::new()),
            depth: RefCell::new(0),
            notes: RefCell::new(HashMap::default()),
            run_parts: RefCell::new(RunParts::default()),
            expansions: RefCell::new(None),
            asts: RefCell::new(HashMap::default()),
            threads: fork::Threads::default(),
            bailed: std::cell::Cell::new(false),
            is_fork: false,
            forked: std::cell::Cell::new(false),
        }
    }

    /// Sets how many threads a large matrix may be expanded on, and from
    /// how many combinations on (the default: the machine's cores, 32).
    /// The result is the same whatever the setting; tests compare them.
    pub fn threads(&mut self, threads: usize, min_combinations: usize) {
        self.threads = fork::Threads {
            threads,
            min_combinations,
        };
    }

    /// Whether the expansion has to be done again on one thread: a
    /// parallel expansion gives each thread a share of the offset space,
    /// and a share ran out where one thread would have had room
    /// (only configs whose copies fill gigabytes of offsets).
    pub fn redo_serially(&self) -> bool {
        self.forked.get() && self.spans.borrow().exhausted()
    }

    /// Records what each `use` and `matrix` expands to.
    pub fn record_expansions(&mut self) {
        *self.expansions.get_mut() = Some(Vec::new());
    }

    /// What each `use` and `matrix` produced, when recorded.
    pub fn take_expansions(&mut self) -> Vec<Expansion> {
        self.expansions.get_mut().take().unwrap_or_default()
    }

    fn note_expansion(&self, site: Span, produced: &[Node]) {
        let mut rec = self.expansions.borrow_mut();
        let Some(list) = rec.as_mut() else { return };
        let names = produced
            .iter()
            .map(|n| {
                // A step's `name=`, else an entity's name (its argument).
                let arg = prop(n, "name")
                    .and_then(string_of)
                    .or_else(|| args(n).find_map(string_of));
                match arg {
                    Some(a) => format!("{} \"{a}\"", n.name.value),
                    None => n.name.value.clone(),
                }
            })
            .collect();
        list.push((site, names));
    }

    pub fn finish(self) -> (SpanMap, Vec<Diagnostic>, RunParts) {
        (self.spans.into_inner(), self.diags.into_inner(), {
            let mut parts = self.run_parts.into_inner();
            parts.seal();
            parts
        })
    }

    fn emit(&self, d: Diagnostic) {
        self.diags.borrow_mut().push(d);
    }

    fn err(&self, code: Code, span: Span, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, FileId(0), span, msg)
    }

    fn strmap(&self, token: Span, value: &str) -> StrMap {
        let text = self.spans.borrow().slice(self.sources, token);
        StrMap::from_token_text(text, token, value)
    }

    /// Reports a mistake in the expression at `offset` of the string
    /// `value` written as `token`. The string's map to the source is made
    /// only here: reading the token's text for every interpolated string of
    /// every expanded copy was a good part of a keystroke in the language
    /// server, and almost none has a mistake.
    fn report(&self, e: Error, token: Span, value: &str, offset: usize) {
        if e.silent {
            return;
        }
        let map = self.strmap(token, value);
        let d = self
            .err(
                e.code,
                map.span(offset + e.start, offset + e.end),
                e.message,
            )
            .label(e.label)
            .help(e.help);
        self.emit(d);
    }

    /// The expression `body` parsed, from [`Expander::asts`].
    fn parse(&self, body: &str) -> Parsed {
        if let Some(r) = self.asts.borrow().get(body) {
            return r.clone();
        }
        let r = expr::parse(body).map(Arc::new);
        self.asts.borrow_mut().insert(body.into(), r.clone());
        r
    }

    fn note(&self, text: String) -> Arc<str> {
        self.notes
            .borrow_mut()
            .entry(text)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone()
    }

    /// Expands a whole document (all files, in load order) into plain nodes.
    pub fn expand(&self, docs: &[Document]) -> Document {
        self.force_lets();
        let mut out = Vec::new();
        let scope = Scope {
            ex: self,
            locals: &[],
            runtime: true,
        };
        for doc in docs {
            for n in &doc.nodes {
                match n.name.value.as_str() {
                    "let" | "template" | "import" => {}
                    "matrix" => {
                        let before = out.len();
                        self.matrix(n, &scope, &mut out);
                        self.note_expansion(n.span, &out[before..]);
                    }
                    _ => self.node(n, 0, &scope, &mut out, None),
                }
            }
        }
        Document { nodes: out }
    }

    /// Expands `n`, read where it is written or in a template body or
    /// matrix child, into `out`, with every span moved by `d` into the range
    /// of its copy ([`Expander::expand_copy`]). The expanded node is built
    /// from the borrowed one in one pass: cloning a body whole, shifting
    /// the clone's spans, then rebuilding its entries was most of the
    /// copies' cost (docs/perf.md), and the clone of every interpolated
    /// string was thrown away.
    fn node(&self, n: &Node, d: i64, scope: &Scope, out: &mut Vec<Node>, parent: Option<&str>) {
        let when = n
            .entries
            .iter()
            .position(|e| e.name.as_ref().is_some_and(|k| k.value == "when"));
        if let Some(i) = when {
            let e = &n.entries[i];
            if self.condition_at(&e.value, shifted(e.value_span, d), scope) == Some(false) {
                return;
            }
        }
        let is_use = n.name.value == "use" && (parent.is_none() || parent == Some("steps"));
        let is_matrix = parent.is_none() && n.name.value == "matrix";
        if is_use || is_matrix {
            // The call itself, moved, for the code that reads it (a few
            // entries; its `when=` is spent).
            let mut c = moved(n, d);
            if let Some(i) = when {
                c.entries.remove(i);
            }
            let before = out.len();
            if is_use {
                self.use_template(&c, scope, out, parent);
            } else {
                self.matrix(&c, scope, out);
            }
            self.note_expansion(c.span, &out[before..]);
            return;
        }
        let mut kept = Vec::with_capacity(n.entries.len());
        for (i, e) in n.entries.iter().enumerate() {
            if Some(i) == when {
                continue;
            }
            let cond = e
                .name
                .as_ref()
                .is_some_and(|k| k.value == "do-step-if" || k.value == "hide-step-if");
            if cond {
                let mut m = moved_entry(e, d);
                self.runtime_condition(&mut m, scope);
                self.entry(&m, 0, scope, &mut kept);
            } else {
                self.entry(e, d, scope, &mut kept);
            }
        }
        let children = n.children.as_ref().map(|c| {
            let mut nodes = Vec::with_capacity(c.nodes.len());
            for k in &c.nodes {
                self.node(k, d, scope, &mut nodes, Some(&n.name.value));
            }
            Children {
                nodes,
                span: shifted(c.span, d),
            }
        });
        out.push(Node {
            ty: n.ty.as_ref().map(|t| moved_ident(t, d)),
            name: moved_ident(&n.name, d),
            entries: kept,
            children,
            span: shifted(n.span, d),
        });
    }

    /// Expands the entry `e` of a node (its spans moved by `d`) into
    /// `kept`: compile-time parts substituted, left out when it is a null
    /// `${{ … }}`, one argument per item of a list.
    fn entry(&self, e: &Entry, d: i64, scope: &Scope, kept: &mut Vec<Entry>) {
        let with = |value: Value| moved_entry_with(e, d, value);
        let Value::String(s) = &e.value else {
            kept.push(with(e.value.clone()));
            return;
        };
        let value_span = shifted(e.value_span, d);
        match self.interp(s, value_span, scope, true) {
            Ok(Interp::Same) => kept.push(with(e.value.clone())),
            Ok(Interp::Text(t)) => kept.push(with(Value::String(t.into()))),
            Err(text) => kept.push(with(Value::String(text.into()))),
            // `${{ optional }}` that is null: the entry is left out.
            Ok(Interp::Val(Val::Null)) => {}
            // A list as an argument: one argument per item.
            Ok(Interp::Val(Val::List(items))) if e.name.is_none() => {
                for i in items.iter() {
                    match to_value(i) {
                        Some(val) => kept.push(with(val)),
                        None => self.list_as_value(value_span, i),
                    }
                }
            }
            Ok(Interp::Val(v)) => match to_value(&v) {
                Some(x) => kept.push(with(x)),
                None => {
                    self.list_as_value(value_span, &v);
                    kept.push(with(Value::String("".into())));
                }
            },
        }
    }

    fn list_as_value(&self, value_span: Span, v: &Val) {
        self.emit(
            self.err(Code::TypeMismatch, value_span, format!("{} cannot be used as a value here", v.type_name()))
                .label("not a scalar")
                .help("interpolate a field (`${{ b.name }}`); a list spreads into several arguments only as a whole argument, and not as a property"),
        );
    }
}

fn expr_keyword(s: &str) -> bool {
    matches!(
        s,
        "if" | "then" | "else" | "in" | "true" | "false" | "null" | "prop"
    )
}
