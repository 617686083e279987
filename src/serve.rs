//! `bbc master`, `bbc worker` and `bbc up`: the long-running commands.

use std::path::{Path, PathBuf};

use bbc_compiler::graph::{Credential, Graph};
use bbc_runtime::master::{self, MasterConfig};
use bbc_runtime::secrets::{self, Secrets};
use bbc_runtime::tls::{self, Trust};
use bbc_runtime::worker::{run_worker, WorkerConfig, WorkerTls};

use crate::command_error::CommandError;

/// How `bbc master`, `bbc worker` and `bbc up` write their log (standard
/// error): lines for people, or one JSON object per line for collectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people: `… INFO build started builder=b number=1 …`
    #[default]
    Text,
    /// One JSON object per line, for log collectors
    Json,
}

/// The log: filtered by `BBC_LOG` (`info` when unset or invalid), written
/// to standard error in `format`.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BBC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(
                std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none(),
            )
            .with_target(false)
            .try_init(),
        // The event's fields at the top level beside `timestamp`, `level`,
        // `message` and `target` (which tells `bbc_timing` lines apart).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
    };
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(format!("cannot start the async runtime: {e}")))
}

/// The graph to run: compiled from a config (diagnostics as `bbc check`
/// prints them; refusing to start on errors) or read from `bbc compile`'s output.
pub fn load_graph(
    config: Option<&str>,
    graph: Option<&str>,
) -> Result<(Graph, PathBuf), CommandError> {
    match (config, graph) {
        (_, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CommandError::Usage(format!("cannot read {path}: {e}")))?;
            let g =
                Graph::from_json(&text).map_err(|e| CommandError::Usage(format!("{path}: {e}")))?;
            bbc_graph::hash::verify_hashes(&g)
                .map_err(|e| CommandError::Usage(format!("{path}: {e}")))?;
            Ok((g, parent_dir(path)))
        }
        (Some(config), None) => {
            let g = crate::output::compile_graph(config, crate::output::ColorChoice::Auto)?;
            Ok((g, parent_dir(config)))
        }
        (None, None) => Err(CommandError::Usage(
            "give a config file (or --graph graph.json)".into(),
        )),
    }
}

fn parent_dir(p: &str) -> PathBuf {
    Path::new(p)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn state_dir(g: &Graph, base: &Path, state: Option<&str>) -> PathBuf {
    match state {
        Some(s) => PathBuf::from(s),
        None => base.join(&g.master.state_dir),
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub struct MasterArgs<'a> {
    pub config: Option<&'a str>,
    pub graph: Option<&'a str>,
    pub state: Option<&'a str>,
    pub secrets: Option<&'a str>,
    pub worker_listen: Option<&'a str>,
    pub http_listen: Option<&'a str>,
    pub http_limits: master::HttpLimits,
    pub log_format: LogFormat,
}

async fn start_master(
    a: &MasterArgs<'_>,
    g: Graph,
    base: &Path,
) -> Result<master::MasterHandle, CommandError> {
    let cfg = MasterConfig {
        state_dir: state_dir(&g, base, a.state),
        secrets_dir: a.secrets.map(PathBuf::from),
        worker_listen: a.worker_listen.map(str::to_string),
        http_listen: a.http_listen.map(str::to_string),
        config_dir: base.to_path_buf(),
        http_limits: a.http_limits,
    };
    let scheme = scheme(&g);
    let h = master::start(g, cfg).await.map_err(CommandError::Usage)?;
    // Tests and scripts read this line to find the ports.
    println!(
        "bbc master: workers on {}, http on {scheme}://{}/",
        h.worker_addr, h.http_addr
    );
    Ok(h)
}

/// How the HTTP port is reached: `https` with TLS on it.
fn scheme(g: &Graph) -> &'static str {
    if g.master.http_tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// SIGHUP, for `ExecReload=kill -HUP $MAINPID`. Installed before the
/// master announces itself: from then on a SIGHUP reloads, never kills.
#[cfg(unix)]
struct Hangup(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangup {
    fn install() -> Result<Hangup, CommandError> {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup())
            .map(Hangup)
            .map_err(|e| CommandError::Usage(format!("cannot handle SIGHUP: {e}")))
    }
    async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
struct Hangup;

#[cfg(not(unix))]
impl Hangup {
    fn install() -> Result<Hangup, CommandError> {
        Ok(Hangup)
    }
    async fn recv(&mut self) {
        std::future::pending::<()>().await;
    }
}

/// Serves until SIGINT/SIGTERM, reloading on every SIGHUP.
async fn run_until_stopped(h: &master::MasterHandle, a: &MasterArgs<'_>, hangup: &mut Hangup) {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => reload(h, a).await,
        }
    }
}

/// Compiles the config again (or reads the graph file again) and applies
/// it. Errors are logged; the master keeps running what it ran.
async fn reload(h: &master::MasterHandle, a: &MasterArgs<'_>) {
    let config = a.config.map(str::to_string);
    let graph = a.graph.map(str::to_string);
    let what = graph.clone().or_else(|| config.clone()).unwrap_or_default();
    let running = h.shared.config_info().hash.clone();
    tracing::info!("SIGHUP: reloading {what}");
    // Compiling is CPU and disk work: off the async threads. Diagnostics
    // go to standard error as `bbc master` prints them at start.
    let loaded =
        tokio::task::spawn_blocking(move || load_graph(config.as_deref(), graph.as_deref())).await;
    let g = match loaded {
        Ok(Ok((g, _))) => g,
        Ok(Err(CommandError::Invalid)) => {
            tracing::error!("reload: {what} has errors (above); still running config {running}");
            return;
        }
        Ok(Err(CommandError::Usage(m))) => {
            tracing::error!("reload: {m}; still running config {running}");
            return;
        }
        Err(e) => {
            tracing::error!("reload: {e}; still running config {running}");
            return;
        }
    };
    match h.shared.apply(g, "sighup", None).await {
        Ok(r) if !r.changed => {
            tracing::info!("reload: {what} is unchanged (config {running}); secrets read again")
        }
        Ok(r) => {
            for e in &r.entities {
                tracing::info!("reload: {} {} {}: {}", e.change, e.kind, e.name, e.effect);
            }
        }
        Err(e) => tracing::error!("reload refused: {e}; still running config {running}"),
    }
}

/// A master holds one connection per worker (and per HTTP client): raise
/// the soft limit on open files to the hard one, as servers do, so that
/// the usual soft default of 1,024 does not turn worker 1,000 away with
/// "too many open files". Logged when it changes; a failure is only a
/// warning (the master works up to the old limit).
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write/read only the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        if lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::info!(
                "raised the limit on open files from {old} to {} (one per connected worker)",
                lim.rlim_cur
            );
        } else {
            tracing::warn!(
                "could not raise the limit on open files above {old}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

pub fn master(a: MasterArgs) -> Result<(), CommandError> {
    init_tracing(a.log_format);
    raise_open_files_limit();
    let (g, base) = load_graph(a.config, a.graph)?;
    runtime()?.block_on(async {
        let mut hangup = Hangup::install()?;
        let h = start_master(&a, g, &base).await?;
        run_until_stopped(&h, &a, &mut hangup).await;
        tracing::info!("stopping");
        h.shutdown().await;
        Ok(())
    })
}

pub struct WorkerArgs<'a> {
    pub master: &'a str,
    pub name: &'a str,
    /// `None`: the password is in `BBC_WORKER_PASSWORD`.
    pub password_file: Option<&'a str>,
    pub basedir: &'a str,
    /// Trust the master's certificate if it chains to this CA (PEM).
    pub master_ca: Option<&'a str>,
    /// Trust the master's certificate with this SHA-256 fingerprint.
    pub master_fingerprint: Option<&'a str>,
    pub log_format: LogFormat,
}

pub fn worker(a: WorkerArgs) -> Result<(), CommandError> {
    init_tracing(a.log_format);
    let password = match a.password_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| CommandError::Usage(format!("cannot read the password file {file}: {e}")))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        None => std::env::var("BBC_WORKER_PASSWORD").map_err(|_| {
            CommandError::Usage(
                "give --password-file, or the password in BBC_WORKER_PASSWORD".into(),
            )
        })?,
    };
    let trust = match (a.master_ca, a.master_fingerprint) {
        (Some(_), Some(_)) => {
            return Err(CommandError::Usage(
                "give either --master-ca or --master-fingerprint, not both".into(),
            ))
        }
        (Some(ca), None) => Some(Trust::Ca(PathBuf::from(ca))),
        (None, Some(fp)) => Some(Trust::Fingerprint(
            tls::parse_fingerprint(fp).map_err(CommandError::Usage)?,
        )),
        (None, None) => None,
    };
    let tls = match &trust {
        Some(t) => Some(WorkerTls::new(t, a.master).map_err(CommandError::Usage)?),
        None => None,
    };
    let cfg = WorkerConfig {
        master: a.master.to_string(),
        name: a.name.to_string(),
        password,
        basedir: PathBuf::from(a.basedir),
        info: bbc_runtime::worker::default_info(),
        tls,
    };
    runtime()?.block_on(async {
        run_worker(cfg, stop_signal())
            .await
            .map_err(|e| CommandError::Usage(e.to_string()))
    })
}

/// A password for this run only, from the kernel's random source.
fn random_token() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Without /dev/urandom, fall back to time and pid: this password only
        // guards a master that listens on this machine for this run.
        let t =
            bbc_runtime::master::now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32);
        b[..8].copy_from_slice(&t.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `bbc up` with TLS on the worker port: makes a self-signed pair where
/// the config names files that do not exist yet (a fresh checkout), and
/// has the local workers pin that certificate's fingerprint.
/// Also the TLS setup `bbc up --force` posts with over HTTPS.
fn up_tls(
    g: &Graph,
    base: &Path,
) -> Result<(Option<WorkerTls>, Option<std::sync::Arc<tls::ClientConfig>>), CommandError> {
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let mut made = Vec::new();
    for t in [&g.master.worker_tls, &g.master.http_tls]
        .into_iter()
        .flatten()
    {
        let cert = base.join(&t.cert);
        if tls::ensure_self_signed(&cert, &base.join(&t.key), &names, 3650)
            .map_err(CommandError::Usage)?
        {
            made.push(cert);
        }
    }
    for cert in made {
        let fp = tls::fingerprint_of_file(&cert).map_err(CommandError::Usage)?;
        // On standard error: the first line of standard output announces
        // the ports.
        eprintln!(
            "bbc up: made a self-signed certificate {} ({fp})",
            cert.display()
        );
    }
    let pin = |t: &bbc_compiler::graph::Tls| -> Result<Trust, CommandError> {
        let fp = tls::fingerprint_of_file(&base.join(&t.cert)).map_err(CommandError::Usage)?;
        Ok(Trust::Fingerprint(
            tls::parse_fingerprint(&fp).map_err(CommandError::Usage)?,
        ))
    };
    let workers = match &g.master.worker_tls {
        // The local workers connect to 127.0.0.1 whatever the listen address.
        Some(t) => Some(WorkerTls::new(&pin(t)?, "127.0.0.1:0").map_err(CommandError::Usage)?),
        None => None,
    };
    let http = match &g.master.http_tls {
        Some(t) => Some(tls::client_config(&pin(t)?).map_err(CommandError::Usage)?),
        None => None,
    };
    Ok((workers, http))
}

/// A master and one in-process worker per configured worker: the quickest
/// way to see bbc run. Worker passwords the environment does not provide
/// are generated for this run.
pub fn up(a: MasterArgs, force: &[String]) -> Result<(), CommandError> {
    init_tracing(a.log_format);
    raise_open_files_limit();
    let (g, base) = load_graph(a.config, a.graph)?;
    let state = state_dir(&g, &base, a.state);
    let mut passwords = Vec::new();
    for w in &g.workers {
        let pw = match &w.password {
            Credential::Plain(p) => p.clone(),
            Credential::Secret { secret } => {
                // The master's own lookup (same directory, same guard on
                // names), so the local worker sends what the master expects.
                let dir = a
                    .secrets
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Secrets::default_dir(&state));
                match secrets::lookup_with(secret, Some(&dir), &g.master.secrets_command).ok() {
                    Some(v) => v,
                    None => {
                        let v = random_token();
                        // SAFETY: single-threaded here, before the runtime starts.
                        std::env::set_var(secrets::env_var_name(secret), &v);
                        v
                    }
                }
            }
        };
        passwords.push((w.name.clone(), pw));
    }
    // Other secrets (tokens in steps' env, reporters' passwords) that are
    // not there get a random value for this run, so an example runs on a
    // fresh checkout; the value is never printed.
    let dir = a
        .secrets
        .map(PathBuf::from)
        .unwrap_or_else(|| Secrets::default_dir(&state));
    for name in bbc_compiler::graph::credentials::secret_names(&g) {
        if secrets::lookup_with(&name, Some(&dir), &g.master.secrets_command).is_err() {
            // SAFETY: single-threaded here, before the runtime starts.
            std::env::set_var(secrets::env_var_name(&name), random_token());
            eprintln!("bbc up: secret `{name}` is not set; using a random value for this run");
        }
    }
    // With users in the config, forcing needs a caller the master knows:
    // `--force` uses the control token, made up for the run if not set.
    let force_token = if g.master.access.has_users() && !force.is_empty() {
        let name = secrets::CONTROL_TOKEN;
        match secrets::lookup_with(name, Some(&dir), &g.master.secrets_command) {
            Ok(t) if !t.is_empty() => Some(t),
            _ => {
                let t = random_token();
                // SAFETY: single-threaded here, before the runtime starts.
                std::env::set_var(secrets::env_var_name(name), &t);
                Some(t)
            }
        }
    } else {
        None
    };
    let (local_tls, http_tls) = up_tls(&g, &base)?;
    let scheme = scheme(&g);
    runtime()?.block_on(async {
        let mut hangup = Hangup::install()?;
        let h = start_master(&a, g, &base).await?;
        let addr = h.worker_addr.to_string();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for (name, password) in passwords {
            let cfg = WorkerConfig {
                master: addr.clone(),
                name: name.clone(),
                password,
                basedir: state.join("workers").join(&name),
                info: bbc_runtime::worker::default_info(),
                tls: local_tls.clone(),
            };
            let mut rx = stop_rx.clone();
            workers.push(tokio::spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|v| *v).await;
                };
                if let Err(e) = run_worker(cfg, stop).await {
                    tracing::error!(worker = %name, "worker stopped: {e}");
                }
            }));
        }
        let client = match &http_tls {
            Some(c) => reqwest::Client::builder().use_preconfigured_tls((**c).clone()),
            None => reqwest::Client::builder(),
        }
        .build()
        .map_err(|e| CommandError::Usage(format!("an HTTP client: {e}")))?;
        for b in force {
            let url = format!("{scheme}://{}/api/v1/builders/{b}/force", h.http_addr);
            let mut req = client.post(&url);
            if let Some(t) = &force_token {
                req = req.bearer_auth(t);
            }
            match req
                .json(&serde_json::json!({"reason": "bbc up --force"}))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => println!("forced a build of {b}"),
                Ok(r) => eprintln!("cannot force {b}: {}", r.text().await.unwrap_or_default()),
                Err(e) => eprintln!("cannot force {b}: {e}"),
            }
        }
        println!(
            "bbc up: the web UI is at {scheme}://{}/ ; press Ctrl-C to stop",
            h.http_addr
        );
        // SIGHUP reloads the config as `bbc master` does; the local workers
        // are the ones started above (a worker the new config adds gets
        // none until the next `bbc up`).
        run_until_stopped(&h, &a, &mut hangup).await;
        let _ = stop_tx.send(true);
        for w in workers {
            let _ = w.await;
        }
        h.shutdown().await;
        Ok(())
    })
}
