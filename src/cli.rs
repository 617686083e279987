use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use bbc_compiler::diagnostic::{Code, Severity};
use bbc_compiler::graph::{Graph, SchedulerKind, StepKind};
use bbc_compiler::render::{self, HumanOptions};
use bbc_compiler::source::DiskSources;
use bbc_compiler::Compilation;
use clap::{Parser, Subcommand, ValueEnum};

use crate::command_error::CommandError;

#[derive(Parser)]
#[command(
    name = "bbc",
    version,
    about = "A CI master configured by a checked, declarative KDL file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// rustc-like reports with source excerpts
    Human,
    /// one JSON document (schema in docs/diagnostics.md)
    Json,
    /// GitHub Actions workflow annotations
    Github,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Deny {
    /// treat warnings as errors
    Warnings,
}

/// What `bbc master` and `bbc up` run and where.
#[derive(clap::Args)]
struct MasterOpts {
    /// The config (compiled at start; errors refuse to start)
    config: Option<String>,
    /// Run a graph written by `bbc compile` instead of a config
    #[arg(long)]
    graph: Option<String>,
    /// State directory (default: the config's `state`, relative to the config)
    #[arg(long)]
    state: Option<String>,
    /// Directory with one file per secret (default: STATE/secrets)
    #[arg(long)]
    secrets: Option<String>,
    /// Override the config's worker listen address
    #[arg(long)]
    worker_listen: Option<String>,
    /// Override the config's HTTP listen address
    #[arg(long)]
    http_listen: Option<String>,
}

impl MasterOpts {
    fn args(&self) -> crate::serve::MasterArgs<'_> {
        crate::serve::MasterArgs {
            config: self.config.as_deref(),
            graph: self.graph.as_deref(),
            state: self.state.as_deref(),
            secrets: self.secrets.as_deref(),
            worker_listen: self.worker_listen.as_deref(),
            http_listen: self.http_listen.as_deref(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DiffFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListWhat {
    Builders,
    Schedulers,
    Workers,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Dot,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check configs and report every error at once
    Check {
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// `--deny warnings` makes warnings fail the check
        #[arg(long, value_enum)]
        deny: Option<Deny>,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Compile a config to the lowered build graph (JSON)
    Compile {
        file: String,
        /// Output file; standard output when absent or `-`
        #[arg(short, long)]
        output: Option<String>,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Draw change sources → schedulers → builders → triggered schedulers
    Graph {
        file: String,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Rewrite configs in the canonical layout, keeping every comment
    Fmt {
        /// Files, directories (every `*.kdl` below) or `-` (standard input
        /// to standard output)
        #[arg(required = true)]
        paths: Vec<String>,
        /// Change nothing: print a diff for each file not formatted and
        /// fail if there is one (for CI)
        #[arg(long)]
        check: bool,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Explain a diagnostic code, e.g. `bbc explain E0201`
    Explain { code: String },
    /// What changes between two configs (the plan `bbc apply` shows)
    Diff {
        old: String,
        new: String,
        #[arg(long, value_enum, default_value = "human")]
        format: DiffFormat,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// The builders, schedulers or workers a config defines
    List {
        #[arg(value_enum)]
        what: ListWhat,
        config: String,
        /// Only builders with this tag (and schedulers that start them)
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Run the master
    Master {
        #[command(flatten)]
        opts: MasterOpts,
    },
    /// Run a worker that connects to a master
    Worker {
        #[arg(long)]
        master: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_file: String,
        #[arg(long)]
        basedir: String,
    },
    /// A master and local workers together: the quickest way to try bbc
    Up {
        #[command(flatten)]
        opts: MasterOpts,
        /// Force a build of this builder once started (repeatable)
        #[arg(long)]
        force: Vec<String>,
    },
    /// Run one builder's steps right here, without a running master
    Run {
        config: String,
        builder: String,
        /// Build property NAME=VALUE (repeatable)
        #[arg(long = "prop")]
        props: Vec<String>,
        /// Keep the worker's directory here (default: a temporary one, removed)
        #[arg(long)]
        workdir: Option<String>,
    },
    /// Force a build through the master's API
    Force {
        builder: String,
        /// Parameter NAME=VALUE (repeatable)
        #[arg(long = "prop")]
        props: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        #[arg(long)]
        revision: Option<String>,
        #[arg(long)]
        scheduler: Option<String>,
        /// Follow the build and exit with its result
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
    },
    /// Submit a change (like Buildbot's sendchange)
    Sendchange {
        #[arg(long, default_value = "")]
        repository: String,
        #[arg(long, default_value = "")]
        branch: String,
        #[arg(long, default_value = "")]
        revision: String,
        #[arg(long, default_value = "")]
        who: String,
        #[arg(long, default_value = "")]
        comments: String,
        #[arg(long = "file")]
        files: Vec<String>,
        #[arg(long = "prop")]
        props: Vec<String>,
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
    },
    /// Apply a config to a running master: shows the plan, then reloads it
    /// (running builds are not interrupted)
    Apply {
        config: String,
        /// The master's HTTP API
        #[arg(long, default_value_t = crate::client::default_url())]
        master: String,
        /// File holding the master's admin token (else $BBC_ADMIN_TOKEN)
        #[arg(long)]
        token_file: Option<String>,
        /// Show the plan only; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Apply without asking for confirmation
        #[arg(long)]
        yes: bool,
        #[arg(long, value_enum, default_value = "human")]
        format: DiffFormat,
    },
    /// Builders, running builds with ETA, workers
    Status {
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
    },
    /// Benchmarks (figures in docs/perf.md)
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// `bbc check` on generated configs of 100, 1,000 and 10,000 builders
    Check {
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Changes through the webhook endpoint to build requests and builds
    Changes {
        #[arg(long, default_value_t = 1000)]
        changes: usize,
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// The runtime: a `bbc master` and `bbc worker` processes on 127.0.0.1
    Run(crate::bench::run::RunArgs),
    /// Write a generated benchmark config to standard output
    Generate { builders: usize },
    /// (internal) one measured compile in this process
    #[command(hide = true)]
    One { file: String },
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Check {
            files,
            format,
            deny,
            color,
        } => check(&files, format, deny.is_some(), color),
        Command::Compile {
            file,
            output,
            color,
        } => compile(&file, output.as_deref(), color),
        Command::Graph {
            file,
            format,
            color,
        } => graph(&file, format, color),
        Command::Explain { code } => explain(&code),
        Command::Fmt {
            paths,
            check,
            color,
        } => crate::fmt::fmt(&paths, check, color),
        Command::Diff {
            old,
            new,
            format,
            color,
        } => diff(&old, &new, format, color),
        Command::List {
            what,
            config,
            tag,
            color,
        } => list(what, &config, tag.as_deref(), color),
        Command::Master { opts } => crate::serve::master(opts.args()),
        Command::Worker {
            master,
            name,
            password_file,
            basedir,
        } => crate::serve::worker(crate::serve::WorkerArgs {
            master: &master,
            name: &name,
            password_file: &password_file,
            basedir: &basedir,
        }),
        Command::Up { opts, force } => crate::serve::up(opts.args(), &force),
        Command::Force {
            builder,
            props,
            reason,
            branch,
            revision,
            scheduler,
            wait,
            url,
        } => crate::client::force(crate::client::ForceArgs {
            url: &url,
            builder: &builder,
            props: &props,
            reason: reason.as_deref(),
            branch: branch.as_deref(),
            revision: revision.as_deref(),
            scheduler: scheduler.as_deref(),
            wait,
        }),
        Command::Sendchange {
            repository,
            branch,
            revision,
            who,
            comments,
            files,
            props,
            url,
        } => crate::client::sendchange(crate::client::ChangeArgs {
            url: &url,
            repository: &repository,
            branch: &branch,
            revision: &revision,
            who: &who,
            comments: &comments,
            files: &files,
            props: &props,
        }),
        Command::Status { url } => crate::client::status(&url),
        Command::Apply {
            config,
            master,
            token_file,
            dry_run,
            yes,
            format,
        } => crate::apply::apply(crate::apply::ApplyArgs {
            config: &config,
            master: &master,
            token_file: token_file.as_deref(),
            dry_run,
            yes,
            json: format == DiffFormat::Json,
        }),
        Command::Run {
            config,
            builder,
            props,
            workdir,
        } => crate::local_run::run(&config, &builder, &props, workdir.as_deref()),
        Command::Bench { which } => match which {
            Bench::Check { sizes, runs } => crate::bench::check(&sizes, runs.max(1)),
            Bench::Changes { changes, samples } => crate::bench_changes::run(changes, samples),
            Bench::Run(args) => crate::bench::run::run(&args),
            Bench::Generate { builders } => write_output(None, &crate::bench::generate(builders)),
            Bench::One { file } => crate::bench::one(&file),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let CommandError::Usage(msg) = &e {
                eprintln!("error: {msg}");
            }
            e.exit_code()
        }
    }
}

pub(crate) fn human_options(color: ColorChoice, stream_is_tty: bool) -> HumanOptions {
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stream_is_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100);
    HumanOptions { color, width }
}

fn is_io_failure(c: &Compilation) -> bool {
    c.diagnostics.iter().any(|d| d.code == Code::Io)
}

/// Prints diagnostics for people on stderr; returns Err when there are errors.
fn report_human(c: &Compilation, color: ColorChoice, file: &str) -> Result<(), CommandError> {
    let opts = human_options(color, std::io::stderr().is_terminal());
    let mut err = std::io::stderr().lock();
    for d in &c.diagnostics {
        let _ = write!(err, "{}", render::human(&c.sources, d, opts));
    }
    if is_io_failure(c) {
        return Err(CommandError::Usage(c.diagnostics[0].message.clone()));
    }
    if c.errors() > 0 {
        let _ = writeln!(err, "{}", render::summary(c.errors(), c.warnings(), file));
        return Err(CommandError::Invalid);
    }
    Ok(())
}

/// What `bbc check FILE` prints for one compiled file (human format).
pub fn check_human(c: &Compilation, file: &str, opts: HumanOptions) -> String {
    let mut s = String::new();
    for d in &c.diagnostics {
        s.push_str(&render::human(&c.sources, d, opts));
    }
    s.push_str(&render::summary(c.errors(), c.warnings(), file));
    s.push('\n');
    s
}

/// What `bbc check --format json` prints.
fn check_json_doc(
    ok: bool,
    files: Vec<serde_json::Value>,
    diagnostics: Vec<render::JsonDiagnostic>,
) -> String {
    let doc = serde_json::json!({
        "version": render::JSON_VERSION,
        "ok": ok,
        "files": files,
        "diagnostics": diagnostics,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// `bbc check --format json FILE` for one compiled file.
pub fn check_json(c: &Compilation, file: &str) -> String {
    check_json_doc(
        c.errors() == 0 && !is_io_failure(c),
        vec![serde_json::json!({"file": file, "errors": c.errors(), "warnings": c.warnings()})],
        c.diagnostics
            .iter()
            .map(|d| render::json_diagnostic(&c.sources, d))
            .collect(),
    )
}

/// Colour and width for diagnostics written to standard error.
pub fn stderr_options() -> HumanOptions {
    human_options(ColorChoice::Auto, std::io::stderr().is_terminal())
}

pub fn is_io_error(c: &Compilation) -> bool {
    is_io_failure(c)
}

fn check(
    files: &[String],
    format: Format,
    deny_warnings: bool,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let mut failed = false;
    let mut io_failed = false;
    let mut json_diags = Vec::new();
    let mut json_files = Vec::new();
    let opts = human_options(color, std::io::stdout().is_terminal());
    let mut out = std::io::stdout().lock();
    for f in files {
        let c = bbc_compiler::compile(f, &DiskSources);
        let errors = c.errors();
        let warnings = c.warnings();
        io_failed |= is_io_failure(&c);
        failed |= errors > 0 || (deny_warnings && warnings > 0);
        match format {
            Format::Human => {
                let _ = write!(out, "{}", check_human(&c, f, opts));
            }
            Format::Github => {
                for d in &c.diagnostics {
                    let mut line = render::github(&c.sources, d);
                    if deny_warnings && d.severity == Severity::Warning {
                        line = line.replacen("::warning ", "::error ", 1);
                    }
                    let _ = writeln!(out, "{line}");
                }
            }
            Format::Json => {
                json_diags.extend(
                    c.diagnostics
                        .iter()
                        .map(|d| render::json_diagnostic(&c.sources, d)),
                );
                json_files
                    .push(serde_json::json!({"file": f, "errors": errors, "warnings": warnings}));
            }
        }
        // Freeing a large graph value by value takes longer than building
        // parts of it; the process is about to exit, so let it go.
        std::mem::forget(c);
    }
    if format == Format::Json {
        let _ = write!(
            out,
            "{}",
            check_json_doc(!failed && !io_failed, json_files, json_diags)
        );
    }
    let _ = out.flush();
    if io_failed {
        Err(CommandError::Usage("some files could not be read".into()))
    } else if failed {
        Err(CommandError::Invalid)
    } else {
        Ok(())
    }
}

pub fn compile_graph(file: &str, color: ColorChoice) -> Result<Graph, CommandError> {
    let c = bbc_compiler::compile(file, &DiskSources);
    report_human(&c, color, file)?;
    c.graph.ok_or(CommandError::Invalid)
}

fn write_output(output: Option<&str>, text: &str) -> Result<(), CommandError> {
    match output {
        None | Some("-") => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Some(path) => std::fs::write(path, text)
            .map_err(|e| CommandError::Usage(format!("cannot write `{path}`: {e}"))),
    }
}

fn compile(file: &str, output: Option<&str>, color: ColorChoice) -> Result<(), CommandError> {
    let g = compile_graph(file, color)?;
    write_output(output, &g.to_json())
}

fn graph(file: &str, format: GraphFormat, color: ColorChoice) -> Result<(), CommandError> {
    let g = compile_graph(file, color)?;
    let text = match format {
        GraphFormat::Json => g.to_json(),
        GraphFormat::Dot => dot(&g),
    };
    write_output(None, &text)
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz drawing of how work flows through the config.
pub fn dot(g: &Graph) -> String {
    let mut s = String::from("digraph bbc {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
    for c in &g.change_sources {
        s.push_str(&format!(
            "  {} [label={} shape=cds];\n",
            q(&format!("cs:{}", c.name)),
            q(&c.name)
        ));
    }
    for sc in &g.schedulers {
        s.push_str(&format!(
            "  {} [label={} shape=ellipse];\n",
            q(&format!("s:{}", sc.name)),
            q(&format!("{}\\n({})", sc.name, sc.kind.name()))
        ));
    }
    for b in &g.builders {
        s.push_str(&format!(
            "  {} [label={} shape=box];\n",
            q(&format!("b:{}", b.name)),
            q(&b.name)
        ));
    }
    for sc in &g.schedulers {
        let filter = match &sc.kind {
            SchedulerKind::SingleBranch { filter, .. }
            | SchedulerKind::AnyBranch { filter, .. } => Some(filter),
            SchedulerKind::Nightly {
                filter,
                only_if_changed: true,
                ..
            } => Some(filter),
            _ => None,
        };
        if let Some(f) = filter {
            for c in &g.change_sources {
                if f.change_sources.is_empty() || f.change_sources.contains(&c.name) {
                    s.push_str(&format!(
                        "  {} -> {};\n",
                        q(&format!("cs:{}", c.name)),
                        q(&format!("s:{}", sc.name))
                    ));
                }
            }
        }
        if let SchedulerKind::Dependent { upstream } = &sc.kind {
            s.push_str(&format!(
                "  {} -> {} [style=dashed label=\"after\"];\n",
                q(&format!("s:{upstream}")),
                q(&format!("s:{}", sc.name))
            ));
        }
        for b in &sc.builders {
            s.push_str(&format!(
                "  {} -> {};\n",
                q(&format!("s:{}", sc.name)),
                q(&format!("b:{b}"))
            ));
        }
    }
    for b in &g.builders {
        for st in &b.steps {
            if let StepKind::Trigger {
                schedulers, wait, ..
            } = &st.kind
            {
                for t in schedulers {
                    s.push_str(&format!(
                        "  {} -> {} [label={}{}];\n",
                        q(&format!("b:{}", b.name)),
                        q(&format!("s:{t}")),
                        q(&st.name),
                        if *wait { " style=bold" } else { "" }
                    ));
                }
            }
        }
    }
    s.push_str("}\n");
    s
}

fn diff(old: &str, new: &str, format: DiffFormat, color: ColorChoice) -> Result<(), CommandError> {
    let a = compile_graph(old, color)?;
    let b = compile_graph(new, color)?;
    let changes = crate::diff::diff(&a, &b);
    let text = match format {
        DiffFormat::Human => crate::diff::human(&changes),
        DiffFormat::Json => {
            let mut t = serde_json::to_string_pretty(
                &serde_json::json!({"version": 1, "changes": changes}),
            )
            .unwrap_or_default();
            t.push('\n');
            t
        }
    };
    write_output(None, &text)
}

fn list(
    what: ListWhat,
    config: &str,
    tag: Option<&str>,
    color: ColorChoice,
) -> Result<(), CommandError> {
    let g = compile_graph(config, color)?;
    let tagged =
        |b: &str| tag.is_none_or(|t| g.builder(b).is_some_and(|x| x.tags.iter().any(|y| y == t)));
    let mut out = String::new();
    match what {
        ListWhat::Builders => {
            for b in g.builders.iter().filter(|b| tagged(&b.name)) {
                out.push_str(&format!(
                    "{}\tworkers={}\ttags={}\n",
                    b.name,
                    b.workers.join(","),
                    b.tags.join(",")
                ));
            }
        }
        ListWhat::Schedulers => {
            for s in g
                .schedulers
                .iter()
                .filter(|s| tag.is_none() || s.builders.iter().any(|b| tagged(b)))
            {
                out.push_str(&format!(
                    "{}\t{}\tbuilders={}\n",
                    s.name,
                    s.kind.name(),
                    s.builders.len()
                ));
            }
        }
        ListWhat::Workers => {
            for w in g.workers.iter().filter(|w| {
                tag.is_none()
                    || g.builders
                        .iter()
                        .any(|b| tagged(&b.name) && b.workers.contains(&w.name))
            }) {
                let used = g
                    .builders
                    .iter()
                    .filter(|b| b.workers.contains(&w.name))
                    .count();
                out.push_str(&format!(
                    "{}\tmax-builds={}\tbuilders={used}\n",
                    w.name, w.max_builds
                ));
            }
        }
    }
    write_output(None, &out)
}

/// The long explanation: the code's section of docs/diagnostics.md, which
/// is shipped inside the binary.
const DIAGNOSTICS_DOC: &str = include_str!("../docs/diagnostics.md");

fn explain(code: &str) -> Result<(), CommandError> {
    let Some(c) = Code::parse(code) else {
        return Err(CommandError::Usage(format!(
            "unknown diagnostic code `{code}`; codes look like E0201 (see docs/diagnostics.md)"
        )));
    };
    let heading = format!("## {} ", c.as_str());
    let section = DIAGNOSTICS_DOC.find(&heading).map(|at| {
        let rest = &DIAGNOSTICS_DOC[at..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
        rest[..end].trim_end().to_string()
    });
    match section {
        Some(s) => println!("{s}"),
        None => println!("{} ({}): {}", c.as_str(), c.slug(), c.summary()),
    }
    Ok(())
}
