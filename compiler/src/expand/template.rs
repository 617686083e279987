//! Templates: resolving `extends=` chains and expanding `use`.

use super::*;

impl Expander<'_> {
    pub(super) fn resolve(&self, name: &str, span: Span) -> Option<Arc<Resolved>> {
        if let Some(r) = self.resolved.borrow().get(name) {
            return r.clone();
        }
        let before = self.diags.borrow().len();
        let r = self.resolve_new(name, span);
        self.resolved_with_reports(before);
        r
    }

    fn resolve_new(&self, name: &str, span: Span) -> Option<Arc<Resolved>> {
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
            None => Some(Arc::new(Resolved {
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
                Arc::new(Resolved {
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

    pub(super) fn use_template(
        &self,
        call: &Node,
        scope: &Scope,
        out: &mut Vec<Node>,
        parent: Option<&str>,
    ) {
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
    pub(super) fn use_inner(
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
            self.expand_copy(b, &origin, &tscope, out, parent);
        }
        *self.depth.borrow_mut() -= 1;
        true
    }
}
