//! The generated configs the benchmarks run. Their text decides what the
//! figures in docs/perf.md mean: change them and old figures no longer compare.

/// The benchmark shape: `builders` builders of 5 steps on 4 workers, a
/// single-branch scheduler per builder and one force scheduler naming all.
pub fn generate(builders: usize) -> String {
    let mut s = String::with_capacity(builders * 600);
    s.push_str("master {\n    title \"bench\"\n}\n");
    for w in 1..=4 {
        s.push_str(&format!(
            "worker \"w{w}\" password=(secret)\"w{w}\" max-builds=4\n"
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

/// `run`'s builds scenario: `builders` builders of one step (`true`) on
/// two workers, all under one force scheduler.
pub fn trivial_config(builders: usize, max_builds: usize) -> String {
    let mut s = String::from("master {\n    title \"bench builds\"\n}\n");
    for w in ["w1", "w2"] {
        s.push_str(&format!(
            "worker \"{w}\" password=(secret)\"{w}\" max-builds={max_builds}\n"
        ));
    }
    for i in 0..builders {
        s.push_str(&format!(
            "builder \"t{i}\" {{\n    workers \"w1\" \"w2\"\n    steps {{\n        shell \"true\"\n    }}\n}}\n"
        ));
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for i in 0..builders {
        s.push_str(&format!(" \"t{i}\""));
    }
    s.push_str("\n}\n");
    s
}

/// The shape of issue 12's production master: `builders` builders of 7
/// steps, each compile/test/shell step with a `warning-pattern` that is one
/// of 12 shared ~600-character regexes (`patterns`), or none at all (to
/// compare against). The patterns avoid `\` and `"` so they need no KDL
/// escaping.
pub fn generate_patterns(builders: usize, patterns: bool) -> String {
    let regexes: Vec<String> = (0..12).map(warning_regex).collect();
    let mut s = String::with_capacity(builders * if patterns { 6000 } else { 900 });
    s.push_str("master {\n    title \"bench patterns\"\n}\n");
    for w in 1..=4 {
        s.push_str(&format!(
            "worker \"w{w}\" password=(secret)\"w{w}\" max-builds=4\n"
        ));
    }
    let steps = [
        ("compile", "make -j4"),
        ("test", "make check"),
        ("shell", "make lint"),
        ("shell", "make docs"),
        ("test", "make integration"),
        ("shell", "make package"),
    ];
    for i in 0..builders {
        s.push_str(&format!(
            "builder \"b-{i}\" {{\n    workers \"w1\" \"w2\" \"w3\" \"w4\"\n    steps {{\n        git repo=\"https://git.example.org/project-{i}.git\"\n"
        ));
        for (k, (kind, cmd)) in steps.iter().enumerate() {
            s.push_str(&format!("        {kind} \"{cmd}\" name=\"s{k}\""));
            if patterns {
                let r = &regexes[(i + k) % regexes.len()];
                s.push_str(&format!(" warning-pattern=\"{r}\""));
            }
            s.push('\n');
        }
        s.push_str("    }\n}\n");
    }
    s.push_str("scheduler \"force\" kind=\"force\" {\n    builders");
    for i in 0..builders {
        s.push_str(&format!(" \"b-{i}\""));
    }
    s.push_str("\n}\n");
    s
}

/// Warning regex number `k`: an alternation of compiler-style warning
/// lines, about 600 characters.
fn warning_regex(k: usize) -> String {
    let tools = ["gcc", "clang", "rustc", "javac", "tsc", "pylint"];
    let alts: Vec<String> = tools
        .iter()
        .map(|t| {
            format!("{t}-{k}: (?:warning|deprecated|note)[: ]+[A-Za-z_][A-Za-z0-9_]*(?:[.][a-z]+)? at line [0-9]+(?:, col [0-9]+)?")
        })
        .collect();
    format!("(?im)^(?:{})", alts.join("|"))
}
