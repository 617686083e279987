//! One admitted Buildbot worker: bbc's frames from the builds translated
//! into msgpack requests (`start_command`, `interrupt_command`), the
//! worker's `update`s and `complete`s back into `CmdEvent`s, keepalives.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

use super::codec::{self, Incoming, Update};
use super::Rewind;
use crate::protocol::{check_relative_path, Frame, Message, Stopped, Stream, WireCommand};
use crate::state::connection::{AdapterEnds, CmdEvent, WorkerConn};

type Socket = WebSocketStream<Rewind<crate::tls::Stream>>;

/// What the worker said about itself (`get_worker_info`).
pub(super) struct Hello {
    /// Shown in the API like a bbc worker's `info`: the worker's strings
    /// (`version`, `system` as `os`, the files of its `info/` directory),
    /// never its `environ` (it may hold secrets).
    pub info: BTreeMap<String, String>,
    /// The worker's base directory: Buildbot's `shell` takes an absolute
    /// `workdir`.
    pub basedir: String,
}

/// Asks the worker who it is and sets its output settings; answers once
/// it has answered, within `timeout`.
pub(super) async fn introduce(
    mut ws: Socket,
    timeout: Duration,
) -> Result<(Socket, Hello), String> {
    let info_req = codec::request(0, "get_worker_info", vec![]);
    // Whole lines, in messages of up to 64 KiB, sent at least every half
    // second: output reaches the log promptly and in few messages. A line
    // is split only past 1 MiB; "\n" as the newline pattern leaves the
    // text as the command wrote it.
    let settings = Value::Map(vec![
        (Value::from("buffer_size"), Value::from(64 * 1024)),
        (Value::from("buffer_timeout"), Value::from(0.5)),
        (Value::from("newline_re"), Value::from("\n")),
        (Value::from("max_line_length"), Value::from(1 << 20)),
    ]);
    let settings_req = codec::request(1, "set_worker_settings", vec![("args", settings)]);
    for m in [info_req, settings_req] {
        ws.send(Ws::Binary(Bytes::from(m)))
            .await
            .map_err(|e| format!("write failed: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut hello = None;
    let mut settings_ok = false;
    while hello.is_none() || !settings_ok {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| {
                format!(
                    "no answer to get_worker_info within {} s",
                    timeout.as_secs()
                )
            })?;
        let bytes = match msg {
            Some(Ok(Ws::Binary(b))) => b,
            Some(Ok(Ws::Close(_))) | None => return Err("closed during the introduction".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read failed: {e}")),
        };
        match codec::decode(&bytes)? {
            Incoming::Response {
                seq: 0,
                result,
                is_exception: false,
            } => hello = Some(worker_info(result)?),
            Incoming::Response {
                seq: 1,
                is_exception: false,
                ..
            } => settings_ok = true,
            Incoming::Response { seq, result, .. } => {
                return Err(format!("request {seq} failed: {result}"))
            }
            Incoming::Request { seq, op, .. } => {
                let answer = codec::response(
                    seq,
                    Value::from(format!("`{op}` before the introduction")),
                    true,
                );
                let _ = ws.send(Ws::Binary(Bytes::from(answer))).await;
            }
        }
    }
    hello
        .map(|h| (ws, h))
        .ok_or_else(|| "no worker info".into())
}

fn worker_info(result: Value) -> Result<Hello, String> {
    let Value::Map(entries) = result else {
        return Err("get_worker_info answered something other than a map".into());
    };
    let mut info = BTreeMap::new();
    let mut basedir = None;
    for (k, v) in entries {
        let Some(k) = k.as_str() else { continue };
        match (k, &v) {
            ("environ", _) | ("worker_commands", _) => {}
            ("basedir", Value::String(s)) => basedir = s.as_str().map(str::to_string),
            ("system", Value::String(s)) => {
                info.insert("os".to_string(), s.as_str().unwrap_or("").to_string());
            }
            ("numcpus", Value::Integer(n)) => {
                info.insert("numcpus".to_string(), n.to_string());
            }
            (_, Value::String(s)) => {
                info.insert(k.to_string(), s.as_str().unwrap_or("").trim().to_string());
            }
            _ => {}
        }
    }
    let basedir = basedir.ok_or("the worker did not say its basedir")?;
    if !basedir.starts_with('/') {
        return Err(format!("the worker's basedir `{basedir}` is not absolute"));
    }
    Ok(Hello { info, basedir })
}

/// A command running on the worker, as far as the master knows it.
pub(super) struct Running {
    builder: String,
    pub(super) kind: Kind,
    interrupted: bool,
    rc: Option<i64>,
    signal: Option<i32>,
    stopped: Option<Stopped>,
    elapsed: Option<f64>,
    /// A transfer's error text (the worker sends it as stderr), bounded.
    errors: String,
    started: Instant,
}

impl Running {
    pub(super) fn new(builder: String, kind: Kind) -> Running {
        Running {
            builder,
            kind,
            interrupted: false,
            rc: None,
            signal: None,
            stopped: None,
            elapsed: None,
            errors: String::new(),
            started: Instant::now(),
        }
    }
}

/// Which of the worker's commands a bbc command became.
pub(super) enum Kind {
    Shell,
    /// `upload_file`: `began` once the first data (or the close) came.
    Upload {
        began: bool,
    },
    /// `upload_directory`: a tarball, unpacked into per-file events.
    UploadDir(super::untar::Untar),
    /// `download_file`: the worker pulls (`update_read_file`) what the
    /// build pushes; bounded by [`super::transfer::MAX_BUFFERED`].
    Download(super::transfer::Pull),
}

/// What a request of the master's was, to read its response.
pub(super) enum Pending {
    Start(u64),
    Other,
}

pub(super) struct Session {
    sink: SplitSink<Socket, Ws>,
    conn: Arc<WorkerConn>,
    basedir: String,
    next_seq: u64,
    pending: HashMap<u64, Pending>,
    pub(super) running: HashMap<u64, Running>,
}

/// The master's answer to a request of the worker's.
pub(super) enum Answer {
    Done(Value),
    Failed(String),
    /// Answered later (a read of a download whose data has not come yet).
    Later,
}

/// Runs the session until the connection ends; returns why it ended. The
/// connection is closed (waiting commands told `Lost`) before it returns.
pub(super) async fn run(
    ws: Socket,
    conn: Arc<WorkerConn>,
    ends: AdapterEnds,
    basedir: String,
    keepalive_ms: u64,
) -> String {
    let (sink, stream) = ws.split();
    let mut s = Session {
        sink,
        conn: conn.clone(),
        basedir,
        // 0 and 1 went with the introduction.
        next_seq: 2,
        pending: HashMap::new(),
        running: HashMap::new(),
    };
    let reason = s.serve(stream, ends, keepalive_ms).await;
    conn.close();
    reason
}

impl Session {
    async fn serve(
        &mut self,
        mut stream: SplitStream<Socket>,
        ends: AdapterEnds,
        keepalive_ms: u64,
    ) -> String {
        let AdapterEnds {
            mut frames,
            mut kicked,
        } = ends;
        let mut ping = tokio::time::interval(Duration::from_millis(keepalive_ms.max(100)));
        ping.tick().await;
        // Keepalives sent since the worker last said anything.
        let mut unanswered = 0u32;
        loop {
            tokio::select! {
                // Downloads wait here while the worker has not pulled
                // what is buffered: memory stays bounded.
                f = frames.recv(), if self.buffered() < super::transfer::MAX_BUFFERED => match f {
                    Some(Frame::Message(m)) => {
                        if let Err(e) = self.on_build_frame(m).await {
                            return e;
                        }
                    }
                    Some(Frame::FileData { id, data }) => {
                        if let Err(e) = self.download_data(id, data).await {
                            return e;
                        }
                    }
                    Some(Frame::Output { .. }) => {}
                    None => return "master closed the connection".into(),
                },
                _ = ping.tick() => {
                    if unanswered >= 3 {
                        return format!("no answer to {unanswered} keepalives");
                    }
                    unanswered += 1;
                    if let Err(e) = self.request("keepalive", vec![], Pending::Other).await {
                        return e;
                    }
                }
                r = kicked.changed() => {
                    let reason = match r {
                        Ok(()) => kicked.borrow_and_update().clone(),
                        Err(_) => Some("master dropped the connection".to_string()),
                    };
                    if let Some(reason) = reason {
                        // Buildbot's worker logs the close reason and
                        // reconnects later, as after any disconnection.
                        let frame = CloseFrame {
                            code: CloseCode::Policy,
                            reason: truncate(&reason, 120).into(),
                        };
                        let _ = self.sink.send(Ws::Close(Some(frame))).await;
                        return format!("disconnected by the master: {reason}");
                    }
                }
                m = stream.next() => match m {
                    None | Some(Ok(Ws::Close(_))) => return "worker closed the connection".into(),
                    // A worker that dies (or is killed) closes its socket
                    // without a closing handshake: that is a close too.
                    Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))
                    | Some(Err(WsError::ConnectionClosed)) => {
                        return "worker closed the connection".into()
                    }
                    Some(Err(e)) => return format!("bad message from worker: {e}"),
                    Some(Ok(Ws::Binary(b))) => {
                        unanswered = 0;
                        if let Err(e) = self.on_worker_message(&b).await {
                            return e;
                        }
                    }
                    // Pings are answered by the WebSocket layer; Buildbot
                    // sends nothing as text.
                    Some(Ok(_)) => unanswered = 0,
                },
            }
        }
    }

    /// Sends a request of the master's, remembering what it was.
    pub(super) async fn request(
        &mut self,
        op: &str,
        fields: Vec<(&str, Value)>,
        what: Pending,
    ) -> Result<(), String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, what);
        self.write(codec::request(seq, op, fields)).await
    }

    pub(super) async fn write(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.sink
            .send(Ws::Binary(Bytes::from(bytes)))
            .await
            .map_err(|e| format!("write failed: {e}"))
    }

    /// A frame a build sent, in Buildbot's words.
    async fn on_build_frame(&mut self, m: Message) -> Result<(), String> {
        match m {
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
                let dir = match self.dir(&builder_dir, &workdir) {
                    Ok(d) => d,
                    Err(why) => {
                        self.finish_with_error(id, why).await;
                        return Ok(());
                    }
                };
                let command = match command {
                    WireCommand::Shell(s) => Value::from(s),
                    WireCommand::Argv(v) => Value::Array(v.into_iter().map(Value::from).collect()),
                };
                let env = Value::Map(
                    env.into_iter()
                        .map(|(k, v)| (Value::from(k), Value::from(v)))
                        .collect(),
                );
                // Buildbot counts in whole seconds; a part of one is
                // rounded up so no limit becomes shorter.
                let secs = |ms: u64| Value::from(ms.div_ceil(1000));
                let args = Value::Map(vec![
                    (Value::from("workdir"), Value::from(dir)),
                    (Value::from("command"), command),
                    (Value::from("env"), env),
                    (Value::from("want_stdout"), Value::from(true)),
                    (Value::from("want_stderr"), Value::from(true)),
                    // The environment listing would put every variable
                    // (secrets included) into the output.
                    (Value::from("logEnviron"), Value::from(false)),
                    (Value::from("usePTY"), Value::from(false)),
                    (Value::from("timeout"), timeout_ms.map_or(Value::Nil, secs)),
                    (Value::from("maxTime"), max_time_ms.map_or(Value::Nil, secs)),
                    (Value::from("sigtermTime"), secs(sigterm_time_ms)),
                ]);
                self.running
                    .insert(id, Running::new(builder_dir.clone(), Kind::Shell));
                self.request(
                    "start_command",
                    vec![
                        ("builder_name", Value::from(builder_dir)),
                        ("command_id", Value::from(id.to_string())),
                        ("command_name", Value::from("shell")),
                        ("args", args),
                    ],
                    Pending::Start(id),
                )
                .await
            }
            Message::Interrupt { id } => {
                let Some(r) = self.running.get_mut(&id) else {
                    return Ok(());
                };
                r.interrupted = true;
                let builder = r.builder.clone();
                self.request(
                    "interrupt_command",
                    vec![
                        ("builder_name", Value::from(builder)),
                        ("command_id", Value::from(id.to_string())),
                        ("why", Value::from("cancelled on the master")),
                    ],
                    Pending::Other,
                )
                .await
            }
            Message::Upload {
                id,
                builder_dir,
                workdir,
                src,
                directory,
            } => {
                self.start_upload(id, builder_dir, &workdir, &src, directory)
                    .await
            }
            Message::Download {
                id,
                builder_dir,
                workdir,
                dest,
                directory,
            } => {
                self.start_download(id, builder_dir, &workdir, &dest, directory)
                    .await
            }
            Message::FileEnd { id } | Message::DownloadDone { id } => self.download_end(id).await,
            // Nothing else is sent by builds.
            _ => Ok(()),
        }
    }

    /// `basedir/builder_dir/workdir`, with bbc's path rules.
    pub(super) fn dir(&self, builder_dir: &str, workdir: &str) -> Result<String, String> {
        check_relative_path(builder_dir).map_err(|e| format!("builder directory: {e}"))?;
        check_relative_path(workdir).map_err(|e| format!("workdir: {e}"))?;
        let mut d = format!("{}/{builder_dir}", self.basedir.trim_end_matches('/'));
        if !workdir.is_empty() && workdir != "." {
            d.push('/');
            d.push_str(workdir);
        }
        Ok(d)
    }

    pub(super) async fn finish_with_error(&mut self, id: u64, error: String) {
        self.running.remove(&id);
        self.deliver(
            id,
            CmdEvent::Finished {
                exit_code: None,
                signal: None,
                stopped: None,
                error: Some(error),
                duration_ms: 0,
            },
        )
        .await;
    }

    pub(super) async fn deliver(&self, id: u64, ev: CmdEvent) {
        let finished = matches!(ev, CmdEvent::Finished { .. });
        if let Some(tx) = self.conn.dispatch(id) {
            // The command may have given up waiting; that is fine.
            let _ = tx.send(ev).await;
        }
        if finished {
            self.conn.forget(id);
        }
    }

    /// One message of the worker's.
    async fn on_worker_message(&mut self, bytes: &[u8]) -> Result<(), String> {
        match codec::decode(bytes).map_err(|e| format!("bad message from worker: {e}"))? {
            Incoming::Response {
                seq,
                result,
                is_exception,
            } => {
                if let (Some(Pending::Start(id)), true) = (self.pending.remove(&seq), is_exception)
                {
                    // The worker could not start it (an unknown command,
                    // a missing argument).
                    let why = result
                        .as_str()
                        .map_or_else(|| result.to_string(), str::to_string);
                    self.finish_with_error(id, why).await;
                }
                Ok(())
            }
            Incoming::Request {
                seq,
                op,
                command_id,
                args,
                length,
            } => {
                let id = command_id.as_deref().and_then(|c| c.parse::<u64>().ok());
                let done = |r: Result<(), String>| match r {
                    Ok(()) => Answer::Done(Value::Nil),
                    Err(why) => Answer::Failed(why),
                };
                let answer = match (op.as_str(), id) {
                    ("update", Some(id)) => done(self.update(id, args).await),
                    ("complete", Some(id)) => {
                        self.complete(id, args).await;
                        Answer::Done(Value::Nil)
                    }
                    ("update_upload_file_write", Some(id)) => {
                        done(self.upload_data(id, args).await)
                    }
                    ("update_upload_file_close", Some(id)) => done(self.upload_close(id).await),
                    ("update_upload_directory_write", Some(id)) => {
                        done(self.upload_dir_data(id, args).await)
                    }
                    ("update_upload_directory_unpack", Some(id)) => done(self.upload_dir_end(id)),
                    // bbc keeps no time stamps of uploaded files.
                    ("update_upload_file_utime", Some(_)) => Answer::Done(Value::Nil),
                    ("update_read_file", Some(id)) => self.read_request(id, seq, length),
                    ("update_read_file_close", Some(_)) => Answer::Done(Value::Nil),
                    (_, None) if command_id.is_some() => {
                        Answer::Failed(format!("unknown command id {command_id:?}"))
                    }
                    _ => Answer::Failed(format!("`{op}` is not supported by this master")),
                };
                self.answer(seq, answer).await
            }
        }
    }

    pub(super) async fn answer(&mut self, seq: u64, answer: Answer) -> Result<(), String> {
        let bytes = match answer {
            Answer::Done(v) => codec::response(seq, v, false),
            Answer::Failed(why) => codec::response(seq, Value::from(why), true),
            Answer::Later => return Ok(()),
        };
        self.write(bytes).await
    }

    async fn update(&mut self, id: u64, args: Value) -> Result<(), String> {
        for u in codec::updates(args)? {
            let shell = self
                .running
                .get(&id)
                .is_none_or(|r| matches!(r.kind, Kind::Shell));
            match u {
                // A transfer's output is its error message.
                Update::Stdout(b) | Update::Stderr(b) if !shell => {
                    if let Some(r) = self.running.get_mut(&id) {
                        if r.errors.len() < 4096 {
                            r.errors.push_str(&String::from_utf8_lossy(&b));
                        }
                    }
                }
                Update::Stdout(b) => {
                    self.deliver(id, CmdEvent::Output(Stream::Stdout, Bytes::from(b)))
                        .await
                }
                Update::Stderr(b) => {
                    self.deliver(id, CmdEvent::Output(Stream::Stderr, Bytes::from(b)))
                        .await
                }
                Update::Header(h) => {
                    if let Some(r) = self.running.get_mut(&id) {
                        // The worker reports a signal only in a header
                        // line (and rc -1).
                        if let Some(sig) = h.lines().find_map(|l| {
                            l.trim()
                                .strip_prefix("process killed by signal ")
                                .and_then(|n| n.parse().ok())
                        }) {
                            r.signal = Some(sig);
                        }
                    }
                }
                Update::Rc(rc) => {
                    if let Some(r) = self.running.get_mut(&id) {
                        r.rc = Some(rc);
                    }
                }
                Update::Elapsed(e) => {
                    if let Some(r) = self.running.get_mut(&id) {
                        r.elapsed = Some(e);
                    }
                }
                Update::FailureReason(why) => {
                    if let Some(r) = self.running.get_mut(&id) {
                        r.stopped = match why.as_str() {
                            "timeout_without_output" => Some(Stopped::NoOutput),
                            "timeout" => Some(Stopped::MaxTime),
                            _ => r.stopped,
                        };
                    }
                }
                Update::Other => {}
            }
        }
        Ok(())
    }

    async fn complete(&mut self, id: u64, failure: Value) {
        let Some(r) = self.running.remove(&id) else {
            return;
        };
        let error = match failure {
            Value::Nil => None,
            v => Some(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
        };
        let stopped = if r.interrupted {
            Some(Stopped::Interrupted)
        } else {
            r.stopped
        };
        let exit_code = match (r.signal, r.rc) {
            (Some(_), _) | (None, None) => None,
            (None, Some(rc)) => Some(i32::try_from(rc).unwrap_or(-1)),
        };
        let error = match (error, exit_code, r.signal, stopped) {
            (Some(e), _, _, _) => Some(e),
            (None, None, None, None) => Some("the worker reported no exit code".into()),
            // A transfer succeeded only with rc 0; the worker said why not
            // in its error text.
            (None, Some(rc), _, _) if rc != 0 && !matches!(r.kind, Kind::Shell) => {
                Some(if r.errors.trim().is_empty() {
                    format!("the worker's transfer ended with rc {rc}")
                } else {
                    r.errors.trim().to_string()
                })
            }
            _ => None,
        };
        let duration_ms = r.elapsed.map_or_else(
            || r.started.elapsed().as_millis() as u64,
            |e| (e.max(0.0) * 1000.0) as u64,
        );
        self.deliver(
            id,
            CmdEvent::Finished {
                exit_code,
                signal: r.signal,
                stopped,
                error,
                duration_ms,
            },
        )
        .await;
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
