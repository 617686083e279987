//! The command line: clap's arguments and the dispatch to the module of
//! each command. What commands print, and how, is in `output`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::check::Format;
use crate::command_error::CommandError;
use crate::diff::DiffFormat;
use crate::https::TrustOpts;
use crate::listing::ListWhat;
use crate::output::{compile_graph, write_output, ColorChoice, OutFormat};

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
    /// Seconds a client has to send a request's headers, from opening the
    /// connection or from the previous answer (idle keep-alive)
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    http_header_timeout: u64,
    /// HTTP connections served at once; more are answered 503
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    http_max_connections: u64,
    #[command(flatten)]
    log: LogOpts,
}

/// The log of the long-running commands (standard error; `BBC_LOG` sets
/// what it shows).
#[derive(clap::Args)]
struct LogOpts {
    /// How the log (standard error) is written; `BBC_LOG` says what it
    /// shows (default: info)
    #[arg(long, value_enum, default_value = "text", env = "BBC_LOG_FORMAT")]
    log_format: crate::serve::LogFormat,
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
            http_limits: bbc_runtime::master::HttpLimits {
                header_timeout: std::time::Duration::from_secs(self.http_header_timeout),
                max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
            },
            log_format: self.log.log_format,
        }
    }
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
    /// A language server over standard input and output, for editors
    /// (diagnostics while typing, formatting, outline, definitions)
    Lsp,
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
        #[arg(long, value_enum, default_value = "human")]
        format: OutFormat,
        #[arg(long, value_enum, default_value = "auto")]
        color: ColorChoice,
    },
    /// Translate a Buildbot master.cfg into a checked bbc config
    Import {
        /// The Buildbot configuration (read with Buildbot's own loader)
        config: String,
        /// A Python with `buildbot` installed (default: the first python3
        /// or python on PATH that has it)
        #[arg(long)]
        python: Option<String>,
        /// Output file; standard output when absent or `-`
        #[arg(short, long)]
        output: Option<String>,
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
        /// The worker's password, in a file; without it, the environment
        /// variable BBC_WORKER_PASSWORD (how a latent worker the master
        /// started gets its one-time password)
        #[arg(long)]
        password_file: Option<String>,
        #[arg(long)]
        basedir: String,
        /// Connect with TLS; trust the master's certificate if it chains
        /// to a CA in this PEM file (and names the --master host)
        #[arg(long, value_name = "FILE")]
        master_ca: Option<String>,
        /// Connect with TLS; trust the master's certificate with this
        /// SHA-256 fingerprint (as `bbc cert` prints it)
        #[arg(long, value_name = "SHA256")]
        master_fingerprint: Option<String>,
        #[command(flatten)]
        log: LogOpts,
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
        /// `json`: no live log; one document at the end (the result, each
        /// step's result and last log lines, where uploads were kept)
        #[arg(long, value_enum, default_value = "human")]
        format: OutFormat,
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
        /// The request's priority: higher starts first (default: the
        /// force scheduler's `priority`, else 0)
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i64>,
        /// Follow the build, printing its steps, and exit with its result
        #[arg(long)]
        wait: bool,
        /// `json`: one JSON object (the request, or with --wait the
        /// finished build) instead of lines
        #[arg(long, value_enum, default_value = "human")]
        format: OutFormat,
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
        #[command(flatten)]
        trust: TrustOpts,
    },
    /// Rebuild a finished build: a new request on its builder with the
    /// same source (revision) and properties
    Rebuild {
        /// The build's id (as the API and the web UI show it)
        build: u64,
        /// Follow the new build and exit with its result
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
        #[command(flatten)]
        trust: TrustOpts,
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
        #[command(flatten)]
        trust: TrustOpts,
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
        #[command(flatten)]
        trust: TrustOpts,
    },
    /// Check an API token with a master and keep it for `bbc force`,
    /// `sendchange` and `status` (the token from --token-file or stdin)
    Login {
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
        /// File holding the token (else the first line of standard input)
        #[arg(long)]
        token_file: Option<String>,
        #[command(flatten)]
        trust: TrustOpts,
    },
    /// Make a self-signed TLS certificate and key for the master, and
    /// print the fingerprint workers pin (`--master-fingerprint`)
    Cert {
        /// Where to write the certificate (PEM)
        #[arg(long, default_value = "master.crt")]
        cert: String,
        /// Where to write the private key (PEM, mode 0600)
        #[arg(long, default_value = "master.key")]
        key: String,
        /// A DNS name or IP address workers reach the master at
        /// (repeatable; default: localhost, 127.0.0.1, ::1 and this host's name)
        #[arg(long = "name")]
        names: Vec<String>,
        /// How long the certificate is valid
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Replace files that exist
        #[arg(long)]
        force: bool,
    },
    /// Hash a password for a user's `password=` secret: reads it (without
    /// echo from a terminal, else the first line of stdin) and prints the
    /// argon2id PHC string to store as the secret
    #[command(alias = "hash-password")]
    Passwd,
    /// Copy a master's state (store, step logs, uploads) while it runs
    Backup {
        /// The master's state directory
        state: String,
        /// A new directory for the copy (must not exist)
        out: String,
    },
    /// Builders with their last build, running builds with ETA, workers
    Status {
        #[arg(long, value_enum, default_value = "human")]
        format: OutFormat,
        #[arg(long, default_value_t = crate::client::default_url())]
        url: String,
        #[command(flatten)]
        trust: TrustOpts,
    },
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
        } => crate::check::check(&files, format, deny.is_some(), color),
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
        Command::Explain { code } => crate::explain::explain(&code),
        Command::Lsp => crate::lsp::run(),
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
        } => crate::diff::command(&old, &new, format, color),
        Command::List {
            what,
            config,
            tag,
            format,
            color,
        } => crate::listing::list(what, &config, tag.as_deref(), format, color),
        Command::Import {
            config,
            python,
            output,
        } => crate::import::import(&config, python.as_deref(), output.as_deref()),
        Command::Master { opts } => crate::serve::master(opts.args()),
        Command::Worker {
            master,
            name,
            password_file,
            basedir,
            master_ca,
            master_fingerprint,
            log,
        } => crate::serve::worker(crate::serve::WorkerArgs {
            master: &master,
            name: &name,
            password_file: password_file.as_deref(),
            basedir: &basedir,
            master_ca: master_ca.as_deref(),
            master_fingerprint: master_fingerprint.as_deref(),
            log_format: log.log_format,
        }),
        Command::Up { opts, force } => crate::serve::up(opts.args(), &force),
        Command::Force {
            builder,
            props,
            reason,
            branch,
            revision,
            scheduler,
            priority,
            wait,
            format,
            url,
            trust,
        } => crate::client::force(crate::client::ForceArgs {
            url: &url,
            builder: &builder,
            props: &props,
            reason: reason.as_deref(),
            branch: branch.as_deref(),
            revision: revision.as_deref(),
            scheduler: scheduler.as_deref(),
            priority,
            wait,
            format,
            trust: &trust,
        }),
        Command::Rebuild {
            build,
            wait,
            url,
            trust,
        } => crate::client::rebuild(&url, build, wait, &trust),
        Command::Sendchange {
            repository,
            branch,
            revision,
            who,
            comments,
            files,
            props,
            url,
            trust,
        } => crate::client::sendchange(crate::client::ChangeArgs {
            url: &url,
            repository: &repository,
            branch: &branch,
            revision: &revision,
            who: &who,
            comments: &comments,
            files: &files,
            props: &props,
            trust: &trust,
        }),
        Command::Status { format, url, trust } => crate::status::status(&url, format, &trust),
        Command::Login {
            url,
            token_file,
            trust,
        } => crate::client::login(&url, token_file.as_deref(), &trust),
        Command::Cert {
            cert,
            key,
            names,
            days,
            force,
        } => crate::cert::cert(&cert, &key, &names, days, force),
        Command::Passwd => crate::passwd::passwd(),
        Command::Backup { state, out } => crate::backup::backup(&state, &out),
        Command::Apply {
            config,
            master,
            token_file,
            dry_run,
            yes,
            format,
            trust,
        } => crate::apply::apply(crate::apply::ApplyArgs {
            config: &config,
            master: &master,
            token_file: token_file.as_deref(),
            dry_run,
            yes,
            json: format == DiffFormat::Json,
            trust: &trust,
        }),
        Command::Run {
            config,
            builder,
            props,
            workdir,
            format,
        } => crate::local_run::run(&config, &builder, &props, workdir.as_deref(), format),
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

fn compile(file: &str, output: Option<&str>, color: ColorChoice) -> Result<(), CommandError> {
    let g = compile_graph(file, color)?;
    write_output(output, &g.to_json())
}

fn graph(file: &str, format: GraphFormat, color: ColorChoice) -> Result<(), CommandError> {
    let g = compile_graph(file, color)?;
    let text = match format {
        GraphFormat::Json => g.to_json(),
        GraphFormat::Dot => crate::dot::dot(&g),
    };
    write_output(None, &text)
}
