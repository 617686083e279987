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

impl Expander<'_> {
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
