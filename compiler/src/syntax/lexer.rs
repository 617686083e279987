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

use super::ast::{ParseError, Span, Value};
use std::collections::HashMap;

/// `' '` and `'\t'`.
const WS: u8 = 1;
/// ASCII newlines: LF, CR, VT, FF.
const NL: u8 = 2;
/// ASCII characters that can never be part of a bare identifier.
const PUNCT: u8 = 4;
/// Disallowed ASCII control characters (and DEL).
const CTRL: u8 = 8;
/// Lead bytes of the non-ASCII characters that need a closer look.
const HI: u8 = 16;
/// `"` and `\`: where a quoted string scan must stop.
const QB: u8 = 32;
/// `*` and `/`: where a block-comment scan must stop.
const STAR_SLASH: u8 = 64;

static CLASS: [u8; 256] = build_class();

const fn build_class() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = CTRL;
        i += 1;
    }
    t[b'\t' as usize] = WS;
    t[b' ' as usize] = WS;
    t[b'\n' as usize] = NL;
    t[b'\r' as usize] = NL;
    t[0x0B] = NL;
    t[0x0C] = NL;
    t[0x7F] = CTRL;
    let punct = b"(){}[]/\\\"#;=";
    let mut j = 0;
    while j < punct.len() {
        t[punct[j] as usize] |= PUNCT;
        j += 1;
    }
    t[b'"' as usize] |= QB;
    t[b'\\' as usize] |= QB;
    t[b'*' as usize] |= STAR_SLASH;
    t[b'/' as usize] |= STAR_SLASH;
    t[0xC2] = HI;
    t[0xE1] = HI;
    t[0xE2] = HI;
    t[0xE3] = HI;
    t[0xEF] = HI;
    t
}

/// Length of the newline sequence at `i` (CRLF counts as one), or 0.
pub(crate) fn newline_len(b: &[u8], i: usize) -> usize {
    match b.get(i..).unwrap_or(&[]) {
        [b'\r', b'\n', ..] => 2,
        [b'\n' | b'\r' | 0x0B | 0x0C, ..] => 1,
        [0xC2, 0x85, ..] => 2,              // NEL
        [0xE2, 0x80, 0xA8 | 0xA9, ..] => 3, // LS, PS
        _ => 0,
    }
}

/// Length of the non-newline whitespace character at `i`, or 0.
pub(crate) fn space_len(b: &[u8], i: usize) -> usize {
    match b.get(i..).unwrap_or(&[]) {
        [b' ' | b'\t', ..] => 1,
        [0xC2, 0xA0, ..] => 2,                     // no-break space
        [0xE1, 0x9A, 0x80, ..] => 3,               // ogham space mark
        [0xE2, 0x80, 0x80..=0x8A | 0xAF, ..] => 3, // U+2000-200A, U+202F
        [0xE2, 0x81, 0x9F, ..] => 3,               // U+205F
        [0xE3, 0x80, 0x80, ..] => 3,               // ideographic space
        _ => 0,
    }
}

/// Length of the disallowed literal code point at `i`, or 0.
pub(crate) fn disallowed_len(b: &[u8], i: usize) -> usize {
    match b.get(i..).unwrap_or(&[]) {
        [c, ..] if CLASS[*c as usize] & CTRL != 0 => 1,
        [0xE2, 0x80, 0x8E | 0x8F | 0xAA..=0xAE, ..] => 3, // LRM RLM, LRE..RLO
        [0xE2, 0x81, 0xA6..=0xA9, ..] => 3,               // LRI..PDI
        [0xEF, 0xBB, 0xBF, ..] => 3,                      // BOM
        _ => 0,
    }
}

/// Whether `c` is KDL whitespace (not counting newlines).
pub(crate) fn is_space_char(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

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
    /// A quoted, raw or multi-line string, already unescaped.
    Str(String),
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
}

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
        }
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

    /// Validates and converts a word that starts like a number.
    fn number(&mut self, start: usize, end: usize) -> Tok {
        let text = self.slice(start, end);
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let radix = match body.as_bytes() {
            [b'0', b'x', ..] => Some((16, "a hexadecimal")),
            [b'0', b'o', ..] => Some((8, "an octal")),
            [b'0', b'b', ..] => Some((2, "a binary")),
            _ => None,
        };
        if let Some((radix, name)) = radix {
            let digits = &body[2..];
            let first_ok = digits.chars().next().is_some_and(|c| c.is_digit(radix));
            let bad = digits
                .char_indices()
                .find(|&(_, c)| !(c == '_' || c.is_digit(radix)));
            if !first_ok || bad.is_some() {
                let label = match (digits.chars().next(), bad) {
                    (None, _) => "no digits after the prefix".to_owned(),
                    (Some('_'), _) => "`_` cannot come right after the prefix".to_owned(),
                    (_, Some((_, c))) => format!("`{c}` is not {name} digit"),
                    _ => format!("not {name} number"),
                };
                self.push(error(
                    start,
                    end,
                    format!(
                        "invalid {} number `{text}`",
                        name.split_once(' ').map_or(name, |x| x.1)
                    ),
                    Some(&label),
                    Some("if this is meant as text, quote it as a string".to_owned()),
                ));
                return Tok::Invalid;
            }
            return self.integer(start, end, negative, digits, radix);
        }
        match decimal_shape(body.as_bytes()) {
            Ok(false) => self.integer(start, end, negative, body, 10),
            Ok(true) => {
                let parsed = if text.contains('_') {
                    text.replace('_', "").parse::<f64>()
                } else {
                    text.parse::<f64>()
                };
                match parsed {
                    Ok(f) => Tok::Num(Value::Float(f)),
                    Err(_) => {
                        self.push(error(
                            start,
                            end,
                            format!("invalid number `{text}`"),
                            Some("invalid number"),
                            None,
                        ));
                        Tok::Invalid
                    }
                }
            }
            Err(label) => {
                let numeric = body.bytes().all(|b| {
                    b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'e' | b'E' | b'+' | b'-')
                });
                if numeric {
                    self.push(error(
                        start,
                        end,
                        format!("invalid number `{text}`"),
                        Some(label),
                        None,
                    ));
                } else {
                    self.push(error(
                        start,
                        end,
                        "identifier cannot start with a digit; quote it as a string",
                        Some("neither a number nor an identifier"),
                        Some(format!("write \"{text}\"")),
                    ));
                }
                Tok::Invalid
            }
        }
    }

    fn integer(
        &mut self,
        start: usize,
        end: usize,
        negative: bool,
        digits: &str,
        radix: u32,
    ) -> Tok {
        let mut mag: u128 = 0;
        let mut overflow = false;
        for c in digits.chars() {
            let Some(d) = c.to_digit(radix) else { continue };
            match mag
                .checked_mul(radix as u128)
                .and_then(|m| m.checked_add(d as u128))
            {
                Some(m) => mag = m,
                None => {
                    overflow = true;
                    break;
                }
            }
        }
        let limit = if negative {
            1u128 << 127
        } else {
            i128::MAX as u128
        };
        if overflow || mag > limit {
            self.push(error(
                start,
                end,
                "integer too large",
                Some("does not fit in a 128-bit signed integer"),
                Some(
                    "write it as a quoted string if it is an identifier rather than a quantity"
                        .to_owned(),
                ),
            ));
            return Tok::Invalid;
        }
        // `mag as i128` wraps 2^127 to i128::MIN, whose negation is itself:
        // exactly the value wanted for the most negative integer.
        let v = if negative {
            (mag as i128).wrapping_neg()
        } else {
            mag as i128
        };
        Tok::Num(Value::Integer(v))
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

    /// A `"..."` string (or a `"""` multi-line one).
    fn quoted(&mut self) -> Tok {
        let start = self.pos;
        if self.byte(start + 1) == b'"' && self.byte(start + 2) == b'"' {
            return self.multiline(start, 0);
        }
        self.pos += 1;
        let len = self.b.len();
        let mut out: Option<String> = None;
        let mut seg = self.pos;
        loop {
            while self.pos < len && CLASS[self.b[self.pos] as usize] & (QB | NL | CTRL | HI) == 0 {
                self.pos += 1;
            }
            if self.pos >= len {
                self.unterminated(start, true);
                return Tok::Invalid;
            }
            let c = self.b[self.pos];
            if c == b'"' {
                let value = match out {
                    Some(mut s) => {
                        s.push_str(self.slice(seg, self.pos));
                        s
                    }
                    None => self.slice(seg, self.pos).to_owned(),
                };
                self.pos += 1;
                return Tok::Str(value);
            }
            if c == b'\\' {
                let mut s = out.take().unwrap_or_default();
                s.push_str(self.slice(seg, self.pos));
                self.escape(&mut s, false);
                out = Some(s);
                seg = self.pos;
                continue;
            }
            if newline_len(self.b, self.pos) > 0 {
                if let Some(end) = self.string_continues(self.pos, 0) {
                    self.spans_lines(start, start + 1, 0);
                    self.pos = end;
                    return Tok::Invalid;
                }
                // Ending the string at the line end (rather than running on
                // to a later quote) keeps a forgotten `"` to one error.
                self.unterminated(start, false);
                return Tok::Invalid;
            }
            if disallowed_len(self.b, self.pos) > 0 {
                out.get_or_insert_with(String::new)
                    .push_str(self.slice(seg, self.pos));
                self.pos = self.disallowed_run(self.pos);
                seg = self.pos;
                continue;
            }
            self.pos += 1;
        }
    }

    /// A single-line string reached the newline at `nl`. If the next lines
    /// look like the rest of a string written across lines (lines without
    /// any `"`, then a line with an odd number of them), returns the position
    /// after its closing quote, so that the whole attempt is one error
    /// instead of one per stray quote. A forgotten closing quote, by
    /// contrast, is usually followed by lines with balanced quotes.
    fn string_continues(&self, nl: usize, hashes: usize) -> Option<usize> {
        let b = self.b;
        let mut i = nl;
        loop {
            let n = newline_len(b, i);
            if n == 0 {
                return None;
            }
            i += n;
            let mut quotes = 0;
            let mut close = None;
            while i < b.len() && newline_len(b, i) == 0 {
                match b[i] {
                    b'\\' if hashes == 0 => {
                        i += 2;
                        continue;
                    }
                    b'"' => {
                        quotes += 1;
                        if close.is_none() && self.closes(i + 1, hashes) {
                            close = Some(i + 1 + hashes);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if quotes > 0 {
                return if quotes % 2 == 1 { close } else { None };
            }
            if i >= b.len() {
                return None;
            }
        }
    }

    fn spans_lines(&mut self, start: usize, open_end: usize, hashes: usize) {
        let h = "#".repeat(hashes);
        self.push(error(
            start,
            open_end,
            "a quoted string cannot span several lines",
            Some("string starts here"),
            Some(format!(
                "for text on several lines use a multi-line string: {h}\"\"\" and a newline, \
                 the lines, then \"\"\"{h} on its own line (or write \\n in a one-line string)"
            )),
        ));
    }

    /// Remembers the `}` characters inside a string left open at its line
    /// end (from `start` to `self.pos`).
    fn note_swallowed_braces(&mut self, start: usize) {
        if self.quiet {
            return;
        }
        let body = self.src.get(start..self.pos).unwrap_or("");
        let braces = body.bytes().filter(|&b| b == b'}').count();
        self.swallowed_opens += body.bytes().filter(|&b| b == b'{').count();
        self.swallowed_braces
            .extend(std::iter::repeat_n(start, braces));
    }

    fn unterminated(&mut self, start: usize, at_eof: bool) {
        if at_eof {
            self.ran_to_eof = true;
        } else {
            self.note_swallowed_braces(start);
        }
        self.push(error(
            start,
            start + 1,
            "unterminated string",
            Some("string starts here"),
            Some(if at_eof {
                "add the closing `\"`".to_owned()
            } else {
                "add the closing `\"` before the end of the line; a string cannot contain a \
                 literal newline (write `\\n`, or use a multi-line `\"\"\"` string)"
                    .to_owned()
            }),
        ));
    }

    /// Handles the escape at `self.pos` (a `\`). Resolved characters are
    /// pushed to `out`; with `verbatim`, valid escapes other than whitespace
    /// escapes are copied as written (multi-line strings resolve them after
    /// dedenting). Invalid escapes are reported and dropped.
    fn escape(&mut self, out: &mut String, verbatim: bool) {
        let start = self.pos;
        let c = self.byte(start + 1);
        let simple = match c {
            b'n' => Some('\n'),
            b'r' => Some('\r'),
            b't' => Some('\t'),
            b'\\' => Some('\\'),
            b'"' => Some('"'),
            b'b' => Some('\u{8}'),
            b'f' => Some('\u{C}'),
            b's' => Some(' '),
            _ => None,
        };
        if let Some(ch) = simple {
            self.pos += 2;
            if verbatim {
                out.push_str(self.slice(start, start + 2));
            } else {
                out.push(ch);
            }
            return;
        }
        if c == b'u' {
            self.unicode_escape(out, verbatim);
            return;
        }
        // Whitespace escape: `\` followed by whitespace and newlines, all
        // discarded.
        let mut j = start + 1;
        loop {
            let n = space_len(self.b, j).max(newline_len(self.b, j));
            if n == 0 {
                break;
            }
            j += n;
        }
        if j > start + 1 {
            self.pos = j;
            return;
        }
        if start + 1 >= self.b.len() {
            // `\` right before the end of input: the caller reports the
            // unterminated string.
            self.pos = start + 1;
            return;
        }
        let n = self.char_len_at(start + 1);
        let ch = self.char_at(start + 1).unwrap_or('?');
        self.pos = start + 1 + n;
        self.push(error(
            start,
            start + 1 + n,
            format!("invalid escape `\\{}` in string", ch.escape_debug()),
            Some("unknown escape"),
            Some(
                "valid escapes are \\n \\r \\t \\\\ \\\" \\b \\f \\s and \\u{...}; for a literal \
                 backslash write \\\\ or use a raw string such as #\"C:\\dir\"#"
                    .to_owned(),
            ),
        ));
    }

    fn unicode_escape(&mut self, out: &mut String, verbatim: bool) {
        let start = self.pos;
        let mut j = start + 2;
        let help =
            || Some("write \\u{...} with 1 to 6 hexadecimal digits, e.g. \\u{1F600}".to_owned());
        if self.byte(j) != b'{' {
            self.pos = j;
            self.push(error(
                start,
                j,
                "invalid unicode escape: `\\u` must be followed by `{`",
                Some("here"),
                help(),
            ));
            return;
        }
        j += 1;
        let digits_start = j;
        while self.byte(j).is_ascii_hexdigit() {
            j += 1;
        }
        let digits = self.slice(digits_start, j);
        if self.byte(j) != b'}' {
            self.pos = j;
            self.push(error(
                start,
                j,
                "invalid unicode escape: expected hexadecimal digits and a closing `}`",
                Some("unfinished escape"),
                help(),
            ));
            return;
        }
        j += 1;
        self.pos = j;
        let text = self.slice(start, j);
        if digits.is_empty() || digits.len() > 6 {
            self.push(error(
                start,
                j,
                format!("invalid unicode escape `{text}`: it must have 1 to 6 hexadecimal digits"),
                Some("invalid escape"),
                help(),
            ));
            return;
        }
        let code = u32::from_str_radix(digits, 16).unwrap_or(u32::MAX);
        match char::from_u32(code) {
            Some(ch) => {
                if verbatim {
                    out.push_str(text);
                } else {
                    out.push(ch);
                }
            }
            None => {
                let why = if (0xD800..=0xDFFF).contains(&code) {
                    "it is a surrogate code point, which is not a Unicode scalar value"
                } else {
                    "it is above the largest code point, U+10FFFF"
                };
                self.push(error(
                    start,
                    j,
                    format!("invalid unicode escape `{text}`: {why}"),
                    Some("not a Unicode scalar value"),
                    None,
                ));
            }
        }
    }

    /// `#"..."#` with `hashes` hashes (or a `#"""` multi-line raw string).
    fn raw(&mut self, start: usize, hashes: usize) -> Tok {
        let q = start + hashes;
        if self.byte(q + 1) == b'"' && self.byte(q + 2) == b'"' {
            return self.multiline(start, hashes);
        }
        let body = q + 1;
        self.pos = body;
        let len = self.b.len();
        loop {
            while self.pos < len && CLASS[self.b[self.pos] as usize] & (QB | NL | CTRL | HI) == 0 {
                self.pos += 1;
            }
            if self.pos >= len {
                self.raw_unterminated(start, hashes, true);
                return Tok::Invalid;
            }
            let c = self.b[self.pos];
            if c == b'"' {
                let close = self.pos;
                if self.closes(close + 1, hashes) {
                    self.pos = close + 1 + hashes;
                    return Tok::Str(self.slice(body, close).to_owned());
                }
                self.pos += 1;
            } else if newline_len(self.b, self.pos) > 0 {
                if let Some(end) = self.string_continues(self.pos, hashes) {
                    self.spans_lines(start, body, hashes);
                    self.pos = end;
                    return Tok::Invalid;
                }
                self.raw_unterminated(start, hashes, false);
                return Tok::Invalid;
            } else if disallowed_len(self.b, self.pos) > 0 {
                // Raw strings cannot escape these; report, keep scanning.
                self.pos = self.disallowed_run(self.pos);
            } else {
                self.pos += 1;
            }
        }
    }

    /// The position after the first `"""` + `hashes` `#` at or after `from`.
    /// A failed search is remembered, so that many unclosed openers cannot
    /// make the lexer quadratic.
    fn find_closer(&mut self, from: usize, hashes: usize) -> Option<usize> {
        if self.no_closer.get(&hashes).is_some_and(|&p| p <= from) {
            return None;
        }
        let mut i = from;
        while let Some(off) = self
            .b
            .get(i..)
            .and_then(|rest| rest.windows(3).position(|w| w == b"\"\"\""))
        {
            let q = i + off;
            if self.closes(q + 3, hashes) {
                return Some(q + 3 + hashes);
            }
            i = q + 1;
        }
        self.no_closer.insert(hashes, from);
        None
    }

    /// Whether `hashes` `#` characters follow at `i`.
    fn closes(&self, i: usize, hashes: usize) -> bool {
        self.b
            .get(i..i + hashes)
            .is_some_and(|s| s.iter().all(|&b| b == b'#'))
    }

    fn raw_unterminated(&mut self, start: usize, hashes: usize, at_eof: bool) {
        if at_eof {
            self.ran_to_eof = true;
        } else {
            self.note_swallowed_braces(start);
        }
        let closing = format!("\"{}", "#".repeat(hashes));
        self.push(error(
            start,
            start + hashes + 1,
            "unterminated raw string",
            Some("raw string starts here"),
            Some(if at_eof {
                format!("close it with `{closing}`")
            } else {
                format!(
                    "close it with `{closing}` on the same line; a raw string spanning lines \
                     is written {}\"\"\" ... \"\"\"{}",
                    "#".repeat(hashes),
                    "#".repeat(hashes)
                )
            }),
        ));
    }

    /// A multi-line string starting at `start` (`hashes` > 0: raw). The
    /// opening `"""` is at `start + hashes`.
    fn multiline(&mut self, start: usize, hashes: usize) -> Tok {
        let raw = hashes > 0;
        let open_end = start + hashes + 3;
        self.pos = open_end;
        let nl = newline_len(self.b, open_end);
        if nl == 0 {
            self.push(error(
                start,
                open_end,
                "a multi-line string must start with a newline right after `\"\"\"`",
                Some("text follows the opening quotes"),
                Some(
                    "put the text on the following lines, or use a single-line string \"...\""
                        .to_owned(),
                ),
            ));
            // Recover: the user most likely wrote text right after the
            // opening quotes, so end the token at the closing quotes if there
            // are any (then the closing line is not a second error), or else
            // at the end of this line.
            match self.find_closer(open_end, hashes) {
                Some(end) => self.pos = end,
                None => {
                    while self.pos < self.b.len() && newline_len(self.b, self.pos) == 0 {
                        self.pos += 1;
                    }
                }
            }
            return Tok::Invalid;
        }
        self.pos += nl;
        // Pass 1: collect the body with whitespace escapes removed, newlines
        // normalized to LF and other escapes left as written, remembering
        // where each line starts in the source (for dedent errors).
        let mut text = String::new();
        let mut line_starts = vec![self.pos];
        let mut seg = self.pos;
        let len = self.b.len();
        let close;
        loop {
            while self.pos < len && CLASS[self.b[self.pos] as usize] & (QB | NL | CTRL | HI) == 0 {
                self.pos += 1;
            }
            if self.pos >= len {
                self.ran_to_eof = true;
                self.push(error(
                    start,
                    open_end,
                    "unterminated multi-line string",
                    Some("string starts here"),
                    Some(format!(
                        "close it with `\"\"\"{}` on its own line",
                        "#".repeat(hashes)
                    )),
                ));
                return Tok::Invalid;
            }
            let c = self.b[self.pos];
            if c == b'"' {
                if self.b.get(self.pos..self.pos + 3) == Some(b"\"\"\"")
                    && self.closes(self.pos + 3, hashes)
                {
                    text.push_str(self.slice(seg, self.pos));
                    close = self.pos;
                    self.pos += 3 + hashes;
                    break;
                }
                self.pos += 1;
            } else if c == b'\\' {
                if raw {
                    self.pos += 1;
                } else {
                    text.push_str(self.slice(seg, self.pos));
                    self.escape(&mut text, true);
                    seg = self.pos;
                }
            } else {
                let n = newline_len(self.b, self.pos);
                if n > 0 {
                    text.push_str(self.slice(seg, self.pos));
                    text.push('\n');
                    self.pos += n;
                    line_starts.push(self.pos);
                    seg = self.pos;
                } else if disallowed_len(self.b, self.pos) > 0 {
                    text.push_str(self.slice(seg, self.pos));
                    self.pos = self.disallowed_run(self.pos);
                    seg = self.pos;
                } else {
                    self.pos += 1;
                }
            }
        }
        match self.dedent(&text, &line_starts, close) {
            Some(s) if raw => Tok::Str(s),
            Some(s) => Tok::Str(resolve_escapes(&s)),
            None => Tok::Invalid,
        }
    }

    /// Removes the closing line's whitespace prefix from every line.
    fn dedent(&mut self, text: &str, line_starts: &[usize], close: usize) -> Option<String> {
        let (body, last) = match text.rfind('\n') {
            Some(i) => (Some(&text[..i]), &text[i + 1..]),
            None => (None, text),
        };
        if !last.chars().all(is_space_char) {
            self.push(error(
                close,
                close + 3,
                "the closing `\"\"\"` of a multi-line string must be on its own line",
                Some("only whitespace may come before this on its line"),
                Some("move the closing quotes to a new line (a `\\` before the last newline joins the lines)".to_owned()),
            ));
            return None;
        }
        let Some(body) = body else {
            return Some(String::new());
        };
        let prefix = last;
        let mut out = String::with_capacity(body.len());
        let mut ok = true;
        for (i, line) in body.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            if line.chars().all(is_space_char) {
                continue;
            }
            match line.strip_prefix(prefix) {
                Some(rest) => out.push_str(rest),
                None => {
                    if ok {
                        let at = line_starts.get(i).copied().unwrap_or(close);
                        let mut end = at;
                        while space_len(self.b, end) > 0 {
                            end += space_len(self.b, end);
                        }
                        if end == at {
                            end = at + self.char_len_at(at).min(self.b.len().saturating_sub(at));
                        }
                        self.push(error(
                            at,
                            end,
                            "multi-line string line is not indented like its closing `\"\"\"`",
                            Some("this indentation does not start with the closing line's"),
                            Some(format!(
                                "every non-blank line must start with exactly the whitespace before \
                                 the closing quotes ({})",
                                describe_indent(prefix)
                            )),
                        ));
                    }
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// Checks a decimal number (sign already removed) against
/// `integer ('.' integer)? (('e' | 'E') sign? integer)?` where
/// `integer := digit (digit | '_')*`. `Ok(true)` for a float, `Ok(false)`
/// for an integer, `Err` with what is wrong otherwise.
fn decimal_shape(bytes: &[u8]) -> Result<bool, &'static str> {
    let integer = |i: &mut usize| -> bool {
        if !bytes.get(*i).is_some_and(u8::is_ascii_digit) {
            return false;
        }
        while bytes
            .get(*i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
        {
            *i += 1;
        }
        true
    };
    let mut i = 0;
    integer(&mut i);
    let mut float = false;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        float = true;
        if !integer(&mut i) {
            return Err("a decimal point must be followed by a digit");
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        float = true;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !integer(&mut i) {
            return Err("an exponent needs at least one digit");
        }
    }
    if i != bytes.len() {
        return Err("unexpected characters in number");
    }
    Ok(float)
}

/// Resolves the (already validated) escapes left in a dedented multi-line
/// string.
fn resolve_escapes(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{C}'),
            Some('s') => out.push(' '),
            Some('u') => {
                let rest = chars.as_str();
                if let Some(close) = rest.find('}') {
                    let hex = rest.get(1..close).unwrap_or("");
                    if let Some(ch) = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                        out.push(ch);
                    }
                    chars = rest[close + 1..].chars();
                }
            }
            // Pass 1 dropped every invalid escape.
            _ => {}
        }
    }
    out
}

fn describe_indent(prefix: &str) -> String {
    let n = prefix.chars().count();
    if n == 0 {
        return "none".to_owned();
    }
    let plural = |w: &str| {
        if n == 1 {
            format!("1 {w}")
        } else {
            format!("{n} {w}s")
        }
    };
    if prefix.chars().all(|c| c == ' ') {
        plural("space")
    } else if prefix.chars().all(|c| c == '\t') {
        plural("tab")
    } else {
        format!("{n} whitespace characters: {}", prefix.escape_debug())
    }
}

fn describe_disallowed(c: char) -> &'static str {
    match c {
        '\u{FEFF}' => "byte order mark",
        '\u{7F}' => "delete control character",
        '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            "invisible text-direction control"
        }
        _ => "control character",
    }
}
