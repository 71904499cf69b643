//! What a pool's pipes carry: chunks of tasks (parent to worker) and chunks of replies (worker
//! to parent). One frame carries many items, so a burst of tiny items costs one frame header,
//! one decode call and one wake-up per chunk instead of per item.
//!
//! A task frame's payload is the chunk's id (a postcard varint), then for each item its length
//! (varint) and the item (postcard). A reply frame's is the chunk id, the offset in the chunk of
//! its first item (varint; the items it answers are consecutive, as a worker runs a chunk in
//! order, so no item pays for an offset of its own), then for each item a tag byte (0: the
//! result follows; 1: the function panicked, its message follows; 2: the result could not be
//! encoded or the item decoded, the codec's message follows), the value's length (varint) and
//! the value; tag 3: the result was larger than a pool message may be, and its length and the
//! limit follow, as a postcard pair). Guarantee: every value is delimited by its own length, so
//! one value that does not decode fails only its own item; a payload whose framing (id, offset,
//! lengths) does not read is a codec error; no frame either side writes is larger than the
//! pool's `max_message_size`, so the reader at the other end never refuses one (a refused frame
//! would end the link: every item in flight at that worker would fail with it).
//!
//! Except for integers: an item whose type is a primitive integer (`u8` to `u64`, `i8` to
//! `i64`, `usize`, `isize`) is its little-endian bytes, with no length, and so is a result of
//! such a type after its tag 0 (`raw.rs`). Such a value always decodes, and the frame is walked
//! at a fixed stride: with a length before each value, finding the next one waited for the
//! load of the previous length, on both sides. 60 maps of 100k `u64` items of `x + 1` on 2
//! workers (perf samples): the parent's encoding 715 -> 221, its decoding 588 -> 384, the
//! workers' loop 1,338 -> 459, for twice the bytes per item (8 and 9 instead of ~4 and ~5).
//!
//! Neither side builds a vector of decoded items: the worker keeps a task frame's bytes
//! ([`Tasks`]) and splits and decodes each item just before running it, and the parent reads a
//! reply frame record by record ([`each_outcome`]) straight into the caller's results. At ~10
//! ns per tiny item, a `Vec` of 24- to 48-byte entries per frame and a second pass over it were
//! a third of the parent's time (perf, 100k items of `x + 1` on 2 workers). A task frame whose
//! framing breaks off is found when the worker reaches the break: the items before it have run
//! (the parent wrote the frame, so only a bug gets there), and the worker ends with a codec
//! error, failing what it has not answered.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::raw;
use crate::codec::{self, Codec, DecodeLimits, Postcard};
use crate::frame::Payload;
use crate::{Error, frame};

/// The items of one chunk, as a worker reads them: the payload after the chunk id, each item
/// split off and decoded only when [`Tasks::items`] reaches it.
#[derive(Debug)]
pub(super) struct Tasks<I> {
    pub(super) chunk: u64,
    /// The delimited items.
    body: Vec<u8>,
    /// Where the items start in `body` (after the chunk id).
    start: usize,
    _items: PhantomData<fn() -> I>,
}

impl<I: 'static> Tasks<I> {
    /// The items' bytes, if their type travels raw (`raw.rs`): whole items of its width, as
    /// checked when the frame arrived.
    pub(super) fn raw_items(&self) -> Option<&[u8]> {
        raw::width::<I>().map(|_| &self.body[self.start..])
    }
}

/// One item of a chunk: the item, or why it could not be decoded (that item's failure).
pub(super) type Task<I> = Result<I, String>;

impl<I: Serialize + DeserializeOwned + 'static> Tasks<I> {
    /// Each item in order, then `None`; or, where the framing breaks off, the codec error that
    /// ends the chunk (and the worker).
    #[inline(always)]
    pub(super) fn items(&self) -> impl Iterator<Item = Result<Task<I>, Error>> + '_ {
        let mut rest = &self.body[self.start..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            if let Some(width) = raw::width::<I>() {
                // The frame's length was checked to be a multiple of the width on arrival.
                let (value, tail) = rest.split_at(width.min(rest.len()));
                rest = tail;
                return Some(raw::read(value).map(Ok).ok_or_else(|| short_raw::<I>(value.len())));
            }
            let (value, tail) = match take_delimited(rest) {
                Ok(split) => split,
                Err(err) => {
                    rest = &[];
                    return Some(Err(err));
                }
            };
            rest = tail;
            Some(Ok(codec::decode_slice(value).map_err(|e: Error| e.to_string())))
        })
    }
}

/// Why an item has no result.
#[derive(Debug, PartialEq)]
pub(super) enum Failure {
    Panicked(String),
    Codec(String),
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::Panicked(message) => Error::Panicked(message),
            Failure::Codec(message) => Error::Codec(message),
        }
    }
}

const OK: u8 = 0;
const PANICKED: u8 = 1;
const CODEC: u8 = 2;
const TOO_LARGE: u8 = 3;

/// The smallest `max_message_size` a pool accepts: room for a head and the reply that says a
/// result was too large (a tag, a length byte and two varints).
pub(super) const MIN_MESSAGE_SIZE: u64 = 64;

/// How many payload bytes the frame that began at `frame` (as `frame::begin_frame` returned)
/// holds now.
fn payload_len(out: &[u8], frame: usize) -> u64 {
    (out.len() - frame - frame::HEADER_LEN) as u64
}

/// Appends `n` as a postcard varint (LEB128).
#[inline]
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint (LEB128, postcard's `u64`: at most 10 bytes) off the front of `bytes`. By
/// hand, not with `postcard::take_from_bytes`: that sets up a serde deserializer per call, and
/// this runs three times per reply record.
#[inline(always)]
pub(super) fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    // Every length of a tiny value is one byte.
    if let Some((&byte, rest)) = bytes.split_first()
        && byte < 0x80
    {
        return Ok((u64::from(byte), rest));
    }
    let mut n = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        // The tenth byte holds the top bit of a u64 only.
        if i == 9 && byte > 1 {
            break;
        }
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(Error::Codec(format!(
        "a pool message whose framing does not read: no varint in {} bytes",
        bytes.len().min(10)
    )))
}

/// Appends `head` (whose last byte is a placeholder for the length), then `value`'s postcard
/// encoding, and sets the length; on error `out` is unchanged. `head` is `[0]` for a bare
/// value, `[tag, 0]` for a reply record: one capacity check for both bytes, not one per `push`.
/// Inlined into the loops over a chunk's items: as a call of its own, its prologue and
/// epilogue were a fifth of its time (perf, 100k tiny items).
#[inline(always)]
fn append_delimited<const N: usize, T: Serialize + DeserializeOwned + 'static>(
    out: &mut Vec<u8>,
    head: [u8; N],
    value: &T,
) -> Result<(), Error> {
    // A one-byte length is the common case (values under 128 bytes): keep it a byte's room.
    let start = out.len();
    if N == 1 {
        out.push(0); // one byte: a `push` is a few instructions fewer (callgrind)
    } else {
        out.extend_from_slice(&head);
    }
    let at = start + N - 1;
    if let Err(err) = Postcard.encode(value, out) {
        out.truncate(start);
        return Err(err);
    }
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        long_length(out, at, len);
    }
    Ok(())
}

/// Puts the varint of a length of 128 or more in place of the one-byte placeholder at `at`.
#[cold]
#[inline(never)]
fn long_length(out: &mut Vec<u8>, at: usize, len: usize) {
    let mut varint = Vec::with_capacity(10);
    push_varint(&mut varint, len as u64);
    out.splice(at..at + 1, varint);
}

/// Splits a length-delimited value off the front of `bytes`.
#[inline(always)]
fn take_delimited(bytes: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    let (len, rest) = take_varint(bytes)?;
    match usize::try_from(len) {
        Ok(len) if len <= rest.len() => Ok(rest.split_at(len)),
        _ => Err(Error::Codec(format!(
            "a pool message claims a value of {len} bytes where {} remain",
            rest.len()
        ))),
    }
}

/// The error of a raw integer cut short by the end of its frame (`len` bytes left).
#[cold]
#[inline(never)]
fn short_raw<T>(len: usize) -> Error {
    Error::Codec(format!(
        "a pool message whose framing does not read: a {} cut short at {len} bytes",
        std::any::type_name::<T>()
    ))
}

/// Takes an item that would make a task frame's payload `len` bytes, over `max`, back out of
/// `out` (it began at `before`): the error. Out of line, off the loop over a chunk's items.
#[cold]
#[inline(never)]
fn refuse_item(out: &mut Vec<u8>, before: usize, len: u64, max: u64) -> Error {
    out.truncate(before);
    Error::TooLarge { len, max }
}

/// A task frame being filled: [`TaskChunk::push`] items, then [`TaskChunk::finish`].
pub(super) struct TaskChunk {
    start: usize,
    items: usize,
}

impl TaskChunk {
    /// Starts the frame of chunk `chunk` at the end of `out`.
    pub(super) fn begin(out: &mut Vec<u8>, chunk: u64) -> TaskChunk {
        let start = frame::begin_frame(out);
        push_varint(out, chunk);
        TaskChunk { start, items: 0 }
    }

    /// Appends one item; on error the frame is as it was: the item cannot be encoded, or it
    /// would take the frame's payload past `max` bytes (`TooLarge`, with the payload it would
    /// have made: an item that is first in its chunk is then too large for any).
    #[inline(always)]
    pub(super) fn push<I: Serialize + DeserializeOwned + 'static>(
        &mut self,
        out: &mut Vec<u8>,
        item: &I,
        max: u64,
    ) -> Result<(), Error> {
        let before = out.len();
        if !raw::append(out, [], item) {
            append_delimited(out, [0], item)?;
        }
        let len = payload_len(out, self.start);
        if len > max {
            return Err(refuse_item(out, before, len, max));
        }
        self.items += 1;
        Ok(())
    }

    /// Appends as many of `items` (in two parts, as a `VecDeque` holds them) as `allowed` and
    /// `max` let it at once, if their type travels raw ([`raw::append_all`]): how many. `None`
    /// if it does not, or if not even the first fits: push them one by one with
    /// [`push`](Self::push), which says why.
    #[inline(always)]
    pub(super) fn push_raw<I: 'static>(
        &mut self,
        out: &mut Vec<u8>,
        (front, back): (&[I], &[I]),
        allowed: usize,
        max: u64,
    ) -> Option<usize> {
        let width = raw::width::<I>()?;
        let room = max.saturating_sub(payload_len(out, self.start)) / width as u64;
        let room = usize::try_from(room).unwrap_or(usize::MAX).min(allowed);
        let n = (front.len() + back.len()).min(room);
        if n == 0 {
            return None;
        }
        let in_front = n.min(front.len());
        raw::append_all(out, &front[..in_front]);
        raw::append_all(out, &back[..n - in_front]);
        self.items += n;
        Some(n)
    }

    /// How many items it holds.
    pub(super) fn len(&self) -> usize {
        self.items
    }

    /// Ends the frame; one of no items is removed again. On error (too large) it is removed.
    pub(super) fn finish(self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.items == 0 {
            out.truncate(self.start);
            return Ok(());
        }
        frame::finish_frame(out, self.start)
    }
}

/// Appends the outcome of the next item to the reply frame that began at `frame` (as
/// [`begin_replies`] returned), whose payload may hold at most `max` bytes. A result that does
/// not encode is recorded as a codec failure for that item. When the outcome does not fit,
/// `out` is left as it was and the error is how many bytes the outcome takes: send the
/// outcomes before it and try a frame of its own (if [`reply_head_len`] plus that fits), or
/// record it with [`append_too_large`].
#[inline(always)]
pub(super) fn append_outcome<O: Serialize + DeserializeOwned + 'static>(
    out: &mut Vec<u8>,
    frame: usize,
    max: u64,
    outcome: &Result<O, Failure>,
) -> Result<(), u64> {
    let start = out.len();
    encode_outcome(out, outcome);
    if payload_len(out, frame) <= max {
        return Ok(());
    }
    let own = (out.len() - start) as u64;
    out.truncate(start);
    Err(own)
}

/// How many more records of `record` bytes the reply frame that began at `frame` takes under
/// the pool's limit `max`.
pub(super) fn records_room(out: &[u8], frame: usize, max: u64, record: usize) -> usize {
    let room = max.saturating_sub(payload_len(out, frame)) / record as u64;
    usize::try_from(room).unwrap_or(usize::MAX)
}

/// Writes the record of a result that travels raw into `slot` (its tag, then its bytes: one
/// more byte than its width), as [`append_outcome`] appends it.
#[inline(always)]
pub(super) fn put_raw_result<O: 'static>(slot: &mut [u8], value: &O) {
    slot[0] = OK;
    let raw = raw::write(&mut slot[1..], value);
    debug_assert!(raw, "put_raw_result of a type that does not travel raw");
}

/// Records the next item's outcome as too large: `len` bytes, over the pool's limit `max`. It
/// takes at most 23 bytes, so it fits a frame of its own under any limit of at least
/// [`MIN_MESSAGE_SIZE`].
pub(super) fn append_too_large(out: &mut Vec<u8>, len: u64, max: u64) {
    append_delimited(out, [TOO_LARGE, 0], &(len, max)).expect("a pair of numbers encodes");
}

/// The bytes [`begin_replies`] writes for a frame of chunk `chunk` starting at `first`.
pub(super) fn reply_head_len(chunk: u64, first: usize) -> u64 {
    let varint_len = |n: u64| u64::from((64 - n.leading_zeros()).max(1).div_ceil(7));
    varint_len(chunk) + varint_len(first as u64)
}

/// Appends an outcome as the tag and the delimited value or message. A result that does not
/// encode is recorded as a codec failure for that item. The result's path is inlined into the
/// loop over a chunk's items and the failures' are out of line: as one recursive function
/// (never inlined), with a `push` per byte, it was the largest part of a worker's time (perf,
/// 31 maps of 100k items of `x + 1` on 2 workers: ~10 ns of ~27 per item).
#[inline(always)]
fn encode_outcome<O: Serialize + DeserializeOwned + 'static>(
    out: &mut Vec<u8>,
    outcome: &Result<O, Failure>,
) {
    match outcome {
        Ok(value) => {
            if raw::append(out, [OK], value) {
                return;
            }
            if let Err(err) = append_delimited(out, [OK, 0], value) {
                encode_unencodable(out, err);
            }
        }
        Err(failure) => encode_failure(out, failure),
    }
}

/// Appends a failure record: its tag and its delimited message.
#[cold]
#[inline(never)]
fn encode_failure(out: &mut Vec<u8>, failure: &Failure) {
    let (tag, message) = match failure {
        Failure::Panicked(message) => (PANICKED, message),
        Failure::Codec(message) => (CODEC, message),
    };
    append_delimited(out, [tag, 0], message).expect("a string always encodes");
}

/// Appends the codec failure of a result that did not encode (`err` says why).
#[cold]
#[inline(never)]
fn encode_unencodable(out: &mut Vec<u8>, err: Error) {
    let message = match err {
        Error::Codec(message) => message,
        other => other.to_string(),
    };
    encode_failure(out, &Failure::Codec(message));
}

/// Starts a reply frame for chunk `chunk` whose first item is at `first` in the chunk; append
/// the outcomes of that item and the next ones with [`append_outcome`], end it with
/// [`frame::finish_frame`].
pub(super) fn begin_replies(out: &mut Vec<u8>, chunk: u64, first: usize) -> usize {
    let start = frame::begin_frame(out);
    push_varint(out, chunk);
    push_varint(out, first as u64);
    start
}

/// Reads a reply frame's chunk id and first offset: (chunk, first, the outcomes).
pub(super) fn take_replies_head(payload: &[u8]) -> Result<(u64, u64, &[u8]), Error> {
    let (chunk, rest) = take_varint(payload)?;
    let (first, rest) = take_varint(rest)?;
    Ok((chunk, first, rest))
}

/// Where [`each_outcome`] hands the outcomes of a reply frame, one after another: results to
/// [`Outcomes::value`], failures to [`Outcomes::failure`]. Two methods, not one taking a
/// `Result`: with a `Result` the decoding loop built each result on the stack and read it back
/// (its error variant is large), and a closure called from several arms was not inlined
/// (perf, 100k tiny items: a quarter of the parent's time).
pub(super) trait Outcomes<O> {
    fn value(&mut self, value: O);
    fn failure(&mut self, failure: Error);
}

/// In the tests, a closure taking a `Result` is a place for outcomes.
#[cfg(test)]
impl<O, F: FnMut(Result<O, Error>)> Outcomes<O> for F {
    fn value(&mut self, value: O) {
        self(Ok(value));
    }

    fn failure(&mut self, failure: Error) {
        self(Err(failure));
    }
}

/// Hands each outcome of a reply frame (after [`take_replies_head`]) to `out`, in order. A
/// value that does not decode is a codec failure of its item; an outcome whose framing does not
/// read ends the frame with an error, after the outcomes before it.
#[inline(always)]
pub(super) fn each_outcome<O: Serialize + DeserializeOwned + 'static>(
    mut rest: &[u8],
    out: &mut impl Outcomes<O>,
) -> Result<(), Error> {
    while let Some((&tag, tail)) = rest.split_first() {
        if tag == OK
            && let Some(width) = raw::width::<O>()
        {
            // No length to wait for: the next record's place is known before this one's bytes
            // are read.
            let (value, tail) = tail.split_at(width.min(tail.len()));
            out.value(raw::read(value).ok_or_else(|| short_raw::<O>(value.len()))?);
            rest = tail;
            continue;
        }
        let (value, tail) = take_delimited(tail)?;
        rest = tail;
        if tag == OK {
            match codec::decode_slice::<O>(value) {
                Ok(value) => out.value(value),
                Err(e) => out.failure(Error::Codec(e.to_string())),
            }
            continue;
        }
        out.failure(failure_of(tag, value));
    }
    Ok(())
}

/// Decodes the results at the front of a reply frame's outcomes (after [`take_replies_head`])
/// onto the end of `out`, at most `max` of them, and stops before the first record that is not
/// a result that decodes (a failure, a value that does not decode, a framing that does not
/// read): that record and the rest are left for [`each_outcome`]. How many it took, and the
/// rest. The loop under a `map`'s answers: a result costs its tag's check, its decoding and a
/// `push`, with none of the per-item bookkeeping of `each_outcome`'s path.
#[inline(always)]
pub(super) fn take_values<'a, O: Serialize + DeserializeOwned + 'static>(
    mut rest: &'a [u8],
    max: usize,
    out: &mut Vec<O>,
) -> (usize, &'a [u8]) {
    if let Some(width) = raw::width::<O>() {
        // Records of a tag and `width` bytes: count the results up to the first failure, then
        // extend `out` by all of them at once (room reserved once, the length kept in a
        // register: pushed one by one, each reloaded the length the previous had stored).
        let records = rest.chunks_exact(1 + width).take(max);
        let taken = records.clone().take_while(|record| record[0] == OK).count();
        let values = records.take(taken).map(|record| raw::read(&record[1..]));
        out.extend(values.map(|value| value.expect("a raw value of its width")));
        return (taken, &rest[taken * (1 + width)..]);
    }
    let mut taken = 0;
    while taken < max {
        let Some((&OK, tail)) = rest.split_first() else { break };
        let Ok((value, tail)) = take_delimited(tail) else { break };
        let Ok(value) = codec::decode_slice::<O>(value) else { break };
        out.push(value);
        rest = tail;
        taken += 1;
    }
    (taken, rest)
}

/// The failure a reply record with tag `tag` (not `OK`) and value `value` reports. Out of line:
/// inlined, the failure arms made the loop over a reply's results larger and slower for the
/// tiny results that never fail (perf, 2M tiny items: ~3 ns more of the parent's per item).
#[cold]
#[inline(never)]
fn failure_of(tag: u8, value: &[u8]) -> Error {
    let text = |value| Postcard.decode(value).unwrap_or_else(|e: Error| e.to_string());
    match tag {
        PANICKED => Error::Panicked(text(value)),
        CODEC => Error::Codec(text(value)),
        TOO_LARGE => match Postcard.decode(value) {
            Ok((len, max)) => Error::TooLarge { len, max },
            Err(e) => e,
        },
        other => Error::Codec(format!("a pool reply with an unknown tag {other}")),
    }
}

/// The codec of the worker's task reader: checks a frame's framing and keeps its bytes.
pub(super) struct TaskCodec<I>(PhantomData<fn() -> I>);

impl<I> TaskCodec<I> {
    pub(super) fn new() -> Self {
        TaskCodec(PhantomData)
    }
}

impl<I> TaskCodec<I> {
    /// Reads the chunk id (and checks that a frame of raw integers holds whole ones); the items are split off as they run ([`Tasks::items`]). A pass over
    /// the items' lengths here, to refuse a broken frame before any of its items ran, was a
    /// chain of dependent loads, ~15% of a worker's time (perf, 30 maps of 100k tiny items).
    fn check(body: Vec<u8>) -> Result<Tasks<I>, Error>
    where
        I: 'static,
    {
        let (chunk, rest) = take_varint(&body)?;
        if let Some(width) = raw::width::<I>()
            && rest.len() % width != 0
        {
            return Err(Error::Codec(format!(
                "a pool task frame of {} bytes of {}, not a multiple of its width {width}",
                rest.len(),
                std::any::type_name::<I>()
            )));
        }
        let start = body.len() - rest.len();
        Ok(Tasks { chunk, body, start, _items: PhantomData })
    }
}

impl<I: Serialize + DeserializeOwned + 'static> Codec<Tasks<I>> for TaskCodec<I> {
    fn encode(&self, tasks: &Tasks<I>, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&tasks.body);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Tasks<I>, Error> {
        Self::check(bytes.to_vec())
    }

    fn decode_within(&self, payload: Payload<'_>, _: &DecodeLimits) -> Result<Tasks<I>, Error> {
        // Each item is decoded under the default limits when it runs.
        Self::check(payload.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> &[u8] {
        &frame[frame::HEADER_LEN..]
    }

    fn task_frame<I: Serialize + DeserializeOwned + 'static>(chunk: u64, items: &[I]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut tasks = TaskChunk::begin(&mut out, chunk);
        for item in items {
            tasks.push(&mut out, item, frame::DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        }
        tasks.finish(&mut out).unwrap();
        out
    }

    fn items<I: Serialize + DeserializeOwned + 'static>(tasks: &Tasks<I>) -> Vec<Task<I>> {
        tasks.items().map(|task| task.expect("the framing reads")).collect()
    }

    fn reply_frame<O: Serialize + DeserializeOwned + 'static>(
        chunk: u64,
        first: usize,
        outcomes: &[Result<O, Failure>],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_replies(&mut out, chunk, first);
        for outcome in outcomes {
            append_outcome(&mut out, start, frame::DEFAULT_MAX_MESSAGE_SIZE, outcome).unwrap();
        }
        frame::finish_frame(&mut out, start).unwrap();
        out
    }

    /// A reply payload read back: (chunk, first offset, outcomes, what stopped the reading).
    type Read<O> = (u64, u64, Vec<Result<O, Error>>, Result<(), Error>);

    fn read_replies<O: Serialize + DeserializeOwned + 'static>(
        payload: &[u8],
    ) -> Result<Read<O>, Error> {
        let (chunk, first, rest) = take_replies_head(payload)?;
        let mut outcomes = Vec::new();
        let stopped = each_outcome(rest, &mut |outcome| outcomes.push(outcome));
        Ok((chunk, first, outcomes, stopped))
    }

    #[test]
    fn a_chunk_of_tasks_round_trips_with_its_id() {
        let out = task_frame(300, &["a".to_string(), "item".to_string(), "x".repeat(200)]);
        let tasks = TaskCodec::<String>::new().decode(payload(&out)).unwrap();
        assert_eq!(tasks.chunk, 300);
        assert_eq!(items(&tasks), [Ok("a".into()), Ok("item".into()), Ok("x".repeat(200))]);
    }

    #[test]
    fn an_item_that_does_not_decode_fails_only_itself() {
        // Tuples: postcard-encoded and delimited (a bare integer travels raw, `raw.rs`).
        let out = task_frame(7, &[(1u64,), (u64::MAX,), (2,)]);
        let tasks = TaskCodec::<(u8,)>::new().decode(payload(&out)).unwrap();
        assert_eq!(tasks.chunk, 7);
        let items = items(&tasks);
        assert_eq!(items[0], Ok((1,)));
        assert!(items[1].as_ref().unwrap_err().contains("u8"));
        assert_eq!(items[2], Ok((2,)));
    }

    #[test]
    fn integer_items_travel_raw_and_a_frame_of_broken_width_is_refused() {
        let out = task_frame(3, &[0u64, 100_000, u64::MAX]);
        assert_eq!(payload(&out).len(), 1 + 3 * 8, "the chunk id, then 8 bytes per item");
        let tasks = TaskCodec::<u64>::new().decode(payload(&out)).unwrap();
        assert_eq!(items(&tasks), [Ok(0), Ok(100_000), Ok(u64::MAX)]);
        let out = task_frame(3, &[-1i16, 2]);
        let tasks = TaskCodec::<i16>::new().decode(payload(&out)).unwrap();
        assert_eq!(items(&tasks), [Ok(-1), Ok(2)]);
        assert!(matches!(TaskCodec::<u32>::new().decode(&[3, 1, 2, 3]), Err(Error::Codec(_))));
    }

    #[test]
    fn raw_items_fill_a_chunk_at_once_up_to_the_limit() {
        let mut out = Vec::new();
        let mut tasks = TaskChunk::begin(&mut out, 1); // 1 payload byte, the chunk id
        let many: Vec<u64> = (0..100).collect();
        let (front, back) = many.split_at(3);
        assert_eq!(tasks.push_raw(&mut out, (front, back), 100, 64), Some(7), "(64 - 1) / 8");
        assert_eq!(tasks.push_raw(&mut out, (&many, &[]), 100, 64), None, "not one more fits");
        assert_eq!(tasks.len(), 7);
        tasks.finish(&mut out).unwrap();
        let decoded = TaskCodec::<u64>::new().decode(payload(&out)).unwrap();
        assert_eq!(items(&decoded), (0..7).map(Ok).collect::<Vec<_>>());
        let mut other = TaskChunk::begin(&mut out, 2);
        assert_eq!(other.push_raw(&mut out, (&["text".to_string()], &[]), 1, 64), None);
        let mut few = TaskChunk::begin(&mut out, 3);
        assert_eq!(few.push_raw(&mut out, (&many[..2], &many[2..]), 5, 64), Some(5), "allowed");
    }

    #[test]
    fn integer_results_travel_raw_beside_failures() {
        let outcomes = vec![
            Ok(7u32),
            Err(Failure::Panicked("boom".into())),
            Ok(u32::MAX),
            Err(Failure::Codec("bad".into())),
        ];
        let out = reply_frame(4, 0, &outcomes);
        // Head 2, two results of a tag and 4 bytes, two failures of a tag, a length and text.
        assert_eq!(payload(&out).len(), 2 + 2 * 5 + (2 + 5) + (2 + 4));
        let (_, _, read, stopped) = read_replies::<u32>(payload(&out)).unwrap();
        assert!(stopped.is_ok());
        assert!(
            matches!(&read[..], [
            Ok(7),
            Err(Error::Panicked(p)),
            Ok(u32::MAX),
            Err(Error::Codec(c)),
        ] if p == "boom" && c == "bad"),
            "{read:?}"
        );
        // A raw result cut short by the frame's end: its framing does not read.
        let (_, _, read, stopped) = read_replies::<u32>(&[4, 0, OK, 1, 0, 0, 0, OK, 1]).unwrap();
        assert!(matches!((&read[..], stopped), ([Ok(1)], Err(Error::Codec(_)))), "{read:?}");
    }

    #[test]
    fn every_reply_outcome_round_trips() {
        let outcomes = vec![
            Ok(vec![1u32, 2]),
            Err(Failure::Panicked("boom".into())),
            Err(Failure::Codec("bad".into())),
        ];
        let out = reply_frame(4, 300, &outcomes);
        let (chunk, first, read, stopped) = read_replies::<Vec<u32>>(payload(&out)).unwrap();
        assert_eq!((chunk, first), (4, 300));
        assert!(stopped.is_ok());
        assert!(matches!(&read[..], [
            Ok(v),
            Err(Error::Panicked(p)),
            Err(Error::Codec(c)),
        ] if v == &[1, 2] && p == "boom" && c == "bad"));
    }

    #[test]
    fn a_result_that_does_not_decode_fails_only_its_item() {
        let out = reply_frame(9, 0, &[Ok::<_, Failure>((u64::MAX,)), Ok((3,))]);
        let (_, _, read, stopped) = read_replies::<(u8,)>(payload(&out)).unwrap();
        assert!(stopped.is_ok());
        assert!(matches!(&read[..], [Err(Error::Codec(_)), Ok((3,))]), "{read:?}");
    }

    #[test]
    fn a_result_that_does_not_encode_is_recorded_as_a_codec_failure() {
        let out = reply_frame(1, 0, &[Ok(Refuses), Ok(Refuses)]);
        let (_, _, read, _) = read_replies::<u8>(payload(&out)).unwrap();
        assert_eq!(read.len(), 2);
        assert!(read.iter().all(|o| matches!(o, Err(Error::Codec(_)))));
    }

    #[test]
    fn varints_read_as_postcard_writes_them() {
        for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            push_varint(&mut out, n);
            assert_eq!(out, postcard::to_allocvec(&n).unwrap());
            out.push(0xaa);
            assert_eq!(take_varint(&out).unwrap(), (n, &[0xaa][..]));
        }
        // Unterminated, too long, and a tenth byte past the 64th bit.
        assert!(take_varint(&[0x80, 0x80]).is_err());
        assert!(take_varint(&[0xff; 11]).is_err());
        assert!(
            take_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err()
        );
    }

    #[test]
    fn garbage_and_lying_lengths_are_codec_errors() {
        assert!(matches!(read_replies::<u8>(&[0xff; 11]), Err(Error::Codec(_))));
        assert!(matches!(read_replies::<u8>(&[1]), Err(Error::Codec(_))));
        assert!(matches!(TaskCodec::<u8>::new().decode(&[]), Err(Error::Codec(_))));
        // Chunk 1, an item, then one claiming 100 bytes where 1 remains: the first runs, the
        // second ends the chunk with a codec error.
        let tasks = TaskCodec::<(u8,)>::new().decode(&[1, 1, 5, 100, 0]).unwrap();
        let read: Vec<_> = tasks.items().collect();
        assert!(matches!(&read[..], [Ok(Ok((5,))), Err(Error::Codec(_))]), "{read:?}");
        // Chunk 1, first offset 0, one good outcome, then tag OK and no length.
        let (_, _, read, stopped) = read_replies::<(u8,)>(&[1, 0, OK, 1, 5, OK]).unwrap();
        assert!(matches!((&read[..], stopped), ([Ok((5,))], Err(Error::Codec(_)))));
        // An outcome claiming 100 bytes where 1 remains.
        let (_, _, read, stopped) = read_replies::<(u8,)>(&[1, 0, OK, 100, 5]).unwrap();
        assert!(read.is_empty() && matches!(stopped, Err(Error::Codec(_))));
    }

    #[test]
    fn an_unencodable_item_leaves_the_chunk_as_it_was() {
        let mut out = vec![1, 2, 3];
        let mut tasks = TaskChunk::begin(&mut out, 1);
        tasks.push(&mut out, &5u8, 100).unwrap();
        let before = out.clone();
        assert!(matches!(tasks.push(&mut out, &Refuses, 100), Err(Error::Codec(_))));
        assert_eq!((out.clone(), tasks.len()), (before, 1));
        tasks.finish(&mut out).unwrap();
        let decoded = TaskCodec::<u8>::new().decode(&out[3 + frame::HEADER_LEN..]).unwrap();
        assert_eq!(items(&decoded), [Ok(5)]);
    }

    #[test]
    fn an_item_that_would_take_the_frame_past_the_limit_is_refused_and_leaves_it_as_it_was() {
        let mut out = Vec::new();
        let mut tasks = TaskChunk::begin(&mut out, 1);
        tasks.push(&mut out, &vec![7u8; 40], 64).unwrap(); // 1 + 1 + 41 payload bytes
        let before = out.clone();
        let refused = tasks.push(&mut out, &vec![7u8; 40], 64);
        assert!(matches!(refused, Err(Error::TooLarge { len: 85, max: 64 })), "{refused:?}");
        assert_eq!((out.clone(), tasks.len()), (before, 1));
        // First in a chunk of its own, an item over the limit is too large for any.
        let mut out = Vec::new();
        let mut alone = TaskChunk::begin(&mut out, 2);
        assert!(matches!(alone.push(&mut out, &vec![7u8; 80], 64), Err(Error::TooLarge { .. })));
        assert_eq!(alone.len(), 0);
    }

    #[test]
    fn an_outcome_that_does_not_fit_leaves_the_frame_as_it_was_and_says_its_size() {
        let mut out = Vec::new();
        let start = begin_replies(&mut out, 5, 0);
        assert!(append_outcome(&mut out, start, 64, &Ok::<_, Failure>(vec![1u8; 30])).is_ok());
        let before = out.clone();
        // A tag, a length byte, and postcard's length byte and 30 bytes.
        let refused = append_outcome(&mut out, start, 64, &Ok::<_, Failure>(vec![2u8; 30]));
        assert_eq!((refused, &out), (Err(33), &before));
        // Too large even alone: recorded as such, and the next outcome goes on in the frame.
        let big = append_outcome(&mut out, start, 64, &Ok::<_, Failure>(vec![3u8; 100]));
        assert_eq!(big, Err(103));
        append_too_large(&mut out, 103, 64);
        assert!(append_outcome(&mut out, start, 64, &Ok::<_, Failure>(vec![4u8; 3])).is_ok());
        frame::finish_frame(&mut out, start).unwrap();
        let (_, _, read, stopped) = read_replies::<Vec<u8>>(payload(&out)).unwrap();
        assert!(stopped.is_ok());
        assert!(
            matches!(&read[..], [Ok(a), Err(Error::TooLarge { len: 103, max: 64 }), Ok(b)]
                if a == &[1; 30] && b == &[4; 3]),
            "{read:?}"
        );
    }

    #[test]
    fn the_too_large_record_fits_under_the_smallest_limit_with_the_longest_head() {
        let mut out = Vec::new();
        let start = begin_replies(&mut out, u64::MAX, usize::MAX);
        assert_eq!(payload_len(&out, start), reply_head_len(u64::MAX, usize::MAX));
        append_too_large(&mut out, u64::MAX, u64::MAX);
        assert!(payload_len(&out, start) <= MIN_MESSAGE_SIZE);
        for (chunk, first) in [(0, 0), (127, 128), (300, 1 << 20)] {
            let mut out = Vec::new();
            let start = begin_replies(&mut out, chunk, first);
            assert_eq!(payload_len(&out, start), reply_head_len(chunk, first));
        }
    }

    #[test]
    fn an_empty_chunk_leaves_no_frame() {
        let mut out = vec![9];
        TaskChunk::begin(&mut out, 3).finish(&mut out).unwrap();
        assert_eq!(out, [9]);
    }

    #[derive(Debug)]
    struct Refuses;
    impl Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Refuses {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Refuses)
        }
    }
}
