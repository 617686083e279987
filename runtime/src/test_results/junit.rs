//! JUnit XML reports (the format pytest `--junitxml`, Maven Surefire,
//! `go-junit-report`, cargo-nextest and most runners write): every
//! `<testcase>` counted as passed, failed (a `<failure>` or `<error>`
//! child) or skipped (`<skipped>`), wherever it is nested. Read with
//! quick-xml's pull parser: nothing is kept but the counts and at most
//! [`super::MAX_FAILING`] names; the caller bounds the input's size.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::add_failing;
use crate::store::TestCounts;

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// Adds the test cases of one report to `into`.
pub fn parse(xml: &[u8], into: &mut TestCounts) -> Result<(), String> {
    let mut r = Reader::from_reader(xml);
    // The name and outcome of the `<testcase>` being read.
    let mut case: Option<(String, Outcome)> = None;
    let mut cases = 0u64;
    loop {
        let ev = r
            .read_event()
            .map_err(|e| format!("not JUnit XML at byte {}: {e}", r.error_position()))?;
        let (e, empty) = match &ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(e) => {
                if e.local_name().as_ref() == b"testcase" {
                    if let Some((name, o)) = case.take() {
                        count(into, &name, o);
                        cases += 1;
                    }
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match (e.local_name().as_ref(), case.as_mut()) {
            (b"testcase", None) => {
                let name = case_name(e)?;
                if empty {
                    count(into, &name, Outcome::Passed);
                    cases += 1;
                } else {
                    case = Some((name, Outcome::Passed));
                }
            }
            (b"failure" | b"error", Some((_, o))) => *o = Outcome::Failed,
            (b"skipped", Some((_, o))) if *o != Outcome::Failed => *o = Outcome::Skipped,
            _ => {}
        }
    }
    if case.is_some() {
        return Err("not JUnit XML: a <testcase> is not closed".into());
    }
    if cases == 0 {
        return Err("no <testcase> in the report".into());
    }
    Ok(())
}

/// `classname.name`, or `name` alone.
fn case_name(e: &BytesStart<'_>) -> Result<String, String> {
    let (mut class, mut name) = (String::new(), String::new());
    for a in e.attributes() {
        let a = a.map_err(|e| format!("not JUnit XML: {e}"))?;
        let v = a
            .unescape_value()
            .map_err(|e| format!("not JUnit XML: {e}"))?;
        match a.key.local_name().as_ref() {
            b"classname" => class = v.into_owned(),
            b"name" => name = v.into_owned(),
            _ => {}
        }
    }
    Ok(if class.is_empty() {
        name
    } else {
        format!("{class}.{name}")
    })
}

fn count(into: &mut TestCounts, name: &str, o: Outcome) {
    match o {
        Outcome::Passed => into.passed += 1,
        Outcome::Skipped => into.skipped += 1,
        Outcome::Failed => {
            into.failed += 1;
            add_failing(&mut into.failing, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_report() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/results/pytest-junit.xml");
        let xml = std::fs::read(p).unwrap();
        let mut c = TestCounts::default();
        parse(&xml, &mut c).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (2, 2, 1));
        assert_eq!(
            c.failing,
            [
                "test_sample.test_breaks",
                "test_sample.TestWidget.test_wobbles"
            ]
        );
        // A second report adds to the first.
        parse(&xml, &mut c).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (4, 4, 2));
        assert_eq!(c.failing.len(), 2);
    }

    #[test]
    fn nested_suites_errors_and_bad_input() {
        let xml = br#"<?xml version="1.0"?>
<testsuites><testsuite name="a"><testsuite name="b">
<testcase name="x" classname="A"><error message="boom"/></testcase>
<testcase name="y &amp; z"><skipped/></testcase>
<testcase name="w"><system-out>ok</system-out></testcase>
</testsuite></testsuite></testsuites>"#;
        let mut c = TestCounts::default();
        parse(xml, &mut c).unwrap();
        assert_eq!((c.passed, c.failed, c.skipped), (1, 1, 1));
        assert_eq!(c.failing, ["A.x"]);
        for bad in [
            &b"<testsuite><testcase name='x'>"[..],
            b"<testsuite></testsuite>",
            b"<testsuite><testcase name='x' name='y'/></testsuite>",
            b"not xml <<",
            b"",
        ] {
            let mut c = TestCounts::default();
            assert!(
                parse(bad, &mut c).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
