//! Length-prefix framing over byte buffers: gipc's wire format, with no I/O in sight.
//!
//! Guaranteed: frames come out whole, in order, however the bytes were split by the reads; a header
//! announcing more than the maximum is refused before anything is allocated for it; the decoder
//! never reserves more ahead of the bytes that actually arrived than [`ALLOC_CHUNK`] or the
//! arrived bytes themselves, whichever is larger, and never more than [`MAX_AHEAD`] (see
//! [`Decoder::read_buf`]); a partial frame stays buffered across calls. Not guaranteed: when the buffer is compacted or released, or
//! how much spare room [`Decoder::read_buf`] hands out beyond what was asked.
//!
//! # The wire format
//!
//! ```text
//!  offset 0          4                              4 + len
//!         +----------+------------------------------+
//!         |   len    |  payload: len bytes          |  next frame ...
//!         +----------+------------------------------+
//!          u32, big-endian, unsigned
//! ```
//!
//! A zero-length payload is a valid message. This is gipc's framing, so a `raw_pipe` end can talk to
//! a gipc pipe opened with `encoder=None, decoder=None`.
//!
//! # Writing
//!
//! [`append_frame`] copies a ready payload behind its header. A codec encodes in place instead:
//! [`begin_frame`] reserves the header, the codec appends the payload, [`finish_frame`] patches the
//! length in ([`append_frame_with`] does the three steps). Either way the payload is written once.
//!
//! # Reading
//!
//! The reader does large reads (up to the pipe's capacity) straight into the [`Decoder`]'s buffer
//! and splits frames in user space, so many small frames cost one system call, and a frame that
//! trickles in one byte at a time works too:
//!
//! ```text
//!  0              start                       end                buf.len()
//!  +--------------+---------------------------+------------------+
//!  | consumed     | buffered: whole frames    | spare room that  |
//!  | (stale)      | and at most one partial   | read_buf() hands |
//!  |              | frame at the end          | out to the read  |
//!  +--------------+---------------------------+------------------+
//! ```
//!
//! [`Decoder::next_frame`] returns each payload as a slice of that buffer (no copy; codecs decode
//! from a slice) and moves `start` past it. When everything is consumed, `start` and `end` go back
//! to 0 for free. Only when the spare room is too small for the next read are the buffered bytes
//! (one partial frame) moved to the front: at most once per read, never once per frame.

use std::borrow::Cow;
use std::fmt;

use crate::Error;

/// Length of a frame header: a big-endian `u32` holding the payload length.
pub const HEADER_LEN: usize = 4;

/// The largest payload the wire format can carry: the header is a `u32`.
pub const MAX_PAYLOAD_LEN: u64 = u32::MAX as u64;

/// The reader's default limit on a payload, in bytes: 2^31 - 1, gipc's limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = (1 << 31) - 1;

/// The most the decoder reserves ahead of the bytes that actually arrived while few have (1 MiB).
///
/// A frame larger than this grows the buffer as its bytes come in: by at most this much, or by as
/// much as has already arrived once that is more, so the buffer grows geometrically (a 100 MB
/// frame costs a few reallocations, not a hundred) while a lying header ("2 GiB follows") costs
/// the liar the bytes it sends, not us the bytes it announces: to make us hold N + min(N, 64 MiB)
/// + 1 MiB, the peer must send N (see [`MAX_AHEAD`]).
pub const ALLOC_CHUNK: usize = 1 << 20;

/// The most the decoder ever reserves ahead of the bytes that arrived (64 MiB), however many
/// have: growth is geometric up to this step, then linear in steps of this size.
pub const MAX_AHEAD: usize = 64 << 20;

/// A frame at least this long that is not yet whole is received *detached*: straight into a
/// buffer of its own that becomes the message ([`Decoder::next_payload`] hands it over).
pub const DETACH_AT: usize = ALLOC_CHUNK;

/// The most bytes a codec may keep apart at the front of a payload ([`Parts`] on the way out,
/// [`Payload::Split`] on the way in): its own prefix, such as postcard's length of a byte string
/// (at most 10 bytes).
pub const MAX_HEAD: usize = 16;

/// An idle decoder (nothing buffered) keeps a buffer up to this size; a bigger one, grown by a big
/// frame, is released before the next read.
const IDLE_KEEP: usize = 2 * ALLOC_CHUNK;

/// The header for a payload of `len` bytes.
///
/// Returns [`Error::TooLarge`] (with `max` = [`MAX_PAYLOAD_LEN`]) when `len` does not fit in a `u32`.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], Error> {
    u32::try_from(len).map(u32::to_be_bytes).map_err(|_| Error::TooLarge {
        len: len as u64, // usize is at most 64 bits on every platform Rust supports
        max: MAX_PAYLOAD_LEN,
    })
}

/// Appends one frame, header then `payload`, to `out`.
///
/// On error `out` is left unchanged.
pub fn append_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), Error> {
    let header = encode_header(payload.len())?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends one frame whose payload `write` appends to `out` (e.g. a codec's `encode`).
///
/// `write` must only append. On error (from `write`, or a payload over [`MAX_PAYLOAD_LEN`]) `out`
/// is truncated back to its length before the call, so it always holds whole frames.
pub fn append_frame_with(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = begin_frame(out);
    if let Err(err) = write(out) {
        out.truncate(start);
        return Err(err);
    }
    finish_frame(out, start)
}

/// Starts a frame in `out`: appends a placeholder header and returns where the frame starts.
///
/// Append the payload to `out`, then call [`finish_frame`] with the returned position.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    start
}

/// Ends the frame that [`begin_frame`] started at `start`: everything appended since is its payload.
///
/// On [`Error::TooLarge`] (a payload over [`MAX_PAYLOAD_LEN`]) the frame is removed again: `out` is
/// truncated to `start`.
///
/// # Panics
///
/// If `out` is shorter than `start` + [`HEADER_LEN`], i.e. `start` did not come from
/// [`begin_frame`] on this buffer or the payload writer removed bytes.
pub fn finish_frame(out: &mut Vec<u8>, start: usize) -> Result<(), Error> {
    let payload_len = out.len().checked_sub(start + HEADER_LEN).expect(
        "frame::finish_frame: `start` must be the value begin_frame returned for this buffer, \
         and the payload may only be appended",
    );
    match encode_header(payload_len) {
        Ok(header) => {
            out[start..start + HEADER_LEN].copy_from_slice(&header);
            Ok(())
        }
        Err(err) => {
            out.truncate(start);
            Err(err)
        }
    }
}

/// A payload to write as two pieces: a short head the codec made (at most [`MAX_HEAD`] bytes,
/// such as a length prefix) and a body borrowed from the value, which the writer sends from
/// where it lies, without copying it into a frame first (see
/// [`Codec::as_payload`](crate::Codec::as_payload)).
///
/// ```
/// use greenhub_ipc::frame::Parts;
/// let body = vec![7u8; 300];
/// let parts = Parts::new(&[0xac, 0x02], &body);
/// assert_eq!((parts.head(), parts.body().len(), parts.len()), (&[0xac, 0x02][..], 300, 302));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    head: [u8; MAX_HEAD],
    head_len: usize,
    body: &'a [u8],
}

impl<'a> Parts<'a> {
    /// `head`, then `body`.
    ///
    /// # Panics
    ///
    /// If `head` is longer than [`MAX_HEAD`].
    #[track_caller]
    pub fn new(head: &[u8], body: &'a [u8]) -> Self {
        assert!(
            head.len() <= MAX_HEAD,
            "frame::Parts::new: a head of {} bytes; a codec may put at most MAX_HEAD ({MAX_HEAD}) \
             bytes before the body",
            head.len()
        );
        let mut parts = Parts { head: [0; MAX_HEAD], head_len: head.len(), body };
        parts.head[..head.len()].copy_from_slice(head);
        parts
    }

    /// A payload that is `body` alone (what [`Raw`](crate::Raw) sends).
    pub fn body_only(body: &'a [u8]) -> Self {
        Parts { head: [0; MAX_HEAD], head_len: 0, body }
    }

    /// The codec's bytes before the body.
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// The bytes borrowed from the value.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The payload's length: head and body.
    pub fn len(&self) -> usize {
        self.head_len + self.body.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A payload from [`Decoder::next_payload`]: borrowed from the decoder's buffer (small frames,
/// several per read), or owned (a big frame that arrived in a buffer of its own), whole or split
/// after the head its codec asked to keep apart ([`Decoder::next_payload_with`]).
#[derive(Debug)]
pub enum Payload<'a> {
    /// A slice of the decoder's buffer, valid until the next call on the decoder.
    Borrowed(&'a [u8]),
    /// A buffer that holds exactly this payload.
    Owned(Vec<u8>),
    /// A big payload as its first bytes, kept apart (at most [`MAX_HEAD`]; a codec's prefix),
    /// and a buffer holding exactly the rest: a value that *is* the rest keeps the buffer.
    Split {
        /// The payload's first bytes.
        head: &'a [u8],
        /// The rest of the payload.
        body: Vec<u8>,
    },
}

impl Payload<'_> {
    /// The payload's bytes in one piece: borrowed, except for a split payload, which is copied.
    pub fn contiguous(&self) -> Cow<'_, [u8]> {
        match self {
            Payload::Borrowed(bytes) => Cow::Borrowed(bytes),
            Payload::Owned(bytes) => Cow::Borrowed(bytes),
            Payload::Split { head, body } => Cow::Owned([head, &body[..]].concat()),
        }
    }

    /// The payload as a `Vec`: free for an owned one, a copy for a borrowed or split one.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Borrowed(bytes) => bytes.to_vec(),
            Payload::Owned(bytes) => bytes,
            Payload::Split { head, body } => [head, &body[..]].concat(),
        }
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Borrowed(bytes) => bytes.len(),
            Payload::Owned(bytes) => bytes.len(),
            Payload::Split { head, body } => head.len() + body.len(),
        }
    }

    /// True for an empty payload (a message of `()` under postcard).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a byte stream into frame payloads, incrementally.
///
/// Feed it with [`read_buf`](Self::read_buf) + [`filled`](Self::filled) (or [`feed`](Self::feed)),
/// then take payloads with [`next_frame`](Self::next_frame) until it returns `None`. Whatever is
/// left (a partial frame) stays buffered for the next call: a read cut short by a timeout or a
/// cancellation loses nothing. At end of stream, [`on_eof`](Self::on_eof) says whether the peer
/// stopped at a frame boundary.
///
/// # Example
///
/// A reader loop over anything that implements `Read` (here a byte slice):
///
/// ```
/// use std::io::Read;
/// use greenhub_ipc::{Error, frame::{self, Decoder, DEFAULT_MAX_MESSAGE_SIZE}};
///
/// let mut wire = Vec::new();
/// frame::append_frame(&mut wire, b"hello")?;
/// frame::append_frame(&mut wire, b"")?;
///
/// let mut source: &[u8] = &wire;
/// let mut decoder = Decoder::new(DEFAULT_MAX_MESSAGE_SIZE);
/// let mut payloads = Vec::new();
/// let end = loop {
///     while let Some(payload) = decoder.next_frame()? {
///         payloads.push(payload.to_vec());
///     }
///     let n = source.read(decoder.read_buf(64 * 1024))?;
///     if n == 0 {
///         break decoder.on_eof();
///     }
///     decoder.filled(n);
/// };
/// assert_eq!(payloads, [b"hello".to_vec(), Vec::new()]);
/// assert!(matches!(end, Error::Eof));
/// # Ok::<(), Error>(())
/// ```
pub struct Decoder {
    /// Every byte up to `len()` is initialised, so reads go into it without `unsafe`: `read_buf`
    /// grows it zero-filled, while a detached frame grows it without zero-filling, by appending
    /// into its spare capacity (`detached_spare`, then `appended`).
    buf: Vec<u8>,
    /// First buffered byte not yet returned by `next_frame`.
    start: usize,
    /// One past the last byte a read put in. Invariant: `start <= end <= buf.len()`, and
    /// `start == end` implies both are 0.
    end: usize,
    /// Payloads longer than this are refused with `Error::TooLarge`.
    max: u64,
    /// `Some(len)` while a big frame arrives *detached*: its header (and `head`) was consumed,
    /// and `buf` holds only the rest of its payload, `len` bytes, from offset 0, so the finished
    /// buffer is the message itself.
    detached: Option<usize>,
    /// The first `head_len` payload bytes of the detached or ready frame, kept apart at the
    /// codec's request (`next_payload_with`); `head_len` is 0 otherwise.
    head: [u8; MAX_HEAD],
    head_len: usize,
    /// A detached frame whose last byte arrived: the next payload to return.
    ready: Option<Vec<u8>>,
    /// `ready` was lent out by `next_frame`: drop it at the next call.
    lent: bool,
}

impl Decoder {
    /// A decoder refusing payloads longer than `max` bytes. Allocates nothing yet.
    pub fn new(max: u64) -> Self {
        Decoder {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max,
            detached: None,
            head: [0; MAX_HEAD],
            head_len: 0,
            ready: None,
            lent: false,
        }
    }

    /// Changes the payload limit. Takes effect at the next [`next_frame`](Self::next_frame), also
    /// for a frame already refused: raising the limit lets the stream continue.
    pub fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// The payload limit, in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Spare room to read up to `n` bytes into; report what the read wrote with
    /// [`filled`](Self::filled).
    ///
    /// The slice has at least `n.clamp(1, ALLOC_CHUNK)` bytes, maybe more (while a big frame
    /// arrives detached, at most the rest of that frame). To make room, the
    /// decoder first moves a buffered partial frame to the front, and only then grows, past the
    /// buffered bytes, by the larger of the read size and the rest of the current frame as its
    /// header announces it, but never by more than the larger of [`ALLOC_CHUNK`] and the bytes
    /// already buffered, nor by more than [`MAX_AHEAD`].
    pub fn read_buf(&mut self, n: usize) -> &mut [u8] {
        self.make_room(n.clamp(1, ALLOC_CHUNK));
        let stop = self.read_stop();
        &mut self.buf[self.end..stop]
    }

    /// Where the slice `read_buf` hands out ends. A detached frame's buffer ends where its
    /// payload ends: the next frame's bytes must not land in the message. (It is never whole
    /// here: `filled` hands a whole one over.)
    fn read_stop(&self) -> usize {
        self.detached.map_or(self.buf.len(), |len| len.min(self.buf.len()))
    }

    /// Records that a read wrote `k` bytes at the start of the slice [`read_buf`](Self::read_buf)
    /// returned.
    ///
    /// # Panics
    ///
    /// If `k` is larger than that slice.
    pub fn filled(&mut self, k: usize) {
        // The slice's end, not the buffer's: a detached frame's slice stops at its payload's
        // end (a probe's `filled` past it was taken, and the frame could never complete).
        let spare = self.read_stop().saturating_sub(self.end);
        assert!(
            k <= spare,
            "Decoder::filled({k}) but read_buf handed out only {spare} bytes: \
             pass the count the read into read_buf's slice returned"
        );
        self.end += k;
        self.hand_over_if_whole();
    }

    /// While a big frame arrives detached: its buffer, holding exactly the payload bytes so far,
    /// with capacity reserved by the same rule as [`read_buf`](Self::read_buf), and how many
    /// bytes may be appended now. For a reader that can read into uninitialised capacity (std's
    /// `Read::read_to_end` through `Read::take(limit)`), which saves zero-filling the buffer
    /// first: append at most that many bytes, then call [`appended`](Self::appended). `None`
    /// when no frame is detached (use `read_buf` then).
    pub fn detached_spare(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let len = self.detached?;
        self.buf.truncate(self.end); // zeros a `read_buf` handed out but no read filled
        let missing = len - self.end;
        let room = missing.min(ALLOC_CHUNK.max(self.end).min(MAX_AHEAD));
        if self.buf.capacity() - self.end < room {
            self.buf.reserve_exact(room);
        }
        let limit = missing.min(self.buf.capacity() - self.end);
        Some((&mut self.buf, limit))
    }

    /// Records what was appended to the buffer [`detached_spare`](Self::detached_spare) lent.
    ///
    /// # Panics
    /// If more was appended than `detached_spare` allowed (past the frame's end).
    pub fn appended(&mut self) {
        let Some(len) = self.detached else { return };
        assert!(
            self.buf.len() <= len,
            "Decoder::appended: {} bytes in a detached frame of {len}: append at most the limit \
             detached_spare returned",
            self.buf.len()
        );
        self.end = self.buf.len();
        self.hand_over_if_whole();
    }

    /// A detached frame that is whole becomes the next payload (its buffer is the message), and
    /// the stream goes on in a fresh buffer.
    fn hand_over_if_whole(&mut self) {
        if self.detached == Some(self.end) {
            self.detached = None;
            self.ready = Some(std::mem::take(&mut self.buf));
            self.end = 0;
        }
    }

    /// Copies `bytes` into the buffer, as if a read had delivered them.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.read_buf(bytes.len());
            let k = spare.len().min(bytes.len());
            spare[..k].copy_from_slice(&bytes[..k]);
            self.filled(k);
            bytes = &bytes[k..];
        }
    }

    /// The next whole payload, if one is buffered; `Ok(None)` means "read more".
    ///
    /// Returns [`Error::TooLarge`] as soon as a complete header announces more than
    /// [`max`](Self::max), before anything is allocated for the payload. The refused frame stays
    /// buffered, so every later call returns the same error until the limit is raised.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, Error> {
        self.forget_lent();
        self.check_detached_limit()?;
        if let Some(ready) = &mut self.ready {
            // Split by `next_payload_with` but asked for in one piece: join it (one copy).
            let head = std::mem::take(&mut self.head_len);
            ready.splice(..0, self.head[..head].iter().copied());
            self.lent = true;
            return Ok(self.ready.as_deref());
        }
        self.take_frame(|_| 0)
    }

    /// The first buffered frame if it is whole; otherwise `None`, and a big frame is detached
    /// (its first `head_len(len)` payload bytes kept apart once they are in).
    fn take_frame(
        &mut self,
        head_len: impl FnOnce(usize) -> usize,
    ) -> Result<Option<&[u8]>, Error> {
        let Some(len) = self.announced_len() else {
            return Ok(None);
        };
        if u64::from(len) > self.max {
            return Err(Error::TooLarge { len: len.into(), max: self.max });
        }
        let len = len as usize; // a u32 fits in usize on every platform std supports
        let arrived = self.buffered_len() - HEADER_LEN;
        if arrived < len {
            if len >= DETACH_AT {
                let head = head_len(len).min(MAX_HEAD); // DETACH_AT > MAX_HEAD: head < len
                if arrived >= head {
                    self.detach(len, head);
                }
            }
            return Ok(None);
        }
        let payload = self.start + HEADER_LEN..self.start + HEADER_LEN + len;
        self.start = payload.end;
        if self.start == self.end {
            // Everything is consumed: rewind for free. The bytes stay in place for the slice.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[payload]))
    }

    /// Like [`next_frame`](Self::next_frame), but a big frame received detached comes out
    /// owned: its buffer becomes the message, with no copy (see [`Payload`]).
    pub fn next_payload(&mut self) -> Result<Option<Payload<'_>>, Error> {
        self.next_payload_with(|_| 0)
    }

    /// Like [`next_payload`](Self::next_payload), keeping the first `head_len(len)` bytes (at
    /// most [`MAX_HEAD`]) of a big frame of `len` payload bytes apart as it arrives, so that its
    /// buffer holds exactly the rest and comes out as [`Payload::Split`]: a codec whose value is
    /// the payload minus a prefix (postcard's `Vec<u8>`: a length, then the bytes) keeps the
    /// buffer as the value. `head_len` is asked once per big frame, when its header is in; 0
    /// means [`Payload::Owned`], as `next_payload` gives.
    pub fn next_payload_with(
        &mut self,
        head_len: impl FnOnce(usize) -> usize,
    ) -> Result<Option<Payload<'_>>, Error> {
        self.forget_lent();
        self.check_detached_limit()?;
        if let Some(body) = self.ready.take() {
            let head = std::mem::take(&mut self.head_len);
            return Ok(Some(match head {
                0 => Payload::Owned(body),
                _ => Payload::Split { head: &self.head[..head], body },
            }));
        }
        Ok(self.take_frame(head_len)?.map(Payload::Borrowed))
    }

    /// A big frame's header was consumed when it was detached, so its length is checked here
    /// against the limit as it is now (it may have been lowered since the frame began).
    fn check_detached_limit(&self) -> Result<(), Error> {
        let rest = self.detached.or_else(|| self.ready.as_ref().map(Vec::len));
        match rest.map(|rest| rest + self.head_len) {
            Some(len) if len as u64 > self.max => {
                Err(Error::TooLarge { len: len as u64, max: self.max })
            }
            _ => Ok(()),
        }
    }

    fn forget_lent(&mut self) {
        if self.lent {
            self.lent = false;
            self.ready = None;
        }
    }

    /// Consumes the header of the big frame at `start` and its first `head` payload bytes (kept
    /// in `self.head`), and moves the rest of its payload so far to the front: from now on
    /// `buf[..end]` holds the rest of the payload alone.
    fn detach(&mut self, len: usize, head: usize) {
        self.start += HEADER_LEN;
        self.head[..head].copy_from_slice(&self.buf[self.start..self.start + head]);
        self.head_len = head;
        self.start += head;
        self.compact();
        self.detached = Some(len - head);
    }

    /// How many bytes are buffered and not yet returned as payloads (headers included).
    pub fn buffered_len(&self) -> usize {
        self.end - self.start
    }

    /// How many bytes of the stream it holds that no payload has returned yet: those buffered
    /// (for a frame arriving detached, its payload so far), the head kept apart from a detached
    /// or ready frame, and a ready frame not yet lent out.
    pub(crate) fn held_len(&self) -> usize {
        let ready = self.ready.as_ref().filter(|_| !self.lent).map_or(0, Vec::len);
        let head = if self.lent { 0 } else { self.head_len };
        self.buffered_len() + head + ready
    }

    /// True when any byte of a frame is buffered, including a complete header whose payload has
    /// not started. Meaningful once [`next_frame`](Self::next_frame) has returned `None`.
    pub fn is_mid_frame(&self) -> bool {
        self.buffered_len() > 0 || self.detached.is_some()
    }

    /// The error for an end of stream now: [`Error::Eof`] at a frame boundary, else
    /// [`Error::Truncated`]. Call it once [`next_frame`](Self::next_frame) has returned `None`.
    pub fn on_eof(&self) -> Error {
        if self.is_mid_frame() { Error::Truncated } else { Error::Eof }
    }

    /// The buffer's allocated capacity, in bytes: what this decoder holds in memory.
    pub fn capacity(&self) -> usize {
        self.buf.capacity() + self.ready.as_ref().map_or(0, Vec::capacity)
    }

    /// The bytes between `start` and `end`.
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The payload length in the first buffered header, once all of its bytes are in.
    fn announced_len(&self) -> Option<u32> {
        if self.detached.is_some() {
            return None; // the header was consumed; `detached` holds the length
        }
        let header = self.buffered().get(..HEADER_LEN)?;
        Some(u32::from_be_bytes(header.try_into().ok()?))
    }

    /// Bytes still to come before the first buffered frame is whole, as far as is known; 0 for a
    /// frame over the limit, which will never be read.
    fn missing(&self) -> usize {
        if let Some(len) = self.detached {
            return len - self.end;
        }
        match self.announced_len() {
            None => HEADER_LEN - self.buffered_len(),
            Some(len) if u64::from(len) > self.max => 0,
            Some(len) => {
                (len as usize).saturating_add(HEADER_LEN).saturating_sub(self.buffered_len())
            }
        }
    }

    /// Ensures at least `n` (1..=ALLOC_CHUNK) bytes of spare room after `end`.
    fn make_room(&mut self, n: usize) {
        if self.end == 0 && self.detached.is_none() && self.buf.len() > IDLE_KEEP {
            self.buf = Vec::new(); // a big frame is gone: give its memory back
        }
        let n = self.detached.map_or(n, |len| n.min(len - self.end));
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.compact();
            if self.buf.len() - self.end >= n {
                return;
            }
        }
        // Room for the read, or for the rest of the frame, but never further ahead of what
        // arrived than what arrived (or one chunk), nor than MAX_AHEAD: a liar pays for what we
        // allocate, and a large honest frame still grows geometrically (few reallocations, no
        // quadratic copying).
        let paid_for = ALLOC_CHUNK.max(self.buffered_len()).min(MAX_AHEAD);
        let ahead = n.max(self.missing().min(paid_for));
        self.grow_to(self.end + ahead);
    }

    /// Moves the buffered bytes (a partial frame) to the front of the buffer.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Grows the buffer to exactly `len` initialised bytes (`reserve` would double the capacity).
    fn grow_to(&mut self, len: usize) {
        self.buf.reserve_exact(len - self.buf.len());
        self.buf.resize(len, 0);
    }
}

impl Default for Decoder {
    /// A decoder with gipc's limit, [`DEFAULT_MAX_MESSAGE_SIZE`].
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl fmt::Debug for Decoder {
    /// Shows the state, not the bytes: the buffer may hold megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("max", &self.max)
            .field("buffered", &self.buffered_len())
            .field("announced_len", &self.announced_len())
            .field("detached", &self.detached)
            .field("head_len", &self.head_len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The wire bytes of `payloads`, framed one after the other.
    fn wire(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            append_frame(&mut out, payload).unwrap();
        }
        out
    }

    /// Every payload `next_frame` can return now, copied out.
    fn drain(decoder: &mut Decoder) -> Result<Vec<Vec<u8>>, Error> {
        let mut payloads = Vec::new();
        while let Some(payload) = decoder.next_frame()? {
            payloads.push(payload.to_vec());
        }
        Ok(payloads)
    }

    /// Feeds `bytes` like a reader asking for `read_size` bytes per read, draining after each read.
    fn read_in_steps(decoder: &mut Decoder, bytes: &[u8], read_size: usize) -> Vec<Vec<u8>> {
        let mut payloads = Vec::new();
        for piece in bytes.chunks(read_size) {
            let spare = decoder.read_buf(read_size);
            spare[..piece.len()].copy_from_slice(piece);
            decoder.filled(piece.len());
            payloads.extend(drain(decoder).unwrap());
        }
        payloads
    }

    /// A header announcing `len` bytes.
    fn header(len: u32) -> [u8; HEADER_LEN] {
        len.to_be_bytes()
    }

    #[test]
    fn header_is_a_big_endian_u32() {
        assert_eq!(encode_header(0x0102_0304).unwrap(), [1, 2, 3, 4]);
        assert_eq!(encode_header(0).unwrap(), [0; 4]);
        assert_eq!(encode_header(u32::MAX as usize).unwrap(), [0xff; 4]);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn header_refuses_a_payload_over_u32_max() {
        let err = encode_header(u32::MAX as usize + 1).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { len, max } if len == 1 << 32 && max == MAX_PAYLOAD_LEN)
        );
    }

    #[test]
    fn append_frame_writes_header_then_payload_after_existing_bytes() {
        let mut out = vec![9];
        append_frame(&mut out, b"abc").unwrap();
        assert_eq!(out, [9, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn begin_and_finish_patch_the_length_in_place() {
        let mut out = vec![7, 7];
        let start = begin_frame(&mut out);
        out.extend_from_slice(b"hello");
        finish_frame(&mut out, start).unwrap();
        assert_eq!(out, [7, 7, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    }

    #[test]
    fn append_frame_with_removes_the_frame_when_the_writer_fails() {
        let mut out = wire(&[b"first".to_vec()]);
        let before = out.clone();
        let err = append_frame_with(&mut out, |out| {
            out.extend_from_slice(b"half a payl");
            Err(Error::Codec("cannot encode".into()))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Codec(_)));
        assert_eq!(out, before);
    }

    /// What a decoder holds of the stream is what arrived and no payload returned yet, frames
    /// arriving detached included (`Command::spawn` refuses a passed reader holding any).
    #[test]
    fn held_len_counts_what_arrived_and_was_not_returned() {
        let mut decoder = Decoder::default();
        assert_eq!(decoder.held_len(), 0);
        let mut wire = Vec::new();
        append_frame(&mut wire, b"first").unwrap();
        append_frame(&mut wire, b"second").unwrap();
        decoder.feed(&wire);
        assert_eq!(decoder.next_frame().unwrap(), Some(&b"first"[..]));
        assert_eq!(decoder.held_len(), HEADER_LEN + 6, "the second frame, read ahead");
        assert_eq!(decoder.next_frame().unwrap(), Some(&b"second"[..]));
        assert_eq!(decoder.held_len(), 0);
        // A big frame, half arrived: it is received detached.
        let big = vec![7u8; DETACH_AT * 2];
        let mut wire = Vec::new();
        append_frame(&mut wire, &big).unwrap();
        decoder.feed(&wire[..HEADER_LEN + DETACH_AT]);
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert_eq!(decoder.held_len(), DETACH_AT, "the payload so far, not its header");
        decoder.feed(&wire[HEADER_LEN + DETACH_AT..]);
        assert_eq!(decoder.held_len(), DETACH_AT * 2, "the whole payload, not yet returned");
        assert_eq!(decoder.next_frame().unwrap().map(<[u8]>::len), Some(DETACH_AT * 2));
        assert_eq!(decoder.held_len(), 0);
    }

    /// Regression: while a big frame arrived detached, `filled` checked `k` against the whole
    /// buffer rather than the slice `read_buf` handed out (which stops at the frame's end), so
    /// a count past the slice was taken and the frame could never complete.
    #[test]
    #[should_panic(expected = "read_buf handed out only")]
    fn filled_past_a_detached_frames_slice_panics_naming_the_rule() {
        let mut wire = Vec::new();
        for _ in 0..20_000 {
            append_frame(&mut wire, &[7u8; 96]).unwrap();
        }
        wire.extend_from_slice(&encode_header(DETACH_AT).unwrap());
        wire.extend_from_slice(&[1u8; 10]);
        let mut decoder = Decoder::default();
        decoder.feed(&wire);
        while decoder.next_frame().unwrap().is_some() {}
        let handed_out = decoder.read_buf(1).len();
        decoder.filled(handed_out + 1000);
    }

    #[test]
    #[should_panic(expected = "begin_frame")]
    fn finish_frame_with_a_foreign_start_panics_naming_the_rule() {
        let mut out = vec![0; 2];
        let _ = finish_frame(&mut out, 1);
    }

    #[test]
    fn empty_payload_is_a_valid_message() {
        let mut decoder = Decoder::default();
        decoder.feed(&wire(&[Vec::new(), Vec::new()]));
        assert_eq!(drain(&mut decoder).unwrap(), [Vec::<u8>::new(), Vec::new()]);
        assert!(matches!(decoder.on_eof(), Error::Eof));
    }

    #[test]
    fn a_frame_arriving_one_byte_at_a_time() {
        let bytes = wire(&[b"slow".to_vec(), b"drip".to_vec()]);
        let mut decoder = Decoder::default();
        let payloads = read_in_steps(&mut decoder, &bytes, 1);
        assert_eq!(payloads, [b"slow".to_vec(), b"drip".to_vec()]);
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn many_frames_in_one_read_need_one_buffer_and_no_copy() {
        let payloads: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let bytes = wire(&payloads);
        let mut decoder = Decoder::default();
        let spare = decoder.read_buf(64 * 1024);
        spare[..bytes.len()].copy_from_slice(&bytes);
        decoder.filled(bytes.len());
        let capacity = decoder.capacity();
        assert_eq!(drain(&mut decoder).unwrap(), payloads);
        assert_eq!(decoder.capacity(), capacity);
        assert_eq!((decoder.start, decoder.end), (0, 0), "drained buffer rewinds");
    }

    #[test]
    fn a_partial_frame_stays_buffered_between_calls() {
        let bytes = wire(&[b"whole".to_vec(), b"partial".to_vec()]);
        let mut decoder = Decoder::default();
        decoder.feed(&bytes[..bytes.len() - 3]);
        assert_eq!(drain(&mut decoder).unwrap(), [b"whole".to_vec()]);
        // A get that timed out here returns; the next one goes on where it stopped.
        assert!(decoder.is_mid_frame());
        decoder.feed(&bytes[bytes.len() - 3..]);
        assert_eq!(drain(&mut decoder).unwrap(), [b"partial".to_vec()]);
    }

    #[test]
    fn a_payload_of_exactly_max_is_accepted() {
        let mut decoder = Decoder::new(5);
        decoder.feed(&wire(&[b"12345".to_vec()]));
        assert_eq!(drain(&mut decoder).unwrap(), [b"12345".to_vec()]);
    }

    #[test]
    fn max_plus_one_is_refused_as_soon_as_the_header_is_in() {
        let mut decoder = Decoder::new(5);
        decoder.feed(&header(6)[..3]);
        assert!(decoder.next_frame().unwrap().is_none());
        decoder.feed(&header(6)[3..]);
        let err = decoder.next_frame().unwrap_err();
        assert!(matches!(err, Error::TooLarge { len: 6, max: 5 }));
    }

    #[test]
    fn a_refused_frame_is_refused_again_until_the_limit_is_raised() {
        let mut decoder = Decoder::new(5);
        decoder.feed(&wire(&[b"123456".to_vec()]));
        assert!(decoder.next_frame().is_err());
        assert!(decoder.next_frame().is_err());
        decoder.set_max(6);
        assert_eq!(drain(&mut decoder).unwrap(), [b"123456".to_vec()]);
    }

    #[test]
    fn a_lying_2_gib_header_is_refused_with_the_default_limit() {
        let mut decoder = Decoder::default();
        decoder.feed(&header(1 << 31));
        let err = decoder.next_frame().unwrap_err();
        assert!(matches!(
            err,
            Error::TooLarge { len, max } if len == 1 << 31 && max == DEFAULT_MAX_MESSAGE_SIZE
        ));
        assert!(decoder.capacity() <= HEADER_LEN + ALLOC_CHUNK);
    }

    #[test]
    fn a_lying_2_gib_header_under_a_raised_limit_costs_at_most_a_chunk() {
        let mut decoder = Decoder::new(u32::MAX.into());
        let mut bytes = header(1 << 31).to_vec();
        bytes.extend_from_slice(&[0xaa; 10]);
        decoder.feed(&bytes);
        // The pipe keeps offering big reads that find nothing more to read.
        for read_size in [64 * 1024, ALLOC_CHUNK, usize::MAX, 1] {
            assert!(decoder.read_buf(read_size).len() >= read_size.clamp(1, ALLOC_CHUNK));
            assert!(decoder.next_frame().unwrap().is_none());
            assert!(
                decoder.capacity() <= allocation_bound(bytes.len()),
                "capacity {} after {} bytes",
                decoder.capacity(),
                bytes.len()
            );
        }
        assert!(matches!(decoder.on_eof(), Error::Truncated));
    }

    #[test]
    fn a_big_frame_arrives_detached_and_comes_out_owned_without_a_copy() {
        let big: Vec<u8> = (0..DETACH_AT + 777).map(|i| (i % 251) as u8).collect();
        let bytes = wire(&[big.clone(), b"next".to_vec()]);
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(100_000) {
            decoder.feed(piece);
            while let Some(payload) = decoder.next_payload().unwrap() {
                out.push((matches!(payload, Payload::Owned(_)), payload.into_vec()));
            }
        }
        assert_eq!(out, [(true, big), (false, b"next".to_vec())], "the big frame is handed over");
        assert!(matches!(decoder.on_eof(), Error::Eof));
    }

    #[test]
    fn a_detached_frame_can_be_appended_to_without_zero_filling() {
        let big: Vec<u8> = (0..3 * DETACH_AT + 5).map(|i| (i % 253) as u8).collect();
        let wire = wire(&[big.clone(), b"tail".to_vec()]);
        let mut decoder = Decoder::default();
        decoder.feed(&wire[..100]); // the header and a little payload
        assert!(decoder.next_frame().unwrap().is_none()); // detaches
        let mut sent = 100;
        while let Some((payload, limit)) = decoder.detached_spare() {
            assert!(limit > 0);
            let take = limit.min(300_000); // reads come in pieces
            payload.extend_from_slice(&wire[sent..sent + take]);
            sent += take;
            decoder.appended();
            assert!(decoder.capacity() <= allocation_bound(sent), "bounded as read_buf is");
        }
        decoder.feed(&wire[sent..]);
        let got: Vec<Vec<u8>> =
            std::iter::from_fn(|| decoder.next_payload().unwrap().map(Payload::into_vec)).collect();
        assert_eq!(got, [big, b"tail".to_vec()]);
    }

    #[test]
    fn a_detached_frame_cut_short_is_truncated_even_before_its_first_payload_byte() {
        let header = encode_header(DETACH_AT + 1).unwrap();
        let mut decoder = Decoder::default();
        decoder.feed(&header);
        assert!(decoder.next_frame().unwrap().is_none()); // detaches, zero payload bytes so far
        assert!(matches!(decoder.on_eof(), Error::Truncated));
        decoder.feed(&[9; 10]);
        assert!(decoder.next_frame().unwrap().is_none());
        assert_eq!(decoder.read_buf(1 << 30).len(), DETACH_AT + 1 - 10, "never past the frame");
        assert!(matches!(decoder.on_eof(), Error::Truncated));
    }

    #[test]
    fn a_big_frame_split_after_its_head_comes_out_as_head_and_a_buffer_of_the_rest() {
        let big: Vec<u8> = (0..DETACH_AT + 999).map(|i| (i % 249) as u8).collect();
        let bytes = wire(&[big.clone(), b"next".to_vec()]);
        let mut decoder = Decoder::default();
        let mut asked = Vec::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(70_000) {
            decoder.feed(piece);
            let mut head_len = |len| {
                asked.push(len);
                3
            };
            while let Some(payload) = decoder.next_payload_with(&mut head_len).unwrap() {
                match payload {
                    Payload::Split { head, body } => {
                        assert_eq!(body.capacity(), body.len(), "the buffer holds the rest only");
                        out.push(("split", [head, &body[..]].concat()));
                    }
                    other => out.push(("whole", other.into_vec())),
                }
            }
        }
        assert_eq!(out, [("split", big.clone()), ("whole", b"next".to_vec())]);
        assert_eq!(asked, [big.len()], "asked once, when the big frame's header was in");
        assert!(matches!(decoder.on_eof(), Error::Eof));
    }

    #[test]
    fn a_split_frame_detaches_only_once_its_head_is_in() {
        let big = vec![5u8; DETACH_AT + 10];
        let bytes = wire(std::slice::from_ref(&big));
        let mut decoder = Decoder::default();
        decoder.feed(&bytes[..HEADER_LEN + 2]);
        assert!(decoder.next_payload_with(|_| 4).unwrap().is_none());
        assert_eq!(decoder.detached, None, "2 of 4 head bytes: not yet");
        decoder.feed(&bytes[HEADER_LEN + 2..HEADER_LEN + 6]);
        assert!(decoder.next_payload_with(|_| 4).unwrap().is_none());
        assert_eq!(decoder.detached, Some(big.len() - 4));
        assert!(matches!(decoder.on_eof(), Error::Truncated));
        decoder.feed(&bytes[HEADER_LEN + 6..]);
        let payload = decoder.next_payload_with(|_| 4).unwrap().unwrap();
        assert!(matches!(&payload, Payload::Split { head, .. } if head.len() == 4));
        assert_eq!(payload.into_vec(), big);
    }

    #[test]
    fn a_split_frame_taken_with_next_frame_is_joined_and_counts_its_head_against_the_limit() {
        let big: Vec<u8> = (0..DETACH_AT + 5).map(|i| i as u8).collect();
        let bytes = wire(std::slice::from_ref(&big));
        let mut decoder = Decoder::default();
        decoder.feed(&bytes[..100]);
        assert!(decoder.next_payload_with(|_| 2).unwrap().is_none());
        decoder.feed(&bytes[100..]);
        // Lowered below the frame's length, head included, it is refused.
        decoder.set_max(big.len() as u64 - 1);
        let err = decoder.next_frame().unwrap_err();
        assert!(matches!(err, Error::TooLarge { len, .. } if len == big.len() as u64), "{err:?}");
        decoder.set_max(big.len() as u64);
        assert_eq!(decoder.next_frame().unwrap(), Some(&big[..]));
        assert!(decoder.next_frame().unwrap().is_none());
    }

    #[test]
    #[should_panic(expected = "at most MAX_HEAD")]
    fn parts_with_a_head_over_max_head_panic_naming_the_rule() {
        let _ = Parts::new(&[0; MAX_HEAD + 1], b"body");
    }

    /// The most a decoder may hold after `fed` bytes arrived: the bytes, plus the larger of one
    /// chunk and the bytes again.
    fn allocation_bound(fed: usize) -> usize {
        fed + ALLOC_CHUNK.max(fed).min(MAX_AHEAD)
    }

    #[test]
    fn a_frame_bigger_than_a_chunk_grows_the_buffer_with_the_bytes() {
        let payload: Vec<u8> = (0..3 * ALLOC_CHUNK + 12345).map(|i| i as u8).collect();
        let bytes = wire(&[payload.clone(), b"after".to_vec()]);
        let mut decoder = Decoder::default();
        let mut payloads = Vec::new();
        let mut fed = 0;
        for piece in bytes.chunks(64 * 1024) {
            decoder.feed(piece);
            fed += piece.len();
            assert!(decoder.capacity() <= allocation_bound(fed));
            payloads.extend(drain(&mut decoder).unwrap());
        }
        assert_eq!(payloads, [payload, b"after".to_vec()]);
    }

    #[test]
    fn the_buffer_of_a_big_frame_is_released_once_it_is_consumed() {
        let bytes = wire(&[vec![1; 4 * ALLOC_CHUNK]]);
        let mut decoder = Decoder::default();
        decoder.feed(&bytes);
        assert_eq!(drain(&mut decoder).unwrap().len(), 1);
        decoder.read_buf(64 * 1024);
        assert!(decoder.capacity() <= IDLE_KEEP, "{}", decoder.capacity());
    }

    #[test]
    fn eof_is_eof_only_at_a_frame_boundary() {
        let mut decoder = Decoder::default();
        assert!(matches!(decoder.on_eof(), Error::Eof));
        decoder.feed(&header(0)[..2]);
        assert!(matches!(decoder.on_eof(), Error::Truncated), "half a header");
        decoder.feed(&header(0)[2..]);
        assert_eq!(drain(&mut decoder).unwrap(), [Vec::<u8>::new()]);
        assert!(matches!(decoder.on_eof(), Error::Eof), "after an empty message");
        decoder.feed(&header(3));
        assert!(drain(&mut decoder).unwrap().is_empty());
        assert!(matches!(decoder.on_eof(), Error::Truncated), "a header, no payload yet");
    }

    #[test]
    fn read_buf_never_hands_out_an_empty_slice() {
        let mut decoder = Decoder::default();
        assert!(!decoder.read_buf(0).is_empty());
    }

    #[test]
    #[should_panic(expected = "read_buf handed out only")]
    fn filling_more_than_was_handed_out_panics_naming_the_rule() {
        let mut decoder = Decoder::default();
        let spare = decoder.read_buf(8).len();
        decoder.filled(spare + 1);
    }

    #[test]
    fn debug_shows_the_state_not_the_bytes() {
        let mut decoder = Decoder::new(100);
        decoder.feed(&[0, 0, 0, 42, 1, 2]);
        let text = format!("{decoder:?}");
        assert!(text.contains("buffered: 6"), "{text}");
        assert!(text.contains("announced_len: Some(42)"), "{text}");
    }

    /// Payload lists: mostly small, sometimes empty, now and then a few KiB.
    fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let payload = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..32),
            1 => proptest::collection::vec(any::<u8>(), 0..5000),
        ];
        proptest::collection::vec(payload, 0..20)
    }

    /// The wire offsets at which a frame ends (0 included): the only places Eof is allowed.
    fn boundaries(payloads: &[Vec<u8>]) -> Vec<usize> {
        let mut at = vec![0];
        for payload in payloads {
            at.push(at.last().unwrap() + HEADER_LEN + payload.len());
        }
        at
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_yields_the_same_payloads(
            payloads in payloads(),
            read_sizes in proptest::collection::vec(0..3000usize, 1..50),
        ) {
            let bytes = wire(&payloads);
            let mut decoder = Decoder::default();
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            for read_size in read_sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let spare = decoder.read_buf(*read_size);
                let k = spare.len().min(rest.len()).min((*read_size).max(1));
                spare[..k].copy_from_slice(&rest[..k]);
                decoder.filled(k);
                rest = &rest[k..];
                got.extend(drain(&mut decoder).unwrap());
            }
            prop_assert_eq!(got, payloads);
            prop_assert!(matches!(decoder.on_eof(), Error::Eof));
        }

        #[test]
        fn garbage_never_panics_nor_allocates_ahead_of_the_bytes(
            pieces in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..64), 0..4 * ALLOC_CHUNK),
                0..30,
            ),
            max in prop_oneof![Just(u64::MAX), Just(DEFAULT_MAX_MESSAGE_SIZE), 0..100_000u64],
        ) {
            let mut decoder = Decoder::new(max);
            let mut fed = 0;
            for (piece, read_size) in pieces {
                let spare = decoder.read_buf(read_size);
                let k = spare.len().min(piece.len());
                spare[..k].copy_from_slice(&piece[..k]);
                decoder.filled(k);
                fed += k;
                prop_assert!(decoder.capacity() <= allocation_bound(fed));
                loop {
                    match decoder.next_frame() {
                        Ok(Some(payload)) => prop_assert!(payload.len() as u64 <= max),
                        Ok(None) => break,
                        Err(Error::TooLarge { len, max: limit }) => {
                            prop_assert!(len > limit);
                            break;
                        }
                        Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                    }
                }
                prop_assert!(decoder.buffered_len() <= fed);
            }
        }

        #[test]
        fn a_cut_stream_ends_in_eof_exactly_at_frame_boundaries(
            payloads in payloads(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = wire(&payloads);
            let at = boundaries(&payloads);
            let cut = cut.index(bytes.len() + 1);
            let mut decoder = Decoder::default();
            decoder.feed(&bytes[..cut]);
            let got = drain(&mut decoder).unwrap();
            let whole = at.iter().filter(|&&end| end != 0 && end <= cut).count();
            prop_assert_eq!(&got[..], &payloads[..whole]);
            if at.contains(&cut) {
                prop_assert!(matches!(decoder.on_eof(), Error::Eof));
            } else {
                prop_assert!(matches!(decoder.on_eof(), Error::Truncated));
            }
        }
    }
}
