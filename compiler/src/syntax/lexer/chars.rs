//! Byte classes of the KDL 2.0 lexer: one lookup table for ASCII and the
//! slower checks for the few non-ASCII characters that matter.

/// `' '` and `'\t'`.
pub(super) const WS: u8 = 1;
/// ASCII newlines: LF, CR, VT, FF.
pub(super) const NL: u8 = 2;
/// ASCII characters that can never be part of a bare identifier.
pub(super) const PUNCT: u8 = 4;
/// Disallowed ASCII control characters (and DEL).
pub(super) const CTRL: u8 = 8;
/// Lead bytes of the non-ASCII characters that need a closer look.
pub(super) const HI: u8 = 16;
/// `"` and `\`: where a quoted string scan must stop.
pub(super) const QB: u8 = 32;
/// `*` and `/`: where a block-comment scan must stop.
pub(super) const STAR_SLASH: u8 = 64;

pub(super) static CLASS: [u8; 256] = build_class();

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

/// The first position from `i` whose byte stops a quoted string's plain
/// run (`"`, `\`, a newline, a control character, a non-ASCII lead byte
/// that needs a closer look), or `b.len()`. Quoted strings are most of a
/// large config's text (issue 12: 4 MB of warning patterns), so it looks
/// at eight bytes at a time for bytes that *might* stop the run (below
/// 0x20, `"`, `\`, DEL, non-ASCII) and asks the table only about those;
/// the answer is the table's, byte for byte.
pub(super) fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const STOP: u8 = QB | NL | CTRL | HI;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bit 7 of each byte of the result is set where that byte of `v` is
    // zero; the lowest set bit is exact (a borrow only runs upwards from a
    // byte that is itself flagged).
    fn zero(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    loop {
        while let Some(Ok(word)) = b.get(i..i + 8).map(<[u8; 8]>::try_from) {
            let x = u64::from_le_bytes(word);
            let maybe = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
                | zero(x ^ (ONES * u64::from(b'"')))
                | zero(x ^ (ONES * u64::from(b'\\')))
                | zero(x ^ (ONES * 0x7F))
                | (x & HIGH);
            if maybe != 0 {
                i += (maybe.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match b.get(i) {
            None => return b.len(),
            Some(&c) if CLASS[c as usize] & STOP != 0 => return i,
            Some(_) => i += 1,
        }
    }
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

pub(super) fn describe_disallowed(c: char) -> &'static str {
    match c {
        '\u{FEFF}' => "byte order mark",
        '\u{7F}' => "delete control character",
        '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            "invisible text-direction control"
        }
        _ => "control character",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan stops exactly where the byte-at-a-time
    /// table scan does: every byte value, at every offset in a word and in
    /// the tail.
    #[test]
    fn plain_run_end_agrees_with_the_table() {
        const STOP: u8 = QB | NL | CTRL | HI;
        let table = |b: &[u8], mut i: usize| {
            while i < b.len() && CLASS[b[i] as usize] & STOP == 0 {
                i += 1;
            }
            i
        };
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    for from in 0..=len {
                        assert_eq!(
                            plain_run_end(&b, from),
                            table(&b, from),
                            "{b:?} from {from}"
                        );
                    }
                }
            }
        }
        let mixed = "ab\tc\u{e9}d\u{2028}e\"f\\g\u{7f}h\u{a0}".repeat(3);
        let b = mixed.as_bytes();
        for from in 0..=b.len() {
            assert_eq!(plain_run_end(b, from), table(b, from));
        }
    }
}
