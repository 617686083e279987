//! Hover text from the language reference: docs/language.md is shipped in
//! the binary (as docs/diagnostics.md is for `bbc explain`), and a name's
//! entry is the section whose heading names it, else the first table row
//! that starts with it.

const LANGUAGE_DOC: &str = include_str!("../../docs/language.md");

/// The reference's entry for a node or property name; `within` (the
/// enclosing node's name) picks the right table row when several sections
/// have a setting of that name (`url`, `kind`, …).
pub fn entry(name: &str, within: Option<&str>) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let row = format!("| `{name}` ");
    let row_eq = format!("| `{name}=");
    let is_row = |l: &&str| l.starts_with(&row) || l.starts_with(&row_eq);
    let as_row = |l: &str| format!("From the language reference (docs/language.md):\n\n{l}");
    let parent = within.and_then(section);
    let scoped = parent.and_then(|(s, e)| LANGUAGE_DOC[s..e].lines().find(is_row));
    if let Some((s, e)) = section(name) {
        // A name with a section of its own elsewhere (`lock`, declared at
        // the top level) that the enclosing node's table also has (`lock`
        // inside a builder uses one): the enclosing node's row says what
        // it is there.
        let inside_parent = parent.is_some_and(|(ps, pe)| ps <= s && s < pe);
        if let (Some(l), false) = (scoped, inside_parent) {
            return Some(as_row(l));
        }
        return Some(LANGUAGE_DOC[s..e].trim_end().to_string());
    }
    scoped
        .or_else(|| LANGUAGE_DOC.lines().find(is_row))
        .map(as_row)
}

/// The byte range of the section whose heading names `name`.
fn section(name: &str) -> Option<(usize, usize)> {
    let quoted = format!("`{name}`");
    let kind = format!("`kind=\"{name}\"`");
    let mut offset = 0;
    for line in LANGUAGE_DOC.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let level = line.bytes().take_while(|b| *b == b'#').count();
        if level >= 2 && (line.contains(&quoted) || line.contains(&kind)) {
            let rest = &LANGUAGE_DOC[offset..];
            // The section ends at the next heading of its level or above.
            let mut end = rest.len();
            let mut o = 0;
            for l in rest.split_inclusive('\n') {
                let lv = l.bytes().take_while(|b| *b == b'#').count();
                if lv >= 2 && lv <= level {
                    end = o;
                    break;
                }
                o += l.len();
            }
            return Some((start, offset + end));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_rows() {
        let b = entry("builder", None).unwrap_or_default();
        assert!(b.starts_with("## `builder`"), "{b}");
        assert!(!b.contains("## Steps"), "stops at the next section");
        let keep = entry("keep-last", Some("retention")).unwrap_or_default();
        assert!(keep.contains("| `keep-last` |"), "{keep}");
        assert!(entry("no-such-thing-at-all", None).is_none());
        // `tls` of an IRC reporter is its table's row, not the master's.
        let irc = entry("tls", Some("reporter")).unwrap_or_default();
        assert!(irc.contains("boolean"), "{irc}");
        let master = entry("tls", Some("master")).unwrap_or_default();
        assert!(master.contains("cert="), "{master}");
    }
}
