//! Decode limits: a serde `Deserializer` layer over postcard's that bounds what an untrusted
//! payload can make the reader do.
//!
//! Guaranteed, for every payload decoded by [`Postcard`](crate::Postcard): values nest at most
//! [`DecodeLimits::max_depth`] deep (so a small frame cannot overflow the stack); the memory
//! charged for sequence elements, map entries and boxed values stays within the budget of
//! [`DecodeLimits::budget_for`] (so a frame cannot decode to many times its size); every element
//! costs at least one byte of that budget, zero-sized ones included (so a 13-byte frame cannot
//! announce 2^63 `()`s and spin); no `size_hint` handed to a `Deserialize` impl exceeds what the
//! rest of the payload or the budget can hold (so no pre-allocation runs ahead of the bytes). A
//! limit hit is [`Error::Codec`](crate::Error::Codec) naming it. Not guaranteed: an exact account
//! of heap memory (strings and byte buffers hold their own wire bytes and are not charged; hash
//! tables' own overhead and `Rc`'s counters are not charged), nor the stack needed per level,
//! which depends on the types (see [`DEFAULT_MAX_DEPTH`]).
//!
//! # How a value is charged
//!
//! Each value is decoded into a *slot* its parent already paid for: the top-level value into the
//! reader's stack frame, a field into its struct, an element into its `Vec`'s buffer. A sequence
//! or map whose length comes from the wire charges each element `size_of` its type (at least 1)
//! as it arrives: that is its buffer. A value whose visitor builds something larger than its slot
//! (a `Box<T>`, whose slot is one pointer) is charged the difference. So `Vec<Vec<u64>>` costs 24
//! bytes per (1-byte) empty inner vector, `Vec<Box<[u64; 64]>>` 520 bytes per element, and a
//! payload of `n` bytes may decode to `max_expansion * n + 1 MiB` bytes of them.

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use postcard::de_flavors::Flavor;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

/// The default nesting limit: 128 levels (serde_json's). Each level costs stack: about 200 bytes
/// for `enum Tree { Leaf, Node(Box<Tree>) }` in a release build and 1.5 KiB in a debug build
/// (measured), so 128 levels need some 32 KiB / 256 KiB and fit a default 1 MiB coroutine stack
/// with room to spare. Lower it for coroutines with small stacks; raise it (with the stack) for
/// deep trees.
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// The default memory budget per payload byte: 16 bytes of sequence elements, map entries and
/// boxed values for each byte of payload (a `Vec<u64>` of small numbers is 8, a `Vec<String>`
/// of one-letter strings 12).
pub const DEFAULT_MAX_EXPANSION: usize = 16;

/// What every payload may decode to on top of its expansion budget, however short it is (1 MiB,
/// the most serde's own collections pre-allocate): small messages are never refused.
pub const BUDGET_FLOOR: usize = 1 << 20;

/// The limits a reader decodes payloads under (see the [module docs](self)): set per reader with
/// [`Reader::set_max_depth`](crate::Reader::set_max_depth) and
/// [`Reader::set_max_expansion`](crate::Reader::set_max_expansion).
///
/// ```
/// use greenhub_ipc::codec::{DecodeLimits, DEFAULT_MAX_DEPTH};
/// let limits = DecodeLimits::default().with_max_depth(16);
/// assert_eq!(limits.max_depth(), 16);
/// assert_eq!(DecodeLimits::default().max_depth(), DEFAULT_MAX_DEPTH);
/// assert_eq!(limits.budget_for(1000), 16 * 1000 + (1 << 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    max_depth: usize,
    max_expansion: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_depth: DEFAULT_MAX_DEPTH, max_expansion: DEFAULT_MAX_EXPANSION }
    }
}

impl DecodeLimits {
    /// These limits with values nesting at most `depth` levels deep (each struct, tuple,
    /// sequence, map, enum, `Option::Some` and newtype is a level).
    pub const fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// These limits with `bytes` bytes of budget per payload byte (on top of [`BUDGET_FLOOR`]).
    pub const fn with_max_expansion(mut self, bytes: usize) -> Self {
        self.max_expansion = bytes;
        self
    }

    /// The nesting limit.
    pub const fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// The budget per payload byte.
    pub const fn max_expansion(&self) -> usize {
        self.max_expansion
    }

    /// The memory budget of a payload of `len` bytes: `max_expansion * len + BUDGET_FLOOR`.
    pub const fn budget_for(&self, len: usize) -> usize {
        len.saturating_mul(self.max_expansion).saturating_add(BUDGET_FLOOR)
    }
}

/// Decodes one `T` from the front of `bytes` under `limits`: the value and how many bytes were
/// left over, or the reason it failed (postcard's, or the limit that was hit). Always inlined,
/// for `decode_slice`'s reason (`codec.rs`).
#[inline(always)]
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(T, usize), String> {
    let state = State::new(bytes, limits);
    let mut postcard = postcard::Deserializer::from_flavor(Tracked(&state));
    let top = Bounded { inner: &mut postcard, state: &state, slot: size_of::<T>() };
    match T::deserialize(top) {
        Ok(value) => Ok((value, state.rest.get().len())),
        Err(err) => Err(match state.exceeded.get() {
            Some(limit) => limit.to_string(),
            None => err.to_string(),
        }),
    }
}

/// The depth check of a sequence at the top of a payload that is decoded without serde (the
/// byte fast path, `codec/bytes.rs`): one level, refused as the generic path refuses it.
pub(super) fn check_sequence_depth(limits: &DecodeLimits) -> Result<(), String> {
    match limits.max_depth {
        0 => Err(Exceeded::Depth { max: 0 }.to_string()),
        _ => Ok(()),
    }
}

/// The budget check of `charged` bytes of sequence elements decoded without serde from a payload
/// of `len` bytes (the byte fast path): the generic path's verdict and message.
pub(super) fn check_budget(
    limits: &DecodeLimits,
    len: usize,
    charged: usize,
) -> Result<(), String> {
    let budget = limits.budget_for(len);
    if charged <= budget {
        return Ok(());
    }
    Err(Exceeded::Budget { len, budget, expansion: limits.max_expansion }.to_string())
}

/// Which limit a payload hit, for the error message.
#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Depth { max: usize },
    Budget { len: usize, budget: usize, expansion: usize },
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exceeded::Depth { max } => write!(
                f,
                "the payload nests deeper than {max} levels, the reader's limit \
                 (Reader::set_max_depth)"
            ),
            Exceeded::Budget { len, budget, expansion } => write!(
                f,
                "the {len}-byte payload would decode to more than {budget} bytes of sequence \
                 elements, map entries and boxed values, the reader's budget ({expansion} per \
                 payload byte + 1 MiB; Reader::set_max_expansion)"
            ),
        }
    }
}

/// The bookkeeping of one decode, shared by every layer of it.
struct State<'a> {
    /// The payload not yet consumed (postcard reads it through [`Tracked`]).
    rest: Cell<&'a [u8]>,
    depth_left: Cell<usize>,
    budget_left: Cell<usize>,
    /// Set when a limit is hit (the serde error postcard carries has no text of its own).
    exceeded: Cell<Option<Exceeded>>,
    limits: DecodeLimits,
    len: usize,
}

impl<'a> State<'a> {
    fn new(bytes: &'a [u8], limits: &DecodeLimits) -> Self {
        State {
            rest: Cell::new(bytes),
            depth_left: Cell::new(limits.max_depth),
            budget_left: Cell::new(limits.budget_for(bytes.len())),
            exceeded: Cell::new(None),
            limits: *limits,
            len: bytes.len(),
        }
    }

    /// One level deeper, until the guard drops.
    fn enter<E: de::Error>(&self) -> Result<Level<'_, 'a>, E> {
        match self.depth_left.get().checked_sub(1) {
            Some(left) => {
                self.depth_left.set(left);
                Ok(Level(self))
            }
            None => Err(self.fail(Exceeded::Depth { max: self.limits.max_depth })),
        }
    }

    /// Takes `bytes` from the budget.
    #[inline]
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.budget_left.get().checked_sub(bytes) {
            Some(left) => {
                self.budget_left.set(left);
                Ok(())
            }
            None => Err(self.fail(Exceeded::Budget {
                len: self.len,
                budget: self.limits.budget_for(self.len),
                expansion: self.limits.max_expansion,
            })),
        }
    }

    fn fail<E: de::Error>(&self, limit: Exceeded) -> E {
        self.exceeded.set(Some(limit));
        E::custom(limit)
    }

    /// A sequence's or map's announced length, capped by what can really follow: every element
    /// costs at least one byte of budget, and all but zero-sized ones at least one payload byte.
    fn cap_hint(&self, hint: Option<usize>) -> Option<usize> {
        hint.map(|n| n.min(self.rest.get().len()).min(self.budget_left.get()))
    }
}

/// A level of nesting, given back when dropped (on success and on error alike).
struct Level<'s, 'a>(&'s State<'a>);

impl Drop for Level<'_, '_> {
    fn drop(&mut self) {
        self.0.depth_left.set(self.0.depth_left.get() + 1);
    }
}

/// Postcard's input: the payload, read through [`State::rest`] so the layers above can see how
/// much is left.
struct Tracked<'a>(&'a State<'a>);

impl<'a> Flavor<'a> for Tracked<'a> {
    type Remainder = &'a [u8];
    type Source = &'a [u8];

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        let (&first, rest) =
            self.0.rest.get().split_first().ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.0.rest.set(rest);
        Ok(first)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.rest.get().len())
    }

    #[inline]
    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'a [u8]> {
        let rest = self.0.rest.get();
        if rest.len() < ct {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (taken, rest) = rest.split_at(ct);
        self.0.rest.set(rest);
        Ok(taken)
    }

    fn finalize(self) -> postcard::Result<&'a [u8]> {
        Ok(self.0.rest.get())
    }
}

/// The layer over a `Deserializer` that decodes one value into a slot of `slot` bytes.
struct Bounded<'s, 'a, D> {
    inner: D,
    state: &'s State<'a>,
    slot: usize,
}

impl<'s, 'a, D> Bounded<'s, 'a, D> {
    /// Charges what a value of type `V` holds beyond its slot (a box's contents), if anything.
    #[inline]
    fn charge_excess<V, E: de::Error>(&self) -> Result<(), E> {
        match size_of::<V>().checked_sub(self.slot) {
            Some(excess) if excess > 0 => self.state.charge(excess),
            _ => Ok(()),
        }
    }

    fn wrap<V>(&self, visitor: V, counted: bool) -> Wrap<'s, 'a, V> {
        Wrap { inner: visitor, state: self.state, counted }
    }
}

/// Primitives: no nesting, so the visitor goes to postcard as it is.
macro_rules! forward_primitives {
    ($($method:ident)*) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.charge_excess::<V::Value, D::Error>()?;
            self.inner.$method(visitor)
        }
    )*};
}

/// Compounds: one level deeper while postcard drives the (wrapped) visitor.
macro_rules! forward_compound {
    ($($method:ident($($arg:ident: $ty:ty),*) counted: $counted:expr;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let _level = self.state.enter::<D::Error>()?;
            self.charge_excess::<V::Value, D::Error>()?;
            let visitor = self.wrap(visitor, $counted);
            self.inner.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Bounded<'_, '_, D> {
    type Error = D::Error;

    forward_primitives! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    forward_compound! {
        deserialize_any() counted: true;
        deserialize_option() counted: false;
        deserialize_seq() counted: true;
        deserialize_map() counted: true;
        deserialize_tuple(len: usize) counted: false;
        deserialize_tuple_struct(name: &'static str, len: usize) counted: false;
        deserialize_struct(name: &'static str, fields: &'static [&'static str]) counted: false;
        deserialize_enum(name: &'static str, variants: &'static [&'static str]) counted: false;
        deserialize_newtype_struct(name: &'static str) counted: false;
        deserialize_ignored_any() counted: true;
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.charge_excess::<V::Value, D::Error>()?;
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor whose nested deserializers and accesses stay bounded. `counted`: the sequence or
/// map it visits has a length from the wire, so its elements are charged.
struct Wrap<'s, 'a, V> {
    inner: V,
    state: &'s State<'a>,
    counted: bool,
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty))*) => {$(
        #[inline]
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visits! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let slot = size_of::<V::Value>();
        self.inner.visit_some(Bounded { inner: d, state: self.state, slot })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let slot = size_of::<V::Value>();
        self.inner.visit_newtype_struct(Bounded { inner: d, state: self.state, slot })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(Access { inner: seq, state: self.state, counted: self.counted })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Access { inner: map, state: self.state, counted: self.counted })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Access { inner: data, state: self.state, counted: false })
    }
}

/// A seed whose value is decoded through a [`Bounded`] layer into a slot of its own size.
struct Seed<'s, 'a, S> {
    inner: S,
    state: &'s State<'a>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, '_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        let slot = size_of::<S::Value>();
        self.inner.deserialize(Bounded { inner: d, state: self.state, slot })
    }
}

/// The sequence, map, enum and variant accesses, bounded: `counted` ones charge each element.
struct Access<'s, 'a, A> {
    inner: A,
    state: &'s State<'a>,
    counted: bool,
}

impl<'s, 'a, A> Access<'s, 'a, A> {
    fn seed<S>(&self, seed: S) -> Seed<'s, 'a, S> {
        Seed { inner: seed, state: self.state }
    }

    /// Charges one element of type `T` (at least a byte, so zero-sized ones count too).
    #[inline]
    fn charge_element<T, E: de::Error>(&self) -> Result<(), E> {
        if self.counted { self.state.charge(size_of::<T>().max(1)) } else { Ok(()) }
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<'_, '_, A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let element = self.inner.next_element_seed(self.seed(seed))?;
        if element.is_some() {
            self.charge_element::<S::Value, A::Error>()?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.state.cap_hint(self.inner.size_hint())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<'_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(self.seed(seed))?;
        if key.is_some() {
            self.charge_element::<K::Value, A::Error>()?;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let value = self.inner.next_value_seed(self.seed(seed))?;
        if self.counted && size_of::<S::Value>() > 0 {
            self.state.charge(size_of::<S::Value>())?;
        }
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.state.cap_hint(self.inner.size_hint())
    }
}

impl<'s, 'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<'s, 'a, A> {
    type Error = A::Error;
    type Variant = Access<'s, 'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = self.seed(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((value, Access { inner: variant, state: self.state, counted: false }))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<'_, '_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Wrap { inner: visitor, state: self.state, counted: false };
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Wrap { inner: visitor, state: self.state, counted: false };
        self.inner.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_default<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), String> {
        decode(bytes, &DecodeLimits::default())
    }
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    /// A `Tree` of `depth` nodes, as postcard encodes it: `depth` times variant 1, then variant 0.
    fn tree_bytes(depth: usize) -> Vec<u8> {
        let mut bytes = vec![1u8; depth];
        bytes.push(0);
        bytes
    }

    #[test]
    fn a_recursive_type_nesting_past_the_limit_is_refused_not_a_stack_overflow() {
        // 50 KB of `Node` tags: without a limit, decoding overflows a 1 MiB stack.
        let err = decode_default::<Tree>(&tree_bytes(50_000)).unwrap_err();
        assert!(err.contains("deeper than 128 levels"), "{err}");
        assert!(err.contains("set_max_depth"), "{err}");
    }

    #[test]
    fn nesting_up_to_the_limit_decodes() {
        // Each Node is an enum level; the Leaf at the bottom is one more.
        let (tree, rest) = decode_default::<Tree>(&tree_bytes(DEFAULT_MAX_DEPTH - 1)).unwrap();
        assert_eq!(rest, 0);
        let mut depth = 0;
        let mut node = &tree;
        while let Tree::Node(next) = node {
            depth += 1;
            node = next;
        }
        assert_eq!(depth, DEFAULT_MAX_DEPTH - 1);
        assert!(decode_default::<Tree>(&tree_bytes(DEFAULT_MAX_DEPTH)).is_err());
    }

    #[test]
    fn the_depth_limit_is_per_decode_and_settable() {
        let shallow = DecodeLimits::default().with_max_depth(4);
        assert!(decode::<Tree>(&tree_bytes(3), &shallow).is_ok());
        let err = decode::<Tree>(&tree_bytes(4), &shallow).unwrap_err();
        assert!(err.contains("deeper than 4 levels"), "{err}");
        // A failed decode gives its levels back: the next one starts from the top.
        assert!(decode::<Tree>(&tree_bytes(3), &shallow).is_ok());
        let deep = DecodeLimits::default().with_max_depth(1000);
        assert!(decode::<Tree>(&tree_bytes(999), &deep).is_ok());
    }

    #[test]
    fn a_frame_of_empty_vecs_cannot_decode_to_24_times_its_size() {
        // 1 MiB of empty inner vectors: 2^20 elements of 24 bytes = 24 MiB, over the budget of
        // 16 MiB + 1 MiB.
        let mut bytes = postcard::to_allocvec(&(1u32 << 20)).unwrap();
        bytes.resize(bytes.len() + (1 << 20), 0);
        let err = decode_default::<Vec<Vec<u64>>>(&bytes).unwrap_err();
        assert!(err.contains("bytes of sequence elements"), "{err}");
        assert!(err.contains("set_max_expansion"), "{err}");
        // A budget that covers 24 bytes per payload byte lets it through.
        let generous = DecodeLimits::default().with_max_expansion(24);
        let (vecs, _) = decode::<Vec<Vec<u64>>>(&bytes, &generous).unwrap();
        assert_eq!(vecs.len(), 1 << 20);
    }

    #[test]
    fn a_boxed_value_is_charged_what_it_holds_beyond_its_pointer() {
        // 4,096 `None`s of an 8 KiB option: 1 byte each on the wire, 8 KiB each in memory.
        let mut bytes = postcard::to_allocvec(&4096u32).unwrap();
        bytes.resize(bytes.len() + 4096, 0);
        assert!(decode_default::<Vec<Option<[[u64; 32]; 32]>>>(&bytes).is_err());
        // Behind a Box the element slot is a pointer, and the box's contents are charged.
        let mut boxed = postcard::to_allocvec(&4096u32).unwrap();
        boxed.resize(boxed.len() + 4096, 0);
        let err = decode_default::<Vec<Box<Option<[[u64; 32]; 32]>>>>(&boxed).unwrap_err();
        assert!(err.contains("budget"), "{err}");
    }

    #[test]
    fn zero_sized_elements_count_against_the_budget() {
        // A 2^63 length of `()`s, which cost nothing on the wire.
        let bytes = postcard::to_allocvec(&(1u64 << 63)).unwrap();
        let err = decode_default::<Vec<()>>(&bytes).unwrap_err();
        assert!(err.contains("budget"), "{err}");
        let err = decode_default::<BTreeMap<(), ()>>(&bytes).unwrap_err();
        assert!(err.contains("budget"), "{err}");
    }

    /// Records the `size_hint` a sequence visitor is given.
    struct Hint(Option<usize>);

    impl<'de> Deserialize<'de> for Hint {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Look;
            impl<'de> Visitor<'de> for Look {
                type Value = Hint;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Hint, A::Error> {
                    Ok(Hint(map.size_hint()))
                }
            }
            d.deserialize_map(Look)
        }
    }

    #[test]
    fn size_hints_never_exceed_what_the_rest_of_the_payload_can_hold() {
        // A map claiming 2^32 entries, followed by 3 bytes.
        let mut bytes = postcard::to_allocvec(&(1u64 << 32)).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        let Hint(hint) = decode::<Hint>(&bytes, &DecodeLimits::default()).unwrap().0;
        assert_eq!(hint, Some(3));
    }

    #[test]
    fn ordinary_values_round_trip_under_the_default_limits() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Job {
            id: u64,
            tags: Vec<String>,
            deps: BTreeMap<u32, Option<Box<Job>>>,
            tree: Tree,
            unit: (),
            pair: (u8, char),
        }
        let job = Job {
            id: 7,
            tags: vec!["a".into(), "bc".into()],
            deps: BTreeMap::from([
                (
                    1,
                    Some(Box::new(Job {
                        id: 8,
                        tags: vec![],
                        deps: BTreeMap::new(),
                        tree: Tree::Leaf,
                        unit: (),
                        pair: (0, 'x'),
                    })),
                ),
                (2, None),
            ]),
            tree: Tree::Node(Box::new(Tree::Node(Box::new(Tree::Leaf)))),
            unit: (),
            pair: (255, 'ß'),
        };
        let bytes = postcard::to_allocvec(&job).unwrap();
        assert_eq!(decode_default::<Job>(&bytes).unwrap(), (job, 0));
        let (big, rest) =
            decode_default::<Vec<u64>>(&postcard::to_allocvec(&vec![1u64; 1 << 20]).unwrap())
                .unwrap();
        assert_eq!((big.len(), rest), (1 << 20, 0));
    }
}
