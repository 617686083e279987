//! The workers' side of the master: the listener, the handshake (protocol
//! version, name and password, failed logins throttled by
//! [`Logins`]), the connection's life in
//! `Shared::workers`, and retiring workers an applied config removed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bbc_graph::WorkerProtocol;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, FramedParts};

use crate::auth::constant_time_eq;
use crate::buildbot_worker;
use crate::protocol::{Frame, FrameCodec, Message, PROTOCOL_VERSION};
use crate::state::connection;
use crate::state::logins::{Admission, Logins, Policy};
use crate::state::{now_ms, ConfigEvent, Shared};
use crate::store::Millis;
use crate::tls::Stream;

/// Why a connection was refused, to log; `None` when the refusal was
/// counted in a summary of failed logins instead ([`Logins`]).
type Refusal = Option<String>;

/// Accepts workers on `listener`, with TLS when `tls` is given (the TLS
/// handshake runs in the connection's own task, so a slow or silent client
/// holds up nobody else).
pub(crate) async fn accept_workers(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let policy = Policy::default();
    let logins = Arc::new(Mutex::new(Logins::new(policy)));
    loop {
        // A summary started by a handshake after this look is due no
        // earlier than a period from now: waking then at the latest finds it.
        let next_look = clock() + policy.summary_ms;
        let due = logins
            .lock()
            .ok()
            .and_then(|l| l.next_due())
            .map_or(next_look, |d| d.min(next_look));
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = sleep_until_ms(due) => {
                let lines = logins.lock().map(|mut l| l.flush(clock())).unwrap_or_default();
                for line in lines {
                    tracing::warn!("{line}");
                }
                continue;
            }
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accepting a worker connection failed: {e}");
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let s = shared.clone();
        let l = logins.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Secrets in a step's env go only where nobody reads along.
            let secure = tls.is_some() || peer.ip().is_loopback();
            let sock = match tls {
                None => Stream::Plain(sock),
                Some(config) => match Stream::accept(sock, config).await {
                    Ok(s) => s,
                    Err(why) => {
                        // A plaintext worker on a TLS port, a wrong CA on
                        // the worker's side, a port scanner.
                        tracing::warn!(%peer, "worker connection refused: {why}");
                        return;
                    }
                },
            };
            // bbc's frames start with a length below 1 MiB; a WebSocket
            // upgrade starts with `GET ` (a length of 1.2 GB): the first
            // four bytes tell the protocols apart.
            let mut sock = sock;
            let mut first = [0u8; 4];
            let read = tokio::time::timeout(HELLO_TIMEOUT, sock.read_exact(&mut first)).await;
            let result = match read {
                Err(_) => Err(Some("no hello within 30 s".to_string())),
                Ok(Err(e)) => Err(Some(format!("closed before hello: {e}"))),
                Ok(Ok(_)) if &first == b"GET " => {
                    let sock = buildbot_worker::Rewind::new(first.to_vec(), sock);
                    let login = |name: &str, password: &str| {
                        check_login(&s, &l, name, password, peer, WorkerProtocol::Buildbot)
                            .map_err(|r| (r.tell, r.log))
                    };
                    match buildbot_worker::accept(sock, secure, HELLO_TIMEOUT, login).await {
                        Ok(a) => {
                            serve_connected(s, a.name, a.info, a.conn, a.task).await;
                            Ok(())
                        }
                        Err(log) => Err(log),
                    }
                }
                Ok(Ok(_)) => handshake(s, sock, first, peer, secure, l).await,
            };
            if let Err(Some(why)) = result {
                tracing::warn!(%peer, "worker connection refused: {why}");
            }
        });
    }
}

/// The time of the login throttle: monotonic milliseconds, so that a
/// wall clock set back cannot stretch a block.
fn clock() -> Millis {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    Millis::try_from(start.elapsed().as_millis()).unwrap_or(Millis::MAX)
}

/// Sleeps until [`clock`] reads `at`.
async fn sleep_until_ms(at: Millis) {
    let ms = u64::try_from(at - clock()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// How long a new connection may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// A refused login: what the worker is told, and what to log (`None`
/// when a summary of failed logins counts it instead).
struct Refused {
    tell: String,
    log: Refusal,
}

/// The checks every login passes, whatever its protocol: the throttle,
/// name and password (compared in constant time; an unknown name and a
/// wrong password get the same answer), the protocol the worker's entry
/// names, and one connection per name. Returns the worker's keepalive
/// interval.
fn check_login(
    shared: &Shared,
    logins: &Mutex<Logins>,
    name: &str,
    password: &str,
    peer: SocketAddr,
    speaks: WorkerProtocol,
) -> Result<u64, Refused> {
    // Throttled: after failed logins, the password is not even looked at
    // until the back-off has passed.
    let ip = peer.ip().to_canonical();
    let admission = logins
        .lock()
        .map(|mut l| l.admit(name, ip, clock()))
        .unwrap_or(Admission::Check);
    if let Admission::Refuse { retry_at, log } = admission {
        let secs = ((retry_at - clock()).max(0) + 999) / 1000;
        let tell = format!("too many failed logins; the next attempt is checked in {secs} s");
        return Err(Refused { tell, log });
    }
    let g = shared.graph();
    let expected = g
        .worker(name)
        .and_then(|w| shared.secrets().get(&w.password).map(str::to_string));
    let ok = match &expected {
        Some(p) => constant_time_eq(p, password),
        None => {
            let _ = constant_time_eq("unknown-worker-password", password);
            false
        }
    };
    // A latent worker the master started logs in with the one-time
    // password of that start (its configured password works too).
    let ok = shared.latent.token_ok(name, password) | ok;
    if !ok {
        let log = logins
            .lock()
            .ok()
            .and_then(|mut l| l.failed(name, ip, clock()));
        return Err(Refused {
            tell: "wrong worker name or password".into(),
            log,
        });
    }
    if let Ok(mut l) = logins.lock() {
        l.succeeded(name, ip);
    }
    let Some(w) = g.worker(name) else {
        return Err(Refused {
            tell: "wrong worker name or password".into(),
            log: Some(format!("worker `{name}` is not configured")),
        });
    };
    // Checked after the password, so that nobody learns a worker's
    // protocol without knowing its password.
    if w.protocol != speaks {
        let why = format!(
            "worker `{name}` is configured with protocol=\"{}\" but connected with the {} protocol; change its entry or the worker",
            w.protocol.as_str(),
            speaks.as_str()
        );
        return Err(Refused {
            tell: why.clone(),
            log: Some(why),
        });
    }
    // One connection per worker name: a second one replaces the first
    // only after the first is gone.
    let taken = shared
        .workers
        .lock()
        .map(|w| w.get(name).is_some_and(|c| !c.is_closed()))
        .unwrap_or(true);
    if taken {
        let why = format!("worker `{name}` is already connected");
        return Err(Refused {
            tell: why.clone(),
            log: Some(why),
        });
    }
    Ok(w.keepalive_ms)
}

async fn handshake(
    shared: Arc<Shared>,
    sock: Stream,
    first: [u8; 4],
    peer: SocketAddr,
    secure: bool,
    logins: Arc<Mutex<Logins>>,
) -> Result<(), Refusal> {
    // The four bytes read to tell the protocols apart are the start of
    // the first frame: they go back in front of the codec's buffer.
    let mut parts = FramedParts::new::<Frame>(sock, FrameCodec);
    parts.read_buf = bytes::BytesMut::from(&first[..]);
    let mut framed = Framed::from_parts(parts);
    let first = tokio::time::timeout(HELLO_TIMEOUT, framed.next())
        .await
        .map_err(|_| "no hello within 30 s".to_string())?;
    let (name, password, protocol, info) = match first {
        Some(Ok(Frame::Message(Message::Hello {
            protocol,
            name,
            password,
            info,
        }))) => (name, password, protocol, info),
        Some(Ok(_)) => return Err(Some("first frame is not a hello".into())),
        Some(Err(e)) => return Err(Some(format!("bad first frame: {e}"))),
        None => return Err(Some("closed before hello".into())),
    };
    let refuse = |reason: String| Frame::Message(Message::Refused { reason });
    if protocol != PROTOCOL_VERSION {
        let why = format!(
            "protocol version {protocol} is not supported (this master speaks {PROTOCOL_VERSION})"
        );
        let _ = framed.send(refuse(why.clone())).await;
        return Err(Some(format!("worker `{name}`: {why}")));
    }
    let keepalive_ms = match check_login(
        &shared,
        &logins,
        &name,
        &password,
        peer,
        WorkerProtocol::Bbc,
    ) {
        Ok(k) => k,
        Err(Refused { tell, log }) => {
            let _ = framed.send(refuse(tell)).await;
            return Err(log);
        }
    };
    framed
        .send(Frame::Message(Message::Welcome {
            protocol: PROTOCOL_VERSION,
            keepalive_ms,
        }))
        .await
        .map_err(|e| Some(e.to_string()))?;
    let (conn, task) = connection::spawn(framed, name.clone(), info.clone(), keepalive_ms, secure);
    serve_connected(shared, name, info, conn, task).await;
    Ok(())
}

/// The life of an admitted connection in `Shared::workers`, whatever its
/// protocol: registered, recorded, the queue woken; then, once `task`
/// ends, removed and recorded again.
async fn serve_connected(
    shared: Arc<Shared>,
    name: String,
    info: std::collections::BTreeMap<String, String>,
    conn: Arc<connection::WorkerConn>,
    task: tokio::task::JoinHandle<String>,
) {
    if let Ok(mut w) = shared.workers.lock() {
        w.insert(name.clone(), conn.clone());
    }
    // A config applied while this worker was being checked may have removed
    // it; the apply's retiring pass may not have seen this connection.
    if shared.graph().worker(&name).is_none() {
        conn.disconnect(format!(
            "worker `{name}` is no longer in the master's configuration"
        ));
    }
    let n2 = name.clone();
    let _ = shared
        .db(move |s| s.worker_connected(&n2, &info, now_ms()))
        .await;
    tracing::info!(worker = %name, "worker connected");
    shared.wake.notify_one();
    shared.workers_changed.notify_waiters();
    let reason = task.await.unwrap_or_else(|e| e.to_string());
    tracing::info!(worker = %name, "worker disconnected: {reason}");
    if let Ok(mut w) = shared.workers.lock() {
        if w.get(&name).is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            w.remove(&name);
        }
    }
    shared.workers_changed.notify_waiters();
    let n2 = name.clone();
    let _ = shared
        .db(move |s| s.worker_disconnected(&n2, now_ms()))
        .await;
    shared.wake.notify_one();
}

/// Retires the workers each applied config removes: from
/// [`Shared::configs`], like every service.
pub(crate) fn spawn_retirer(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let mut configs = shared.configs.subscribe();
    tokio::spawn(async move {
        loop {
            let ev: Arc<ConfigEvent> = match configs.recv().await {
                Ok(ev) => ev,
                // Applies wait for every listener, so none is missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            for w in &ev.previous.workers {
                if ev.graph.worker(&w.name).is_none() {
                    let h = tokio::spawn(retire(shared.clone(), w.name.clone()));
                    shared.track(h);
                }
            }
            ev.reconciled();
        }
    })
}

/// How long a retiring worker's check waits at most between looks (builds
/// ending wake it earlier).
const RETIRE_RECHECK: Duration = Duration::from_secs(30);

/// Disconnects a worker that is no longer configured once it runs no build.
/// Returns at once if the worker is (again) in the config or not connected.
async fn retire(shared: Arc<Shared>, name: String) {
    loop {
        let finished = shared.build_finished.notified();
        if shared.graph().worker(&name).is_some() {
            return;
        }
        let conn = shared
            .workers
            .lock()
            .ok()
            .and_then(|w| w.get(&name).cloned());
        let Some(conn) = conn.filter(|c| !c.is_closed()) else {
            return;
        };
        let running = shared
            .queue
            .lock()
            .map(|q| q.running_on(&name))
            .unwrap_or(0);
        if running == 0 {
            tracing::info!(worker = %name, "disconnecting the worker: it is no longer in the configuration");
            conn.disconnect(format!(
                "worker `{name}` is no longer in the master's configuration"
            ));
            return;
        }
        let mut closed = conn.closed_watch();
        tokio::select! {
            _ = finished => {}
            _ = closed.changed() => {}
            _ = tokio::time::sleep(RETIRE_RECHECK) => {}
        }
    }
}
