//! Strings: quoted (with escapes), raw `#"…"#` and multi-line `"""`
//! strings with their dedenting.

use super::*;

impl Lexer<'_> {
    /// A `"..."` string (or a `"""` multi-line one).
    pub(super) fn quoted(&mut self) -> Tok {
        let start = self.pos;
        if self.byte(start + 1) == b'"' && self.byte(start + 2) == b'"' {
            return self.multiline(start, 0);
        }
        self.pos += 1;
        let len = self.b.len();
        let mut out: Option<String> = None;
        let mut seg = self.pos;
        loop {
            self.pos = plain_run_end(self.b, self.pos);
            if self.pos >= len {
                self.unterminated(start, true);
                return Tok::Invalid;
            }
            let c = self.b[self.pos];
            if c == b'"' {
                let value = match out {
                    Some(mut s) => {
                        s.push_str(self.slice(seg, self.pos));
                        self.string_value(&s)
                    }
                    None => self.string_value(self.slice(seg, self.pos)),
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
    pub(super) fn raw(&mut self, start: usize, hashes: usize) -> Tok {
        let q = start + hashes;
        if self.byte(q + 1) == b'"' && self.byte(q + 2) == b'"' {
            return self.multiline(start, hashes);
        }
        let body = q + 1;
        self.pos = body;
        let len = self.b.len();
        loop {
            self.pos = plain_run_end(self.b, self.pos);
            if self.pos >= len {
                self.raw_unterminated(start, hashes, true);
                return Tok::Invalid;
            }
            let c = self.b[self.pos];
            if c == b'"' {
                let close = self.pos;
                if self.closes(close + 1, hashes) {
                    self.pos = close + 1 + hashes;
                    return Tok::Str(self.string_value(self.slice(body, close)));
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
            Some(s) if raw => Tok::Str(self.string_value(&s)),
            Some(s) => Tok::Str(self.string_value(&resolve_escapes(&s))),
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
