//! postcard's wire format, written by a serde `Serializer` of our own straight into a `Vec<u8>`.
//!
//! Why not `postcard::Serializer`: it builds each varint in a buffer on the stack and hands the
//! used part to its output one byte at a time, so a `u64` cost a loop that reloaded the vector's
//! pointer, length and capacity per byte, and its calls stayed out of line (perf, a pool of tiny
//! items: postcard's encoding was a quarter of the parent's time). Here a varint of up to eight
//! bytes is built in a register without a loop and written as one word, the vector then cut
//! back to the bytes it used (longer ones, rare, go through a byte array the same way), and
//! every method is small enough to inline.
//!
//! Guarantee: the bytes are exactly postcard 1.x's for every serde data model method (the tests
//! compare with `postcard::to_allocvec` value by value), so postcard, and the decoder in
//! [`limits`](super::limits), read them back. A sequence or map of unknown length is refused
//! (postcard writes the length first), and a `Serialize` impl's own error keeps its message.

use std::fmt;

use serde::ser::{self, Serialize};

/// Appends `value`'s postcard encoding to `out`; on error `out` may hold part of it (the caller
/// truncates).
#[inline]
pub(super) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    value.serialize(&mut Encoder(out))
}

/// Why a value could not be encoded.
#[derive(Debug)]
pub(super) struct EncodeError(String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// The length postcard needs up front and a sequence or map did not give.
fn unknown_length() -> EncodeError {
    EncodeError(
        "a sequence or map of unknown length (postcard writes the length before the elements)"
            .to_string(),
    )
}

struct Encoder<'a>(&'a mut Vec<u8>);

/// The varint (LEB128) of `n` as the low `used` bytes of a little-endian word: `(word, used)`,
/// built without a loop; `None` from 2^56 on (nine bytes or more).
#[inline(always)]
pub(super) fn varint_word(n: u64) -> Option<(u64, usize)> {
    if n < 0x80 {
        return Some((n, 1));
    }
    if n >= 1 << 56 {
        return None;
    }
    // The 56 bits spread into eight 7-bit groups, one per byte, in three halvings: two 28-bit
    // halves 32 bits apart, then 14-bit quarters 16 apart, then 7-bit groups 8 apart.
    let mut word = (n & 0x0fff_ffff) | ((n & 0x00ff_ffff_f000_0000) << 4);
    word = (word & 0x0000_3fff_0000_3fff) | ((word & 0x0fff_c000_0fff_c000) << 2);
    word = (word & 0x007f_007f_007f_007f) | ((word & 0x3f80_3f80_3f80_3f80) << 1);
    // The bytes used, 2 to 8; every one but the last has its continuation bit.
    let used = (70 - n.leading_zeros() as usize) / 7;
    word |= 0x8080_8080_8080_8080 >> (8 * (9 - used));
    Some((word, used))
}

impl Encoder<'_> {
    /// A varint (LEB128) of a `u64`. Up to eight bytes (values below 2^56) are built in a
    /// register without a loop and stored as one word; the rare longer ones take the
    /// byte-array path. (callgrind, a `u64` of four or five varint bytes: ~35 instructions,
    /// where a loop over the 7-bit groups took ~60.)
    #[inline(always)]
    fn varint(&mut self, n: u64) {
        if n < 0x80 {
            self.0.push(n as u8);
            return;
        }
        match varint_word(n) {
            Some((word, used)) => self.append_prefix(&word.to_le_bytes(), used),
            None => self.varint_u128(u128::from(n)),
        }
    }

    /// A varint of a `u128` (up to 19 bytes).
    #[inline(never)]
    fn varint_u128(&mut self, mut n: u128) {
        let mut buf = [0u8; 19];
        let mut used = 0;
        while n >= 0x80 {
            buf[used] = (n as u8) | 0x80;
            n >>= 7;
            used += 1;
        }
        buf[used] = n as u8;
        self.append_prefix(&buf, used + 1);
    }

    /// Appends the first `used` bytes of `buf`: the whole fixed-size array is copied (a few
    /// stores, where a copy of a length known only at run time is a `memcpy` call or a loop),
    /// then the vector is cut back.
    #[inline(always)]
    fn append_prefix<const N: usize>(&mut self, buf: &[u8; N], used: usize) {
        let len = self.0.len();
        self.0.extend_from_slice(buf);
        self.0.truncate(len + used);
    }

    #[inline]
    fn length(&mut self, len: usize) {
        self.varint(len as u64);
    }
}

/// Zigzag: small negative numbers stay small varints.
macro_rules! zigzag {
    ($v:expr, $bits:expr) => {
        (($v << 1) ^ ($v >> ($bits - 1)))
    };
}

impl<'a> ser::Serializer for &mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        self.0.push(u8::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        self.0.push(v as u8);
        Ok(())
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        self.varint(u64::from(zigzag!(v, 16) as u16));
        Ok(())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        self.varint(u64::from(zigzag!(v, 32) as u32));
        Ok(())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        self.varint(zigzag!(v, 64) as u64);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        self.varint_u128(zigzag!(v, 128) as u128);
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        self.0.push(v);
        Ok(())
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        self.varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        self.varint(u64::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        self.varint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        self.varint_u128(v);
        Ok(())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        self.length(v.len());
        self.0.extend_from_slice(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        self.0.push(0);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        self.0.push(1);
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), EncodeError> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), EncodeError> {
        self.varint(u64::from(index));
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        self.varint(u64::from(index));
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.length(len.ok_or_else(unknown_length)?);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, EncodeError> {
        self.varint(u64::from(index));
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, EncodeError> {
        self.length(len.ok_or_else(unknown_length)?);
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, EncodeError> {
        self.varint(u64::from(index));
        Ok(self)
    }
}

/// The element, field, key and value methods of the compound serializers: each part in order,
/// with nothing between (postcard has no separators and no field names).
macro_rules! compound {
    ($($trait:ident { $($method:ident $(($name:ident))?),* })*) => {$(
        impl<'a> ser::$trait for &mut Encoder<'a> {
            type Ok = ();
            type Error = EncodeError;

            $(
                #[inline]
                fn $method<T: Serialize + ?Sized>(
                    &mut self,
                    $($name: &'static str,)?
                    part: &T,
                ) -> Result<(), EncodeError> {
                    $(let _ = $name;)?
                    part.serialize(&mut **self)
                }
            )*

            #[inline]
            fn end(self) -> Result<(), EncodeError> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq { serialize_element }
    SerializeTuple { serialize_element }
    SerializeTupleStruct { serialize_field }
    SerializeTupleVariant { serialize_field }
    SerializeStruct { serialize_field(key) }
    SerializeStructVariant { serialize_field(key) }
    SerializeMap { serialize_key, serialize_value }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::*;

    #[track_caller]
    fn same_as_postcard<T: Serialize + ?Sized + fmt::Debug>(value: &T) {
        let mut ours = vec![0xee];
        encode(value, &mut ours).unwrap();
        assert_eq!(ours[0], 0xee, "the bytes already there are kept");
        assert_eq!(&ours[1..], postcard::to_allocvec(value).unwrap(), "{value:?}");
    }

    #[test]
    fn integers_at_every_varint_length_and_both_ends() {
        let mut u64s = vec![0, 1, u64::MAX, u64::MAX - 1];
        for shift in 1..64 {
            u64s.extend([(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1]);
        }
        for &n in &u64s {
            same_as_postcard(&n);
            same_as_postcard(&(n as u32));
            same_as_postcard(&(n as u16));
            same_as_postcard(&(n as u8));
            same_as_postcard(&(n as usize));
            same_as_postcard(&(n as i64));
            same_as_postcard(&(n as i32));
            same_as_postcard(&(n as i16));
            same_as_postcard(&(n as i8));
            same_as_postcard(&(n as isize));
            same_as_postcard(&(n as i64).wrapping_neg());
            same_as_postcard(&u128::from(n));
            same_as_postcard(&(u128::from(n) << 64 | u128::from(n)));
            same_as_postcard(&(i128::from(n as i64)));
            same_as_postcard(&(-(i128::from(n) << 60)));
        }
        for n in [i64::MIN, i64::MAX, -1, -64, -65, 63, 64] {
            same_as_postcard(&n);
        }
        same_as_postcard(&i128::MIN);
        same_as_postcard(&i128::MAX);
        same_as_postcard(&u128::MAX);
    }

    #[test]
    fn floats_bools_chars_and_text() {
        for f in [0.0f64, -0.0, 1.5, f64::MAX, f64::MIN_POSITIVE, f64::INFINITY, f64::NAN] {
            same_as_postcard(&f);
            same_as_postcard(&(f as f32));
        }
        same_as_postcard(&true);
        same_as_postcard(&false);
        for c in ['a', 'é', '€', '𝄞', '\0'] {
            same_as_postcard(&c);
        }
        same_as_postcard("");
        same_as_postcard("hello");
        same_as_postcard(&"x".repeat(300));
        same_as_postcard(&serde_bytes::ByteBuf::from(vec![7u8; 200]));
        same_as_postcard(&vec![1u8, 2, 3]);
    }

    #[derive(Debug, Serialize)]
    struct Unit;

    #[derive(Debug, Serialize)]
    struct Newtype(u32);

    #[derive(Debug, Serialize)]
    struct Tuple(i8, String);

    #[derive(Debug, Serialize)]
    struct Fields {
        a: u64,
        b: Option<Box<Fields>>,
        c: Vec<(u16, char)>,
    }

    #[derive(Debug, Serialize)]
    enum Every {
        Unit,
        Newtype(i64),
        Tuple(u8, f32),
        Struct { x: Option<u8>, y: () },
    }

    #[test]
    fn every_shape_of_the_data_model() {
        same_as_postcard(&());
        same_as_postcard(&Unit);
        same_as_postcard(&Newtype(300));
        same_as_postcard(&Tuple(-3, "t".into()));
        let inner = Fields { a: 1, b: None, c: vec![] };
        same_as_postcard(&Fields { a: 1 << 40, b: Some(Box::new(inner)), c: vec![(9, 'z')] });
        same_as_postcard(&[Every::Unit, Every::Newtype(-9), Every::Tuple(1, 2.5)]);
        same_as_postcard(&Every::Struct { x: Some(4), y: () });
        same_as_postcard(&(1u8, (2u16, [3u32; 4]), Some(Some(()))));
        same_as_postcard(&Option::<u8>::None);
        same_as_postcard(&BTreeMap::from([(1u8, "one".to_string()), (2, "two".into())]));
        same_as_postcard(&HashMap::from([(5u64, vec![Every::Unit])]));
        same_as_postcard(&vec![vec![0u64; 3]; 200]);
    }

    #[test]
    fn collect_str_writes_the_text() {
        struct Shown;
        impl Serialize for Shown {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("{}-{}", 12, "ab"))
            }
        }
        let mut ours = Vec::new();
        encode(&Shown, &mut ours).unwrap();
        assert_eq!(ours, postcard::to_allocvec("12-ab").unwrap());
    }

    #[test]
    fn unknown_lengths_and_impl_errors_are_refused_with_a_reason() {
        struct Unsized;
        impl Serialize for Unsized {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(std::iter::from_fn(|| None::<u8>).filter(|_| true))
            }
        }
        let err = encode(&Unsized, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("unknown length"), "{err}");

        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("not today"))
            }
        }
        assert_eq!(encode(&Refuses, &mut Vec::new()).unwrap_err().to_string(), "not today");
    }
}
