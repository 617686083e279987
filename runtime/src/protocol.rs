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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
        /// The worker pings at least this often; the master drops a worker
        /// silent for three intervals.
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
