//! `bbc fmt`: one canonical layout for a config, keeping every comment.
//!
//! The layout: one node per line, four spaces per level, one space between
//! entries, `key=value` with no spaces, `{` at the end of the node's line
//! and `}` on a line of its own, at most one blank line in a row, none at the
//! start of a block, LF line ends and one final newline. Values, names and
//! type annotations are kept exactly as written (`"quoted"` or bare, raw
//! strings, `0x1F`, `1_000`): the formatter arranges tokens, it never
//! rewrites them. Line continuations (`\`) are kept where they are and the
//! continued lines are indented one level deeper than their node.
//!
//! Comments and slash-dashed items (`/-node`, `/-arg`, `/-{ … }`) are not in
//! the parsed tree; they come beside it as spans ([`parse_with_trivia`]) and
//! are put back, verbatim, where they were relative to the nodes and
//! entries: a comment that ended a line still ends it, one that had a line
//! of its own still has one. Multi-line comments, slash-dashed items and
//! multi-line strings move with their node's indentation; for strings that
//! is safe because KDL removes the closing line's indentation from every
//! line, so shifting all of them by the same amount keeps the value.
//!
//! Architecture invariant: formatting never changes what a file means.
//! Every result is parsed again and compared with the input — the same
//! nodes, entries and values, the same comments in the same order — and a
//! difference is an error (the file is left alone), never a silent change.
//!
//! [`parse_with_trivia`]: crate::syntax::parse_with_trivia

use crate::diagnostic::Diagnostic;
use crate::source::{SourceFile, SourceMap};
use crate::syntax::{self, Entry, Node, Span, Value};

const INDENT: usize = 4;

#[derive(Debug)]
pub enum FormatError {
    /// The input is not valid KDL 2.0; nothing was formatted.
    Syntax {
        sources: SourceMap,
        diagnostics: Vec<Diagnostic>,
    },
    /// The layout would have changed the meaning or lost a comment (a bug
    /// in the formatter): the input is left as it is.
    Unsafe(String),
}

/// Formats `text` (the file `name`, used in diagnostics).
pub fn format_source(name: &str, text: &str) -> Result<String, FormatError> {
    let (doc, trivia, errors) = syntax::parse_with_trivia(text);
    if !errors.is_empty() {
        let mut sources = SourceMap::default();
        let id = sources.add(SourceFile::new(name, text));
        let diagnostics = errors
            .into_iter()
            .map(|e| crate::syntax_diagnostic(id, e))
            .collect();
        return Err(FormatError::Syntax {
            sources,
            diagnostics,
        });
    }
    // Re-indenting multi-line tokens is the only step that touches text
    // inside a token; if its result differs, the verbatim layout is tried.
    for reindent in [true, false] {
        let out = Printer {
            src: text,
            trivia: &trivia,
            next: 0,
            covered: 0,
            out: String::with_capacity(text.len() + text.len() / 8),
            reindent,
        }
        .document(&doc.nodes);
        if same_meaning(text, &doc.nodes, &trivia, &out) {
            return Ok(out);
        }
    }
    Err(FormatError::Unsafe(format!(
        "formatting `{name}` would change its meaning or lose a comment, so it was left as it is; \
         please report this with the file"
    )))
}

struct Printer<'a> {
    src: &'a str,
    /// Comments and slash-dashed items, in source order.
    trivia: &'a [Span],
    /// The first trivia item not yet emitted.
    next: usize,
    /// End of the last emitted trivia item: items inside it (a comment in
    /// a slash-dashed node) went out with it.
    covered: u32,
    out: String,
    reindent: bool,
}

fn is_newline(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Line breaks in `s` (`\r\n` counts once).
fn line_breaks(s: &str) -> usize {
    let mut n = 0;
    let mut prev_cr = false;
    for c in s.chars() {
        if c == '\n' && prev_cr {
            prev_cr = false;
            continue;
        }
        prev_cr = c == '\r';
        if is_newline(c) {
            n += 1;
        }
    }
    n
}

impl Printer<'_> {
    /// The current output line holds nothing but indentation.
    fn at_line_start(&self) -> bool {
        let line = &self.out[self.out.rfind('\n').map_or(0, |i| i + 1)..];
        line.trim_start_matches('\u{FEFF}')
            .bytes()
            .all(|b| b == b' ')
    }

    /// Ends the current line (if any), adds a blank line when asked, and
    /// indents for `depth`.
    fn start_line(&mut self, depth: usize, blank: bool) {
        if self.at_line_start() {
            let keep = self.out.trim_end_matches(' ').len();
            self.out.truncate(keep);
        } else {
            self.out.push('\n');
        }
        if blank && !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
        self.out.extend(std::iter::repeat_n(' ', depth * INDENT));
    }

    /// The next trivia item starting before `before`, skipping items nested
    /// in one already emitted.
    fn take_trivia(&mut self, before: u32) -> Option<Span> {
        while let Some(&t) = self.trivia.get(self.next) {
            if t.start >= before {
                return None;
            }
            self.next += 1;
            if t.start >= self.covered {
                self.covered = t.end;
                return Some(t);
            }
        }
        None
    }

    fn document(mut self, nodes: &[Node]) -> String {
        let start = if self.src.starts_with('\u{FEFF}') {
            self.out.push('\u{FEFF}');
            3
        } else {
            0
        };
        self.block(nodes, start, self.src.len() as u32, 0);
        if !self.at_line_start() {
            self.out.push('\n');
        }
        if self.out == "\u{FEFF}\n" {
            self.out.truncate(3);
        }
        self.out
    }

    /// The nodes of one block (or the document) from `start` to `end`, with
    /// the trivia between them.
    fn block(&mut self, nodes: &[Node], start: u32, end: u32, depth: usize) {
        let mut pos = start;
        let mut first = true;
        for node in nodes {
            self.gap(&mut pos, node.span.start, depth, &mut first);
            let blank = !first && line_breaks(self.slice(pos, node.span.start)) >= 2;
            self.start_line(depth, blank);
            self.node(node, depth);
            pos = node.span.end;
            first = false;
        }
        self.gap(&mut pos, end, depth, &mut first);
    }

    fn slice(&self, start: u32, end: u32) -> &str {
        self.src.get(start as usize..end as usize).unwrap_or("")
    }

    /// Trivia between nodes: on the current line if it was on the line of
    /// what came before it, else on a line of its own.
    fn gap(&mut self, pos: &mut u32, until: u32, depth: usize, first: &mut bool) {
        while let Some(t) = self.take_trivia(until) {
            let breaks = line_breaks(self.slice(*pos, t.start));
            if breaks == 0 && !self.at_line_start() {
                self.out.push(' ');
            } else {
                self.start_line(depth, !*first && breaks >= 2);
            }
            let src = self.src;
            let text = src.get(t.start as usize..t.end as usize).unwrap_or("");
            match text.strip_prefix("/-").and_then(formatted_node) {
                Some(node) => {
                    // A commented-out node is laid out like a live one.
                    self.out.push_str("/-");
                    for (i, line) in node.lines().enumerate() {
                        if i > 0 {
                            self.out.push('\n');
                            if !line.is_empty() {
                                self.out.extend(std::iter::repeat_n(' ', depth * INDENT));
                            }
                        }
                        self.out.push_str(line);
                    }
                }
                None => self.verbatim(t),
            }
            *pos = t.end;
            *first = false;
        }
    }

    /// Trivia and line continuations inside a node, up to `until`.
    /// Continued lines are indented to `depth`.
    fn inline_gap(&mut self, pos: &mut u32, until: u32, depth: usize) {
        let mut continued = false;
        loop {
            let t = self.take_trivia(until);
            let plain_end = t.map_or(until, |t| t.start);
            let src = self.src;
            let plain = src.get(*pos as usize..plain_end as usize).unwrap_or("");
            for c in plain.chars() {
                if c == '\\' {
                    self.out
                        .push_str(if self.at_line_start() { "\\" } else { " \\" });
                    continued = true;
                } else if continued && continued_break(c) {
                    // The line break the backslash escaped.
                    self.start_line(depth, false);
                    continued = false;
                }
            }
            match t {
                Some(t) => {
                    if !self.at_line_start() {
                        self.out.push(' ');
                    }
                    self.verbatim(t);
                    *pos = t.end;
                }
                None => {
                    *pos = until;
                    return;
                }
            }
        }
    }

    fn node(&mut self, node: &Node, depth: usize) {
        if let Some(ty) = &node.ty {
            self.out.push('(');
            self.push_span(ty.span);
            self.out.push(')');
        }
        self.push_span(node.name.span);
        let mut pos = node.name.span.end;
        for e in &node.entries {
            self.inline_gap(&mut pos, e.span.start, depth + 1);
            if !self.at_line_start() {
                self.out.push(' ');
            }
            self.entry(e);
            pos = e.span.end;
        }
        if let Some(ch) = &node.children {
            self.inline_gap(&mut pos, ch.span.start, depth + 1);
            self.out
                .push_str(if self.at_line_start() { "{" } else { " {" });
            let before = self.out.len();
            let close = ch.span.end.saturating_sub(1).max(ch.span.start + 1);
            self.block(&ch.nodes, ch.span.start + 1, close, depth + 1);
            if self.out.len() > before {
                self.start_line(depth, false);
            }
            self.out.push('}');
            pos = ch.span.end;
        }
        self.inline_gap(&mut pos, node.span.end, depth + 1);
    }

    /// Copies a single-line token (a name or type annotation).
    fn push_span(&mut self, span: Span) {
        let src = self.src;
        self.out.push_str(
            src.get(span.start as usize..span.end as usize)
                .unwrap_or(""),
        );
    }

    fn entry(&mut self, e: &Entry) {
        if let Some(name) = &e.name {
            self.push_span(name.span);
            self.out.push('=');
        }
        if let Some(ty) = &e.ty {
            self.out.push('(');
            self.push_span(ty.span);
            self.out.push(')');
        }
        self.verbatim(e.value_span);
    }

    /// Copies `span` as written; a multi-line one moves with the
    /// indentation of its line.
    fn verbatim(&mut self, span: Span) {
        let src = self.src;
        let text = src
            .get(span.start as usize..span.end as usize)
            .unwrap_or("");
        if !self.reindent || !text.contains(is_newline) {
            self.out.push_str(text);
            return;
        }
        let line_start = src[..span.start as usize]
            .rfind(is_newline)
            .map_or(0, |i| i + 1);
        let Some(old) = leading_spaces(&src[line_start..]) else {
            self.out.push_str(text);
            return;
        };
        let line_out = self.out.rfind('\n').map_or(0, |i| i + 1);
        let new = self.out[line_out..].len() - self.out[line_out..].trim_start_matches(' ').len();
        let delta = new as isize - old as isize;
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if i == 0 {
                self.out.push_str(line);
                continue;
            }
            self.out.push('\n');
            if line.trim().is_empty() {
                // Whitespace-only lines are empty in multi-line strings
                // whatever they hold; in comments they are just blank.
                continue;
            }
            if delta >= 0 {
                self.out.extend(std::iter::repeat_n(' ', delta as usize));
                self.out.push_str(line);
            } else {
                let have = line.len() - line.trim_start_matches(' ').len();
                let strip = have.min(delta.unsigned_abs());
                self.out.push_str(&line[strip..]);
            }
        }
    }
}

/// A break that ends a continued line (`\r` of `\r\n` is left to `\n`).
fn continued_break(c: char) -> bool {
    c != '\r' && is_newline(c)
}

/// The number of leading spaces of `line`, or `None` when its indentation
/// has tabs (no safe way to shift it).
fn leading_spaces(line: &str) -> Option<usize> {
    let mut n = 0;
    for c in line.chars() {
        match c {
            ' ' => n += 1,
            '\t' => return None,
            _ => break,
        }
    }
    Some(n)
}

/// The formatted text means what the source meant: the same tree and the
/// same comments and slash-dashed items, in the same order.
fn same_meaning(src: &str, nodes: &[Node], trivia: &[Span], out: &str) -> bool {
    let (doc, trivia2, errors) = syntax::parse_with_trivia(out);
    errors.is_empty()
        && same_nodes(nodes, &doc.nodes)
        && outer_trivia(src, trivia).eq(outer_trivia(out, &trivia2))
}

/// The canonical text of the node a `/-` comments out (`inner` is what
/// follows the `/-`), when it is one plain node.
fn formatted_node(inner: &str) -> Option<String> {
    let inner = inner.trim_start_matches([' ', '\t']);
    // `/-` may be followed by a comment and a line break before its node;
    // such a rare layout is kept as written.
    if inner.starts_with(['/', '\r', '\n']) {
        return None;
    }
    let out = format_source("", inner).ok()?;
    let (doc, _) = syntax::parse(&out);
    (doc.nodes.len() == 1 && !out.starts_with('/')).then_some(out)
}

/// Each trivia item not nested in another, normalised: a slash-dashed node
/// in canonical form, anything else with each line's indentation and blank
/// lines ignored.
fn outer_trivia<'a>(src: &'a str, trivia: &'a [Span]) -> impl Iterator<Item = String> + 'a {
    let mut covered = 0;
    trivia.iter().filter_map(move |t| {
        if t.start < covered {
            return None;
        }
        covered = t.end;
        let text = src.get(t.start as usize..t.end as usize).unwrap_or("");
        if let Some(node) = text.strip_prefix("/-").and_then(formatted_node) {
            return Some(node);
        }
        Some(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

fn same_nodes(a: &[Node], b: &[Node]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.ty.as_ref().map(|t| &t.value) == y.ty.as_ref().map(|t| &t.value)
                && x.name.value == y.name.value
                && x.entries.len() == y.entries.len()
                && x.entries.iter().zip(&y.entries).all(|(e, f)| {
                    e.name.as_ref().map(|n| &n.value) == f.name.as_ref().map(|n| &n.value)
                        && e.ty.as_ref().map(|t| &t.value) == f.ty.as_ref().map(|t| &t.value)
                        && same_value(&e.value, &f.value)
                })
                && match (&x.children, &y.children) {
                    (None, None) => true,
                    (Some(c), Some(d)) => same_nodes(&c.nodes, &d.nodes),
                    _ => false,
                }
        })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests;
