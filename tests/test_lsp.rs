//! `bbc lsp` driven over its standard input and output with real LSP
//! messages, as an editor does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bbc_testkit::lsp::LspProcess;

use serde_json::{json, Value};

use crate::common::{bbc, root, run, temp_dir};

struct Server {
    p: LspProcess,
    next_id: i64,
}

/// A hang guard only: a test waits for messages, and fails after this
/// long without the one it waits for instead of hanging CI.
const GUARD: Duration = Duration::from_secs(120);

impl Server {
    fn start(root_dir: &Path) -> Server {
        Server::start_with(root_dir, Value::Null)
    }

    /// Starts a server with the client's `initializationOptions`.
    fn start_with(root_dir: &Path, options: Value) -> Server {
        let p = LspProcess::start(Path::new(env!("CARGO_BIN_EXE_bbc")), root())
            .unwrap_or_else(|e| panic!("bbc lsp: {e}"));
        let mut s = Server { p, next_id: 1 };
        let uri = file_uri(root_dir);
        let r = s.request(
            "initialize",
            json!({"processId": null, "rootUri": uri, "capabilities": {},
                   "workspaceFolders": [{"uri": uri, "name": "ws"}],
                   "initializationOptions": options}),
        );
        let caps = &r["result"]["capabilities"];
        for c in [
            "documentFormattingProvider",
            "documentSymbolProvider",
            "definitionProvider",
            "referencesProvider",
            "hoverProvider",
            "codeActionProvider",
        ] {
            assert_eq!(caps[c], true, "{c} in {caps}");
        }
        s.notify("initialized", json!({}));
        s
    }

    fn send(&mut self, v: Value) {
        self.p
            .send(v.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.wait(|m| m["id"] == id)
    }

    fn wait(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let Some(body) = self.p.recv(GUARD) else {
                panic!("no awaited message from bbc lsp");
            };
            let m: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not JSON from bbc lsp: {e}"));
            if want(&m) {
                return m;
            }
        }
    }

    /// The next diagnostics published for `uri`.
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        let m = self.wait(|m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri
        });
        m["params"]["diagnostics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": uri, "languageId": "kdl", "version": 1, "text": text}}),
        );
    }

    fn change(&mut self, uri: &str, version: i32, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": version},
                   "contentChanges": [{"text": text}]}),
        );
    }

    fn stop(mut self) {
        let r = self.request("shutdown", Value::Null);
        assert!(r.get("error").is_none(), "{r}");
        self.notify("exit", Value::Null);
        let status = self.p.wait().unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "bbc lsp exited with {status}");
    }
}

/// A fresh directory with `master.kdl` holding `text`, and a server with
/// that file open: the directory, the file, its URI and the server.
fn open_master(name: &str, text: &str) -> (PathBuf, PathBuf, String, Server) {
    let dir = temp_dir(name);
    let path = dir.join("master.kdl");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let mut s = Server::start(&dir);
    s.open(&uri, text);
    (dir, path, uri, s)
}

fn file_uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn at(line: u32, character: u32) -> Value {
    json!({"line": line, "character": character})
}

/// The LSP position (UTF-16 units) of a 1-based line and character column.
fn lsp_position(text: &str, line: usize, column: usize) -> Value {
    let l = text.split('\n').nth(line - 1).unwrap_or("");
    let units: usize = l.chars().take(column - 1).map(char::len_utf16).sum();
    at(line as u32 - 1, units as u32)
}

/// Every golden case and example, opened in the editor, gets exactly the
/// diagnostics `bbc check --format json` reports for the file: same codes,
/// severities, places and messages.
#[test]
fn diagnostics_equal_bbc_check_for_every_golden_case_and_example() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap_or_else(|e| panic!("{e}"))
        .chain(std::fs::read_dir(root().join("examples")).unwrap_or_else(|e| panic!("{e}")))
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".kdl"))
        .collect();
    files.sort();
    assert!(files.len() > 150);
    let dir = temp_dir("lsp-golden");
    let mut s = Server::start(&dir);
    let mut compared = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{e}"));
        let uri = file_uri(Path::new(f));
        s.open(&uri, &text);
        let got = s.diagnostics(&uri);
        let o = run(&["check", "--format", "json", f]);
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<&Value> = doc["diagnostics"]
            .as_array()
            .map(|a| a.iter().filter(|d| d["file"] == f.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{f}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["code"], w["code"], "{f}");
            assert_eq!(g["source"], "bbc");
            let sev = if w["severity"] == "error" { 1 } else { 2 };
            assert_eq!(g["severity"], sev, "{f}");
            let lines = |k: &str, c: &str| {
                lsp_position(
                    &text,
                    w[k].as_u64().unwrap_or(0) as usize,
                    w[c].as_u64().unwrap_or(0) as usize,
                )
            };
            assert_eq!(g["range"]["start"], lines("line", "column"), "{f}");
            assert_eq!(g["range"]["end"], lines("end_line", "end_column"), "{f}");
            let msg = g["message"].as_str().unwrap_or_default();
            assert!(
                msg.starts_with(w["message"].as_str().unwrap_or("?")),
                "{f}: {msg}"
            );
            compared += 1;
        }
    }
    assert!(compared > 150, "{compared} diagnostics compared");
    s.stop();
}

/// A root config importing a file: edits are checked (debounced) and
/// their findings published to the right file; quick fixes, formatting,
/// the outline, definitions and references across the two files, hover.
#[test]
fn an_editing_session_across_an_import() {
    let dir = temp_dir("lsp-session");
    let lib = "worker \"w1\" password=(secret)\"w1\" max-builds=2\n";
    let main = "import \"lib.kdl\"\n\nbuilder \"b\" {\n    workers \"w1\"\n    steps {\n        shell \"make\"\n    }\n}\n\nscheduler \"s\" kind=\"force\" {\n    builders \"b\"\n}\n";
    std::fs::write(dir.join("lib.kdl"), lib).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("master.kdl"), main).unwrap_or_else(|e| panic!("{e}"));
    let main_uri = file_uri(&dir.join("master.kdl"));
    let lib_uri = file_uri(&dir.join("lib.kdl"));
    let mut s = Server::start(&dir);

    s.open(&main_uri, main);
    assert_eq!(s.diagnostics(&main_uri), Vec::<Value>::new());

    // A misspelt property in the imported file, typed in the editor (not
    // saved): found through the root that imports it, with a quick fix.
    s.open(&lib_uri, lib);
    let typo = lib.replace("max-builds", "max-bilds");
    s.change(&lib_uri, 2, &typo);
    let d = loop {
        let d = s.diagnostics(&lib_uri);
        if !d.is_empty() {
            break d;
        }
    };
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "E0102");
    assert_eq!(d[0]["data"]["replace"], "max-builds");
    let fix = s.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": lib_uri}, "range": d[0]["range"],
               "context": {"diagnostics": [d[0]]}}),
    );
    let edit = &fix["result"][0]["edit"]["changes"][&lib_uri][0];
    assert_eq!(edit["newText"], "max-builds");
    assert_eq!(edit["range"], d[0]["range"]);
    // The file on disk is untouched.
    assert_eq!(
        std::fs::read_to_string(dir.join("lib.kdl")).unwrap_or_default(),
        lib
    );
    s.change(&lib_uri, 3, lib);
    loop {
        if s.diagnostics(&lib_uri).is_empty() {
            break;
        }
    }

    // Go to definition: `workers "w1"` in master.kdl → lib.kdl.
    let def = s.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": main_uri}, "position": at(3, 14)}),
    );
    assert_eq!(def["result"]["uri"], lib_uri.as_str(), "{def}");
    assert_eq!(def["result"]["range"]["start"], at(0, 7));
    // References of the builder, from its definition.
    let refs = s.request(
        "textDocument/references",
        json!({"textDocument": {"uri": main_uri}, "position": at(2, 10),
               "context": {"includeDeclaration": true}}),
    );
    let lines: Vec<&Value> = refs["result"]
        .as_array()
        .map(|a| a.iter().map(|l| &l["range"]["start"]["line"]).collect())
        .unwrap_or_default();
    assert_eq!(lines, [&json!(2), &json!(10)], "{refs}");
    let hover = s.request(
        "textDocument/hover",
        json!({"textDocument": {"uri": main_uri}, "position": at(10, 15)}),
    );
    let h = hover["result"]["contents"]["value"]
        .as_str()
        .unwrap_or_default();
    assert!(h.contains("**builder** `b`"), "{h}");

    // The outline.
    let sy = s.request(
        "textDocument/documentSymbol",
        json!({"textDocument": {"uri": main_uri}}),
    );
    let names: Vec<(String, String)> = sy["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| (x["name"].to_string(), x["detail"].to_string()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            ("\"b\"".into(), "\"builder\"".into()),
            ("\"s\"".into(), "\"scheduler\"".into())
        ]
    );

    // Formatting gives what `bbc fmt` gives.
    let messy = main
        .replace("    workers", "workers")
        .replace("\n\n", "\n\n\n");
    s.change(&main_uri, 2, &messy);
    let f = s.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": main_uri}, "options": {"tabSize": 4, "insertSpaces": true}}),
    );
    let mut fmt = bbc()
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut i) = fmt.stdin.take() {
        i.write_all(messy.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let want = fmt.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        f["result"][0]["newText"],
        String::from_utf8_lossy(&want.stdout).as_ref()
    );
    assert_eq!(f["result"][0]["newText"], main);

    // Unknown requests get an error, not a crash.
    let r = s.request("textDocument/rename", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    s.stop();
}

/// The labels a completion at the `|` of `text` offers (the text is sent
/// as the document's new content first, as an editor does while typing).
fn complete(s: &mut Server, uri: &str, version: i32, text: &str) -> Vec<String> {
    let o = text
        .find('|')
        .unwrap_or_else(|| panic!("no cursor in {text}"));
    let body = text.replacen('|', "", 1);
    s.change(uri, version, &body);
    let line = body[..o].matches('\n').count() as u32;
    let col = (o - body[..o].rfind('\n').map_or(0, |n| n + 1)) as u32;
    let r = s.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": at(line, col)}),
    );
    r["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no completion list: {r}"))
        .iter()
        .filter_map(|i| i["label"].as_str().map(str::to_string))
        .collect()
}

/// Completion while typing (the text does not parse at the cursor) draws
/// on what the compiler's decoders asked for in the last good version, and
/// on the names the config defines.
#[test]
fn completion_while_typing() {
    let dir = temp_dir("lsp-complete");
    let path = dir.join("master.kdl");
    let good = r#"worker "linux-1" password=(secret)"w1"
worker "linux-2" password=(secret)"w2"
builder "b" {
    workers "linux-1"
    steps {
        shell "make"
    }
}
scheduler "s" kind="force" {
    builders "b"
}
"#;
    std::fs::write(&path, good).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let mut s = Server::start(&dir);
    s.open(&uri, good);
    // Checked once (a lint may warn; it decodes): the schema is recorded.
    let d = s.diagnostics(&uri);
    assert!(d.iter().all(|d| d["severity"] != 1), "{d:?}");

    // A child of `builder` being typed: its settings, not the step kinds.
    let got = complete(
        &mut s,
        &uri,
        2,
        &good.replace(
            "    workers \"linux-1\"\n",
            "    workers \"linux-1\"\n    ma|\n",
        ),
    );
    assert!(got.contains(&"steps".to_string()), "{got:?}");
    assert!(!got.contains(&"shell".to_string()), "{got:?}");

    // Inside `steps`: the step kinds.
    let got = complete(
        &mut s,
        &uri,
        3,
        &good.replace(
            "        shell \"make\"\n",
            "        shell \"make\"\n        gi|\n",
        ),
    );
    for k in ["shell", "git", "trigger", "upload"] {
        assert!(got.contains(&k.to_string()), "{k} in {got:?}");
    }
    assert!(!got.contains(&"workers".to_string()), "{got:?}");

    // A property of a scheduler.
    let got = complete(
        &mut s,
        &uri,
        4,
        &good.replace("kind=\"force\" {", "kind=\"force\" bu| {"),
    );
    assert!(got.contains(&"kind=".to_string()), "{got:?}");

    // `kind=` values of a scheduler, half typed: the text does not parse.
    let got = complete(
        &mut s,
        &uri,
        5,
        &good.replace("kind=\"force\" {", "kind=\"|"),
    );
    for k in ["\"force\"", "\"periodic\"", "\"single-branch\""] {
        assert!(got.contains(&k.to_string()), "{k} in {got:?}");
    }
    assert!(
        !got.contains(&"\"mail\"".to_string()),
        "a reporter kind: {got:?}"
    );

    // Worker names inside `workers`.
    let got = complete(
        &mut s,
        &uri,
        6,
        &good.replace("workers \"linux-1\"", "workers \"linux-1\" |"),
    );
    assert!(got.contains(&"\"linux-2\"".to_string()), "{got:?}");
    assert!(!got.contains(&"\"b\"".to_string()), "a builder: {got:?}");

    // Build properties after `prop.`, inside a multi-line string: the
    // built-in ones and those the config declares (here a force parameter).
    let with_param = good.replace(
        "kind=\"force\" {",
        "kind=\"force\" {\n    param \"target\" default=\"all\"",
    );
    s.change(&uri, 7, &with_param);
    s.wait(|m| m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == 7);
    let got = complete(
        &mut s,
        &uri,
        8,
        &with_param.replace(
            "        shell \"make\"\n",
            "        shell \"\"\"\n            make ${{ prop.|\n",
        ),
    );
    for k in ["got_revision", "branch", "target"] {
        assert!(got.contains(&k.to_string()), "{k} in {got:?}");
    }
    assert!(!got.contains(&"linux-1".to_string()), "{got:?}");
    s.stop();
}

/// Hover on a node name shows its entry of the language reference; on a
/// diagnostic code, `bbc explain`'s text.
#[test]
fn hover_shows_the_language_reference() {
    let text = "worker \"w\" password=(secret)\"w\"\n// E0102\nbuilder \"b\" {\n    workers \"w\"\n    steps { shell \"make\" }\n}\n";
    let (_, _, uri, mut s) = open_master("lsp-hover-ref", text);
    let hover = |s: &mut Server, line: u32, col: u32| -> String {
        let r = s.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": at(line, col)}),
        );
        r["result"]["contents"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no hover: {r}"))
            .to_string()
    };
    let h = hover(&mut s, 2, 2);
    assert!(h.starts_with("## `builder`"), "{h}");
    let doc =
        std::fs::read_to_string(root().join("docs/language.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(doc.contains(&h), "the reference's own text");
    let h = hover(&mut s, 4, 13);
    assert!(h.contains("`shell`"), "{h}");
    let h = hover(&mut s, 1, 5);
    assert!(h.starts_with("## E0102"), "{h}");
    s.stop();
}

/// Hover on a `use` or a `matrix` says what the expansion produced: how
/// many nodes and which.
#[test]
fn hover_on_use_and_matrix_shows_the_expansion() {
    let dir = temp_dir("lsp-hover-expand");
    let path = dir.join("master.kdl");
    let text = r#"worker "w" password=(secret)"w"
template "checks" {
    param "target" type="string" default="all"
    shell "make ${{ target }}" name="make-${{ target }}"
    test "make check" name="check"
}
matrix {
    axis "os" "linux" "mac"
    axis "mode" "debug" "release"
    builder "b-${{ os }}-${{ mode }}" {
        workers "w"
        steps {
            use "checks" target="x"
        }
    }
}
builder "one" {
    workers "w"
    steps {
        use "checks"
    }
}
"#;
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let mut s = Server::start(&dir);
    s.open(&uri, text);
    let d = s.diagnostics(&uri);
    assert!(d.iter().all(|d| d["severity"] != 1), "{d:?}");
    let mut hover = |line: u32, col: u32| -> String {
        let r = s.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": at(line, col)}),
        );
        r["result"]["contents"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no hover: {r}"))
            .to_string()
    };
    let m = hover(6, 2);
    assert!(m.contains("expands to 4 nodes"), "{m}");
    for b in [
        "b-linux-debug",
        "b-linux-release",
        "b-mac-debug",
        "b-mac-release",
    ] {
        assert!(m.contains(&format!("builder \"{b}\"")), "{b} in {m}");
    }
    // On the template's name in a `use` inside steps: its two steps.
    let u = hover(19, 14);
    assert!(u.contains("expands to 2 nodes"), "{u}");
    assert!(
        u.contains("shell \"make-all\"") && u.contains("test \"check\""),
        "{u}"
    );
    s.stop();
}

/// A diagnostic for a missing child (E0104) offers to add it; the edited
/// text then checks clean.
#[test]
fn a_missing_child_is_added_by_the_quick_fix() {
    let text = "worker \"w\" password=(secret)\"w\"\nbuilder \"b\" {\n    steps {\n        shell \"make\"\n    }\n}\nscheduler \"s\" kind=\"force\" {\n    builders \"b\"\n}\n";
    let (_, _, uri, mut s) = open_master("lsp-add-child", text);
    let d = s.diagnostics(&uri);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "E0104", "{d:?}");
    assert_eq!(d[0]["data"]["add_child"], "workers \"NAME\"", "{d:?}");
    let fix = s.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": d[0]["range"],
               "context": {"diagnostics": [d[0]]}}),
    );
    assert_eq!(fix["result"][0]["title"], "add `workers \"NAME\"`", "{fix}");
    let edit = &fix["result"][0]["edit"]["changes"][&uri][0];
    // Inserted at the start of the closing brace's line (line 5).
    assert_eq!(edit["range"]["start"], at(5, 0), "{edit}");
    assert_eq!(edit["range"]["end"], at(5, 0), "{edit}");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let new_text = edit["newText"].as_str().unwrap_or_default();
    let fixed = format!("{}{new_text}{}", lines[..5].concat(), lines[5..].concat());
    // The placeholder names the worker to fill in: with the real name the
    // config checks clean.
    let fixed = fixed.replace("\"NAME\"", "\"w\"");
    s.change(&uri, 2, &fixed);
    let d =
        s.wait(|m| m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == 2);
    assert_eq!(d["params"]["diagnostics"], json!([]), "{fixed}");
    assert!(fixed.contains("    workers \"w\"\n}"), "{fixed}");
    s.stop();
}

/// Go to definition of a standard-library template lands in its source
/// (`stdlib/` of the checkout the binary was built from).
#[test]
fn definition_of_a_stdlib_template() {
    let text = "import \"std/make.kdl\"\nworker \"w\" password=(secret)\"w\"\nbuilder \"b\" {\n    workers \"w\"\n    steps {\n        use \"make-check\"\n    }\n}\n";
    let (_, _, uri, mut s) = open_master("lsp-stdlib-def", text);
    let d = s.diagnostics(&uri);
    assert!(d.iter().all(|d| d["severity"] != 1), "{d:?}");
    let def = s.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": at(5, 15)}),
    );
    let std_file = root().join("stdlib/make.kdl");
    assert_eq!(def["result"]["uri"], file_uri(&std_file).as_str(), "{def}");
    let source = std::fs::read_to_string(&std_file).unwrap_or_else(|e| panic!("{e}"));
    let line = def["result"]["range"]["start"]["line"]
        .as_u64()
        .unwrap_or(0) as usize;
    assert_eq!(
        source.lines().nth(line),
        Some("template \"make-check\" {"),
        "{def}"
    );
    s.stop();
}

/// Each diagnostic's code links to its section of docs/diagnostics.md: at
/// the URL the client configures, else the file in this checkout.
#[test]
fn diagnostic_codes_link_to_their_documentation() {
    let dir = temp_dir("lsp-code-links");
    let path = dir.join("master.kdl");
    let text = "worker \"w\" password=(secret)\"w\" max-bilds=2\nbuilder \"b\" {\n    steps {\n        shell \"make\"\n    }\n}\n";
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let base = "https://docs.example.org/bbc/docs/diagnostics.md";
    let mut s = Server::start_with(&dir, json!({ "diagnosticsUrl": base }));
    s.open(&uri, text);
    let d = s.diagnostics(&uri);
    let links: Vec<(&str, &str)> = d
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default(),
                d["codeDescription"]["href"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            ("E0102", &*format!("{base}#e0102-unknown-property")),
            ("E0104", &*format!("{base}#e0104-missing-value")),
        ],
        "{d:?}"
    );
    s.stop();

    // Not configured: the documentation in the checkout the binary was
    // built from, which has a heading for the anchor.
    let mut s = Server::start(&dir);
    s.open(&uri, text);
    let d = s.diagnostics(&uri);
    let href = d[0]["codeDescription"]["href"].as_str().unwrap_or_default();
    let docs = root().join("docs/diagnostics.md");
    assert_eq!(
        href,
        format!("{}#e0102-unknown-property", file_uri(&docs)),
        "{d:?}"
    );
    let md = std::fs::read_to_string(&docs).unwrap_or_else(|e| panic!("{e}"));
    assert!(md.contains("\n## E0102 unknown-property\n"));
    s.stop();
}

/// One node name under two parents: completion offers what each parent's
/// decoder reads there (`lock` at the top level declares a lock, inside a
/// builder it uses one; `tls` of the master has certificate files, of an
/// IRC reporter is a switch).
#[test]
fn completion_follows_the_parent_of_a_shared_node_name() {
    let dir = temp_dir("lsp-complete-parents");
    let path = dir.join("master.kdl");
    let good = r##"master {
    tls cert="/etc/bbc/master.crt" key="/etc/bbc/master.key"
}
worker "w" password=(secret)"w"
lock "db" kind="master" max-count=2
builder "b" {
    workers "w"
    lock "db" access="exclusive"
    steps {
        shell "make"
    }
}
reporter "irc" kind="irc" {
    server "irc.libera.chat:6697"
    channel "#ci"
    tls #true
}
"##;
    std::fs::write(&path, good).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let mut s = Server::start(&dir);
    s.open(&uri, good);
    let d = s.diagnostics(&uri);
    assert!(d.iter().all(|d| d["severity"] != 1), "{d:?}");

    let top = complete(
        &mut s,
        &uri,
        2,
        &good.replace("kind=\"master\" max-count=2", "|"),
    );
    let used = complete(&mut s, &uri, 3, &good.replace("access=\"exclusive\"", "|"));
    assert!(
        top.contains(&"kind=".to_string()) && top.contains(&"max-count=".to_string()),
        "{top:?}"
    );
    assert!(!top.contains(&"access=".to_string()), "{top:?}");
    assert!(used.contains(&"access=".to_string()), "{used:?}");
    assert!(!used.contains(&"max-count=".to_string()), "{used:?}");
    // The values of a property follow the parent too.
    let kinds = complete(
        &mut s,
        &uri,
        4,
        &good.replace("kind=\"master\"", "kind=\"|"),
    );
    assert!(kinds.contains(&"\"worker\"".to_string()), "{kinds:?}");
    assert!(!kinds.contains(&"\"exclusive\"".to_string()), "{kinds:?}");

    let master_tls = complete(
        &mut s,
        &uri,
        5,
        &good.replace("key=\"/etc/bbc/master.key\"", "|"),
    );
    let irc_tls = complete(&mut s, &uri, 6, &good.replace("tls #true", "tls |"));
    assert!(master_tls.contains(&"key=".to_string()), "{master_tls:?}");
    assert!(!irc_tls.contains(&"key=".to_string()), "{irc_tls:?}");
    assert!(!irc_tls.contains(&"cert=".to_string()), "{irc_tls:?}");

    // Hover on `tls`: the row of the enclosing node's table.
    s.change(&uri, 7, good);
    let mut hover = |line: u32, col: u32| -> String {
        let r = s.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": at(line, col)}),
        );
        r["result"]["contents"]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no hover: {r}"))
            .to_string()
    };
    let h = hover(15, 5);
    assert!(h.contains("| `tls` | boolean"), "{h}");
    let h = hover(1, 5);
    assert!(h.contains("cert="), "{h}");
    s.stop();
}

/// Edits between tokens (a comment typed, lines added above a mistake)
/// are not compiled again: the last findings are moved. They must be what
/// `bbc check` reports for the new text, at the moved places.
#[test]
fn edits_between_tokens_move_the_findings() {
    let text = "worker \"w\" password=(secret)\"w\" max-bilds=2\n// note\nbuilder \"b\" {\n    steps {\n        shell \"make\"\n    }\n}\n";
    let (_, path, uri, mut s) = open_master("lsp-trivia", text);
    let before = s.diagnostics(&uri);
    assert_eq!(before.len(), 2, "{before:?}");
    let edits = [
        text.replace("// note", "// note, longer"),
        text.replace("// note\n", "// note\n\n\n/* a block */\n"),
        format!("\n\n{}", text.replace("    steps", "\tsteps")),
        // A comment left open is a syntax error; closed, the same nodes
        // as before it, but the error must go.
        format!("{text}/* open"),
        format!("{text}/* open */"),
        // A token changed: compiled again.
        text.replace("max-bilds", "max-builds"),
    ];
    for (v, new) in edits.iter().enumerate() {
        let version = v as i32 + 2;
        s.change(&uri, version, new);
        let m = s.wait(|m| {
            m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == version
        });
        let got = m["params"]["diagnostics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        std::fs::write(&path, new).unwrap_or_else(|e| panic!("{e}"));
        assert_as_bbc_check(&path, new, &got);
    }
    s.stop();
}

/// `got`, the diagnostics published for the file at `path` whose text is
/// `text`, are those `bbc check --format json` reports for that file (the
/// file on disk holds `text`): same number, codes, places and messages.
fn assert_as_bbc_check(path: &Path, text: &str, got: &[Value]) {
    let file = path.to_string_lossy();
    let o = run(&["check", "--format", "json", &file]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    let want: Vec<&Value> = doc["diagnostics"]
        .as_array()
        .map(|a| a.iter().filter(|d| d["file"] == file.as_ref()).collect())
        .unwrap_or_default();
    assert_eq!(got.len(), want.len(), "{text}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["code"], w["code"], "{got:?}");
        let pos = |k: &str, c: &str| {
            lsp_position(
                text,
                w[k].as_u64().unwrap_or(0) as usize,
                w[c].as_u64().unwrap_or(0) as usize,
            )
        };
        assert_eq!(g["range"]["start"], pos("line", "column"), "{w}");
        assert_eq!(g["range"]["end"], pos("end_line", "end_column"), "{w}");
        let msg = g["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(w["message"].as_str().unwrap_or("?")),
            "{msg} against {w}"
        );
    }
}

/// Token edits in the 1,000-builder example (a value, a step's name, a
/// mistake made and fixed, a duplicate name, a broken reference), each
/// answered from the server's session state (the request after each
/// change compiles it; the publish after the debounce reuses that): after
/// every one the published diagnostics are a fresh `bbc check`'s.
#[test]
fn token_edits_in_the_production_example_match_a_fresh_check() {
    let dir = temp_dir("lsp-token-edits");
    std::fs::create_dir_all(dir.join("production")).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(root().join("examples/production.kdl"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(
        root().join("examples/production/components.kdl"),
        dir.join("production/components.kdl"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("production.kdl");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let uri = file_uri(&path);
    let mut s = Server::start(&dir);
    s.open(&uri, &text);
    assert_eq!(s.diagnostics(&uri), Vec::<Value>::new());
    let lock = "lock \"release-signing\" kind=\"master\" max-count=1\n";
    let mut edits: Vec<String> = Vec::new();
    let mut edit = |from: &str, to: &str| {
        let last = edits.last().cloned().unwrap_or_else(|| text.clone());
        assert!(last.contains(from), "{from}");
        edits.push(last.replacen(from, to, 1));
    };
    // A value typed into, one character at a time.
    edit("title \"Acme Platform CI", "title \"Acme Platform CIx");
    edit("title \"Acme Platform CIx", "title \"Acme Platform CIxy");
    // A step renamed inside the matrix body (every builder's copy).
    edit("name=\"sign\"", "name=\"sign-release\"");
    // A mistake in every builder (reported once), then fixed.
    edit("collapse-requests #true", "collapse-requests \"yes\"");
    edit("collapse-requests \"yes\"", "collapse-requests #true");
    // A duplicate name, then removed.
    edit(lock, &format!("{lock}{lock}"));
    edit(&format!("{lock}{lock}"), lock);
    // A broken reference (with its "did you mean"), then mended.
    edit("locks=\"release-signing\"", "locks=\"release-signin\"");
    edit("locks=\"release-signin\"", "locks=\"release-signing\"");
    // An unknown worker pool from a variable typed wrong, then back.
    edit("else rel-lx-workers)", "else rel-lx-worker)");
    edit("else rel-lx-worker)", "else rel-lx-workers)");
    let hover = json!({"textDocument": {"uri": uri}, "position": at(0, 1)});
    let mut errors = 0;
    for (v, new) in edits.iter().enumerate() {
        let version = v as i32 + 2;
        s.change(&uri, version, new);
        // A request needs the new text checked at once.
        s.request("textDocument/hover", hover.clone());
        let m = s.wait(|m| {
            m["method"] == "textDocument/publishDiagnostics"
                && m["params"]["uri"] == uri.as_str()
                && m["params"]["version"] == version
        });
        let got = m["params"]["diagnostics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        errors += got.len();
        std::fs::write(&path, new).unwrap_or_else(|e| panic!("{e}"));
        assert_as_bbc_check(&path, new, &got);
    }
    // The mistakes were made and seen.
    assert!(errors >= 4, "{errors} diagnostics over the edits");
    s.stop();
}
