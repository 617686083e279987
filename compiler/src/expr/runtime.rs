//! The run-time part of the language: what is left of an expression for
//! a build to evaluate, as a [`crate::graph::Expr`].

use super::parse::{EMPTY_HELP, GRAMMAR_HELP, NO_FIELD, PROP_PATH};
use super::{parse, Ast, Error, Kind, Val};
use crate::diagnostic::Code;
use crate::graph::{Expr, Scalar};
use crate::interp::BUILTIN_PROPERTIES;

/// The help for a mistake in a run-time expression: only the run-time part
/// of the language exists there.
const RUNTIME_HELP: &str = "an expression is a property (`prop.NAME`), a literal ('text', 42, true) or a comparison joined with && and ||";

/// Where a `prop.NAME` of a run-time expression is written: `start..end`
/// of its text. The uses of an expression are in the order of its
/// properties (the name is in the expression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropUse {
    pub start: usize,
    pub end: usize,
}

/// [`parse`] for a run-time expression: the same grammar, with mistakes
/// worded for the run-time part of the language, and the first mistake in
/// source order reported (a run-time one before a syntax error wins).
pub fn parse_runtime(src: &str) -> Result<Ast, Error> {
    parse(src).map_err(|e| {
        if e.message == NO_FIELD {
            // `prop.` or `name.`: a dotted name that ends in its dot.
            let start = src[..e.start]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .map_or(0, |i| i + 1);
            if src[start..].starts_with("prop.") {
                let e = Error::new(Code::InvalidExpression, start, e.end, PROP_PATH, "", "");
                return runtime_wording(src, e);
            }
            return runtime_unknown(src, start, e.end);
        }
        let e = runtime_wording(src, e);
        // What comes before the syntax error may already be wrong at run
        // time (`prop.a == os ?`: `os` is the first mistake).
        let Some(prefix) = src.get(..e.start).filter(|p| !p.trim().is_empty()) else {
            return e;
        };
        match parse(prefix).map(|a| to_runtime(&a, prefix, &mut Vec::new())) {
            Ok(Err(first)) if first.start < e.start => first,
            _ => e,
        }
    })
}

fn runtime_wording(src: &str, mut e: Error) -> Error {
    if e.help == GRAMMAR_HELP {
        e.help = RUNTIME_HELP.into();
    } else if e.help == EMPTY_HELP {
        e.help = "write an expression, e.g. `prop.branch`".into();
    }
    if e.message == PROP_PATH {
        e.help = "name one property, e.g. `prop.branch`".into();
        // The whole dotted name is the mistake.
        let path = src.get(e.start..).unwrap_or("");
        e.end = e.start
            + path
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
                .count();
    }
    e.label = "here".into();
    e
}

/// The innermost `(` still open at `at`, outside string literals.
fn open_paren(src: &str, at: usize) -> Option<usize> {
    let mut open = Vec::new();
    let mut quote = None;
    for (i, b) in src.bytes().enumerate().take(at) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'(') => open.push(i),
            (None, b')') => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

/// The run-time expression an expression over build properties only stands
/// for, written as it is (not folded: it is evaluated per build).
///
/// Only comparisons, `!`, `&&` and `||` over `prop.NAME` and scalar
/// literals exist at run time; the first thing outside them, in source
/// order, is the mistake. `src` is the expression's text, which names the
/// unknown names and places the operators in messages.
pub fn to_runtime(a: &Ast, src: &str, props: &mut Vec<PropUse>) -> Result<Expr, Error> {
    // Where an operator after `from` starts, for "unexpected text".
    let unexpected = |from: usize| {
        let rest = src.get(from..).unwrap_or("");
        let at = from + (rest.len() - rest.trim_start().len());
        // Inside `( … )` the group is what is left unfinished.
        if let Some(p) = open_paren(src, at) {
            return Error::new(
                Code::InvalidExpression,
                p,
                p + 1,
                "`(` is never closed",
                "here",
                "add a `)`",
            );
        }
        let n = src[at..].chars().next().map_or(0, char::len_utf8);
        Error::new(
            Code::InvalidExpression,
            at,
            at + n,
            "unexpected text in expression",
            "here",
            RUNTIME_HELP,
        )
    };
    match &a.kind {
        Kind::Prop(p) => {
            // `-` does not join a property name at run time.
            if let Some(i) = p.find('-') {
                return Err(unexpected(a.start + "prop.".len() + i));
            }
            props.push(PropUse {
                start: a.start,
                end: a.end,
            });
            Ok(Expr::Prop(p.clone()))
        }
        Kind::Lit(Val::Bool(b)) => Ok(Expr::Lit(Scalar::Bool(*b))),
        Kind::Lit(Val::Int(i)) => Ok(Expr::Lit(Scalar::Int(*i))),
        Kind::Lit(Val::Str(s)) => Ok(Expr::Lit(Scalar::String(s.to_string()))),
        Kind::Lit(_) | Kind::Name(_) => Err(runtime_unknown(src, a.start, a.end)),
        Kind::Field(inner, _) if is_path(inner) => Err(runtime_unknown(src, a.start, a.end)),
        Kind::Field(inner, _) => {
            to_runtime(inner, src, props)?;
            Err(unexpected(inner.end))
        }
        Kind::Not(x) => Ok(Expr::Not(Box::new(to_runtime(x, src, props)?))),
        Kind::Bin(op, l, r) => {
            // The property on the left of `??` may be unset: it is not a
            // use the checks require to exist (see `interp::each_prop`).
            let mut left = Vec::new();
            let le = to_runtime(l, src, &mut left)?;
            if !(*op == super::Bin::Coalesce && matches!(le, Expr::Prop(_))) {
                props.append(&mut left);
            }
            let Some(mk) = op.runtime() else {
                return Err(unexpected(l.end));
            };
            let re = to_runtime(r, src, props)?;
            Ok(mk(Box::new([le, re])))
        }
        Kind::Neg(_) => Err(Error::new(
            Code::InvalidExpression,
            a.start,
            a.start + 1,
            "invalid number",
            "here",
            "write a whole number such as 42",
        )),
        Kind::List(_) => Err(Error::new(
            Code::InvalidExpression,
            a.start,
            a.start + 1,
            "unexpected character in expression",
            "here",
            RUNTIME_HELP,
        )),
        Kind::If(_) => Err(runtime_unknown(src, a.start, a.start + "if".len())),
    }
}

/// `a`, `a.b`, `a.b.c`: a dotted name.
fn is_path(a: &Ast) -> bool {
    match &a.kind {
        Kind::Name(_) => true,
        Kind::Field(inner, _) => is_path(inner),
        _ => false,
    }
}

/// A name in a run-time expression: there are no compile-time names left
/// there, so it is a mistaken build property.
fn runtime_unknown(src: &str, start: usize, end: usize) -> Error {
    // The name as written, up to a `-` (which joins no name at run time).
    let path = src.get(start..end).unwrap_or("");
    let path = path.split('-').next().unwrap_or(path);
    let help = if BUILTIN_PROPERTIES.contains(&path) {
        format!("build properties are written `prop.{path}`")
    } else {
        "build properties are written `prop.NAME`; compile-time variables are declared with `let NAME=…`".to_string()
    };
    Error::new(
        Code::UnknownReference,
        start,
        start + path.len(),
        format!("unknown name `{path}` in expression"),
        "here",
        help,
    )
}

/// Prints a run-time condition in the run-time expression syntax: the text
/// expansion leaves in its place in a string, which is what a setting that
/// is not a run-time string (a name, a description) shows. Nothing reads it
/// back: run-time settings get the expression itself ([`crate::interp`]).
pub fn print_runtime(e: &Expr) -> String {
    let mut s = String::new();
    print(e, &mut s);
    s
}

fn print(e: &Expr, out: &mut String) {
    let bin = |tok: &str, b: &[Expr; 2], out: &mut String| {
        out.push('(');
        print(&b[0], out);
        out.push_str(") ");
        out.push_str(tok);
        out.push_str(" (");
        print(&b[1], out);
        out.push(')');
    };
    match e {
        Expr::Prop(p) => {
            out.push_str("prop.");
            out.push_str(p);
        }
        Expr::Lit(Scalar::String(s)) => {
            let q = if s.contains('\'') { '"' } else { '\'' };
            out.push(q);
            out.push_str(s);
            out.push(q);
        }
        Expr::Lit(Scalar::Int(i)) => out.push_str(&i.to_string()),
        Expr::Lit(Scalar::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        Expr::Lit(Scalar::Float(f)) => out.push_str(&f.to_string()),
        Expr::Not(x) => {
            out.push_str("!(");
            print(x, out);
            out.push(')');
        }
        Expr::And(b) => bin("&&", b, out),
        Expr::Or(b) => bin("||", b, out),
        Expr::Eq(b) => bin("==", b, out),
        Expr::Ne(b) => bin("!=", b, out),
        Expr::Lt(b) => bin("<", b, out),
        Expr::Le(b) => bin("<=", b, out),
        Expr::Gt(b) => bin(">", b, out),
        Expr::Ge(b) => bin(">=", b, out),
        Expr::Default(b) => bin("??", b, out),
    }
}
