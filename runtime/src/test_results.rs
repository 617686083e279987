//! What a step says about itself in its output: the summary lines of
//! common test runners (pytest, `cargo test`, `go test -v`, TAP) and the
//! names of the tests that failed, JUnit XML reports (`junit.rs`), and
//! figures printed as `bbc-figure NAME=VALUE [UNIT]` lines
//! (docs/language.md, "Test results and figures").
//!
//! Pure and incremental: a [`Scanner`] is fed the step's output in chunks
//! as it streams and keeps only the current line (cut at [`MAX_LINE`]),
//! the counts, at most [`MAX_FAILING`] names and [`MAX_FIGURES`] figures,
//! whatever the log's size.

pub mod junit;

use crate::store::{Figure, TestCounts};

/// Lines are judged on their first this many bytes; the rest is skipped.
pub const MAX_LINE: usize = 4096;
/// At most this many failing tests are named per step (the counts go on).
pub const MAX_FAILING: usize = 200;
/// A failing test's name is cut to this many bytes.
pub const MAX_NAME: usize = 300;
/// At most this many distinct figures per step; later names are ignored.
pub const MAX_FIGURES: usize = 32;
/// The line prefix of a figure.
pub const FIGURE_PREFIX: &str = "bbc-figure ";

/// Reads a step's output line by line.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Whether runner summaries are looked for (`test` steps); figures
    /// are read from every command step.
    tests: bool,
    line: Vec<u8>,
    /// The current line was longer than [`MAX_LINE`]: the rest of it is
    /// skipped.
    overlong: bool,
    counts: TestCounts,
    /// Whether any runner line was recognised.
    seen: bool,
    figures: Vec<Figure>,
}

impl Scanner {
    pub fn new(tests: bool) -> Scanner {
        Scanner {
            tests,
            ..Default::default()
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    self.take(&rest[..nl]);
                    self.end_line();
                    rest = &rest[nl + 1..];
                }
                None => {
                    self.take(rest);
                    rest = &[];
                }
            }
        }
    }

    fn take(&mut self, part: &[u8]) {
        if self.overlong {
            return;
        }
        let room = MAX_LINE - self.line.len();
        if part.len() > room {
            self.line.extend_from_slice(&part[..room]);
            self.overlong = true;
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn end_line(&mut self) {
        self.overlong = false;
        // Most lines of most steps are neither: decide on the bytes.
        if !self.tests && !self.line.starts_with(FIGURE_PREFIX.as_bytes()) {
            self.line.clear();
            return;
        }
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if let Some(f) = figure(text) {
            match self.figures.iter().position(|x| x.name == f.name) {
                Some(i) => self.figures[i] = f,
                None if self.figures.len() < MAX_FIGURES => self.figures.push(f),
                None => {}
            }
        } else if self.tests {
            self.runner_line(text);
        }
        // The buffer is reused for the next line.
        self.line = line;
        self.line.clear();
    }

    /// The test results seen (None when no runner line was recognised)
    /// and the figures, once the output has ended.
    pub fn finish(mut self) -> (Option<TestCounts>, Vec<Figure>) {
        if !self.line.is_empty() {
            self.end_line();
        }
        (self.seen.then_some(self.counts), self.figures)
    }

    fn fail(&mut self, name: &str) {
        add_failing(&mut self.counts.failing, name);
    }

    fn runner_line(&mut self, line: &str) {
        // Every line recognised below starts (after spaces, for Go's
        // subtests) with one of these bytes; most output does not.
        match line.trim_start().bytes().next() {
            Some(b't' | b'-' | b'F' | b'E' | b'o' | b'n' | b'=' | b'0'..=b'9') => {}
            _ => return,
        }
        // cargo test: `test result: FAILED. 1 passed; 2 failed; 1 ignored; …`
        // (one per test binary: summed) and `test NAME ... FAILED`.
        if let Some(rest) = line.strip_prefix("test result: ") {
            let mut any = false;
            for part in rest.split(';') {
                let part = part.trim().trim_start_matches("ok. ");
                let part = part.trim_start_matches("FAILED. ");
                if let Some((n, word)) = count_word(part) {
                    any = true;
                    match word {
                        "passed" => self.counts.passed += n,
                        "failed" => self.counts.failed += n,
                        "ignored" => self.counts.skipped += n,
                        _ => {}
                    }
                }
            }
            self.seen |= any;
            return;
        }
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|r| r.strip_suffix(" ... FAILED"))
        {
            self.fail(name);
            return;
        }
        // go test -v: `--- FAIL: TestX (0.00s)`, subtests indented.
        let t = line.trim_start();
        for (prefix, kind) in [("--- PASS: ", 0), ("--- FAIL: ", 1), ("--- SKIP: ", 2)] {
            if let Some(rest) = t.strip_prefix(prefix) {
                let name = rest.rsplit_once(" (").map_or(rest, |x| x.0);
                self.seen = true;
                match kind {
                    0 => self.counts.passed += 1,
                    1 => {
                        self.counts.failed += 1;
                        self.fail(name);
                    }
                    _ => self.counts.skipped += 1,
                }
                return;
            }
        }
        // pytest: `FAILED path::test - message`, `ERROR path::test`, and
        // the closing line `==== 2 failed, 3 passed in 0.1s ====` (`-q`:
        // without the `=`).
        for prefix in ["FAILED ", "ERROR "] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let name = rest.split_once(" - ").map_or(rest, |x| x.0).trim();
                if name.contains("::") || !name.contains(' ') {
                    self.fail(name);
                }
                return;
            }
        }
        if self.pytest_summary(line) {
            return;
        }
        self.tap_line(line);
    }

    fn pytest_summary(&mut self, line: &str) -> bool {
        let t = line.trim_matches(|c| c == '=' || c == ' ');
        let Some((counts, time)) = t.rsplit_once(" in ") else {
            return false;
        };
        let time = time.split_whitespace().next().unwrap_or("");
        if !time.ends_with('s') || time.trim_end_matches('s').parse::<f64>().is_err() {
            return false;
        }
        let mut c = TestCounts::default();
        for part in counts.split(", ") {
            let Some((n, word)) = count_word(part) else {
                return false;
            };
            match word {
                "passed" | "xpassed" => c.passed += n,
                "failed" | "error" | "errors" => c.failed += n,
                "skipped" | "xfailed" => c.skipped += n,
                "deselected" | "warning" | "warnings" | "rerun" => {}
                _ => return false,
            }
        }
        self.seen = true;
        self.counts.passed += c.passed;
        self.counts.failed += c.failed;
        self.counts.skipped += c.skipped;
        true
    }

    /// TAP: `ok 1 - name`, `not ok 2 - name`, `# SKIP` and `# TODO`
    /// directives (a TODO test never fails the run). Indented subtests and
    /// the plan are left out.
    fn tap_line(&mut self, line: &str) {
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok") {
            (true, r)
        } else {
            return;
        };
        // `ok 1 …`, `ok - …`, a bare `ok`; not Go's `ok  \tpackage`.
        let b = rest.as_bytes();
        let tap = b.is_empty()
            || (b[0] == b' ' && b.len() > 1 && (b[1].is_ascii_digit() || b[1] == b'-'));
        if !tap {
            return;
        }
        let (desc, directive) = match rest.split_once('#') {
            Some((d, dir)) => (d, dir.trim().to_ascii_lowercase()),
            None => (rest, String::new()),
        };
        let desc = desc.trim().trim_start_matches(|c: char| c.is_ascii_digit());
        let name = desc.trim().trim_start_matches("- ").trim();
        self.seen = true;
        if directive.starts_with("skip") || directive.starts_with("todo") {
            self.counts.skipped += 1;
        } else if ok {
            self.counts.passed += 1;
        } else {
            self.counts.failed += 1;
            self.fail(name);
        }
    }
}

/// Adds a failing test's name (cut, once, up to [`MAX_FAILING`]).
pub fn add_failing(list: &mut Vec<String>, name: &str) {
    let name = cut(name.trim(), MAX_NAME);
    if name.is_empty() || list.len() >= MAX_FAILING || list.iter().any(|n| n == name) {
        return;
    }
    list.push(name.to_string());
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `"3 passed"` → (3, "passed").
fn count_word(s: &str) -> Option<(u64, &str)> {
    let (n, w) = s.trim().split_once(' ')?;
    Some((n.parse().ok()?, w.trim()))
}

/// A figure line: `bbc-figure NAME=VALUE [UNIT]`, where NAME is 1–64 of
/// letters, digits, `_`, `-` and `.`, VALUE a finite number and UNIT an
/// optional word of up to 16 characters.
pub fn figure(line: &str) -> Option<Figure> {
    let rest = line.strip_prefix(FIGURE_PREFIX)?;
    let mut words = rest.split_whitespace();
    let (name, value) = words.next()?.split_once('=')?;
    let unit = words.next().unwrap_or("");
    if words.next().is_some()
        || name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        || unit.chars().count() > 16
    {
        return None;
    }
    let value: f64 = value.parse().ok().filter(|v: &f64| v.is_finite())?;
    Some(Figure {
        name: name.to_string(),
        value,
        unit: unit.to_string(),
    })
}

/// The failing tests of `now` that were not failing in `before` (the
/// previous build's), in `now`'s order.
pub fn new_failures<'a>(now: &'a [String], before: &[String]) -> Vec<&'a str> {
    now.iter()
        .filter(|n| !before.contains(n))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> (Option<TestCounts>, Vec<Figure>) {
        let mut s = Scanner::new(true);
        s.feed(text.as_bytes());
        s.finish()
    }

    fn counts(text: &str) -> TestCounts {
        scan(text).0.expect("runner lines recognised")
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/results")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn pytest_output() {
        for f in ["pytest.txt", "pytest-q.txt"] {
            let c = counts(&fixture(f));
            assert_eq!((c.passed, c.failed, c.skipped), (2, 2, 1), "{f}");
            assert_eq!(
                c.failing,
                [
                    "test_sample.py::test_breaks",
                    "test_sample.py::TestWidget::test_wobbles"
                ],
                "{f}"
            );
        }
    }

    #[test]
    fn cargo_test_output() {
        let c = counts(&fixture("cargo-test-failing.txt"));
        assert_eq!((c.passed, c.failed, c.skipped), (1, 2, 1));
        assert_eq!(c.failing, ["tests::nested::panics", "tests::breaks"]);
        // Two binaries (unit tests and doc tests): summed.
        let c = counts(&fixture("cargo-test-passing.txt"));
        assert_eq!((c.passed, c.failed, c.skipped), (3, 0, 1));
        assert!(c.failing.is_empty());
    }

    #[test]
    fn go_test_output() {
        let c = counts(&fixture("go-test-v.txt"));
        assert_eq!((c.passed, c.failed, c.skipped), (2, 3, 1));
        assert_eq!(c.failing, ["TestBreaks", "TestTable", "TestTable/two"]);
    }

    #[test]
    fn tap_output() {
        let c = counts(&fixture("tap.txt"));
        assert_eq!((c.passed, c.failed, c.skipped), (1, 1, 2));
        assert_eq!(c.failing, ["breaks"]);
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_counts() {
        let text = fixture("cargo-test-failing.txt");
        let whole = counts(&text);
        for size in [1, 7, 64] {
            let mut s = Scanner::new(true);
            for chunk in text.as_bytes().chunks(size) {
                s.feed(chunk);
            }
            assert_eq!(s.finish().0.as_ref(), Some(&whole), "chunks of {size}");
        }
    }

    #[test]
    fn plain_output_is_no_test_result() {
        assert_eq!(
            scan("compiling\nok  \texample.com/x\t0.1s\nall good in 3 ways\n").0,
            None
        );
        // Summaries are read from test steps only.
        let mut s = Scanner::new(false);
        s.feed(fixture("pytest.txt").as_bytes());
        assert_eq!(s.finish().0, None);
    }

    #[test]
    fn bounded_names_and_lines() {
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&format!("test t{i} ... FAILED\n"));
        }
        text.push_str(&format!("test {} ... FAILED\n", "é".repeat(400)));
        text.push_str(&"x".repeat(100_000));
        text.push_str("\ntest result: FAILED. 0 passed; 501 failed; 0 ignored\n");
        let c = counts(&text);
        assert_eq!(c.failed, 501);
        assert_eq!(c.failing.len(), MAX_FAILING);
        let mut s = Scanner::new(true);
        s.feed(format!("test {} ... FAILED\n", "é".repeat(400)).as_bytes());
        let c = s.finish().0;
        assert_eq!(c, None, "a failing line alone counts nothing");
        let mut v = Vec::new();
        add_failing(&mut v, &"é".repeat(400));
        assert!(v[0].len() <= MAX_NAME && v[0].chars().all(|c| c == 'é'));
    }

    /// Throughput, printed (no threshold): `cargo test -p bbc-runtime
    /// --release --lib scan_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn scan_throughput() {
        let mut text = fixture("cargo-test-failing.txt");
        while text.len() < 64 << 20 {
            text.push_str(
                "   Compiling widget v0.1.0 (/tmp/cap/rs) with a line of ordinary output\n",
            );
        }
        for tests in [false, true] {
            let t = std::time::Instant::now();
            let mut s = Scanner::new(tests);
            for chunk in text.as_bytes().chunks(64 * 1024) {
                s.feed(chunk);
            }
            let _ = s.finish();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "tests={tests}: {} MiB in {secs:.3} s = {:.0} MiB/s",
                text.len() >> 20,
                (text.len() >> 20) as f64 / secs
            );
        }
    }

    #[test]
    fn figures() {
        let (_, f) = scan(
            "bbc-figure size=1234 bytes\nbbc-figure bench.ns=12.5\nbbc-figure size=1300 bytes\n\
             bbc-figure bad name=1\nbbc-figure x=inf\nbbc-figure x=NaN\nbbc-figure =3\n\
             bbc-figure y=2 two words\n  bbc-figure z=1\nbbc-figure last=7",
        );
        let got: Vec<(&str, f64, &str)> = f
            .iter()
            .map(|f| (f.name.as_str(), f.value, f.unit.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("size", 1300.0, "bytes"),
                ("bench.ns", 12.5, ""),
                ("last", 7.0, "")
            ]
        );
        let many: String = (0..50).map(|i| format!("bbc-figure f{i}={i}\n")).collect();
        assert_eq!(scan(&many).1.len(), MAX_FIGURES);
    }

    #[test]
    fn new_failures_since_the_previous_build() {
        let now = vec!["a".to_string(), "b".into(), "c".into()];
        let before = vec!["b".to_string(), "z".into()];
        assert_eq!(new_failures(&now, &before), ["a", "c"]);
        assert!(new_failures(&[], &before).is_empty());
    }
}
