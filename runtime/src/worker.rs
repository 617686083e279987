//! The worker: connects out to the master and runs what it is sent.
//!
//! [`run_worker`] keeps one connection to the master at a time. For each
//! connection (a *session*) it says `hello`, waits for `welcome`, then
//! serves: a reader loop dispatches the master's frames, a writer task owns
//! the socket's write half, and every command or transfer runs as its own
//! task. When the session ends for any reason, every running command's
//! process group is killed before the worker reconnects, so no build
//! outlives the connection that asked for it.
//!
//! The wire protocol is described in `docs/protocol.md`.

mod command;
mod orphans;
mod transfer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{ReadHalf, WriteHalf};

use crate::tls::Stream;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;

use crate::protocol::{
    check_relative_path, Frame, FrameCodec, FrameWriter, Message, ProtocolError, PROTOCOL_VERSION,
};

/// Where and as whom the worker connects, and where it works.
#[derive(Clone)]
pub struct WorkerConfig {
    /// `host:port` of the master's worker listener.
    pub master: String,
    pub name: String,
    pub password: String,
    /// Builders' directories are created under it.
    pub basedir: PathBuf,
    /// Sent in `hello` (see [`default_info`]).
    pub info: BTreeMap<String, String>,
    /// TLS to the master (`--master-ca`, `--master-fingerprint`); `None`:
    /// plain TCP.
    pub tls: Option<WorkerTls>,
}

/// How the worker speaks TLS to its master: whom it trusts, and the name
/// the master's certificate must carry (the host of `master`).
#[derive(Clone)]
pub struct WorkerTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl WorkerTls {
    pub fn new(trust: &crate::tls::Trust, master: &str) -> Result<WorkerTls, String> {
        Ok(WorkerTls {
            config: crate::tls::client_config(trust)?,
            server_name: crate::tls::server_name(master)?,
        })
    }
}

// By hand, so that logging a configuration never shows the password.
impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("master", &self.master)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("basedir", &self.basedir)
            .field("info", &self.info)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// What a worker reports about itself in `hello` unless told otherwise:
/// `os`, `arch` and `version` (of bbc).
pub fn default_info() -> BTreeMap<String, String> {
    let mut info = BTreeMap::new();
    info.insert("os".to_string(), std::env::consts::OS.to_string());
    info.insert("arch".to_string(), std::env::consts::ARCH.to_string());
    info.insert("version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    info
}

/// Errors that stop the worker for good. Everything that may get better by
/// itself (master down, refused, connection lost) is retried instead.
#[derive(Debug)]
pub enum WorkerError {
    /// The configuration cannot work (e.g. an empty name).
    Config(String),
    /// The basedir cannot be created.
    Basedir {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Config(msg) => write!(f, "invalid worker configuration: {msg}"),
            WorkerError::Basedir { path, error } => {
                write!(f, "cannot create basedir {}: {error}", path.display())
            }
        }
    }
}

impl std::error::Error for WorkerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WorkerError::Config(_) => None,
            WorkerError::Basedir { error, .. } => Some(error),
        }
    }
}

/// First wait before reconnecting; doubled after each failure.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A master that accepts the TCP connection must answer `hello` in this
/// time; otherwise the worker would hang on a wedged master forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keepalive intervals below this are raised to it, so that a misconfigured
/// master cannot make the worker spin.
const MIN_KEEPALIVE: Duration = Duration::from_millis(10);
/// The master is considered gone after this many keepalive intervals
/// without a frame from it.
const KEEPALIVE_MISSES: u32 = 3;
/// Frames (output, file data, `finished`) queued for the socket. This bound
/// is the output backpressure: when the master reads slowly, the queue
/// fills, senders wait, and the worker stops reading the commands' pipes
/// (about 2 MiB in flight at most: 32 frames of at most 64 KiB).
const OUT_QUEUE: usize = 32;
/// `pong`s waiting for the socket. A `pong` that does not fit is dropped:
/// the frames ahead of it prove the worker alive when they arrive.
const CONTROL_QUEUE: usize = 8;
/// Frames of one download waiting for the disk. When full, the reader
/// stops reading the socket, which slows the master down through TCP.
const DOWNLOAD_QUEUE: usize = 8;
/// Queued frames are gathered into one write up to about this many bytes
/// (a write may exceed it by one frame).
const GATHER: usize = 256 * 1024;

/// Runs the worker until `shutdown` completes: connects to `cfg.master`,
/// serves it, and reconnects (with exponential backoff, capped at 60 s)
/// whenever the master refuses it, cannot be reached, or the connection is
/// lost. On shutdown, running commands are killed before this returns.
///
/// Returns an error only for problems retrying cannot fix.
pub async fn run_worker(cfg: WorkerConfig, shutdown: impl Future) -> Result<(), WorkerError> {
    if cfg.name.is_empty() {
        return Err(WorkerError::Config("the worker name is empty".into()));
    }
    if cfg.master.is_empty() {
        return Err(WorkerError::Config("the master address is empty".into()));
    }
    // Commands get `current_dir` under the basedir: make it absolute so
    // that it does not depend on the worker's own working directory later.
    let basedir = std::path::absolute(&cfg.basedir).map_err(|error| WorkerError::Basedir {
        path: cfg.basedir.clone(),
        error,
    })?;
    tokio::fs::create_dir_all(&basedir)
        .await
        .map_err(|error| WorkerError::Basedir {
            path: basedir.clone(),
            error,
        })?;
    // Before anything runs here: processes a SIGKILLed worker left behind
    // would overlap the rerun of their build.
    let dir = basedir.clone();
    let _ = tokio::task::spawn_blocking(move || orphans::kill_leftovers(&dir)).await;

    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let end = session(&cfg, &basedir, shutdown.as_mut()).await;
        match end {
            SessionEnd::Shutdown => {
                tracing::info!("worker shutting down");
                return Ok(());
            }
            SessionEnd::Refused(reason) => {
                tracing::error!(
                    master = %cfg.master,
                    name = %cfg.name,
                    "the master refused this worker: {reason}"
                );
            }
            SessionEnd::Failed(reason) => {
                tracing::warn!(master = %cfg.master, "{reason}");
            }
            SessionEnd::Lost(reason) => {
                tracing::warn!(master = %cfg.master, "connection to the master lost: {reason}");
                // The connection worked: the next failure starts the
                // backoff afresh (a restarting master is back quickly).
                backoff = INITIAL_BACKOFF;
            }
        }
        let wait = jitter(backoff);
        tracing::info!("reconnecting in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            _ = shutdown.as_mut() => {
                tracing::info!("worker shutting down");
                return Ok(());
            }
            _ = sleep(wait) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Spreads reconnections over [d/2, d] so that workers dropped together
/// (say, by a master restart) do not all come back at the same instant.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is randomly seeded per process and per instance: enough
    // randomness for spreading retries without a dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0),
    );
    let fraction = (hasher.finish() % 1024) as f64 / 1024.0;
    d.mul_f64(0.5 + fraction / 2.0)
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    /// The master said `refused` (or speaks another protocol version).
    Refused(String),
    /// No session was established (connect, handshake).
    Failed(String),
    /// An established session ended.
    Lost(String),
}

/// One connection: connect, handshake, serve until the connection ends or
/// `shutdown` completes, then kill whatever still runs.
async fn session<S: Future + ?Sized>(
    cfg: &WorkerConfig,
    basedir: &Path,
    mut shutdown: Pin<&mut S>,
) -> SessionEnd {
    let connected = tokio::select! {
        _ = shutdown.as_mut() => return SessionEnd::Shutdown,
        connected = handshake(cfg) => connected,
    };
    let (reader, writer, keepalive) = match connected {
        Ok(parts) => parts,
        Err(end) => return end,
    };
    tracing::info!(master = %cfg.master, name = %cfg.name, "connected to the master");
    let mut serving = Session {
        basedir: basedir.to_path_buf(),
        jobs: HashMap::new(),
        tasks: JoinSet::new(),
        out: None,
        control: None,
    };
    let end = serving.serve(reader, writer, keepalive, shutdown).await;
    serving.stop().await;
    end
}

type Reader = FramedRead<ReadHalf<Stream>, FrameCodec>;
type Writer = FrameWriter<WriteHalf<Stream>>;

/// Connects and says hello; returns the framed halves and the keepalive
/// interval from `welcome` (`None`: keepalive disabled).
async fn handshake(cfg: &WorkerConfig) -> Result<(Reader, Writer, Option<Duration>), SessionEnd> {
    let stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(&cfg.master)).await {
        Err(_) => {
            return Err(SessionEnd::Failed(format!(
                "connecting to {}: no answer in {} s",
                cfg.master,
                CONNECT_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(err)) => {
            return Err(SessionEnd::Failed(format!(
                "connecting to {}: {err}",
                cfg.master
            )))
        }
        Ok(Ok(stream)) => stream,
    };
    // Frames are small and interactive (pong, finished, a line of output):
    // do not let Nagle hold them back.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {err}");
    }
    let stream = match &cfg.tls {
        None => Stream::Plain(stream),
        Some(tls) => Stream::connect(stream, tls.config.clone(), tls.server_name.clone())
            .await
            .map_err(|e| SessionEnd::Failed(format!("connecting to {}: {e}", cfg.master)))?,
    };
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = FramedRead::new(read_half, FrameCodec);
    let mut writer = FrameWriter::new(write_half);

    let hello = Message::Hello {
        protocol: PROTOCOL_VERSION,
        name: cfg.name.clone(),
        password: cfg.password.clone(),
        info: cfg.info.clone(),
    };
    let answer = timeout(HANDSHAKE_TIMEOUT, async {
        writer.send(Frame::Message(hello)).await?;
        reader.next().await.transpose()
    })
    .await;
    let answer = match answer {
        Err(_) => {
            return Err(SessionEnd::Failed(format!(
                "the master did not answer hello in {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )))
        }
        // A TLS record (type 0x15 alert or 0x16 handshake, version 3.x)
        // read as a frame length: the master wants TLS on this port.
        Ok(Err(ProtocolError::TooLong { len }))
            if cfg.tls.is_none() && matches!(len >> 16, 0x1503 | 0x1603) =>
        {
            return Err(SessionEnd::Failed(
                "the master speaks TLS on this port: start the worker with --master-ca FILE \
                 or --master-fingerprint SHA256"
                    .into(),
            ))
        }
        Ok(Err(err)) => return Err(SessionEnd::Failed(format!("during the handshake: {err}"))),
        Ok(Ok(None)) => {
            return Err(SessionEnd::Failed(
                "the master closed the connection during the handshake".into(),
            ))
        }
        Ok(Ok(Some(frame))) => frame,
    };
    match answer {
        Frame::Message(Message::Welcome {
            protocol,
            keepalive_ms,
        }) => {
            if protocol != PROTOCOL_VERSION {
                return Err(SessionEnd::Refused(format!(
                    "the master speaks protocol version {protocol}, this worker {PROTOCOL_VERSION}"
                )));
            }
            let keepalive =
                (keepalive_ms > 0).then(|| Duration::from_millis(keepalive_ms).max(MIN_KEEPALIVE));
            Ok((reader, writer, keepalive))
        }
        Frame::Message(Message::Refused { reason }) => Err(SessionEnd::Refused(reason)),
        other => Err(SessionEnd::Failed(format!(
            "expected welcome or refused from the master, got {}",
            describe(&other)
        ))),
    }
}

/// A short description of a frame for logs (never its data).
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Message(message) => {
            // The serde tag is the message's name on the wire.
            match serde_json::to_value(message) {
                Ok(serde_json::Value::Object(map)) => match map.get("type") {
                    Some(serde_json::Value::String(name)) => format!("{name} message"),
                    _ => "message".to_string(),
                },
                _ => "message".to_string(),
            }
        }
        Frame::Output { id, .. } => format!("output frame for {id}"),
        Frame::FileData { id, .. } => format!("file-data frame for {id}"),
    }
}

/// A running command or transfer, as the reader loop reaches it.
enum Job {
    /// A command (or upload): `interrupt` stops it. The task holds the
    /// receiver until it ends, so a closed channel means the id is free.
    Interruptible(mpsc::Sender<()>),
    /// A download: its file frames are forwarded to the task.
    Download(mpsc::Sender<transfer::DownloadEvent>),
}

impl Job {
    fn is_finished(&self) -> bool {
        match self {
            Job::Interruptible(tx) => tx.is_closed(),
            Job::Download(tx) => tx.is_closed(),
        }
    }
}

/// What one established connection serves.
struct Session {
    basedir: PathBuf,
    jobs: HashMap<u64, Job>,
    /// Every command and transfer task. Aborting a command's task drops its
    /// process-group guard, which SIGKILLs the group.
    tasks: JoinSet<()>,
    /// To the writer task (set while serving).
    out: Option<mpsc::Sender<Frame>>,
    control: Option<mpsc::Sender<Message>>,
}

impl Session {
    async fn serve<S: Future + ?Sized>(
        &mut self,
        mut reader: Reader,
        writer: Writer,
        keepalive: Option<Duration>,
        mut shutdown: Pin<&mut S>,
    ) -> SessionEnd {
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        self.out = Some(out_tx);
        self.control = Some(control_tx);
        // The writer is a task of its own so that a slow socket never
        // stops the reader from seeing `interrupt` or `ping`.
        let mut writer_task = tokio::spawn(write_loop(writer, out_rx, control_rx, keepalive));
        let silence = keepalive.map(|k| k * KEEPALIVE_MISSES);
        let mut last_heard = Instant::now();
        // A finished JoinHandle must not be polled again: after a pause
        // (SIGSTOP longer than the keepalive) the writer's failure and the
        // reader's end arrive together, and whichever wins, the handle is
        // awaited below only while the writer may still run.
        let mut writer_ended = false;

        let end = loop {
            let deaf = silence.map(|s| last_heard + s);
            tokio::select! {
                _ = shutdown.as_mut() => break SessionEnd::Shutdown,
                written = &mut writer_task, if !writer_ended => {
                    writer_ended = true;
                    break SessionEnd::Lost(match written {
                        Ok(Ok(())) => "the writer stopped".to_string(),
                        Ok(Err(err)) => format!("sending to the master: {err}"),
                        Err(err) => format!("the writer task failed: {err}"),
                    });
                }
                frame = reader.next() => match frame {
                    None => break SessionEnd::Lost("the master closed the connection".into()),
                    Some(Err(err)) => {
                        break SessionEnd::Lost(format!("bad frame from the master: {err}"));
                    }
                    Some(Ok(frame)) => {
                        last_heard = Instant::now();
                        if let Some(end) = self.handle(frame).await {
                            break end;
                        }
                    }
                },
                _ = sleep_until(deaf.unwrap_or(last_heard)), if deaf.is_some() => {
                    break SessionEnd::Lost(format!(
                        "nothing received from the master for {} ms",
                        silence.map(|s| s.as_millis()).unwrap_or(0)
                    ));
                }
                Some(joined) = self.tasks.join_next() => {
                    if let Err(err) = joined {
                        if err.is_panic() {
                            tracing::error!("a worker task panicked: {err}");
                        }
                    }
                }
            }
        };
        if !writer_ended {
            writer_task.abort();
            // Only the cancellation or the writer's own end can come back.
            let _ = writer_task.await;
        }
        end
    }

    /// Kills every command (their tasks' guards SIGKILL the process groups
    /// as they are dropped) and waits until all tasks are gone.
    async fn stop(&mut self) {
        self.out = None;
        self.control = None;
        self.jobs.clear();
        self.tasks.shutdown().await;
    }

    /// Handles one frame from the master. Returns how the session ends if
    /// this frame ends it.
    async fn handle(&mut self, frame: Frame) -> Option<SessionEnd> {
        let message = match frame {
            Frame::Message(message) => message,
            Frame::FileData { id, data } => {
                self.forward_to_download(id, transfer::DownloadEvent::Data(data))
                    .await;
                return None;
            }
            Frame::Output { id, .. } => {
                tracing::warn!("ignoring an output frame from the master (for {id})");
                return None;
            }
        };
        match message {
            Message::Ping { nonce } => {
                if let Some(control) = &self.control {
                    // Never wait here: if the queue is full, frames are
                    // already on their way, which is as good as a pong.
                    let _ = control.try_send(Message::Pong { nonce });
                }
            }
            Message::Run {
                id,
                builder_dir,
                workdir,
                command,
                env,
                timeout_ms,
                max_time_ms,
                sigterm_time_ms,
            } => {
                let spec = command::RunSpec {
                    id,
                    builder_dir,
                    workdir,
                    command,
                    env,
                    timeout: timeout_ms.map(Duration::from_millis),
                    max_time: max_time_ms.map(Duration::from_millis),
                    sigterm_time: Duration::from_millis(sigterm_time_ms),
                };
                self.start_interruptible(id, |basedir, out, interrupt| async move {
                    command::run(&basedir, spec, &out, interrupt).await
                });
            }
            Message::Interrupt { id } => match self.jobs.get(&id) {
                Some(Job::Interruptible(tx)) => {
                    // A full channel already holds an interrupt.
                    let _ = tx.try_send(());
                }
                Some(Job::Download(_)) => {
                    tracing::warn!("ignoring interrupt for download {id}");
                }
                None => tracing::debug!("interrupt for {id}, which is not running"),
            },
            Message::Upload {
                id,
                builder_dir,
                workdir,
                src,
                directory,
            } => {
                self.start_interruptible(id, move |basedir, out, interrupt| async move {
                    // Held (not used: an upload is not interruptible) so
                    // that the id stays taken until the upload ends.
                    let _taken = interrupt;
                    let spec = transfer::UploadSpec {
                        id,
                        builder_dir,
                        workdir,
                        src,
                        directory,
                    };
                    transfer::upload(&basedir, spec, &out).await
                });
            }
            Message::Download {
                id,
                builder_dir,
                workdir,
                dest,
                directory,
            } => {
                self.start_download(transfer::DownloadSpec {
                    id,
                    builder_dir,
                    workdir,
                    dest,
                    directory,
                });
            }
            Message::FileBegin { id, path, mode } => {
                self.forward_to_download(id, transfer::DownloadEvent::Begin { path, mode })
                    .await;
            }
            Message::FileEnd { id } => {
                self.forward_to_download(id, transfer::DownloadEvent::End)
                    .await;
            }
            Message::DownloadDone { id } => {
                self.forward_to_download(id, transfer::DownloadEvent::Done)
                    .await;
            }
            Message::Refused { reason } => {
                // The master may turn a worker away after welcoming it
                // (say, another worker took its name).
                return Some(SessionEnd::Refused(reason));
            }
            other @ (Message::Hello { .. }
            | Message::Pong { .. }
            | Message::Finished { .. }
            | Message::Welcome { .. }) => {
                tracing::warn!(
                    "ignoring an unexpected {} from the master",
                    describe(&Frame::Message(other))
                );
            }
        }
        None
    }

    /// Checks that `id` is free. If it is not, reports the clash as a
    /// `finished` error (from a task, so that the reader never waits for
    /// the socket) and returns `None`.
    fn begin_job(&mut self, id: u64) -> Option<mpsc::Sender<Frame>> {
        let out = self.out.clone()?;
        self.jobs.retain(|_, job| !job.is_finished());
        if self.jobs.contains_key(&id) {
            tracing::error!("the master reused id {id} while it is still running");
            let finished = finished_error(id, format!("id {id} is already in use"), None);
            self.tasks.spawn(async move {
                let _ = out.send(Frame::Message(finished)).await;
            });
            return None;
        }
        Some(out)
    }

    /// Starts a task that an `interrupt` can reach; its result is sent as
    /// `finished` after everything it sent itself.
    fn start_interruptible<F, Fut>(&mut self, id: u64, job: F)
    where
        F: FnOnce(PathBuf, mpsc::Sender<Frame>, mpsc::Receiver<()>) -> Fut,
        Fut: Future<Output = Message> + Send + 'static,
    {
        let Some(out) = self.begin_job(id) else {
            return;
        };
        let (tx, rx) = mpsc::channel(1);
        self.jobs.insert(id, Job::Interruptible(tx));
        let fut = job(self.basedir.clone(), out.clone(), rx);
        self.tasks.spawn(async move {
            let finished = fut.await;
            // Through the same queue as the output, hence after it.
            let _ = out.send(Frame::Message(finished)).await;
        });
    }

    /// Starts a download task; the reader forwards its file frames.
    fn start_download(&mut self, spec: transfer::DownloadSpec) {
        let id = spec.id;
        let Some(out) = self.begin_job(id) else {
            return;
        };
        let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
        self.jobs.insert(id, Job::Download(tx));
        let basedir = self.basedir.clone();
        self.tasks.spawn(async move {
            if let Some(finished) = transfer::download(&basedir, spec, rx).await {
                let _ = out.send(Frame::Message(finished)).await;
            }
        });
    }

    /// Hands a file frame to its download. Waits when the download's queue
    /// is full: that pushes back on the master through TCP.
    async fn forward_to_download(&mut self, id: u64, event: transfer::DownloadEvent) {
        match self.jobs.get(&id) {
            Some(Job::Download(tx)) => {
                if tx.send(event).await.is_err() {
                    tracing::warn!("file frame for download {id}, which has ended");
                }
            }
            _ => tracing::warn!("ignoring a file frame for {id}, which is not a download"),
        }
    }
}

/// Sends queued frames; sends an unprompted `pong` (nonce 0) whenever
/// nothing was sent for a keepalive interval.
async fn write_loop(
    mut sink: Writer,
    mut out: mpsc::Receiver<Frame>,
    mut control: mpsc::Receiver<Message>,
    keepalive: Option<Duration>,
) -> Result<(), ProtocolError> {
    let mut last_sent = Instant::now();
    loop {
        let heartbeat = keepalive.map(|k| last_sent + k);
        let frame = tokio::select! {
            // Pongs first: they are tiny and say the worker is alive.
            biased;
            Some(message) = control.recv() => Frame::Message(message),
            Some(frame) = out.recv() => frame,
            _ = sleep_until(heartbeat.unwrap_or(last_sent)), if heartbeat.is_some() => {
                Frame::Message(Message::Pong { nonce: 0 })
            }
            else => return Ok(()),
        };
        sink.push(frame)?;
        // Whatever else is queued leaves in the same write: fewer system
        // calls, and over TLS small frames share a record.
        while sink.queued() < GATHER {
            let next = match control.try_recv() {
                Ok(message) => Frame::Message(message),
                Err(_) => match out.try_recv() {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            sink.push(next)?;
        }
        sink.flush().await?;
        last_sent = Instant::now();
    }
}

/// Resolves a command's or transfer's directory: `basedir/builder_dir/workdir`,
/// refusing paths that would leave the basedir.
pub(crate) fn work_dir(
    basedir: &Path,
    builder_dir: &str,
    workdir: &str,
) -> Result<PathBuf, String> {
    check_relative_path(builder_dir).map_err(|e| format!("builder directory: {e}"))?;
    check_relative_path(workdir).map_err(|e| format!("workdir: {e}"))?;
    // Keep only the normal components: `create_dir_all` fails on a path
    // ending in `.` ("build/." or a workdir of ".").
    let mut dir = basedir.to_path_buf();
    for part in [builder_dir, workdir] {
        for c in Path::new(part).components() {
            if let std::path::Component::Normal(n) = c {
                dir.push(n);
            }
        }
    }
    Ok(dir)
}

/// A `finished` for something that failed before or instead of running.
pub(crate) fn finished_error(id: u64, error: String, started: Option<Instant>) -> Message {
    Message::Finished {
        id,
        exit_code: None,
        signal: None,
        stopped: None,
        error: Some(error),
        duration_ms: started.map(elapsed_ms).unwrap_or(0),
    }
}

pub(crate) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
