//! The event stream: build events as server-sent events.

use std::sync::Arc;

use axum::extract::State;
use serde_json::json;

use crate::state::Shared;

type S = State<Arc<Shared>>;

/// `GET /api/v1/events`: Server-Sent Events, so a page (or a script) learns
/// at once that a build started or finished, a change arrived or a build
/// set was submitted, instead of polling. Each event carries
/// ids to fetch the details with; `lagged` says some were missed (a slow
/// reader) and everything should be read again.
pub(super) async fn events(
    State(s): S,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let subs = (
        s.reporters.subscribe(),
        s.changes.subscribe(),
        s.buildsets.subscribe(),
    );
    let stream = futures_util::stream::unfold(subs, |(mut b, mut c, mut sets)| async move {
        let (kind, data) = tokio::select! {
            r = b.recv() => match r {
                Ok(e) => ("build", json!({
                    "phase": e.phase.name(),
                    "id": e.build.id,
                    "builder": e.build.build.builder,
                    "number": e.build.number,
                    "result": e.build.result,
                })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
            r = c.recv() => match r {
                Ok(ch) => ("change", json!({
                    "id": ch.id,
                    "branch": ch.change.branch,
                    "revision": ch.change.revision,
                })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
            r = sets.recv() => match r {
                Ok(bs) => ("buildset", json!({ "id": bs.id, "result": bs.result })),
                Err(RecvError::Lagged(n)) => ("lagged", json!({ "missed": n })),
                Err(RecvError::Closed) => return None,
            },
        };
        let ev = Event::default().event(kind).data(data.to_string());
        Some((Ok(ev), (b, c, sets)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
