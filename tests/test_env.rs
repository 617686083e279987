//! `env` in both forms: properties (`env A="1"`) and children
//! (`env { A "1" }`) compile to the same graph, `bbc fmt` keeps the form
//! written, and names and secrets are checked the same way in both.

use bbc_compiler::diagnostic::Code;
use bbc_compiler::fmt::format_source;

struct NoImports;

impl bbc_compiler::source::Sources for NoImports {
    fn read(&self, path: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.to_string(),
        ))
    }
}

fn compile(text: &str) -> bbc_compiler::Compilation {
    bbc_compiler::compile_with("env.kdl", text.to_string(), &NoImports)
}

/// A config whose builder and step `env` are `builder_env` / `step_env`.
fn config(builder_env: &str, step_env: &str) -> String {
    format!(
        r#"worker "w" password=(secret)"w"
scheduler "force" kind="force" {{
    builders "b"
}}
builder "b" {{
    workers "w"
    property "flavour" "debug"
    {builder_env}
    steps {{
        shell "make" {{
            {step_env}
        }}
    }}
}}
"#
    )
}

fn codes(c: &bbc_compiler::Compilation) -> Vec<(Code, String)> {
    c.diagnostics
        .iter()
        .map(|d| (d.code, d.message.clone()))
        .collect()
}

#[test]
fn both_forms_lower_to_the_same_graph() {
    let children = config(
        r#"env {
        ASAN_OPTIONS "detect_leaks=1:abort_on_error=1"
        MallocNanoZone "0"
        OPT "/opt/${{ prop.flavour }}/bin"
    }"#,
        r#"env {
                CC "clang"
                "MY.VAR" "x"
            }"#,
    );
    let props = config(
        r#"env ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" MallocNanoZone="0" OPT="/opt/${{ prop.flavour }}/bin""#,
        r#"env CC="clang" "MY.VAR"="x""#,
    );
    // Part of each form, in either order.
    let mixed = config(
        r#"env MallocNanoZone="0" {
        OPT "/opt/${{ prop.flavour }}/bin"
        ASAN_OPTIONS "detect_leaks=1:abort_on_error=1"
    }"#,
        r#"env "MY.VAR"="x" {
                CC "clang"
            }"#,
    );
    let graph = |text: &str| {
        let c = compile(text);
        assert_eq!(codes(&c), vec![], "{text}");
        c.graph.unwrap_or_else(|| panic!("no graph for\n{text}"))
    };
    let (a, b, m) = (graph(&children), graph(&props), graph(&mixed));
    assert!(a.to_json().contains("MallocNanoZone"), "{}", a.to_json());
    assert!(a.to_json().contains("MY.VAR"), "{}", a.to_json());
    // Byte-identical lowering, hence the same hashes and no `bbc diff`.
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.to_json(), m.to_json());
    assert!(bbc_graph::diff::diff(&a, &b).is_empty());
    assert!(bbc_graph::diff::diff(&a, &m).is_empty());
}

#[test]
fn fmt_keeps_the_form_written() {
    let props = config(r#"env A="1"  B="2""#, r#"env   C="3""#);
    let out = format_source("env.kdl", &props).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(out.contains(r#"env A="1" B="2""#), "{out}");
    assert!(out.contains(r#"env C="3""#), "{out}");
    assert!(!out.contains("env {"), "{out}");
    let children = config("env {\n A \"1\"\n}", "");
    let out = format_source("env.kdl", &children).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(out.contains("env {\n        A \"1\"\n    }"), "{out}");
}

#[test]
fn a_name_given_in_both_forms_is_set_twice() {
    let c = compile(&config(
        r#"env A="1" B="2" { A "3" }"#,
        r#"env C="1" C="2""#,
    ));
    assert_eq!(
        codes(&c),
        vec![
            (Code::DuplicateSetting, "`A` is set twice".to_string()),
            (Code::DuplicateSetting, "`C` is set twice".to_string()),
        ]
    );
    // The later occurrence is the one reported: the child, then the second
    // property.
    let spans: Vec<&str> = c
        .diagnostics
        .iter()
        .map(|d| c.sources.get(d.primary.file).slice(d.primary.span))
        .collect();
    assert_eq!(spans, vec!["A", "C"]);
    assert!(c.graph.is_none());
}

/// A secret is a value of its own kind in both forms: the graph holds its
/// name apart from the plain variables (the master resolves it), the same
/// whichever form was written; it cannot mix with a plain variable of the
/// same name, and a secret with a plain string is not a secret.
#[test]
fn secrets_are_accepted_in_both_forms_and_kept_apart() {
    let mut graphs = Vec::new();
    for (b, s) in [
        (r#"env A=(secret)"tok" B="1""#, ""),
        (r#"env { A (secret)"tok"; B "1"; }"#, ""),
        ("", r#"env A=(secret)"tok" B="1""#),
        ("", r#"env { A (secret)"tok"; B "1"; }"#),
    ] {
        let c = compile(&config(b, s));
        assert_eq!(codes(&c), vec![], "{b}{s}");
        let g = c.graph.unwrap_or_else(|| panic!("no graph for {b}{s}"));
        let builder = &g.builders[0];
        let (vars, secrets) = if b.is_empty() {
            let step = &builder.steps[0];
            (&step.env, &step.env_secrets)
        } else {
            (&builder.env, &builder.env_secrets)
        };
        assert_eq!(vars.keys().collect::<Vec<_>>(), vec!["B"], "{b}{s}");
        let json = serde_json::to_string(secrets).unwrap_or_default();
        assert_eq!(json, r#"{"A":{"secret":"tok"}}"#, "{b}{s}");
        graphs.push((builder.hash.clone(), b.is_empty()));
    }
    // The two forms make the same builder.
    assert_eq!(graphs[0].0, graphs[1].0);
    assert_eq!(graphs[2].0, graphs[3].0);
    let c = compile(&config(r#"env A=(secret)"tok" { A "1"; }"#, ""));
    assert_eq!(
        codes(&c),
        vec![(Code::DuplicateSetting, "`A` is set twice".to_string())]
    );
    let c = compile(&config(r#"env A=(secret)"" "#, ""));
    assert_eq!(
        codes(&c),
        vec![(Code::MissingValue, "empty secret name".to_string())]
    );
}

#[test]
fn bad_names_and_values_are_reported_in_the_property_form() {
    let c = compile(&config(r#"env ""="1" B=1"#, ""));
    let got: Vec<Code> = c.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(got, vec![Code::InvalidChoice, Code::WrongType]);
}
