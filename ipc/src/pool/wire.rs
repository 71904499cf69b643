//! What a pool's pipes carry: tasks (parent to worker) and replies (worker to parent), each one
//! frame tagged with the item's id, so a reply finds its caller whatever order replies come in.
//!
//! A task's payload is the id (a postcard varint), then the item (postcard). A reply's is the
//! id, a tag byte (0: the result follows; 1: the function panicked, its message follows; 2: the
//! result could not be encoded or the item decoded, the codec's message follows), then that
//! value. Guarantee: a payload whose id reads decodes to a task or reply even if its value does
//! not, so one bad value fails only its own item.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Postcard};
use crate::{Error, frame};

/// One item for a worker.
#[derive(Debug)]
pub(super) struct Task<I> {
    pub(super) id: u64,
    /// The item, or why it could not be decoded.
    pub(super) item: Result<I, String>,
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

/// A worker's answer for one item.
#[derive(Debug)]
pub(super) struct Reply<O> {
    pub(super) id: u64,
    pub(super) outcome: Result<O, Failure>,
}

const OK: u8 = 0;
const PANICKED: u8 = 1;
const CODEC: u8 = 2;

/// Appends the frame of task `id` carrying `item`; on error (the item cannot be encoded) `out`
/// is unchanged.
pub(super) fn append_task<I>(out: &mut Vec<u8>, id: u64, item: &I) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
{
    frame::append_frame_with(out, |payload| {
        Postcard.encode(&id, payload)?;
        Postcard.encode(item, payload)
    })
}

/// Appends the frame of the reply to task `id`; on error (the result cannot be encoded) `out`
/// is unchanged.
pub(super) fn append_reply<O>(
    out: &mut Vec<u8>,
    id: u64,
    outcome: &Result<O, Failure>,
) -> Result<(), Error>
where
    O: Serialize + DeserializeOwned + 'static,
{
    frame::append_frame_with(out, |payload| {
        Postcard.encode(&id, payload)?;
        match outcome {
            Ok(value) => {
                payload.push(OK);
                Postcard.encode(value, payload)
            }
            Err(Failure::Panicked(message)) => {
                payload.push(PANICKED);
                Postcard.encode(message, payload)
            }
            Err(Failure::Codec(message)) => {
                payload.push(CODEC);
                Postcard.encode(message, payload)
            }
        }
    })
}

/// Splits the id off a payload.
fn take_id(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    postcard::take_from_bytes::<u64>(bytes)
        .map_err(|e| Error::Codec(format!("a pool message without a valid id: {e}")))
}

/// The codec of the worker's task reader.
pub(super) struct TaskCodec<I>(PhantomData<fn() -> I>);

impl<I> TaskCodec<I> {
    pub(super) fn new() -> Self {
        TaskCodec(PhantomData)
    }
}

impl<I: Serialize + DeserializeOwned + 'static> Codec<Task<I>> for TaskCodec<I> {
    fn encode(&self, task: &Task<I>, out: &mut Vec<u8>) -> Result<(), Error> {
        let Ok(item) = &task.item else {
            return Err(Error::Codec("a task whose item did not decode cannot be sent".into()));
        };
        Postcard.encode(&task.id, out)?;
        Postcard.encode(item, out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Task<I>, Error> {
        let (id, rest) = take_id(bytes)?;
        let item = Postcard.decode(rest).map_err(|e| e.to_string());
        Ok(Task { id, item })
    }
}

/// The codec of the parent's reply reader.
pub(super) struct ReplyCodec<O>(PhantomData<fn() -> O>);

impl<O> ReplyCodec<O> {
    pub(super) fn new() -> Self {
        ReplyCodec(PhantomData)
    }
}

impl<O: Serialize + DeserializeOwned + 'static> Codec<Reply<O>> for ReplyCodec<O> {
    fn encode(&self, reply: &Reply<O>, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut frame = Vec::new();
        append_reply(&mut frame, reply.id, &reply.outcome)?;
        out.extend_from_slice(&frame[frame::HEADER_LEN..]);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Reply<O>, Error> {
        let (id, rest) = take_id(bytes)?;
        let Some((&tag, value)) = rest.split_first() else {
            let outcome = Err(Failure::Codec("a pool reply without its outcome".into()));
            return Ok(Reply { id, outcome });
        };
        let text = |value| Postcard.decode(value).unwrap_or_else(|e: Error| e.to_string());
        let outcome = match tag {
            OK => Postcard.decode(value).map_err(|e| Failure::Codec(e.to_string())),
            PANICKED => Err(Failure::Panicked(text(value))),
            CODEC => Err(Failure::Codec(text(value))),
            other => Err(Failure::Codec(format!("a pool reply with an unknown tag {other}"))),
        };
        Ok(Reply { id, outcome })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8]) -> &[u8] {
        &frame[frame::HEADER_LEN..]
    }

    #[test]
    fn a_task_round_trips_with_its_id() {
        let mut out = Vec::new();
        append_task(&mut out, 300, &"item".to_string()).unwrap();
        let task = TaskCodec::<String>::new().decode(payload(&out)).unwrap();
        assert_eq!((task.id, task.item), (300, Ok("item".to_string())));
    }

    #[test]
    fn a_task_whose_item_does_not_decode_keeps_its_id() {
        let mut out = Vec::new();
        append_task(&mut out, 7, &u64::MAX).unwrap();
        let task = TaskCodec::<u8>::new().decode(payload(&out)).unwrap();
        assert_eq!(task.id, 7);
        assert!(task.item.unwrap_err().contains("u8"));
    }

    #[test]
    fn every_reply_outcome_round_trips() {
        let outcomes = [
            Ok(vec![1u32, 2]),
            Err(Failure::Panicked("boom".into())),
            Err(Failure::Codec("bad".into())),
        ];
        for (id, outcome) in outcomes.into_iter().enumerate() {
            let mut out = Vec::new();
            append_reply(&mut out, id as u64, &outcome).unwrap();
            let reply = ReplyCodec::<Vec<u32>>::new().decode(payload(&out)).unwrap();
            assert_eq!(reply.id, id as u64);
            assert_eq!(reply.outcome, outcome);
        }
    }

    #[test]
    fn a_result_that_does_not_decode_fails_only_its_item() {
        let mut out = Vec::new();
        append_reply(&mut out, 9, &Ok::<_, Failure>(u64::MAX)).unwrap();
        let reply = ReplyCodec::<u8>::new().decode(payload(&out)).unwrap();
        assert_eq!(reply.id, 9);
        assert!(matches!(reply.outcome, Err(Failure::Codec(_))));
    }

    #[test]
    fn garbage_without_an_id_is_a_codec_error() {
        assert!(matches!(ReplyCodec::<u8>::new().decode(&[0xff; 11]), Err(Error::Codec(_))));
        assert!(matches!(TaskCodec::<u8>::new().decode(&[]), Err(Error::Codec(_))));
    }

    #[test]
    fn an_unencodable_item_leaves_the_buffer_as_it_was() {
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
        let mut out = vec![1, 2, 3];
        assert!(matches!(append_task(&mut out, 1, &Refuses), Err(Error::Codec(_))));
        assert_eq!(out, [1, 2, 3]);
    }
}
