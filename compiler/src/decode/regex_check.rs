//! Whether a pattern is a valid Rust `regex`, without building the `Regex`.
//!
//! `regex::Regex::new` builds everything a search needs: literal
//! prefilters, the one-pass DFA, the lazy DFA's set-up. The compiler only
//! needs the verdict, and for issue 12's long case-insensitive alternations
//! that was most of a ~250 µs compile per distinct pattern (docs/perf.md).
//! So a pattern is accepted here when the steps of `Regex::new` that can
//! fail succeed: parsing (with the same syntax settings) and the forward
//! and reverse Thompson NFAs (with the same size limit). Everything else
//! `Regex::new` builds on top of them either cannot fail or falls back when
//! it does. Anything that fails here goes to `Regex::new` itself, so every
//! rejection — and its message — is the real one, and a pattern the regex
//! crate accepts without an NFA (an alternation of literals too large for
//! one, served by Aho-Corasick) is still accepted.

use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::syntax;

/// `regex::RegexBuilder`'s default NFA size limit (regex 1.x, `builders.rs`).
const NFA_SIZE_LIMIT: usize = 10 * (1 << 20);

/// `None` when `regex::Regex::new(pattern)` accepts it, otherwise the last
/// line of its error (the first lines repeat the pattern, which the
/// diagnostic already points at).
pub(super) fn verdict(pattern: &str) -> Option<String> {
    if passes_fallible_steps(pattern) {
        return None;
    }
    regex::Regex::new(pattern).err().map(|err| {
        let msg = err.to_string();
        msg.lines().last().unwrap_or("").trim().to_string()
    })
}

/// The fallible steps of `regex::Regex::new`, configured as it configures
/// them: `Regex` is `meta::Regex` with `utf8_empty`, leftmost-first
/// matching and a 10 MiB NFA limit; its core builds the forward NFA with
/// every capture group and, since the lazy DFA is enabled, the reverse one
/// without captures (regex-automata 0.4, `meta/strategy.rs`, `Core::new`).
fn passes_fallible_steps(pattern: &str) -> bool {
    let Ok(hir) = syntax::parse_with(pattern, &syntax::Config::new().utf8(true)) else {
        return false;
    };
    let forward = thompson::Config::new()
        .utf8(true)
        .reverse(false)
        .nfa_size_limit(Some(NFA_SIZE_LIMIT))
        .shrink(false)
        .which_captures(WhichCaptures::All);
    let reverse = forward
        .clone()
        .which_captures(WhichCaptures::None)
        .reverse(true);
    [forward, reverse].into_iter().all(|config| {
        thompson::Compiler::new()
            .configure(config)
            .build_from_hir(&hir)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict is exactly `Regex::new`'s, for valid patterns, syntax
    /// errors, patterns over the size limit and a literal alternation the
    /// regex crate serves without an NFA.
    #[test]
    fn agrees_with_regex_new() {
        let big_literals: String = (0..20_000)
            .map(|i| format!("literal-word-number-{i:05}-xxxxxxxxxxxxxxxxxxxx"))
            .collect::<Vec<_>>()
            .join("|");
        let cases = [
            "(?i)warning[: ]",
            "(?im)^(?:gcc-1: (?:warning|note)[: ]+[A-Za-z_][A-Za-z0-9_]* at line [0-9]+)",
            "",
            "a{2,1}",
            "(unclosed",
            "[z-a]",
            r"\p{NotAClass}",
            r"\bword\b",
            r"(?<name>x)(?<name>y)",
            "(?P<n>a)",
            r"\w{1000}\w{1000}\w{1000}",
            r"(?:\w{100}){100}",
            r"[\x{0}-\x{10FFFF}]{200}",
            "x{100000}",
            &"(".repeat(300),
            &format!("{}a{}", "(?:".repeat(260), ")".repeat(260)),
            &big_literals,
        ];
        for p in cases {
            let want = regex::Regex::new(p).err().map(|e| {
                let msg = e.to_string();
                msg.lines().last().unwrap_or("").trim().to_string()
            });
            assert_eq!(verdict(p), want, "pattern {:.60}", p);
        }
    }

    /// A pattern over the size limit is rejected with the regex crate's
    /// own message, the size limit named.
    #[test]
    fn size_limit_is_kept() {
        let v = verdict(r"(?:\w{100}){100}");
        assert!(
            v.as_deref().is_some_and(|m| m.contains("size limit")),
            "{v:?}"
        );
    }
}
