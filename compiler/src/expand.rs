//! Expansion: the pre-pass between parsing and decoding.
//!
//! It reads `let`, `template` and `import` declarations, substitutes
//! compile-time values into every string (`${{ name }}`), evaluates `when=`,
//! and expands `use` and `matrix` into plain nodes. The result is an
//! ordinary document that `decode` reads as if it had been written out.
//!
//! Expanded copies keep spans into the text they were copied from: every
//! copy gets a fresh range of the global offset space ([`SpanMap`]) that
//! maps back to the template body or matrix child and remembers the call
//! site, so a diagnostic inside a template points at the body *and* the use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::expr::{self, Env, Error, Out, Val};
use crate::interp::{RunPart, RunParts, StrMap};
use crate::source::{FileId, Origin, SourceMap, SpanMap};
use crate::syntax::{Children, Document, Entry, Ident, Node, Span, Value};

/// Names that are declarations, not entities.
pub const DECLARATIONS: &[&str] = &["import", "let", "template", "matrix", "use"];

/// At most this many matrix combinations (a typo guard, not a limit of the
/// compiler: expansion is linear).
pub const MAX_COMBINATIONS: usize = 100_000;
/// Template uses nest at most this deep.
const MAX_DEPTH: usize = 32;

enum LetSrc {
    Entry(Entry),
    Node(Node),
}

enum LetState {
    Pending(Box<LetSrc>, Span),
    Busy,
    Done(Val),
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Any,
    String,
    Int,
    Bool,
    List,
    Record,
}

const TYPES: &[(&str, Ty)] = &[
    ("any", Ty::Any),
    ("string", Ty::String),
    ("int", Ty::Int),
    ("bool", Ty::Bool),
    ("list", Ty::List),
    ("record", Ty::Record),
];

impl Ty {
    fn accepts(self, v: &Val) -> bool {
        matches!(
            (self, v),
            (Ty::Any, _)
                | (_, Val::Null)
                | (Ty::String, Val::Str(_))
                | (Ty::Int, Val::Int(_))
                | (Ty::Bool, Val::Bool(_))
                | (Ty::List, Val::List(_))
                | (Ty::Record, Val::Record(_))
        )
    }
    fn name(self) -> &'static str {
        TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("any")
    }
}

#[derive(Clone)]
struct Param {
    name: String,
    span: Span,
    ty: Ty,
    default: Option<Entry>,
}

struct Template {
    name_span: Span,
    params: Vec<Param>,
    body: Vec<Node>,
    extends: Option<(String, Span)>,
}

/// A template with its `extends` chain applied.
struct Resolved {
    params: Vec<Param>,
    body: Vec<Node>,
}

pub struct Expander<'a> {
    sources: &'a SourceMap,
    spans: RefCell<SpanMap>,
    diags: RefCell<Vec<Diagnostic>>,
    lets: RefCell<HashMap<String, LetState>>,
    let_order: Vec<String>,
    templates: std::collections::BTreeMap<String, Template>,
    resolved: RefCell<HashMap<String, Option<Rc<Resolved>>>>,
    resolving: RefCell<Vec<String>>,
    depth: RefCell<usize>,
    notes: RefCell<HashMap<String, Rc<str>>>,
    /// The run-time expressions left in strings, for the decoder.
    run_parts: RefCell<RunParts>,
}

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
        Val::Bool(b) => Value::String(b.to_string()),
        Val::Int(i) => Value::String(i.to_string()),
        Val::Str(s) => Value::String(s.to_string()),
        _ => return None,
    })
}

/// Moves every span of a copied node into its copy range.
struct Shift<'x> {
    spans: &'x RefCell<SpanMap>,
    target: Span,
    delta: i64,
    origin: Origin,
}

impl Shift<'_> {
    fn span(&mut self, s: Span) -> Span {
        if s.start < self.target.start || s.end > self.target.end {
            // A piece merged in from elsewhere (`extends`): its own copy.
            match self.spans.borrow_mut().add_copy(s, self.origin.clone()) {
                Some(d) => return shifted(s, d),
                None => return s,
            }
        }
        shifted(s, self.delta)
    }
    fn node(&mut self, n: &mut Node) {
        n.span = self.span(n.span);
        n.name.span = self.span(n.name.span);
        if let Some(t) = &mut n.ty {
            t.span = self.span(t.span);
        }
        for e in &mut n.entries {
            e.span = self.span(e.span);
            e.value_span = self.span(e.value_span);
            if let Some(k) = &mut e.name {
                k.span = self.span(k.span);
            }
            if let Some(t) = &mut e.ty {
                t.span = self.span(t.span);
            }
        }
        if let Some(c) = &mut n.children {
            c.span = self.span(c.span);
            for k in &mut c.nodes {
                if k.span.start < self.target.start || k.span.end > self.target.end {
                    // Merged in from another template: one range for it.
                    let d = self
                        .spans
                        .borrow_mut()
                        .add_copy(k.span, self.origin.clone());
                    if let Some(delta) = d {
                        let mut sub = Shift {
                            spans: self.spans,
                            target: k.span,
                            delta,
                            origin: self.origin.clone(),
                        };
                        sub.node(k);
                    }
                } else {
                    self.node(k);
                }
            }
        }
    }
}

fn shifted(s: Span, d: i64) -> Span {
    Span {
        start: (s.start as i64 + d) as u32,
        end: (s.end as i64 + d) as u32,
    }
}

impl<'a> Expander<'a> {
    pub fn new(sources: &'a SourceMap, spans: SpanMap) -> Self {
        Expander {
            sources,
            spans: RefCell::new(spans),
            diags: RefCell::new(Vec::new()),
            lets: RefCell::new(HashMap::new()),
            let_order: Vec::new(),
            templates: Default::default(),
            resolved: RefCell::new(HashMap::new()),
            resolving: RefCell::new(Vec::new()),
            depth: RefCell::new(0),
            notes: RefCell::new(HashMap::new()),
            run_parts: RefCell::new(HashMap::new()),
        }
    }

    pub fn finish(self) -> (SpanMap, Vec<Diagnostic>, RunParts) {
        (
            self.spans.into_inner(),
            self.diags.into_inner(),
            self.run_parts.into_inner(),
        )
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

    fn report(&self, e: Error, map: &StrMap, offset: usize) {
        if e.silent {
            return;
        }
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

    fn note(&self, text: String) -> Rc<str> {
        self.notes
            .borrow_mut()
            .entry(text)
            .or_insert_with_key(|k| Rc::from(k.as_str()))
            .clone()
    }

    /// A copy of `n` in a fresh range that remembers `origin`.
    fn copy(&self, n: &Node, origin: &Origin) -> Node {
        let mut c = n.clone();
        let delta = self.spans.borrow_mut().add_copy(n.span, origin.clone());
        if let Some(delta) = delta {
            let mut sh = Shift {
                spans: &self.spans,
                target: n.span,
                delta,
                origin: origin.clone(),
            };
            sh.node(&mut c);
        }
        c
    }

    // ---- declarations -------------------------------------------------

    /// Reads the `let` and `template` declarations of one document.
    pub fn declare(&mut self, doc: &Document) {
        for n in &doc.nodes {
            match n.name.value.as_str() {
                "let" => self.declare_let(n),
                "template" => self.declare_template(n),
                _ => {}
            }
        }
    }

    fn add_let(&mut self, name: String, span: Span, src: LetSrc) {
        if name.is_empty() || name.starts_with(|c: char| !c.is_ascii_alphabetic() && c != '_') {
            let d = self
                .err(Code::InvalidDeclaration, span, format!("`{name}` is not a variable name"))
                .label("not a name")
                .help("variable names start with a letter or `_` and contain letters, digits, `_` and `-`");
            self.emit(d);
            return;
        }
        if name == "prop" || expr_keyword(&name) {
            let d = self
                .err(Code::InvalidDeclaration, span, format!("`{name}` is a reserved word"))
                .label("reserved")
                .help("`prop`, `if`, `then`, `else`, `in`, `true`, `false` and `null` cannot be variable names");
            self.emit(d);
            return;
        }
        let mut lets = self.lets.borrow_mut();
        if let Some(LetState::Pending(_, first)) = lets.get(&name) {
            let d = self
                .err(Code::DuplicateName, span, format!("there are two variables named `{name}`"))
                .label("second definition")
                .also(*first, "first defined here")
                .help("rename one of them; variables (also across imported files) share one namespace");
            drop(lets);
            self.emit(d);
            return;
        }
        lets.insert(name.clone(), LetState::Pending(Box::new(src), span));
        drop(lets);
        self.let_order.push(name);
    }

    fn declare_let(&mut self, n: &Node) {
        if let Some(t) = &n.ty {
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    t.span,
                    "`let` takes no annotation",
                )
                .label("remove this")
                .help("write `let NAME=VALUE`"),
            );
        }
        let first = args(n).next();
        match first {
            None => {
                let props: Vec<&Entry> = n.entries.iter().filter(|e| e.name.is_some()).collect();
                if props.is_empty() || n.children.is_some() {
                    self.emit(
                        self.err(Code::InvalidDeclaration, n.name.span, "`let` declares nothing")
                            .label("no variable here")
                            .help("write `let NAME=VALUE`, `let \"NAME\" \"a\" \"b\"` for a list or `let \"NAME\" { field \"x\" }` for a record"),
                    );
                    return;
                }
                for e in props {
                    let Some(k) = &e.name else { continue };
                    self.add_let(k.value.clone(), k.span, LetSrc::Entry(e.clone()));
                }
            }
            Some(e) => {
                let Some(name) = string_of(e) else {
                    self.emit(
                        self.err(
                            Code::InvalidDeclaration,
                            e.value_span,
                            "a variable name must be a string",
                        )
                        .label("not a name")
                        .help("write `let \"NAME\" …`"),
                    );
                    return;
                };
                self.add_let(name.to_string(), e.value_span, LetSrc::Node(n.clone()));
            }
        }
    }

    fn declare_template(&mut self, n: &Node) {
        let Some(e) = args(n).next() else {
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    n.name.span,
                    "`template` needs a name",
                )
                .label("name missing")
                .help("write `template \"NAME\" { param \"p\"; … }`"),
            );
            return;
        };
        let Some(name) = string_of(e).filter(|s| !s.is_empty()) else {
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    e.value_span,
                    "a template name must be a non-empty string",
                )
                .label("not a name")
                .help("write `template \"NAME\" { … }`"),
            );
            return;
        };
        if let Some(first) = self.templates.get(name) {
            let d = self
                .err(Code::DuplicateName, e.value_span, format!("there are two templates named `{name}`"))
                .label("second definition")
                .also(first.name_span, "first defined here")
                .help("rename one of them; templates (also across imported files) share one namespace");
            self.emit(d);
            return;
        }
        for extra in n.entries.iter().filter(|x| {
            x.name.is_none() && x.span != e.span
                || x.name.as_ref().is_some_and(|k| k.value != "extends")
        }) {
            self.emit(
                self.err(Code::InvalidDeclaration, extra.span, "`template` takes a name and `extends=` only")
                    .label("unexpected")
                    .help("declare parameters inside the block: `param \"NAME\" type=\"string\" default=\"…\"`"),
            );
        }
        let extends = prop(n, "extends").and_then(|x| match string_of(x) {
            Some(s) => Some((s.to_string(), x.value_span)),
            None => {
                self.emit(
                    self.err(
                        Code::InvalidDeclaration,
                        x.value_span,
                        "`extends=` names a template",
                    )
                    .label("not a string")
                    .help("write extends=\"OTHER\""),
                );
                None
            }
        });
        let mut params: Vec<Param> = Vec::new();
        let mut body = Vec::new();
        for k in kids(n) {
            if k.name.value != "param" {
                body.push(k.clone());
                continue;
            }
            if let Some(p) = self.param(k) {
                if let Some(first) = params.iter().find(|q| q.name == p.name) {
                    let d = self
                        .err(
                            Code::DuplicateName,
                            p.span,
                            format!("parameter `{}` is declared twice", p.name),
                        )
                        .label("second declaration")
                        .also(first.span, "first declared here")
                        .help("remove one of them");
                    self.emit(d);
                    continue;
                }
                params.push(p);
            }
        }
        self.templates.insert(
            name.to_string(),
            Template {
                name_span: e.value_span,
                params,
                body,
                extends,
            },
        );
    }

    fn param(&self, k: &Node) -> Option<Param> {
        let bad = |span: Span, msg: &str, label: &str| {
            self.emit(
                self.err(Code::InvalidDeclaration, span, msg.to_string())
                    .label(label.to_string())
                    .help("write `param \"NAME\" type=\"string\" default=\"…\"`; types are string, int, bool, list, record, any"),
            );
        };
        let Some(e) = args(k).next() else {
            bad(k.name.span, "`param` needs a name", "name missing");
            return None;
        };
        let Some(name) = string_of(e).filter(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && !expr_keyword(s)
        }) else {
            bad(
                e.value_span,
                "a parameter name must be a name",
                "not a name",
            );
            return None;
        };
        let mut ty = Ty::Any;
        let mut default = None;
        for x in &k.entries {
            match x.name.as_ref().map(|n| n.value.as_str()) {
                None if x.span == e.span => {}
                Some("type") => {
                    match string_of(x).and_then(|s| TYPES.iter().find(|(n, _)| *n == s)) {
                        Some((_, t)) => ty = *t,
                        None => bad(x.value_span, "unknown parameter type", "not a type"),
                    }
                }
                Some("default") => default = Some(x.clone()),
                _ => bad(
                    x.span,
                    "`param` takes a name, `type=` and `default=`",
                    "unexpected",
                ),
            }
        }
        if k.children.is_some() {
            bad(k.name.span, "`param` takes no block", "has a block");
        }
        Some(Param {
            name: name.to_string(),
            span: e.value_span,
            ty,
            default,
        })
    }

    // ---- values -------------------------------------------------------

    fn global(&self, name: &str, start: usize, end: usize, scope: &Scope) -> Result<Val, Error> {
        let state = {
            let mut lets = self.lets.borrow_mut();
            match lets.get_mut(name) {
                None => return Err(expr::unknown_name(scope, name, start, end)),
                Some(LetState::Done(v)) => return Ok(v.clone()),
                Some(LetState::Failed) => return Err(Error::silent()),
                Some(LetState::Busy) => {
                    return Err(Error::new(
                        Code::DefinitionCycle,
                        start,
                        end,
                        format!("`{name}` depends on itself"),
                        "used while its own value is computed",
                        "a variable cannot use itself, directly or through other variables; break the cycle",
                    ))
                }
                Some(s) => std::mem::replace(s, LetState::Busy),
            }
        };
        let LetState::Pending(src, _) = state else {
            return Err(Error::silent());
        };
        let v = self.let_value(&src);
        let mut lets = self.lets.borrow_mut();
        match v {
            Some(v) => {
                lets.insert(name.to_string(), LetState::Done(v.clone()));
                Ok(v)
            }
            None => {
                lets.insert(name.to_string(), LetState::Failed);
                Err(Error::silent())
            }
        }
    }

    /// Evaluates every variable, so mistakes in unused ones are reported.
    pub fn force_lets(&self) {
        let scope = Scope {
            ex: self,
            locals: &[],
            runtime: false,
        };
        for n in &self.let_order {
            let _ = self.global(n, 0, 0, &scope);
        }
    }

    fn let_value(&self, src: &LetSrc) -> Option<Val> {
        let scope = Scope {
            ex: self,
            locals: &[],
            runtime: false,
        };
        match src {
            LetSrc::Entry(e) => self.entry_val(e, &scope),
            LetSrc::Node(n) => self.node_val(n, 1, &scope),
        }
    }

    /// The value of a KDL value; strings are interpolated, and a string that
    /// is one `${{ … }}` has the expression's value (a list, a record, …).
    fn entry_val(&self, e: &Entry, scope: &Scope) -> Option<Val> {
        if let Some(t) = &e.ty {
            self.emit(
                self.err(Code::InvalidDeclaration, t.span, "a value here takes no annotation")
                    .label("remove this")
                    .help("secrets cannot be compile-time values; write (secret)\"NAME\" where the secret is used"),
            );
            return None;
        }
        match &e.value {
            Value::String(s) => match self.interp(s, e.value_span, scope, None) {
                Ok(Some(v)) => Some(v),
                Ok(None) => Some(Val::str(s.as_str())),
                Err(_) => None,
            },
            Value::Integer(i) => match i64::try_from(*i) {
                Ok(i) => Some(Val::Int(i)),
                Err(_) => {
                    self.emit(
                        self.err(Code::OutOfRange, e.value_span, "number is too large")
                            .label("does not fit in 64 bits")
                            .help("use a smaller number"),
                    );
                    None
                }
            },
            Value::Bool(b) => Some(Val::Bool(*b)),
            Value::Null => Some(Val::Null),
            Value::Float(_) => {
                self.emit(
                    self.err(
                        Code::InvalidDeclaration,
                        e.value_span,
                        "compile-time values are not fractional numbers",
                    )
                    .label("a fractional number")
                    .help("use an integer or a string"),
                );
                None
            }
        }
    }

    /// A list or record written as a node: `NAME "a" "b"` is a list,
    /// `NAME x=1 { y "z" }` a record, `NAME { - …; - … }` a list of items.
    fn node_val(&self, n: &Node, skip: usize, scope: &Scope) -> Option<Val> {
        let values: Vec<&Entry> = args(n).skip(skip).collect();
        let props: Vec<&Entry> = n.entries.iter().filter(|e| e.name.is_some()).collect();
        let children = kids(n);
        let items = !children.is_empty() && children.iter().all(|k| k.name.value == "-");
        let is_record = !props.is_empty() || (!children.is_empty() && !items);
        let parts = [!values.is_empty(), is_record, items]
            .iter()
            .filter(|b| **b)
            .count();
        if parts > 1 || (items && children.iter().any(|k| k.name.value != "-")) {
            self.emit(
                self.err(Code::InvalidDeclaration, n.name.span, "a value is either a list or a record")
                    .label("mixes list values and record fields")
                    .help("a list is `\"a\" \"b\"` or a block of `- …` items; a record is `field=…` properties or `field …` children"),
            );
            return None;
        }
        if items {
            let mut out = Vec::with_capacity(children.len());
            for k in children {
                out.push(self.node_val(k, 0, scope)?);
            }
            return Some(Val::List(Rc::new(out)));
        }
        if is_record {
            let mut fields: Vec<(String, Val)> = Vec::new();
            let mut add = |k: &Ident, v: Val, me: &Self| {
                if fields.iter().any(|(f, _)| *f == k.value) {
                    me.emit(
                        me.err(
                            Code::DuplicateSetting,
                            k.span,
                            format!("field `{}` is set twice", k.value),
                        )
                        .label("set again here")
                        .help("remove one of them"),
                    );
                    return;
                }
                fields.push((k.value.clone(), v));
            };
            for e in props {
                let v = self.entry_val(e, scope)?;
                if let Some(k) = &e.name {
                    add(k, v, self);
                }
            }
            for k in children {
                let v = self.node_val(k, 0, scope)?;
                add(&k.name, v, self);
            }
            return Some(Val::Record(Rc::new(fields)));
        }
        match values.as_slice() {
            [] => {
                self.emit(
                    self.err(Code::InvalidDeclaration, n.name.span, format!("`{}` has no value", n.name.value))
                        .label("no value")
                        .help("give a value: `let \"NAME\" \"value\"`, a list `\"a\" \"b\"` or a record `{ field \"x\" }`"),
                );
                None
            }
            [one] => self.entry_val(one, scope),
            many => {
                let mut out = Vec::with_capacity(many.len());
                for e in many {
                    out.push(self.entry_val(e, scope)?);
                }
                Some(Val::List(Rc::new(out)))
            }
        }
    }

    /// Substitutes compile-time values into `s`. `Ok(None)`: unchanged.
    /// A string that is exactly one `${{ … }}` gets the expression's value.
    ///
    /// A part that depends on a build property stays in the string as text
    /// (what settings that are not run-time strings see) and, given
    /// `parts`, is recorded there as the run-time expression it stands for.
    fn interp(
        &self,
        s: &str,
        token: Span,
        scope: &Scope,
        mut parts: Option<&mut Vec<RunPart>>,
    ) -> Result<Option<Val>, String> {
        if !s.contains("${{") {
            return Ok(None);
        }
        let map = self.strmap(token, s);
        let mut out = String::new();
        let mut changed = false;
        let mut failed = false;
        let mut rest = 0;
        let whole = {
            let t = s.trim();
            t.starts_with("${{") && t.ends_with("}}") && t[3..].find("}}") == Some(t.len() - 5)
        };
        while let Some(found) = s[rest..].find("${{") {
            let open = rest + found;
            let body_start = open + 3;
            let Some(close) = s[body_start..].find("}}") else {
                break;
            };
            let body_end = body_start + close;
            let body = &s[body_start..body_end];
            out.push_str(&s[rest..open]);
            rest = body_end + 2;
            let ast = match expr::parse(body) {
                Ok(a) => a,
                Err(e) => {
                    if body.contains("prop.") && scope.runtime {
                        // Left for the run-time checks, which report it.
                        out.push_str(&s[open..rest]);
                    } else {
                        self.report(e, &map, body_start);
                        failed = true;
                        out.push_str(body.trim());
                    }
                    continue;
                }
            };
            if ast.uses_props() && !ast.uses_names() && scope.runtime {
                if let Some(parts) = parts.as_deref_mut() {
                    let mut props = Vec::new();
                    // A mistake is left for the decoder, which reports it
                    // where the string is read as a run-time one.
                    if let Ok(e) = expr::to_runtime(&ast, body, &mut props) {
                        let shift = out.len() + 3;
                        for p in &mut props {
                            p.start += shift;
                            p.end += shift;
                        }
                        parts.push(RunPart {
                            at: out.len(),
                            bare: false,
                            expr: e,
                            props,
                        });
                    }
                }
                out.push_str(&s[open..rest]);
                continue;
            }
            changed = true;
            match expr::eval(&ast, scope) {
                Ok(Out::Val(v)) => {
                    if whole {
                        return Ok(Some(v));
                    }
                    match v.to_text() {
                        Some(t) => out.push_str(&t),
                        None => {
                            self.report(
                                Error::new(
                                    Code::TypeMismatch,
                                    ast.start,
                                    ast.end,
                                    format!("{} cannot be put into a string", v.type_name()),
                                    "not text",
                                    "interpolate a field (`b.name`) or a list of scalars (joined with spaces)",
                                ),
                                &map,
                                body_start,
                            );
                            failed = true;
                        }
                    }
                }
                Ok(Out::Run(e)) => {
                    let at = out.len();
                    out.push_str("${{ ");
                    out.push_str(&expr::print_runtime(&e));
                    out.push_str(" }}");
                    if let Some(parts) = parts.as_deref_mut() {
                        parts.push(RunPart::evaluated(at, out.len(), false, e));
                    }
                }
                Err(e) => {
                    self.report(e, &map, body_start);
                    failed = true;
                    out.push_str(body.trim());
                }
            }
        }
        out.push_str(&s[rest..]);
        if failed {
            // Reported; what is left is text, so it is not reported again.
            return Err(out);
        }
        Ok(changed.then(|| Val::str(out)))
    }

    /// A compile-time condition (`when=`, `exclude when=`).
    fn condition(&self, e: &Entry, scope: &Scope) -> Option<bool> {
        let Value::String(s) = &e.value else {
            if let Value::Bool(b) = e.value {
                return Some(b);
            }
            self.emit(
                self.err(
                    Code::TypeMismatch,
                    e.value_span,
                    format!("expected a condition, found {}", e.value.kind_name()),
                )
                .label("not a condition")
                .help("write when=\"${{ os == 'linux' }}\""),
            );
            return None;
        };
        let map = self.strmap(e.value_span, s);
        let t = s.trim();
        let lead = s.len() - s.trim_start().len();
        let (body, off) = match t.strip_prefix("${{").and_then(|x| x.strip_suffix("}}")) {
            Some(inner) if !inner.contains("${{") => (inner, lead + 3),
            _ => (s.as_str(), 0),
        };
        let scope = Scope {
            ex: self,
            locals: scope.locals,
            runtime: false,
        };
        let ast = match expr::parse(body) {
            Ok(a) => a,
            Err(err) => {
                self.report(err, &map, off);
                return None;
            }
        };
        match expr::eval(&ast, &scope) {
            Ok(Out::Val(Val::Bool(b))) => Some(b),
            Ok(Out::Val(v)) => {
                self.report(
                    Error::new(
                        Code::TypeMismatch,
                        ast.start,
                        ast.end,
                        format!("a condition must be a boolean, found {}", v.type_name()),
                        "not a boolean",
                        "write a comparison, e.g. `os == 'linux'`",
                    ),
                    &map,
                    off,
                );
                None
            }
            Ok(Out::Run(_)) => None,
            Err(err) => {
                self.report(err, &map, off);
                None
            }
        }
    }

    /// A run-time condition written bare (`do-step-if="os == 'x' && …"`):
    /// compile-time names are substituted, the rest is left for run time.
    fn runtime_condition(&self, e: &mut Entry, scope: &Scope, parts: &mut Vec<RunPart>) {
        let Value::String(s) = &e.value else { return };
        if s.contains("${{") {
            return;
        }
        let Ok(ast) = expr::parse(s) else { return };
        if !ast.uses_names() {
            return;
        }
        let map = self.strmap(e.value_span, s);
        let scope = Scope {
            ex: self,
            locals: scope.locals,
            runtime: true,
        };
        match expr::eval(&ast, &scope) {
            Ok(Out::Val(v)) => {
                let text = match v {
                    Val::Bool(b) => b.to_string(),
                    other => {
                        self.report(
                            Error::new(
                                Code::TypeMismatch,
                                ast.start,
                                ast.end,
                                format!(
                                    "a condition must be a boolean, found {}",
                                    other.type_name()
                                ),
                                "not a boolean",
                                "write a comparison, e.g. `prop.branch == 'main'`",
                            ),
                            &map,
                            0,
                        );
                        "false".into()
                    }
                };
                e.value = Value::String(text);
            }
            Ok(Out::Run(x)) => {
                let text = expr::print_runtime(&x);
                parts.push(RunPart::evaluated(0, text.len(), true, x));
                e.value = Value::String(text);
            }
            Err(err) => {
                self.report(err, &map, 0);
                e.value = Value::String("false".into());
            }
        }
    }

    // ---- nodes --------------------------------------------------------

    /// Expands a whole document (all files, in load order) into plain nodes.
    pub fn expand(&self, docs: Vec<Document>) -> Document {
        self.force_lets();
        let mut out = Vec::new();
        let scope = Scope {
            ex: self,
            locals: &[],
            runtime: true,
        };
        for doc in docs {
            for n in doc.nodes {
                match n.name.value.as_str() {
                    "let" | "template" | "import" => {}
                    "matrix" => self.matrix(&n, &scope, &mut out),
                    _ => self.node(n, &scope, &mut out, None),
                }
            }
        }
        Document { nodes: out }
    }

    fn node(&self, mut n: Node, scope: &Scope, out: &mut Vec<Node>, parent: Option<&str>) {
        if let Some(i) = n
            .entries
            .iter()
            .position(|e| e.name.as_ref().is_some_and(|k| k.value == "when"))
        {
            let e = n.entries.remove(i);
            if self.condition(&e, scope) == Some(false) {
                return;
            }
        }
        if n.name.value == "use" && (parent.is_none() || parent == Some("steps")) {
            self.use_template(&n, scope, out, parent);
            return;
        }
        if parent.is_none() && n.name.value == "matrix" {
            self.matrix(&n, scope, out);
            return;
        }
        let entries = std::mem::take(&mut n.entries);
        let mut kept = Vec::with_capacity(entries.len());
        for mut e in entries {
            let cond = e
                .name
                .as_ref()
                .is_some_and(|k| k.value == "do-step-if" || k.value == "hide-step-if");
            let mut parts = Vec::new();
            if cond {
                self.runtime_condition(&mut e, scope, &mut parts);
            }
            if let Value::String(s) = &e.value {
                let v = match self.interp(s, e.value_span, scope, Some(&mut parts)) {
                    Ok(v) => v,
                    Err(text) => {
                        e.value = Value::String(text);
                        None
                    }
                };
                if let Some(v) = v {
                    match (&v, e.name.is_none()) {
                        // `${{ optional }}` that is null: the entry is left out.
                        (Val::Null, _) => continue,
                        // A list as an argument: one argument per item.
                        (Val::List(items), true) => {
                            for i in items.iter() {
                                let mut x = e.clone();
                                match to_value(i) {
                                    Some(val) => x.value = val,
                                    None => {
                                        self.list_as_value(&e, i);
                                        continue;
                                    }
                                }
                                kept.push(x);
                            }
                            continue;
                        }
                        _ => match to_value(&v) {
                            Some(x) => e.value = x,
                            None => {
                                self.list_as_value(&e, &v);
                                e.value = Value::String(String::new());
                            }
                        },
                    }
                }
            }
            if !parts.is_empty() {
                self.run_parts.borrow_mut().insert(e.value_span, parts);
            }
            kept.push(e);
        }
        n.entries = kept;
        if let Some(c) = &mut n.children {
            let name = n.name.value.as_str();
            let nodes = std::mem::take(&mut c.nodes);
            let mut kept = Vec::with_capacity(nodes.len());
            for k in nodes {
                self.node(k, scope, &mut kept, Some(name));
            }
            c.nodes = kept;
        }
        out.push(n);
    }

    fn list_as_value(&self, e: &Entry, v: &Val) {
        self.emit(
            self.err(Code::TypeMismatch, e.value_span, format!("{} cannot be used as a value here", v.type_name()))
                .label("not a scalar")
                .help("interpolate a field (`${{ b.name }}`); a list spreads into several arguments only as a whole argument, and not as a property"),
        );
    }

    // ---- templates ----------------------------------------------------

    fn resolve(&self, name: &str, span: Span) -> Option<Rc<Resolved>> {
        if let Some(r) = self.resolved.borrow().get(name) {
            return r.clone();
        }
        let Some(t) = self.templates.get(name) else {
            let d = self
                .err(Code::UnknownTemplate, span, format!("unknown template `{name}`"))
                .label("no such template")
                .help_opt(did_you_mean(
                    name,
                    self.templates.keys().map(String::as_str),
                    "templates are",
                ).map(|h| if self.templates.is_empty() {
                    "no template is defined; declare one with `template \"NAME\" { … }` or import the standard library, e.g. `import \"std/rust.kdl\"`".to_string()
                } else { h }));
            self.emit(d);
            return None;
        };
        if self.resolving.borrow().iter().any(|n| n == name) {
            let chain = self.resolving.borrow().join("` → `");
            let d = self
                .err(
                    Code::DefinitionCycle,
                    span,
                    format!("template `{name}` extends itself"),
                )
                .label("cycle closes here")
                .help(format!(
                    "the chain is `{chain}` → `{name}`; remove one `extends=`"
                ));
            self.emit(d);
            return None;
        }
        self.resolving.borrow_mut().push(name.to_string());
        let r = match &t.extends {
            None => Some(Rc::new(Resolved {
                params: t.params.clone(),
                body: t.body.clone(),
            })),
            Some((parent, pspan)) => self.resolve(parent, *pspan).map(|p| {
                let mut params = p.params.clone();
                for q in &t.params {
                    match params.iter_mut().find(|x| x.name == q.name) {
                        Some(x) => *x = q.clone(),
                        None => params.push(q.clone()),
                    }
                }
                Rc::new(Resolved {
                    params,
                    body: merge(&p.body, &t.body),
                })
            }),
        };
        self.resolving.borrow_mut().pop();
        self.resolved
            .borrow_mut()
            .insert(name.to_string(), r.clone());
        r
    }

    fn use_template(&self, call: &Node, scope: &Scope, out: &mut Vec<Node>, parent: Option<&str>) {
        if !self.use_inner(call, scope, out, parent) && parent == Some("steps") {
            // A stand-in step, so the builder is not also reported as
            // having no steps.
            let e = Entry {
                name: None,
                ty: None,
                value: Value::String("true".into()),
                value_span: call.name.span,
                span: call.name.span,
            };
            out.push(Node {
                ty: None,
                name: Ident {
                    value: "shell".into(),
                    span: call.name.span,
                },
                entries: vec![e],
                children: None,
                span: call.span,
            });
        }
    }

    /// Expands one `use`; `false` when it could not.
    fn use_inner(
        &self,
        call: &Node,
        scope: &Scope,
        out: &mut Vec<Node>,
        parent: Option<&str>,
    ) -> bool {
        let Some(first) = args(call).next() else {
            self.emit(
                self.err(
                    Code::BadArgument,
                    call.name.span,
                    "`use` needs a template name",
                )
                .label("name missing")
                .help("write `use \"TEMPLATE\" param=value …`"),
            );
            return false;
        };
        let Some(name) = string_of(first) else {
            self.emit(
                self.err(
                    Code::BadArgument,
                    first.value_span,
                    "a template name must be a string",
                )
                .label("not a name")
                .help("write `use \"TEMPLATE\" …`"),
            );
            return false;
        };
        if let Some(extra) = args(call).nth(1) {
            self.emit(
                self.err(
                    Code::BadArgument,
                    extra.span,
                    "template arguments are named",
                )
                .label("positional argument")
                .help("write arguments as properties: `use \"TEMPLATE\" NAME=value`"),
            );
        }
        if call.children.is_some() {
            self.emit(
                self.err(Code::BadArgument, call.name.span, "`use` takes no block")
                    .label("has a block")
                    .help("pass everything as properties; to change a template's body write a template with `extends=`"),
            );
        }
        let Some(t) = self.resolve(name, first.value_span) else {
            return false;
        };
        let mut ok = true;
        let mut locals: Vec<(String, Val)> = Vec::with_capacity(t.params.len());
        let mut given: Vec<&str> = Vec::new();
        for e in call.entries.iter().filter(|e| e.name.is_some()) {
            let Some(k) = &e.name else { continue };
            if k.value == "when" {
                continue;
            }
            let Some(p) = t.params.iter().find(|p| p.name == k.value) else {
                self.emit(
                    self.err(
                        Code::BadArgument,
                        k.span,
                        format!("template `{name}` has no parameter `{}`", k.value),
                    )
                    .label("unknown parameter")
                    .help_opt(
                        did_you_mean(
                            &k.value,
                            t.params.iter().map(|p| p.name.as_str()),
                            &format!("`{name}` takes"),
                        )
                        .map(|h| {
                            if t.params.is_empty() {
                                format!("`{name}` takes no parameters")
                            } else {
                                h
                            }
                        }),
                    ),
                );
                ok = false;
                continue;
            };
            if given.contains(&p.name.as_str()) {
                self.emit(
                    self.err(
                        Code::DuplicateSetting,
                        k.span,
                        format!("`{}` is given twice", k.value),
                    )
                    .label("given again")
                    .help("remove one of them"),
                );
                continue;
            }
            given.push(&p.name);
            let Some(v) = self.entry_val(e, scope) else {
                ok = false;
                continue;
            };
            if !p.ty.accepts(&v) {
                self.emit(
                    self.err(
                        Code::BadArgument,
                        e.value_span,
                        format!(
                            "`{}` must be {}, found {}",
                            p.name,
                            p.ty.name(),
                            v.type_name()
                        ),
                    )
                    .label(format!("expected {}", p.ty.name()))
                    .with(FileId(0), p.span, "parameter declared here")
                    .help(format!("pass a value of type {}", p.ty.name())),
                );
                ok = false;
                continue;
            }
            locals.push((p.name.clone(), v));
        }
        // Defaults, in declaration order; they may use earlier parameters.
        for p in &t.params {
            if given.contains(&p.name.as_str()) {
                continue;
            }
            match &p.default {
                Some(d) => {
                    let dscope = Scope {
                        ex: self,
                        locals: &locals,
                        runtime: true,
                    };
                    match self.entry_val(d, &dscope) {
                        Some(v) if p.ty.accepts(&v) => locals.push((p.name.clone(), v)),
                        Some(v) => {
                            self.emit(
                                self.err(
                                    Code::BadArgument,
                                    d.value_span,
                                    format!(
                                        "default of `{}` must be {}, found {}",
                                        p.name,
                                        p.ty.name(),
                                        v.type_name()
                                    ),
                                )
                                .label(format!("expected {}", p.ty.name()))
                                .help("fix the default or the declared type"),
                            );
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                None => {
                    self.emit(
                        self.err(
                            Code::BadArgument,
                            first.value_span,
                            format!("template `{name}` needs `{}`", p.name),
                        )
                        .label(format!("`{}` missing", p.name))
                        .with(
                            FileId(0),
                            p.span,
                            "parameter declared here without a default",
                        )
                        .help(format!("pass it: use \"{name}\" {}=…", p.name)),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return false;
        }
        if *self.depth.borrow() >= MAX_DEPTH {
            self.emit(
                self.err(
                    Code::DefinitionCycle,
                    first.value_span,
                    format!("template `{name}` is used inside itself"),
                )
                .label("uses nest too deep")
                .help(format!(
                    "template uses nest at most {MAX_DEPTH} deep; a template cannot use itself"
                )),
            );
            return false;
        }
        let origin = Origin {
            span: first.value_span,
            note: self.note(format!("in this use of template `{name}`")),
        };
        let tscope = Scope {
            ex: self,
            locals: &locals,
            runtime: true,
        };
        *self.depth.borrow_mut() += 1;
        for b in &t.body {
            let c = self.copy(b, &origin);
            self.node(c, &tscope, out, parent);
        }
        *self.depth.borrow_mut() -= 1;
        true
    }

    // ---- matrices -----------------------------------------------------

    fn matrix(&self, m: &Node, scope: &Scope, out: &mut Vec<Node>) {
        if let Some(e) = m.entries.first() {
            self.emit(
                self.err(Code::InvalidDeclaration, e.span, "`matrix` takes no arguments")
                    .label("unexpected")
                    .help("write `matrix { axis \"os\" \"linux\" \"mac\"; builder \"b-${{ os }}\" { … } }`"),
            );
        }
        let mut axes: Vec<(String, Span, Vec<Val>)> = Vec::new();
        let mut excludes: Vec<&Entry> = Vec::new();
        let mut body: Vec<&Node> = Vec::new();
        let mut broken = false;
        for k in kids(m) {
            match k.name.value.as_str() {
                "axis" => {
                    let a = self.axis(k, scope);
                    broken |= a.is_none();
                    if let Some(a) = a {
                        if let Some(first) = axes.iter().find(|x| x.0 == a.0) {
                            self.emit(
                                self.err(Code::InvalidDeclaration, a.1, format!("axis `{}` is given twice", a.0))
                                    .label("second axis")
                                    .also(first.1, "first axis")
                                    .help("give each axis once, with all its values"),
                            );
                            continue;
                        }
                        axes.push(a);
                    }
                }
                "exclude" => match prop(k, "when") {
                    Some(e) if k.entries.len() == 1 => excludes.push(e),
                    _ => self.emit(
                        self.err(Code::InvalidDeclaration, k.name.span, "`exclude` takes one `when=` condition")
                            .label("malformed exclusion")
                            .help("write exclude when=\"${{ os == 'mac' && branch.name == 'old' }}\""),
                    ),
                },
                "let" | "template" | "import" | "matrix" => self.emit(
                    self.err(Code::InvalidDeclaration, k.name.span, format!("`{}` cannot be inside a matrix", k.name.value))
                        .label("not allowed here")
                        .help("declare it at the top level; a matrix holds axes, exclusions and the entities to repeat"),
                ),
                _ => body.push(k),
            }
        }
        if axes.is_empty() {
            if broken {
                return;
            }
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    m.name.span,
                    "a matrix needs at least one axis",
                )
                .label("no axis")
                .help("add `axis \"NAME\" \"value\" …`"),
            );
            return;
        }
        let total = axes
            .iter()
            .try_fold(1usize, |acc, a| acc.checked_mul(a.2.len()))
            .unwrap_or(usize::MAX);
        if total > MAX_COMBINATIONS {
            self.emit(
                self.err(Code::InvalidDeclaration, m.name.span, format!("the matrix has {total} combinations"))
                    .label("too many combinations")
                    .help(format!("a matrix expands to at most {MAX_COMBINATIONS} combinations; split it or exclude combinations by shrinking its axes")),
            );
            return;
        }
        let mut idx = vec![0usize; axes.len()];
        let mut locals: Vec<(String, Val)> = scope.locals.to_vec();
        let base = locals.len();
        for (n, _, _) in &axes {
            locals.push((n.clone(), Val::Null));
        }
        'combos: for _ in 0..total {
            for (i, (_, _, vals)) in axes.iter().enumerate() {
                locals[base + i].1 = vals[idx[i]].clone();
            }
            // Advance the odometer (last axis fastest) for the next round.
            let mut i = axes.len();
            while i > 0 {
                i -= 1;
                idx[i] += 1;
                if idx[i] < axes[i].2.len() {
                    break;
                }
                idx[i] = 0;
            }
            let cscope = Scope {
                ex: self,
                locals: &locals,
                runtime: true,
            };
            for e in &excludes {
                if self.condition(e, &cscope) == Some(true) {
                    continue 'combos;
                }
            }
            let label = axes
                .iter()
                .enumerate()
                .map(|(i, (n, _, _))| format!("{n}={}", locals[base + i].1.short()))
                .collect::<Vec<_>>()
                .join(", ");
            let origin = Origin {
                span: m.name.span,
                note: self.note(format!("in matrix combination {label}")),
            };
            for b in &body {
                let c = self.copy(b, &origin);
                self.node(c, &cscope, out, None);
            }
        }
    }

    fn axis(&self, k: &Node, scope: &Scope) -> Option<(String, Span, Vec<Val>)> {
        let mut it = args(k);
        let Some(first) = it.next() else {
            self.emit(
                self.err(Code::InvalidDeclaration, k.name.span, "`axis` needs a name and values")
                    .label("empty axis")
                    .help("write `axis \"os\" \"linux\" \"mac\"` or `axis \"branch\" \"${{ branches }}\"`"),
            );
            return None;
        };
        let name = match string_of(first) {
            Some(s)
                if s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && !expr_keyword(s) =>
            {
                s
            }
            _ => {
                self.emit(
                    self.err(
                        Code::InvalidDeclaration,
                        first.value_span,
                        "an axis name must be a name",
                    )
                    .label("not a name")
                    .help("axis names are used as `${{ NAME }}`: letters, digits, `_`, `-`"),
                );
                return None;
            }
        };
        if let Some(p) = k.entries.iter().find(|e| e.name.is_some()) {
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    p.span,
                    "`axis` takes no properties",
                )
                .label("unexpected")
                .help("list the values as arguments"),
            );
        }
        let cscope = Scope {
            ex: self,
            locals: scope.locals,
            runtime: false,
        };
        let mut vals = Vec::new();
        for e in it {
            match self.entry_val(e, &cscope)? {
                Val::List(l) => vals.extend(l.iter().cloned()),
                v => vals.push(v),
            }
        }
        if vals.is_empty() {
            self.emit(
                self.err(
                    Code::InvalidDeclaration,
                    first.value_span,
                    format!("axis `{name}` has no values"),
                )
                .label("no values")
                .help("give at least one value; an empty axis would expand to nothing"),
            );
            return None;
        }
        Some((name.to_string(), first.value_span, vals))
    }
}

fn expr_keyword(s: &str) -> bool {
    matches!(
        s,
        "if" | "then" | "else" | "in" | "true" | "false" | "null" | "prop"
    )
}

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
