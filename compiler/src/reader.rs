//! Typed reading of KDL nodes with diagnostics.
//!
//! A [`NodeReader`] records every property and child name the decoder asks
//! for; whatever is left when it finishes is unknown, and the recorded names
//! are exactly the candidates for "did you mean". So the list of what a node
//! accepts lives in one place: the code that reads it.

use crate::diagnostic::{did_you_mean, Code, Diagnostic};
use crate::graph::{Credential, Scalar};
use crate::interp::RunParts;
use crate::source::{FileId, SrcText};
use crate::syntax::{Entry, Node, Span, Value};

pub struct Cx<'a> {
    pub file: FileId,
    pub source: SrcText<'a>,
    pub diags: Vec<Diagnostic>,
    /// The run-time parts expansion left in strings; each is taken out
    /// when its string is read.
    pub run_parts: RunParts,
    /// Verdicts of value checks that cost (regexes, globs, time zones, cron
    /// expressions), keyed by kind and text: a large config repeats the same
    /// few patterns thousands of times, and compiling each occurrence again
    /// dominated `bbc check`. Per compilation, so nothing outlives it.
    pub checked: Checked,
    /// What each node accepts, recorded only when the caller asks
    /// (`compile_with_schema`, for the language server); `None` costs a
    /// branch per node.
    pub schema: Option<Box<crate::schema::Schema>>,
}

/// Which value check a [`Checked`] verdict belongs to.
#[derive(Clone, Copy)]
pub enum CheckKind {
    Regex = 0,
    Glob = 1,
    TimeZone = 2,
    Cron = 3,
}

/// The outcome of each distinct checked text: `None` when valid, otherwise
/// the error text the diagnostic is built from (the diagnostic itself is
/// emitted at every occurrence, with that occurrence's span).
///
/// Keyed with foldhash rather than std's SipHash: every occurrence hashes
/// its whole text, and SipHash over thousands of ~600-character patterns
/// cost about as much as the lookups saved (docs/perf.md). A fixed seed is
/// enough: the texts come from the config's own author.
#[derive(Default)]
pub struct Checked(
    [std::collections::HashMap<String, Option<String>, foldhash::fast::FixedState>; 4],
);

impl Checked {
    /// The verdict for `text`, computing it with `check` the first time.
    pub fn get(
        &mut self,
        kind: CheckKind,
        text: &str,
        check: impl FnOnce(&str) -> Option<String>,
    ) -> Option<String> {
        let map = &mut self.0[kind as usize];
        // One map per kind, so a hit is looked up by `&str` without
        // allocating a key.
        if let Some(v) = map.get(text) {
            return v.clone();
        }
        let v = check(text);
        map.insert(text.to_string(), v.clone());
        v
    }
}

impl Cx<'_> {
    /// Records the words `e`'s value may be, when a schema is recorded.
    pub fn record_values(&mut self, e: &Entry, words: impl Iterator<Item = &'static str>) {
        if let Some(s) = &mut self.schema {
            s.record_values(e.value_span, words);
        }
    }

    pub fn emit(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
    pub fn err(&mut self, code: Code, span: Span, msg: impl Into<String>) -> DiagBuilder<'_> {
        DiagBuilder {
            diags: &mut self.diags,
            d: Some(Diagnostic::new(code, self.file, span, msg)),
        }
    }

    fn annotation_ok(&mut self, e: &Entry, allow_secret: bool) -> bool {
        match &e.ty {
            None => true,
            Some(t) if t.value == "secret" && allow_secret => true,
            Some(t) if t.value == "secret" => {
                self.err(
                    Code::WrongType,
                    t.span.to(e.value_span),
                    "a secret cannot be used here",
                )
                .label("secret reference")
                .help("secrets are for passwords, tokens, webhook secrets and `env` values; they are resolved only by the running master")
                .emit();
                false
            }
            Some(t) => {
                self.err(
                    Code::WrongType,
                    t.span,
                    format!("unknown type annotation `({})`", t.value),
                )
                .label("not a known annotation")
                .help("the only value annotation bbc knows is `(secret)`, as in password=(secret)\"NAME\"")
                .emit();
                false
            }
        }
    }

    fn wrong_type(&mut self, e: &Entry, expected: &str, help: &str) {
        self.err(
            Code::WrongType,
            e.value_span,
            format!("expected {expected}, found {}", e.value.kind_name()),
        )
        .label(format!("expected {expected}"))
        .help(help)
        .emit();
    }

    /// A string value as a shared text: the tree's own allocation when the
    /// lexer interned it (long texts a config repeats), so every step that
    /// repeats a warning pattern shares one copy into the graph.
    pub fn shared_string(&mut self, e: &Entry) -> Option<std::sync::Arc<str>> {
        if let Value::String(crate::syntax::Str::Shared(s)) = &e.value {
            if self.annotation_ok(e, false) {
                return Some(s.clone());
            }
            return None;
        }
        self.string(e).map(std::sync::Arc::from)
    }

    pub fn string(&mut self, e: &Entry) -> Option<String> {
        if !self.annotation_ok(e, false) {
            return None;
        }
        match &e.value {
            Value::String(s) => Some(String::from(&**s)),
            Value::Integer(i) => {
                self.wrong_type(e, "a string", &format!("quote it: \"{i}\""));
                None
            }
            _ => {
                self.wrong_type(e, "a string", "write the value in double quotes");
                None
            }
        }
    }

    /// Whether the value was written as `${{ … }}` and substituted while
    /// compiling: then "4" may stand for an integer, "true" for a boolean.
    fn interpolated(&self, e: &Entry) -> bool {
        self.source.slice(e.value_span).contains("${{")
    }

    pub fn boolean(&mut self, e: &Entry) -> Option<bool> {
        self.record_values(e, ["#true", "#false"].into_iter());
        if !self.annotation_ok(e, false) {
            return None;
        }
        match &e.value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if (&**s == "true" || &**s == "false") && self.interpolated(e) => {
                Some(&**s == "true")
            }
            Value::String(s) if &**s == "true" || &**s == "false" => {
                self.wrong_type(e, "a boolean", &format!("KDL writes booleans as #{s}"));
                None
            }
            _ => {
                self.wrong_type(e, "a boolean", "write #true or #false");
                None
            }
        }
    }

    pub fn integer(&mut self, e: &Entry) -> Option<i64> {
        if !self.annotation_ok(e, false) {
            return None;
        }
        match &e.value {
            Value::Integer(i) => match i64::try_from(*i) {
                Ok(i) => Some(i),
                Err(_) => {
                    self.err(Code::OutOfRange, e.value_span, "number is too large")
                        .label("does not fit in 64 bits")
                        .emit();
                    None
                }
            },
            Value::String(s) if self.interpolated(e) && s.parse::<i64>().is_ok() => {
                s.parse::<i64>().ok()
            }
            Value::String(s) if s.parse::<i64>().is_ok() => {
                self.wrong_type(e, "an integer", &format!("write it without quotes: {s}"));
                None
            }
            _ => {
                self.wrong_type(e, "an integer", "write a whole number such as 2");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, e: &Entry, min: i64, max: i64, what: &str) -> Option<i64> {
        let i = self.integer(e)?;
        if i < min || i > max {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("from {min} to {max}")
            };
            self.err(
                Code::OutOfRange,
                e.value_span,
                format!("{what} must be {range}, found {i}"),
            )
            .label("out of range")
            .help(format!("use a value {range}"))
            .emit();
            return None;
        }
        Some(i)
    }

    pub fn duration_ms(&mut self, e: &Entry) -> Option<u64> {
        // Examples rather than values: any number and unit will do.
        self.record_values(e, ["\"30s\"", "\"5m\"", "\"1h\"", "\"1d\""].into_iter());
        if !self.annotation_ok(e, false) {
            return None;
        }
        match &e.value {
            Value::String(s) => match parse_duration_ms(s) {
                Ok(ms) => Some(ms),
                Err(why) => {
                    self.err(
                        Code::InvalidDuration,
                        e.value_span,
                        format!("invalid duration \"{s}\": {why}"),
                    )
                    .label("not a duration")
                    .help("write a number and a unit: 250ms, 30s, 5m, 1h30m, 2d")
                    .emit();
                    None
                }
            },
            Value::Integer(i) => {
                self.err(
                    Code::InvalidDuration,
                    e.value_span,
                    "a duration needs a unit",
                )
                .label("a bare number")
                .help(format!(
                    "write \"{i}s\" for seconds or \"{i}m\" for minutes"
                ))
                .emit();
                None
            }
            _ => {
                self.wrong_type(e, "a duration string", "write a duration such as \"5m\"");
                None
            }
        }
    }

    pub fn credential(&mut self, e: &Entry) -> Option<(Credential, bool)> {
        if !self.annotation_ok(e, true) {
            return None;
        }
        let secret = e.ty.is_some();
        match &e.value {
            Value::String(s) if secret => {
                if s.is_empty() {
                    self.err(Code::MissingValue, e.value_span, "empty secret name")
                        .label("names no secret")
                        .help("name the secret, e.g. (secret)\"worker-password\"")
                        .emit();
                    return None;
                }
                Some((
                    Credential::Secret {
                        secret: String::from(&**s),
                    },
                    false,
                ))
            }
            Value::String(s) => Some((Credential::Plain(String::from(&**s)), true)),
            _ => {
                self.wrong_type(e, "a secret", "write (secret)\"NAME\"");
                None
            }
        }
    }

    pub fn scalar(&mut self, e: &Entry) -> Option<Scalar> {
        if !self.annotation_ok(e, false) {
            return None;
        }
        match &e.value {
            Value::String(s) => Some(Scalar::String(String::from(&**s))),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            Value::Integer(i) => match i64::try_from(*i) {
                Ok(i) => Some(Scalar::Int(i)),
                Err(_) => {
                    self.err(Code::OutOfRange, e.value_span, "number is too large")
                        .label("does not fit in 64 bits")
                        .emit();
                    None
                }
            },
            Value::Float(f) if f.is_finite() => Some(Scalar::Float(*f)),
            _ => {
                self.wrong_type(
                    e,
                    "a string, number or boolean",
                    "property values are strings, numbers or booleans",
                );
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(
        &mut self,
        e: &Entry,
        what: &str,
        options: &[(&'static str, T)],
    ) -> Option<T> {
        self.record_values(e, options.iter().map(|(k, _)| *k));
        let s = self.string(e)?;
        if let Some((_, v)) = options.iter().find(|(k, _)| *k == s) {
            return Some(*v);
        }
        let names = options.iter().map(|(k, _)| *k);
        self.err(
            Code::InvalidChoice,
            e.value_span,
            format!("\"{s}\" is not a valid {what}"),
        )
        .label(format!("unknown {what}"))
        .help_opt(did_you_mean(&s, names, &format!("valid values for {what}")))
        .emit();
        None
    }
}

/// Builds and emits one diagnostic (so call sites read top to bottom).
pub struct DiagBuilder<'a> {
    diags: &'a mut Vec<Diagnostic>,
    d: Option<Diagnostic>,
}

impl DiagBuilder<'_> {
    fn map(mut self, f: impl FnOnce(Diagnostic) -> Diagnostic) -> Self {
        self.d = self.d.take().map(f);
        self
    }
    pub fn label(self, t: impl Into<String>) -> Self {
        self.map(|d| d.label(t))
    }
    pub fn help(self, t: impl Into<String>) -> Self {
        self.map(|d| d.help(t))
    }
    pub fn help_opt(self, t: Option<String>) -> Self {
        self.map(|d| d.help_opt(t))
    }
    pub fn add_child(self, line: impl Into<String>) -> Self {
        self.map(|d| d.add_child(line))
    }
    pub fn with(self, file: FileId, span: Span, t: impl Into<String>) -> Self {
        self.map(|d| d.with(file, span, t))
    }
    /// A secondary label in the same file as the primary one.
    pub fn also(self, span: Span, t: impl Into<String>) -> Self {
        self.map(|d| {
            let f = d.primary.file;
            d.with(f, span, t)
        })
    }
    pub fn emit(mut self) {
        if let Some(d) = self.d.take() {
            self.diags.push(d);
        }
    }
}

/// Parses "250ms", "30s", "5m", "1h30m", "2d", "1w".
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("it is empty".into());
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("expected a number at `{}`", &t[i..]));
        }
        let n: u64 = t[start..i]
            .parse()
            .map_err(|_| "number too large".to_string())?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &t[ustart..i];
        let mult: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(format!("`{n}` has no unit")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "too long".to_string())?;
    }
    Ok(total)
}

pub struct NodeReader<'n> {
    pub node: &'n Node,
    props_asked: Vec<&'static str>,
    kids_asked: Vec<&'static str>,
    /// Arguments at or beyond this index are unexpected.
    args_max: usize,
    args_what: &'static str,
    /// The children block was consumed as a whole (e.g. `steps`).
    kids_all: bool,
    /// Every property was consumed as a map entry (e.g. `env NAME="…"`).
    props_all: bool,
    /// Unknown properties and children are not reported.
    lenient: bool,
}

impl<'n> NodeReader<'n> {
    pub fn new(node: &'n Node) -> Self {
        NodeReader {
            node,
            props_asked: Vec::new(),
            kids_asked: Vec::new(),
            args_max: 0,
            args_what: "",
            kids_all: false,
            props_all: false,
            lenient: false,
        }
    }

    pub fn name(&self) -> &'n str {
        &self.node.name.value
    }

    fn args(&self) -> impl Iterator<Item = &'n Entry> {
        self.node.entries.iter().filter(|e| e.name.is_none())
    }

    /// Argument `i`, described as `what` in messages.
    pub fn arg(&mut self, i: usize, what: &'static str) -> Option<&'n Entry> {
        if i + 1 > self.args_max {
            self.args_max = i + 1;
            self.args_what = what;
        }
        self.args().nth(i)
    }

    /// Argument `i`, which must be there.
    pub fn req_arg(
        &mut self,
        cx: &mut Cx,
        i: usize,
        what: &'static str,
        example: &str,
    ) -> Option<&'n Entry> {
        let a = self.arg(i, what);
        if a.is_none() {
            let end = self.node.name.span;
            cx.err(
                Code::MissingValue,
                end,
                format!("`{}` needs {what}", self.name()),
            )
            .label(format!("{what} missing"))
            .help(format!("for example: {example}"))
            .emit();
        }
        a
    }

    /// Accept every property and child without reporting unknown ones.
    pub fn accept_any(&mut self) {
        self.lenient = true;
    }

    /// All arguments from `i` on.
    pub fn rest_args(&mut self, i: usize) -> Vec<&'n Entry> {
        self.args_max = usize::MAX;
        self.args().skip(i).collect()
    }

    pub fn prop(&mut self, cx: &mut Cx, name: &'static str) -> Option<&'n Entry> {
        self.props_asked.push(name);
        let mut found: Option<&'n Entry> = None;
        for e in &self.node.entries {
            if e.name.as_ref().is_some_and(|n| n.value == name) {
                if let Some(prev) = found {
                    cx.err(
                        Code::DuplicateSetting,
                        e.span,
                        format!("`{name}` is set twice"),
                    )
                    .label("set again here")
                    .also(prev.span, "first set here")
                    .help("remove one of them")
                    .emit();
                }
                found = Some(e);
            }
        }
        found
    }

    pub fn kid(&mut self, cx: &mut Cx, name: &'static str) -> Option<&'n Node> {
        let all = self.kids(name);
        if let [first, again, ..] = all.as_slice() {
            cx.err(
                Code::DuplicateSetting,
                again.name.span,
                format!("`{name}` is given twice"),
            )
            .label("given again here")
            .also(first.name.span, "first given here")
            .help("keep one; it takes a single value")
            .emit();
        }
        all.first().copied()
    }

    pub fn kids(&mut self, name: &'static str) -> Vec<&'n Node> {
        self.kids_asked.push(name);
        self.node
            .children
            .iter()
            .flat_map(|c| c.nodes.iter())
            .filter(|n| n.name.value == name)
            .collect()
    }

    /// The whole children block, read in order by the caller.
    pub fn all_kids(&mut self) -> &'n [Node] {
        self.kids_all = true;
        self.node
            .children
            .as_ref()
            .map(|c| c.nodes.as_slice())
            .unwrap_or(&[])
    }

    /// Every property, in order, read by the caller as a map of names to
    /// values rather than as settings.
    pub fn all_props(&mut self) -> Vec<&'n Entry> {
        self.props_all = true;
        self.node
            .entries
            .iter()
            .filter(|e| e.name.is_some())
            .collect()
    }

    /// `name "value"` child with one string argument.
    pub fn kid_string(&mut self, cx: &mut Cx, name: &'static str) -> Option<(String, Span)> {
        let n = self.kid(cx, name)?;
        let mut r = NodeReader::new(n);
        let v = r
            .req_arg(cx, 0, "a value", &format!("{name} \"…\""))
            .and_then(|e| cx.string(e).map(|s| (s, e.value_span)));
        r.finish(cx);
        v
    }

    /// `name "a" "b" …` children (possibly repeated), all strings.
    pub fn kid_strings(&mut self, cx: &mut Cx, name: &'static str) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for n in self.kids(name) {
            let mut r = NodeReader::new(n);
            for e in r.rest_args(0) {
                if let Some(s) = cx.string(e) {
                    out.push((s, e.value_span));
                }
            }
            r.finish(cx);
        }
        out
    }

    /// `name VALUE` child read by `f`.
    pub fn kid_with<T>(
        &mut self,
        cx: &mut Cx,
        name: &'static str,
        example: &str,
        f: impl FnOnce(&mut Cx, &Entry) -> Option<T>,
    ) -> Option<T> {
        let n = self.kid(cx, name)?;
        let mut r = NodeReader::new(n);
        let v = r.req_arg(cx, 0, "a value", example).and_then(|e| f(cx, e));
        r.finish(cx);
        v
    }

    /// Reports what nothing asked for: extra arguments, unknown properties,
    /// unknown children, meaningless annotations.
    pub fn finish(self, cx: &mut Cx) {
        let node = self.node;
        if let Some(s) = &mut cx.schema {
            s.record_node(node, &self.props_asked, &self.kids_asked);
        }
        if let Some(t) = &node.ty {
            cx.err(
                Code::WrongType,
                t.span,
                format!("type annotation `({})` means nothing on a node", t.value),
            )
            .label("remove this")
            .help("annotations are only used on values, as in password=(secret)\"NAME\"")
            .emit();
        }
        let extra: Vec<&Entry> = self.args().skip(self.args_max).collect();
        if let (Some(first), Some(last)) = (extra.first(), extra.last()) {
            let takes = match self.args_max {
                0 => "no arguments".to_string(),
                1 => format!("one argument ({})", self.args_what),
                n => format!("{n} arguments"),
            };
            let help = if self.args_max == 0 && !self.props_asked.is_empty() {
                format!(
                    "settings are written as properties, e.g. {}=…",
                    self.props_asked[0]
                )
            } else {
                "remove the extra values".to_string()
            };
            cx.err(
                Code::UnexpectedArgument,
                first.span.to(last.span),
                format!("`{}` takes {takes}", node.name.value),
            )
            .label(if extra.len() == 1 {
                "unexpected argument".to_string()
            } else {
                format!("{} unexpected arguments", extra.len())
            })
            .help(help)
            .emit();
        }
        if self.lenient {
            return;
        }
        for e in node.entries.iter().filter(|_| !self.props_all) {
            let Some(n) = &e.name else { continue };
            if self.props_asked.contains(&n.value.as_str()) {
                continue;
            }
            let help = if self.props_asked.is_empty() {
                Some(format!("`{}` takes no properties", node.name.value))
            } else if self.kids_asked.contains(&n.value.as_str()) {
                Some(format!(
                    "`{}` is written as a child node: {{ {} … }}",
                    n.value, n.value
                ))
            } else {
                did_you_mean(
                    &n.value,
                    self.props_asked.iter().copied(),
                    &format!("`{}` accepts", node.name.value),
                )
            };
            cx.err(
                Code::UnknownProperty,
                n.span,
                format!("unknown property `{}` on `{}`", n.value, node.name.value),
            )
            .label("unknown property")
            .help_opt(help)
            .emit();
        }
        if self.kids_all {
            return;
        }
        let Some(children) = &node.children else {
            return;
        };
        if self.kids_asked.is_empty() {
            {
                cx.err(
                    Code::UnexpectedArgument,
                    children.span,
                    format!("`{}` takes no children block", node.name.value),
                )
                .label("unexpected block")
                .help_opt(if self.props_asked.is_empty() {
                    Some(format!(
                        "remove the block; `{}` is written on one line",
                        node.name.value
                    ))
                } else {
                    Some(format!(
                        "settings go in properties, e.g. {}=…",
                        self.props_asked[0]
                    ))
                })
                .emit();
            }
            return;
        }
        for k in &children.nodes {
            if self.kids_asked.contains(&k.name.value.as_str()) {
                continue;
            }
            let help = if self.props_asked.contains(&k.name.value.as_str()) {
                Some(format!(
                    "`{}` is a property of `{}`: {}=…",
                    k.name.value, node.name.value, k.name.value
                ))
            } else {
                did_you_mean(
                    &k.name.value,
                    self.kids_asked.iter().copied(),
                    &format!("`{}` accepts", node.name.value),
                )
            };
            cx.err(
                Code::UnknownNode,
                k.name.span,
                format!("unknown node `{}` in `{}`", k.name.value, node.name.value),
            )
            .label("unknown node")
            .help_opt(help)
            .emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("5 minutes").is_err());
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("m5").is_err());
        assert!(parse_duration_ms("99999999999999999999w").is_err());
    }
}
