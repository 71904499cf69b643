//! The frame decoder on any byte stream, split into reads of any sizes: it never panics, a
//! payload never exceeds the reader's maximum, the frames it returns, re-encoded, are the stream
//! up to at most one partial frame, and end of stream is `Eof` exactly at a frame boundary. A big
//! frame's head is kept apart as a codec may ask (`next_payload_with`), which changes nothing of
//! the above.
#![no_main]

use greenhub_ipc::Error;
use greenhub_ipc::frame::{self, ALLOC_CHUNK, Decoder, MAX_AHEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else { return };
    // The control byte picks the maximum payload and the read sizes.
    let max = [0u64, 1, 7, 64, 1 << 10, u32::MAX as u64][usize::from(control % 6)];
    let step = usize::from(control / 6 % 17) + 1;
    let head = usize::from(control / 102); // 0, 1 or 2 bytes of a big frame kept apart
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
            match decoder.next_payload_with(|_| head) {
                Ok(Some(payload)) => {
                    let payload = payload.contiguous();
                    assert!(payload.len() as u64 <= max, "a payload over the maximum");
                    frame::append_frame(&mut rebuilt, &payload).unwrap();
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
    if failed.is_none() {
        // The frames, re-encoded, are the stream up to the partial frame left at its end, if any.
        assert_eq!(rebuilt, stream[..rebuilt.len()], "the frames do not add up to the stream");
        let rest = stream.len() - rebuilt.len();
        assert_eq!(decoder.is_mid_frame(), rest > 0, "{rest} bytes left, mid-frame disagrees");
        let at_eof = decoder.on_eof();
        assert!(matches!(at_eof, Error::Eof) == (rest == 0), "{at_eof}");
    }
});
