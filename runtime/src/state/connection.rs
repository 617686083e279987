//! The master's side of one worker connection.
//!
//! A connection is two tasks: a writer draining an mpsc queue of frames,
//! and a reader dispatching incoming frames to the command that waits for
//! them (by command id). A malformed frame or a protocol violation closes
//! this connection only, with a logged reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::protocol::{Frame, FrameCodec, Message, Stopped, Stream};

/// What a running command (or transfer) receives from the worker.
#[derive(Debug)]
pub enum CmdEvent {
    Output(Stream, Bytes),
    FileBegin {
        path: String,
        mode: u32,
    },
    FileData(Bytes),
    FileEnd,
    Finished {
        exit_code: Option<i32>,
        signal: Option<i32>,
        stopped: Option<Stopped>,
        error: Option<String>,
        duration_ms: u64,
    },
    /// The connection is gone; the command's fate is unknown.
    Lost,
}

pub struct WorkerConn {
    pub name: String,
    pub info: BTreeMap<String, String>,
    /// Whether what is sent cannot be read on the way: TLS, or a worker on
    /// this host (loopback). Secrets in a step's `env` go only to these.
    pub secure: bool,
    /// The protocol the worker speaks. Buildbot's worker logs every
    /// message from the master, so secrets are not sent to it.
    pub protocol: bbc_graph::WorkerProtocol,
    tx: mpsc::Sender<Frame>,
    waiting: Mutex<HashMap<u64, mpsc::Sender<CmdEvent>>>,
    /// Set when the connection closed.
    closed: tokio::sync::watch::Sender<bool>,
    /// Set (with the reason) to make the master end this connection.
    kick: tokio::sync::watch::Sender<Option<String>>,
}

impl WorkerConn {
    /// Registers interest in command `id` before it is sent, so no frame
    /// can arrive unobserved.
    pub fn expect(&self, id: u64) -> mpsc::Receiver<CmdEvent> {
        // Bounded: a slow log writer slows the reader, which slows the
        // worker's sends through TCP back-pressure.
        let (tx, rx) = mpsc::channel(64);
        if let Ok(mut w) = self.waiting.lock() {
            if *self.closed.borrow() {
                let _ = tx.try_send(CmdEvent::Lost);
            } else {
                w.insert(id, tx);
            }
        }
        rx
    }

    pub fn forget(&self, id: u64) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&id);
        }
    }

    pub async fn send(&self, f: Frame) -> bool {
        self.tx.send(f).await.is_ok()
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Ends the connection from the master's side: the worker is told
    /// `refused` with `reason` (it logs it and retries later, as after any
    /// refusal), then the socket is closed. Commands still waiting get
    /// `Lost`, as when the worker goes away.
    pub fn disconnect(&self, reason: impl Into<String>) {
        let _ = self.kick.send(Some(reason.into()));
    }

    pub fn closed_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub(crate) fn dispatch(&self, id: u64) -> Option<mpsc::Sender<CmdEvent>> {
        self.waiting.lock().ok().and_then(|w| w.get(&id).cloned())
    }

    /// Marks the connection closed and tells every waiting command `Lost`.
    pub(crate) fn close(&self) {
        let _ = self.closed.send(true);
        let waiting: Vec<mpsc::Sender<CmdEvent>> = match self.waiting.lock() {
            Ok(mut w) => w.drain().map(|(_, tx)| tx).collect(),
            Err(_) => Vec::new(),
        };
        for tx in waiting {
            let _ = tx.try_send(CmdEvent::Lost);
        }
    }
}

/// The other ends of a connection served by an adapter (a worker speaking
/// another protocol, `crate::buildbot_worker`): the frames the builds send,
/// to translate, and the master's requests to end the connection.
pub(crate) struct AdapterEnds {
    pub frames: mpsc::Receiver<Frame>,
    pub kicked: tokio::sync::watch::Receiver<Option<String>>,
}

/// A connection whose frames an adapter translates: the builds talk to it
/// exactly as to a bbc worker (`Run`, `Interrupt`, … in; `CmdEvent`s out
/// through [`WorkerConn::dispatch`]), and the adapter speaks the worker's
/// protocol on the socket. It calls [`WorkerConn::close`] when it ends.
pub(crate) fn adapter(
    name: String,
    info: BTreeMap<String, String>,
    secure: bool,
    protocol: bbc_graph::WorkerProtocol,
) -> (Arc<WorkerConn>, AdapterEnds) {
    let (tx, frames) = mpsc::channel::<Frame>(256);
    let (closed, _) = tokio::sync::watch::channel(false);
    let (kick, kicked) = tokio::sync::watch::channel(None::<String>);
    let conn = Arc::new(WorkerConn {
        name,
        info,
        secure,
        protocol,
        tx,
        waiting: Mutex::new(HashMap::new()),
        closed,
        kick,
    });
    (conn, AdapterEnds { frames, kicked })
}

/// Runs an authenticated connection until it closes. `on_close` is called
/// once, after every waiting command has been told `Lost`.
pub fn spawn(
    framed: Framed<crate::tls::Stream, FrameCodec>,
    name: String,
    info: BTreeMap<String, String>,
    keepalive_ms: u64,
    secure: bool,
) -> (Arc<WorkerConn>, tokio::task::JoinHandle<String>) {
    let (tx, mut rx) = mpsc::channel::<Frame>(256);
    let (closed, _) = tokio::sync::watch::channel(false);
    let (kick, mut kicked) = tokio::sync::watch::channel(None::<String>);
    let conn = Arc::new(WorkerConn {
        name,
        info,
        secure,
        protocol: bbc_graph::WorkerProtocol::Bbc,
        tx,
        waiting: Mutex::new(HashMap::new()),
        closed,
        kick,
    });
    let (mut sink, mut stream) = framed.split();
    let c = conn.clone();
    let task = tokio::spawn(async move {
        let mut ping =
            tokio::time::interval(std::time::Duration::from_millis(keepalive_ms.max(100)));
        ping.tick().await;
        let mut nonce = 0u64;
        // Missed keepalives before the worker is considered gone.
        let mut unanswered = 0u32;
        let reason = loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(f) => {
                        if let Err(e) = sink.send(f).await {
                            break format!("write failed: {e}");
                        }
                    }
                    None => break "master closed the connection".to_string(),
                },
                _ = ping.tick() => {
                    if unanswered >= 3 {
                        break format!("no answer to {unanswered} keepalive pings");
                    }
                    nonce += 1;
                    unanswered += 1;
                    if let Err(e) = sink.send(Frame::Message(Message::Ping { nonce })).await {
                        break format!("write failed: {e}");
                    }
                }
                r = kicked.changed() => {
                    let reason = match r {
                        Ok(()) => kicked.borrow_and_update().clone(),
                        // The connection object is gone: nobody can use it.
                        Err(_) => Some("master dropped the connection".to_string()),
                    };
                    if let Some(reason) = reason {
                        let _ = sink
                            .send(Frame::Message(Message::Refused { reason: reason.clone() }))
                            .await;
                        break format!("disconnected by the master: {reason}");
                    }
                }
                inc = stream.next() => match inc {
                    None => break "worker closed the connection".to_string(),
                    // A worker that dies (or is killed) ends its TLS
                    // session without close_notify: that is a close, not
                    // a bad frame.
                    Some(Err(crate::protocol::ProtocolError::Io(e)))
                        if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        break "worker closed the connection".to_string()
                    }
                    Some(Err(e)) => break format!("bad frame from worker: {e}"),
                    Some(Ok(frame)) => {
                        unanswered = 0;
                        if let Some(why) = handle(&c, frame).await {
                            break why;
                        }
                    }
                },
            }
        };
        c.close();
        reason
    });
    (conn, task)
}

/// Routes one frame; returns a reason to close the connection on a
/// protocol violation.
async fn handle(c: &WorkerConn, frame: Frame) -> Option<String> {
    let (id, ev) = match frame {
        Frame::Output { id, stream, data } => (id, CmdEvent::Output(stream, data)),
        Frame::FileData { id, data } => (id, CmdEvent::FileData(data)),
        Frame::Message(m) => match m {
            Message::Pong { .. } => return None,
            Message::Finished {
                id,
                exit_code,
                signal,
                stopped,
                error,
                duration_ms,
            } => (
                id,
                CmdEvent::Finished {
                    exit_code,
                    signal,
                    stopped,
                    error,
                    duration_ms,
                },
            ),
            Message::FileBegin { id, path, mode } => (id, CmdEvent::FileBegin { path, mode }),
            Message::FileEnd { id } => (id, CmdEvent::FileEnd),
            other => {
                return Some(format!(
                    "unexpected message from worker: {}",
                    serde_json::to_string(&other)
                        .unwrap_or_default()
                        .chars()
                        .take(80)
                        .collect::<String>()
                ))
            }
        },
    };
    let finished = matches!(ev, CmdEvent::Finished { .. });
    if let Some(tx) = c.dispatch(id) {
        // The command may have given up waiting; that is fine.
        let _ = tx.send(ev).await;
    }
    if finished {
        c.forget(id);
    }
    None
}
