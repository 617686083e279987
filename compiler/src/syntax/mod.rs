//! KDL 2.0 front end: source text to a span-precise [`Document`].
//!
//! [`parse`] never panics and never stops at the first mistake: it returns
//! the document it could read together with every syntax error it found.

pub mod ast;
mod lexer;
mod parser;

pub use ast::{Children, Document, Entry, Ident, Node, ParseError, Span, Value};

/// Parses a KDL 2.0 document.
///
/// Returns the document (slash-dashed items omitted; entries and nodes that
/// were themselves invalid are left out) and all syntax errors, in source
/// order. An empty error list means the input is valid KDL 2.0.
pub fn parse(src: &str) -> (Document, Vec<ParseError>) {
    let (nodes, errors) = parser::parse(src);
    (Document { nodes }, errors)
}

#[cfg(test)]
mod tests;
