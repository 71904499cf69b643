//! Codecs: how a value becomes a frame's payload and back (gipc's `encoder`/`decoder` pair).
//!
//! Guaranteed: [`Postcard`] round-trips any serde type and rejects bytes that are not exactly one
//! value (garbage or trailing bytes) with [`Error::Codec`]; [`Raw`] passes bytes through unchanged;
//! neither panics on any input. Postcard decodes under [`DecodeLimits`] (see [`limits`]): nesting
//! depth, a memory budget tied to the payload's length, and sequence lengths capped by both, so an
//! untrusted peer cannot overflow the reader's stack, make it allocate many times what it sent,
//! or keep it spinning. A message that is a `Vec<u8>`, `Box<[u8]>` or `String`, or a number or
//! `bool`, takes a fast path ([`Postcard`]'s docs) with the same bytes on the wire and the same
//! verdict on every payload. Not guaranteed: postcard's byte layout across postcard major
//! versions, nor the wording of the error messages.

use std::any::{Any, type_name};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::frame::{Parts, Payload};

mod bytes;
mod encoder;
pub mod limits;
mod scalar;

pub use limits::{BUDGET_FLOOR, DEFAULT_MAX_DEPTH, DEFAULT_MAX_EXPANSION, DecodeLimits};

/// Turns values of type `T` into payload bytes and back.
///
/// The contract:
/// - `encode` **appends** the payload to `out`, which may already hold other frames and this
///   frame's header; it must not touch the bytes already there. If it fails, whatever it appended is
///   discarded by the caller.
/// - `decode` receives exactly one payload, as `encode` produced it, or anything a peer sent: it
///   must return an error, never panic, on bytes it does not understand.
///
/// # Example: a custom codec
///
/// A codec for UTF-8 strings sent as plain bytes:
///
/// ```
/// use greenhub_ipc::{Codec, Error};
///
/// #[derive(Debug, Clone, Copy, Default)]
/// struct Utf8;
///
/// impl Codec<String> for Utf8 {
///     fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), Error> {
///         out.extend_from_slice(value.as_bytes());
///         Ok(())
///     }
///
///     fn decode(&self, bytes: &[u8]) -> Result<String, Error> {
///         std::str::from_utf8(bytes)
///             .map(str::to_owned)
///             .map_err(|err| Error::Codec(format!("payload is not UTF-8: {err}")))
///     }
/// }
///
/// let mut payload = Vec::new();
/// Utf8.encode(&"grüße".to_string(), &mut payload)?;
/// assert_eq!(Utf8.decode(&payload)?, "grüße");
/// assert!(matches!(Utf8.decode(&[0xff]), Err(Error::Codec(_))));
/// # Ok::<(), Error>(())
/// ```
pub trait Codec<T> {
    /// Appends the payload for `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), Error>;

    /// Rebuilds a value from one whole payload.
    fn decode(&self, bytes: &[u8]) -> Result<T, Error>;

    /// Decodes a payload handed over in a buffer of its own (a big message arrives that way).
    /// The default decodes from the slice; a codec whose value *is* the bytes keeps the buffer.
    fn decode_owned(&self, bytes: Vec<u8>) -> Result<T, Error> {
        self.decode(&bytes)
    }

    /// Decodes a payload under the reader's [`DecodeLimits`] (what [`Reader::get`] calls). The
    /// default ignores the limits and calls [`decode`](Self::decode) or
    /// [`decode_owned`](Self::decode_owned); a codec that builds nested values from untrusted
    /// bytes should honour them, as [`Postcard`] does.
    ///
    /// [`Reader::get`]: crate::Reader::get
    fn decode_within(&self, payload: Payload<'_>, limits: &DecodeLimits) -> Result<T, Error> {
        let _ = limits;
        match payload {
            Payload::Borrowed(bytes) => self.decode(bytes),
            Payload::Owned(bytes) => self.decode_owned(bytes),
            split @ Payload::Split { .. } => self.decode_owned(split.into_vec()),
        }
    }

    /// The payload of `value` as bytes it already holds, behind at most
    /// [`MAX_HEAD`](crate::frame::MAX_HEAD) bytes the codec computes (as [`Raw`] sends a
    /// `Vec<u8>` unchanged, and [`Postcard`] a `Vec<u8>` behind its length): the writer then
    /// writes a big one straight from `value` instead of copying it into a frame. `None` (the
    /// default): the writer calls [`encode`](Self::encode).
    fn as_payload<'a>(&self, value: &'a T) -> Option<Parts<'a>> {
        let _ = value;
        None
    }

    /// How many leading bytes of a big payload of `payload_len` bytes the reader should keep
    /// apart (at most [`MAX_HEAD`](crate::frame::MAX_HEAD)), so that the rest arrives in a
    /// buffer of its own, handed to [`decode_within`](Self::decode_within) as
    /// [`Payload::Split`]: for a codec whose value is the payload minus a prefix, which then
    /// keeps that buffer. The default, 0, hands big payloads over whole ([`Payload::Owned`]).
    fn head_len(&self, payload_len: usize) -> usize {
        let _ = payload_len;
        0
    }
}

/// The default codec: any `Serialize + DeserializeOwned` type, in postcard's compact format.
///
/// Not compatible with gipc's default (pickle); both ends must be greenhub with the same `T`,
/// or any program decoding postcard with the same type.
///
/// Decoding is bounded ([`limits`]): [`decode`](Codec::decode) uses the default
/// [`DecodeLimits`], a [`Reader`](crate::Reader) its own (`set_max_depth`, `set_max_expansion`).
///
/// # Bytes: the fast path, and `serde_bytes` for fields
///
/// A message whose type *is* `Vec<u8>`, `Box<[u8]>` or `String` (`pipe::<Vec<u8>>()`) skips
/// serde: the payload is written as postcard's length prefix and the bytes, straight from the
/// value, and a big one is read into a buffer that becomes the received value. (The type is
/// checked with a `TypeId` comparison, a constant once `T` is known: hence `T: 'static`.)
/// The bytes on the wire are postcard's, so a peer using plain postcard interoperates, and the
/// reader's limits apply as on the generic path.
///
/// A message that is one integer (`u8` to `u64`, `i8` to `i64`, and `usize` and `isize` where
/// they are 64 bits), `f32`, `f64` or `bool` is likewise decoded without serde (postcard's
/// varint read straight off the payload; the same values and the same errors): that was most
/// of the cost of a pool's tiny items.
///
/// Bytes *inside* another type take serde's path, and serde's `Vec<u8>` is a sequence: postcard
/// encodes and decodes it one `u8` at a time, a call or two and a bounds check per byte (a
/// `struct { data: Vec<u8> }` of 100 MB moves at a fifth of the fast path's speed and slower
/// than gipc's pickle; docs/pipes-and-framing.md has the figures). Mark such fields with
/// [`serde_bytes`](https://docs.rs/serde_bytes) (or use `serde_bytes::ByteBuf`): postcard then
/// writes and reads them as one byte string, with the same bytes on the wire, copied once into
/// the frame and once out of it.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct Blob {
///     name: String,
///     #[serde(with = "serde_bytes")] // one byte string, not a sequence of u8
///     data: Vec<u8>,
/// }
///
/// greenhub::run(|| {
///     let (reader, writer) = greenhub_ipc::pipe::<Blob>().unwrap();
///     let blob = Blob { name: "frame-0".into(), data: vec![0xab; 64 * 1024] };
///     writer.put(&blob).unwrap();
///     assert_eq!(reader.get().unwrap(), blob);
/// });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned + 'static> Codec<T> for Postcard {
    #[inline]
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
        if let Some(bytes) = bytes::as_bytes(value) {
            bytes::encode(bytes, out);
            return Ok(());
        }
        let start = out.len();
        encoder::encode(value, out).map_err(|err| {
            out.truncate(start);
            Error::Codec(format!("postcard could not encode a {}: {err}", type_name::<T>()))
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, Error> {
        self.decode_within(Payload::Borrowed(bytes), &DecodeLimits::default())
    }

    fn decode_owned(&self, bytes: Vec<u8>) -> Result<T, Error> {
        self.decode_within(Payload::Owned(bytes), &DecodeLimits::default())
    }

    fn decode_within(&self, payload: Payload<'_>, limits: &DecodeLimits) -> Result<T, Error> {
        let len = payload.len();
        if let Some(kind) = bytes::Kind::of::<T>() {
            return bytes::decode(kind, payload, limits).map_err(|refusal| match refusal {
                bytes::Refusal::Invalid(why) => cannot_decode::<T>(why),
                bytes::Refusal::LeftOver { rest, .. } => left_over::<T>(len, rest),
            });
        }
        match decode_one::<T>(&payload.contiguous(), limits).map_err(cannot_decode::<T>)? {
            (value, 0) => Ok(value),
            (_, rest) => Err(left_over::<T>(len, rest)),
        }
    }

    fn as_payload<'a>(&self, value: &'a T) -> Option<Parts<'a>> {
        bytes::as_bytes(value).map(bytes::parts)
    }

    fn head_len(&self, payload_len: usize) -> usize {
        match bytes::Kind::of::<T>() {
            Some(_) => bytes::head_len(payload_len),
            None => 0,
        }
    }
}

/// Decodes one `T` that fills `bytes` under the default limits: what [`Postcard`]'s `decode` does,
/// without going through a [`Payload`] (for the pool, which decodes one small value per item
/// and where that detour was a fifth of the parent's time). Inlined with [`limits::decode`]:
/// out of line, the caller read the returned value back from the stack with a wide load over
/// narrower stores, a store-forwarding stall that perf put at most of the pool's decode time.
#[inline(always)]
pub(crate) fn decode_slice<T: Serialize + DeserializeOwned + 'static>(
    bytes: &[u8],
) -> Result<T, Error> {
    if bytes::Kind::of::<T>().is_some() {
        return Codec::<T>::decode(&Postcard, bytes);
    }
    let limits = DecodeLimits::default();
    match decode_one::<T>(bytes, &limits).map_err(cannot_decode::<T>)? {
        (value, 0) => Ok(value),
        (_, rest) => Err(left_over::<T>(bytes.len(), rest)),
    }
}

/// One `T` off the front of `bytes` and how many bytes followed it, or postcard's (or a
/// limit's) reason why not: through serde, or for a number or `bool` without it (`scalar.rs`).
#[inline(always)]
fn decode_one<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(T, usize), String> {
    match scalar::decode::<T>(bytes) {
        Some(decoded) => decoded,
        None => limits::decode::<T>(bytes, limits),
    }
}

/// `value` as a `T`, which it is: for the fast paths, once they have compared `TypeId`s.
pub(crate) fn cast<T: 'static, U: 'static>(value: U) -> T {
    let mut slot = Some(value);
    let any: &mut dyn Any = &mut slot;
    match any.downcast_mut::<Option<T>>().and_then(Option::take) {
        Some(value) => value,
        None => unreachable!("a codec fast path cast a value to another type than its own"),
    }
}

/// The error of a payload that is not a `T`, with postcard's (or the limit's) reason.
fn cannot_decode<T>(why: String) -> Error {
    Error::Codec(format!("postcard could not decode a {}: {why}", type_name::<T>()))
}

/// The error of a `len`-byte payload holding one `T` and `rest` more bytes.
fn left_over<T>(len: usize, rest: usize) -> Error {
    Error::Codec(format!(
        "postcard decoded a {} from the first {} bytes of a {len}-byte payload: \
         {rest} bytes were left over (do both ends use the same type?)",
        type_name::<T>(),
        len - rest,
    ))
}

/// Bytes as put: the payload is the `Vec<u8>` itself (gipc's `encoder=None, decoder=None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Vec<u8>> for Raw {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(bytes.to_vec())
    }

    fn decode_owned(&self, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(bytes)
    }

    fn as_payload<'a>(&self, value: &'a Vec<u8>) -> Option<Parts<'a>> {
        Some(Parts::body_only(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::fmt::Debug;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Job {
        id: u64,
        name: String,
        args: Vec<String>,
        deadline_ms: Option<u32>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Reply {
        Done,
        Progress(f64),
        Failed { code: i32, why: String },
    }

    fn round_trip<T>(value: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
    {
        let mut out = Vec::new();
        Postcard.encode(&value, &mut out).unwrap();
        let back: T = Postcard.decode(&out).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn postcard_round_trips_integers() {
        round_trip(0u8);
        round_trip(u64::MAX);
        round_trip(i64::MIN);
        round_trip(-1i32);
        round_trip(u128::MAX);
    }

    #[test]
    fn postcard_round_trips_strings_and_collections() {
        round_trip(String::new());
        round_trip("grüße, 世界".to_string());
        round_trip(vec![1u16, 2, 3]);
        round_trip(Vec::<u8>::new());
        round_trip(BTreeMap::from([(1u8, "one".to_string()), (2, "two".into())]));
        round_trip((true, 'x', Some(3u8), None::<u8>));
    }

    #[test]
    fn postcard_round_trips_structs_and_enums() {
        round_trip(Job {
            id: 7,
            name: "resize".into(),
            args: vec!["a.png".into(), "-q".into()],
            deadline_ms: Some(250),
        });
        round_trip(Reply::Done);
        round_trip(Reply::Progress(0.5));
        round_trip(Reply::Failed { code: -2, why: "no such file".into() });
        round_trip(vec![Reply::Done, Reply::Progress(1.0)]);
    }

    #[test]
    fn postcard_encode_appends_after_existing_bytes() {
        let mut out = vec![0xde, 0xad];
        Postcard.encode(&300u32, &mut out).unwrap();
        assert_eq!(&out[..2], [0xde, 0xad]);
        assert_eq!(Codec::<u32>::decode(&Postcard, &out[2..]).unwrap(), 300);
    }

    #[test]
    fn postcard_encode_failure_leaves_out_unchanged() {
        // postcard writes a sequence's length first, so it refuses one of unknown length.
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(std::iter::from_fn(|| None::<u8>))
            }
        }
        impl<'de> Deserialize<'de> for Unsized {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Ok(Unsized)
            }
        }
        let mut out = vec![1, 2, 3];
        let err = Postcard.encode(&Unsized, &mut out).unwrap_err();
        assert!(matches!(&err, Error::Codec(msg) if msg.contains("Unsized")), "{err}");
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn postcard_garbage_is_a_codec_error_naming_the_type() {
        let garbage: &[(&[u8], &str)] = &[
            (&[], "empty"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "unterminated varint"),
            (&[2], "bool that is 2"),
        ];
        for (bytes, what) in garbage {
            let err = Codec::<bool>::decode(&Postcard, bytes).unwrap_err();
            assert!(matches!(&err, Error::Codec(msg) if msg.contains("bool")), "{what}: {err}");
        }
        let err = Codec::<Job>::decode(&Postcard, &[1, 200, 0xff]).unwrap_err();
        assert!(matches!(&err, Error::Codec(msg) if msg.contains("Job")), "{err}");
        let bad_utf8 = [2, 0xc3, 0x28];
        assert!(Codec::<String>::decode(&Postcard, &bad_utf8).is_err());
    }

    #[test]
    fn postcard_trailing_bytes_are_a_codec_error() {
        let mut out = Vec::new();
        Postcard.encode(&5u8, &mut out).unwrap();
        out.push(0);
        let err = Codec::<u8>::decode(&Postcard, &out).unwrap_err();
        assert!(matches!(&err, Error::Codec(msg) if msg.contains("left over")), "{err}");
    }

    #[test]
    fn postcard_huge_length_prefix_is_an_error_not_an_allocation() {
        // A Vec<u64> claiming u32::MAX elements, followed by nothing.
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(Codec::<Vec<u64>>::decode(&Postcard, &bytes).is_err());
    }

    #[test]
    fn raw_is_the_identity() {
        for bytes in [Vec::new(), vec![0], (0..=255).collect::<Vec<u8>>()] {
            let mut out = vec![9];
            Raw.encode(&bytes, &mut out).unwrap();
            assert_eq!(out[0], 9);
            assert_eq!(&out[1..], &bytes[..]);
            assert_eq!(Raw.decode(&out[1..]).unwrap(), bytes);
        }
    }
}
