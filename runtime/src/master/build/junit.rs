//! A `test` step's JUnit XML report (`junit="PATH"`): fetched from the
//! worker after the command ends with the upload transfer every upload
//! step uses, into memory (at most [`MAX_REPORT`] bytes are kept; the rest
//! of a larger file is read and dropped), and parsed on a blocking thread
//! by `test_results::junit`. The report's counts replace those read from
//! the output; a report that is missing or does not parse is said in the
//! step's log and changes nothing else.

use bbc_graph::Step;

use super::Ctx;
use crate::protocol::Message;
use crate::state::connection::CmdEvent;
use crate::store::TestCounts;

/// The largest report parsed.
pub const MAX_REPORT: usize = 16 << 20;

impl Ctx {
    /// The report's test counts, or why there are none (a line for the
    /// step's log).
    pub(super) async fn junit(&mut self, step: &Step, path: &str) -> Result<TestCounts, String> {
        let Some(conn) = self.conn.clone() else {
            return Err("the worker is gone".into());
        };
        let id = self.shared.next_id();
        let msg = Message::Upload {
            id,
            builder_dir: self.builder.workdir.clone(),
            workdir: self.workdir(step),
            src: path.to_string(),
            directory: false,
        };
        let mut rx = match super::transfer::open_transfer(&conn, id, msg).await {
            Ok(rx) => rx,
            Err(_) => return Err("the worker is gone".into()),
        };
        let mut data = Vec::new();
        let mut size = 0usize;
        loop {
            match rx.recv().await {
                Some(CmdEvent::FileData(d)) => {
                    size = size.saturating_add(d.len());
                    if size <= MAX_REPORT {
                        data.extend_from_slice(&d);
                    }
                }
                Some(CmdEvent::Finished { error: Some(e), .. }) => return Err(e),
                Some(CmdEvent::Finished { .. }) => break,
                None | Some(CmdEvent::Lost) => return Err("the worker is gone".into()),
                Some(_) => {}
            }
        }
        if size > MAX_REPORT {
            return Err(format!(
                "the report is {size} bytes, over the {MAX_REPORT} bytes read"
            ));
        }
        tokio::task::spawn_blocking(move || {
            let mut c = TestCounts::default();
            crate::test_results::junit::parse(&data, &mut c).map(|()| c)
        })
        .await
        .unwrap_or_else(|e| Err(format!("parsing failed: {e}")))
    }
}
