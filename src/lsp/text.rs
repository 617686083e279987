//! Positions as LSP counts them (line, UTF-16 code unit) against the byte
//! offsets of the compiler's spans.

use lsp_types::{Position, Range};

/// Line starts of one text, to turn byte offsets into positions and back.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts[line];
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let character = self.text[start..end].encode_utf16().count() as u32;
        Position::new(line as u32, character)
    }

    pub fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end))
    }

    /// The byte offset of a position; past a line's end is its end, past
    /// the last line is the text's end.
    pub fn offset(&self, p: Position) -> usize {
        let Some(&start) = self.starts.get(p.line as usize) else {
            return self.text.len();
        };
        let end = self
            .starts
            .get(p.line as usize + 1)
            .map_or(self.text.len(), |e| e - 1);
        let mut units = 0u32;
        for (i, ch) in self.text[start..end].char_indices() {
            if units >= p.character {
                return start + i;
            }
            units += ch.len_utf16() as u32;
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_utf16_positions_round_trip() {
        let t = "ab\nž😀x\n\nlast";
        let ix = LineIndex::new(t);
        assert_eq!(ix.position(0), Position::new(0, 0));
        assert_eq!(ix.position(3), Position::new(1, 0));
        // `ž` is 2 bytes and 1 unit; the emoji 4 bytes and 2 units.
        assert_eq!(ix.position(5), Position::new(1, 1));
        assert_eq!(ix.position(9), Position::new(1, 3));
        assert_eq!(ix.offset(Position::new(1, 3)), 9);
        assert_eq!(ix.offset(Position::new(1, 99)), 10);
        assert_eq!(ix.offset(Position::new(3, 2)), t.len() - 2);
        assert_eq!(ix.offset(Position::new(9, 0)), t.len());
    }
}
