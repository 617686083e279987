//! The KDL document tree with byte-precise spans.
//!
//! This is what the rest of the compiler reads. It is deliberately plain:
//! owned values, no comments, slash-dashed items already removed. The
//! formatter gets those as spans beside the tree (`parse_with_trivia`).

/// A half-open byte range `start..end` into one source file.
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        miette::SourceSpan::new((s.start as usize).into(), s.len())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `(type)` annotation before the node name.
    pub ty: Option<Ident>,
    pub name: Ident,
    /// Arguments and properties in source order (duplicate property names
    /// are kept; by KDL's rules the rightmost wins).
    pub entries: Vec<Entry>,
    /// `{ ... }` block; `None` when the node has none.
    pub children: Option<Children>,
    /// From the start of the type annotation (or name) to the end of the
    /// last entry or the closing brace.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub nodes: Vec<Node>,
    /// From `{` to `}` inclusive.
    pub span: Span,
}

/// A node name, property name or type annotation: a bare identifier or a
/// string, already unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub value: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `Some` for a property (`name=value`), `None` for an argument.
    pub name: Option<Ident>,
    pub ty: Option<Ident>,
    pub value: Value,
    /// Span of the value token alone.
    pub value_span: Span,
    /// Span of the whole entry, `name=(type)value`.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Str),
    Integer(i128),
    /// Also `#inf`, `#-inf` and `#nan`.
    Float(f64),
    Bool(bool),
    Null,
}

impl Value {
    /// What a user would call this kind of value, for diagnostics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "#null",
        }
    }
}

/// The text of a string value. A long text is shared: a config repeats a
/// few long texts (issue 12: a dozen ~600-character warning patterns in
/// 6,000 steps), and the lexer interns them (`Lexer::string_value`) so each
/// is one allocation, which copies of the tree share too. A short one is
/// owned: a shared one's reference counts would cost more memory than
/// copying it (most strings are names of a few bytes).
#[derive(Clone)]
pub enum Str {
    Owned(Box<str>),
    Shared(Arc<str>),
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Str::Owned(s) => s,
            Str::Shared(s) => s,
        }
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Str {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Str {
        Str::Owned(s.into())
    }
}

impl From<String> for Str {
    fn from(s: String) -> Str {
        Str::Owned(s.into_boxed_str())
    }
}

/// A syntax error with the span it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// What is wrong, e.g. "unterminated string".
    pub message: String,
    /// Where; may be empty (`start == end`) for "expected X here".
    pub span: Span,
    /// Short text shown under the span, e.g. "string starts here".
    pub label: Option<String>,
    /// What to do about it, when there is something useful to say.
    pub help: Option<String>,
}
