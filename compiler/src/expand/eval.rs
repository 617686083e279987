//! Values: variables, the values written in KDL, and compile-time
//! evaluation of `${{ … }}` in strings and conditions.

use super::*;
use crate::interp::interpolations;

/// What [`Expander::interp`] made of a string.
pub(super) enum Interp {
    /// No compile-time part: the string stays as written.
    Same,
    /// The string with its compile-time parts substituted.
    Text(String),
    /// The value of a string that is one `${{ … }}`.
    Val(Val),
}

impl Expander<'_> {
    pub(super) fn global(
        &self,
        name: &str,
        start: usize,
        end: usize,
        scope: &Scope,
    ) -> Result<Val, Error> {
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

    pub(super) fn let_value(&self, src: &LetSrc) -> Option<Val> {
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
    pub(super) fn entry_val(&self, e: &Entry, scope: &Scope) -> Option<Val> {
        if let Some(t) = &e.ty {
            self.emit(
                self.err(Code::InvalidDeclaration, t.span, "a value here takes no annotation")
                    .label("remove this")
                    .help("secrets cannot be compile-time values; write (secret)\"NAME\" where the secret is used"),
            );
            return None;
        }
        match &e.value {
            Value::String(s) => match self.interp(s, e.value_span, scope, false) {
                Ok(Interp::Val(v)) => Some(v),
                Ok(Interp::Text(t)) => Some(Val::str(t)),
                Ok(Interp::Same) => Some(Val::str(&**s)),
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
    pub(super) fn node_val(&self, n: &Node, skip: usize, scope: &Scope) -> Option<Val> {
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
            return Some(Val::List(Arc::new(out)));
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
            return Some(Val::Record(Arc::new(fields)));
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
                Some(Val::List(Arc::new(out)))
            }
        }
    }

    /// Substitutes compile-time values into `s`. A string that is exactly
    /// one `${{ … }}` gets the expression's value ([`Interp::Val`]); any
    /// other changed string is text ([`Interp::Text`], handed back as the
    /// `String` it was built in: a node's entry takes it without the copy
    /// into a `Val` and out again that every interpolated string of every
    /// expanded copy used to pay).
    ///
    /// A part that depends on a build property stays in the string as text
    /// (what settings that are not run-time strings see) and, given
    /// `record`, is recorded as the run-time expression it stands for.
    pub(super) fn interp(
        &self,
        s: &str,
        token: Span,
        scope: &Scope,
        record: bool,
    ) -> Result<Interp, String> {
        if !crate::interp::has_interpolation(s) {
            return Ok(Interp::Same);
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut changed = false;
        let mut failed = false;
        let mut rest = 0;
        let whole = {
            let t = s.trim();
            t.starts_with("${{") && t.ends_with("}}") && t[3..].find("}}") == Some(t.len() - 5)
        };
        for i in interpolations(s) {
            // An unclosed `${{` is text here; the decoder reports it in a
            // run-time string.
            let Some(body) = i.body else { break };
            let (open, body_start) = (i.open, i.open + 3);
            out.push_str(&s[rest..open]);
            rest = i.end;
            let ast = match self.parse(body) {
                Ok(a) => a,
                Err(e) => {
                    if body.contains("prop.") && scope.runtime {
                        // Left for the run-time checks, which report it.
                        out.push_str(&s[open..rest]);
                    } else {
                        self.report(e, token, s, body_start);
                        failed = true;
                        out.push_str(body.trim());
                    }
                    continue;
                }
            };
            if ast.uses_props() && !ast.uses_names() && scope.runtime {
                if record {
                    let mut props = Vec::new();
                    // A mistake is left for the decoder, which reports it
                    // where the string is read as a run-time one.
                    if let Ok(e) = expr::to_runtime(&ast, body, &mut props) {
                        let shift = out.len() + 3;
                        for p in &mut props {
                            p.start += shift;
                            p.end += shift;
                        }
                        let part = RunPart { expr: e, props };
                        self.run_parts.borrow_mut().insert(token, out.len(), part);
                    }
                }
                out.push_str(&s[open..rest]);
                continue;
            }
            changed = true;
            match expr::eval(&ast, scope) {
                Ok(Out::Val(v)) => {
                    if whole {
                        return Ok(Interp::Val(v));
                    }
                    let at = out.len();
                    if !v.push_text(&mut out) {
                        out.truncate(at);
                        self.report(
                            Error::new(
                                Code::TypeMismatch,
                                ast.start,
                                ast.end,
                                format!("{} cannot be put into a string", v.type_name()),
                                "not text",
                                "interpolate a field (`b.name`) or a list of scalars (joined with spaces)",
                            ),
                            token,
                            s,
                            body_start,
                        );
                        failed = true;
                    }
                }
                Ok(Out::Run(e)) => {
                    let at = out.len();
                    out.push_str("${{ ");
                    out.push_str(&expr::print_runtime(&e));
                    out.push_str(" }}");
                    if record {
                        let part = RunPart::evaluated(at, out.len(), e);
                        self.run_parts.borrow_mut().insert(token, at, part);
                    }
                }
                Err(e) => {
                    self.report(e, token, s, body_start);
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
        Ok(if changed {
            Interp::Text(out)
        } else {
            Interp::Same
        })
    }

    /// A compile-time condition (`when=`, `exclude when=`).
    pub(super) fn condition(&self, e: &Entry, scope: &Scope) -> Option<bool> {
        self.condition_at(&e.value, e.value_span, scope)
    }

    /// [`Expander::condition`] of a value written at `value_span`.
    pub(super) fn condition_at(
        &self,
        value: &Value,
        value_span: Span,
        scope: &Scope,
    ) -> Option<bool> {
        let Value::String(s) = value else {
            if let Value::Bool(b) = value {
                return Some(*b);
            }
            self.emit(
                self.err(
                    Code::TypeMismatch,
                    value_span,
                    format!("expected a condition, found {}", value.kind_name()),
                )
                .label("not a condition")
                .help("write when=\"${{ os == 'linux' }}\""),
            );
            return None;
        };
        let (body, off) = crate::interp::condition_body(s);
        let scope = Scope {
            ex: self,
            locals: scope.locals,
            runtime: false,
        };
        let ast = match self.parse(body) {
            Ok(a) => a,
            Err(err) => {
                self.report(err, value_span, s, off);
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
                    value_span,
                    s,
                    off,
                );
                None
            }
            Ok(Out::Run(_)) => None,
            Err(err) => {
                self.report(err, value_span, s, off);
                None
            }
        }
    }

    /// A run-time condition written bare (`do-step-if="os == 'x' && …"`):
    /// compile-time names are substituted, the rest is left for run time.
    pub(super) fn runtime_condition(&self, e: &mut Entry, scope: &Scope) {
        let Value::String(s) = &e.value else { return };
        if s.contains("${{") {
            return;
        }
        let Ok(ast) = self.parse(s) else { return };
        if !ast.uses_names() {
            return;
        }
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
                            e.value_span,
                            s,
                            0,
                        );
                        "false".into()
                    }
                };
                e.value = Value::String(text.into());
            }
            Ok(Out::Run(x)) => {
                let text = expr::print_runtime(&x);
                let part = RunPart::evaluated(0, text.len(), x);
                self.run_parts.borrow_mut().insert(e.value_span, BARE, part);
                e.value = Value::String(text.into());
            }
            Err(err) => {
                self.report(err, e.value_span, s, 0);
                e.value = Value::String("false".into());
            }
        }
    }
}
