//! [`FrameWriter`]: sends frames without copying their data.
//!
//! The codec ([`FrameCodec`]'s `Encoder`) copies every frame into one
//! buffer before the socket sees it. Over TLS that copy is the first of
//! two: rustls copies the same bytes again into its record before sealing
//! it, and the worker's profile of a 600 MB log showed those copies as its
//! largest cost (docs/perf.md, "Where the TLS log's extra CPU goes").
//! Here a data frame of at least [`DIRECT_MIN`] bytes goes out as its
//! header (a few bytes, in a small buffer) followed by the frame's own
//! [`Bytes`], both handed to one vectored write: the kernel (plain TCP) or
//! rustls (TLS) copies the data, nothing before it does. Everything queued
//! when the writer is called leaves in the same write, so over TLS several
//! small frames share one record.
//!
//! The bytes on the wire are exactly the codec's (`docs/protocol.md`): a
//! peer cannot tell the two apart.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Encoder;

use super::{
    check_len, Frame, FrameCodec, ProtocolError, FILE_HEADER, KIND_FILE_DATA, KIND_OUTPUT,
    OUTPUT_HEADER,
};

/// Data frames with at least this many bytes are written from their own
/// buffer; smaller ones are copied beside their header (copying a few
/// hundred bytes is cheaper than another slice in every write).
pub const DIRECT_MIN: usize = 1024;

/// Slices per vectored write. Linux accepts 1,024 (`IOV_MAX`); rustls
/// seals a record from any number of them, and what does not fit goes in
/// the next write.
const MAX_SLICES: usize = 64;

/// Frames waiting to be written, in order, as pieces of bytes; see the
/// module documentation.
pub struct FrameWriter<W> {
    io: W,
    /// Pieces ready for the socket.
    pieces: VecDeque<Bytes>,
    /// Headers and small frames since the last piece; becomes a piece of
    /// its own before the next large data piece or a write.
    small: BytesMut,
    /// Bytes in `pieces` and `small`.
    queued: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W) -> FrameWriter<W> {
        FrameWriter {
            io,
            pieces: VecDeque::new(),
            small: BytesMut::new(),
            queued: 0,
        }
    }

    /// Bytes pushed and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Queues a frame; nothing is written until [`FrameWriter::flush`].
    /// Refuses (with [`ProtocolError::TooLong`]) a frame the peer would
    /// refuse, queueing nothing of it, as the codec does.
    pub fn push(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let before = self.small.len();
        let data = match frame {
            Frame::Output { id, stream, data } if self.direct(&data) => {
                let len = 1 + OUTPUT_HEADER + data.len();
                check_len(len)?;
                self.small.put_u32(len as u32);
                self.small.put_u8(KIND_OUTPUT);
                self.small.put_u64(id);
                self.small.put_u8(stream.to_byte());
                data
            }
            Frame::FileData { id, data } if self.direct(&data) => {
                let len = 1 + FILE_HEADER + data.len();
                check_len(len)?;
                self.small.put_u32(len as u32);
                self.small.put_u8(KIND_FILE_DATA);
                self.small.put_u64(id);
                data
            }
            other => {
                FrameCodec.encode(other, &mut self.small)?;
                self.queued += self.small.len() - before;
                return Ok(());
            }
        };
        self.queued += self.small.len() - before + data.len();
        self.seal_small();
        self.pieces.push_back(data);
        Ok(())
    }

    /// Whether `data` goes out from its own buffer. A stream without
    /// vectored writes would send the header alone (over TLS, a record of
    /// 14 bytes): such a stream gets the codec's copy instead.
    fn direct(&self, data: &Bytes) -> bool {
        data.len() >= DIRECT_MIN && self.io.is_write_vectored()
    }

    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.pieces.push_back(self.small.split().freeze());
        }
    }

    /// Writes everything queued, then flushes the stream.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.seal_small();
        while !self.pieces.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.pieces.len().min(MAX_SLICES);
            for (slice, piece) in slices.iter_mut().zip(&self.pieces) {
                *slice = IoSlice::new(piece);
            }
            let written = self.io.write_vectored(&slices[..count]).await?;
            if written == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
            }
            self.consume(written);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues a frame and writes everything queued.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        self.push(frame)?;
        self.flush().await
    }

    /// Drops the first `n` queued bytes (written).
    fn consume(&mut self, mut n: usize) {
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.pieces.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.pieces.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Message, Stream};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio_util::codec::Decoder;

    /// A sink that accepts at most `limit` bytes per write and counts the
    /// writes: partial writes must resume where they stopped.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        writes: usize,
        vectored: bool,
    }

    impl Trickle {
        /// A sink taking at most `limit` bytes per write.
        fn new(limit: usize, vectored: bool) -> Self {
            Trickle {
                got: Vec::new(),
                limit,
                writes: 0,
                vectored,
            }
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.limit);
            this.got.extend_from_slice(&buf[..n]);
            this.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            if !this.vectored {
                // What tokio does for a stream without vectored writes.
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                let n = first.len().min(this.limit);
                this.got.extend_from_slice(&first[..n]);
                this.writes += 1;
                return Poll::Ready(Ok(n));
            }
            let mut left = this.limit;
            for b in bufs {
                let n = b.len().min(left);
                this.got.extend_from_slice(&b[..n]);
                left -= n;
            }
            this.writes += 1;
            Poll::Ready(Ok(this.limit - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Message(Message::Ping { nonce: 1 }),
            Frame::Output {
                id: 7,
                stream: Stream::Stdout,
                data: Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>()),
            },
            Frame::Output {
                id: 7,
                stream: Stream::Stderr,
                data: Bytes::from_static(b"small\n"),
            },
            Frame::Output {
                id: 8,
                stream: Stream::Stdout,
                data: Bytes::from(vec![b'x'; DIRECT_MIN]),
            },
            Frame::FileData {
                id: 9,
                data: Bytes::from(vec![0xab; DIRECT_MIN - 1]),
            },
            Frame::FileData {
                id: 9,
                data: Bytes::from(vec![0xcd; 70_000]),
            },
            Frame::Output {
                id: 8,
                stream: Stream::Stdout,
                data: Bytes::new(),
            },
            Frame::Message(Message::FileEnd { id: 9 }),
        ]
    }

    fn codec_bytes(frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        for f in frames {
            FrameCodec.encode(f.clone(), &mut buf).unwrap();
        }
        buf
    }

    #[tokio::test]
    async fn writes_what_the_codec_writes_through_partial_writes() {
        let frames = frames();
        let expected = codec_bytes(&frames);
        for (limit, vectored) in [
            (1, true),
            (7, true),
            (4096, true),
            (1 << 20, true),
            (13, false),
        ] {
            let sink = Trickle::new(limit, vectored);
            let mut w = FrameWriter::new(sink);
            for f in frames.clone() {
                w.push(f).unwrap();
            }
            assert_eq!(w.queued(), expected.len());
            w.flush().await.unwrap();
            assert_eq!(w.queued(), 0);
            assert!(w.io.got == expected[..], "limit {limit}: bytes differ");
            let mut got = BytesMut::from(&w.io.got[..]);
            let mut decoded = Vec::new();
            while let Some(f) = FrameCodec.decode_eof(&mut got).unwrap() {
                decoded.push(f);
            }
            assert_eq!(decoded, frames);
        }
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_write() {
        let sink = Trickle::new(usize::MAX, true);
        let mut w = FrameWriter::new(sink);
        for f in frames() {
            w.push(f).unwrap();
        }
        w.flush().await.unwrap();
        assert_eq!(w.io.writes, 1);
    }

    #[tokio::test]
    async fn a_refused_frame_queues_nothing() {
        let sink = Trickle::new(usize::MAX, true);
        let mut w = FrameWriter::new(sink);
        w.push(Frame::Message(Message::Ping { nonce: 2 })).unwrap();
        let before = w.queued();
        let err = w
            .push(Frame::Output {
                id: 1,
                stream: Stream::Stdout,
                data: Bytes::from(vec![0; crate::protocol::MAX_FRAME]),
            })
            .unwrap_err();
        assert!(matches!(err, ProtocolError::TooLong { .. }), "{err}");
        assert_eq!(w.queued(), before);
        w.flush().await.unwrap();
        assert_eq!(
            w.io.got[..],
            codec_bytes(&[Frame::Message(Message::Ping { nonce: 2 })])[..]
        );
    }
}
