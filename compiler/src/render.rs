//! Rendering diagnostics: for people (rustc-like, via miette), as JSON for
//! tools, as GitHub workflow annotations and as SARIF (`sarif.rs`) for
//! config pull requests.

pub mod sarif;

use serde::Serialize;

use crate::diagnostic::{Diagnostic, Label, Severity};
use crate::source::SourceMap;

#[derive(Debug, Clone, Copy)]
pub struct HumanOptions {
    pub color: bool,
    /// Terminal width the report wraps at.
    pub width: usize,
}

/// One diagnostic as a rustc/cargo-like report.
pub fn human(map: &SourceMap, d: &Diagnostic, opts: HumanOptions) -> String {
    use miette::{
        GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource,
    };

    let file = map.get(d.primary.file);
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        non_empty(&d.primary.message),
        d.primary.span,
    )];
    // miette shows one source per report; labels in other files go in the help.
    let mut elsewhere = Vec::new();
    for l in &d.secondary {
        if l.file == d.primary.file {
            labels.push(LabeledSpan::new_with_span(non_empty(&l.message), l.span));
        } else {
            let f = map.get(l.file);
            let (line, col) = f.line_col(l.span.start);
            elsewhere.push(format!("{}:{line}:{col}: {}", f.name, l.message));
        }
    }
    let mut help = d.help.clone().unwrap_or_default();
    for e in elsewhere {
        if !help.is_empty() {
            help.push('\n');
        }
        help.push_str(&e);
    }
    let mut md = MietteDiagnostic::new(d.message.clone())
        .with_code(format!("{}({})", d.code.as_str(), d.code.slug()))
        .with_severity(match d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
        .with_labels(labels);
    if !help.is_empty() {
        md = md.with_help(help);
    }
    let report = miette::Report::new(md)
        .with_source_code(NamedSource::new(&file.name, file.text.clone()).with_language("kdl"));
    let theme = if opts.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(opts.width)
        .with_links(false)
        .with_context_lines(1);
    let mut out = String::new();
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = format!("{}: {}\n", d.code.as_str(), d.message);
    }
    out
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The closing line cargo prints: "error: 2 errors and 1 warning in master.kdl".
pub fn summary(errors: usize, warnings: usize, file: &str) -> String {
    fn n(k: usize, what: &str) -> String {
        format!("{k} {what}{}", if k == 1 { "" } else { "s" })
    }
    match (errors, warnings) {
        (0, 0) => format!("{file}: ok"),
        (0, w) => format!("{file}: {}", n(w, "warning")),
        (e, 0) => format!("{file}: {}", n(e, "error")),
        (e, w) => format!("{file}: {} and {}", n(e, "error"), n(w, "warning")),
    }
}

/// Version of the JSON output schema (documented in docs/diagnostics.md).
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct JsonSpan {
    pub start: u32,
    pub end: u32,
}

#[derive(Serialize)]
pub struct JsonLabel {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub span: JsonSpan,
    pub message: String,
    pub primary: bool,
}

#[derive(Serialize)]
pub struct JsonDiagnostic {
    pub code: &'static str,
    pub name: &'static str,
    pub severity: &'static str,
    pub message: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    pub span: JsonSpan,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
}

fn json_label(map: &SourceMap, l: &Label, primary: bool) -> JsonLabel {
    let f = map.get(l.file);
    let (line, column) = f.line_col(l.span.start);
    let (end_line, end_column) = f.line_col(l.span.end);
    JsonLabel {
        file: f.name.clone(),
        line,
        column,
        end_line,
        end_column,
        span: JsonSpan {
            start: l.span.start,
            end: l.span.end,
        },
        message: l.message.clone(),
        primary,
    }
}

pub fn json_diagnostic(map: &SourceMap, d: &Diagnostic) -> JsonDiagnostic {
    let p = json_label(map, &d.primary, true);
    let mut labels = vec![json_label(map, &d.primary, true)];
    labels.extend(d.secondary.iter().map(|l| json_label(map, l, false)));
    JsonDiagnostic {
        code: d.code.as_str(),
        name: d.code.slug(),
        severity: d.severity.as_str(),
        message: d.message.clone(),
        file: p.file,
        line: p.line,
        column: p.column,
        end_line: p.end_line,
        end_column: p.end_column,
        span: p.span,
        labels,
        help: d.help.clone(),
    }
}

/// A GitHub Actions workflow command, so the error shows on the pull request diff.
pub fn github(map: &SourceMap, d: &Diagnostic) -> String {
    let p = json_label(map, &d.primary, true);
    let level = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut msg = d.message.clone();
    if !d.primary.message.is_empty() {
        msg.push_str(&format!(" ({})", d.primary.message));
    }
    if let Some(h) = &d.help {
        msg.push_str("\nhelp: ");
        msg.push_str(h);
    }
    format!(
        "::{level} file={},line={},col={},endLine={},endColumn={},title={}::{}",
        escape_property(&p.file),
        p.line,
        p.column,
        p.end_line,
        p.end_column,
        escape_property(&format!("{} {}", d.code.as_str(), d.code.slug())),
        escape_data(&msg)
    )
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
