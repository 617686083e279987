//! The compiler never panics: mutated example and golden files give
//! diagnostics, and every span they carry lies inside the source.

use bbc_compiler::render::{self, HumanOptions};

use crate::common::{files, root};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough to pick mutations.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SNIPPETS: &[&str] = &[
    "\"",
    "{",
    "}",
    "=",
    ";",
    "#",
    "/-",
    "\\",
    "(secret)",
    "${{",
    "}}",
    "${{ prop.",
    "#true",
    "\n",
    "builder",
    "steps",
    "kind=",
    "\"x\"",
    "é",
    "\u{2028}",
    "0x",
    "1h",
    "-",
    "*",
    "//",
    "/*",
    "r\"",
    "#\"",
    "workers",
    "trigger",
];

fn mutate(src: &str, rng: &mut Rng) -> String {
    let mut s = src.to_string();
    for _ in 0..1 + rng.below(4) {
        let mut at = rng.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(4) {
            0 => {
                let mut end = (at + 1 + rng.below(8)).min(s.len());
                while !s.is_char_boundary(end) {
                    end += 1;
                }
                s.replace_range(at..end, "");
            }
            1 | 2 => s.insert_str(at, SNIPPETS[rng.below(SNIPPETS.len())]),
            _ => s.truncate(at),
        }
    }
    s
}

#[test]
fn mutated_configs_only_give_diagnostics() {
    let mut inputs: Vec<String> = files(&root().join("examples"), "kdl")
        .into_iter()
        .chain(files(&root().join("tests/golden"), "kdl"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    inputs.retain(|s| s.len() < 40_000);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let opts = HumanOptions {
        color: false,
        width: 80,
    };
    let rounds = 20_000;
    for i in 0..rounds {
        let base = &inputs[i % inputs.len()];
        let text = mutate(base, &mut rng);
        let c = bbc_compiler::compile_source("fuzz.kdl", text.clone());
        for d in &c.diagnostics {
            for l in std::iter::once(&d.primary).chain(&d.secondary) {
                // Labels may point into an imported file (the standard library).
                let text = &c.sources.get(l.file).text;
                assert!(
                    l.span.start <= l.span.end && l.span.end as usize <= text.len(),
                    "span {:?} outside input of {} bytes for {text:?}",
                    l.span,
                    text.len()
                );
                assert!(
                    text.is_char_boundary(l.span.start as usize)
                        && text.is_char_boundary(l.span.end as usize),
                    "span not on a char boundary in {text:?}"
                );
            }
            assert!(
                d.help.is_some() && !d.primary.message.is_empty(),
                "`{}` lacks help or a label for {text:?}",
                d.message
            );
            let _ = render::human(&c.sources, d, opts);
            let _ = render::json_diagnostic(&c.sources, d);
        }
        if c.graph.is_some() {
            assert_eq!(c.errors(), 0);
        }
    }
}

#[test]
fn mutated_configs_format_or_report_syntax_errors() {
    // Mutations produce odd but valid KDL (comments and slash-dashes in
    // strange places, line continuations, stray blank lines): the formatter
    // must lay every valid one out without losing anything (its own meaning
    // check would say `Unsafe`) and reach a fixed point in one pass.
    use bbc_compiler::fmt::{format_source, FormatError};
    let inputs: Vec<String> = files(&root().join("examples"), "kdl")
        .into_iter()
        .chain(files(&root().join("tests/golden"), "kdl"))
        .chain(files(&root().join("stdlib"), "kdl"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|s| s.len() < 40_000)
        .collect();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut formatted = 0;
    for i in 0..10_000 {
        let text = mutate(&inputs[i % inputs.len()], &mut rng);
        match format_source("fuzz.kdl", &text) {
            Ok(out) => {
                formatted += 1;
                match format_source("fuzz.kdl", &out) {
                    Ok(again) => assert_eq!(again, out, "not idempotent for {text:?}"),
                    Err(e) => panic!("second pass failed ({e:?}) for {text:?}"),
                }
            }
            Err(FormatError::Syntax { .. }) => {}
            Err(FormatError::Unsafe(m)) => panic!("{m} for {text:?}"),
        }
    }
    assert!(formatted > 1_000, "only {formatted} mutants were valid KDL");
}
