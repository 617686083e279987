//! `bbc-bench run`'s options: scenario sizes (defaults give the figures in
//! docs/perf.md).

/// `bbc-bench run`'s options (clap reads them straight into this).
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenarios to run: builds, log, idle, apply, views, buildbot-worker
    /// (or all)
    #[arg(long, value_delimiter = ',', default_value = "builds,log,idle,apply")]
    pub only: Vec<String>,
    /// Trivial builds in the burst
    #[arg(long, default_value_t = 1000)]
    pub builds: usize,
    /// Trivial builds forced one at a time (idle latency)
    #[arg(long, default_value_t = 200)]
    pub idle_builds: usize,
    /// Builders the trivial builds are spread over
    #[arg(long, default_value_t = 8)]
    pub builders: usize,
    /// max-builds of each of the 2 workers
    #[arg(long, default_value_t = 8)]
    pub max_builds: usize,
    /// HTTP requests in flight while submitting the burst
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Size of the log scenario's output, in MB
    #[arg(long, default_value_t = 200)]
    pub log_mb: usize,
    /// Builders in the idle and apply scenarios' config
    #[arg(long, default_value_t = 1000)]
    pub config_builders: usize,
    /// Master starts measured in the idle scenario
    #[arg(long, default_value_t = 6)]
    pub starts: usize,
    /// Applies of each kind measured in the apply scenario
    #[arg(long, default_value_t = 10)]
    pub applies: usize,
    /// Builds in the store of the views scenario
    #[arg(long, default_value_t = 100_000)]
    pub view_builds: usize,
    /// Calls timed per page in the views scenario
    #[arg(long, default_value_t = 30)]
    pub view_samples: usize,
    /// Working directory (default: a fresh one under the temp dir)
    #[arg(long)]
    pub dir: Option<String>,
    /// Keep the working directory (logs, state) afterwards
    #[arg(long)]
    pub keep: bool,
    /// TLS on both ports (builds and log scenarios): a self-signed
    /// certificate the workers and the bench's HTTPS client pin
    #[arg(long)]
    pub tls: bool,
    /// The `buildbot-worker` executable (Buildbot's own worker) for the
    /// buildbot-worker scenario, which skips without it
    #[arg(long)]
    pub buildbot_worker: Option<String>,
    /// Trivial builds in the buildbot-worker scenario (each kind of worker)
    #[arg(long, default_value_t = 200)]
    pub compare_builds: usize,
}
