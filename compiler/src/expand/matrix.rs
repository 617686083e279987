//! Matrices: axes, exclusions and one copy of the body per combination.

use super::*;

/// An axis: its name, where the name is written, its values.
pub(super) type Axis = (String, Span, Vec<Val>);

impl Expander<'_> {
    pub(super) fn matrix(&self, m: &Node, scope: &Scope, out: &mut Vec<Node>) {
        if let Some(e) = m.entries.first() {
            self.emit(
                self.err(Code::InvalidDeclaration, e.span, "`matrix` takes no arguments")
                    .label("unexpected")
                    .help("write `matrix { axis \"os\" \"linux\" \"mac\"; builder \"b-${{ os }}\" { … } }`"),
            );
        }
        let mut axes: Vec<Axis> = Vec::new();
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
        let site = m.name.span;
        let parts = self.parts(total, scope);
        if parts > 1 {
            self.combinations_forked(&axes, &excludes, &body, site, total, parts, out);
        } else {
            self.combinations(&axes, &excludes, &body, site, scope.locals, 0..total, out);
        }
    }

    /// Expands the combinations `range` (in the order of an odometer whose
    /// last axis turns fastest) of a matrix expanded at `site`, with the
    /// variables `outer` around it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn combinations(
        &self,
        axes: &[Axis],
        excludes: &[&Entry],
        body: &[&Node],
        site: Span,
        outer: &[(String, Val)],
        range: std::ops::Range<usize>,
        out: &mut Vec<Node>,
    ) {
        // The odometer at `range.start`.
        let mut idx = vec![0usize; axes.len()];
        let mut rest = range.start;
        for (i, (_, _, vals)) in axes.iter().enumerate().rev() {
            idx[i] = rest % vals.len();
            rest /= vals.len();
        }
        let mut locals: Vec<(String, Val)> = outer.to_vec();
        let base = locals.len();
        for (n, _, _) in axes {
            locals.push((n.clone(), Val::Null));
        }
        'combos: for _ in range {
            if self.bailed.get() {
                return;
            }
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
            for e in excludes {
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
                span: site,
                note: self.note(format!("in matrix combination {label}")),
            };
            for b in body {
                self.expand_copy(b, &origin, &cscope, out, None);
            }
        }
    }

    pub(super) fn axis(&self, k: &Node, scope: &Scope) -> Option<Axis> {
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
