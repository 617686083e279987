//! The compile-time expression language of `${{ … }}`, `when=` and `let`.
//!
//! Pure and total: no loops, no recursion, no I/O; every expression is
//! evaluated while compiling, and a mistake (unknown name, wrong type,
//! division by zero, missing field) is a diagnostic with a span. `prop.NAME`
//! is a build property, known only at run time: an expression that uses one
//! is *partially* evaluated, every compile-time part replaced by its value,
//! and what remains must be a run-time condition (comparisons, `!`, `&&`,
//! `||`), printed back for the run-time expression language.

use std::rc::Rc;

use crate::diagnostic::Code;
use crate::graph::{Expr, Scalar};
use crate::interp::BUILTIN_PROPERTIES;

/// A compile-time value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Str(Rc<str>),
    List(Rc<Vec<Val>>),
    /// Fields in the order written.
    Record(Rc<Vec<(String, Val)>>),
}

impl Val {
    pub fn str(s: impl Into<Rc<str>>) -> Val {
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

impl Bin {
    fn token(self) -> &'static str {
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

const EMPTY_HELP: &str = "write an expression, e.g. `prop.branch` or a variable name";

const GRAMMAR_HELP: &str = "an expression is a name, a field (`b.version`), a property (`prop.NAME`), a literal ('text', 42, true, [1, 2]) or operators: == != < <= > >= in + - * / % ! && || ?? and `if … then … else …`";

pub fn parse(src: &str) -> Result<Ast, Error> {
    let mut p = Parser { src, pos: 0 };
    p.ws();
    if p.pos >= src.len() {
        return Err(Error::new(
            Code::InvalidExpression,
            0,
            src.len(),
            "empty `${{ }}`",
            "here",
            EMPTY_HELP,
        ));
    }
    let e = p.expr()?;
    p.ws();
    if p.pos < src.len() {
        let at = p.pos;
        return Err(p.err(at, at + p.char_len(), "unexpected text in expression"));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    pos: usize,
}

const KEYWORDS: &[&str] = &["if", "then", "else", "in", "true", "false", "null"];

impl<'s> Parser<'s> {
    fn err(&self, a: usize, b: usize, msg: &str) -> Error {
        Error::new(Code::InvalidExpression, a, b, msg, "here", GRAMMAR_HELP)
    }
    fn char_len(&self) -> usize {
        self.src[self.pos..]
            .chars()
            .next()
            .map(char::len_utf8)
            .unwrap_or(0)
    }
    fn ws(&mut self) {
        while self.pos < self.src.len() && self.src.as_bytes()[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self, tok: &str) -> bool {
        self.ws();
        self.src[self.pos..].starts_with(tok)
    }
    fn eat(&mut self, tok: &str) -> bool {
        if self.peek(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }
    /// A keyword: the word and not the start of a longer name.
    fn eat_kw(&mut self, kw: &str) -> bool {
        self.ws();
        let rest = &self.src[self.pos..];
        if rest.starts_with(kw)
            && !rest[kw.len()..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }
    fn bin(op: Bin, l: Ast, r: Ast) -> Ast {
        Ast {
            start: l.start,
            end: r.end,
            kind: Kind::Bin(op, Box::new(l), Box::new(r)),
        }
    }
    fn expr(&mut self) -> Result<Ast, Error> {
        self.ws();
        let start = self.pos;
        if self.eat_kw("if") {
            let c = self.expr()?;
            if !self.eat_kw("then") {
                let at = self.pos;
                return Err(Error::new(
                    Code::InvalidExpression,
                    start,
                    at,
                    "`if` without `then`",
                    "needs `then … else …`",
                    "write `if CONDITION then A else B`",
                ));
            }
            let a = self.expr()?;
            if !self.eat_kw("else") {
                let at = self.pos;
                return Err(Error::new(
                    Code::InvalidExpression,
                    start,
                    at,
                    "`if` without `else`",
                    "needs `else …`",
                    "an `if` always has both branches: `if CONDITION then A else B`",
                ));
            }
            let b = self.expr()?;
            let end = b.end;
            return Ok(Ast {
                kind: Kind::If(Box::new([c, a, b])),
                start,
                end,
            });
        }
        let l = self.or()?;
        if self.eat("??") {
            let r = self.expr()?;
            return Ok(Self::bin(Bin::Coalesce, l, r));
        }
        Ok(l)
    }
    fn or(&mut self) -> Result<Ast, Error> {
        let mut l = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            l = Self::bin(Bin::Or, l, r);
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Ast, Error> {
        let mut l = self.not()?;
        while self.eat("&&") {
            let r = self.not()?;
            l = Self::bin(Bin::And, l, r);
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Ast, Error> {
        self.ws();
        if self.src[self.pos..].starts_with('!') && !self.src[self.pos..].starts_with("!=") {
            let start = self.pos;
            self.pos += 1;
            let e = self.not()?;
            let end = e.end;
            return Ok(Ast {
                kind: Kind::Not(Box::new(e)),
                start,
                end,
            });
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Ast, Error> {
        let l = self.add()?;
        let ops = [
            ("==", Bin::Eq),
            ("!=", Bin::Ne),
            ("<=", Bin::Le),
            (">=", Bin::Ge),
            ("<", Bin::Lt),
            (">", Bin::Gt),
        ];
        for (tok, op) in ops {
            if self.eat(tok) {
                let r = self.add()?;
                return Ok(Self::bin(op, l, r));
            }
        }
        if self.eat_kw("in") {
            let r = self.add()?;
            return Ok(Self::bin(Bin::In, l, r));
        }
        if self.peek("=") && !self.peek("==") {
            let at = self.pos;
            return Err(Error::new(
                Code::InvalidExpression,
                at,
                at + 1,
                "`=` is not a comparison",
                "here",
                "compare with `==`",
            ));
        }
        Ok(l)
    }
    fn add(&mut self) -> Result<Ast, Error> {
        let mut l = self.mul()?;
        loop {
            let op = if self.eat("+") {
                Bin::Add
            } else if self.peek("-") {
                self.pos += 1;
                Bin::Sub
            } else {
                return Ok(l);
            };
            let r = self.mul()?;
            l = Self::bin(op, l, r);
        }
    }
    fn mul(&mut self) -> Result<Ast, Error> {
        let mut l = self.unary()?;
        loop {
            let op = if self.eat("*") {
                Bin::Mul
            } else if self.eat("/") {
                Bin::Div
            } else if self.eat("%") {
                Bin::Rem
            } else {
                return Ok(l);
            };
            let r = self.unary()?;
            l = Self::bin(op, l, r);
        }
    }
    fn unary(&mut self) -> Result<Ast, Error> {
        self.ws();
        let start = self.pos;
        if self.src[self.pos..].starts_with('-')
            && !self
                .src
                .as_bytes()
                .get(self.pos + 1)
                .is_some_and(u8::is_ascii_digit)
        {
            self.pos += 1;
            let e = self.unary()?;
            let end = e.end;
            return Ok(Ast {
                kind: Kind::Neg(Box::new(e)),
                start,
                end,
            });
        }
        let mut e = self.atom()?;
        while self.src[self.pos..].starts_with('.') {
            let dot = self.pos;
            self.pos += 1;
            let name = self.ident();
            if name.is_empty() {
                return Err(self.err(dot, dot + 1, "expected a field name after `.`"));
            }
            let end = self.pos;
            if let Kind::Name(root) = &e.kind {
                if root == "prop" {
                    if self.src[self.pos..].starts_with('.') {
                        return Err(Error::new(
                            Code::InvalidExpression,
                            start,
                            self.pos + 1,
                            "a property reference is `prop.NAME`",
                            "here",
                            "name one property, e.g. `prop.branch`",
                        ));
                    }
                    e = Ast {
                        kind: Kind::Prop(name.to_string()),
                        start,
                        end,
                    };
                    continue;
                }
            }
            e = Ast {
                kind: Kind::Field(Box::new(e), name.to_string()),
                start,
                end,
            };
        }
        Ok(e)
    }
    fn ident(&mut self) -> &'s str {
        let b = self.src.as_bytes();
        let start = self.pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b'-')
        {
            // `a-1` is a subtraction; `-` only joins letters.
            if b[end] == b'-' && !b.get(end + 1).is_some_and(|c| c.is_ascii_alphabetic()) {
                break;
            }
            end += 1;
        }
        if start < b.len() && !(b[start].is_ascii_alphabetic() || b[start] == b'_') {
            return "";
        }
        self.pos = end;
        &self.src[start..end]
    }
    fn atom(&mut self) -> Result<Ast, Error> {
        self.ws();
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let Some(&c) = bytes.get(start) else {
            return Err(Error::new(
                Code::InvalidExpression,
                start,
                start,
                "expression ends too early",
                "here",
                "something is missing after the operator",
            ));
        };
        let lit = |v: Val, end: usize| Ast {
            kind: Kind::Lit(v),
            start,
            end,
        };
        match c {
            b'(' => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(")") {
                    return Err(Error::new(
                        Code::InvalidExpression,
                        start,
                        start + 1,
                        "`(` is never closed",
                        "here",
                        "add a `)`",
                    ));
                }
                Ok(e)
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat("]") {
                        break;
                    }
                    items.push(self.expr()?);
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        break;
                    }
                    return Err(Error::new(
                        Code::InvalidExpression,
                        start,
                        start + 1,
                        "`[` is never closed",
                        "here",
                        "separate items with `,` and end the list with `]`",
                    ));
                }
                Ok(Ast {
                    kind: Kind::List(items),
                    start,
                    end: self.pos,
                })
            }
            b'\'' | b'"' => {
                let body = start + 1;
                match self.src[body..].find(c as char) {
                    Some(n) => {
                        self.pos = body + n + 1;
                        Ok(lit(Val::str(&self.src[body..body + n]), self.pos))
                    }
                    None => Err(Error::new(
                        Code::InvalidExpression,
                        start,
                        start + 1,
                        "unterminated string in expression",
                        "here",
                        "close the string with the same quote",
                    )),
                }
            }
            b'0'..=b'9' | b'-' => {
                let mut end = start + 1;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                self.pos = end;
                match self.src[start..end].parse::<i64>() {
                    Ok(n) => Ok(lit(Val::Int(n), end)),
                    Err(_) => Err(Error::new(
                        Code::InvalidExpression,
                        start,
                        end,
                        "invalid number",
                        "here",
                        "write a whole number such as 42",
                    )),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.ident().to_string();
                let end = self.pos;
                Ok(match name.as_str() {
                    "true" => lit(Val::Bool(true), end),
                    "false" => lit(Val::Bool(false), end),
                    "null" => lit(Val::Null, end),
                    k if KEYWORDS.contains(&k) => {
                        return Err(self.err(start, end, &format!("`{k}` cannot start a value")))
                    }
                    _ => Ast {
                        kind: Kind::Name(name),
                        start,
                        end,
                    },
                })
            }
            _ => {
                let n = self.char_len();
                Err(self.err(start, start + n, "unexpected character in expression"))
            }
        }
    }
}

/// Where names get their values.
pub trait Env {
    /// The value of `name`, used at `start..end` of the expression text.
    fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error>;
    /// Known names, for "did you mean".
    fn names(&self) -> Vec<String>;
    /// Whether a build property may appear (run-time strings); `false`
    /// where the value is needed while compiling (`when=`, `let`, axes).
    fn runtime_ok(&self) -> bool;
}

/// The result of evaluation: a value, or a condition left for run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Val(Val),
    Run(Expr),
}

pub fn unknown_name(env: &dyn Env, name: &str, start: usize, end: usize) -> Error {
    let names = env.names();
    let (code, help) = if BUILTIN_PROPERTIES.contains(&name) && !names.iter().any(|n| n == name) {
        (
            Code::UnknownReference,
            format!("build properties are written `prop.{name}`"),
        )
    } else {
        let help = match crate::diagnostic::suggest(name, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "define it with `let {name}=…`, declare it as a template `param`, or write a build property as `prop.{name}`"
            ),
        };
        (Code::UnknownVariable, help)
    };
    Error::new(
        code,
        start,
        end,
        format!("unknown name `{name}` in expression"),
        "here",
        help,
    )
}

fn type_err(a: &Ast, msg: String, help: &str) -> Error {
    Error::new(Code::TypeMismatch, a.start, a.end, msg, "wrong type", help)
}

fn scalar(v: &Val) -> Option<Scalar> {
    match v {
        Val::Bool(b) => Some(Scalar::Bool(*b)),
        Val::Int(i) => Some(Scalar::Int(*i)),
        Val::Str(s) => Some(Scalar::String(s.to_string())),
        Val::Null => Some(Scalar::String(String::new())),
        _ => None,
    }
}

pub fn eval(a: &Ast, env: &dyn Env) -> Result<Out, Error> {
    match &a.kind {
        Kind::Lit(v) => Ok(Out::Val(v.clone())),
        Kind::Name(n) => env.lookup(n, a.start, a.end).map(Out::Val),
        Kind::Prop(p) => {
            if env.runtime_ok() {
                Ok(Out::Run(Expr::Prop(p.clone())))
            } else {
                Err(Error::new(
                    Code::NotCompileTime,
                    a.start,
                    a.end,
                    format!("`prop.{p}` is known only at run time"),
                    "a build property",
                    "this value is needed while compiling (a `when=`, `let`, matrix axis, exclusion or template argument); use `do-step-if=` for run-time conditions",
                ))
            }
        }
        Kind::Field(inner, f) => {
            let v = val(inner, env, "a field access")?;
            match &v {
                Val::Record(_) => match v.field(f) {
                    Some(x) => Ok(Out::Val(x.clone())),
                    None => {
                        let fields: Vec<&str> = match &v {
                            Val::Record(fs) => fs.iter().map(|(k, _)| k.as_str()).collect(),
                            _ => Vec::new(),
                        };
                        let mut e = Error::new(
                            Code::MissingField,
                            a.start,
                            a.end,
                            format!("the record has no field `{f}`"),
                            "no such field",
                            match crate::diagnostic::suggest(f, fields.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`? For an optional field write `… ?? default`"),
                                None => format!(
                                    "its fields are: {}; for an optional field write `… ?? default`",
                                    fields.join(", ")
                                ),
                            },
                        );
                        e.missing = true;
                        Err(e)
                    }
                },
                Val::Null => {
                    let mut e = Error::new(
                        Code::MissingField,
                        a.start,
                        a.end,
                        format!("`.{f}` of null"),
                        "the value is null",
                        "supply a default with `?? …`",
                    );
                    e.missing = true;
                    Err(e)
                }
                other => Err(type_err(
                    inner,
                    format!("`.{f}` needs a record, found {}", other.type_name()),
                    "fields exist on records (`let b { name \"x\" }` or list items `- name=\"x\"`)",
                )),
            }
        }
        Kind::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(val(i, env, "a list item")?);
            }
            Ok(Out::Val(Val::List(Rc::new(out))))
        }
        Kind::Not(inner) => match eval(inner, env)? {
            Out::Val(Val::Bool(b)) => Ok(Out::Val(Val::Bool(!b))),
            Out::Val(v) => Err(type_err(
                inner,
                format!("`!` needs a boolean, found {}", v.type_name()),
                "`!` negates a condition such as `os == 'mac'`",
            )),
            Out::Run(e) => Ok(Out::Run(Expr::Not(Box::new(e)))),
        },
        Kind::Neg(inner) => match val(inner, env, "`-`")? {
            Val::Int(i) => i
                .checked_neg()
                .map(|v| Out::Val(Val::Int(v)))
                .ok_or_else(|| {
                    Error::new(
                        Code::Arithmetic,
                        a.start,
                        a.end,
                        "integer overflow",
                        "overflows",
                        "use smaller numbers",
                    )
                }),
            v => Err(type_err(
                inner,
                format!("`-` needs an integer, found {}", v.type_name()),
                "negate integers only",
            )),
        },
        Kind::If(b) => {
            let [c, x, y] = &**b;
            match eval(c, env)? {
                Out::Val(Val::Bool(true)) => eval(x, env),
                Out::Val(Val::Bool(false)) => eval(y, env),
                Out::Val(v) => Err(type_err(
                    c,
                    format!(
                        "the condition of `if` must be a boolean, found {}",
                        v.type_name()
                    ),
                    "write a comparison, e.g. `if os == 'mac' then … else …`",
                )),
                Out::Run(_) => Err(run_only(c, "`if`")),
            }
        }
        Kind::Bin(op, l, r) => binary(a, *op, l, r, env),
    }
}

fn run_only(a: &Ast, what: &str) -> Error {
    Error::new(
        Code::NotCompileTime,
        a.start,
        a.end,
        format!("{what} needs a value known while compiling"),
        "uses a build property",
        "at run time only comparisons, `!`, `&&` and `||` are available; compute the rest from compile-time values",
    )
}

fn val(a: &Ast, env: &dyn Env, what: &str) -> Result<Val, Error> {
    match eval(a, env)? {
        Out::Val(v) => Ok(v),
        Out::Run(_) => Err(run_only(a, what)),
    }
}

fn binary(a: &Ast, op: Bin, l: &Ast, r: &Ast, env: &dyn Env) -> Result<Out, Error> {
    match op {
        Bin::Coalesce => {
            return match eval(l, env) {
                Ok(Out::Val(Val::Null)) => eval(r, env),
                Err(e) if e.missing => eval(r, env),
                other => other,
            }
        }
        Bin::And | Bin::Or => {
            let is_and = op == Bin::And;
            let lv = eval(l, env)?;
            let want_bool = |v: &Val, side: &Ast| -> Result<bool, Error> {
                match v {
                    Val::Bool(b) => Ok(*b),
                    v => Err(type_err(
                        side,
                        format!("`{}` needs booleans, found {}", op.token(), v.type_name()),
                        "join conditions (comparisons, `in`, booleans)",
                    )),
                }
            };
            if let Out::Val(v) = &lv {
                let b = want_bool(v, l)?;
                if b != is_and {
                    // false && … / true || …: decided.
                    return Ok(Out::Val(Val::Bool(b)));
                }
                return match eval(r, env)? {
                    Out::Val(v) => Ok(Out::Val(Val::Bool(want_bool(&v, r)?))),
                    run => Ok(run),
                };
            }
            let Out::Run(le) = lv else {
                return Err(Error::silent());
            };
            let re = match eval(r, env)? {
                Out::Val(v) => {
                    // r && true / r || false is r; r && false is false,
                    // r || true is true (run-time conditions are pure).
                    let b = want_bool(&v, r)?;
                    if b == is_and {
                        return Ok(Out::Run(le));
                    }
                    return Ok(Out::Val(Val::Bool(b)));
                }
                Out::Run(e) => e,
            };
            let pair = Box::new([le, re]);
            return Ok(Out::Run(if is_and {
                Expr::And(pair)
            } else {
                Expr::Or(pair)
            }));
        }
        _ => {}
    }
    let lo = eval(l, env)?;
    let ro = eval(r, env)?;
    let (lv, rv) = match (lo, ro) {
        (Out::Val(x), Out::Val(y)) => (x, y),
        (lo, ro) => {
            let mk: fn(Box<[Expr; 2]>) -> Expr = match op {
                Bin::Eq => Expr::Eq,
                Bin::Ne => Expr::Ne,
                Bin::Lt => Expr::Lt,
                Bin::Le => Expr::Le,
                Bin::Gt => Expr::Gt,
                Bin::Ge => Expr::Ge,
                _ => return Err(run_only(a, &format!("`{}`", op.token()))),
            };
            let side = |o: Out, ast: &Ast| -> Result<Expr, Error> {
                match o {
                    Out::Run(e) => Ok(e),
                    Out::Val(v) => scalar(&v).map(Expr::Lit).ok_or_else(|| {
                        type_err(
                            ast,
                            format!("cannot compare a build property with {}", v.type_name()),
                            "compare build properties with strings, numbers or booleans",
                        )
                    }),
                }
            };
            let le = side(lo, l)?;
            let re = side(ro, r)?;
            return Ok(Out::Run(mk(Box::new([le, re]))));
        }
    };
    let overflow = || {
        Error::new(
            Code::Arithmetic,
            a.start,
            a.end,
            "integer overflow",
            "overflows",
            "use smaller numbers",
        )
    };
    let v = match (op, &lv, &rv) {
        (Bin::Eq, x, y) | (Bin::Ne, x, y) => {
            let comparable = std::mem::discriminant(x) == std::mem::discriminant(y)
                || matches!(x, Val::Null)
                || matches!(y, Val::Null);
            if !comparable {
                return Err(type_err(
                    a,
                    format!(
                        "`{}` compares {} with {}",
                        op.token(),
                        x.type_name(),
                        y.type_name()
                    ),
                    "compare values of the same type; quote numbers to compare them as text",
                ));
            }
            Val::Bool((x == y) == (op == Bin::Eq))
        }
        (Bin::Lt | Bin::Le | Bin::Gt | Bin::Ge, x, y) => {
            let ord = match (x, y) {
                (Val::Int(x), Val::Int(y)) => x.cmp(y),
                (Val::Str(x), Val::Str(y)) => x.cmp(y),
                _ => {
                    return Err(type_err(
                        a,
                        format!(
                            "`{}` orders integers or strings, found {} and {}",
                            op.token(),
                            x.type_name(),
                            y.type_name()
                        ),
                        "compare two integers or two strings",
                    ))
                }
            };
            use std::cmp::Ordering::*;
            Val::Bool(match op {
                Bin::Lt => ord == Less,
                Bin::Le => ord != Greater,
                Bin::Gt => ord == Greater,
                _ => ord != Less,
            })
        }
        (Bin::In, x, Val::List(items)) => Val::Bool(items.iter().any(|i| i == x)),
        (Bin::In, Val::Str(x), Val::Str(y)) => Val::Bool(y.contains(&**x)),
        (Bin::In, _, y) => {
            return Err(type_err(
                r,
                format!("`in` needs a list on the right, found {}", y.type_name()),
                "write `x in ['a', 'b']` or `x in some_list`",
            ))
        }
        (Bin::Add, Val::Int(x), Val::Int(y)) => Val::Int(x.checked_add(*y).ok_or_else(overflow)?),
        (Bin::Add, Val::Str(x), Val::Str(y)) => Val::str(format!("{x}{y}")),
        (Bin::Add, Val::List(x), Val::List(y)) => {
            Val::List(Rc::new(x.iter().chain(y.iter()).cloned().collect()))
        }
        (Bin::Add, x, y) => {
            return Err(type_err(
                a,
                format!("`+` cannot add {} and {}", x.type_name(), y.type_name()),
                "`+` adds integers, joins strings or joins lists; to put a number in a string write `'v' + \"${{…}}\"` or interpolate both",
            ))
        }
        (Bin::Sub | Bin::Mul | Bin::Div | Bin::Rem, Val::Int(x), Val::Int(y)) => {
            let (x, y) = (*x, *y);
            if matches!(op, Bin::Div | Bin::Rem) && y == 0 {
                return Err(Error::new(
                    Code::Arithmetic,
                    r.start,
                    r.end,
                    "division by zero",
                    "is zero",
                    "divide by a number that is not zero",
                ));
            }
            Val::Int(
                match op {
                    Bin::Sub => x.checked_sub(y),
                    Bin::Mul => x.checked_mul(y),
                    Bin::Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                }
                .ok_or_else(overflow)?,
            )
        }
        (_, x, y) => {
            return Err(type_err(
                a,
                format!(
                    "`{}` needs integers, found {} and {}",
                    op.token(),
                    x.type_name(),
                    y.type_name()
                ),
                "arithmetic works on integers",
            ))
        }
    };
    Ok(Out::Val(v))
}

/// The help for a mistake in a run-time expression: only the run-time part
/// of the language exists there.
pub const RUNTIME_HELP: &str = "an expression is a property (`prop.NAME`), a literal ('text', 42, true) or a comparison joined with && and ||";

/// A `prop.NAME` in a run-time expression, at `start..end` of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropUse {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// [`parse`] for a run-time expression: the same grammar, with mistakes
/// worded for the run-time part of the language.
pub fn parse_runtime(src: &str) -> Result<Ast, Error> {
    parse(src).map_err(|mut e| {
        if e.help == GRAMMAR_HELP {
            e.help = RUNTIME_HELP.into();
        } else if e.help == EMPTY_HELP {
            e.help = "write an expression, e.g. `prop.branch`".into();
        }
        e.label = "here".into();
        e
    })
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
                name: p.clone(),
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
            let le = to_runtime(l, src, props)?;
            let mk: fn(Box<[Expr; 2]>) -> Expr = match op {
                Bin::And => Expr::And,
                Bin::Or => Expr::Or,
                Bin::Eq => Expr::Eq,
                Bin::Ne => Expr::Ne,
                Bin::Lt => Expr::Lt,
                Bin::Le => Expr::Le,
                Bin::Gt => Expr::Gt,
                Bin::Ge => Expr::Ge,
                _ => return Err(unexpected(l.end)),
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

/// Prints a run-time condition in the run-time expression syntax.
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E;
    impl Env for E {
        fn lookup(&self, name: &str, start: usize, end: usize) -> Result<Val, Error> {
            match name {
                "os" => Ok(Val::str("mac")),
                "n" => Ok(Val::Int(4)),
                "b" => Ok(Val::Record(Rc::new(vec![(
                    "version".into(),
                    Val::str("1.80"),
                )]))),
                "l" => Ok(Val::List(Rc::new(vec![Val::str("mac"), Val::str("linux")]))),
                _ => Err(unknown_name(self, name, start, end)),
            }
        }
        fn names(&self) -> Vec<String> {
            vec!["os".into(), "n".into(), "b".into(), "l".into()]
        }
        fn runtime_ok(&self) -> bool {
            true
        }
    }

    fn ev(s: &str) -> Result<Out, Error> {
        eval(&parse(s)?, &E)
    }

    #[test]
    fn evaluates() {
        assert_eq!(ev("n * 2 + 1").unwrap(), Out::Val(Val::Int(9)));
        assert_eq!(ev("os in l && n >= 4").unwrap(), Out::Val(Val::Bool(true)));
        assert_eq!(ev("b.flags ?? 'x'").unwrap(), Out::Val(Val::str("x")));
        assert_eq!(ev("b.version").unwrap(), Out::Val(Val::str("1.80")));
        assert_eq!(
            ev("if os == 'mac' then 'm' else 'o'").unwrap(),
            Out::Val(Val::str("m"))
        );
        assert_eq!(ev("'a' + os").unwrap(), Out::Val(Val::str("amac")));
        assert_eq!(ev("n - 1").unwrap(), Out::Val(Val::Int(3)));
        assert_eq!(ev("-n").unwrap(), Out::Val(Val::Int(-4)));
        assert!(ev("n / 0").is_err());
        assert!(ev("os + 1").is_err());
        assert!(ev("b.flags").unwrap_err().missing);
    }

    #[test]
    fn partial() {
        let Out::Run(e) = ev("prop.branch == os && true").unwrap() else {
            panic!()
        };
        assert_eq!(print_runtime(&e), "(prop.branch) == ('mac')");
        assert!(ev("false && prop.x == 1").is_ok());
        assert!(ev("prop.x + 1").is_err());
    }
}
