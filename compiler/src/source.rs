//! Source files. The compiler reads sources only through [`Sources`], so it
//! can run on in-memory files in tests and never touches the disk itself.

use crate::syntax::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u32);

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics (the path as the user gave it).
    pub name: String,
    pub text: String,
    line_starts: Vec<u32>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0];
        // memchr, not a byte-at-a-time filter: a config of a few megabytes
        // (thousands of long warning patterns) spent 5% of `bbc check` here.
        line_starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i as u32 + 1));
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: u32) -> (usize, usize) {
        let offset = offset.min(self.text.len() as u32);
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line] as usize;
        let mut end = offset as usize;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let col = self.text[start..end].chars().count() + 1;
        (line + 1, col)
    }

    pub fn slice(&self, span: Span) -> &str {
        self.text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }
}

/// All files of one compilation, addressed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }
}

/// Where the compiler reads sources from (imports come through here too).
pub trait Sources {
    fn read(&self, path: &str) -> std::io::Result<String>;
}

/// The real file system.
pub struct DiskSources;

impl Sources for DiskSources {
    fn read(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// In-memory files, for tests and for configs that are not on disk.
#[derive(Default)]
pub struct MemorySources(pub std::collections::BTreeMap<String, String>);

impl Sources for MemorySources {
    fn read(&self, path: &str) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
}

/// Why a range of the global offset space exists: it is a copy of another
/// range, made by expanding a template use or a matrix combination.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The call site (`use …`, `matrix`) in global offsets.
    pub span: Span,
    /// Shown at the call site, e.g. "in this use of template `x`".
    pub note: std::sync::Arc<str>,
}

#[derive(Debug, Clone)]
enum RegionKind {
    File(FileId),
    Copy { target: u32, origin: Origin },
}

#[derive(Debug, Clone)]
struct Region {
    base: u32,
    len: u32,
    kind: RegionKind,
}

/// One offset space for all files of a compilation and for the copies that
/// expansion makes: every file gets a base offset, every template or matrix
/// expansion a fresh range that maps back to the text it copies and
/// remembers where it was expanded. Spans inside the compiler are in this
/// space; [`SpanMap::resolve`] turns them back into (file, span) and the
/// chain of expansion sites. The first file starts at 0, so a config
/// without imports or expansions has the same spans as its text.
#[derive(Debug, Clone)]
pub struct SpanMap {
    regions: Vec<Region>,
    next: u64,
    /// The end of the offsets this map may hand out: the whole space, but
    /// for the share of one thread of a parallel expansion
    /// ([`SpanMap::fork`]).
    limit: u64,
    /// Whether a range could not be had (its copies kept their spans).
    exhausted: bool,
}

impl Default for SpanMap {
    fn default() -> SpanMap {
        SpanMap {
            regions: Vec::new(),
            next: 0,
            limit: u32::MAX as u64,
            exhausted: false,
        }
    }
}

impl SpanMap {
    /// Splits the offsets not yet handed out into `parts` equal shares, in
    /// order: this map keeps the first (until [`SpanMap::join`]), and each
    /// other one is a copy of this map that hands out offsets from its own
    /// share. Each thread of a parallel expansion copies into one share, so
    /// the copies of the earlier items have the lower offsets, as when one
    /// thread made them all; only the gaps between the shares differ, and
    /// nothing reads offsets but through this map and in their order.
    pub(crate) fn fork(&mut self, parts: usize) -> Vec<SpanMap> {
        let parts = parts.max(1) as u64;
        let share = (self.limit.saturating_sub(self.next)) / parts;
        let start = self.next;
        self.limit = start + share;
        (1..parts)
            .map(|i| SpanMap {
                regions: self.regions.clone(),
                next: start + share * i,
                limit: start + share * (i + 1),
                exhausted: false,
            })
            .collect()
    }

    /// Takes back the ranges a [`SpanMap::fork`]ed map handed out (forks in
    /// order; `base` is how many regions this map had when it forked).
    pub(crate) fn join(&mut self, fork: SpanMap, base: usize) {
        self.regions.extend(fork.regions.into_iter().skip(base));
        self.next = fork.next;
        self.exhausted |= fork.exhausted;
    }

    /// Ends a parallel expansion: this map may use the whole space again.
    pub(crate) fn unfork(&mut self) {
        self.limit = u32::MAX as u64;
    }

    /// How many ranges are handed out (the `base` of [`SpanMap::join`]).
    pub(crate) fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether a range could not be had since this map was made.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Reserves the range of a file of `len` bytes; returns its base.
    pub fn add_file(&mut self, file: FileId, len: usize) -> Option<u32> {
        self.alloc(len, RegionKind::File(file))
    }

    /// Reserves a range copying `target` (global), expanded at `origin`.
    /// Returns the shift to add to spans inside `target`, or `None` when the
    /// offset space is exhausted (then copies keep the original spans).
    pub fn add_copy(&mut self, target: Span, origin: Origin) -> Option<i64> {
        let base = self.alloc(
            target.len(),
            RegionKind::Copy {
                target: target.start,
                origin,
            },
        )?;
        Some(base as i64 - target.start as i64)
    }

    fn alloc(&mut self, len: usize, kind: RegionKind) -> Option<u32> {
        let base = self.next;
        let end = base + len as u64 + 1;
        if end > self.limit {
            self.exhausted = true;
            return None;
        }
        self.next = end;
        self.regions.push(Region {
            base: base as u32,
            len: len as u32,
            kind,
        });
        Some(base as u32)
    }

    fn region(&self, off: u32) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.base <= off);
        let r = self.regions.get(i.checked_sub(1)?)?;
        (off <= r.base + r.len).then_some(r)
    }

    /// The file and local span of a global span, and the expansion sites it
    /// went through (innermost first).
    pub fn resolve(&self, span: Span) -> (FileId, Span, Vec<&Origin>) {
        let mut origins = Vec::new();
        let (f, s) = self.walk(span, |o| origins.push(o));
        (f, s, origins)
    }

    /// The file and local span of a global span, like [`SpanMap::resolve`]
    /// without collecting the expansion sites: reading text under a span
    /// happens for every interpolated string of every expanded copy, and
    /// the sites' vector was an allocation each time (docs/perf.md).
    pub fn locate(&self, span: Span) -> (FileId, Span) {
        self.walk(span, |_| {})
    }

    /// Follows a global span through the copies it lies in to the file it
    /// came from, telling `site` each expansion it went through.
    fn walk<'a>(&'a self, span: Span, mut site: impl FnMut(&'a Origin)) -> (FileId, Span) {
        let mut start = span.start;
        let mut len = span.len() as u32;
        for _ in 0..64 {
            let Some(r) = self.region(start) else { break };
            len = len.min(r.base + r.len - start);
            match &r.kind {
                RegionKind::File(f) => {
                    let s = start - r.base;
                    return (
                        *f,
                        Span {
                            start: s,
                            end: s + len,
                        },
                    );
                }
                RegionKind::Copy { target, origin } => {
                    site(origin);
                    start = target + (start - r.base);
                }
            }
        }
        (FileId(0), Span::default())
    }

    /// The source text under a global span.
    pub fn slice<'a>(&self, sources: &'a SourceMap, span: Span) -> &'a str {
        let (f, s) = self.locate(span);
        if (f.0 as usize) < sources.files.len() {
            sources.get(f).slice(s)
        } else {
            ""
        }
    }
}

/// Source text by global span (sources and the span map together).
#[derive(Clone, Copy)]
pub struct SrcText<'a> {
    pub sources: &'a SourceMap,
    pub spans: &'a SpanMap,
}

impl<'a> SrcText<'a> {
    pub fn slice(&self, span: Span) -> &'a str {
        self.spans.slice(self.sources, span)
    }
}
