//! What a pool's pipes carry: chunks of tasks (parent to worker) and chunks of replies (worker
//! to parent). One frame carries many items, so a burst of tiny items costs one frame header,
//! one decode call and one wake-up per chunk instead of per item.
//!
//! A task frame's payload is the chunk's id (a postcard varint), then for each item its length
//! (varint) and the item (postcard). A reply frame's is the chunk id, then for each answered
//! item its offset in the chunk (varint), a tag byte (0: the result follows; 1: the function
//! panicked, its message follows; 2: the result could not be encoded or the item decoded, the
//! codec's message follows), the value's length (varint) and the value. Guarantee: every value
//! is delimited by its own length, so one value that does not decode fails only its own item; a
//! payload whose framing (id, offsets, lengths) does not read is a codec error for the whole
//! frame.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Postcard};
use crate::{Error, frame};

/// The items of one chunk, as a worker reads them.
#[derive(Debug)]
pub(super) struct Tasks<I> {
    pub(super) chunk: u64,
    /// Each item in order, or why it could not be decoded.
    pub(super) items: Vec<Result<I, String>>,
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

/// A worker's answers for some items of one chunk: (offset in the chunk, outcome).
#[derive(Debug)]
pub(super) struct Replies<O> {
    pub(super) chunk: u64,
    pub(super) outcomes: Vec<(usize, Result<O, Failure>)>,
}

const OK: u8 = 0;
const PANICKED: u8 = 1;
const CODEC: u8 = 2;

/// Appends `n` as a postcard varint (LEB128).
fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint off the front of `bytes`.
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    postcard::take_from_bytes::<u64>(bytes)
        .map_err(|e| Error::Codec(format!("a pool message whose framing does not read: {e}")))
}

/// Appends `value`'s postcard encoding preceded by its length; on error `out` is unchanged.
fn append_delimited<T: Serialize + DeserializeOwned + 'static>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), Error> {
    // A one-byte length is the common case (values under 128 bytes): keep it a byte's room.
    let start = out.len();
    out.push(0);
    if let Err(err) = Postcard.encode(value, out) {
        out.truncate(start);
        return Err(err);
    }
    let len = out.len() - start - 1;
    if len < 0x80 {
        out[start] = len as u8;
    } else {
        let mut varint = Vec::with_capacity(10);
        push_varint(&mut varint, len as u64);
        out.splice(start..start + 1, varint);
    }
    Ok(())
}

/// Splits a length-delimited value off the front of `bytes`.
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

    /// Appends one item; on error (it cannot be encoded) the frame is as it was.
    pub(super) fn push<I: Serialize + DeserializeOwned + 'static>(
        &mut self,
        out: &mut Vec<u8>,
        item: &I,
    ) -> Result<(), Error> {
        append_delimited(out, item)?;
        self.items += 1;
        Ok(())
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

/// Appends one reply record (offset and outcome) to a reply frame's payload. A result that does
/// not encode is recorded as a codec failure for that item.
pub(super) fn append_outcome<O: Serialize + DeserializeOwned + 'static>(
    out: &mut Vec<u8>,
    offset: usize,
    outcome: &Result<O, Failure>,
) {
    let start = out.len();
    push_varint(out, offset as u64);
    let encoded = match outcome {
        Ok(value) => {
            out.push(OK);
            append_delimited(out, value)
        }
        Err(Failure::Panicked(message)) => {
            out.push(PANICKED);
            append_delimited(out, message)
        }
        Err(Failure::Codec(message)) => {
            out.push(CODEC);
            append_delimited(out, message)
        }
    };
    if let Err(err) = encoded {
        out.truncate(start);
        let message = match err {
            Error::Codec(message) => message,
            other => other.to_string(),
        };
        append_outcome::<O>(out, offset, &Err(Failure::Codec(message)));
    }
}

/// Starts a reply frame for chunk `chunk`; append records with [`append_outcome`], end it with
/// [`frame::finish_frame`].
pub(super) fn begin_replies(out: &mut Vec<u8>, chunk: u64) -> usize {
    let start = frame::begin_frame(out);
    push_varint(out, chunk);
    start
}

/// The codec of the worker's task reader.
pub(super) struct TaskCodec<I>(PhantomData<fn() -> I>);

impl<I> TaskCodec<I> {
    pub(super) fn new() -> Self {
        TaskCodec(PhantomData)
    }
}

impl<I: Serialize + DeserializeOwned + 'static> Codec<Tasks<I>> for TaskCodec<I> {
    fn encode(&self, tasks: &Tasks<I>, out: &mut Vec<u8>) -> Result<(), Error> {
        push_varint(out, tasks.chunk);
        for item in &tasks.items {
            let Ok(item) = item else {
                return Err(Error::Codec("a task whose item did not decode cannot be sent".into()));
            };
            append_delimited(out, item)?;
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Tasks<I>, Error> {
        let (chunk, mut rest) = take_varint(bytes)?;
        let mut items = Vec::new();
        while !rest.is_empty() {
            let (value, tail) = take_delimited(rest)?;
            items.push(Postcard.decode(value).map_err(|e| e.to_string()));
            rest = tail;
        }
        Ok(Tasks { chunk, items })
    }
}

/// The codec of the parent's reply reader.
pub(super) struct ReplyCodec<O>(PhantomData<fn() -> O>);

impl<O> ReplyCodec<O> {
    pub(super) fn new() -> Self {
        ReplyCodec(PhantomData)
    }
}

impl<O: Serialize + DeserializeOwned + 'static> Codec<Replies<O>> for ReplyCodec<O> {
    fn encode(&self, replies: &Replies<O>, out: &mut Vec<u8>) -> Result<(), Error> {
        push_varint(out, replies.chunk);
        for (offset, outcome) in &replies.outcomes {
            append_outcome(out, *offset, outcome);
        }
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Replies<O>, Error> {
        let (chunk, mut rest) = take_varint(bytes)?;
        let mut outcomes = Vec::new();
        while !rest.is_empty() {
            let (offset, tail) = take_varint(rest)?;
            let Some((&tag, tail)) = tail.split_first() else {
                return Err(Error::Codec("a pool reply without its outcome".into()));
            };
            let (value, tail) = take_delimited(tail)?;
            let text = |value| Postcard.decode(value).unwrap_or_else(|e: Error| e.to_string());
            let outcome = match tag {
                OK => Postcard.decode(value).map_err(|e| Failure::Codec(e.to_string())),
                PANICKED => Err(Failure::Panicked(text(value))),
                CODEC => Err(Failure::Codec(text(value))),
                other => Err(Failure::Codec(format!("a pool reply with an unknown tag {other}"))),
            };
            let offset = usize::try_from(offset)
                .map_err(|_| Error::Codec(format!("a pool reply for offset {offset}")))?;
            outcomes.push((offset, outcome));
            rest = tail;
        }
        Ok(Replies { chunk, outcomes })
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
            tasks.push(&mut out, item).unwrap();
        }
        tasks.finish(&mut out).unwrap();
        out
    }

    fn reply_frame<O: Serialize + DeserializeOwned + 'static>(
        chunk: u64,
        outcomes: &[(usize, Result<O, Failure>)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_replies(&mut out, chunk);
        for (offset, outcome) in outcomes {
            append_outcome(&mut out, *offset, outcome);
        }
        frame::finish_frame(&mut out, start).unwrap();
        out
    }

    #[test]
    fn a_chunk_of_tasks_round_trips_with_its_id() {
        let out = task_frame(300, &["a".to_string(), "item".to_string(), "x".repeat(200)]);
        let tasks = TaskCodec::<String>::new().decode(payload(&out)).unwrap();
        assert_eq!(tasks.chunk, 300);
        assert_eq!(tasks.items, [Ok("a".into()), Ok("item".into()), Ok("x".repeat(200))]);
    }

    #[test]
    fn an_item_that_does_not_decode_fails_only_itself() {
        let out = task_frame(7, &[1u64, u64::MAX, 2]);
        let tasks = TaskCodec::<u8>::new().decode(payload(&out)).unwrap();
        assert_eq!(tasks.chunk, 7);
        assert_eq!(tasks.items[0], Ok(1));
        assert!(tasks.items[1].as_ref().unwrap_err().contains("u8"));
        assert_eq!(tasks.items[2], Ok(2));
    }

    #[test]
    fn every_reply_outcome_round_trips() {
        let outcomes = vec![
            (0, Ok(vec![1u32, 2])),
            (5, Err(Failure::Panicked("boom".into()))),
            (2, Err(Failure::Codec("bad".into()))),
        ];
        let out = reply_frame(4, &outcomes);
        let replies = ReplyCodec::<Vec<u32>>::new().decode(payload(&out)).unwrap();
        assert_eq!(replies.chunk, 4);
        assert_eq!(replies.outcomes, outcomes);
    }

    #[test]
    fn a_result_that_does_not_decode_fails_only_its_item() {
        let out = reply_frame(9, &[(0, Ok::<_, Failure>(u64::MAX)), (1, Ok(3))]);
        let replies = ReplyCodec::<u8>::new().decode(payload(&out)).unwrap();
        assert!(matches!(replies.outcomes[0], (0, Err(Failure::Codec(_)))));
        assert_eq!(replies.outcomes[1], (1, Ok(3)));
    }

    #[test]
    fn a_result_that_does_not_encode_is_recorded_as_a_codec_failure() {
        let out = reply_frame(1, &[(0, Ok(Refuses)), (1, Ok(Refuses))]);
        let replies = ReplyCodec::<u8>::new().decode(payload(&out)).unwrap();
        assert_eq!(replies.outcomes.len(), 2);
        assert!(replies.outcomes.iter().all(|o| matches!(o, (_, Err(Failure::Codec(_))))));
    }

    #[test]
    fn garbage_and_lying_lengths_are_codec_errors() {
        assert!(matches!(ReplyCodec::<u8>::new().decode(&[0xff; 11]), Err(Error::Codec(_))));
        assert!(matches!(TaskCodec::<u8>::new().decode(&[]), Err(Error::Codec(_))));
        // Chunk 1, an item claiming 100 bytes where 1 remains.
        assert!(matches!(TaskCodec::<u8>::new().decode(&[1, 100, 0]), Err(Error::Codec(_))));
        // Chunk 1, offset 0, tag OK, then no length.
        assert!(matches!(ReplyCodec::<u8>::new().decode(&[1, 0, OK]), Err(Error::Codec(_))));
        assert!(matches!(ReplyCodec::<u8>::new().decode(&[1, 0]), Err(Error::Codec(_))));
    }

    #[test]
    fn an_unencodable_item_leaves_the_chunk_as_it_was() {
        let mut out = vec![1, 2, 3];
        let mut tasks = TaskChunk::begin(&mut out, 1);
        tasks.push(&mut out, &5u8).unwrap();
        let before = out.clone();
        assert!(matches!(tasks.push(&mut out, &Refuses), Err(Error::Codec(_))));
        assert_eq!((out.clone(), tasks.len()), (before, 1));
        tasks.finish(&mut out).unwrap();
        let decoded = TaskCodec::<u8>::new().decode(&out[3 + frame::HEADER_LEN..]).unwrap();
        assert_eq!(decoded.items, [Ok(5)]);
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
