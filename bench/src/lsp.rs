//! `bbc-bench lsp`: how fast `bbc lsp` answers while a large config is
//! typed. Opens the file in a `bbc lsp` process, then for each keystroke
//! (a character typed into a comment at the end, or `--type-after` a given
//! text, e.g. into a string) sends the change and at
//! once a hover request, whose answer needs the changed text checked:
//! keystroke → answer is the time to both. Also the keystroke → published
//! diagnostics time, which includes the server's debounce (150 ms).

use std::path::Path;
use std::time::{Duration, Instant};

use bbc_testkit::lsp::LspProcess;
use serde_json::{json, Value};

use crate::error::{err, BenchError};
use crate::stats::summary;

const GUARD: Duration = Duration::from_secs(120);

struct Client {
    p: LspProcess,
    id: i64,
}

impl Client {
    fn send(&mut self, v: Value) -> Result<(), BenchError> {
        self.p.send(v.to_string().as_bytes()).map_err(err)
    }
    fn request(&mut self, method: &str, params: Value) -> Result<i64, BenchError> {
        self.id += 1;
        let id = self.id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        Ok(id)
    }
    fn wait(&mut self, want: impl Fn(&Value) -> bool) -> Result<Value, BenchError> {
        loop {
            let body = self
                .p
                .recv(GUARD)
                .ok_or_else(|| err("bbc lsp stopped answering"))?;
            let m: Value = serde_json::from_slice(&body).map_err(err)?;
            if want(&m) {
                return Ok(m);
            }
        }
    }
}

pub fn run(
    bbc: &Path,
    file: &str,
    keystrokes: usize,
    type_after: Option<&str>,
) -> Result<(), BenchError> {
    let path = std::fs::canonicalize(file).map_err(|e| err(format!("{file}: {e}")))?;
    let text = std::fs::read_to_string(&path).map_err(err)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let uri = format!("file://{}", path.display());
    let p = LspProcess::start(bbc, dir).map_err(err)?;
    let mut c = Client { p, id: 0 };
    let t0 = Instant::now();
    let id = c.request(
        "initialize",
        json!({"processId": null, "rootUri": format!("file://{}", dir.display()), "capabilities": {}}),
    )?;
    c.wait(|m| m["id"] == id)?;
    c.send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}))?;
    let init = t0.elapsed();
    let t = Instant::now();
    c.send(
        json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params":
        {"textDocument": {"uri": uri, "languageId": "kdl", "version": 1, "text": text}}}),
    )?;
    let published =
        |m: &Value| m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri;
    let first = c.wait(published)?;
    let open = t.elapsed();
    let n_diags = first["params"]["diagnostics"]
        .as_array()
        .map_or(0, Vec::len);
    // Hover on the first line's first word: any request that needs the
    // analysis of the changed text.
    let hover = json!({"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}});
    let mut answer = Vec::new();
    let mut publish = Vec::new();
    // Where the letters go: after `type_after` (each keystroke then
    // changes a token, so the server must compile), or into a comment
    // added at the end (only trivia changes).
    let (mut typed, tail) = match type_after {
        Some(t) => {
            let at = text
                .find(t)
                .ok_or_else(|| err(format!("{file} has no `{t}`")))?
                + t.len();
            (text[..at].to_string(), text[at..].to_string())
        }
        None => (format!("{text}\n// "), String::new()),
    };
    let pid = c.p.id();
    let cpu0 = crate::procfs::cpu_s(pid);
    for i in 0..keystrokes {
        typed.push(char::from(b'a' + (i % 26) as u8));
        let t = Instant::now();
        c.send(
            json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params":
            {"textDocument": {"uri": uri, "version": i + 2}, "contentChanges": [{"text": format!("{typed}{tail}")}]}}),
        )?;
        let id = c.request("textDocument/hover", hover.clone())?;
        c.wait(|m| m["id"] == id)?;
        answer.push(t.elapsed().as_secs_f64() * 1000.0);
        c.wait(published)?;
        publish.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = (crate::procfs::cpu_s(pid) - cpu0) * 1000.0 / keystrokes as f64;
    let rss = crate::procfs::mem_kib(pid);
    let id = c.request("shutdown", Value::Null)?;
    c.wait(|m| m["id"] == id)?;
    c.send(json!({"jsonrpc": "2.0", "method": "exit"}))?;
    let _ = c.p.wait();
    println!(
        "{}: {} bytes, {n_diags} diagnostics; initialize (reads the folder's configs) {:.1} ms, open → diagnostics {:.1} ms",
        file,
        text.len(),
        init.as_secs_f64() * 1000.0,
        open.as_secs_f64() * 1000.0
    );
    println!(
        "{}",
        summary("keystroke → answer (change + hover)", "ms", &mut answer)
    );
    println!(
        "{}",
        summary(
            "keystroke → diagnostics published (150 ms debounce included)",
            "ms",
            &mut publish
        )
    );
    println!(
        "server CPU per keystroke (user + system): {cpu:.1} ms; server RSS {} (peak {})",
        crate::stats::mb(rss.0),
        crate::stats::mb(rss.1)
    );
    Ok(())
}
