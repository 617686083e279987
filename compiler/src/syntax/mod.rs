//! KDL 2.0 front end: source text to a span-precise [`Document`].
//!
//! [`parse`] never panics and never stops at the first mistake: it returns
//! the document it could read together with every syntax error it found.

pub mod ast;
mod lexer;
mod parser;

pub use ast::{Children, Document, Entry, Ident, Node, ParseError, Span, Str, Value};

/// Parses a KDL 2.0 document.
///
/// Returns the document (slash-dashed items omitted; entries and nodes that
/// were themselves invalid are left out) and all syntax errors, in source
/// order. An empty error list means the input is valid KDL 2.0.
pub fn parse(src: &str) -> (Document, Vec<ParseError>) {
    let (nodes, errors, _) = parser::parse(src);
    (Document { nodes }, errors)
}

/// [`parse`], plus the spans of what the tree leaves out but a formatter
/// must keep: comments (a line comment without its newline) and
/// slash-dashed items (from `/-` to the item's end). Sorted by start; an
/// item comes before the comments and items nested in it.
pub fn parse_with_trivia(src: &str) -> (Document, Vec<Span>, Vec<ParseError>) {
    let (nodes, errors, trivia) = parser::parse(src);
    (Document { nodes }, trivia, errors)
}

#[cfg(test)]
mod tests;
