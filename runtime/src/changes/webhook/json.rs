//! The generic JSON webhook: changes in `NewChange`'s own shape, read by
//! [`crate::change_json`] (which `POST /api/v1/changes` shares).

use serde_json::Value;

use super::payload::Outcome;
use crate::api_error::{ApiError, ApiResult as R};
use crate::change_json;

/// At most this many changes per JSON delivery: each is a durable write.
pub const MAX_JSON_CHANGES: usize = 1000;

/// The generic JSON webhook: one change object or an array of them, with
/// `NewChange`'s fields (all optional but a `branch` or a `revision`).
pub fn json_changes(v: &Value) -> R<Outcome> {
    const SOURCE: &str = "the change source's name";
    match v {
        Value::Object(_) => Ok(Outcome::Changes(vec![change_json::read(v, "", SOURCE)?])),
        Value::Array(a) => {
            if a.len() > MAX_JSON_CHANGES {
                return Err(ApiError::bad(format!(
                    "{} changes in one delivery; at most {MAX_JSON_CHANGES}",
                    a.len()
                )));
            }
            let mut out = Vec::with_capacity(a.len());
            for (i, item) in a.iter().enumerate() {
                out.push(change_json::read(item, &format!("[{i}]"), SOURCE)?);
            }
            Ok(Outcome::Changes(out))
        }
        _ => Err(ApiError::bad(
            "the body must be a change object or an array of change objects",
        )),
    }
}
