//! Sealed logs: a finished step's log compressed at rest with zstd, in
//! `<step>.log.zst` beside where its `<step>.log` was.
//!
//! The file is a valid zstd stream (`zstd -dc 3.log.zst` prints the log):
//! independent frames of [`FRAME_RAW`] bytes of log each (the last one
//! shorter), then a skippable frame holding the seek table, so that a read
//! at any offset decompresses only the frames it touches and memory stays
//! bounded by a frame or two whatever the log's size:
//!
//! ```text
//! frame 0 … frame n-1                       zstd frames, FRAME_RAW bytes of log each
//! 0x184D2A5E  u32 size                      skippable frame header (little endian)
//! n × u32 compressed size of each frame
//! u64 log length   u32 FRAME_RAW   u32 TAG  the last 16 bytes of the file
//! ```
//!
//! Frames hold a fixed amount of log, so the frame of an offset is a
//! division; only their compressed sizes need a table.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::store::{Result, StoreError};

/// Bytes of log per zstd frame: what one read decompresses at least, and
/// what sealing holds in memory (twice, raw and compressed).
pub(super) const FRAME_RAW: usize = 1 << 20;

/// zstd's level: 3 is its default, several hundred MB/s on one core, and
/// already most of the gain on compiler output (docs/store.md, "Sealed logs").
const LEVEL: i32 = 3;

/// The magic number of a zstd skippable frame (any of 0x184D2A50..=5F).
const SKIPPABLE: u32 = 0x184D_2A5E;
/// Marks the trailer as ours, version 1 ("BBZ1").
const TAG: u32 = u32::from_le_bytes(*b"BBZ1");
const TRAILER: u64 = 16;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(super::records::io_message(
        &format!("{what} {}", path.display()),
        &e,
    ))
}

fn corrupt(path: &Path, why: &str) -> StoreError {
    StoreError::Corrupt(format!("sealed log {}: {why}", path.display()))
}

/// Where each frame of a sealed log starts.
pub(super) struct Index {
    /// The log's length (uncompressed).
    pub len: u64,
    frame_raw: u64,
    /// n + 1 offsets into the file: frame i is `starts[i]..starts[i + 1]`.
    starts: Vec<u64>,
}

fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], at: u64) -> Result<()> {
    file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            corrupt(path, "shorter than its seek table says")
        } else {
            io("reading", path, e)
        }
    })
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

/// Just the log's length: the trailer's first field (one small read).
pub(super) fn len(file: &File, path: &Path) -> Result<u64> {
    Ok(trailer(file, path)?.0)
}

/// (log length, frame size, file length), checked.
fn trailer(file: &File, path: &Path) -> Result<(u64, u64, u64)> {
    let file_len = file
        .metadata()
        .map_err(|e| io("reading the length of", path, e))?
        .len();
    if file_len < TRAILER + 8 {
        return Err(corrupt(path, "too short for a seek table"));
    }
    let mut t = [0u8; TRAILER as usize];
    read_exact_at(file, path, &mut t, file_len - TRAILER)?;
    if u32_at(&t, 12) != TAG {
        return Err(corrupt(path, "no seek table at its end"));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&t[..8]);
    let frame_raw = u64::from(u32_at(&t, 8));
    if frame_raw == 0 {
        return Err(corrupt(path, "frames of 0 bytes"));
    }
    Ok((u64::from_le_bytes(l), frame_raw, file_len))
}

/// Reads and checks the seek table.
pub(super) fn index(file: &File, path: &Path) -> Result<Index> {
    let (len, frame_raw, file_len) = trailer(file, path)?;
    let n = len.div_ceil(frame_raw);
    let table_len = n
        .checked_mul(4)
        .filter(|t| {
            t.checked_add(TRAILER + 8)
                .is_some_and(|end| end <= file_len)
        })
        .ok_or_else(|| corrupt(path, "its seek table does not fit in the file"))?;
    let header_at = file_len - TRAILER - table_len - 8;
    // Bounded by the file's size, checked above.
    let mut table = vec![0u8; table_len as usize + 8];
    read_exact_at(file, path, &mut table, header_at)?;
    if u32_at(&table, 0) != SKIPPABLE || u64::from(u32_at(&table, 4)) != table_len + TRAILER {
        return Err(corrupt(path, "its seek table's frame header is wrong"));
    }
    let mut starts = Vec::with_capacity(n as usize + 1);
    let mut at = 0u64;
    starts.push(at);
    for i in 0..n as usize {
        at += u64::from(u32_at(&table, 8 + 4 * i));
        starts.push(at);
    }
    if at != header_at {
        return Err(corrupt(path, "its frames do not add up to its seek table"));
    }
    Ok(Index {
        len,
        frame_raw,
        starts,
    })
}

/// Up to `max` bytes of log from `offset`, decompressing only the frames
/// they lie in.
pub(super) fn read(
    file: &File,
    path: &Path,
    idx: &Index,
    offset: u64,
    max: usize,
) -> Result<Vec<u8>> {
    if offset >= idx.len || max == 0 {
        return Ok(Vec::new());
    }
    let want = usize::try_from(idx.len - offset).map_or(max, |rest| rest.min(max));
    let mut out = Vec::with_capacity(want);
    let mut dec = zstd::bulk::Decompressor::new().map_err(|e| io("decompressing", path, e))?;
    let mut compressed = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    let mut frame = offset / idx.frame_raw;
    while out.len() < want {
        let i = frame as usize;
        let (Some(&a), Some(&b)) = (idx.starts.get(i), idx.starts.get(i + 1)) else {
            return Err(corrupt(path, "a read past its last frame"));
        };
        compressed.resize((b - a) as usize, 0);
        read_exact_at(file, path, &mut compressed, a)?;
        let frame_start = frame * idx.frame_raw;
        let frame_len = idx.frame_raw.min(idx.len - frame_start) as usize;
        raw.clear();
        raw.reserve(frame_len);
        let got = dec
            .decompress_to_buffer(&compressed, &mut raw)
            .map_err(|e| corrupt(path, &format!("frame {frame} does not decompress: {e}")))?;
        if got != frame_len {
            return Err(corrupt(
                path,
                &format!("frame {frame} holds {got} bytes, not {frame_len}"),
            ));
        }
        let from = (offset.max(frame_start) - frame_start) as usize;
        let take = (want - out.len()).min(frame_len - from);
        out.extend_from_slice(&raw[from..from + take]);
        frame += 1;
    }
    Ok(out)
}

/// Compresses the first `len` bytes of `src` into `dst` (empty, opened
/// for writing) in the format above; returns the compressed size. Holds a
/// frame's worth of log and its compressed form, never more.
pub(super) fn write(
    src: &File,
    src_path: &Path,
    len: u64,
    dst: &File,
    dst_path: &Path,
) -> Result<u64> {
    let mut enc = zstd::bulk::Compressor::new(LEVEL).map_err(|e| io("compressing", src_path, e))?;
    let mut raw = vec![0u8; FRAME_RAW.min(len as usize)];
    let mut compressed: Vec<u8> = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    let mut sizes: Vec<u8> = Vec::new();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, dst);
    let mut at = 0u64;
    let mut written = 0u64;
    while at < len {
        let n = (len - at).min(FRAME_RAW as u64) as usize;
        read_exact_at(src, src_path, &mut raw[..n], at)?;
        compressed.clear();
        let c = enc
            .compress_to_buffer(&raw[..n], &mut compressed)
            .map_err(|e| io("compressing", src_path, e))?;
        let c32 = u32::try_from(c).map_err(|_| corrupt(dst_path, "a frame over 4 GiB"))?;
        out.write_all(&compressed[..c])
            .map_err(|e| io("writing", dst_path, e))?;
        sizes.extend_from_slice(&c32.to_le_bytes());
        written += c as u64;
        at += n as u64;
    }
    let frame_size = u32::try_from(sizes.len() as u64 + TRAILER)
        .map_err(|_| corrupt(dst_path, "a seek table over 4 GiB"))?;
    let mut tail = Vec::with_capacity(8 + sizes.len() + TRAILER as usize);
    tail.extend_from_slice(&SKIPPABLE.to_le_bytes());
    tail.extend_from_slice(&frame_size.to_le_bytes());
    tail.extend_from_slice(&sizes);
    tail.extend_from_slice(&len.to_le_bytes());
    tail.extend_from_slice(&(FRAME_RAW as u32).to_le_bytes());
    tail.extend_from_slice(&TAG.to_le_bytes());
    out.write_all(&tail)
        .map_err(|e| io("writing", dst_path, e))?;
    out.flush().map_err(|e| io("writing", dst_path, e))?;
    Ok(written + tail.len() as u64)
}
