//! A command step's log on its way to the store: written in batches while
//! the command runs, and its warning lines counted.

use std::sync::Arc;

use super::record::{StepStart, StepWrite, Stored};
use crate::state::metrics::Counter;
use crate::store::Store;

/// Log bytes are written to the store in batches of about this size.
pub(super) const LOG_BATCH: usize = 64 * 1024;

/// Appends a step's log while the build goes on: one write runs on a
/// blocking thread while the next batch is filled (and redacted), and the
/// two buffers are reused, so a long log costs no allocation per batch.
pub(super) struct LogWriter {
    store: Arc<dyn Store>,
    build: u64,
    step: u32,
    /// The builder's count of stored log bytes.
    logged: Counter,
    inflight: Option<tokio::task::JoinHandle<Stored>>,
    /// The size of the append under way.
    inflight_len: u64,
    spare: Vec<u8>,
    /// Set at the first append that failed (a full disk): later output is
    /// counted, not written, so the stored log has no hole in the middle
    /// and the failure is logged once, not once per batch.
    lost: Option<LostLog>,
}

/// Output of a step that could not be stored.
pub(super) struct LostLog {
    pub error: String,
    pub bytes: u64,
}

impl LogWriter {
    pub fn new(store: Arc<dyn Store>, build: u64, step: u32, logged: Counter) -> LogWriter {
        LogWriter {
            store,
            build,
            step,
            logged,
            inflight: None,
            inflight_len: 0,
            spare: Vec::new(),
            lost: None,
        }
    }

    /// Starts appending `buf` (leaving it empty) once the previous append
    /// is done; with the step's start record first, if given.
    pub async fn write(&mut self, buf: &mut Vec<u8>, start: Option<StepStart>) {
        if buf.is_empty() && start.is_none() {
            return;
        }
        self.wait().await;
        if let Some(lost) = &mut self.lost {
            lost.bytes += buf.len() as u64;
            buf.clear();
            if start.is_none() {
                return;
            }
        }
        self.inflight_len = buf.len() as u64;
        let w = StepWrite {
            step: self.step,
            start,
            log: std::mem::replace(buf, std::mem::take(&mut self.spare)),
            end: None,
        };
        self.inflight = Some(w.spawn(self.store.clone(), self.build, self.logged.clone()));
    }

    /// Waits for the append under way.
    pub async fn wait(&mut self) {
        if let Some(h) = self.inflight.take() {
            match h.await {
                Ok(stored) => {
                    self.spare = stored.buf;
                    if let Some(error) = stored.log_error {
                        tracing::error!(
                            build = self.build,
                            step = self.step,
                            "the step's log could not be stored; its further output is dropped: {error}"
                        );
                        self.lost = Some(LostLog {
                            error,
                            bytes: self.inflight_len,
                        });
                    }
                }
                Err(e) => tracing::error!("log writer failed: {e}"),
            }
        }
    }

    /// Output that could not be stored, once the appends are waited for.
    pub fn lost(&self) -> Option<&LostLog> {
        self.lost.as_ref()
    }
}

/// Counts lines matching the warning pattern across chunk boundaries,
/// without allocating per line.
#[derive(Default)]
pub(super) struct LineCounter {
    partial: Vec<u8>,
    pub count: u64,
}

impl LineCounter {
    pub fn feed(&mut self, data: &[u8], re: &regex::bytes::Regex) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..nl];
            if self.partial.is_empty() {
                self.count += u64::from(re.is_match(line));
            } else {
                self.partial.extend_from_slice(line);
                self.count += u64::from(re.is_match(&self.partial));
                self.partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        // Bound memory on endless lines: past 64 KiB the line is judged as is.
        if self.partial.len() + rest.len() > 64 * 1024 {
            self.partial.extend_from_slice(rest);
            self.count += u64::from(re.is_match(&self.partial));
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    pub fn finish(&mut self, re: &regex::bytes::Regex) {
        if !self.partial.is_empty() {
            self.count += u64::from(re.is_match(&self.partial));
            self.partial.clear();
        }
    }
}
