//! The default codec's fast path for a message that is one number or `bool`: read straight off
//! the payload instead of through a serde deserializer.
//!
//! Guaranteed: a payload is accepted or refused exactly as the generic path
//! ([`limits::decode`](super::limits)) would: the same value, the same postcard error
//! (`DeserializeUnexpectedEnd`, `DeserializeBadVarint`, `DeserializeBadBool`) and the same count
//! of bytes left over (the tests compare both paths byte string by byte string). A scalar nests
//! nothing and allocates nothing, so the limits never refuse one. Not guaranteed: that a number
//! inside another type (a field, a tuple) takes this path: only the message type itself is
//! checked, by `TypeId`, which the compiler folds to a constant for each `T`.
//!
//! Why: a pool of tiny `u64` items decodes one value per item on both sides. Through serde,
//! each decode set up the limits' state and a postcard deserializer and called serde's `u64`
//! impl out of line: a quarter of the parent's time (perf, 10M items of `x + 1` on 2 workers).
//! Encoding a lone number needs no such path: the encoder (`encoder.rs`) is already inlined
//! whole, serde's `Serialize` for a number included (a four-byte varint in ~45 instructions,
//! callgrind). (A pool's integer items and results do not travel as postcard at all: as
//! their little-endian bytes, `pool/raw.rs`.)
//!
//! The wire format is postcard's: `u8`, `i8` and `bool` are one byte; wider integers are LEB128
//! varints, signed ones zigzag-encoded first; `usize` and `isize` travel as `u64` and `i64`
//! (and take this path only where they are 64 bits); `f32` and `f64` are their little-endian
//! bytes.

use std::any::TypeId;

use postcard::Error as Postcard;

use super::cast;

/// Decodes `bytes` as the message type `T` if it is a scalar: the value and how many bytes
/// followed it, or postcard's error. `None` for any other type (the caller takes the generic
/// path).
#[inline(always)]
pub(super) fn decode<T: 'static>(bytes: &[u8]) -> Option<Result<(T, usize), String>> {
    let t = TypeId::of::<T>();
    // Each arm is a constant comparison: for a given `T` all but one (or all) fold away.
    macro_rules! try_each {
        ($($ty:ty => $read:expr;)*) => {$(
            if t == TypeId::of::<$ty>() {
                let read: Result<($ty, &[u8]), Postcard> = $read;
                return Some(match read {
                    Ok((value, rest)) => Ok((cast::<T, $ty>(value), rest.len())),
                    Err(err) => Err(err.to_string()),
                });
            }
        )*};
    }
    try_each! {
        u64 => varint(bytes, u64::BITS);
        u32 => varint(bytes, u32::BITS).map(|(n, rest)| (n as u32, rest));
        u16 => varint(bytes, u16::BITS).map(|(n, rest)| (n as u16, rest));
        i64 => varint(bytes, u64::BITS).map(|(n, rest)| (unzigzag(n), rest));
        i32 => varint(bytes, u32::BITS).map(|(n, rest)| (unzigzag(n) as i32, rest));
        i16 => varint(bytes, u16::BITS).map(|(n, rest)| (unzigzag(n) as i16, rest));
        u8 => byte(bytes);
        i8 => byte(bytes).map(|(b, rest)| (b as i8, rest));
        bool => byte(bytes).and_then(|(b, rest)| match b {
            0 => Ok((false, rest)),
            1 => Ok((true, rest)),
            _ => Err(Postcard::DeserializeBadBool),
        });
        f64 => array(bytes).map(|(b, rest)| (f64::from_le_bytes(b), rest));
        f32 => array(bytes).map(|(b, rest)| (f32::from_le_bytes(b), rest));
    }
    // serde sends `usize` and `isize` as `u64` and `i64`. Where they are narrower, serde
    // refuses on the way in what does not fit, with its own message: the generic path there.
    #[cfg(target_pointer_width = "64")]
    try_each! {
        usize => varint(bytes, u64::BITS).map(|(n, rest)| (n as usize, rest));
        isize => varint(bytes, u64::BITS).map(|(n, rest)| (unzigzag(n) as isize, rest));
    }
    None
}

/// A varint of an unsigned integer of `bits` bits off the front of `bytes`, as postcard reads
/// it: at most `ceil(bits / 7)` bytes, the last of which may only hold the bits that are left.
#[inline(always)]
fn varint(bytes: &[u8], bits: u32) -> Result<(u64, &[u8]), Postcard> {
    let max_len = bits.div_ceil(7) as usize;
    let max_last = (1u8 << (bits % 7)) - 1;
    let mut n = 0u64;
    for i in 0..max_len {
        let Some(&byte) = bytes.get(i) else {
            return Err(Postcard::DeserializeUnexpectedEnd);
        };
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            if i == max_len - 1 && byte > max_last {
                break;
            }
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(Postcard::DeserializeBadVarint)
}

/// Zigzag decoding: 0, 1, 2, 3, ... back to 0, -1, 1, -2, ...
#[inline(always)]
fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

#[inline(always)]
fn byte(bytes: &[u8]) -> Result<(u8, &[u8]), Postcard> {
    bytes.split_first().map(|(&b, rest)| (b, rest)).ok_or(Postcard::DeserializeUnexpectedEnd)
}

#[inline(always)]
fn array<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), Postcard> {
    match bytes.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((*head, rest)),
        None => Err(Postcard::DeserializeUnexpectedEnd),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::decode;
    use crate::codec::DecodeLimits;
    use crate::codec::limits;

    /// Every byte string of up to two bytes, every varint-shaped string of up to twelve (runs
    /// of continuation bytes ending in each interesting last byte), each with and without a
    /// trailing byte.
    fn payloads() -> Vec<Vec<u8>> {
        let mut all = vec![vec![]];
        for a in 0..=255u8 {
            all.push(vec![a]);
            for b in 0..=255u8 {
                all.push(vec![a, b]);
            }
        }
        for len in 2..=12 {
            for fill in [0x80u8, 0xff, 0x81] {
                for last in [0u8, 1, 2, 3, 4, 7, 0x0f, 0x10, 0x1f, 0x7f, 0x80, 0xff] {
                    let mut p = vec![fill; len - 1];
                    p.push(last);
                    all.push(p.clone());
                    p.push(9);
                    all.push(p);
                }
            }
        }
        all
    }

    /// The fast path and the generic path agree on every payload, and values round-trip.
    fn agrees<T>(values: &[T])
    where
        T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
    {
        let limits = DecodeLimits::default();
        // Compared re-encoded, so that a NaN equals itself.
        let encoded = |decoded: Result<(T, usize), String>| {
            decoded.map(|(value, rest)| (postcard::to_allocvec(&value).unwrap(), rest))
        };
        for p in payloads() {
            let fast = decode::<T>(&p).expect("a scalar type");
            let generic = limits::decode::<T>(&p, &limits);
            assert_eq!(
                encoded(fast),
                encoded(generic),
                "{} from {p:02x?}",
                std::any::type_name::<T>()
            );
        }
        for v in values {
            let bytes = postcard::to_allocvec(v).unwrap();
            assert_eq!(
                decode::<T>(&bytes),
                Some(Ok((postcard::from_bytes::<T>(&bytes).unwrap(), 0)))
            );
        }
    }

    #[test]
    fn unsigned_integers_decode_as_postcard_decodes_them() {
        agrees(&[0u8, 1, 127, 128, 255]);
        agrees(&[0u16, 127, 128, 16_383, 16_384, u16::MAX]);
        agrees(&[0u32, 127, 128, 1 << 21, 1 << 28, u32::MAX]);
        agrees(&[0u64, 127, 128, 1 << 35, 1 << 56, 1 << 63, u64::MAX]);
        #[cfg(target_pointer_width = "64")]
        agrees(&[0usize, 300, usize::MAX]);
    }

    #[test]
    fn signed_integers_decode_as_postcard_decodes_them() {
        agrees(&[0i8, -1, 1, i8::MIN, i8::MAX]);
        agrees(&[0i16, -1, 1, -64, 64, i16::MIN, i16::MAX]);
        agrees(&[0i32, -1, 1, i32::MIN, i32::MAX]);
        agrees(&[0i64, -1, 1, i64::MIN, i64::MAX]);
        #[cfg(target_pointer_width = "64")]
        agrees(&[0isize, -300, isize::MIN, isize::MAX]);
    }

    #[test]
    fn bools_and_floats_decode_as_postcard_decodes_them() {
        agrees(&[false, true]);
        agrees(&[0.0f32, -1.5, f32::MAX, f32::INFINITY]);
        agrees(&[0.0f64, -1.5, f64::MIN_POSITIVE, f64::NEG_INFINITY]);
    }

    #[test]
    fn other_types_take_the_generic_path() {
        assert!(decode::<u128>(&[0]).is_none());
        assert!(decode::<char>(&[1, b'a']).is_none());
        assert!(decode::<(u64,)>(&[0]).is_none());
        assert!(decode::<Option<u64>>(&[0]).is_none());
    }
}
