//! Run-time strings: `${{ … }}` interpolation of build properties.
//!
//! Only `${{` starts an interpolation: shell syntax (`$VAR`, `${VAR}`,
//! `$(cmd)`) is ordinary text and reaches the worker verbatim.
//!
//! There is one expression grammar, [`crate::expr`]. Expansion evaluates
//! every `${{ … }}` while compiling; what depends on a build property stays
//! a run-time expression, which expansion hands to the decoder as a value
//! ([`RunPart`]) in a side table keyed by the span of the string it belongs
//! to and the offset of its `${{` there ([`RunParts`]). A side table, not a new kind of KDL value, because the
//! string must stay a string for every setting that is not a run-time one
//! (names, descriptions: there a run-time part is ordinary text, which
//! expansion writes in its place), and because only the few strings with
//! run-time parts pay for it: no KDL value grows, and the decoder looks a
//! part up only when it meets its `${{`. Spans are unique keys: every
//! expanded copy of a template body or matrix child gets its own range of
//! offsets (only past 4 GiB of copies would copies share spans, and then
//! their diagnostics would already be ambiguous).
//!
//! The decoder reads a run-time string ([`text`], [`condition`]) by
//! splitting it at `${{ … }}` as it is written after expansion: a part
//! expansion recorded is taken as it is; any other one (text that reached
//! the string through a compile-time value, such as a template argument
//! `x="${{ prop.branch }}"`, or a part with a mistake) is
//! parsed here, and its mistakes are reported here, where the string is
//! known to be a run-time one.

use crate::diagnostic::{Code, Diagnostic};
use crate::expr::{self, PropUse};
use crate::graph::{Expr, Part, Text};
use crate::reader::Cx;
use crate::source::SrcText;
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

/// A `${{ … }}` in a string.
pub struct Interpolation<'s> {
    /// Offset of its `${{`.
    pub open: usize,
    /// The text between the braces (at `open + 3`); `None` when the `${{`
    /// is never closed, and then the rest of the string is text.
    pub body: Option<&'s str>,
    /// Offset after its `}}`.
    pub end: usize,
}

/// Whether `s` has a `${{`. Most strings of a config have none, and every
/// string of every expanded copy is asked: a byte search for `$` (rare in
/// text) beats a substring search's set-up.
pub fn has_interpolation(s: &str) -> bool {
    find_pair(s, 0, b"${{").is_some()
}

/// The offset of the first `pat` (`${{` or `}}`) in `s` from `from`: a
/// byte search for its first byte, then a comparison (the substring
/// searcher's set-up showed in a keystroke's profile, for strings of a
/// few dozen bytes).
fn find_pair(s: &str, from: usize, pat: &[u8]) -> Option<usize> {
    let b = s.as_bytes().get(from..)?;
    memchr::memchr_iter(pat[0], b)
        .find(|&i| b[i..].starts_with(pat))
        .map(|i| from + i)
}

/// The `${{ … }}` of a string, in order. The expression ends at the first
/// `}}`; an unclosed `${{` is the last one.
pub fn interpolations(s: &str) -> impl Iterator<Item = Interpolation<'_>> {
    let mut rest = 0;
    std::iter::from_fn(move || {
        let open = find_pair(s, rest, b"${{")?;
        let body_start = open + 3;
        let body = find_pair(s, body_start, b"}}").map(|close| {
            rest = close + 2;
            &s[body_start..close]
        });
        if body.is_none() {
            rest = s.len();
        }
        Some(Interpolation {
            open,
            body,
            end: rest,
        })
    })
}

/// A run-time expression expansion left in a string.
#[derive(Debug, Clone)]
pub struct RunPart {
    pub expr: Expr,
    /// Where its `prop.NAME` uses are, at offsets in the expanded string.
    pub props: Vec<PropUse>,
}

impl RunPart {
    /// What evaluating a part left at `at..end` of a string for run time.
    /// Its property uses have no place of their own there (the string no
    /// longer reads as written): they point at the whole part.
    pub fn evaluated(at: usize, end: usize, expr: Expr) -> RunPart {
        let mut n = 0;
        each_prop(&expr, &mut |_| n += 1);
        let props = vec![PropUse { start: at, end }; n];
        RunPart { expr, props }
    }
}

/// The run-time parts of expanded strings, by the span of the string and
/// the offset of the part's `${{` in it ([`BARE`] for a condition written
/// without `${{ }}`, whose part is the whole string).
///
/// Filled in expansion order, sorted once ([`RunParts::seal`]), then read
/// by binary search: cheaper than hashing every key twice, and a string
/// costs nothing more than its parts.
#[derive(Debug, Default)]
pub struct RunParts {
    parts: Vec<((Span, usize), Option<RunPart>)>,
}

impl RunParts {
    pub fn insert(&mut self, span: Span, at: usize, part: RunPart) {
        self.parts.push(((span, at), Some(part)));
    }
    /// Moves `other`'s parts into these (a fork's, in a parallel
    /// expansion; the keys are distinct, as every copy has its own range).
    pub fn append(&mut self, other: &mut RunParts) {
        self.parts.append(&mut other.parts);
    }
    /// Makes what was inserted readable by [`RunParts::take`].
    pub fn seal(&mut self) {
        self.parts.sort_unstable_by_key(|(k, _)| *k);
    }
    /// The part at `at` of the string at `span`, taken out: a string is
    /// read once, and what the part holds moves into the graph.
    pub fn take(&mut self, span: Span, at: usize) -> Option<RunPart> {
        let i = self
            .parts
            .binary_search_by_key(&(span, at), |(k, _)| *k)
            .ok()?;
        self.parts[i].1.take()
    }
}

/// The offset key of a bare condition's part.
pub const BARE: usize = usize::MAX;

/// A [`StrMap`] made on first use: most run-time strings have no `${{`
/// (or one without a property), and reading a token's text goes through
/// the span map, whose look-up showed in a keystroke's profile.
struct LazyMap<'s> {
    source: SrcText<'s>,
    token: Span,
    value: &'s str,
    map: std::cell::Cell<Option<StrMap>>,
}

impl<'s> LazyMap<'s> {
    fn new(source: SrcText<'s>, token: Span, value: &'s str) -> LazyMap<'s> {
        LazyMap {
            source,
            token,
            value,
            map: std::cell::Cell::new(None),
        }
    }
    fn span(&self, start: usize, end: usize) -> Span {
        let map = self.map.get().unwrap_or_else(|| {
            let m = StrMap::new(self.source, self.token, self.value);
            self.map.set(Some(m));
            m
        });
        map.span(start, end)
    }
}

fn report(cx: &mut Cx, map: &LazyMap, offset: usize, e: expr::Error) {
    let d = Diagnostic::new(
        e.code,
        cx.file,
        map.span(offset + e.start, offset + e.end),
        e.message,
    )
    .label("here")
    .help(e.help);
    cx.emit(d);
}

fn record(props: &mut Vec<PropRef>, map: &LazyMap, offset: usize, e: &Expr, uses: &[PropUse]) {
    let mut uses = uses.iter();
    each_prop(e, &mut |name| {
        if let Some(u) = uses.next() {
            props.push(PropRef {
                name: name.to_string(),
                span: map.span(offset + u.start, offset + u.end),
            });
        }
    });
}

/// The run-time expression `src` (at `offset` of the string): the part
/// expansion recorded there, or `src` parsed.
fn expr(
    cx: &mut Cx,
    props: &mut Vec<PropRef>,
    map: &LazyMap,
    part: Option<RunPart>,
    src: &str,
    offset: usize,
) -> Option<Expr> {
    if let Some(p) = part {
        record(props, map, 0, &p.expr, &p.props);
        return Some(p.expr);
    }
    let mut uses = Vec::new();
    match expr::parse_runtime(src).and_then(|a| expr::to_runtime(&a, src, &mut uses)) {
        Ok(e) => {
            record(props, map, offset, &e, &uses);
            Some(e)
        }
        Err(e) => {
            report(cx, map, offset, e);
            None
        }
    }
}

/// Splits a run-time string into literal text and `${{ expr }}` parts.
pub fn text(cx: &mut Cx, props: &mut Vec<PropRef>, value: &str, token: Span) -> Text {
    let map = LazyMap::new(cx.source, token, value);
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = 0;
    for i in interpolations(value) {
        let open = i.open;
        lit.push_str(&value[rest..open]);
        let Some(src) = i.body else {
            cx.emit(
                Diagnostic::new(
                    Code::InvalidExpression,
                    cx.file,
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
        let part = cx.run_parts.take(token, open);
        if let Some(e) = expr(cx, props, &map, part, src, open + 3) {
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Expr(e));
        }
        rest = i.end;
    }
    lit.push_str(&value[rest..]);
    if !lit.is_empty() || parts.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Text(parts)
}

/// A condition: `${{ expr }}`, or the bare expression.
pub fn condition(cx: &mut Cx, props: &mut Vec<PropRef>, entry: &Entry) -> Option<Expr> {
    let Value::String(s) = &entry.value else {
        cx.emit(
            Diagnostic::new(
                Code::WrongType,
                cx.file,
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
    let map = LazyMap::new(cx.source, entry.value_span, s);
    let (src, offset) = condition_body(s);
    // Wrapped in `${{ }}`, the part is at its `${{`; bare, it is the string.
    let at = if offset == 0 { BARE } else { offset - 3 };
    let part = cx.run_parts.take(entry.value_span, at);
    expr(cx, props, &map, part, src, offset)
}

/// The expression of a condition and its offset in the string: the inside
/// of a string that is one `${{ … }}`, or the whole string, bare.
pub fn condition_body(s: &str) -> (&str, usize) {
    let lead = s.len() - s.trim_start().len();
    match s
        .trim()
        .strip_prefix("${{")
        .and_then(|t| t.strip_suffix("}}"))
    {
        Some(inner) if !inner.contains("${{") => (inner, lead + 3),
        _ => (s, 0),
    }
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
    // Buildbot's names of the same properties (docs/migrating.md), so that
    // imported and copied configs keep working; `builddir` is the
    // builder's directory under the worker's base directory.
    "buildername",
    "workername",
    "builddir",
    "owners",
];

/// Buildbot's names (current and old) of properties bbc spells otherwise:
/// (Buildbot's, bbc's). A misspelt name close to one of these is told
/// bbc's spelling.
pub const BUILDBOT_PROPERTY_NAMES: &[(&str, &str)] = &[
    ("buildername", "builder"),
    ("workername", "worker"),
    ("owners", "owner"),
    ("slavename", "worker"),
    ("buildslave", "worker"),
];

/// bbc's spelling of a Buildbot property name, if it has another one.
pub fn bbc_spelling(name: &str) -> Option<&'static str> {
    BUILDBOT_PROPERTY_NAMES
        .iter()
        .find(|(bb, _)| *bb == name)
        .map(|(_, ours)| *ours)
}

/// Collects the `prop.NAME` uses of an already-lowered text (for tests and tools).
pub fn props_of(text: &Text) -> Vec<&str> {
    let mut out = Vec::new();
    for p in &text.0 {
        if let Part::Expr(e) = p {
            props_in(e, &mut out);
        }
    }
    out
}

/// The `prop.NAME` uses of a run-time expression, in order.
pub fn props_in<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    each_prop(e, &mut |p| out.push(p));
}

/// Calls `f` with the name of each `prop.NAME` of `e`, in order.
pub fn each_prop<'a>(e: &'a Expr, f: &mut impl FnMut(&'a str)) {
    match e {
        Expr::Prop(p) => f(p),
        Expr::Lit(_) => {}
        Expr::Not(e) => each_prop(e, f),
        Expr::And(b)
        | Expr::Or(b)
        | Expr::Eq(b)
        | Expr::Ne(b)
        | Expr::Lt(b)
        | Expr::Le(b)
        | Expr::Gt(b)
        | Expr::Ge(b) => {
            each_prop(&b[0], f);
            each_prop(&b[1], f);
        }
        // A property on the left of `??` may be unset: the default stands
        // for it.
        Expr::Default(b) => {
            if !matches!(b[0], Expr::Prop(_)) {
                each_prop(&b[0], f);
            }
            each_prop(&b[1], f);
        }
    }
}
