//! The simulated workers of `bbc-bench fleet`: one task and one TCP
//! connection each, speaking the real protocol (`bbc_runtime::protocol`):
//! hello with the worker's password, keepalives both ways, and every `run`
//! answered at once with exit code 0. A worker whose connection ends (its
//! master died, or refused it) connects again, to the next master of its
//! list, as a worker behind a load balancer would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bbc_runtime::protocol::{Frame, FrameCodec, Message, Stopped, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// What the simulated fleet counts.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    /// Welcomes after a worker's first (it had lost its connection).
    pub reconnects: AtomicU64,
    /// Connections that failed or were cut before the welcome.
    pub failed: AtomicU64,
    /// Hellos the master answered with a refusal.
    pub refused: AtomicU64,
    pub runs: AtomicU64,
    pub frames_in: AtomicU64,
    /// Set at the end: the workers stop instead of connecting again.
    pub stop: AtomicBool,
}

/// One worker: connects to `masters[first]`, then, each time its
/// connection ends, to the next master of the list; after a round of
/// failures it waits a little before the next round.
pub async fn worker(
    masters: Arc<Vec<String>>,
    first: usize,
    name: String,
    password: String,
    c: Arc<Counters>,
) {
    let mut i = first;
    let mut served_once = false;
    let mut failures = 0;
    while !c.stop.load(Ordering::Relaxed) {
        let addr = &masters[i % masters.len()];
        if session(addr, &name, &password, &c, served_once).await {
            served_once = true;
            failures = 0;
        } else {
            c.failed.fetch_add(1, Ordering::Relaxed);
            failures += 1;
            if failures % masters.len() == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        i += 1;
    }
}

/// One connection, until the master closes it: `true` when it was
/// welcomed.
async fn session(addr: &str, name: &str, password: &str, c: &Counters, again: bool) -> bool {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    let mut f = Framed::new(tcp, FrameCodec::new());
    let hello = Message::Hello {
        protocol: PROTOCOL_VERSION,
        name: name.to_string(),
        password: password.to_string(),
        info: BTreeMap::from([("os".to_string(), "bench".to_string())]),
    };
    if f.send(Frame::Message(hello)).await.is_err() {
        return false;
    }
    let keepalive = match f.next().await {
        Some(Ok(Frame::Message(Message::Welcome { keepalive_ms, .. }))) => keepalive_ms,
        Some(Ok(Frame::Message(Message::Refused { reason }))) => {
            // The first few say why; the count says how often.
            if c.refused.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("{name}: refused by {addr}: {reason}");
            }
            return false;
        }
        _ => return false,
    };
    c.connected.fetch_add(1, Ordering::Relaxed);
    if again {
        c.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    // An unprompted pong at a third of the interval keeps the master's
    // side of the keepalive satisfied when nothing else is sent.
    let period = Duration::from_millis((keepalive / 3).max(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reply = tokio::select! {
            _ = tick.tick() => Some(Message::Pong { nonce: 0 }),
            frame = f.next() => {
                let Some(Ok(frame)) = frame else { break };
                c.frames_in.fetch_add(1, Ordering::Relaxed);
                match frame {
                    Frame::Message(Message::Ping { nonce }) => Some(Message::Pong { nonce }),
                    Frame::Message(Message::Run { id, .. }) => {
                        c.runs.fetch_add(1, Ordering::Relaxed);
                        Some(finished(id, Some(0), None, None))
                    }
                    Frame::Message(Message::Interrupt { id }) => {
                        Some(finished(id, None, Some(Stopped::Interrupted), None))
                    }
                    Frame::Message(Message::Upload { id, .. })
                    | Frame::Message(Message::Download { id, .. }) => Some(finished(
                        id,
                        None,
                        None,
                        Some("the bench's simulated worker transfers no files".into()),
                    )),
                    _ => None,
                }
            }
        };
        if let Some(m) = reply {
            if f.send(Frame::Message(m)).await.is_err() {
                break;
            }
        }
    }
    c.connected.fetch_sub(1, Ordering::Relaxed);
    true
}

fn finished(
    id: u64,
    exit_code: Option<i32>,
    stopped: Option<Stopped>,
    error: Option<String>,
) -> Message {
    Message::Finished {
        id,
        exit_code,
        signal: None,
        stopped,
        error,
        duration_ms: 0,
    }
}
