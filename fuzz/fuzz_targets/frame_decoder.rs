//! The frame decoder on any byte stream, split into reads of any sizes: it never panics, a
//! payload never exceeds the reader's maximum, and the frames it returns, re-encoded, are
//! exactly the bytes it consumed.
#![no_main]

use greenhub_ipc::Error;
use greenhub_ipc::frame::{self, ALLOC_CHUNK, Decoder, MAX_AHEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    // The control byte picks the maximum payload and the read sizes.
    let max = [0u64, 1, 7, 64, 1 << 10, u32::MAX as u64][usize::from(control % 6)];
    let step = usize::from(control / 6 % 17) + 1;
    let mut decoder = Decoder::new(max);
    let mut rebuilt = Vec::new();
    let mut fed = 0;
    let mut failed = None;
    'feed: while fed < stream.len() {
        let n = step.min(stream.len() - fed);
        let room = decoder.read_buf(n);
        room[..n].copy_from_slice(&stream[fed..fed + n]);
        decoder.filled(n);
        fed += n;
        loop {
            match decoder.next_payload() {
                Ok(Some(payload)) => {
                    let payload = payload.as_slice();
                    assert!(payload.len() as u64 <= max, "a payload over the maximum");
                    frame::append_frame(&mut rebuilt, payload).unwrap();
                }
                Ok(None) => break,
                Err(err) => {
                    assert!(matches!(err, Error::TooLarge { max: m, .. } if m == max), "{err}");
                    failed = Some(err);
                    break 'feed;
                }
            }
        }
        // Bounded allocation: never more than MAX_AHEAD reserved ahead of what arrived (give or
        // take a chunk and the spare room of the read just asked for), whatever a header says.
        let ahead = decoder.capacity().saturating_sub(fed);
        assert!(ahead <= MAX_AHEAD + ALLOC_CHUNK + n, "reserved {ahead} bytes ahead");
    }
    let consumed = fed - decoder.buffered_len();
    if failed.is_none() {
        assert_eq!(rebuilt, stream[..consumed], "the frames do not add up to the stream");
        let _ = decoder.on_eof(); // Eof or Truncated, never a panic
    }
});
