//! The master ⇄ worker protocol (documented in `docs/protocol.md`).
//!
//! Workers connect out to the master over TCP. Every frame is
//! `u32 length (big endian) | u8 kind | payload`, `length` counting the kind
//! byte and the payload, at most [`MAX_FRAME`]:
//! - kind 1: a control [`Message`] as JSON;
//! - kind 2: command output: `u64 command id | u8 stream (1 stdout, 2 stderr) | bytes`;
//! - kind 3: file data: `u64 transfer id | bytes` (uploads and downloads).
//!
//! Output and file data are raw bytes so that logs stream without encoding
//! costs. A frame that is too long, of an unknown kind, or that does not
//! decode closes the connection with a logged reason: it never takes the
//! master down or touches other workers.

mod writer;

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

pub use writer::{FrameWriter, DIRECT_MIN};

/// Bumped on any incompatible change; the handshake refuses a mismatch.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted (kind byte and payload).
pub const MAX_FRAME: usize = 1 << 20;

/// Output and file data are sent in chunks of at most this many bytes.
pub const CHUNK: usize = 64 * 1024;

pub const KIND_MESSAGE: u8 = 1;
pub const KIND_OUTPUT: u8 = 2;
pub const KIND_FILE_DATA: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A command as the worker runs it (interpolation already done by the master).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireCommand {
    /// `sh -c STRING`
    Shell(String),
    /// Executed directly.
    Argv(Vec<String>),
}

/// Why the worker stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// No output for `timeout_ms`.
    NoOutput,
    /// Ran longer than `max_time_ms`.
    MaxTime,
    /// The master sent `interrupt`.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    // ---- worker → master
    /// First frame of a connection.
    Hello {
        protocol: u32,
        name: String,
        password: String,
        /// os, arch, version, …
        info: BTreeMap<String, String>,
    },
    Pong {
        nonce: u64,
    },
    /// A command (or transfer) ended. `exit_code` is `None` when the process
    /// was killed by a signal or could not start (`error` says why).
    Finished {
        id: u64,
        exit_code: Option<i32>,
        signal: Option<i32>,
        stopped: Option<Stopped>,
        error: Option<String>,
        duration_ms: u64,
    },
    /// Upload (worker → master): a file begins; its bytes follow as
    /// file-data frames with the same id, then `file-end`.
    FileBegin {
        id: u64,
        /// Relative to the uploaded directory ("" for a single file).
        path: String,
        mode: u32,
    },
    FileEnd {
        id: u64,
    },

    // ---- master → worker
    Welcome {
        protocol: u32,
        /// Each side sends a frame at least this often (the master a
        /// `ping`, the worker an unprompted `pong` with nonce 0 when it has
        /// nothing else to send) and drops the connection after three
        /// intervals without a frame from the other. 0 disables keepalive.
        keepalive_ms: u64,
    },
    Refused {
        reason: String,
    },
    Ping {
        nonce: u64,
    },
    Run {
        id: u64,
        /// Directory of the builder under the worker's basedir.
        builder_dir: String,
        /// Relative to `builder_dir`.
        workdir: String,
        command: WireCommand,
        env: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
        max_time_ms: Option<u64>,
        sigterm_time_ms: u64,
    },
    /// Stop command `id`: SIGTERM to its process group, SIGKILL after its
    /// `sigterm_time_ms`.
    Interrupt {
        id: u64,
    },
    /// Send `src` (a file, or a directory's files when `directory`) to the
    /// master as file-begin / file-data / file-end, then `finished`.
    Upload {
        id: u64,
        builder_dir: String,
        workdir: String,
        src: String,
        directory: bool,
    },
    /// Receive files into `dest`: file-begin / file-data / file-end frames
    /// follow from the master, then `download-done`; the worker answers
    /// `finished`.
    Download {
        id: u64,
        builder_dir: String,
        workdir: String,
        dest: String,
        directory: bool,
    },
    DownloadDone {
        id: u64,
    },
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Message),
    Output {
        id: u64,
        stream: Stream,
        data: bytes::Bytes,
    },
    FileData {
        id: u64,
        data: bytes::Bytes,
    },
}

// ---------------------------------------------------------------- codec

/// Size of the length prefix.
const LEN_BYTES: usize = 4;
/// `u64 id | u8 stream` before output bytes.
const OUTPUT_HEADER: usize = 9;
/// `u64 id` before file bytes.
const FILE_HEADER: usize = 8;

impl Stream {
    /// The byte that stands for this stream in an output frame.
    pub fn to_byte(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    pub fn from_byte(byte: u8) -> Option<Stream> {
        match byte {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// What is wrong with a frame, or with the connection carrying it.
///
/// Every variant except [`ProtocolError::Io`] means the peer sent something
/// this side does not understand (or, when encoding, that a frame would be
/// too large to send); the connection cannot be resynchronised and is
/// closed.
#[derive(Debug)]
pub enum ProtocolError {
    /// The length prefix (kind byte and payload) exceeds [`MAX_FRAME`].
    TooLong {
        len: usize,
    },
    /// The length prefix is 0: there is not even a kind byte.
    Empty,
    /// The kind byte is not one of `KIND_*`.
    UnknownKind(u8),
    /// An output frame shorter than its `u64 id | u8 stream` header.
    TruncatedOutputHeader {
        len: usize,
    },
    /// A file-data frame shorter than its `u64 id` header.
    TruncatedFileHeader {
        len: usize,
    },
    /// An output frame whose stream byte is neither 1 nor 2.
    InvalidStream(u8),
    /// A message frame that is not a valid JSON [`Message`] (serde's words).
    Json(String),
    /// The connection ended in the middle of a frame.
    Incomplete {
        have: usize,
        need: usize,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::TooLong { len } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {MAX_FRAME}")
            }
            ProtocolError::Empty => write!(f, "empty frame (length 0, no kind byte)"),
            ProtocolError::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            ProtocolError::TruncatedOutputHeader { len } => write!(
                f,
                "output frame payload of {len} bytes is shorter than its \
                 {OUTPUT_HEADER}-byte header (u64 id, u8 stream)"
            ),
            ProtocolError::TruncatedFileHeader { len } => write!(
                f,
                "file-data frame payload of {len} bytes is shorter than its \
                 {FILE_HEADER}-byte header (u64 id)"
            ),
            ProtocolError::InvalidStream(byte) => write!(
                f,
                "invalid stream byte {byte} in output frame (1 stdout, 2 stderr)"
            ),
            ProtocolError::Json(msg) => write!(f, "invalid message: {msg}"),
            ProtocolError::Incomplete { have, need } => write!(
                f,
                "connection closed in the middle of a frame ({have} of {need} bytes received)"
            ),
            ProtocolError::Io(err) => write!(f, "I/O error: {err}"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ProtocolError {
    fn from(err: std::io::Error) -> Self {
        ProtocolError::Io(err)
    }
}

/// Encodes and decodes [`Frame`]s (see the module documentation for the
/// layout). Use it with `tokio_util::codec::{Framed, FramedRead,
/// FramedWrite}`. Both directions use the same codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl FrameCodec {
    pub fn new() -> FrameCodec {
        FrameCodec
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(prefix) = src.get(..LEN_BYTES) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; LEN_BYTES];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes) as usize;
        // Validate before reserving anything: a hostile length must not make
        // us allocate.
        if len == 0 {
            return Err(ProtocolError::Empty);
        }
        if len > MAX_FRAME {
            return Err(ProtocolError::TooLong { len });
        }
        let total = LEN_BYTES + len;
        if src.len() < total {
            // One allocation for the rest of the frame instead of repeated
            // growth; bounded by MAX_FRAME thanks to the check above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LEN_BYTES);
        let mut payload = src.split_to(len);
        let kind = payload.get_u8();
        decode_payload(kind, payload).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                // Say how much of which frame was lost rather than tokio's
                // generic "bytes remaining on stream".
                let need = match src.get(..LEN_BYTES) {
                    Some(prefix) => {
                        let mut len_bytes = [0u8; LEN_BYTES];
                        len_bytes.copy_from_slice(prefix);
                        LEN_BYTES + u32::from_be_bytes(len_bytes) as usize
                    }
                    None => LEN_BYTES,
                };
                Err(ProtocolError::Incomplete {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

/// Decodes the payload of one frame (after the kind byte). `payload` is the
/// frame's own buffer, so output and file bytes are handed on without a
/// copy.
fn decode_payload(kind: u8, mut payload: BytesMut) -> Result<Frame, ProtocolError> {
    match kind {
        KIND_MESSAGE => serde_json::from_slice(&payload)
            .map(Frame::Message)
            .map_err(|err| ProtocolError::Json(err.to_string())),
        KIND_OUTPUT => {
            if payload.len() < OUTPUT_HEADER {
                return Err(ProtocolError::TruncatedOutputHeader { len: payload.len() });
            }
            let id = payload.get_u64();
            let byte = payload.get_u8();
            let stream = Stream::from_byte(byte).ok_or(ProtocolError::InvalidStream(byte))?;
            Ok(Frame::Output {
                id,
                stream,
                data: payload.freeze(),
            })
        }
        KIND_FILE_DATA => {
            if payload.len() < FILE_HEADER {
                return Err(ProtocolError::TruncatedFileHeader { len: payload.len() });
            }
            let id = payload.get_u64();
            Ok(Frame::FileData {
                id,
                data: payload.freeze(),
            })
        }
        other => Err(ProtocolError::UnknownKind(other)),
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    /// Refuses (with [`ProtocolError::TooLong`]) a frame the peer would
    /// refuse, instead of sending it and losing the connection. Nothing is
    /// left in `dst` on error.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match frame {
            Frame::Message(message) => encode_message(&message, dst),
            Frame::Output { id, stream, data } => {
                let len = 1 + OUTPUT_HEADER + data.len();
                check_len(len)?;
                dst.reserve(LEN_BYTES + len);
                dst.put_u32(len as u32);
                dst.put_u8(KIND_OUTPUT);
                dst.put_u64(id);
                dst.put_u8(stream.to_byte());
                dst.extend_from_slice(&data);
                Ok(())
            }
            Frame::FileData { id, data } => {
                let len = 1 + FILE_HEADER + data.len();
                check_len(len)?;
                dst.reserve(LEN_BYTES + len);
                dst.put_u32(len as u32);
                dst.put_u8(KIND_FILE_DATA);
                dst.put_u64(id);
                dst.extend_from_slice(&data);
                Ok(())
            }
        }
    }
}

fn check_len(len: usize) -> Result<(), ProtocolError> {
    if len > MAX_FRAME {
        Err(ProtocolError::TooLong { len })
    } else {
        Ok(())
    }
}

/// Serialises straight into `dst` behind a placeholder length that is
/// patched afterwards, so a message is not built in a temporary buffer.
fn encode_message(message: &Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(KIND_MESSAGE);
    let written = serde_json::to_writer((&mut *dst).writer(), message);
    let len = dst.len() - start - LEN_BYTES;
    let result = match written {
        Err(err) => Err(ProtocolError::Json(err.to_string())),
        Ok(()) => check_len(len),
    };
    match result {
        Ok(()) => {
            let prefix = (len as u32).to_be_bytes();
            dst[start..start + LEN_BYTES].copy_from_slice(&prefix);
            Ok(())
        }
        Err(err) => {
            dst.truncate(start);
            Err(err)
        }
    }
}

// ---------------------------------------------------------------- paths

/// Checks a path the master sends (builder directory, workdir, transfer
/// source or destination, a file's path inside a transferred directory):
/// it must be relative and must not contain `..`, so that it stays under
/// the worker's basedir. `""` and `.` are allowed (the directory itself).
/// Returns why the path is refused.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    use std::path::Component;
    for component in std::path::Path::new(path).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("path {path:?} contains `..`"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("path {path:?} is absolute"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec.encode(frame, &mut buf).unwrap();
        buf
    }

    /// A raw frame: length prefix computed from `kind` and `payload`.
    fn raw(kind: u8, payload: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u32(1 + payload.len() as u32);
        buf.put_u8(kind);
        buf.extend_from_slice(payload);
        buf
    }

    fn decode_all(mut buf: BytesMut) -> Result<Vec<Frame>, ProtocolError> {
        let mut frames = Vec::new();
        while let Some(frame) = FrameCodec.decode_eof(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn sample_messages() -> Vec<Message> {
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1 2".to_string());
        vec![
            Message::Hello {
                protocol: PROTOCOL_VERSION,
                name: "w1".into(),
                password: "pässword\"\n".into(),
                info: env.clone(),
            },
            Message::Pong { nonce: u64::MAX },
            Message::Finished {
                id: 7,
                exit_code: Some(-1),
                signal: None,
                stopped: Some(Stopped::NoOutput),
                error: Some("boom".into()),
                duration_ms: 12,
            },
            Message::FileBegin {
                id: 1,
                path: "a/b".into(),
                mode: 0o755,
            },
            Message::FileEnd { id: 1 },
            Message::Welcome {
                protocol: 1,
                keepalive_ms: 30_000,
            },
            Message::Refused {
                reason: "bad password".into(),
            },
            Message::Ping { nonce: 3 },
            Message::Run {
                id: 2,
                builder_dir: "b".into(),
                workdir: "build".into(),
                command: WireCommand::Argv(vec!["make".into(), "-j2".into()]),
                env: env.clone(),
                timeout_ms: Some(1),
                max_time_ms: None,
                sigterm_time_ms: 5,
            },
            Message::Run {
                id: 3,
                builder_dir: "b".into(),
                workdir: "".into(),
                command: WireCommand::Shell("echo hi".into()),
                env: BTreeMap::new(),
                timeout_ms: None,
                max_time_ms: Some(9),
                sigterm_time_ms: 0,
            },
            Message::Interrupt { id: 2 },
            Message::Upload {
                id: 4,
                builder_dir: "b".into(),
                workdir: "w".into(),
                src: "out".into(),
                directory: true,
            },
            Message::Download {
                id: 5,
                builder_dir: "b".into(),
                workdir: "w".into(),
                dest: "in.txt".into(),
                directory: false,
            },
            Message::DownloadDone { id: 5 },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let messages = sample_messages();
        let mut buf = BytesMut::new();
        for message in &messages {
            FrameCodec
                .encode(Frame::Message(message.clone()), &mut buf)
                .unwrap();
        }
        let decoded = decode_all(buf).unwrap();
        let expected: Vec<Frame> = messages.into_iter().map(Frame::Message).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn data_frames_round_trip() {
        let frames = vec![
            Frame::Output {
                id: u64::MAX,
                stream: Stream::Stdout,
                data: Bytes::from_static(b"hello\n\0\xff"),
            },
            Frame::Output {
                id: 0,
                stream: Stream::Stderr,
                data: Bytes::new(),
            },
            Frame::FileData {
                id: 9,
                data: Bytes::from(vec![0xab; CHUNK]),
            },
            Frame::FileData {
                id: 10,
                data: Bytes::new(),
            },
        ];
        let mut buf = BytesMut::new();
        for frame in &frames {
            FrameCodec.encode(frame.clone(), &mut buf).unwrap();
        }
        assert_eq!(decode_all(buf).unwrap(), frames);
    }

    #[test]
    fn wire_layout_is_as_documented() {
        let buf = encode(Frame::Output {
            id: 0x0102,
            stream: Stream::Stderr,
            data: Bytes::from_static(b"xy"),
        });
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 12, 2, 0, 0, 0, 0, 0, 0, 1, 2, 2, b'x', b'y']
        );
        let buf = encode(Frame::FileData {
            id: 5,
            data: Bytes::from_static(b"z"),
        });
        assert_eq!(&buf[..], &[0, 0, 0, 10, 3, 0, 0, 0, 0, 0, 0, 0, 5, b'z']);
        let buf = encode(Frame::Message(Message::Ping { nonce: 1 }));
        let json = br#"{"type":"ping","nonce":1}"#;
        assert_eq!(&buf[..4], &(1 + json.len() as u32).to_be_bytes());
        assert_eq!(buf[4], KIND_MESSAGE);
        assert_eq!(&buf[5..], json);
    }

    #[test]
    fn decodes_byte_by_byte() {
        // A frame split at every possible point must come out whole, once.
        let whole = encode(Frame::Message(Message::Interrupt { id: 42 }));
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in whole.iter() {
            buf.put_u8(*byte);
            if let Some(frame) = FrameCodec.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![Frame::Message(Message::Interrupt { id: 42 })]);
        assert!(buf.is_empty());
    }

    #[test]
    fn largest_frame_is_accepted() {
        let data = Bytes::from(vec![7u8; MAX_FRAME - 1 - 8]);
        let frame = Frame::FileData { id: 1, data };
        assert_eq!(decode_all(encode(frame.clone())).unwrap(), vec![frame]);
    }

    #[test]
    fn too_long_is_refused_before_allocating() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_u8(KIND_OUTPUT);
        let capacity = buf.capacity();
        let err = FrameCodec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLong { len } if len == u32::MAX as usize),
            "{err}"
        );
        assert_eq!(buf.capacity(), capacity, "nothing was reserved");
        assert!(err.to_string().contains("4294967295"), "{err}");

        let mut buf = BytesMut::new();
        buf.put_u32(MAX_FRAME as u32 + 1);
        assert!(matches!(
            FrameCodec.decode(&mut buf),
            Err(ProtocolError::TooLong { len }) if len == MAX_FRAME + 1
        ));
    }

    #[test]
    fn encoder_refuses_frames_the_peer_would_refuse() {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let data = Bytes::from(vec![0u8; MAX_FRAME]);
        let err = FrameCodec
            .encode(
                Frame::Output {
                    id: 1,
                    stream: Stream::Stdout,
                    data: data.clone(),
                },
                &mut buf,
            )
            .unwrap_err();
        assert!(matches!(err, ProtocolError::TooLong { .. }), "{err}");
        let err = FrameCodec
            .encode(Frame::FileData { id: 1, data }, &mut buf)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::TooLong { .. }), "{err}");
        let err = FrameCodec
            .encode(
                Frame::Message(Message::Refused {
                    reason: "x".repeat(MAX_FRAME),
                }),
                &mut buf,
            )
            .unwrap_err();
        assert!(matches!(err, ProtocolError::TooLong { .. }), "{err}");
        assert_eq!(&buf[..], b"keep", "a refused frame leaves nothing behind");
    }

    #[test]
    fn empty_frame() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        let err = FrameCodec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::Empty), "{err}");
    }

    #[test]
    fn unknown_kind() {
        for kind in [0u8, 4, 255] {
            let err = decode_all(raw(kind, b"abc")).unwrap_err();
            assert!(
                matches!(err, ProtocolError::UnknownKind(k) if k == kind),
                "{err}"
            );
        }
    }

    #[test]
    fn truncated_output_header() {
        for len in 0..OUTPUT_HEADER {
            let err = decode_all(raw(KIND_OUTPUT, &vec![1u8; len])).unwrap_err();
            assert!(
                matches!(err, ProtocolError::TruncatedOutputHeader { len: l } if l == len),
                "{err}"
            );
        }
    }

    #[test]
    fn truncated_file_header() {
        for len in 0..FILE_HEADER {
            let err = decode_all(raw(KIND_FILE_DATA, &vec![1u8; len])).unwrap_err();
            assert!(
                matches!(err, ProtocolError::TruncatedFileHeader { len: l } if l == len),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_stream_byte() {
        for byte in [0u8, 3, 255] {
            let mut payload = vec![0u8; 8];
            payload.push(byte);
            payload.extend_from_slice(b"data");
            let err = decode_all(raw(KIND_OUTPUT, &payload)).unwrap_err();
            assert!(
                matches!(err, ProtocolError::InvalidStream(b) if b == byte),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_json() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"\xff\xfe",
            br#"{"type":"no-such-message"}"#,
            br#"{"type":"ping"}"#,
            br#"{"type":"ping","nonce":-1}"#,
            br#"[1,2]"#,
        ];
        for payload in cases {
            let err = decode_all(raw(KIND_MESSAGE, payload)).unwrap_err();
            assert!(matches!(err, ProtocolError::Json(_)), "{err}");
        }
        // serde's own words reach the message.
        let err = decode_all(raw(KIND_MESSAGE, br#"{"type":"ping"}"#)).unwrap_err();
        assert!(err.to_string().contains("missing field `nonce`"), "{err}");
    }

    #[test]
    fn connection_closed_mid_frame() {
        let whole = encode(Frame::Message(Message::Ping { nonce: 1 }));
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        let err = FrameCodec.decode_eof(&mut part).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Incomplete { have, need }
                if have == whole.len() - 1 && need == whole.len()),
            "{err}"
        );
        let mut part = BytesMut::from(&whole[..2]);
        let err = FrameCodec.decode_eof(&mut part).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Incomplete { have: 2, need: 4 }),
            "{err}"
        );
        let mut empty = BytesMut::new();
        assert!(FrameCodec.decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn documented_examples_decode() {
        // The examples of docs/protocol.md, byte for byte.
        let examples = [
            r#"{"type":"hello","protocol":1,"name":"w1","password":"…","info":{"arch":"x86_64","os":"linux","version":"0.1.0"}}"#,
            r#"{"type":"run","id":7,"builder_dir":"linux","workdir":"build","command":{"shell":"make -j2"},"env":{"CC":"clang"},"timeout_ms":1200000,"max_time_ms":null,"sigterm_time_ms":10000}"#,
            r#"{"type":"finished","id":7,"exit_code":null,"signal":15,"stopped":"no-output","error":null,"duration_ms":1200013}"#,
        ];
        for example in examples {
            let frames = decode_all(raw(KIND_MESSAGE, example.as_bytes())).unwrap();
            let [Frame::Message(message)] = &frames[..] else {
                panic!("{frames:?}");
            };
            // And they are what the encoder writes.
            let encoded = encode(Frame::Message(message.clone()));
            assert_eq!(&encoded[5..], example.as_bytes());
        }
        // A missing optional field reads as null (see "Versioning").
        let frames = decode_all(raw(
            KIND_MESSAGE,
            br#"{"type":"finished","id":1,"exit_code":0,"signal":null,"stopped":null,"duration_ms":0,"extra":true}"#,
        ))
        .unwrap();
        assert!(matches!(
            &frames[..],
            [Frame::Message(Message::Finished { error: None, .. })]
        ));
    }

    #[test]
    fn stream_bytes() {
        for stream in [Stream::Stdout, Stream::Stderr] {
            assert_eq!(Stream::from_byte(stream.to_byte()), Some(stream));
        }
        assert_eq!(Stream::from_byte(0), None);
    }

    #[test]
    fn relative_paths() {
        for ok in ["", ".", "a", "a/b", "./a", "a/./b", "a..b", "..a"] {
            assert!(check_relative_path(ok).is_ok(), "{ok}");
        }
        for bad in ["..", "../a", "a/..", "a/../b", "/", "/etc/passwd"] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
    }
}
