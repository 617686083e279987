//! The compile-time expression language of `${{ … }}`, `when=` and `let`.
//!
//! Pure and total: no loops, no recursion, no I/O; every expression is
//! evaluated while compiling, and a mistake (unknown name, wrong type,
//! division by zero, missing field) is a diagnostic with a span. `prop.NAME`
//! is a build property, known only at run time: an expression that uses one
//! is *partially* evaluated, every compile-time part replaced by its value,
//! and what remains must be a run-time condition (comparisons, `!`, `&&`,
//! `||`): a [`crate::graph::Expr`], evaluated per build. The run-time
//! language is the part of this one that [`to_runtime`] accepts.

use std::sync::Arc;

mod ast;
mod eval;
mod parse;
mod runtime;
#[cfg(test)]
mod tests;

pub use ast::{Ast, Bin, Error, Kind};
pub use eval::{eval, unknown_name, Env, Out};
pub use parse::parse;
pub use runtime::{parse_runtime, print_runtime, to_runtime, PropUse};

/// A compile-time value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Str(Arc<str>),
    List(Arc<Vec<Val>>),
    /// Fields in the order written.
    Record(Arc<Vec<(String, Val)>>),
}

impl Val {
    pub fn str(s: impl Into<Arc<str>>) -> Val {
        Val::Str(s.into())
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "a boolean",
            Val::Int(_) => "an integer",
            Val::Str(_) => "a string",
            Val::List(_) => "a list",
            Val::Record(_) => "a record",
        }
    }
    pub fn field(&self, name: &str) -> Option<&Val> {
        match self {
            Val::Record(f) => f.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The text a value stands for inside a string; `None` for records and
    /// lists of non-scalars.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Val::Null => Some(String::new()),
            Val::Bool(b) => Some(b.to_string()),
            Val::Int(i) => Some(i.to_string()),
            Val::Str(s) => Some(s.to_string()),
            Val::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items.iter() {
                    match i {
                        Val::List(_) | Val::Record(_) => return None,
                        v => out.push(v.to_text()?),
                    }
                }
                Some(out.join(" "))
            }
            Val::Record(_) => None,
        }
    }
    /// Appends [`Val::to_text`] to `out`, without a `String` of its own
    /// (interpolation puts a value into every expanded string); `false`,
    /// with `out` partly written, where `to_text` is `None`.
    pub fn push_text(&self, out: &mut String) -> bool {
        use std::fmt::Write;
        match self {
            Val::Null => true,
            Val::Bool(b) => write!(out, "{b}").is_ok(),
            Val::Int(i) => write!(out, "{i}").is_ok(),
            Val::Str(s) => {
                out.push_str(s);
                true
            }
            Val::List(items) => {
                for (n, i) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(' ');
                    }
                    if matches!(i, Val::List(_) | Val::Record(_)) || !i.push_text(out) {
                        return false;
                    }
                }
                true
            }
            Val::Record(_) => false,
        }
    }
    /// A short rendering for messages ("os=mac").
    pub fn short(&self) -> String {
        match self {
            Val::Str(s) => s.to_string(),
            Val::Record(f) => match self.field("name") {
                Some(n) => n.short(),
                None => format!("{{{} fields}}", f.len()),
            },
            Val::List(l) => format!("[{} items]", l.len()),
            v => v.to_text().unwrap_or_default(),
        }
    }
}
