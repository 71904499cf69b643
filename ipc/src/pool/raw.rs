//! Integers as their little-endian bytes: how a pool's frames carry an item or a result whose
//! type is a primitive integer (`u8` to `u64`, `i8` to `i64`, `usize`, `isize`), in place of a
//! length byte and a postcard varint.
//!
//! Both ends of a pool's pipes are the same program (the workers are forks of the parent) and
//! know the item and result types, so the format may depend on them. A value of fixed width
//! needs no length before it, and decoding one cannot fail; a frame of them is walked at a
//! fixed stride. The point is the stride: with a length byte before each value, finding the
//! next value waited for the load of the previous length, a chain of dependent loads through
//! every frame on both sides, and writing a varint took a dozen bit operations.

use std::any::{Any, TypeId};
use std::mem::size_of;

use crate::codec::cast;

/// Calls `$each!(type)` for every integer type that travels raw.
macro_rules! raw_types {
    ($each:ident) => {
        $each!(u8);
        $each!(u16);
        $each!(u32);
        $each!(u64);
        $each!(usize);
        $each!(i8);
        $each!(i16);
        $each!(i32);
        $each!(i64);
        $each!(isize);
    };
}

/// How many bytes a `T` takes raw, if it is an integer type that travels so. Each arm is a
/// `TypeId` comparison that the compiler folds: for a given `T` this is a constant.
#[inline(always)]
pub(super) fn width<T: 'static>() -> Option<usize> {
    let t = TypeId::of::<T>();
    macro_rules! each {
        ($ty:ty) => {
            if t == TypeId::of::<$ty>() {
                return Some(size_of::<$ty>());
            }
        };
    }
    raw_types!(each);
    None
}

/// Appends `head` (a tag, or nothing), then `value`'s little-endian bytes, with one copy of
/// a constant length; `false` (and `out` unchanged) if `T` does not travel raw.
#[inline(always)]
pub(super) fn append<const N: usize, T: 'static>(
    out: &mut Vec<u8>,
    head: [u8; N],
    value: &T,
) -> bool {
    let any: &dyn Any = value;
    macro_rules! each {
        ($ty:ty) => {
            if let Some(&v) = any.downcast_ref::<$ty>() {
                const W: usize = size_of::<$ty>();
                let mut record = [0; 16];
                record[..N].copy_from_slice(&head);
                record[N..N + W].copy_from_slice(&v.to_le_bytes());
                out.extend_from_slice(&record[..N + W]);
                return true;
            }
        };
    }
    raw_types!(each);
    false
}

/// Appends the little-endian bytes of every one of `values` (`false`, and `out` unchanged, if
/// `T` does not travel raw): room for all of them at once, then one store each. Pushed one by
/// one, each value reloaded the vector's length that the previous one had just stored (the
/// compiler cannot tell that the bytes written leave it be): a chain through memory per item,
/// the hottest spot of the parent's encoding (perf annotate, 60 maps of 100k `u64`s).
#[inline(always)]
/// A slice, not any iterator: zipped with the room's slots, two slices make an indexed loop
/// with nothing to reload (through a `VecDeque`'s iterator, its state went to memory and back
/// for every value: perf annotate).
pub(super) fn append_all<T: 'static>(out: &mut Vec<u8>, values: &[T]) -> bool {
    let Some(width) = width::<T>() else { return false };
    let start = out.len();
    out.resize(start + values.len() * width, 0);
    for (slot, value) in out[start..].chunks_exact_mut(width).zip(values) {
        write(slot, value);
    }
    true
}

/// Writes `value`'s little-endian bytes into `slot` ([`width`] bytes); `false` if `T` does not
/// travel raw.
#[inline(always)]
pub(super) fn write<T: 'static>(slot: &mut [u8], value: &T) -> bool {
    let any: &dyn Any = value;
    macro_rules! each {
        ($ty:ty) => {
            if let Some(&v) = any.downcast_ref::<$ty>() {
                slot.copy_from_slice(&v.to_le_bytes());
                return true;
            }
        };
    }
    raw_types!(each);
    false
}

/// The `T` whose little-endian bytes `bytes` are (exactly [`width`] of them), if `T` travels
/// raw.
#[inline(always)]
pub(super) fn read<T: 'static>(bytes: &[u8]) -> Option<T> {
    let t = TypeId::of::<T>();
    macro_rules! each {
        ($ty:ty) => {
            if t == TypeId::of::<$ty>() {
                let bytes = bytes.try_into().ok()?;
                return Some(cast::<T, $ty>(<$ty>::from_le_bytes(bytes)));
            }
        };
    }
    raw_types!(each);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: 'static + Copy + PartialEq + std::fmt::Debug>(values: &[T]) {
        for &v in values {
            let mut out = vec![9];
            assert!(append(&mut out, [7], &v));
            assert_eq!(out.len(), 2 + width::<T>().unwrap());
            assert_eq!((out[1], read::<T>(&out[2..])), (7, Some(v)));
        }
    }

    #[test]
    fn every_integer_type_round_trips_at_its_width() {
        round_trip(&[0u8, 1, u8::MAX]);
        round_trip(&[0u16, 300, u16::MAX]);
        round_trip(&[0u32, 1 << 20, u32::MAX]);
        round_trip(&[0u64, 100_000, u64::MAX]);
        round_trip(&[0usize, usize::MAX]);
        round_trip(&[0i8, -1, i8::MIN, i8::MAX]);
        round_trip(&[0i16, -300, i16::MIN]);
        round_trip(&[0i32, -1, i32::MIN, i32::MAX]);
        round_trip(&[0i64, -1, i64::MIN, i64::MAX]);
        round_trip(&[0isize, -1, isize::MIN]);
    }

    #[test]
    fn many_values_at_once_are_each_at_its_place() {
        let values = [1u32, u32::MAX, 0, 300];
        let mut out = vec![9];
        assert!(append_all(&mut out, &values));
        assert_eq!(out.len(), 1 + 4 * 4);
        let back: Vec<u32> = out[1..].chunks_exact(4).map(|b| read(b).unwrap()).collect();
        assert_eq!(back, values);
        assert!(!append_all(&mut out, &["no".to_string()]));
        assert_eq!(out.len(), 1 + 4 * 4);
    }

    #[test]
    fn other_types_do_not_travel_raw() {
        assert_eq!(width::<bool>(), None);
        assert_eq!(width::<u128>(), None);
        assert_eq!(width::<(u64,)>(), None);
        assert!(!append(&mut Vec::new(), [], &"text".to_string()));
        assert_eq!(read::<f64>(&[0; 8]), None);
        assert_eq!(read::<u32>(&[0; 3]), None, "not its width");
    }
}
