//! When a change cannot change a compilation's findings: a file edited only
//! between its tokens (a comment typed, a blank line, indentation) parses
//! to the same tree with the spans after the edit moved. The last
//! compilation of its root then still holds, with its places moved the
//! same way ([`Shift`]); `Workspace` uses that instead of compiling again.
//!
//! Why that is exact: the compiler reads a file only through its tree and
//! the text under the tree's token spans (strings with `${{ … }}` are read
//! again from their token). If every span of the new tree is the old one
//! moved past the edit, no token lies in the edited range and the text
//! under each is byte for byte the old one, so the compiler would report
//! the same diagnostics at the moved places.

use bbc_compiler::syntax::{Document, Entry, Ident, Node, Span};

/// One contiguous replacement: bytes `at..old_end` of the old text became
/// `at..old_end + delta` of the new one; everything before `at` and from
/// `old_end` on is unchanged (moved by `delta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    at: u32,
    old_end: u32,
    delta: i64,
}

impl Shift {
    /// The replacement that turns `old` into `new`: their common prefix
    /// and suffix are kept.
    pub fn between(old: &str, new: &str) -> Option<Shift> {
        let (o, n) = (old.as_bytes(), new.as_bytes());
        let prefix = o.iter().zip(n).take_while(|(a, b)| a == b).count();
        let room = o.len().min(n.len()) - prefix;
        let suffix = o
            .iter()
            .rev()
            .zip(n.iter().rev())
            .take(room)
            .take_while(|(a, b)| a == b)
            .count();
        Some(Shift {
            at: u32::try_from(prefix).ok()?,
            old_end: u32::try_from(o.len() - suffix).ok()?,
            delta: n.len() as i64 - o.len() as i64,
        })
    }

    fn moved(&self, x: u32) -> Option<u32> {
        u32::try_from(i64::from(x) + self.delta).ok()
    }

    /// Where an offset at which something starts went; `None` inside the
    /// replaced bytes.
    fn start(&self, x: u32) -> Option<u32> {
        if x < self.at {
            Some(x)
        } else if x >= self.old_end {
            self.moved(x)
        } else {
            None
        }
    }

    /// Where an offset at which something ends went.
    fn end(&self, x: u32) -> Option<u32> {
        if x <= self.at {
            Some(x)
        } else if x > self.old_end {
            self.moved(x)
        } else {
            None
        }
    }

    /// Where a span went; `None` when it touches the replaced bytes (or is
    /// empty where text was inserted: before or after it is unknown).
    pub fn span(&self, s: Span) -> Option<Span> {
        let (start, end) = (self.start(s.start)?, self.end(s.end)?);
        (start <= end).then_some(Span { start, end })
    }
}

/// Whether `new` is `old` with every span moved by `shift`: the same
/// nodes, names, annotations and values.
pub fn same_tree(old: &Document, new: &Document, shift: &Shift) -> bool {
    same_nodes(&old.nodes, &new.nodes, shift)
}

fn same_nodes(old: &[Node], new: &[Node], sh: &Shift) -> bool {
    old.len() == new.len() && old.iter().zip(new).all(|(a, b)| same_node(a, b, sh))
}

fn same_span(old: Span, new: Span, sh: &Shift) -> bool {
    sh.span(old) == Some(new)
}

fn same_ident(old: &Ident, new: &Ident, sh: &Shift) -> bool {
    old.value == new.value && same_span(old.span, new.span, sh)
}

fn same_opt_ident(old: &Option<Ident>, new: &Option<Ident>, sh: &Shift) -> bool {
    match (old, new) {
        (None, None) => true,
        (Some(a), Some(b)) => same_ident(a, b, sh),
        _ => false,
    }
}

fn same_entry(old: &Entry, new: &Entry, sh: &Shift) -> bool {
    same_opt_ident(&old.name, &new.name, sh)
        && same_opt_ident(&old.ty, &new.ty, sh)
        && old.value == new.value
        && same_span(old.value_span, new.value_span, sh)
        && same_span(old.span, new.span, sh)
}

fn same_node(old: &Node, new: &Node, sh: &Shift) -> bool {
    same_ident(&old.name, &new.name, sh)
        && same_opt_ident(&old.ty, &new.ty, sh)
        && same_span(old.span, new.span, sh)
        && old.entries.len() == new.entries.len()
        && old
            .entries
            .iter()
            .zip(&new.entries)
            .all(|(a, b)| same_entry(a, b, sh))
        && match (&old.children, &new.children) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                same_span(a.span, b.span, sh) && same_nodes(&a.nodes, &b.nodes, sh)
            }
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbc_compiler::syntax::parse;

    fn same(old: &str, new: &str) -> bool {
        let sh = Shift::between(old, new).unwrap_or_else(|| panic!("no shift"));
        same_tree(&parse(old).0, &parse(new).0, &sh)
    }

    #[test]
    fn edits_between_tokens_keep_the_tree() {
        let t = "// a\nbuilder \"b\" {\n    workers \"w\"\n}\n";
        assert!(same(t, &t.replace("// a", "// ab")));
        assert!(same(t, &t.replace("// a\n", "// a\n\n\n")));
        assert!(same(t, &t.replace("    workers", "\tworkers")));
        assert!(same(t, &format!("{t}// more")));
        assert!(same(t, t));
        // Tokens changed, added or removed.
        assert!(!same(t, &t.replace("\"w\"", "\"wx\"")));
        assert!(!same(t, &t.replace("\"w\"", "\"w\" \"x\"")));
        assert!(!same(t, &t.replace("workers", "/-workers")));
        assert!(!same(t, &t.replace("\"b\"", "#\"b\"#")));
        assert!(!same(t, &t.replace("// a", "a")));
    }

    #[test]
    fn spans_move_past_the_edit() {
        let sh = Shift::between("ab  cd", "ab cd").unwrap_or_else(|| panic!());
        assert_eq!(sh.span(Span::new(0, 2)), Some(Span::new(0, 2)));
        assert_eq!(sh.span(Span::new(4, 6)), Some(Span::new(3, 5)));
        assert_eq!(sh.span(Span::new(0, 6)), Some(Span::new(0, 5)));
        // Inserted text: an empty span there has no one place.
        let sh = Shift::between("ab", "a-b").unwrap_or_else(|| panic!());
        assert_eq!(sh.span(Span::new(1, 1)), None);
        assert_eq!(sh.span(Span::new(1, 2)), Some(Span::new(2, 3)));
    }
}
