//! The master↔worker frame decoder on arbitrary bytes, as a peer could
//! send them: every frame decodes or is an error, never a panic, and the
//! decoder always makes progress or asks for more.
#![no_main]

use bbc_runtime::protocol::FrameCodec;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // Whole, then cut in two (a frame split across reads).
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    for chunks in [vec![data], vec![&data[..cut], &data[cut..]]] {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        'feed: for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let before = buf.len();
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => assert!(buf.len() < before, "a frame consumed no bytes"),
                    Ok(None) => break,
                    // The connection is closed on the first error.
                    Err(_) => break 'feed,
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
});
