//! Copies of template bodies and matrix children: every copy gets a fresh
//! range of the global offset space, so its diagnostics point at the body
//! and remember the use.

use super::*;

/// Moves every span of a copied node into its copy range.
pub(super) struct Shift<'x> {
    pub(super) spans: &'x RefCell<SpanMap>,
    pub(super) target: Span,
    pub(super) delta: i64,
    pub(super) origin: Origin,
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

pub(super) fn shifted(s: Span, d: i64) -> Span {
    Span {
        start: (s.start as i64 + d) as u32,
        end: (s.end as i64 + d) as u32,
    }
}

/// `i` with its span moved by `d`.
pub(super) fn moved_ident(i: &Ident, d: i64) -> Ident {
    Ident {
        value: i.value.clone(),
        span: shifted(i.span, d),
    }
}

/// `e` holding `value`, its spans moved by `d`.
pub(super) fn moved_entry_with(e: &Entry, d: i64, value: Value) -> Entry {
    Entry {
        name: e.name.as_ref().map(|k| moved_ident(k, d)),
        ty: e.ty.as_ref().map(|t| moved_ident(t, d)),
        value,
        value_span: shifted(e.value_span, d),
        span: shifted(e.span, d),
    }
}

/// A copy of `e` with its spans moved by `d`.
pub(super) fn moved_entry(e: &Entry, d: i64) -> Entry {
    moved_entry_with(e, d, e.value.clone())
}

/// A copy of `n` with every span moved by `d`.
pub(super) fn moved(n: &Node, d: i64) -> Node {
    Node {
        ty: n.ty.as_ref().map(|t| moved_ident(t, d)),
        name: moved_ident(&n.name, d),
        entries: n.entries.iter().map(|e| moved_entry(e, d)).collect(),
        children: n.children.as_ref().map(|c| Children {
            nodes: c.nodes.iter().map(|k| moved(k, d)).collect(),
            span: shifted(c.span, d),
        }),
        span: shifted(n.span, d),
    }
}

/// Whether every span of `n` lies in `target`: then its copy is `n` moved
/// by one shift, and [`Shift`] would make no range of its own for a piece
/// (only a body merged through `extends=` has pieces from elsewhere).
fn contained(n: &Node, target: Span) -> bool {
    let inside = |s: Span| s.start >= target.start && s.end <= target.end;
    inside(n.span)
        && inside(n.name.span)
        && n.ty.as_ref().is_none_or(|t| inside(t.span))
        && n.entries.iter().all(|e| {
            inside(e.span)
                && inside(e.value_span)
                && e.name.as_ref().is_none_or(|k| inside(k.span))
                && e.ty.as_ref().is_none_or(|t| inside(t.span))
        })
        && n.children
            .as_ref()
            .is_none_or(|c| inside(c.span) && c.nodes.iter().all(|k| contained(k, target)))
}

impl Expander<'_> {
    /// Expands a copy of `n` (a template body's node or a matrix child)
    /// made for `origin` into `out`. The copy's range is reserved first, as
    /// [`Expander::copy`] does, so the offset space is laid out the same
    /// way; a node with pieces from elsewhere is copied whole first.
    pub(super) fn expand_copy(
        &self,
        n: &Node,
        origin: &Origin,
        scope: &Scope,
        out: &mut Vec<Node>,
        parent: Option<&str>,
    ) {
        if contained(n, n.span) {
            let d = self.spans.borrow_mut().add_copy(n.span, origin.clone());
            // Out of offsets, the copy keeps the body's spans (as `copy`).
            self.node(n, d.unwrap_or(0), scope, out, parent);
        } else {
            let c = self.copy(n, origin);
            self.node(&c, 0, scope, out, parent);
        }
    }

    /// A copy of `n` in a fresh range that remembers `origin`.
    pub(super) fn copy(&self, n: &Node, origin: &Origin) -> Node {
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
}
