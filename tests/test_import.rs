//! `bbc import master.cfg` with Buildbot's real loader (Buildbot from
//! PyPI): Buildbot's own sample, a master.cfg using every translated
//! construct, the peer benchmark's shape (folded into matrices), an
//! untranslatable `doStepIf`, and no Python with Buildbot. Also Buildbot's
//! property names and its `POST /change_hook/base` against a real master.
//!
//! The Python is `$BBC_BUILDBOT_PYTHON`, else a virtual environment under
//! `target/` made once (`python3 -m venv`, `pip install buildbot`). Without
//! it the import tests say they skipped, unless `BBC_REQUIRE_BUILDBOT=1`
//! (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::common::{
    bbc, get_json, root, run, stderr, stdout, temp_dir, wait_for, write_secret, Master,
};

fn buildbot_python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    let py = PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("BBC_BUILDBOT_PYTHON") {
            return Some(PathBuf::from(p)).filter(|p| p.exists());
        }
        let venv = root().join("target/buildbot-venv");
        let py = venv.join("bin/python");
        let has = |py: &Path| {
            Command::new(py)
                .args(["-c", "import buildbot"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if py.exists() && has(&py) {
            return Some(py);
        }
        let ok = |c: &mut Command| c.stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        let made = ok(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            && ok(Command::new(venv.join("bin/pip")).args(["install", "-q", "buildbot"]));
        made.then_some(py).filter(|p| has(p))
    });
    if py.is_none() {
        if std::env::var("BBC_REQUIRE_BUILDBOT").as_deref() == Ok("1") {
            panic!("Buildbot is required (BBC_REQUIRE_BUILDBOT=1) but could not be installed");
        }
        eprintln!(
            "skipped: no Python with Buildbot (set BBC_BUILDBOT_PYTHON or allow pip install)"
        );
    }
    py.clone()
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/import").join(name)
}

/// `bbc import CFG --python PY -o OUT`, asserting success; the config text.
fn import(py: &Path, cfg: &Path, out: &Path) -> (String, String) {
    let o = bbc()
        .arg("import")
        .arg(cfg)
        .arg("--python")
        .arg(py)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bbc import {}: {}{}",
        cfg.display(),
        stdout(&o),
        stderr(&o)
    );
    (std::fs::read_to_string(out).unwrap(), stderr(&o))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `bbc check` passes with no diagnostic at all.
fn checks_clean(kdl: &Path) {
    let o = run(&["check", "--deny", "warnings", path(kdl)]);
    assert!(o.status.success(), "check: {}", stdout(&o));
    assert_eq!(stdout(&o), format!("{}: ok\n", path(kdl)));
}

fn no_diff(a: &Path, b: &Path) {
    let o = run(&["diff", path(a), path(b)]);
    assert!(o.status.success(), "diff: {}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o),
        "no changes\n",
        "bbc diff {} {}",
        a.display(),
        b.display()
    );
}

#[test]
fn buildbot_sample_master_cfg_imports_and_checks() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-sample");
    let bb = py.with_file_name("buildbot");
    let o = Command::new(&bb)
        .arg("create-master")
        .arg(dir.join("m"))
        .output()
        .unwrap();
    assert!(o.status.success(), "create-master: {}", stderr(&o));
    let cfg = dir.join("m/master.cfg");
    std::fs::copy(dir.join("m/master.cfg.sample"), &cfg).unwrap();
    let out = dir.join("master.kdl");
    let (text, _) = import(&py, &cfg, &out);
    assert!(text.contains("builder \"runtests\""), "{text}");
    assert!(text.contains("// --- Builders"), "{text}");
    assert!(!text.contains("NOT TRANSLATED"), "{text}");
    checks_clean(&out);
    no_diff(&out, &fixture("sample.kdl"));
}

#[test]
fn every_translated_construct_matches_the_hand_written_config() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-everything");
    let out = dir.join("master.kdl");
    let (text, err) = import(&py, &fixture("everything.cfg"), &out);
    assert!(!text.contains("not translated"), "{text}");
    assert!(!err.contains("not translated"), "{err}");
    // Plain passwords are never copied: the worker and the hook name secrets.
    assert!(!text.contains("pw1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("put it in the secret `change-hook`"),
        "{text}"
    );
    checks_clean(&out);
    no_diff(&out, &fixture("everything.kdl"));
}

/// The benchmark's plain config (bench/src/workload.rs, `generate`),
/// written out builder by builder, with the workers Buildbot's.
fn bench_kdl(builders: usize) -> String {
    let mut s = String::from("master {\n    title \"bench\"\n}\n");
    for w in 1..=4 {
        s.push_str(&format!(
            "worker \"w{w}\" password=(secret)\"w{w}\" max-builds=4 protocol=\"buildbot\"\n"
        ));
    }
    for i in 0..builders {
        s.push_str(&format!(
            r#"builder "b-{i}" {{
    workers "w1" "w2" "w3" "w4"
    tags "t{t}"
    steps {{
        git repo="https://git.example.org/project-{i}.git" mode="incremental"
        compile "make -j4" name="build" halt-on-failure=#true
        test "make check" name="test" timeout="20m"
        shell "make lint" name="lint" warn-on-failure=#true flunk-on-failure=#false
        upload "out/b-{i}.tar.gz" to="artifacts/b-{i}/${{{{ prop.buildnumber }}}}.tar.gz"
    }}
}}
scheduler "sb-{i}" kind="single-branch" {{
    branch "main"
    builders "b-{i}"
}}
"#,
            t = i % 10
        ));
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for i in 0..builders {
        s.push_str(&format!(" \"b-{i}\""));
    }
    s.push_str("\n}\n");
    s
}

#[test]
fn the_peer_benchmark_shape_becomes_matrices() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-bench");
    let out = dir.join("master.kdl");
    let (text, _) = import(&py, &fixture("bench.cfg"), &out);
    // 1,000 builders and 1,000 schedulers, each written once.
    assert_eq!(text.matches("builder \"").count(), 1, "{text:.3000}");
    assert_eq!(text.matches("scheduler \"sb-").count(), 1, "{text:.3000}");
    assert_eq!(text.matches("matrix {").count(), 2, "{text:.3000}");
    assert!(
        text.contains("builder \"b-${{ row.name }}\""),
        "{text:.3000}"
    );
    assert!(
        text.contains("to=\"artifacts/b-${{ row.name }}/${{ prop.buildnumber }}.tar.gz\""),
        "{text:.3000}"
    );
    assert!(text.len() < 120_000, "{} bytes", text.len());
    checks_clean(&out);
    let plain = dir.join("plain.kdl");
    std::fs::write(&plain, bench_kdl(1000)).unwrap();
    no_diff(&out, &plain);
}

#[test]
fn an_untranslatable_do_step_if_is_listed_and_marked() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-dostepif");
    let out = dir.join("master.kdl");
    let (text, err) = import(&py, &fixture("dostepif.cfg"), &out);
    let header: String = text.lines().take_while(|l| l.starts_with("//")).collect();
    assert!(header.contains("NOT TRANSLATED"), "{text}");
    assert!(
        header.contains(
            "builder `site` step 2 (`deploy`): doStepIf=the Python function `is_release`"
        ),
        "{text}"
    );
    // Marked where it occurred, and skipped rather than run everywhere.
    let deploy = text.find("shell \"make deploy\"").unwrap();
    let before = &text[..deploy];
    assert!(
        before
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("bbc import: not translated: doStepIf"),
        "{text}"
    );
    assert!(text[deploy..]
        .lines()
        .next()
        .unwrap()
        .contains("do-step-if=\"false\""));
    // A doStepIf=False is translated, not listed.
    assert!(!header.contains("notify"), "{text}");
    assert!(err.contains("1 thing(s) not translated"), "{err}");
    checks_clean(&out);
}

#[test]
fn interpolate_defaults_become_the_default_operator_or_are_listed() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-interpolate");
    let out = dir.join("master.kdl");
    let (text, err) = import(&py, &fixture("interpolate.cfg"), &out);
    assert!(
        text.contains("shell \"echo flavour=${{ prop.flavour ?? 'debug' }}\" name=\"default\""),
        "{text}"
    );
    let header: String = text.lines().take_while(|l| l.starts_with("//")).collect();
    assert!(header.contains("NOT TRANSLATED"), "{text}");
    for (step, spec, why) in [
        ("falsy", "%(prop:flavour:~debug)s", "unset *or false*"),
        (
            "replace",
            "%(prop:flavour:+set)s",
            "a replacement when the property is set",
        ),
        (
            "choice",
            "%(prop:flavour:?|yes|no)s",
            "a choice by whether the property is set",
        ),
    ] {
        assert!(
            header.contains(&format!("(`{step}`) command: Interpolate `{spec}`"))
                && header.contains(why),
            "{step}: {text}"
        );
    }
    assert!(!header.contains("`default`"), "{text}");
    // Each also leaves its step a command of no translatable parts.
    assert!(err.contains("6 thing(s) not translated"), "{err}");
    checks_clean(&out);

    // The translated default at work in a build: without the property
    // and with it.
    let dir = temp_dir("import-interpolate-run");
    write_secret(&dir, "w", "pw-interp-1");
    let m = Master::start(
        &dir,
        r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {
    builders "site"
}
builder "site" {
    workers "w"
    steps {
        shell "echo flavour=${{ prop.flavour ?? 'debug' }}" name="default"
        set-property "flavour" value="release"
        shell "echo flavour=${{ prop.flavour ?? 'debug' }}" name="set"
    }
}
"#,
    );
    let _w = m.worker("w", "pw-interp-1");
    m.wait_connected("w");
    let b = m.force_and_wait("site", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let id = b["id"].as_u64().unwrap_or_default();
    assert!(m.log(id, 0).contains("flavour=debug"), "{}", m.log(id, 0));
    assert!(m.log(id, 2).contains("flavour=release"), "{}", m.log(id, 2));
}

#[test]
fn no_python_with_buildbot_is_a_clear_error() {
    let dir = temp_dir("import-nopython");
    let cfg = dir.join("master.cfg");
    std::fs::write(&cfg, "c = BuildmasterConfig = {}\n").unwrap();
    // A PATH whose only python3 has no Buildbot (a shell script failing
    // every import, as such a Python does).
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("python3");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o: Output = bbc()
        .arg("import")
        .arg(&cfg)
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("needs a Python with Buildbot installed"), "{e}");
    assert!(
        e.contains(&format!("{}: no `buildbot` module", fake.display())),
        "{e}"
    );
    assert!(e.contains("--python"), "{e}");
    // The Python given has no Buildbot.
    let o = bbc()
        .arg("import")
        .arg(&cfg)
        .args(["--python", path(&fake)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("needs a Python with Buildbot installed"),
        "{}",
        stderr(&o)
    );
    // No Python at all on PATH.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = bbc()
        .arg("import")
        .arg(&cfg)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no python3 or python on PATH"),
        "{}",
        stderr(&o)
    );
    // A file that is not there.
    let o = run(&["import", "/nonexistent/master.cfg"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}

#[test]
fn buildbot_refusing_the_config_is_reported() {
    let Some(py) = buildbot_python() else { return };
    let dir = temp_dir("import-refused");
    let cfg = dir.join("master.cfg");
    std::fs::write(&cfg, "c = BuildmasterConfig = {}\nc['title'] = 3\n").unwrap();
    let o = bbc()
        .arg("import")
        .arg(&cfg)
        .arg("--python")
        .arg(&py)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Buildbot: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));
}

// --- Buildbot's property names

fn check_text(dir: &Path, text: &str) -> Output {
    let f = dir.join("c.kdl");
    std::fs::write(&f, text).unwrap();
    run(&["check", path(&f)])
}

#[test]
fn buildbot_property_names_check_and_misspellings_name_bbcs_spelling() {
    let dir = temp_dir("bb-props");
    let cfg = |expr: &str| {
        format!(
            "worker \"w\" password=(secret)\"w\"\nscheduler \"f\" kind=\"force\" {{\n    builders \"b\"\n}}\nbuilder \"b\" {{\n    workers \"w\"\n    steps {{\n        git repo=\"https://x.org/r.git\"\n        shell \"echo {expr}\"\n    }}\n}}\n"
        )
    };
    let all = "${{ prop.buildername }} ${{ prop.buildnumber }} ${{ prop.workername }} ${{ prop.builddir }} ${{ prop.got_revision }} ${{ prop.branch }} ${{ prop.revision }} ${{ prop.repository }} ${{ prop.project }} ${{ prop.codebase }} ${{ prop.scheduler }} ${{ prop.owners }}";
    let o = check_text(&dir, &cfg(all));
    assert!(o.status.success(), "{}", stdout(&o));
    // The help as one line, whatever the width it was wrapped to.
    let help = |o: &Output| stdout(o).split_whitespace().collect::<Vec<_>>().join(" ");
    let o = check_text(&dir, &cfg("${{ prop.slavename }}"));
    assert!(!o.status.success());
    assert!(
        help(&o).contains("`slavename` is Buildbot's old name: write `prop.worker`"),
        "{}",
        stdout(&o)
    );
    let o = check_text(&dir, &cfg("${{ prop.builder_name }}"));
    assert!(!o.status.success());
    assert!(
        help(&o).contains(
            "did you mean `builder`? (bbc's name; Buildbot's `buildername` is accepted too)"
        ),
        "{}",
        stdout(&o)
    );
}

#[test]
fn buildbot_property_names_have_values_in_a_build() {
    let dir = temp_dir("bb-props-run");
    write_secret(&dir, "w", "pw");
    let m = Master::start(
        &dir,
        r#"worker "w" password=(secret)"w"
scheduler "f" kind="force" {
    builders "b"
}
builder "b" {
    workers "w"
    workdir "b-dir"
    steps {
        shell "echo bn=${{ prop.buildername }} wn=${{ prop.workername }} bd=${{ prop.builddir }} n=${{ prop.buildnumber }}"
    }
}
"#,
    );
    let _w = m.worker("w", "pw");
    m.wait_connected("w");
    let b = m.force_and_wait("b", "{}");
    assert_eq!(b["result"], "success", "{b}");
    let log = m.log(b["id"].as_u64().unwrap(), 0);
    assert!(log.contains("bn=b wn=w bd=b-dir n=1"), "{log}");
}

// --- POST /change_hook/base

/// Posts a form with curl, as Buildbot's commit hooks do (`-u` is
/// Buildbot's `change_hook_auth`); the status and the body.
fn post_form(m: &Master, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}", "--data-raw", body]);
    if let Some(a) = auth {
        c.args(["-u", a]);
    }
    let o = c
        .arg(format!("http://{}/change_hook/base", m.http))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let out = stdout(&o);
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn buildbot_base_hook_form_posts_become_changes() {
    let dir = temp_dir("base-hook");
    write_secret(&dir, "hook", "s3cret");
    let m = Master::start(
        &dir,
        r#"change-source "base" kind="json-webhook" {
    secret (secret)"hook"
}
"#,
    );
    let form = "revision=1234abcd&branch=main&who=Ada+%3Cada%40example.org%3E&comments=fix+the+widget&files=%5B%22src%2Flib.rs%22%5D&properties=%7B%22urgent%22%3A+true%7D&when_timestamp=1700000000&repository=https%3A%2F%2Fgit.example.org%2Fwidget.git&category=c";
    // Authentication comes first: nothing is stored without it.
    let (st, body) = post_form(&m, None, form);
    assert_eq!(st, 401, "{body}");
    let (st, body) = post_form(&m, Some("hook:wrong"), form);
    assert_eq!(st, 403, "{body}");
    assert_eq!(
        get_json(&m.http, "/api/v1/changes")["changes"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let (st, body) = post_form(&m, Some("hook:s3cret"), form);
    assert_eq!(st, 201, "{body}");
    let c = wait_for("the change in the API", || {
        let v = get_json(&m.http, "/api/v1/changes");
        v["changes"].as_array()?.first().cloned()
    });
    assert_eq!(c["source"], "base", "{c}");
    assert_eq!(c["revision"], "1234abcd");
    assert_eq!(c["branch"], "main");
    assert_eq!(c["author"], "Ada <ada@example.org>");
    assert_eq!(c["comments"], "fix the widget");
    assert_eq!(c["files"][0], "src/lib.rs");
    assert_eq!(c["when"], 1_700_000_000_000u64);
    assert_eq!(c["properties"]["urgent"], true);
    // A malformed form is refused, naming the field.
    let (st, body) = post_form(&m, Some("hook:s3cret"), "branch=main&files=nope");
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("`files`"), "{body}");
}

// --- docs/migrating.md

/// The code spans of a table cell (the text between backticks).
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_migration_table_examples_are_the_tested_fixtures() {
    let doc = std::fs::read_to_string(root().join("docs/migrating.md")).unwrap();
    let cfg = std::fs::read_to_string(fixture("everything.cfg")).unwrap();
    let kdl = std::fs::read_to_string(fixture("everything.kdl")).unwrap();
    let table = doc
        .split("## Concepts")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .unwrap();
    let mut rows = 0;
    for line in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| concept"))
    {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells.len(), 3, "{line}");
        let (bb, ours) = (code_spans(cells[1]), code_spans(cells[2]));
        assert!(
            !bb.is_empty() && !ours.is_empty(),
            "a row without examples: {line}"
        );
        for s in bb {
            assert!(cfg.contains(s), "not in everything.cfg: `{s}`");
        }
        for s in ours {
            assert!(kdl.contains(s), "not in everything.kdl: `{s}`");
        }
        rows += 1;
    }
    assert!(rows >= 30, "{rows} rows");
}
