//! Node grammar on top of the lexer's tokens.
//!
//! The parser keeps one token of lookahead and never backtracks. Children
//! blocks are handled with an explicit stack instead of recursion, so a
//! pathological input with thousands of `{` cannot overflow the call stack.
//!
//! Error recovery works at two levels:
//! - token errors (bad number, bad escape, bare `true`...) are reported by
//!   the lexer, which still delimits the token; the parser drops the value
//!   and carries on with the next entry;
//! - structural errors (a stray `)`, `[`, `=`...) skip, without reporting
//!   anything more, to the next node boundary: a newline, `;`, `{` or `}`.
//!   Stopping at braces keeps block nesting intact, so a mistake inside a
//!   block never turns into a misleading "unexpected `}`" later.

use super::ast::{Children, Entry, Ident, Node, ParseError, Span, Str, Value};
use super::lexer::{error, newline_len, space_len, Lexer, Tok, Token};

mod entry;

/// How many children blocks may be nested.
pub(crate) const MAX_DEPTH: usize = 256;

/// A node whose entries or children are still being read.
struct Pending {
    ty: Option<Ident>,
    name: Ident,
    entries: Vec<Entry>,
    children: Option<Children>,
    start: usize,
    end: usize,
    /// Commented out with `/-` (or a placeholder after an error): parsed for
    /// syntax errors, then dropped.
    discarded: bool,
    /// A children block (real or slash-dashed) was seen: no more entries.
    after_block: bool,
    /// A real children block was seen: no second one.
    has_block: bool,
    /// Where the `/-` that comments this node out starts.
    slashdash: Option<usize>,
}

impl Pending {
    fn placeholder(at: usize) -> Pending {
        Pending {
            ty: None,
            name: Ident {
                value: String::new(),
                span: Span::new(at, at),
            },
            entries: Vec::new(),
            children: None,
            start: at,
            end: at,
            discarded: true,
            after_block: false,
            has_block: false,
            slashdash: None,
        }
    }

    fn into_node(self) -> Node {
        Node {
            ty: self.ty,
            name: self.name,
            entries: self.entries,
            children: self.children,
            span: Span::new(self.start, self.end),
        }
    }
}

/// An open `{` and the node that owns it.
struct Frame {
    node: Pending,
    /// Where this block's nodes start in `Parser::node_buf`.
    base: usize,
    open: usize,
    /// The block is commented out (`/-{`) or is a forbidden second block.
    discard: bool,
    /// Where the `/-` that comments this block out starts.
    slashdash: Option<usize>,
}

fn is_boundary(kind: &Tok) -> bool {
    matches!(
        kind,
        Tok::Newline | Tok::Semi | Tok::LBrace | Tok::RBrace | Tok::Eof
    )
}

fn is_value(kind: &Tok) -> bool {
    matches!(
        kind,
        Tok::Ident | Tok::Str(_) | Tok::Num(_) | Tok::Keyword(_) | Tok::Invalid
    )
}

fn is_entry_start(kind: &Tok) -> bool {
    is_value(kind) || matches!(kind, Tok::LParen)
}

/// `text` as a KDL quoted string, for help messages.
fn quote(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            _ => s.push(c),
        }
    }
    s.push('"');
    s
}

pub(crate) fn parse(src: &str) -> (Vec<Node>, Vec<ParseError>, Vec<Span>) {
    let mut p = Parser::new(src);
    let nodes = p.document();
    let mut errors = p.lx.errors;
    // Errors about unclosed blocks are found last but point early; present
    // everything in source order (the sort is stable).
    errors.sort_by_key(|e| e.span.start);
    let mut trivia = p.lx.trivia;
    // Source order; an item before the items nested in it.
    trivia.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    (nodes, errors, trivia)
}

struct Parser<'a> {
    src: &'a str,
    lx: Lexer<'a>,
    /// The lookahead token.
    tok: Token,
    /// Start and end of the last consumed token.
    prev_start: usize,
    prev_end: usize,
    /// The last consumed token was a bare word (identifier or number).
    prev_bare: bool,
    /// Entries of the node being read. Collecting them here and moving them
    /// into an exactly sized `Vec` once the node's entries are complete
    /// saves the growth reallocations and slack of one `Vec` per node.
    entry_buf: Vec<Entry>,
    /// Finished nodes of every open level, innermost last (same reason).
    node_buf: Vec<Node>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let mut lx = Lexer::new(src);
        let tok = lx.next_token();
        Parser {
            src,
            lx,
            tok,
            prev_start: 0,
            prev_end: 0,
            prev_bare: false,
            entry_buf: Vec::new(),
            node_buf: Vec::new(),
        }
    }

    fn bump(&mut self) -> Token {
        let next = self.lx.next_token();
        let old = std::mem::replace(&mut self.tok, next);
        self.prev_start = old.start;
        self.prev_end = old.end;
        self.prev_bare = matches!(old.kind, Tok::Ident | Tok::Num(_) | Tok::Invalid)
            && !matches!(self.src.as_bytes().get(old.start), Some(b'"' | b'#'));
        old
    }

    fn text(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or("")
    }

    fn err(
        &mut self,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: &str,
        help: Option<String>,
    ) {
        self.lx
            .errors
            .push(error(start, end, message, Some(label), help));
    }

    /// Lexes the lookahead token again from the end of the last consumed
    /// token, with errors recorded (it was lexed quietly during a skip).
    fn relex(&mut self) {
        self.lx.pos = self.prev_end;
        self.tok = self.lx.next_token();
    }

    /// Skips, silently, to the next node boundary (left as lookahead).
    fn recover(&mut self) {
        if is_boundary(&self.tok.kind) {
            return;
        }
        self.lx.quiet = true;
        while !is_boundary(&self.tok.kind) {
            self.bump();
        }
        self.lx.quiet = false;
        self.relex();
    }

    fn skip_newlines(&mut self) {
        while matches!(self.tok.kind, Tok::Newline) {
            self.bump();
        }
    }

    fn ident(&self, t: Token) -> Ident {
        let span = Span::new(t.start, t.end);
        match t.kind {
            Tok::Str(value) => Ident {
                value: String::from(&*value),
                span,
            },
            _ => Ident {
                value: self.text(t.start, t.end).to_owned(),
                span,
            },
        }
    }

    fn document(&mut self) -> Vec<Node> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            match self.tok.kind {
                Tok::Newline => {
                    self.bump();
                }
                Tok::Eof => break,
                Tok::Semi => {
                    let t = self.bump();
                    self.err(
                        t.start,
                        t.end,
                        "unexpected `;`: there is no node for it to end",
                        "stray semicolon",
                        Some("remove it".to_owned()),
                    );
                }
                Tok::RBrace => {
                    let close = self.bump();
                    match stack.pop() {
                        Some(frame) => {
                            let node = self.close_block(frame, close.end);
                            self.node_tail(node, &mut stack);
                        }
                        // Closes a `{` that an unterminated string swallowed:
                        // already reported with that string.
                        None if self.lx.swallowed_opens > 0 => self.lx.swallowed_opens -= 1,
                        None => self.err(
                            close.start,
                            close.end,
                            "unexpected `}`: no block is open",
                            "nothing to close",
                            Some("remove it, or look for a missing `{` above".to_owned()),
                        ),
                    }
                }
                _ => {
                    let node = self.node_head();
                    self.node_tail(node, &mut stack);
                }
            }
        }
        // End of input: close whatever is still open. If an unterminated
        // string or comment ate the rest of the file, the missing braces are
        // a consequence of that error, not new mistakes.
        let report = !self.lx.ran_to_eof;
        let len = self.src.len();
        // A `}` inside a string left open at its line end was probably meant
        // to close a block: that block is not reported again.
        let mut swallowed = std::mem::take(&mut self.lx.swallowed_braces);
        while let Some(frame) = stack.pop() {
            let excused = match swallowed.last() {
                Some(&at) if at > frame.open => {
                    swallowed.pop();
                    true
                }
                _ => false,
            };
            if report && !excused {
                self.err(
                    frame.open,
                    frame.open + 1,
                    "missing `}`: this block is never closed",
                    "block opened here",
                    Some("add a matching `}`".to_owned()),
                );
            }
            let node = self.close_block(frame, len);
            self.finish(node);
        }
        std::mem::take(&mut self.node_buf)
    }

    /// Ends the block of `frame` at `end`, attaching its nodes to the node
    /// that owns it (unless the block is discarded).
    fn close_block(&mut self, frame: Frame, end: usize) -> Pending {
        let mut node = frame.node;
        if let Some(sd) = frame.slashdash {
            self.lx.trivia.push(Span::new(sd, end));
        }
        if frame.discard {
            self.node_buf.truncate(frame.base);
        } else {
            let inner: Vec<Node> = self.node_buf.drain(frame.base..).collect();
            node.children = Some(Children {
                nodes: inner,
                span: Span::new(frame.open, end),
            });
            node.end = end;
        }
        node
    }

    /// Moves the collected entries into `node`, in a Vec of exact size.
    fn flush_entries(&mut self, node: &mut Pending) {
        if !self.entry_buf.is_empty() {
            node.entries = self.entry_buf.drain(..).collect();
        }
    }

    fn finish(&mut self, mut node: Pending) {
        self.flush_entries(&mut node);
        if !node.discarded {
            self.node_buf.push(node.into_node());
        } else if let Some(sd) = node.slashdash {
            self.lx.trivia.push(Span::new(sd, node.end));
        }
    }

    /// Optional `/-`, optional type annotation, node name. Always returns a
    /// node (a discarded placeholder after an error) so the caller can go on
    /// with `node_tail`, which for example still reads a `{` block and keeps
    /// the brace nesting right.
    fn node_head(&mut self) -> Pending {
        let mut discarded = false;
        let mut slashdash = None;
        if matches!(self.tok.kind, Tok::SlashDash) {
            let sd = self.bump();
            discarded = true;
            slashdash = Some(sd.start);
            self.skip_newlines();
            match self.tok.kind {
                Tok::Eof | Tok::RBrace | Tok::Semi => {
                    self.err(
                        sd.start,
                        sd.end,
                        "`/-` must be followed by a node to comment out",
                        "comments out nothing",
                        Some("remove it, or put the node to comment out after it".to_owned()),
                    );
                    return Pending::placeholder(sd.start);
                }
                Tok::SlashDash => {
                    let (s, e) = (self.tok.start, self.tok.end);
                    self.err(
                        s,
                        e,
                        "`/-` cannot be followed by another `/-`",
                        "second slashdash",
                        Some("one `/-` already comments out the whole node".to_owned()),
                    );
                    self.recover();
                    return Pending::placeholder(s);
                }
                _ => {}
            }
        }
        let start = self.tok.start;
        let mut ty = None;
        if matches!(self.tok.kind, Tok::LParen) {
            match self.type_annotation() {
                Ok(t) => ty = t,
                Err(()) => {
                    self.recover();
                    return Pending::placeholder(start);
                }
            }
            if matches!(self.tok.kind, Tok::SlashDash) {
                let (s, e) = (self.tok.start, self.tok.end);
                self.err(
                    s,
                    e,
                    "`/-` cannot come between a type annotation and its node",
                    "misplaced slashdash",
                    Some("put `/-` before the type annotation: `/-(type)node`".to_owned()),
                );
                self.recover();
                return Pending::placeholder(start);
            }
            if is_boundary(&self.tok.kind) {
                self.err(
                    start,
                    self.prev_end,
                    "a type annotation must be followed by a node name",
                    "type annotation without a node",
                    None,
                );
                return Pending::placeholder(start);
            }
        }
        let (ts, te) = (self.tok.start, self.tok.end);
        let name = match self.tok.kind {
            Tok::Ident | Tok::Invalid | Tok::Str(_) => {
                let t = self.bump();
                self.ident(t)
            }
            Tok::Num(_) | Tok::Keyword(_) => {
                let t = self.bump();
                let text = self.text(ts, te);
                self.err(
                    ts,
                    te,
                    "a node name must be a string",
                    "not a string",
                    Some(format!("quote it: {}", quote(text))),
                );
                self.ident(t)
            }
            Tok::LBrace => {
                self.err(
                    ts,
                    te,
                    "a children block needs a node name before it",
                    "block without a node",
                    Some("write a node name before `{`".to_owned()),
                );
                return Pending::placeholder(start);
            }
            Tok::Junk => {
                self.recover();
                return Pending::placeholder(start);
            }
            _ => {
                let what = self.text(ts, te).to_owned();
                self.err(
                    ts,
                    te,
                    format!("unexpected `{what}`: expected a node name"),
                    "not a node name",
                    None,
                );
                self.bump();
                self.recover();
                return Pending::placeholder(start);
            }
        };
        let end = name.span.end as usize;
        Pending {
            ty,
            name,
            entries: Vec::new(),
            children: None,
            start,
            end,
            discarded,
            after_block: false,
            has_block: false,
            slashdash,
        }
    }

    /// Entries, children blocks and the terminator of `node`. Returns early,
    /// with the node pushed on `stack`, when a `{` opens; `document` resumes
    /// the node when the matching `}` arrives.
    fn node_tail(&mut self, mut node: Pending, stack: &mut Vec<Frame>) {
        loop {
            match self.tok.kind {
                Tok::Newline | Tok::Semi => {
                    self.bump();
                    break;
                }
                Tok::Eof | Tok::RBrace => break,
                Tok::LBrace => {
                    let open = self.bump();
                    let discard = node.has_block;
                    if discard {
                        self.err(
                            open.start,
                            open.end,
                            "a node can have only one children block",
                            "second children block",
                            Some(
                                "merge it into the first block, or comment it out with `/-`"
                                    .to_owned(),
                            ),
                        );
                    }
                    node.after_block = true;
                    node.has_block = true;
                    self.open_block(node, stack, open.start, discard, None);
                    return;
                }
                Tok::SlashDash => {
                    let sd = self.bump();
                    self.skip_newlines();
                    if matches!(self.tok.kind, Tok::LBrace) {
                        let open = self.bump();
                        node.after_block = true;
                        self.open_block(node, stack, open.start, true, Some(sd.start));
                        return;
                    }
                    if is_entry_start(&self.tok.kind) {
                        if node.after_block {
                            self.entry_after_block();
                        } else {
                            // Parsed for its errors, then dropped.
                            if self.entry().is_some() {
                                self.lx.trivia.push(Span::new(sd.start, self.prev_end));
                            }
                        }
                        continue;
                    }
                    if matches!(self.tok.kind, Tok::SlashDash) {
                        let (s, e) = (self.tok.start, self.tok.end);
                        self.err(
                            s,
                            e,
                            "`/-` cannot be followed by another `/-`",
                            "second slashdash",
                            None,
                        );
                    } else if !matches!(self.tok.kind, Tok::Junk) {
                        self.err(
                            sd.start,
                            sd.end,
                            "`/-` must be followed by an argument, a property or a children block",
                            "comments out nothing",
                            Some(
                                "remove it, or put what it should comment out right after it"
                                    .to_owned(),
                            ),
                        );
                    }
                    self.recover();
                }
                Tok::Junk => {
                    if !self.tok.space_before && self.prev_bare && !node.after_block {
                        self.glued(&mut node);
                    } else {
                        // The lexer reported it.
                        self.recover();
                    }
                }
                Tok::RParen => {
                    let (s, e) = (self.tok.start, self.tok.end);
                    self.err(
                        s,
                        e,
                        "unexpected `)`",
                        "no `(` to close",
                        Some("a type annotation is written `(type)` right before a value or node name".to_owned()),
                    );
                    self.recover();
                }
                Tok::Eq => {
                    let (s, e) = (self.tok.start, self.tok.end);
                    if self.entry_buf.is_empty() && self.prev_end == node.name.span.end as usize {
                        self.err(
                            s,
                            e,
                            "a node name cannot be followed by `=`",
                            "unexpected `=`",
                            Some(
                                "properties go after the node name, e.g. `node key=value`"
                                    .to_owned(),
                            ),
                        );
                    } else {
                        self.err(
                            s,
                            e,
                            "unexpected `=`: a property needs a name right before it",
                            "unexpected `=`",
                            None,
                        );
                    }
                    self.recover();
                }
                _ => {
                    // An entry (argument, property, or type annotation).
                    if node.after_block {
                        self.entry_after_block();
                        continue;
                    }
                    if !self.tok.space_before && self.glued(&mut node) {
                        continue;
                    }
                    if let Some(e) = self.entry() {
                        node.end = e.span.end as usize;
                        self.entry_buf.push(e);
                    }
                }
            }
        }
        self.finish(node);
    }

    fn open_block(
        &mut self,
        mut node: Pending,
        stack: &mut Vec<Frame>,
        open: usize,
        discard: bool,
        slashdash: Option<usize>,
    ) {
        self.flush_entries(&mut node);
        // The parser itself has no depth limit, but everything that walks
        // the tree afterwards (including its `Drop`) recurses: deeper blocks
        // are checked for syntax errors and then left out of the tree.
        if stack.len() == MAX_DEPTH {
            self.err(
                open,
                open + 1,
                format!("blocks are nested too deeply (more than {MAX_DEPTH} levels)"),
                "too deep",
                None,
            );
        }
        stack.push(Frame {
            node,
            base: self.node_buf.len(),
            open,
            discard: discard || stack.len() >= MAX_DEPTH,
            slashdash,
        });
    }
}
