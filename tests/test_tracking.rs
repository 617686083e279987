//! Build figures tracked over time (issue 13), on a real master and
//! worker: test results read from the output of real runners (captured
//! `cargo test` output replayed by a step, and a real `pytest` run where
//! pytest is installed), `bbc-figure` lines, the series API with new
//! failures, and the SVG charts the master draws, read back with Python's
//! XML parser.

use std::path::Path;

use serde_json::Value;

use crate::common::{get_json, http, root, temp_dir, wait_for, write_secret, Master, Proc};

fn start(dir: &Path, steps: &str) -> (Master, Proc) {
    write_secret(dir, "w", "pw-track-1");
    let config = format!(
        r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {{
    builders "unit"
    param "out" type="string" default="cargo-test-passing.txt"
    param "size" type="int" default=0
}}
builder "unit" {{
    workers "w"
    steps {{
{steps}
    }}
}}
"#
    );
    let m = Master::start(dir, &config);
    let w = m.worker("w", "pw-track-1");
    m.wait_connected("w");
    (m, w)
}

/// The `<circle>` elements of an SVG document, counted by Python's XML
/// parser (which fails on anything that is not well-formed XML).
fn circles(svg: &str) -> usize {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             t = E.fromstring(sys.stdin.read())\n\
             assert t.tag.endswith('svg'), t.tag\n\
             print(sum(1 for e in t.iter() if e.tag.endswith('circle')))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(svg.as_bytes())?;
            }
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(out.status.success(), "not SVG: {svg}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn chart(m: &Master, name: &str) -> String {
    let (st, body) = http(
        "GET",
        &m.http,
        &format!("/api/v1/builders/unit/charts/{name}"),
        None,
    );
    assert_eq!(st, 200, "{name}: {body}");
    body
}

#[test]
fn test_counts_new_failures_figures_and_charts() {
    let dir = temp_dir("track");
    let fixtures = root().join("tests/fixtures/results");
    let (m, _w) = start(
        &dir,
        &format!(
            r#"        shell "echo bbc-figure binary-size=${{{{ prop.size }}}} bytes" name="size"
        test "cat {}/${{{{ prop.out }}}}" name="unit-tests""#,
            fixtures.display()
        ),
    );
    let run = |out: &str, size: u64| {
        m.force_and_wait(
            "unit",
            &format!(r#"{{"properties": {{"out": "{out}", "size": {size}}}}}"#),
        )
    };
    let b1 = run("cargo-test-passing.txt", 1000);
    let b2 = run("cargo-test-failing.txt", 1200);
    let b3 = run("cargo-test-failing.txt", 1100);
    // The step's result is its exit code's (cat succeeded).
    assert_eq!(b2["result"], "success", "{b2}");
    let b = get_json(&m.http, &format!("/api/v1/builds/{}", b2["id"]));
    let step = &b["build"]["steps"][1];
    assert_eq!(step["tests"]["passed"], 1, "{step}");
    assert_eq!(step["tests"]["failed"], 2, "{step}");
    assert_eq!(step["tests"]["skipped"], 1, "{step}");
    assert_eq!(
        step["tests"]["failing"],
        serde_json::json!(["tests::nested::panics", "tests::breaks"])
    );
    let size = &b["build"]["steps"][0];
    assert!(size.get("tests").is_none(), "only test steps: {size}");
    assert_eq!(
        size["figures"],
        serde_json::json!([{"name": "binary-size", "value": 1200.0, "unit": "bytes"}])
    );

    let s = get_json(&m.http, "/api/v1/builders/unit/series");
    let pts = s["builds"].as_array().cloned().unwrap_or_default();
    assert_eq!(pts.len(), 3, "{s}");
    let ids: Vec<&Value> = pts.iter().map(|p| &p["id"]).collect();
    assert_eq!(ids, [&b1["id"], &b2["id"], &b3["id"]], "oldest first");
    assert_eq!(pts[0]["tests"]["passed"], 3);
    assert_eq!(pts[0]["new_failures"], serde_json::json!([]));
    assert_eq!(
        pts[1]["new_failures"],
        serde_json::json!(["tests::nested::panics", "tests::breaks"]),
        "failing since build 2"
    );
    assert_eq!(
        pts[2]["new_failures"],
        serde_json::json!([]),
        "not new in build 3"
    );
    assert_eq!(pts[2]["tests"]["failed"], 2);
    assert_eq!(pts[2]["figures"]["binary-size"]["value"], 1100.0);
    assert_eq!(pts[2]["figures"]["binary-size"]["unit"], "bytes");
    assert_eq!(pts[2]["steps"][1]["name"], "unit-tests");
    assert!(pts[2]["duration_ms"].as_i64().is_some_and(|d| d >= 0));
    let two = get_json(&m.http, "/api/v1/builders/unit/series?limit=2");
    assert_eq!(two["builds"][0]["id"], b2["id"], "{two}");

    // Charts: one marker per build on each line.
    assert_eq!(circles(&chart(&m, "duration.svg")), 3);
    assert_eq!(
        circles(&chart(&m, "tests.svg")),
        9,
        "passed, failed, skipped"
    );
    let fig = chart(&m, "figure-binary-size.svg");
    assert_eq!(circles(&fig), 3);
    assert!(fig.contains("bytes"), "the unit on the axis");
    assert_eq!(circles(&chart(&m, "figure-nothing.svg")), 0);
    for (path, status) in [
        ("/api/v1/builders/unit/charts/pie.svg", 404),
        ("/api/v1/builders/unit/charts/tests.png", 404),
        ("/api/v1/builders/nobody/charts/tests.svg", 404),
        ("/api/v1/builders/nobody/series", 404),
        ("/api/v1/builders/unit/series?limit=0", 400),
        ("/api/v1/builders/unit/series?limit=101", 400),
    ] {
        let (st, body) = http("GET", &m.http, path, None);
        assert_eq!(st, status, "{path}: {body}");
    }
    pages_show_the_charts_and_failing_tests(&m, &dir, &b3);
}

/// The builder page shows the charts (images the browser loaded and
/// decoded) and the build page the failing tests, in a real browser.
fn pages_show_the_charts_and_failing_tests(m: &Master, dir: &Path, b3: &Value) {
    let Some(browser) = crate::test_web::chromium() else {
        return;
    };
    let Some(d) = crate::test_web::Driver::start(&browser, &dir.join("chromium")) else {
        return;
    };
    d.go(&format!("http://{}/#/builders/unit", m.http));
    d.element(r#"img.chart[data-chart="figure-binary-size"]"#);
    let loaded = wait_for("the charts to load", || {
        let (st, v) = d.call(
            "POST",
            "/execute/sync",
            serde_json::json!({"script": "return Array.from(document.querySelectorAll('img.chart')).map((i) => [i.dataset.chart, i.complete && i.naturalWidth]);", "args": []}),
        );
        assert_eq!(st, 200, "{v}");
        let list = v.as_array()?.clone();
        list.iter()
            .all(|x| x[1].as_u64().is_some_and(|w| w > 0))
            .then_some(list)
    });
    let names: Vec<&str> = loaded.iter().filter_map(|x| x[0].as_str()).collect();
    assert_eq!(
        names,
        ["duration", "tests", "figure-binary-size"],
        "{loaded:?}"
    );
    d.go(&format!("http://{}/#/builds/{}", m.http, b3["id"]));
    let failing = d.text("#failing");
    assert!(failing.contains("tests::nested::panics"), "{failing}");
    assert!(failing.contains("tests::breaks"), "{failing}");
    let steps = d.text("#steps");
    assert!(steps.contains("1 passed, 2 failed, 1 skipped"), "{steps}");
    assert!(steps.contains("binary-size=1100 bytes"), "{steps}");
}

fn have_pytest() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pytest"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A real pytest run in a `test` step: its summary and FAILED lines.
#[test]
fn pytest_results_from_a_real_run() {
    if !have_pytest() {
        if std::env::var("BBC_REQUIRE_PYTEST").is_ok_and(|v| v == "1") {
            panic!("BBC_REQUIRE_PYTEST=1 but python3 cannot import pytest (python3 -m pip install pytest)");
        }
        eprintln!("pytest_results_from_a_real_run: skipped, pytest is not installed");
        return;
    }
    let dir = temp_dir("track-pytest");
    let suite = dir.join("suite");
    std::fs::create_dir_all(&suite).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        suite.join("test_widget.py"),
        "import pytest\n\ndef test_spins():\n    assert True\n\n\
         def test_wobbles():\n    assert 1 == 2\n\n\
         @pytest.mark.skip(reason='later')\ndef test_flies():\n    pass\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Once read from the output, once from its JUnit report.
    let (m, _w) = start(
        &dir,
        &format!(
            r#"        test "cp {suite}/test_widget.py . && python3 -m pytest -p no:cacheprovider test_widget.py" name="pytest"
        test "python3 -m pytest -q -p no:cacheprovider --junitxml=report.xml test_widget.py" junit="report.xml" name="pytest-junit"
        test "true" junit="missing.xml" name="no-report""#,
            suite = suite.display()
        ),
    );
    let b = m.force_and_wait("unit", "{}");
    assert_eq!(b["result"], "failure", "{b}");
    let v = get_json(&m.http, &format!("/api/v1/builds/{}", b["id"]));
    let steps = &v["build"]["steps"];
    let out = &steps[0]["tests"];
    assert_eq!(
        (&out["passed"], &out["failed"], &out["skipped"]),
        (&1.into(), &1.into(), &1.into()),
        "{out}"
    );
    assert_eq!(
        out["failing"],
        serde_json::json!(["test_widget.py::test_wobbles"])
    );
    let report = &steps[1]["tests"];
    assert_eq!(
        (&report["passed"], &report["failed"], &report["skipped"]),
        (&1.into(), &1.into(), &1.into()),
        "{report}"
    );
    assert_eq!(
        report["failing"],
        serde_json::json!(["test_widget.test_wobbles"])
    );
    assert!(m
        .log(b["id"].as_u64().unwrap_or_default(), 1)
        .contains("junit report.xml: 1 passed, 1 failed, 1 skipped"));
    assert!(steps[2].get("tests").is_none(), "{}", steps[2]);
    let log = m.log(b["id"].as_u64().unwrap_or_default(), 2);
    assert!(log.contains("junit missing.xml: not read: "), "{log}");
    assert_eq!(steps[2]["result"], "success");
    let s = get_json(&m.http, "/api/v1/builders/unit/series");
    let p = &s["builds"][0];
    assert_eq!(p["tests"]["passed"], 2, "{s}");
    assert_eq!(p["tests"]["failed"], 2, "{s}");
    assert_eq!(
        p["new_failures"],
        serde_json::json!(["test_widget.py::test_wobbles", "test_widget.test_wobbles"])
    );
    assert_eq!(circles(&chart(&m, "tests.svg")), 3);
}
