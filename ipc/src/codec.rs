//! Codecs: how a value becomes a frame's payload and back (gipc's `encoder`/`decoder` pair).
//!
//! Guaranteed: [`Postcard`] round-trips any serde type and rejects bytes that are not exactly one
//! value (garbage or trailing bytes) with [`Error::Codec`]; [`Raw`] passes bytes through unchanged;
//! neither panics on any input. Postcard decodes under [`DecodeLimits`] (see [`limits`]): nesting
//! depth, a memory budget tied to the payload's length, and sequence lengths capped by both, so an
//! untrusted peer cannot overflow the reader's stack, make it allocate many times what it sent,
//! or keep it spinning. Not guaranteed: postcard's byte layout across postcard major versions,
//! nor the wording of the error messages.

use std::any::type_name;

use postcard::ser_flavors::Flavor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::frame::Payload;

pub mod limits;

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
        }
    }

    /// The payload of `value` as it stands, if the codec sends values unchanged (as [`Raw`]
    /// does): the writer then writes it straight from `value` instead of copying it into a frame.
    fn as_payload<'a>(&self, value: &'a T) -> Option<&'a [u8]> {
        let _ = value;
        None
    }
}

/// The default codec: any `Serialize + DeserializeOwned` type, in postcard's compact format.
///
/// Not compatible with gipc's default (pickle); both ends must be greenhub with the same `T`.
///
/// Decoding is bounded ([`limits`]): [`decode`](Codec::decode) uses the default
/// [`DecodeLimits`], a [`Reader`](crate::Reader) its own (`set_max_depth`, `set_max_expansion`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        postcard::serialize_with_flavor(value, AppendTo(out)).map_err(|err| {
            out.truncate(start);
            Error::Codec(format!("postcard could not encode a {}: {err}", type_name::<T>()))
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, Error> {
        decode_postcard(bytes, &DecodeLimits::default())
    }

    fn decode_within(&self, payload: Payload<'_>, limits: &DecodeLimits) -> Result<T, Error> {
        decode_postcard(payload.as_slice(), limits)
    }
}

/// One `T` that must fill `bytes` exactly, decoded under `limits`.
fn decode_postcard<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Error> {
    let (value, rest) = limits::decode::<T>(bytes, limits).map_err(|why| {
        Error::Codec(format!("postcard could not decode a {}: {why}", type_name::<T>()))
    })?;
    if rest > 0 {
        return Err(Error::Codec(format!(
            "postcard decoded a {} from the first {} bytes of a {}-byte payload: \
             {rest} bytes were left over (do both ends use the same type?)",
            type_name::<T>(),
            bytes.len() - rest,
            bytes.len(),
        )));
    }
    Ok(value)
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

    fn as_payload<'a>(&self, value: &'a Vec<u8>) -> Option<&'a [u8]> {
        Some(value)
    }
}

/// A postcard output that appends to a borrowed `Vec`, so values are encoded straight into the
/// frame buffer, behind the header, with no intermediate vector.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
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
        T: Serialize + DeserializeOwned + PartialEq + Debug,
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
