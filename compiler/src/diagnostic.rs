//! Diagnostic *data*. Rendering (human, JSON, GitHub annotations) is a
//! separate step in `render`, so every phase only says what is wrong, where,
//! and what to do.

use crate::source::FileId;
use crate::syntax::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $slug:literal, $summary:literal; )*) => {
        /// Every diagnostic has one stable code. Codes are never reused or
        /// renumbered; `docs/diagnostics.md` explains each with an example.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            /// `E0101`, `W0501`, …
            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }
            /// A short kebab-case name, e.g. `unknown-property`.
            pub fn slug(self) -> &'static str {
                match self { $( Code::$variant => $slug, )* }
            }
            /// One line saying what the code is about.
            pub fn summary(self) -> &'static str {
                match self { $( Code::$variant => $summary, )* }
            }
            pub fn parse(s: &str) -> Option<Code> {
                let s = s.trim();
                Code::ALL.iter().copied().find(|c| c.as_str().eq_ignore_ascii_case(s) || c.slug() == s)
            }
        }
    };
}

codes! {
    Syntax = "E0001", "syntax", "The file is not valid KDL 2.0.";
    Io = "E0002", "io", "A source file could not be read.";
    UnknownNode = "E0101", "unknown-node", "A node name is not one this place accepts.";
    UnknownProperty = "E0102", "unknown-property", "A property name is not one this node accepts.";
    WrongType = "E0103", "wrong-type", "A value has the wrong type (string, integer, boolean, secret).";
    MissingValue = "E0104", "missing-value", "A required argument, property or child node is missing.";
    DuplicateName = "E0105", "duplicate-name", "Two entities of one kind (or two steps of one builder) share a name.";
    InvalidDuration = "E0106", "invalid-duration", "A duration is not of the form 30s, 5m, 1h30m, 250ms, 2d.";
    InvalidCron = "E0107", "invalid-cron", "A cron expression does not parse.";
    InvalidPattern = "E0108", "invalid-pattern", "A glob or regular expression does not parse.";
    InvalidAddress = "E0109", "invalid-address", "A URL, socket address or host:port is malformed.";
    OutOfRange = "E0110", "out-of-range", "A number is outside the range this setting allows.";
    Conflict = "E0111", "conflicting-options", "Two settings cannot be used together.";
    InvalidChoice = "E0112", "invalid-choice", "A value is not one of the allowed words.";
    UnexpectedArgument = "E0113", "unexpected-argument", "A node has more arguments, or children, than it takes.";
    DuplicateSetting = "E0114", "duplicate-setting", "A setting that takes one value is given twice.";
    InvalidDowntime = "E0115", "invalid-downtime", "A downtime window is not of the form `Sat 02:00-06:00`.";
    InvalidTimeZone = "E0116", "invalid-time-zone", "A time zone is not an IANA name such as Europe/Prague or UTC.";
    InvalidExpression = "E0117", "invalid-expression", "A `${{ … }}` expression does not parse.";
    NotYetSupported = "E0118", "not-yet-supported", "A language feature this version of bbc does not implement yet.";
    InvalidTemplate = "E0119", "invalid-template", "A handlebars message template does not parse.";
    TypeMismatch = "E0120", "type-mismatch", "An expression combines values of the wrong types.";
    Arithmetic = "E0121", "invalid-arithmetic", "Integer arithmetic divides by zero or overflows.";
    MissingField = "E0122", "missing-field", "A record has no field of that name (and no `??` default is given).";
    NotCompileTime = "E0123", "not-compile-time", "A value needed while compiling uses a build property, or a run-time condition uses an operator only compile-time values have.";
    InvalidDeclaration = "E0124", "invalid-declaration", "A `let`, `template`, `param`, `import` or `matrix` declaration is malformed.";
    BadArgument = "E0125", "bad-argument", "A template is used with a missing, unknown or ill-typed argument, or in the wrong place.";
    InvalidStore = "E0126", "invalid-store", "A `master { store … }` is not a PostgreSQL URL bbc can use (a password in it, no user, host or database, options), or its schema is not a plain name.";
    UnknownReference = "E0201", "unknown-reference", "A name refers to a worker, builder, scheduler, lock, change source, role or OAuth provider that does not exist.";
    WrongReferenceKind = "E0202", "wrong-reference-kind", "A reference names an entity of the wrong kind, e.g. a trigger step naming a non-triggerable scheduler.";
    UnknownVariable = "E0203", "unknown-variable", "A name in `${{ … }}` is not a variable, template parameter or matrix axis.";
    UnknownTemplate = "E0204", "unknown-template", "`use` or `extends=` names a template that does not exist.";
    UnknownImport = "E0205", "unknown-import", "An imported file does not exist (or is not in the standard library).";
    Cycle = "E0301", "cycle", "Trigger and dependent edges between schedulers form a cycle.";
    ImportCycle = "E0302", "import-cycle", "Files import each other in a cycle.";
    DefinitionCycle = "E0303", "definition-cycle", "A variable's value depends on itself, or templates extend each other in a cycle.";
    UnknownBuildProperty = "E0401", "unknown-build-property", "`${{ prop.NAME }}` names a property that cannot exist at that point.";
    UnreachableBuilder = "W0501", "unreachable-builder", "No scheduler can ever start this builder.";
    UnusedWorker = "W0502", "unused-worker", "No builder runs on this worker.";
    UnusedChangeSource = "W0503", "unused-change-source", "No scheduler looks at the changes of this change source.";
    PlainSecret = "W0504", "plain-secret", "A password, token or webhook secret is written as a plain string.";
    UnusedLock = "W0505", "unused-lock", "No builder or step takes this lock.";
    EmptySelection = "W0506", "empty-selection", "A `builders tag=…` selector matches no builder.";
    ReporterWithoutUrl = "W0507", "reporter-without-url", "Reporters would link to the master's listen address because `master` sets no `url`.";
    PlaintextWorkerPort = "W0508", "plaintext-worker-port", "The worker port listens beyond loopback without TLS: worker passwords and build output would cross the network in clear.";
    UnknownCodebase = "W0509", "unknown-codebase", "A `git codebase=…` step names a codebase that no scheduler starting its builder declares.";
}

impl Code {
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub file: FileId,
    pub span: Span,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The primary label: where the mistake is.
    pub primary: Label,
    /// Related places (the other duplicate, each edge of a cycle, …).
    pub secondary: Vec<Label>,
    pub help: Option<String>,
    /// A child node whose absence is the mistake, written as the line to
    /// add inside the node the primary label names (a skeleton with
    /// placeholders). Editors offer it as a quick fix; `help` says the
    /// same in words.
    pub add_child: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, file: FileId, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            primary: Label {
                file,
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            help: None,
            add_child: None,
        }
    }
    pub fn label(mut self, text: impl Into<String>) -> Self {
        self.primary.message = text.into();
        self
    }
    pub fn with(mut self, file: FileId, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label {
            file,
            span,
            message: text.into(),
        });
        self
    }
    /// A secondary label in the same file as the primary one.
    pub fn also(self, span: Span, text: impl Into<String>) -> Self {
        let f = self.primary.file;
        self.with(f, span, text)
    }
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }
    pub fn help_opt(mut self, text: Option<String>) -> Self {
        self.help = text;
        self
    }
    /// See [`Diagnostic::add_child`].
    pub fn add_child(mut self, line: impl Into<String>) -> Self {
        self.add_child = Some(line.into());
        self
    }
}

/// The closest known name to `name`, for "did you mean" help.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for k in known {
        if k == name {
            continue;
        }
        let lev = strsim::levenshtein(name, k);
        let close_enough = lev <= (name.len().max(k.len()) / 3).max(1)
            || (name.len() >= 3 && (k.starts_with(name) || name.starts_with(k)))
            || k.eq_ignore_ascii_case(name)
            || k.replace(['_', '-'], "") == name.replace(['_', '-'], "");
        if !close_enough {
            continue;
        }
        let score = strsim::jaro_winkler(name, k) - lev as f64 * 0.01;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, k));
        }
    }
    best.map(|(_, k)| k)
}

/// "did you mean `x`?" or a list of what is allowed when nothing is close.
pub fn did_you_mean<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> Option<String> {
    if let Some(s) = suggest(name, known.clone()) {
        return Some(format!("did you mean `{s}`?"));
    }
    let all: Vec<&str> = known.into_iter().collect();
    if all.is_empty() {
        return Some("see docs/language.md for what is accepted here".to_string());
    }
    let shown = all.len().min(30);
    let mut list = all[..shown]
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > shown {
        list.push_str(", … (docs/language.md has them all)");
    }
    Some(format!("{what}: {list}"))
}
