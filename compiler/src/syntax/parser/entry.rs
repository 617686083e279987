//! Entries: arguments and properties, their values and type annotations,
//! and the mistakes of entries glued together or written after a block.

use super::*;

impl Parser<'_> {
    pub(super) fn entry_after_block(&mut self) {
        let (s, e) = (self.tok.start, self.tok.end);
        self.err(
            s,
            e,
            "unexpected entry after the children block",
            "the node ends with its children block",
            Some(
                "start a new node on a new line (or after `;`), or move arguments and \
                 properties before the `{`"
                    .to_owned(),
            ),
        );
        self.recover();
    }

    /// The lookahead entry token touches the previous token with no
    /// whitespace between. Reports it; returns true when it also consumed
    /// the offending text (otherwise the entry is still to be parsed).
    pub(super) fn glued(&mut self, node: &mut Pending) -> bool {
        let t_start = self.tok.start;
        let first_byte = self.src.as_bytes().get(t_start).copied().unwrap_or(0);
        let stringy = matches!(self.tok.kind, Tok::Str(_) | Tok::Invalid)
            && matches!(first_byte, b'"' | b'#');
        if self.prev_bare && stringy && self.text(self.prev_start, self.prev_end) == "r" {
            // KDL 1's r"..." / r#"..."#: one error for the whole thing.
            let r_start = self.prev_start;
            self.lx.errors.truncate(self.tok.err_mark);
            let t = self.bump();
            self.err(
                r_start,
                t.end,
                "KDL 1 raw string syntax",
                "`r\"...\"` is KDL 1",
                Some("KDL 2 writes raw strings as #\"...\"#, without the `r`".to_owned()),
            );
            // The value KDL 1 meant: the text between the quotes, as is.
            let raw = match t.kind {
                Tok::Str(_) if self.src.as_bytes().get(t.start) == Some(&b'"') => {
                    Some(Str::from(self.text(t.start + 1, t.end.saturating_sub(1))))
                }
                Tok::Str(s) => Some(s),
                _ => None,
            };
            let last = self
                .entry_buf
                .last_mut()
                .filter(|e| e.name.is_none() && e.value_span.start as usize == r_start);
            if let (Some(s), Some(last)) = (raw, last) {
                last.value = Value::String(s);
                last.value_span = Span::new(t.start, t.end);
                last.span.end = t.end as u32;
                node.end = t.end;
            }
            return true;
        }
        let has_errors = self.lx.errors.len() > self.tok.err_mark;
        let odd = matches!(self.tok.kind, Tok::Junk | Tok::LParen | Tok::RParen)
            || has_errors
            || (matches!(self.tok.kind, Tok::Invalid) && first_byte == b'#');
        if self.prev_bare && odd {
            // `foo#bar`, `foo(bar)`, `foo[1]`, `foo"bar`...: the user meant
            // one identifier with a character that identifiers cannot hold.
            self.lx.errors.truncate(self.tok.err_mark);
            let c = self
                .src
                .get(t_start..)
                .and_then(|s| s.chars().next())
                .unwrap_or('?');
            let b = self.src.as_bytes();
            let mut end = self.prev_start;
            while end < b.len()
                && space_len(b, end) == 0
                && newline_len(b, end) == 0
                && !matches!(b[end], b';' | b'{' | b'}')
            {
                end += 1;
            }
            // Stay on a char boundary.
            while !self.src.is_char_boundary(end) {
                end += 1;
            }
            let whole = self.text(self.prev_start, end);
            self.err(
                t_start,
                t_start + c.len_utf8(),
                format!("`{c}` cannot be used in a bare identifier"),
                "not allowed in an identifier",
                Some(format!("quote the whole string: {}", quote(whole))),
            );
            self.lx.quiet = true;
            self.bump();
            while !self.tok.space_before && !is_boundary(&self.tok.kind) {
                self.bump();
            }
            self.lx.quiet = false;
            self.relex();
            return true;
        }
        let n = self
            .src
            .get(t_start..)
            .and_then(|s| s.chars().next())
            .map_or(0, char::len_utf8);
        self.err(
            t_start,
            t_start + n,
            "missing whitespace between entries",
            "add a space before this",
            None,
        );
        false
    }

    /// An argument or property (lookahead is an entry start). `None` when it
    /// was invalid (already reported).
    pub(super) fn entry(&mut self) -> Option<Entry> {
        let start = self.tok.start;
        let mut ty = None;
        let mut had_type = false;
        if matches!(self.tok.kind, Tok::LParen) {
            had_type = true;
            match self.type_annotation() {
                Ok(t) => ty = t,
                Err(()) => {
                    self.recover();
                    return None;
                }
            }
            if !is_value(&self.tok.kind) {
                self.missing_typed_value(start);
                return None;
            }
        }
        let first = self.bump();
        if matches!(self.tok.kind, Tok::Eq) {
            return self.property(start, had_type, first);
        }
        let (vs, ve) = (first.start, first.end);
        let value = self.value(first)?;
        Some(Entry {
            name: None,
            ty,
            value,
            value_span: Span::new(vs, ve),
            span: Span::new(start, ve),
        })
    }

    /// After `(type)`, something other than a value follows.
    pub(super) fn missing_typed_value(&mut self, type_start: usize) {
        if matches!(self.tok.kind, Tok::SlashDash) {
            let (s, e) = (self.tok.start, self.tok.end);
            self.err(
                s,
                e,
                "`/-` cannot come between a type annotation and its value",
                "misplaced slashdash",
                Some("put `/-` before the type annotation: `/-(type)value`".to_owned()),
            );
        } else if !matches!(self.tok.kind, Tok::Junk) {
            self.err(
                type_start,
                self.prev_end,
                "a type annotation must be followed by a value",
                "type annotation without a value",
                None,
            );
        }
        self.recover();
    }

    pub(super) fn property(
        &mut self,
        start: usize,
        had_type: bool,
        key_tok: Token,
    ) -> Option<Entry> {
        let key_text = self.text(key_tok.start, key_tok.end);
        let mut start = start;
        if had_type {
            self.err(
                start,
                key_tok.start,
                "a type annotation cannot come before a property name",
                "type annotation on the name",
                Some(format!(
                    "put it on the value instead: {key_text}=(type)value"
                )),
            );
            start = key_tok.start;
        }
        if matches!(key_tok.kind, Tok::Num(_) | Tok::Keyword(_)) {
            self.err(
                key_tok.start,
                key_tok.end,
                "a property name must be a string",
                "not a string",
                Some(format!("quote it: {}", quote(key_text))),
            );
        }
        let key = self.ident(key_tok);
        let eq = self.bump();
        let vstart = self.tok.start;
        let mut ty = None;
        if matches!(self.tok.kind, Tok::LParen) {
            match self.type_annotation() {
                Ok(t) => ty = t,
                Err(()) => {
                    self.recover();
                    return None;
                }
            }
            if !is_value(&self.tok.kind) {
                self.missing_typed_value(vstart);
                return None;
            }
        } else if !is_value(&self.tok.kind) {
            match self.tok.kind {
                Tok::SlashDash => {
                    let (s, e) = (self.tok.start, self.tok.end);
                    self.err(
                        s,
                        e,
                        "a property value cannot be commented out on its own",
                        "slashdash before a property value",
                        Some(format!(
                            "comment out the whole property instead: /-{}=...",
                            key.value
                        )),
                    );
                }
                Tok::Junk => {}
                _ => self.err(
                    eq.start,
                    eq.end,
                    "`=` must be followed by a value",
                    &format!("property `{}` has no value", key.value),
                    Some("write a value right after `=`, e.g. key=\"value\"".to_owned()),
                ),
            }
            self.recover();
            return None;
        }
        let v = self.bump();
        let (vs, ve) = (v.start, v.end);
        let value = self.value(v)?;
        Some(Entry {
            name: Some(key),
            ty,
            value,
            value_span: Span::new(vs, ve),
            span: Span::new(start, ve),
        })
    }

    pub(super) fn value(&self, t: Token) -> Option<Value> {
        match t.kind {
            Tok::Str(s) => Some(Value::String(s)),
            Tok::Ident => Some(Value::String(Str::from(self.text(t.start, t.end)))),
            Tok::Num(v) | Tok::Keyword(v) => Some(v),
            _ => None,
        }
    }

    /// `(` string `)`. `Ok(None)`: the annotation was invalid but complete
    /// (reported), parsing goes on after it. `Err`: the caller must recover.
    pub(super) fn type_annotation(&mut self) -> Result<Option<Ident>, ()> {
        let open = self.bump();
        let (ts, te) = (self.tok.start, self.tok.end);
        let name = match self.tok.kind {
            Tok::Ident | Tok::Invalid | Tok::Str(_) => {
                let t = self.bump();
                Some(self.ident(t))
            }
            Tok::Num(_) | Tok::Keyword(_) => {
                self.bump();
                let text = self.text(ts, te);
                self.err(
                    ts,
                    te,
                    "a type annotation must be a string",
                    "not a string",
                    Some(format!("quote it: ({})", quote(text))),
                );
                None
            }
            Tok::RParen => {
                let close = self.bump();
                self.err(
                    open.start,
                    close.end,
                    "empty type annotation",
                    "no type name between the parentheses",
                    Some("write a type name, e.g. (u8), or remove the parentheses".to_owned()),
                );
                return Ok(None);
            }
            Tok::SlashDash => {
                self.err(
                    ts,
                    te,
                    "`/-` cannot be used inside a type annotation",
                    "misplaced slashdash",
                    Some("put `/-` before the whole item, e.g. `/-(type)value`".to_owned()),
                );
                return Err(());
            }
            Tok::Junk => return Err(()),
            _ => {
                self.err(
                    open.start,
                    open.end,
                    "expected a type name after `(`",
                    "type annotation opened here",
                    Some(
                        "a type annotation is written `(type)` right before a value or node name"
                            .to_owned(),
                    ),
                );
                return Err(());
            }
        };
        if matches!(self.tok.kind, Tok::RParen) {
            self.bump();
            return Ok(name);
        }
        if is_value(&self.tok.kind) {
            // `(my type)`: a second word where `)` should be.
            let (s, e) = (self.tok.start, self.tok.end);
            self.err(
                s,
                e,
                "expected `)` after the type name",
                "a type annotation holds a single string",
                Some("quote the type name if it contains spaces: (\"my type\")".to_owned()),
            );
        } else if !matches!(self.tok.kind, Tok::Junk) {
            self.err(
                open.start,
                open.end,
                "missing `)` to close the type annotation",
                "type annotation opened here",
                None,
            );
        }
        Err(())
    }
}
