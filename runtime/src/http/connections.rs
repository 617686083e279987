//! The HTTP listener: each connection served by hyper with a deadline for
//! a request's headers, at most so many connections at once.
//!
//! `axum::serve` has neither: a client sending a byte of header a second
//! held its connection (and a task) forever, and a hundred of them held a
//! hundred. Here a request's headers must arrive within
//! [`HttpLimits::header_timeout`] of the connection being ready for them —
//! its opening, or the end of the previous answer on a kept-alive
//! connection, so the same deadline closes idle connections — and a
//! connection over [`HttpLimits::max_connections`] is answered 503 at once
//! instead of waiting unseen in the kernel's backlog. A request's body,
//! too, must keep coming: a pause of that same time while a route reads it
//! fails the read ([`BodyDeadline`]).

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::state::HttpLimits;

/// How long a refused connection is read (and discarded) after its 503, so
/// that closing it does not reset the connection before the client has
/// read the answer.
const DRAIN: Duration = Duration::from_secs(1);

/// With `tls`, every connection is HTTPS: the TLS handshake runs in the
/// connection's own task (a slow one holds up nobody) and must end within
/// the header deadline too.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let idle = limits.header_timeout;
    let app = app.layer(axum::middleware::map_request(
        move |req: Request| async move { req.map(|body| Body::new(BodyDeadline::new(body, idle))) },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, typically: retrying at once
                // would spin.
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(sock, limits.max_connections));
            continue;
        };
        let service = TowerToHyperService::new(WithPeer {
            app: app.clone(),
            peer,
        });
        let Some(tls) = tls.clone() else {
            let conn = h1.serve_connection(TokioIo::new(sock), service);
            tokio::spawn(async move {
                // A timed-out or broken connection is the client's business.
                if let Err(e) = conn.await {
                    tracing::debug!("HTTP connection ended: {e}");
                }
                drop(slot);
            });
            continue;
        };
        let h1 = h1.clone();
        let deadline = limits.header_timeout;
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let stream = match tokio::time::timeout(deadline, acceptor.accept(sock)).await {
                Ok(Ok(s)) => s,
                // Plain HTTP on the HTTPS port, a scanner, a client that
                // does not trust the certificate: its business too.
                Ok(Err(e)) => {
                    tracing::debug!("HTTPS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("HTTPS handshake not done within {deadline:?}");
                    return;
                }
            };
            if let Err(e) = h1.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!("HTTPS connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// The router, putting the connection's peer address on each request as
/// `ConnectInfo` (the audit log records where an action came from).
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: std::net::SocketAddr,
}

impl<B> tower_service::Service<axum::http::Request<B>> for WithPeer
where
    Router: tower_service::Service<axum::http::Request<B>>,
{
    type Response = <Router as tower_service::Service<axum::http::Request<B>>>::Response;
    type Error = <Router as tower_service::Service<axum::http::Request<B>>>::Error;
    type Future = <Router as tower_service::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<axum::http::Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.app.call(req)
    }
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(mut sock: TcpStream, max: usize) {
    let body = format!(
        r#"{{"error":{{"status":503,"message":"the master serves at most {max} HTTP connections at once; try again"}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if sock.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    let _ = sock.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN, async {
        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// A request body whose reader gets an error when no part of it arrives
/// for `idle`: a client that sends headers and then trickles (or stops)
/// its body would otherwise hold its connection for as long as the route
/// waits. Only reading is timed: a route that does not read the body, or
/// has read it, is not affected.
struct BodyDeadline {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The deadline runs from the first read, not from the request (a
    /// client expecting `100 Continue` sends nothing before it).
    reading: bool,
}

impl BodyDeadline {
    fn new(inner: Body, idle: Duration) -> BodyDeadline {
        BodyDeadline {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            reading: false,
        }
    }
}

impl http_body::Body for BodyDeadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if !this.reading {
            this.reading = true;
            let first = tokio::time::Instant::now() + this.idle;
            this.sleep.as_mut().reset(first);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                    "no part of the request body arrived for {} s",
                    this.idle.as_secs()
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
