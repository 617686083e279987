//! Byte-level tokenizer for KDL 2.0.
//!
//! The lexer works directly on the UTF-8 bytes of the source. ASCII is
//! classified through one lookup table; only the handful of non-ASCII lead
//! bytes that can start a KDL whitespace, newline or disallowed code point
//! (`C2`, `E1`, `E2`, `E3`, `EF`) take a slower path. Every other non-ASCII
//! byte is plain identifier or string content, so the hot loops never decode
//! UTF-8. Because those special lead bytes never occur as continuation bytes,
//! every position the lexer stops at is a char boundary.
//!
//! Strings are unescaped while they are scanned; a string without escapes is
//! copied into its owned `String` once, at the end.
//!
//! Whitespace, block comments and line continuations are folded into the
//! `space_before` flag of the following token: the grammar only cares whether
//! entries are separated, never what separates them. Newlines and single-line
//! comments are real tokens because they end nodes. Every comment's span is
//! also recorded in `trivia`, for the formatter, which must keep them.

use super::ast::{ParseError, Span, Str, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

mod chars;
mod number;
mod string;

use chars::*;
pub(crate) use chars::{newline_len, space_len};

pub(crate) fn error(
    start: usize,
    end: usize,
    message: impl Into<String>,
    label: Option<&str>,
    help: Option<String>,
) -> ParseError {
    ParseError {
        message: message.into(),
        span: Span::new(start, end),
        label: label.map(str::to_owned),
        help,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare identifier; its text is the token's source slice.
    Ident,
    /// A quoted, raw or multi-line string, already unescaped (shared: see
    /// [`Lexer::string_value`]).
    Str(Str),
    /// An integer or decimal number.
    Num(Value),
    /// `#true`, `#false`, `#null`, `#inf`, `#-inf`, `#nan`.
    Keyword(Value),
    /// A token with clear boundaries whose error has already been reported
    /// (bad number, keyword used as identifier, unterminated string...). The
    /// parser treats it as a value that is dropped, so parsing goes on.
    Invalid,
    /// An unexpected character; its error has already been reported. The
    /// parser skips to the next node boundary.
    Junk,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Semi,
    Eq,
    SlashDash,
    /// A newline, or a single-line comment together with its newline.
    Newline,
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Tok,
    pub start: usize,
    pub end: usize,
    /// Whitespace, a block comment or a line continuation came right before.
    pub space_before: bool,
    /// Number of errors recorded before this token was lexed: the parser may
    /// truncate to it to replace the token's own errors with a better one.
    pub err_mark: usize,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    pub pos: usize,
    pub errors: Vec<ParseError>,
    /// While set (during error recovery), errors are not recorded: the text
    /// being skipped is already known to be wrong.
    pub quiet: bool,
    /// An unterminated string or comment swallowed the rest of the input;
    /// "missing `}`" errors at the end would only repeat that mistake.
    pub ran_to_eof: bool,
    /// Start offsets of strings left unterminated at a line end that
    /// contained a `}` (likely meant to close a block), one entry per `}`.
    pub swallowed_braces: Vec<usize>,
    /// How many `{` such strings contained: each was probably meant to open
    /// a block, so a later `}` with no block open is not a new mistake.
    pub swallowed_opens: usize,
    /// For a number of raw-string hashes: a position after which there is
    /// no closing `"""` with that many hashes.
    no_closer: HashMap<usize, usize>,
    /// Spans of comments (a line comment without its newline) and, pushed
    /// by the parser, of slash-dashed items: what `bbc fmt` must keep
    /// although the tree leaves it out. Not in source order.
    pub trivia: Vec<Span>,
    /// The long string values met so far, one allocation per distinct text.
    interned: HashSet<Arc<str>, foldhash::fast::FixedState>,
}

/// Strings at least this long are interned: a config repeats a few long
/// texts (issue 12: a dozen ~600-character warning patterns in 6,000
/// steps), and one shared copy each spares allocating, copying and
/// freeing megabytes. Shorter ones are cheaper to copy than to look up.
const INTERN_MIN: usize = 48;

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        // A byte order mark is allowed only as the very first code point.
        let pos = if src.starts_with('\u{FEFF}') { 3 } else { 0 };
        Lexer {
            src,
            b: src.as_bytes(),
            pos,
            errors: Vec::new(),
            quiet: false,
            ran_to_eof: false,
            swallowed_braces: Vec::new(),
            swallowed_opens: 0,
            no_closer: HashMap::new(),
            trivia: Vec::new(),
            interned: HashSet::default(),
        }
    }

    /// The value of a string token: an owned copy of a short text, the
    /// shared one for a long text met before.
    fn string_value(&mut self, s: &str) -> Str {
        if s.len() < INTERN_MIN {
            return Str::from(s);
        }
        if let Some(shared) = self.interned.get(s) {
            return Str::Shared(Arc::clone(shared));
        }
        let shared: Arc<str> = Arc::from(s);
        self.interned.insert(Arc::clone(&shared));
        Str::Shared(shared)
    }

    /// `src[start..end]`, or "" if that is not a valid range. Positions
    /// are char boundaries by construction; this keeps a slip from panicking.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or("")
    }

    fn byte(&self, i: usize) -> u8 {
        // 0 can never be mistaken for the ASCII delimiters compared against.
        self.b.get(i).copied().unwrap_or(0)
    }

    fn char_at(&self, i: usize) -> Option<char> {
        self.src.get(i..).and_then(|s| s.chars().next())
    }

    fn char_len_at(&self, i: usize) -> usize {
        self.char_at(i).map_or(1, char::len_utf8)
    }

    fn push(&mut self, e: ParseError) {
        if !self.quiet {
            self.errors.push(e);
        }
    }

    /// Reports the run of disallowed code points starting at `i` as one
    /// error and returns the index after it.
    fn disallowed_run(&mut self, i: usize) -> usize {
        let mut j = i;
        let mut count = 0;
        loop {
            let n = disallowed_len(self.b, j);
            if n == 0 {
                break;
            }
            j += n;
            count += 1;
        }
        if j == i {
            // Callers only come here on a disallowed char; never loop forever.
            return i + self.char_len_at(i);
        }
        let first = self.char_at(i).unwrap_or('\0');
        let what = describe_disallowed(first);
        let message = if count == 1 {
            format!("disallowed character U+{:04X} ({what})", first as u32)
        } else {
            format!(
                "{count} disallowed characters, starting with U+{:04X} ({what})",
                first as u32
            )
        };
        let help = if first == '\u{FEFF}' {
            "a byte order mark may only appear at the very start of the file; remove it".to_owned()
        } else {
            format!(
                "remove it; inside a quoted string it can be written as \\u{{{:X}}}",
                first as u32
            )
        };
        self.push(error(
            i,
            j,
            message,
            Some("not allowed in a KDL document"),
            Some(help),
        ));
        j
    }

    pub fn next_token(&mut self) -> Token {
        let before = self.pos;
        self.skip_space();
        let space_before = self.pos > before;
        let start = self.pos;
        let err_mark = self.errors.len();
        let kind = self.lex();
        Token {
            kind,
            start,
            end: self.pos,
            space_before,
            err_mark,
        }
    }

    /// Skips whitespace, block comments and line continuations.
    fn skip_space(&mut self) {
        loop {
            let Some(&c) = self.b.get(self.pos) else {
                return;
            };
            match c {
                b' ' | b'\t' => self.pos += 1,
                b'/' if self.byte(self.pos + 1) == b'*' => self.block_comment(),
                b'\\' => self.line_continuation(),
                _ if CLASS[c as usize] & HI != 0 => {
                    let n = space_len(self.b, self.pos);
                    if n == 0 {
                        return;
                    }
                    self.pos += n;
                }
                _ => return,
            }
        }
    }

    /// `\` followed by optional whitespace and then a newline, a single-line
    /// comment or the end of input.
    fn line_continuation(&mut self) {
        let start = self.pos;
        self.pos += 1;
        loop {
            let n = space_len(self.b, self.pos);
            if n > 0 {
                self.pos += n;
            } else if self.byte(self.pos) == b'/' && self.byte(self.pos + 1) == b'*' {
                self.block_comment();
            } else {
                break;
            }
        }
        if self.pos >= self.b.len() {
            return;
        }
        if self.byte(self.pos) == b'/' && self.byte(self.pos + 1) == b'/' {
            self.line_comment();
            return;
        }
        let n = newline_len(self.b, self.pos);
        if n > 0 {
            self.pos += n;
            return;
        }
        // Not a line continuation. Report it and treat the backslash as a
        // separator, so what follows parses normally (one error, no cascade).
        self.push(error(
            start,
            start + 1,
            "unexpected `\\`: a line continuation must be followed by a newline",
            Some("only whitespace or a comment may follow this on its line"),
            Some(
                "to use a backslash in a value, write a quoted string (\"a\\\\b\") \
                 or a raw string (#\"a\\b\"#)"
                    .to_owned(),
            ),
        ));
    }

    /// `/* ... */`, nesting allowed.
    ///
    /// Comments are checked for disallowed code points too: the grammar
    /// alone would let a comment hold any character, but the spec's text
    /// forbids them "anywhere in the document", and invisible bidi controls
    /// are most dangerous precisely in comments ("Trojan Source").
    fn block_comment(&mut self) {
        let start = self.pos;
        self.pos += 2;
        let mut depth = 1usize;
        let len = self.b.len();
        loop {
            while self.pos < len && CLASS[self.b[self.pos] as usize] & (STAR_SLASH | CTRL | HI) == 0
            {
                self.pos += 1;
            }
            if self.pos >= len {
                self.push(error(
                    start,
                    start + 2,
                    "unterminated block comment",
                    Some("comment starts here"),
                    Some(
                        "close it with `*/`; block comments nest, so each `/*` needs its own `*/`"
                            .to_owned(),
                    ),
                ));
                self.ran_to_eof = true;
                self.trivia.push(Span::new(start, self.pos));
                return;
            }
            let c = self.b[self.pos];
            if c == b'*' && self.byte(self.pos + 1) == b'/' {
                self.pos += 2;
                depth -= 1;
                if depth == 0 {
                    self.trivia.push(Span::new(start, self.pos));
                    return;
                }
            } else if c == b'/' && self.byte(self.pos + 1) == b'*' {
                self.pos += 2;
                depth += 1;
            } else if disallowed_len(self.b, self.pos) > 0 {
                self.pos = self.disallowed_run(self.pos);
            } else {
                self.pos += 1;
            }
        }
    }

    /// `//` up to and including the next newline (or the end of input).
    fn line_comment(&mut self) {
        let start = self.pos;
        self.pos += 2;
        let len = self.b.len();
        loop {
            while self.pos < len && CLASS[self.b[self.pos] as usize] & (NL | CTRL | HI) == 0 {
                self.pos += 1;
            }
            if self.pos >= len {
                self.trivia.push(Span::new(start, self.pos));
                return;
            }
            let n = newline_len(self.b, self.pos);
            if n > 0 {
                self.trivia.push(Span::new(start, self.pos));
                self.pos += n;
                return;
            }
            if disallowed_len(self.b, self.pos) > 0 {
                self.pos = self.disallowed_run(self.pos);
            } else {
                self.pos += 1;
            }
        }
    }

    fn lex(&mut self) -> Tok {
        let start = self.pos;
        let Some(&c) = self.b.get(start) else {
            return Tok::Eof;
        };
        let single = |lx: &mut Self, t: Tok| {
            lx.pos += 1;
            t
        };
        match c {
            b'{' => single(self, Tok::LBrace),
            b'}' => single(self, Tok::RBrace),
            b'(' => single(self, Tok::LParen),
            b')' => single(self, Tok::RParen),
            b';' => single(self, Tok::Semi),
            b'=' => single(self, Tok::Eq),
            b'"' => self.quoted(),
            b'#' => self.hash(),
            b'/' => match self.byte(start + 1) {
                b'/' => {
                    self.line_comment();
                    Tok::Newline
                }
                b'-' => {
                    self.pos += 2;
                    Tok::SlashDash
                }
                _ => {
                    self.pos += 1;
                    self.push(error(
                        start,
                        start + 1,
                        "unexpected `/`",
                        Some("not allowed here"),
                        Some(
                            "comments start with `//` or `/*`, and `/-` comments out an item; \
                             to use `/` in a value, quote it"
                                .to_owned(),
                        ),
                    ));
                    Tok::Junk
                }
            },
            b'[' | b']' => {
                self.pos += 1;
                self.push(error(
                    start,
                    start + 1,
                    format!("unexpected `{}`", c as char),
                    Some("not allowed here"),
                    Some(
                        "KDL has no arrays: give a node several arguments (`node 1 2 3`) \
                         or child nodes instead; to use brackets in a value, quote it"
                            .to_owned(),
                    ),
                ));
                Tok::Junk
            }
            b'\\' => {
                // `skip_space` consumed every backslash; kept for safety.
                self.pos += 1;
                Tok::Junk
            }
            _ => {
                let n = newline_len(self.b, start);
                if n > 0 {
                    self.pos += n;
                    Tok::Newline
                } else {
                    self.word()
                }
            }
        }
    }

    /// Scans a run of identifier characters from `self.pos` (disallowed code
    /// points are reported and included, so one bad character does not split
    /// a word into several errors). Returns whether any was disallowed.
    fn scan_word(&mut self) -> bool {
        let len = self.b.len();
        let mut bad = false;
        loop {
            while self.pos < len
                && CLASS[self.b[self.pos] as usize] & (WS | NL | PUNCT | CTRL | HI) == 0
            {
                self.pos += 1;
            }
            if self.pos >= len {
                return bad;
            }
            let c = self.b[self.pos];
            if CLASS[c as usize] & CTRL != 0 {
                self.pos = self.disallowed_run(self.pos);
                bad = true;
            } else if CLASS[c as usize] & HI != 0 {
                if space_len(self.b, self.pos) > 0 || newline_len(self.b, self.pos) > 0 {
                    return bad;
                }
                if disallowed_len(self.b, self.pos) > 0 {
                    self.pos = self.disallowed_run(self.pos);
                    bad = true;
                } else {
                    // Ordinary non-ASCII character: the loop above skips its
                    // continuation bytes.
                    self.pos += 1;
                }
            } else {
                return bad;
            }
        }
    }

    /// A bare identifier or a number.
    fn word(&mut self) -> Tok {
        let start = self.pos;
        let bad = self.scan_word();
        if self.pos == start {
            // Cannot happen (every delimiter is handled by `lex`), but never
            // return an empty token: that would stall the parser.
            let n = self.char_len_at(start);
            self.pos = start + n;
            self.push(error(start, start + n, "unexpected character", None, None));
            return Tok::Junk;
        }
        if bad {
            return Tok::Invalid;
        }
        let end = self.pos;
        let text = self.slice(start, end);
        let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
        let first = unsigned.as_bytes().first().copied().unwrap_or(0);
        if first.is_ascii_digit() {
            return self.number(start, end);
        }
        if first == b'.' && unsigned.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
            self.push(error(
                start,
                end,
                format!("invalid number `{text}`: a number needs a digit before the decimal point"),
                Some("invalid number"),
                Some(format!(
                    "write `{}0{}` for a number, or quote it (\"{text}\") for a string",
                    text.get(..text.len() - unsigned.len()).unwrap_or(""),
                    unsigned
                )),
            ));
            return Tok::Invalid;
        }
        let help = match text {
            "true" | "false" => Some("KDL 2 writes booleans as #true / #false"),
            "null" => Some("KDL 2 writes null as #null"),
            "inf" | "-inf" | "nan" => Some("KDL 2 writes these numbers as #inf, #-inf and #nan"),
            _ => None,
        };
        if let Some(help) = help {
            self.push(error(
                start,
                end,
                format!("`{text}` is a keyword, not an identifier"),
                Some("bare keyword"),
                Some(format!(
                    "{help}; to mean the text itself, quote it: \"{text}\""
                )),
            ));
            return Tok::Invalid;
        }
        Tok::Ident
    }

    /// `#true`-style keywords and `#"raw"#` strings.
    fn hash(&mut self) -> Tok {
        let start = self.pos;
        let mut q = start;
        while self.byte(q) == b'#' {
            q += 1;
        }
        let hashes = q - start;
        if self.byte(q) == b'"' {
            return self.raw(start, hashes);
        }
        self.pos = q;
        let bad = self.scan_word();
        let end = self.pos;
        let word = self.slice(q, end);
        if hashes == 1 && !bad {
            let v = match word {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                "null" => Some(Value::Null),
                "inf" => Some(Value::Float(f64::INFINITY)),
                "-inf" => Some(Value::Float(f64::NEG_INFINITY)),
                "nan" => Some(Value::Float(f64::NAN)),
                _ => None,
            };
            if let Some(v) = v {
                return Tok::Keyword(v);
            }
        }
        if word.is_empty() {
            self.push(error(
                start,
                q,
                format!("unexpected `{}`", self.slice(start, q)),
                Some("not allowed here"),
                Some(
                    "`#` starts a keyword such as #true or a raw string such as #\"text\"#; \
                      to use `#` in a value, quote it; comments are written // or /* */"
                        .to_owned(),
                ),
            ));
            return Tok::Junk;
        }
        if hashes > 1 {
            self.push(error(
                start,
                end,
                format!(
                    "expected `\"` after `{}` to start a raw string",
                    self.slice(start, q)
                ),
                Some("not a raw string or keyword"),
                None,
            ));
        } else {
            self.push(error(
                start,
                end,
                format!("unknown keyword `{}`", self.slice(start, end)),
                Some("not a keyword"),
                Some(
                    "the keywords are #true, #false, #null, #inf, #-inf and #nan; \
                      to use this text as a string, quote it"
                        .to_owned(),
                ),
            ));
        }
        Tok::Invalid
    }
}
