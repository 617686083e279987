//! Declarations: `let` variables and `template`s with their parameters.

use super::*;

pub(super) enum LetSrc {
    Entry(Entry),
    Node(Node),
}

pub(super) enum LetState {
    Pending(Box<LetSrc>, Span),
    Busy,
    Done(Val),
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ty {
    Any,
    String,
    Int,
    Bool,
    List,
    Record,
}

pub(super) const TYPES: &[(&str, Ty)] = &[
    ("any", Ty::Any),
    ("string", Ty::String),
    ("int", Ty::Int),
    ("bool", Ty::Bool),
    ("list", Ty::List),
    ("record", Ty::Record),
];

impl Ty {
    pub(super) fn accepts(self, v: &Val) -> bool {
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
    pub(super) fn name(self) -> &'static str {
        TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("any")
    }
}

#[derive(Clone)]
pub(super) struct Param {
    pub(super) name: String,
    pub(super) span: Span,
    pub(super) ty: Ty,
    pub(super) default: Option<Entry>,
}

#[derive(Clone)]
pub(super) struct Template {
    pub(super) name_span: Span,
    pub(super) params: Vec<Param>,
    pub(super) body: Vec<Node>,
    pub(super) extends: Option<(String, Span)>,
}

/// A template with its `extends` chain applied.
pub(super) struct Resolved {
    pub(super) params: Vec<Param>,
    pub(super) body: Vec<Node>,
}

impl Expander<'_> {
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

    pub(super) fn add_let(&mut self, name: String, span: Span, src: LetSrc) {
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

    pub(super) fn declare_let(&mut self, n: &Node) {
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

    pub(super) fn declare_template(&mut self, n: &Node) {
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
        Arc::make_mut(&mut self.templates).insert(
            name.to_string(),
            Template {
                name_span: e.value_span,
                params,
                body,
                extends,
            },
        );
    }

    pub(super) fn param(&self, k: &Node) -> Option<Param> {
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
}
