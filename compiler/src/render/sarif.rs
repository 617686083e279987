//! SARIF 2.1.0 (the OASIS Static Analysis Results Interchange Format), so
//! review tools show the checker's findings inline on a config's pull
//! request: GitHub code scanning takes it through
//! `github/codeql-action/upload-sarif` (docs/operations.md, "Checking
//! configs in CI").
//!
//! One `run` holds every file checked. Rules are the diagnostic codes that
//! occur, each with its summary and, where the caller has it, the long
//! explanation of `bbc explain` as help. Columns count Unicode code points
//! (as `bbc check` prints them), which the run declares in `columnKind`.

use serde_json::{json, Value};

use crate::diagnostic::{Code, Diagnostic, Label, Severity};
use crate::source::SourceMap;

/// Collects the results of every file of one `bbc check`, then renders
/// the log.
#[derive(Default)]
pub struct SarifLog {
    rules: Vec<Code>,
    results: Vec<Value>,
}

impl SarifLog {
    /// Adds a diagnostic; with `deny_warnings` a warning is reported at
    /// the `error` level, as it fails the check.
    pub fn add(&mut self, map: &SourceMap, d: &Diagnostic, deny_warnings: bool) {
        let index = match self.rules.iter().position(|c| *c == d.code) {
            Some(i) => i,
            None => {
                self.rules.push(d.code);
                self.rules.len() - 1
            }
        };
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning if deny_warnings => "error",
            Severity::Warning => "warning",
        };
        let mut text = d.message.clone();
        if !d.primary.message.is_empty() {
            text.push_str(&format!(" ({})", d.primary.message));
        }
        if let Some(h) = &d.help {
            text.push_str("\nhelp: ");
            text.push_str(h);
        }
        let related: Vec<Value> = d
            .secondary
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut loc = location(map, l);
                loc["id"] = json!(i);
                loc["message"] = json!({ "text": l.message });
                loc
            })
            .collect();
        let mut result = json!({
            "ruleId": d.code.as_str(),
            "ruleIndex": index,
            "level": level,
            "message": { "text": text },
            "locations": [location(map, &d.primary)],
        });
        if !related.is_empty() {
            result["relatedLocations"] = Value::Array(related);
        }
        self.results.push(result);
    }

    /// The SARIF document. `help` gives a code's long explanation in
    /// Markdown (the CLI has docs/diagnostics.md; the compiler does not).
    pub fn render(&self, version: &str, help: &dyn Fn(Code) -> Option<String>) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|c| {
                let mut rule = json!({
                    "id": c.as_str(),
                    "name": c.slug(),
                    "shortDescription": { "text": c.summary() },
                    "defaultConfiguration": { "level": c.severity().as_str() },
                });
                if let Some(md) = help(*c) {
                    rule["help"] = json!({ "text": md, "markdown": md });
                }
                rule
            })
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": { "driver": {
                    "name": "bbc",
                    "semanticVersion": version,
                    "rules": rules,
                }},
                "columnKind": "unicodeCodePoints",
                "results": self.results,
            }],
        })
    }
}

fn location(map: &SourceMap, l: &Label) -> Value {
    let f = map.get(l.file);
    let (start_line, start_column) = f.line_col(l.span.start);
    let (end_line, end_column) = f.line_col(l.span.end);
    json!({
        "physicalLocation": {
            "artifactLocation": { "uri": uri(&f.name) },
            "region": {
                "startLine": start_line,
                "startColumn": start_column,
                "endLine": end_line,
                "endColumn": end_column,
            },
        },
    })
}

/// A file name as a URI reference: relative names stay relative (review
/// tools resolve them against the checkout), absolute ones become
/// `file://` URIs; characters a URI cannot hold are percent-encoded.
fn uri(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    if name.starts_with('/') {
        out.push_str("file://");
    }
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySources;

    #[test]
    fn results_name_their_rule_place_and_related_places() {
        let mut src = MemorySources::default();
        src.0.insert(
            "dir with space/m.kdl".into(),
            "worker \"w\" password=(secret)\"w\"\nworker \"w\" password=(secret)\"w\"\n".into(),
        );
        let c = crate::compile("dir with space/m.kdl", &src);
        assert!(c.errors() > 0);
        let mut log = SarifLog::default();
        for d in &c.diagnostics {
            log.add(&c.sources, d, false);
        }
        let doc = log.render("0.1.0", &|c| Some(format!("# {}", c.as_str())));
        let run = &doc["runs"][0];
        assert_eq!(doc["version"], "2.1.0");
        let r = &run["results"][0];
        assert_eq!(r["ruleId"], "E0105");
        assert_eq!(r["level"], "error");
        let rule = &run["tool"]["driver"]["rules"][r["ruleIndex"].as_u64().unwrap_or(99) as usize];
        assert_eq!(rule["id"], "E0105");
        assert_eq!(rule["help"]["markdown"], "# E0105");
        let loc = &r["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "dir%20with%20space/m.kdl");
        assert_eq!(loc["region"]["startLine"], 2);
        let rel = &r["relatedLocations"][0]["physicalLocation"]["region"];
        assert_eq!(rel["startLine"], 1);
    }

    #[test]
    fn uris_are_relative_or_file_and_encoded() {
        assert_eq!(uri("a/b.kdl"), "a/b.kdl");
        assert_eq!(uri("/srv/ci/m.kdl"), "file:///srv/ci/m.kdl");
        assert_eq!(uri("a#b%.kdl"), "a%23b%25.kdl");
        assert_eq!(uri("ž.kdl"), "%C5%BE.kdl");
    }
}
