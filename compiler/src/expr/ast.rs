//! The syntax tree of an expression, and its mistakes.

use super::Val;
use crate::diagnostic::Code;
use crate::graph::Expr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Coalesce,
}

/// Builds a run-time binary expression from its operands.
pub(super) type MakeExpr = fn(Box<[Expr; 2]>) -> Expr;

impl Bin {
    /// The run-time expression this operator builds, where it has one
    /// (comparisons, `&&`, `||`).
    pub(super) fn runtime(self) -> Option<MakeExpr> {
        Some(match self {
            Bin::And => Expr::And,
            Bin::Or => Expr::Or,
            Bin::Eq => Expr::Eq,
            Bin::Ne => Expr::Ne,
            Bin::Lt => Expr::Lt,
            Bin::Le => Expr::Le,
            Bin::Gt => Expr::Gt,
            Bin::Ge => Expr::Ge,
            Bin::Coalesce => Expr::Default,
            _ => return None,
        })
    }
    pub(super) fn token(self) -> &'static str {
        match self {
            Bin::Or => "||",
            Bin::And => "&&",
            Bin::Eq => "==",
            Bin::Ne => "!=",
            Bin::Lt => "<",
            Bin::Le => "<=",
            Bin::Gt => ">",
            Bin::Ge => ">=",
            Bin::In => "in",
            Bin::Add => "+",
            Bin::Sub => "-",
            Bin::Mul => "*",
            Bin::Div => "/",
            Bin::Rem => "%",
            Bin::Coalesce => "??",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Lit(Val),
    Name(String),
    Prop(String),
    Field(Box<Ast>, String),
    List(Vec<Ast>),
    Not(Box<Ast>),
    Neg(Box<Ast>),
    Bin(Bin, Box<Ast>, Box<Ast>),
    If(Box<[Ast; 3]>),
}

/// An expression; `start..end` are byte offsets in the expression text.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Ast {
    /// Whether it mentions any build property.
    pub fn uses_props(&self) -> bool {
        match &self.kind {
            Kind::Prop(_) => true,
            Kind::Lit(_) | Kind::Name(_) => false,
            Kind::Field(a, _) | Kind::Not(a) | Kind::Neg(a) => a.uses_props(),
            Kind::List(v) => v.iter().any(Ast::uses_props),
            Kind::Bin(_, a, b) => a.uses_props() || b.uses_props(),
            Kind::If(b) => b.iter().any(Ast::uses_props),
        }
    }
    /// Whether it mentions any compile-time name.
    pub fn uses_names(&self) -> bool {
        match &self.kind {
            Kind::Name(_) => true,
            Kind::Lit(_) | Kind::Prop(_) => false,
            Kind::Field(a, _) | Kind::Not(a) | Kind::Neg(a) => a.uses_names(),
            Kind::List(v) => v.iter().any(Ast::uses_names),
            Kind::Bin(_, a, b) => a.uses_names() || b.uses_names(),
            Kind::If(b) => b.iter().any(Ast::uses_names),
        }
    }
}

/// A mistake in an expression, at `start..end` of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: Code,
    pub start: usize,
    pub end: usize,
    pub message: String,
    pub label: String,
    pub help: String,
    /// Already reported elsewhere (a broken `let`): say nothing more.
    pub silent: bool,
    /// A record field that is absent: `??` supplies a default.
    pub missing: bool,
}

impl Error {
    pub fn new(
        code: Code,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) -> Error {
        Error {
            code,
            start,
            end,
            message: message.into(),
            label: label.into(),
            help: help.into(),
            silent: false,
            missing: false,
        }
    }
    pub fn silent() -> Error {
        let mut e = Error::new(Code::InvalidExpression, 0, 0, "", "", "");
        e.silent = true;
        e
    }
}
