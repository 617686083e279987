//! Buildbot's msgpack messages (`master-worker-msgpack.rst` in Buildbot's
//! developer docs): each WebSocket binary message is one msgpack map, a
//! request (`seq_number`, `op`, fields) or a response (`op: "response"`,
//! `seq_number`, `result`, `is_exception` when it failed).

use rmpv::Value;

/// One message from the worker.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// The worker asks something of the master (`update`, `complete`, the
    /// file-transfer ops); it waits for a response with the same `seq`.
    Request {
        seq: u64,
        op: String,
        command_id: Option<String>,
        args: Value,
        /// `update_read_file`: how many bytes the worker asks for.
        length: Option<u64>,
    },
    /// The worker's answer to a request of the master's.
    Response {
        seq: u64,
        result: Value,
        is_exception: bool,
    },
}

/// Decodes one message; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<Incoming, String> {
    let mut rd = bytes;
    let v = rmpv::decode::read_value(&mut rd).map_err(|e| format!("not msgpack: {e}"))?;
    if !rd.is_empty() {
        return Err(format!("{} bytes after the message", rd.len()));
    }
    let Value::Map(entries) = v else {
        return Err("the message is not a map".into());
    };
    let mut seq = None;
    let mut op = None;
    let mut command_id = None;
    let mut args = Value::Nil;
    let mut result = Value::Nil;
    let mut is_exception = false;
    let mut length = None;
    for (k, v) in entries {
        let Some(k) = k.as_str() else { continue };
        match k {
            "seq_number" => seq = v.as_u64(),
            "op" => op = v.as_str().map(str::to_string),
            // A string in the docs; an integer is taken as well.
            "command_id" => {
                command_id = match &v {
                    Value::String(s) => s.as_str().map(str::to_string),
                    Value::Integer(i) => Some(i.to_string()),
                    _ => None,
                }
            }
            "args" => args = v,
            "length" => length = v.as_u64(),
            "result" => result = v,
            "is_exception" => is_exception = v.as_bool().unwrap_or(true),
            _ => {}
        }
    }
    let seq = seq.ok_or("the message has no integer seq_number")?;
    let op = op.ok_or("the message has no op")?;
    if op == "response" {
        return Ok(Incoming::Response {
            seq,
            result,
            is_exception,
        });
    }
    Ok(Incoming::Request {
        seq,
        op,
        command_id,
        args,
        length,
    })
}

/// A request of the master's: `op` with `fields`.
pub fn request(seq: u64, op: &str, fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut map = Vec::with_capacity(fields.len() + 2);
    map.push((Value::from("seq_number"), Value::from(seq)));
    map.push((Value::from("op"), Value::from(op)));
    for (k, v) in fields {
        map.push((Value::from(k), v));
    }
    encode(&Value::Map(map))
}

/// The master's response to the worker's request `seq`.
pub fn response(seq: u64, result: Value, is_exception: bool) -> Vec<u8> {
    let mut map = vec![
        (Value::from("op"), Value::from("response")),
        (Value::from("seq_number"), Value::from(seq)),
        (Value::from("result"), result),
    ];
    if is_exception {
        map.push((Value::from("is_exception"), Value::from(true)));
    }
    encode(&Value::Map(map))
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// One item of an `update`'s `args`.
#[derive(Debug, PartialEq)]
pub enum Update {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Header(String),
    Rc(i64),
    Elapsed(f64),
    FailureReason(String),
    /// Keys this master does not use (`log`, `files`, `stat`, …).
    Other,
}

/// The items of an `update`'s `args`: a list of `[key, value]` pairs (what
/// `buildbot-worker` 4.x sends); the older `[{key: value}, n]` form of the
/// docs is read too. Output values are `[text, [newline offsets],
/// [times]]` or plain text.
pub fn updates(args: Value) -> Result<Vec<Update>, String> {
    let Value::Array(items) = args else {
        return Err("update args are not a list".into());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err("an update item is not a list".into());
        };
        if pair.len() != 2 {
            return Err(format!("an update item has {} elements, not 2", pair.len()));
        }
        let value = pair.pop().unwrap_or(Value::Nil);
        let key = pair.pop().unwrap_or(Value::Nil);
        match key {
            Value::String(k) => {
                let k = k.into_str().ok_or("an update key is not UTF-8")?;
                out.push(update(&k, value)?);
            }
            Value::Map(m) => {
                for (k, v) in m {
                    let k = k
                        .as_str()
                        .ok_or("an update key is not a string")?
                        .to_string();
                    out.push(update(&k, v)?);
                }
            }
            _ => return Err("an update key is not a string".into()),
        }
    }
    Ok(out)
}

fn update(key: &str, value: Value) -> Result<Update, String> {
    Ok(match key {
        "stdout" => Update::Stdout(text(value)?),
        "stderr" => Update::Stderr(text(value)?),
        "header" => Update::Header(String::from_utf8_lossy(&text(value)?).into_owned()),
        "rc" => Update::Rc(value.as_i64().ok_or("rc is not an integer")?),
        "elapsed" => Update::Elapsed(value.as_f64().unwrap_or(0.0)),
        "failure_reason" => Update::FailureReason(value.as_str().unwrap_or("").to_string()),
        _ => Update::Other,
    })
}

/// The bytes of an output value, taken over without a copy.
fn text(value: Value) -> Result<Vec<u8>, String> {
    let first = match value {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        v => v,
    };
    match first {
        Value::String(s) => Ok(s.into_bytes()),
        Value::Binary(b) => Ok(b),
        _ => Err("output is not text".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let r = request(7, "keepalive", vec![("command_id", Value::from("3"))]);
        assert_eq!(
            decode(&r),
            Ok(Incoming::Request {
                seq: 7,
                op: "keepalive".into(),
                command_id: Some("3".into()),
                args: Value::Nil,
                length: None
            })
        );
        let r = response(9, Value::from("boom"), true);
        assert_eq!(
            decode(&r),
            Ok(Incoming::Response {
                seq: 9,
                result: Value::from("boom"),
                is_exception: true
            })
        );
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(decode(b"").is_err());
        assert!(decode(&[0xc1]).is_err());
        assert_eq!(
            decode(&encode(&Value::from(3))),
            Err("the message is not a map".into())
        );
        let no_seq = encode(&Value::Map(vec![(Value::from("op"), Value::from("x"))]));
        assert_eq!(
            decode(&no_seq),
            Err("the message has no integer seq_number".into())
        );
        let mut two = request(1, "update", vec![]);
        two.push(0);
        assert!(decode(&two).is_err());
    }

    #[test]
    fn updates_in_both_shapes() {
        let line = Value::Array(vec![
            Value::from("hi\n"),
            Value::Array(vec![Value::from(2)]),
            Value::Array(vec![Value::from(0.5)]),
        ]);
        let args = Value::Array(vec![
            Value::Array(vec![Value::from("stdout"), line]),
            Value::Array(vec![Value::from("rc"), Value::from(3)]),
            Value::Array(vec![
                Value::Map(vec![(Value::from("stderr"), Value::from("e"))]),
                Value::from(0),
            ]),
            Value::Array(vec![Value::from("log"), Value::Nil]),
        ]);
        assert_eq!(
            updates(args),
            Ok(vec![
                Update::Stdout(b"hi\n".to_vec()),
                Update::Rc(3),
                Update::Stderr(b"e".to_vec()),
                Update::Other
            ])
        );
        assert!(updates(Value::from(1)).is_err());
        assert!(updates(Value::Array(vec![Value::from(1)])).is_err());
        let bad_rc = Value::Array(vec![Value::Array(vec![
            Value::from("rc"),
            Value::from("x"),
        ])]);
        assert_eq!(updates(bad_rc), Err("rc is not an integer".into()));
    }
}
