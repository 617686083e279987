//! What a build writes to the store about its steps, and the one shape
//! every such write has: a [`StepWrite`], stored in one trip.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Ctx;
use crate::state::metrics::Counter;
use crate::store::{Properties, StepRecord, Store};

/// What the store records when a step starts: its record, and the
/// build's state line and properties at that moment.
pub(super) struct StepStart {
    pub rec: StepRecord,
    pub state: String,
    pub props: Properties,
}

/// A step's end record. A step that ran has a log: it is synced first and
/// its length stamped on the record. A skipped step has none.
pub(super) struct StepEnd {
    pub rec: StepRecord,
    pub ran: bool,
}

/// One trip to the store for one step: any of its start, some of its log
/// and its end, stored in that order. Writes are gathered into as few of
/// these as possible (a command step's start goes with its first log
/// bytes, the last step's end with the build's end), since each trip is a
/// hop to a blocking thread.
pub(super) struct StepWrite {
    pub step: u32,
    pub start: Option<StepStart>,
    pub log: Vec<u8>,
    pub end: Option<StepEnd>,
}

impl StepWrite {
    pub fn new(step: u32) -> StepWrite {
        StepWrite {
            step,
            start: None,
            log: Vec::new(),
            end: None,
        }
    }

    /// A skipped step's record: it has no start and no log.
    pub fn skipped(rec: StepRecord) -> StepWrite {
        StepWrite {
            step: rec.index,
            start: None,
            log: Vec::new(),
            end: Some(StepEnd { rec, ran: false }),
        }
    }

    fn is_empty(&self) -> bool {
        self.start.is_none() && self.log.is_empty() && self.end.is_none()
    }

    /// Stores it (failures are logged: a build goes on without its
    /// records). Gives back the log buffer, emptied, for reuse, and why its
    /// bytes could not be stored, if they could not. A step's end stored
    /// with log bytes that failed says so itself (`exception`, `log_lost`).
    ///
    /// Log bytes stored are added to `logged`.
    pub fn store(self, s: &dyn Store, build: u64, logged: &Counter) -> Stored {
        let StepWrite {
            step,
            start,
            mut log,
            end,
        } = self;
        if let Some(start) = start {
            if let Err(e) = s.put_step(build, &start.rec) {
                tracing::error!("cannot record a step of build {build}: {e}");
            }
            let _ = s.set_build_state(build, &start.state, &start.props);
        }
        let mut log_error = None;
        let lost = log.len() as u64;
        if !log.is_empty() {
            match s.append_log(build, step, &log) {
                Ok(_) => {
                    logged.inc_by(log.len() as u64);
                }
                Err(e) => log_error = Some(e.to_string()),
            }
            log.clear();
        }
        let mut end_rec = None;
        if let Some(StepEnd { mut rec, ran }) = end {
            if let Some(e) = &log_error {
                tracing::error!(
                    "build {build} step {step}: {lost} bytes of log could not be stored: {e}"
                );
                lost_output(&mut rec, lost, e);
            }
            if ran {
                rec.log_len = match s.sync_log_len(build, step) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("cannot sync the log of build {build}: {e}");
                        s.log_len(build, step).unwrap_or(0)
                    }
                };
            }
            if let Err(e) = s.put_step(build, &rec) {
                tracing::error!("cannot record a step of build {build}: {e}");
            }
            end_rec = Some(rec);
        }
        Stored {
            buf: log,
            log_error,
            end: end_rec,
        }
    }

    /// Stores it on a blocking thread (disk work never blocks the async
    /// runtime).
    pub fn spawn(self, store: Arc<dyn Store>, build: u64, logged: Counter) -> JoinHandle<Stored> {
        tokio::task::spawn_blocking(move || self.store(store.as_ref(), build, &logged))
    }
}

/// What a [`StepWrite`] gives back.
pub(super) struct Stored {
    /// The log buffer, emptied.
    pub buf: Vec<u8>,
    /// Why its log bytes could not be stored.
    pub log_error: Option<String>,
    /// The step's end record as it was put, to put again should the store
    /// have lost it (see the build's end in `run`).
    pub end: Option<StepRecord>,
}

/// Marks a step whose output was not all stored: `exception`, with the
/// reason, and the count of bytes lost. A log cut short is never reported
/// as a step's whole output.
pub(super) fn lost_output(rec: &mut StepRecord, bytes: u64, error: &str) {
    rec.log_lost += bytes;
    rec.result = Some(bbc_graph::BuildResult::Exception);
    rec.state_string = format!(
        "{} bytes of output could not be stored (the log is incomplete): {error}",
        rec.log_lost
    );
}

impl Ctx {
    /// Stores `w` now, in one trip.
    pub(super) async fn write_step(&self, w: StepWrite) {
        if w.is_empty() {
            return;
        }
        let id = self.build.id;
        match w
            .spawn(self.shared.store.clone(), id, self.log_bytes.clone())
            .await
        {
            Ok(Stored {
                log_error: Some(e), ..
            }) => tracing::error!("cannot store log of build {id}: {e}"),
            Ok(_) => {}
            Err(e) => tracing::error!("a step write of build {id} failed: {e}"),
        }
    }

    /// Appends to a step's log now.
    pub(super) async fn log(&self, index: u32, data: &[u8]) {
        let w = StepWrite {
            log: data.to_vec(),
            ..StepWrite::new(index)
        };
        self.write_step(w).await;
    }
}
