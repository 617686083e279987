//! The parser: expression text to [`Ast`], with byte offsets.

use super::{Ast, Bin, Error, Kind, Val};
use crate::diagnostic::Code;

pub(super) const EMPTY_HELP: &str = "write an expression, e.g. `prop.branch` or a variable name";

pub(super) const NO_FIELD: &str = "expected a field name after `.`";

pub(super) const PROP_PATH: &str = "a property reference is `prop.NAME`";

pub(super) const GRAMMAR_HELP: &str = "an expression is a name, a field (`b.version`), a property (`prop.NAME`), a literal ('text', 42, true, [1, 2]) or operators: == != < <= > >= in + - * / % ! && || ?? and `if … then … else …`";

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
                return Err(self.err(dot, dot + 1, NO_FIELD));
            }
            let end = self.pos;
            if let Kind::Name(root) = &e.kind {
                if root == "prop" {
                    if self.src[self.pos..].starts_with('.') {
                        return Err(Error::new(
                            Code::InvalidExpression,
                            start,
                            self.pos + 1,
                            PROP_PATH,
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
