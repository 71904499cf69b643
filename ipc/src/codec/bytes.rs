//! The default codec's fast path for values that are bytes: a `Vec<u8>`, `Box<[u8]>` or
//! `String` sent as the whole message is postcard's length prefix and the bytes, moved in one
//! piece (or not at all) instead of through one serde call per byte.
//!
//! Guaranteed: the payload is exactly postcard's (a varint length, then the bytes; a
//! `Vec<u8>` and a `serde_bytes::ByteBuf` encode alike), so a peer using plain postcard reads
//! what this path writes and this path reads what it writes; a payload is accepted or refused
//! exactly as [`limits::decode`](super::limits) would (the same depth and budget limits, the
//! same postcard errors, the same bytes-left-over error), and nothing is allocated for a length
//! the payload does not hold. Not guaranteed: that a value nested in another type (a field, an
//! `Option<Vec<u8>>`) takes this path: only the message type itself is checked, by `TypeId`,
//! which the compiler folds to a constant for each `T`.
//!
//! # The copies a message makes
//!
//! A big `Vec<u8>` is written from where it lies (`Codec::as_payload`: header and prefix, then
//! the vector, in one `writev`), read straight into a buffer of its own behind the prefix (the
//! decoder keeps the prefix apart: [`head_len`], `Payload::Split`), and that buffer becomes the
//! received vector: no copy in user space on either side, as with `Raw`. A small one is copied
//! into the frame and out of the reader's buffer once each, as any message is.

use std::any::{Any, TypeId};

use crate::frame::{Parts, Payload};

use super::limits;
use super::{DecodeLimits, cast};

/// The longest postcard varint of a `u64` (and of a length on a 64-bit platform).
const MAX_PREFIX: usize = 10;

/// The message types that take the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `Vec<u8>`: serde's sequence of `u8`.
    Vec,
    /// `Box<[u8]>`: serde decodes it through a `Vec<u8>`.
    Boxed,
    /// `String`: serde's string, UTF-8 checked.
    Text,
}

impl Kind {
    /// The kind of `T`, if it is one of the fast types (a constant for each `T`).
    #[inline(always)]
    pub(super) fn of<T: 'static>() -> Option<Kind> {
        let t = TypeId::of::<T>();
        if t == TypeId::of::<Vec<u8>>() {
            Some(Kind::Vec)
        } else if t == TypeId::of::<Box<[u8]>>() {
            Some(Kind::Boxed)
        } else if t == TypeId::of::<String>() {
            Some(Kind::Text)
        } else {
            None
        }
    }
}

/// The bytes `value` consists of, if its type is one of the fast types.
#[inline(always)]
pub(super) fn as_bytes<T: 'static>(value: &T) -> Option<&[u8]> {
    let any: &dyn Any = value;
    if let Some(bytes) = any.downcast_ref::<Vec<u8>>() {
        Some(bytes)
    } else if let Some(bytes) = any.downcast_ref::<Box<[u8]>>() {
        Some(bytes)
    } else {
        any.downcast_ref::<String>().map(String::as_bytes)
    }
}

/// Appends postcard's encoding of the byte string `bytes` to `out`: its length, then itself.
pub(super) fn encode(bytes: &[u8], out: &mut Vec<u8>) {
    let (prefix, len) = length_prefix(bytes.len());
    out.reserve(len + bytes.len());
    out.extend_from_slice(&prefix[..len]);
    out.extend_from_slice(bytes);
}

/// Postcard's encoding of the byte string `bytes`, as the prefix and the bytes themselves.
pub(super) fn parts(bytes: &[u8]) -> Parts<'_> {
    let (prefix, len) = length_prefix(bytes.len());
    Parts::new(&prefix[..len], bytes)
}

/// The varint postcard writes for a length `n` (LEB128: seven bits a byte, low bits first, the
/// top bit set on every byte but the last), and how many bytes of the array it fills.
fn length_prefix(n: usize) -> ([u8; MAX_PREFIX], usize) {
    let mut prefix = [0; MAX_PREFIX];
    let mut rest = n as u64; // usize is at most 64 bits on every platform Rust supports
    let mut len = 0;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            prefix[len] = low;
            return (prefix, len + 1);
        }
        prefix[len] = low | 0x80;
        len += 1;
    }
}

/// How many bytes the prefix of a byte string filling a payload of `payload_len` bytes takes:
/// the `k` with `length_prefix(payload_len - k)` `k` bytes long (there is at most one), or 0
/// if no byte string fills exactly that many bytes. The reader keeps these apart, so the rest
/// of a big payload arrives in the buffer that becomes the value.
pub(super) fn head_len(payload_len: usize) -> usize {
    (1..=MAX_PREFIX.min(payload_len)).find(|&k| length_prefix(payload_len - k).1 == k).unwrap_or(0)
}

/// Why a payload is not one value of the fast type: a message for `Error::Codec`, or bytes left
/// over after a whole value.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// What postcard or a limit said.
    Invalid(String),
    /// A whole value was followed by `rest` more bytes.
    LeftOver { rest: usize },
}

/// Decodes a `T` of kind `kind` (which must be `Kind::of::<T>()`) from `payload`, under
/// `limits`, exactly as the generic path would, but moving the bytes in one piece.
pub(super) fn decode<T: 'static>(
    kind: Kind,
    payload: Payload<'_>,
    limits: &DecodeLimits,
) -> Result<T, Refusal> {
    if kind != Kind::Text {
        // A sequence is one level deeper than the top.
        limits::check_sequence_depth(limits).map_err(Refusal::Invalid)?;
    }
    let payload_len = payload.len();
    match payload {
        Payload::Split { head, body } => match read_prefix(head) {
            // The usual case: the head is the whole prefix, and the body the bytes it counts.
            Ok((n, prefix)) if prefix == head.len() => {
                check(kind, n, &body, payload_len, limits)?;
                into_value(kind, body)
            }
            // A prefix that is not the shortest encoding of its length (postcard accepts those):
            // join the pieces and decode them in one.
            _ => decode(kind, Payload::Owned([head, &body[..]].concat()), limits),
        },
        Payload::Owned(mut bytes) => {
            let (n, prefix) = read_prefix(&bytes).map_err(Refusal::Invalid)?;
            check(kind, n, &bytes[prefix..], payload_len, limits)?;
            bytes.drain(..prefix); // one move of the bytes, within their own buffer
            into_value(kind, bytes)
        }
        Payload::Borrowed(bytes) => {
            let (n, prefix) = read_prefix(bytes).map_err(Refusal::Invalid)?;
            let body = &bytes[prefix..];
            check(kind, n, body, payload_len, limits)?;
            match kind {
                Kind::Text => {
                    let text = std::str::from_utf8(body).map_err(|_| bad_utf8())?;
                    Ok(cast(text.to_owned()))
                }
                Kind::Vec | Kind::Boxed => into_value(kind, body.to_vec()),
            }
        }
    }
}

/// The length postcard's prefix at the front of `bytes` announces, and how long the prefix is:
/// postcard's own varint decoding, so the same prefixes are accepted and refused.
fn read_prefix(bytes: &[u8]) -> Result<(usize, usize), String> {
    let (n, rest) = postcard::take_from_bytes::<u64>(bytes).map_err(|err| err.to_string())?;
    // A length over usize::MAX cannot be followed by that many bytes; postcard's own (usize)
    // varint refuses it as a bad varint.
    let n = usize::try_from(n).map_err(|_| postcard::Error::DeserializeBadVarint.to_string())?;
    Ok((n, bytes.len() - rest.len()))
}

/// The generic path's verdict on a byte string announcing `n` bytes with `body` after the
/// prefix, in the order it reaches it: a sequence charges each element (1 byte) as it reads it,
/// so the budget runs out first if it is smaller than what both can supply; then the end of the
/// payload; then a string's UTF-8 check; then bytes left over. `Ok`: `body` is exactly the
/// value's bytes (still to be checked for UTF-8 if it is a string).
fn check(
    kind: Kind,
    n: usize,
    body: &[u8],
    payload_len: usize,
    limits: &DecodeLimits,
) -> Result<(), Refusal> {
    let rest = body.len();
    let charged = match kind {
        // Each element is a byte; a `Box<[u8]>` is decoded as a `Vec<u8>` into its smaller slot
        // first, and the generic path charges the difference.
        Kind::Vec => Some(n.min(rest)),
        Kind::Boxed => Some(n.min(rest) + size_of::<Vec<u8>>() - size_of::<Box<[u8]>>()),
        Kind::Text => None, // a string holds its own wire bytes and is not charged
    };
    if let Some(charged) = charged {
        limits::check_budget(limits, payload_len, charged).map_err(Refusal::Invalid)?;
    }
    if n > rest {
        return Err(Refusal::Invalid(postcard::Error::DeserializeUnexpectedEnd.to_string()));
    }
    if n < rest {
        if kind == Kind::Text {
            std::str::from_utf8(&body[..n]).map_err(|_| bad_utf8())?;
        }
        return Err(Refusal::LeftOver { rest: rest - n });
    }
    Ok(())
}

/// The value of kind `kind` that is exactly `bytes`, without copying them.
fn into_value<T: 'static>(kind: Kind, bytes: Vec<u8>) -> Result<T, Refusal> {
    Ok(match kind {
        Kind::Vec => cast(bytes),
        Kind::Boxed => cast(bytes.into_boxed_slice()),
        Kind::Text => cast(String::from_utf8(bytes).map_err(|_| bad_utf8())?),
    })
}

/// postcard's error for a string that is not UTF-8.
fn bad_utf8() -> Refusal {
    Refusal::Invalid(postcard::Error::DeserializeBadUtf8.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::fmt::Debug;

    /// What the generic path (serde element by element, under `limits`) makes of `bytes`.
    fn generic<T: DeserializeOwned>(bytes: &[u8], limits: &DecodeLimits) -> Result<T, Refusal> {
        let (value, rest) = limits::decode::<T>(bytes, limits).map_err(Refusal::Invalid)?;
        match rest {
            0 => Ok(value),
            rest => Err(Refusal::LeftOver { rest }),
        }
    }

    /// What the fast path makes of `bytes`, handed over in each of the three shapes a payload
    /// arrives in; all three must agree.
    fn fast<T: 'static + PartialEq + Debug>(
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> Result<T, Refusal> {
        let kind = Kind::of::<T>().unwrap();
        let borrowed = decode::<T>(kind, Payload::Borrowed(bytes), limits);
        let owned = decode::<T>(kind, Payload::Owned(bytes.to_vec()), limits);
        assert_eq!(borrowed, owned, "borrowed and owned payloads disagree");
        let head = head_len(bytes.len()).max(usize::from(!bytes.is_empty()));
        for head in [head, 1, 3].into_iter().filter(|&h| h <= bytes.len()) {
            let (head, body) = bytes.split_at(head);
            let split = decode::<T>(kind, Payload::Split { head, body: body.to_vec() }, limits);
            assert_eq!(borrowed, split, "a split payload disagrees (head {head:?})");
        }
        borrowed
    }

    fn agree<T>(bytes: &[u8], limits: &DecodeLimits)
    where
        T: 'static + DeserializeOwned + PartialEq + Debug,
    {
        assert_eq!(fast::<T>(bytes, limits), generic::<T>(bytes, limits), "payload {bytes:x?}");
    }

    fn all_agree(bytes: &[u8], limits: &DecodeLimits) {
        agree::<Vec<u8>>(bytes, limits);
        agree::<Box<[u8]>>(bytes, limits);
        agree::<String>(bytes, limits);
    }

    /// postcard's own bytes for `value`.
    fn postcard<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).unwrap()
    }

    #[test]
    fn the_fast_types_are_recognised_and_others_are_not() {
        assert_eq!(Kind::of::<Vec<u8>>(), Some(Kind::Vec));
        assert_eq!(Kind::of::<Box<[u8]>>(), Some(Kind::Boxed));
        assert_eq!(Kind::of::<String>(), Some(Kind::Text));
        assert_eq!(Kind::of::<Vec<i8>>(), None);
        assert_eq!(Kind::of::<Option<Vec<u8>>>(), None);
        assert_eq!(Kind::of::<[u8; 4]>(), None);
        assert_eq!(as_bytes(&vec![1u8, 2]), Some(&[1u8, 2][..]));
        assert_eq!(as_bytes(&"hé".to_string()), Some("hé".as_bytes()));
        assert_eq!(as_bytes(&vec![1u16]), None);
    }

    #[test]
    fn the_length_prefix_is_postcards_varint() {
        for n in [0, 1, 127, 128, 255, 16_383, 16_384, 1 << 21, u32::MAX as usize, usize::MAX] {
            let (prefix, len) = length_prefix(n);
            assert_eq!(&prefix[..len], &postcard(&(n as u64))[..], "n = {n}");
        }
    }

    #[test]
    fn what_the_fast_path_writes_plain_postcard_reads_and_the_reverse() {
        for len in [0, 1, 127, 128, 300, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut ours = Vec::new();
            encode(&bytes, &mut ours);
            assert_eq!(ours, postcard(&bytes), "the same bytes as postcard's, {len} long");
            assert_eq!(postcard::from_bytes::<Vec<u8>>(&ours).unwrap(), bytes);
            let parts = parts(&bytes);
            assert_eq!([parts.head(), parts.body()].concat(), ours);
            let theirs = postcard(&bytes);
            let limits = DecodeLimits::default();
            assert_eq!(fast::<Vec<u8>>(&theirs, &limits), Ok(bytes.clone()));
            assert_eq!(fast::<Box<[u8]>>(&theirs, &limits), Ok(bytes.clone().into()));
        }
        let text = "grüße, 世界".repeat(50);
        let mut ours = Vec::new();
        encode(text.as_bytes(), &mut ours);
        assert_eq!(ours, postcard(&text));
        assert_eq!(fast::<String>(&postcard(&text), &DecodeLimits::default()), Ok(text));
    }

    #[test]
    fn head_len_is_the_prefix_of_a_byte_string_filling_the_payload() {
        for n in [0, 1, 127, 128, 16_383, 16_384, 1 << 20, 100_000_000] {
            let payload_len = n + length_prefix(n).1;
            assert_eq!(head_len(payload_len), length_prefix(n).1, "n = {n}");
        }
        // 129 bytes: 128 bytes need a 2-byte prefix, 127 a 1-byte one; no string fills it.
        assert_eq!(head_len(129), 0);
        assert_eq!(head_len(0), 0);
    }

    #[test]
    fn a_length_claiming_more_than_the_payload_holds_is_refused_before_any_allocation() {
        let limits = DecodeLimits::default();
        for claimed in [4u64, 1 << 20, 1 << 40, u64::MAX] {
            let mut bytes = postcard(&claimed);
            bytes.extend_from_slice(b"abc");
            let err = fast::<Vec<u8>>(&bytes, &limits).unwrap_err();
            assert!(
                matches!(&err, Refusal::Invalid(why) if why.contains("end of buffer")
                    || why.contains("budget")),
                "{err:?}"
            );
            all_agree(&bytes, &limits);
        }
    }

    #[test]
    fn truncated_and_garbage_prefixes_are_postcards_errors() {
        let limits = DecodeLimits::default();
        let bad: &[&[u8]] = &[
            &[],                                                           // no prefix at all
            &[0x80],                                                       // a prefix cut short
            &[0xff; 11], // a varint that never ends
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // over u64::MAX
            &[3, b'a', 0xff, b'c'], // not UTF-8 (as a string)
            &[1, b'a', b'b'], // a byte left over
        ];
        for bytes in bad {
            all_agree(bytes, &limits);
        }
        assert_eq!(fast::<Vec<u8>>(&[1, b'a', b'b'], &limits), Err(Refusal::LeftOver { rest: 1 }));
    }

    #[test]
    fn a_non_canonical_prefix_decodes_as_postcard_decodes_it() {
        // 3 as a two-byte varint: postcard accepts it, so the fast path does too.
        let bytes = [0x83, 0x00, b'x', b'y', b'z'];
        assert_eq!(fast::<Vec<u8>>(&bytes, &DecodeLimits::default()), Ok(b"xyz".to_vec()));
        all_agree(&bytes, &DecodeLimits::default());
    }

    #[test]
    fn the_depth_and_budget_limits_hold_on_the_fast_path() {
        let bytes = postcard(&vec![1u8; 10]);
        let flat = DecodeLimits::default().with_max_depth(0);
        let err = fast::<Vec<u8>>(&bytes, &flat).unwrap_err();
        assert!(matches!(&err, Refusal::Invalid(why) if why.contains("deeper than 0")), "{err:?}");
        all_agree(&bytes, &flat);
        // A string is no level of its own.
        assert_eq!(fast::<String>(&postcard("ok"), &flat), Ok("ok".to_string()));
        // No expansion: the 1 MiB floor is all the budget; a byte sequence past it is refused,
        // a Box<[u8]> 8 bytes earlier (its Vec<u8> is charged past its slot), a string never.
        let floor = DecodeLimits::default().with_max_expansion(0);
        for n in [limits::BUDGET_FLOOR - 8, limits::BUDGET_FLOOR - 7, limits::BUDGET_FLOOR + 1] {
            all_agree(&postcard(&vec![b'a'; n]), &floor);
        }
        let err = fast::<Vec<u8>>(&postcard(&vec![0u8; limits::BUDGET_FLOOR + 1]), &floor);
        assert!(matches!(&err, Err(Refusal::Invalid(why)) if why.contains("budget")), "{err:?}");
    }

    #[test]
    fn a_split_payload_keeps_its_buffer_as_the_value() {
        let body = vec![42u8; 100_000];
        let address = body.as_ptr();
        let (prefix, len) = length_prefix(body.len());
        let payload = Payload::Split { head: &prefix[..len], body };
        let value: Vec<u8> = decode(Kind::Vec, payload, &DecodeLimits::default()).unwrap();
        assert_eq!(value.as_ptr(), address, "the body buffer is the value: no copy");
        assert_eq!(value.len(), 100_000);
    }

    proptest! {
        #[test]
        fn any_payload_decodes_on_the_fast_path_as_on_the_generic_path(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                // A valid prefix, then a body that is whole, short or too long, maybe not UTF-8.
                (0..300usize, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(n, body)| {
                    let (prefix, len) = length_prefix(n);
                    [&prefix[..len], &body[..]].concat()
                }),
                ".{0,60}".prop_map(|text: String| postcard(&text)),
            ],
            depth in 0..3usize,
        ) {
            all_agree(&bytes, &DecodeLimits::default().with_max_depth(depth));
        }
    }
}
