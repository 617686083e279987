//! Buildbot's own worker (`buildbot-worker` 4.x with
//! `protocol='msgpack_experimental_v7'`) on the master's worker port.
//!
//! The listener tells it apart from a bbc worker by its first bytes (a
//! WebSocket upgrade, `GET `). It authenticates with HTTP basic auth on the
//! upgrade, through the same checks as a bbc worker (the workers service
//! passes them in: the throttle, the password, the entry's `protocol`). Once admitted it becomes a `WorkerConn` like any
//! other: the builds send it bbc's frames and read `CmdEvent`s, and
//! [`session`] translates both ways, so nothing above the connection knows
//! which protocol a worker speaks (`docs/protocol.md`, "Buildbot workers").

pub mod codec;
mod rewind;
mod session;
mod transfer;
mod untar;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

// One reader of Basic credentials, shared with the base change hook.
use crate::auth::basic_credentials;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::state::connection::{self, WorkerConn};
use crate::tls::Stream;
pub use rewind::Rewind;

/// The largest WebSocket message taken from a worker. The worker sends
/// output in pieces of `buffer_size` (set to 64 KiB by `session`); this
/// leaves room for msgpack's framing and the worker's own line splitting.
const MAX_MESSAGE: usize = 1 << 20;

/// A Buildbot worker past its login and introduction: what the workers
/// service registers and waits on, as for a bbc worker.
pub struct Admitted {
    pub name: String,
    pub info: BTreeMap<String, String>,
    pub conn: Arc<WorkerConn>,
    /// The session; it ends with the reason the connection ended.
    pub task: tokio::task::JoinHandle<String>,
}

/// Takes a connection that began with `GET `: the WebSocket upgrade, whose
/// basic-auth credentials `login` checks (the workers service's checks:
/// it answers the worker's keepalive interval, or what to tell the worker
/// and what to log), then the introduction, within `timeout` each; then
/// starts the session. The error is what to log (`None`: nothing).
pub async fn accept<F>(
    sock: Rewind<Stream>,
    secure: bool,
    timeout: Duration,
    login: F,
) -> Result<Admitted, Option<String>>
where
    F: FnOnce(&str, &str) -> Result<u64, (String, Option<String>)> + Unpin,
{
    let mut admitted: Option<Result<(String, u64), Option<String>>> = None;
    // The error type is tungstenite's (the refusal's HTTP response).
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let creds = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(basic_credentials);
        let Some((name, password)) = creds else {
            admitted = Some(Err(Some(
                "a WebSocket upgrade without basic-auth credentials".into(),
            )));
            return Err(refusal(
                StatusCode::UNAUTHORIZED,
                "worker credentials required",
            ));
        };
        match login(&name, &password) {
            Ok(keepalive_ms) => {
                admitted = Some(Ok((name, keepalive_ms)));
                Ok(resp)
            }
            Err((tell, log)) => {
                admitted = Some(Err(log));
                Err(refusal(StatusCode::UNAUTHORIZED, &tell))
            }
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = tokio::time::timeout(
        timeout,
        tokio_tungstenite::accept_hdr_async_with_config(sock, check, Some(config)),
    )
    .await;
    let ws = match (ws, admitted) {
        (Err(_), _) => {
            return Err(Some(format!(
                "no WebSocket upgrade within {} s",
                timeout.as_secs()
            )))
        }
        (Ok(Ok(ws)), Some(Ok((name, keepalive_ms)))) => (ws, name, keepalive_ms),
        (_, Some(Err(log))) => return Err(log),
        (Ok(Err(e)), _) => return Err(Some(format!("bad WebSocket upgrade: {e}"))),
        (Ok(Ok(_)), None) => return Err(Some("upgrade accepted without a login".into())),
    };
    let (ws, name, keepalive_ms) = ws;
    let (ws, hello) = match session::introduce(ws, timeout).await {
        Ok(x) => x,
        Err(why) => return Err(Some(format!("buildbot worker `{name}`: {why}"))),
    };
    let mut info: BTreeMap<String, String> = hello.info;
    info.insert("protocol".into(), "buildbot".into());
    let (conn, ends) = connection::adapter(
        name.clone(),
        info.clone(),
        secure,
        bbc_graph::WorkerProtocol::Buildbot,
    );
    let task = tokio::spawn(session::run(
        ws,
        conn.clone(),
        ends,
        hello.basedir,
        keepalive_ms,
    ));
    Ok(Admitted {
        name,
        info,
        conn,
        task,
    })
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(format!("{why}\n")));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::basic_credentials;

    #[test]
    fn basic_auth_header() {
        // "w1:pa:ss" — the password may hold a colon, the name may not.
        assert_eq!(
            basic_credentials("Basic dzE6cGE6c3M="),
            Some(("w1".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Bearer dzE6cGE6c3M="), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        // "nocolon"
        assert_eq!(basic_credentials("Basic bm9jb2xvbg=="), None);
    }
}
