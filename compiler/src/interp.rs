//! `${{ … }}` interpolation and the small expression language inside it.
//!
//! Only `${{` starts an interpolation: shell syntax (`$VAR`, `${VAR}`,
//! `$(cmd)`) is ordinary text and reaches the worker verbatim.

use crate::diagnostic::{Code, Diagnostic};
use crate::graph::{Expr, Part, Scalar, Text};
use crate::source::{FileId, SrcText};
use crate::syntax::{Entry, Span, Value};

/// Maps byte offsets inside a string value back to the source.
///
/// Exact when the source token is the value between plain quotes or raw
/// `#"…"#` delimiters (the common case); otherwise every sub-span falls back
/// to the whole token, which is still the right place, only wider.
#[derive(Clone, Copy)]
pub struct StrMap {
    token: Span,
    base: Option<u32>,
}

impl StrMap {
    pub fn new(file: SrcText, token: Span, value: &str) -> StrMap {
        Self::from_token_text(file.slice(token), token, value)
    }
    /// `src` is the source text of `token`.
    pub fn from_token_text(src: &str, token: Span, value: &str) -> StrMap {
        let hashes = src.bytes().take_while(|b| *b == b'#').count();
        let open = hashes + 1;
        let exact = src.len() == value.len() + 2 * open
            && src.as_bytes().get(hashes) == Some(&b'"')
            && src.get(open..open + value.len()) == Some(value);
        StrMap {
            token,
            base: exact.then_some(token.start + open as u32),
        }
    }
    pub fn span(&self, start: usize, end: usize) -> Span {
        match self.base {
            Some(b) => Span {
                start: b + start as u32,
                end: b + end as u32,
            },
            None => self.token,
        }
    }
}

/// A use of `prop.NAME` and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropRef {
    pub name: String,
    pub span: Span,
}

pub struct Interp<'a> {
    pub file: FileId,
    pub source: SrcText<'a>,
    pub diags: &'a mut Vec<Diagnostic>,
    pub props: &'a mut Vec<PropRef>,
}

impl Interp<'_> {
    /// Splits a string into literal text and `${{ expr }}` parts.
    pub fn text(&mut self, value: &str, token: Span) -> Text {
        let map = StrMap::new(self.source, token, value);
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = 0;
        while let Some(found) = value[rest..].find("${{") {
            let open = rest + found;
            lit.push_str(&value[rest..open]);
            let body_start = open + 3;
            let Some(close) = value[body_start..].find("}}") else {
                self.diags.push(
                    Diagnostic::new(
                        Code::InvalidExpression,
                        self.file,
                        map.span(open, open + 3),
                        "`${{` is never closed",
                    )
                    .label("interpolation starts here")
                    .help("close it with `}}`, e.g. `${{ prop.branch }}`"),
                );
                lit.push_str(&value[open..]);
                rest = value.len();
                break;
            };
            let body_end = body_start + close;
            if let Some(e) = self.expr(&value[body_start..body_end], body_start, &map) {
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Expr(e));
            }
            rest = body_end + 2;
        }
        lit.push_str(&value[rest..]);
        if !lit.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Text(parts)
    }

    /// A condition: `${{ expr }}`, or the bare expression.
    pub fn condition(&mut self, entry: &Entry) -> Option<Expr> {
        let Value::String(s) = &entry.value else {
            self.diags.push(
                Diagnostic::new(
                    Code::WrongType,
                    self.file,
                    entry.value_span,
                    format!(
                        "expected a condition string, found {}",
                        entry.value.kind_name()
                    ),
                )
                .label("not a string")
                .help("write a condition such as \"${{ prop.branch == 'main' }}\""),
            );
            return None;
        };
        let map = StrMap::new(self.source, entry.value_span, s);
        let trimmed = s.trim();
        let lead = s.len() - s.trim_start().len();
        if let Some(inner) = trimmed
            .strip_prefix("${{")
            .and_then(|t| t.strip_suffix("}}"))
        {
            if !inner.contains("${{") {
                return self.expr(inner, lead + 3, &map);
            }
        }
        self.expr(s, 0, &map)
    }

    fn expr(&mut self, src: &str, offset: usize, map: &StrMap) -> Option<Expr> {
        let mut p = Parser {
            src,
            pos: 0,
            offset,
            map,
            err: None,
            props: Vec::new(),
        };
        p.ws();
        let e = if p.pos >= src.len() {
            p.fail(
                0,
                src.len(),
                "empty `${{ }}`",
                "write an expression, e.g. `prop.branch`",
            );
            None
        } else {
            let e = p.or();
            p.ws();
            if e.is_some() && p.err.is_none() && p.pos < src.len() {
                let at = p.pos;
                p.fail(
                    at,
                    at + p.char_len(),
                    "unexpected text in expression",
                    "an expression is a property (`prop.NAME`), a literal ('text', 42, true) or a comparison joined with && and ||",
                );
            }
            e
        };
        match p.err {
            Some(d) => {
                self.diags.push(d.into_diag(self.file));
                None
            }
            None => {
                self.props.extend(p.props);
                e
            }
        }
    }
}

struct PendingError {
    span: Span,
    code: Code,
    message: String,
    help: String,
}

impl PendingError {
    fn into_diag(self, file: FileId) -> Diagnostic {
        Diagnostic::new(self.code, file, self.span, self.message)
            .label("here")
            .help(self.help)
    }
}

struct Parser<'s, 'm> {
    src: &'s str,
    pos: usize,
    offset: usize,
    map: &'m StrMap,
    err: Option<PendingError>,
    props: Vec<PropRef>,
}

/// Names users reach for that are build properties (`prop.NAME`).
pub const BUILTIN_PROPERTIES: &[&str] = &[
    "branch",
    "revision",
    "got_revision",
    "repository",
    "project",
    "codebase",
    "buildnumber",
    "builder",
    "worker",
    "scheduler",
    "reason",
    "owner",
    "event",
    "pr_number",
    "pr_title",
    "pr_author",
    "pr_labels",
    "pr_target_branch",
];

impl Parser<'_, '_> {
    fn span(&self, a: usize, b: usize) -> Span {
        self.map.span(self.offset + a, self.offset + b)
    }
    fn fail(&mut self, a: usize, b: usize, msg: &str, help: &str) {
        self.fail_code(
            Code::InvalidExpression,
            a,
            b,
            msg.to_string(),
            help.to_string(),
        );
    }
    fn fail_code(&mut self, code: Code, a: usize, b: usize, msg: String, help: String) {
        if self.err.is_none() {
            self.err = Some(PendingError {
                span: self.span(a, b),
                code,
                message: msg,
                help,
            });
        }
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
    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.src[self.pos..].starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Option<Expr> {
        let mut l = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            l = Expr::Or(Box::new([l, r]));
        }
        Some(l)
    }
    fn and(&mut self) -> Option<Expr> {
        let mut l = self.not()?;
        while self.eat("&&") {
            let r = self.not()?;
            l = Expr::And(Box::new([l, r]));
        }
        Some(l)
    }
    fn not(&mut self) -> Option<Expr> {
        self.ws();
        if self.src[self.pos..].starts_with('!') && !self.src[self.pos..].starts_with("!=") {
            self.pos += 1;
            let e = self.not()?;
            return Some(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Option<Expr> {
        let l = self.atom()?;
        type Mk = fn(Box<[Expr; 2]>) -> Expr;
        let ops: [(&str, Mk); 6] = [
            ("==", Expr::Eq),
            ("!=", Expr::Ne),
            ("<=", Expr::Le),
            (">=", Expr::Ge),
            ("<", Expr::Lt),
            (">", Expr::Gt),
        ];
        for (tok, mk) in ops {
            if self.eat(tok) {
                let r = self.atom()?;
                return Some(mk(Box::new([l, r])));
            }
        }
        self.ws();
        if self.src[self.pos..].starts_with('=') {
            let at = self.pos;
            self.fail(at, at + 1, "`=` is not a comparison", "compare with `==`");
            return None;
        }
        Some(l)
    }
    fn atom(&mut self) -> Option<Expr> {
        self.ws();
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let Some(&c) = bytes.get(start) else {
            self.fail(
                start,
                start,
                "expression ends too early",
                "something is missing after the operator",
            );
            return None;
        };
        match c {
            b'(' => {
                self.pos += 1;
                let e = self.or()?;
                if !self.eat(")") {
                    self.fail(start, start + 1, "`(` is never closed", "add a `)`");
                    return None;
                }
                Some(e)
            }
            b'\'' | b'"' => {
                let body = start + 1;
                match self.src[body..].find(c as char) {
                    Some(n) => {
                        self.pos = body + n + 1;
                        Some(Expr::Lit(Scalar::String(
                            self.src[body..body + n].to_string(),
                        )))
                    }
                    None => {
                        self.fail(
                            start,
                            start + 1,
                            "unterminated string in expression",
                            "close the string with the same quote",
                        );
                        None
                    }
                }
            }
            b'0'..=b'9' | b'-' => {
                let mut end = start + 1;
                while end < bytes.len() && bytes[end].is_ascii_digit() {
                    end += 1;
                }
                self.pos = end;
                match self.src[start..end].parse::<i64>() {
                    Ok(n) => Some(Expr::Lit(Scalar::Int(n))),
                    Err(_) => {
                        self.fail(
                            start,
                            end,
                            "invalid number",
                            "write a whole number such as 42",
                        );
                        None
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || bytes[end] == b'_'
                        || bytes[end] == b'.')
                {
                    end += 1;
                }
                self.pos = end;
                let path = &self.src[start..end];
                match path {
                    "true" => return Some(Expr::Lit(Scalar::Bool(true))),
                    "false" => return Some(Expr::Lit(Scalar::Bool(false))),
                    _ => {}
                }
                if let Some(name) = path.strip_prefix("prop.") {
                    if name.is_empty() || name.contains('.') {
                        self.fail(
                            start,
                            end,
                            "a property reference is `prop.NAME`",
                            "name one property, e.g. `prop.branch`",
                        );
                        return None;
                    }
                    let sp = self.span(start, end);
                    self.props.push(PropRef {
                        name: name.to_string(),
                        span: sp,
                    });
                    return Some(Expr::Prop(name.to_string()));
                }
                let help = if BUILTIN_PROPERTIES.contains(&path) {
                    format!("build properties are written `prop.{path}`")
                } else {
                    "build properties are written `prop.NAME`; compile-time variables are declared with `let NAME=…`".to_string()
                };
                self.fail_code(
                    Code::UnknownReference,
                    start,
                    end,
                    format!("unknown name `{path}` in expression"),
                    help,
                );
                None
            }
            _ => {
                let n = self.char_len();
                self.fail(
                    start,
                    start + n,
                    "unexpected character in expression",
                    "an expression is a property (`prop.NAME`), a literal ('text', 42, true) or a comparison joined with && and ||",
                );
                None
            }
        }
    }
}

/// Collects the `prop.NAME` uses of an already-lowered text (for tests and tools).
pub fn props_of(text: &Text) -> Vec<&str> {
    fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
        match e {
            Expr::Prop(p) => out.push(p),
            Expr::Lit(_) => {}
            Expr::Not(e) => walk(e, out),
            Expr::And(b)
            | Expr::Or(b)
            | Expr::Eq(b)
            | Expr::Ne(b)
            | Expr::Lt(b)
            | Expr::Le(b)
            | Expr::Gt(b)
            | Expr::Ge(b) => {
                walk(&b[0], out);
                walk(&b[1], out);
            }
        }
    }
    let mut out = Vec::new();
    for p in &text.0 {
        if let Part::Expr(e) = p {
            walk(e, &mut out);
        }
    }
    out
}
