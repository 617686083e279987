//! The lowered build graph: what the compiler produces and the runtime runs.
//!
//! This crate is the contract between bbc's two halves, and the one
//! definition of the format (documented in
//! `docs/graph.md`). Everything here is resolved: tag selectors are expanded
//! to builder names, durations are milliseconds, defaults are filled in.
//! Secrets appear only as references (`{"secret": "NAME"}`), never as values.
//!
//! Architecture invariant: serialising the same graph always gives the same
//! bytes (maps are ordered, entities are sorted by name), and every entity
//! carries `hash`, a content hash of its own lowered definition, so two
//! graphs can be compared entity by entity without looking inside.

pub mod credentials;
pub mod diff;
pub mod eval;
pub mod hash;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `format` field of every graph file.
pub const FORMAT: &str = "bbc-graph";
/// Bumped on any incompatible change to this module's serialised form.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub format: String,
    pub version: u32,
    pub master: Master,
    pub workers: Vec<Worker>,
    pub locks: Vec<Lock>,
    pub change_sources: Vec<ChangeSource>,
    pub schedulers: Vec<Scheduler>,
    pub builders: Vec<Builder>,
    pub reporters: Vec<Reporter>,
}

impl Graph {
    pub fn builder(&self, name: &str) -> Option<&Builder> {
        find(&self.builders, name, |b| &b.name)
    }
    pub fn worker(&self, name: &str) -> Option<&Worker> {
        find(&self.workers, name, |w| &w.name)
    }
    pub fn scheduler(&self, name: &str) -> Option<&Scheduler> {
        find(&self.schedulers, name, |s| &s.name)
    }
    pub fn lock(&self, name: &str) -> Option<&Lock> {
        find(&self.locks, name, |l| &l.name)
    }

    /// Deterministic JSON: the bytes `bbc compile` writes.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Reads a graph file, refusing other formats and versions by name.
    pub fn from_json(text: &str) -> Result<Graph, String> {
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u32>,
        }
        let h: Header = serde_json::from_str(text).map_err(|e| format!("not a graph file: {e}"))?;
        if h.format.as_deref() != Some(FORMAT) {
            return Err(format!("not a graph file: `format` is not \"{FORMAT}\""));
        }
        if h.version != Some(VERSION) {
            return Err(format!(
                "graph format version {:?} is not supported (this bbc reads version {VERSION}); recompile the config",
                h.version
            ));
        }
        serde_json::from_str(text).map_err(|e| format!("invalid graph file: {e}"))
    }
}

// Entities are sorted by name, so lookups can bisect.
fn find<'a, T>(items: &'a [T], name: &str, key: impl Fn(&T) -> &String) -> Option<&'a T> {
    items
        .binary_search_by(|i| key(i).as_str().cmp(name))
        .ok()
        .map(|i| &items[i])
}

/// A property value: what `property "k" v` and force parameters hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::String(s) => f.write_str(s),
        }
    }
}

/// A credential: a reference to a secret the running master resolves, or a
/// plain string (allowed, but the compiler warns about it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credential {
    Secret { secret: String },
    Plain(String),
}

/// A string that may contain `${{ … }}` run-time interpolations.
/// Serialised as a plain JSON string when it has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Text(pub Vec<Part>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

impl Text {
    pub fn lit(s: impl Into<String>) -> Text {
        Text(vec![Part::Lit(s.into())])
    }
    /// The text when it has no interpolation.
    pub fn as_literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_literal() {
            Some(lit) => s.serialize_str(lit),
            None => {
                #[derive(Serialize)]
                struct Interp<'a> {
                    interp: &'a [Part],
                }
                Interp { interp: &self.0 }.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Lit(String),
            Interp { interp: Vec<Part> },
        }
        Ok(match Repr::deserialize(d)? {
            Repr::Lit(s) => Text::lit(s),
            Repr::Interp { interp } => Text(interp),
        })
    }
}

/// A run-time expression over build properties (`do-step-if`, `${{ prop.x }}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expr {
    /// `prop.NAME`: the build property, or empty/false when unset.
    Prop(String),
    Lit(Scalar),
    Not(Box<Expr>),
    And(Box<[Expr; 2]>),
    Or(Box<[Expr; 2]>),
    Eq(Box<[Expr; 2]>),
    Ne(Box<[Expr; 2]>),
    Lt(Box<[Expr; 2]>),
    Le(Box<[Expr; 2]>),
    Gt(Box<[Expr; 2]>),
    Ge(Box<[Expr; 2]>),
    /// `a ?? b`: `a`, or `b` when `a` is a property that is not set.
    Default(Box<[Expr; 2]>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Master {
    pub title: String,
    pub url: Option<String>,
    /// Socket address the worker listener binds.
    pub worker_listen: String,
    /// Socket address the HTTP server binds.
    pub http_listen: String,
    /// State directory, as written (relative paths are relative to the config file).
    pub state_dir: String,
    pub properties: BTreeMap<String, Scalar>,
    /// TLS on the worker port; `None`: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_tls: Option<Tls>,
    /// TLS on the HTTP port (HTTPS); `None`: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_tls: Option<Tls>,
    /// A command that prints a secret's value (`{name}` in an argument is
    /// the secret's name), asked for secrets found in neither the secrets
    /// directory nor the environment: `pass show bbc/{name}`, a vault CLI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets_command: Vec<String>,
    /// What the janitor deletes, and how often it looks (`retention { … }`);
    /// `None` keeps everything (graphs from before retention have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Users, roles and whether anonymous callers may read (`user`,
    /// `role`, `master { private }`); empty for graphs without them.
    #[serde(default, skip_serializing_if = "Access::is_empty")]
    pub access: Access,
    /// How many latent workers may run (or be starting) at once
    /// (`latent-workers max=N`); `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_max: Option<u32>,
    /// Where the master keeps its state: PostgreSQL (`store "postgres://…"`)
    /// or, when `None`, redb in the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresStore>,
    pub hash: String,
}

/// `master { store "postgres://user@host:port/db" password=(secret)"…"
/// schema="bbc" }`: the master's state in a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresStore {
    /// `postgres://user@host:port/database[?options]`, never with a
    /// password (the compiler refuses one).
    pub url: String,
    /// Always a secret reference: the compiler refuses plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Credential>,
    /// The schema that holds bbc's tables (`bbc` unless given).
    pub schema: String,
}

impl PostgresStore {
    pub const DEFAULT_SCHEMA: &'static str = "bbc";
}

/// Who may do what through the API. Part of the master (its hash covers
/// it), so a reload that changes users or roles is seen as a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Anonymous callers see nothing: reads need the `view` grant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<User>,
    /// OAuth2 providers browsers may log in through (`master { oauth … }`),
    /// at most one of each kind, sorted by kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oauth: Vec<OAuthProvider>,
}

impl Access {
    pub fn is_empty(&self) -> bool {
        !self.private && self.roles.is_empty() && self.users.is_empty() && self.oauth.is_empty()
    }
    pub fn oauth(&self, kind: OAuthKind) -> Option<&OAuthProvider> {
        self.oauth.iter().find(|p| p.kind == kind)
    }
    /// Whether the config names anyone: then mutating endpoints need an
    /// identified caller with the grant.
    pub fn has_users(&self) -> bool {
        !self.roles.is_empty() || !self.users.is_empty()
    }
    pub fn role(&self, name: &str) -> Option<&Role> {
        find(&self.roles, name, |r| &r.name)
    }
}

/// `role "NAME" grant="view force" builders="core-*"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub grants: Vec<Grant>,
    /// Globs limiting force, cancel and rebuild to matching builders;
    /// empty: every builder. `view` and `admin` are never limited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builders: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    View,
    Force,
    Cancel,
    Rebuild,
    /// Everything, on every builder.
    Admin,
}

impl Grant {
    pub const ALL: [(&'static str, Grant); 5] = [
        ("view", Grant::View),
        ("force", Grant::Force),
        ("cancel", Grant::Cancel),
        ("rebuild", Grant::Rebuild),
        ("admin", Grant::Admin),
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::View => "view",
            Grant::Force => "force",
            Grant::Cancel => "cancel",
            Grant::Rebuild => "rebuild",
            Grant::Admin => "admin",
        }
    }
}

/// `user "NAME" token=(secret)"…" password=(secret)"…" roles="a b"`: at
/// least one way in (the compiler refuses a user with none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// The user's API token, sent as `Authorization: Bearer TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Credential>,
    /// The secret holding an argon2id PHC string (`bbc passwd`), checked
    /// by `POST /api/v1/login`; never a password itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Credential>,
    pub roles: Vec<String>,
    /// The user's login at each OAuth provider (`github="alice-gh"`), as
    /// written; a browser that logs in there as that login acts as this
    /// user.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logins: BTreeMap<OAuthKind, String>,
}

impl User {
    /// Whether `login`, as a provider of `kind` named its user, is this
    /// user's login there: GitHub logins are case-insensitive (GitHub
    /// itself treats `Alice` and `alice` as one account); the others are
    /// matched exactly.
    pub fn has_login(&self, kind: OAuthKind, login: &str) -> bool {
        self.logins.get(&kind).is_some_and(|l| match kind {
            OAuthKind::Github => l.eq_ignore_ascii_case(login),
            OAuthKind::Gitlab | OAuthKind::Gitea => l == login,
        })
    }
}

/// The forges browsers may log in through (OAuth2 authorization code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthKind {
    Github,
    Gitlab,
    Gitea,
}

impl OAuthKind {
    pub const ALL: [(&'static str, OAuthKind); 3] = [
        ("github", OAuthKind::Github),
        ("gitlab", OAuthKind::Gitlab),
        ("gitea", OAuthKind::Gitea),
    ];
    /// The word in the config, the URL (`/login/oauth/github`) and a
    /// session's `via`.
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthKind::Github => "github",
            OAuthKind::Gitlab => "gitlab",
            OAuthKind::Gitea => "gitea",
        }
    }
    pub fn parse(s: &str) -> Option<OAuthKind> {
        Self::ALL.iter().find(|(k, _)| *k == s).map(|(_, v)| *v)
    }
    /// The name people know it by, for "Log in with …".
    pub fn label(self) -> &'static str {
        match self {
            OAuthKind::Github => "GitHub",
            OAuthKind::Gitlab => "GitLab",
            OAuthKind::Gitea => "Gitea",
        }
    }
}

/// `oauth "github" client-id="…" client-secret=(secret)"…" [url=…] [api-url=…]`
/// in `master`: an OAuth2 application registered at a forge. URLs are
/// resolved (defaults filled in) and have no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthProvider {
    pub kind: OAuthKind,
    /// The application's public id.
    pub client_id: String,
    /// Always a secret reference: the compiler refuses plain text here.
    pub client_secret: Credential,
    /// The forge's web base: authorization and token endpoints hang off it.
    pub url: String,
    /// The forge's API base: the user endpoint hangs off it.
    pub api_url: String,
}

/// A listener's certificate chain and private key: PEM files, as written
/// (relative paths are relative to the config file). Paths only: the key
/// itself never enters the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

/// `master { retention { … } }`. Ages count from a build's end; running
/// builds are never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Builds (records, steps, logs) finished longer ago than this are
    /// deleted; `None`: kept.
    pub builds_ms: Option<u64>,
    /// Logs of builds finished longer ago than this are deleted, their
    /// records kept; `None`: kept as long as their build.
    pub logs_ms: Option<u64>,
    /// Per builder, the newest this many finished builds are kept (logs
    /// included) whatever their age.
    pub keep_last: u64,
    /// How often the janitor runs.
    pub every_ms: u64,
    /// Audit-log entries recorded longer ago than this are deleted;
    /// `None`: kept for ever (the default: who did what is deleted only
    /// when the config says so). Left out of the JSON when `None`, so the
    /// hashes of configs without it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_ms: Option<u64>,
}

impl Retention {
    /// The janitor's default period.
    pub const DEFAULT_EVERY_MS: u64 = 3_600_000;
}

impl Default for Master {
    fn default() -> Self {
        Master {
            title: "bbc".into(),
            url: None,
            worker_listen: "127.0.0.1:9989".into(),
            http_listen: "127.0.0.1:8010".into(),
            state_dir: "state".into(),
            properties: BTreeMap::new(),
            worker_tls: None,
            http_tls: None,
            secrets_command: Vec::new(),
            retention: None,
            access: Access::default(),
            latent_max: None,
            postgres: None,
            hash: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub name: String,
    pub password: Credential,
    pub max_builds: u32,
    pub properties: BTreeMap<String, Scalar>,
    pub keepalive_ms: u64,
    pub missing_timeout_ms: u64,
    pub downtime: Vec<Downtime>,
    /// The wire protocol this worker speaks. Left out of the JSON when it is
    /// bbc's own, so graphs (and their hashes) without Buildbot workers
    /// read exactly as before the field existed.
    #[serde(default, skip_serializing_if = "WorkerProtocol::is_bbc")]
    pub protocol: WorkerProtocol,
    /// A worker the master starts when a build needs it and stops when
    /// idle (`kind="docker"`, `kind="command"`); `None` for one that
    /// connects by itself. Left out of the JSON then, like `protocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<Latent>,
    pub hash: String,
}

/// How the master starts and stops a latent worker (docs/latent-workers.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latent {
    pub kind: LatentKind,
    /// Stopped after this long without a build.
    pub idle_ms: u64,
    /// How long a start may take, until the worker has connected.
    pub start_timeout_ms: u64,
    /// The address the started worker dials (`host:port`); `None`: the
    /// master's worker listener, with `127.0.0.1` for an unspecified host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LatentKind {
    /// A container from `image` running `bbc worker`, through the Docker
    /// Engine API, on the host's network.
    Docker { image: String },
    /// Shell commands the admin writes: `start` must bring up a worker that
    /// connects back; `stop` takes it down.
    Command { start: String, stop: String },
}

/// Which protocol a worker connects with (`docs/protocol.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerProtocol {
    /// bbc's own frames (`bbc worker`).
    #[default]
    Bbc,
    /// Buildbot's WebSocket + msgpack protocol (`buildbot-worker` with
    /// `protocol='msgpack_experimental_v7'`).
    Buildbot,
}

impl WorkerProtocol {
    pub fn is_bbc(&self) -> bool {
        *self == WorkerProtocol::Bbc
    }

    /// The word used in the config and in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerProtocol::Bbc => "bbc",
            WorkerProtocol::Buildbot => "buildbot",
        }
    }
}

/// A weekly window in which a worker takes no new builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    /// Days the window starts on, 0 = Monday … 6 = Sunday.
    pub days: Vec<u8>,
    /// Minutes after local midnight.
    pub start_minute: u16,
    /// Minutes after local midnight; `end_minute <= start_minute` means the
    /// window ends on the next day.
    pub end_minute: u16,
    /// IANA time zone name.
    pub tz: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    pub name: String,
    pub scope: LockScope,
    pub max_count: u32,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockScope {
    Master,
    Worker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockUse {
    pub lock: String,
    pub access: LockAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockAccess {
    Counting,
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSource {
    pub name: String,
    #[serde(flatten)]
    pub kind: ChangeSourceKind,
    /// The codebase its changes carry when the change itself names none
    /// (a JSON or base-hook delivery's own `codebase` wins). Absent: `""`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub codebase: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ChangeSourceKind {
    GitPoller {
        repo: String,
        /// Branch names or globs; empty means every branch.
        branches: Vec<String>,
        poll_interval_ms: u64,
        only_tags: bool,
    },
    GithubWebhook {
        secret: Option<Credential>,
    },
    GitlabWebhook {
        secret: Option<Credential>,
    },
    GiteaWebhook {
        secret: Option<Credential>,
    },
    BitbucketCloudWebhook {
        secret: Option<Credential>,
    },
    BitbucketServerWebhook {
        secret: Option<Credential>,
    },
    JsonWebhook {
        secret: Option<Credential>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    pub name: String,
    /// Resolved builder names (tag selectors expanded), sorted.
    pub builders: Vec<String>,
    #[serde(flatten)]
    pub kind: SchedulerKind,
    /// The priority of the requests it submits (higher starts first, before
    /// the builder's own priority; docs/language.md). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub priority: i64,
    /// The codebases its build sets span (single-branch, any-branch,
    /// periodic, nightly), in the order written: a set has one source stamp
    /// per codebase. Empty: one source stamp, codebase `""`
    /// (docs/changes.md, "Codebases").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codebases: Vec<Codebase>,
    pub hash: String,
}

/// One codebase of a scheduler: where it lives and the branch its builds
/// check out when none of the set's changes touched it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Codebase {
    pub name: String,
    pub repository: String,
    pub branch: String,
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// Which changes a change-driven scheduler looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChangeFilter {
    /// Change source names; empty means changes from every source.
    pub change_sources: Vec<String>,
    pub repository: Option<String>,
    /// Changes touching none of these file globs are ignored (empty: no filter).
    pub files: Vec<String>,
    /// A change touching none of these globs does not start a build by
    /// itself (empty: every change is important).
    pub files_important: Vec<String>,
    /// Leave unimportant changes out of the build entirely.
    pub only_important: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SchedulerKind {
    SingleBranch {
        branch: String,
        tree_stable_timer_ms: u64,
        filter: ChangeFilter,
    },
    AnyBranch {
        /// Branch globs; empty means every branch.
        branches: Vec<String>,
        tree_stable_timer_ms: u64,
        filter: ChangeFilter,
    },
    Periodic {
        interval_ms: u64,
        branch: Option<String>,
    },
    Nightly {
        cron: String,
        tz: String,
        branch: Option<String>,
        only_if_changed: bool,
        filter: ChangeFilter,
    },
    Triggerable {},
    Dependent {
        upstream: String,
    },
    Force {
        params: Vec<ForceParam>,
    },
}

impl SchedulerKind {
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::SingleBranch { .. } => "single-branch",
            SchedulerKind::AnyBranch { .. } => "any-branch",
            SchedulerKind::Periodic { .. } => "periodic",
            SchedulerKind::Nightly { .. } => "nightly",
            SchedulerKind::Triggerable {} => "triggerable",
            SchedulerKind::Dependent { .. } => "dependent",
            SchedulerKind::Force { .. } => "force",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForceParam {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Option<Scalar>,
    pub required: bool,
    /// For `choice` parameters.
    pub choices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamType {
    String,
    Int,
    Bool,
    Choice,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub name: String,
    pub description: Option<String>,
    pub workers: Vec<String>,
    pub tags: Vec<String>,
    pub env: BTreeMap<String, Text>,
    /// Variables whose value is a secret (`env { TOKEN (secret)"NAME" }`):
    /// the name only; the master resolves it when a step starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, Credential>,
    pub properties: BTreeMap<String, Scalar>,
    /// Directory under the worker's basedir; defaults to the builder name.
    pub workdir: String,
    pub collapse_requests: bool,
    pub priority: i64,
    pub locks: Vec<LockUse>,
    pub max_time_ms: Option<u64>,
    pub steps: Vec<Step>,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the builder.
    pub name: String,
    pub description: Option<String>,
    #[serde(flatten)]
    pub kind: StepKind,
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub warn_on_warnings: bool,
    pub always_run: bool,
    pub do_step_if: Option<Expr>,
    pub hide_step_if: Option<Expr>,
    /// Kill the command after this long without output.
    pub timeout_ms: Option<u64>,
    pub max_time_ms: Option<u64>,
    /// Time between SIGTERM and SIGKILL when a command is stopped.
    pub sigterm_time_ms: u64,
    pub env: BTreeMap<String, Text>,
    /// As [`Builder::env_secrets`]; a step's variable overrides the
    /// builder's of the same name, secret or not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, Credential>,
    pub workdir: Option<Text>,
    /// Exit code → result; codes not listed: 0 success, others failure.
    pub decode_rc: BTreeMap<i32, BuildResult>,
    pub locks: Vec<LockUse>,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Run through `sh -c`.
    Shell(Text),
    /// Executed directly, no shell.
    Argv(Vec<Text>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StepKind {
    Shell {
        command: Command,
        warning_pattern: Option<Arc<str>>,
    },
    Compile {
        command: Command,
        warning_pattern: Option<Arc<str>>,
    },
    Test {
        command: Command,
        warning_pattern: Option<Arc<str>>,
        /// A JUnit XML report the command writes (relative to the step's
        /// directory on the worker), read after it ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        junit: Option<String>,
    },
    Git {
        repo: Text,
        /// Defaults to the build's `branch` property at run time.
        branch: Option<Text>,
        mode: GitMode,
        method: GitMethod,
        /// Fetch only this many commits (`git fetch --depth N`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shallow: Option<u32>,
        /// Check submodules out too (recursively).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        submodules: bool,
        /// Fetches tried again this many times after a failure.
        #[serde(default, skip_serializing_if = "is_zero")]
        retry: u32,
        /// The pause before each retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_delay_ms: Option<u64>,
        /// An ssh private key (a secret, resolved when the step starts)
        /// git uses for `ssh://` repositories.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_key: Option<Credential>,
        /// `known_hosts` lines ssh checks the server against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ssh_known_hosts: Option<String>,
        /// The codebase whose source stamp it checks out (repository,
        /// branch, revision; `repo`/`branch` when the set has none for it),
        /// setting `got_revision.CODEBASE`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        codebase: Option<String>,
    },
    /// Worker → master.
    Upload {
        src: Text,
        dest: Text,
        directory: bool,
    },
    /// Master → worker.
    Download {
        src: Text,
        dest: Text,
        directory: bool,
    },
    Trigger {
        schedulers: Vec<String>,
        wait: bool,
        copy_properties: Vec<String>,
        set_properties: BTreeMap<String, Text>,
    },
    SetProperty {
        property: String,
        value: Text,
    },
    SetPropertyFromCommand {
        property: String,
        command: Command,
    },
    MasterShell {
        command: Command,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Shell { .. } => "shell",
            StepKind::Compile { .. } => "compile",
            StepKind::Test { .. } => "test",
            StepKind::Git { .. } => "git",
            StepKind::Upload { .. } => "upload",
            StepKind::Download { .. } => "download",
            StepKind::Trigger { .. } => "trigger",
            StepKind::SetProperty { .. } | StepKind::SetPropertyFromCommand { .. } => {
                "set-property"
            }
            StepKind::MasterShell { .. } => "master-shell",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitMode {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitMethod {
    Clobber,
    Fresh,
    Clean,
    Copy,
}

/// Results of steps and builds, worst last (as Buildbot orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildResult {
    Success,
    Warnings,
    Skipped,
    Failure,
    Exception,
    Retry,
    Cancelled,
}

impl BuildResult {
    /// The word used in configs, logs and the API: "success", "failure", …
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map_or("?", |(n, _)| n)
    }

    pub const ALL: [(&'static str, BuildResult); 7] = [
        ("success", BuildResult::Success),
        ("warnings", BuildResult::Warnings),
        ("skipped", BuildResult::Skipped),
        ("failure", BuildResult::Failure),
        ("exception", BuildResult::Exception),
        ("retry", BuildResult::Retry),
        ("cancelled", BuildResult::Cancelled),
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reporter {
    pub name: String,
    /// Builders whose builds are reported, resolved and sorted.
    pub builders: Vec<String>,
    #[serde(flatten)]
    pub kind: ReporterKind,
    pub hash: String,
}

/// When a mail or chat reporter speaks (Buildbot's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    All,
    Failing,
    Passing,
    Problem,
    Change,
    Warnings,
    Exception,
}

impl When {
    pub const ALL: [(&'static str, When); 7] = [
        ("all", When::All),
        ("failing", When::Failing),
        ("passing", When::Passing),
        ("problem", When::Problem),
        ("change", When::Change),
        ("warnings", When::Warnings),
        ("exception", When::Exception),
    ];
}

/// How a mail reporter turns the authors of a build's changes into
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blamelist {
    /// A commit identity (a whole author text, its address or its name) →
    /// the address to mail instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, String>,
    /// Completes an author without an address: `ada` → `ada@DOMAIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReporterKind {
    Mail {
        /// `host:port` of the SMTP server.
        smtp: String,
        from: String,
        to: Vec<String>,
        when: Vec<When>,
        /// Handlebars templates.
        subject: String,
        body: String,
        username: Option<String>,
        password: Option<Credential>,
        /// Mail the authors of the build's changes too (Buildbot's
        /// "interested users"); absent: only `to`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blamelist: Option<Blamelist>,
    },
    HttpPush {
        url: String,
        /// Handlebars template of the request body; JSON of the build when absent.
        template: Option<String>,
        when: Vec<When>,
    },
    GithubStatus {
        token: Credential,
        api_url: String,
        context: String,
    },
    GitlabStatus {
        token: Credential,
        api_url: String,
        context: String,
    },
    GiteaStatus {
        token: Credential,
        api_url: String,
        context: String,
    },
    /// Bitbucket Cloud's build statuses: the token is an access token
    /// (Bearer), or with `username` an app password (Basic).
    BitbucketCloudStatus {
        token: Credential,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        api_url: String,
        context: String,
    },
    /// Bitbucket Server / Data Center's build statuses: an HTTP access
    /// token (Bearer), or with `username` a password or personal access
    /// token (Basic).
    BitbucketServerStatus {
        token: Credential,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        api_url: String,
        context: String,
    },
    Irc {
        /// `host:port`.
        server: String,
        nick: String,
        channels: Vec<String>,
        when: Vec<When>,
        password: Option<Credential>,
        tls: bool,
    },
}
