//! Postcard decoding of nested and recursive types under `DecodeLimits` of any setting: never a
//! panic, an abort (stack overflow, allocation failure) or a hang; a value that decodes
//! re-encodes to a payload that decodes to the same value. The byte types that take the codec's
//! fast path (`Vec<u8>`, `Box<[u8]>`, `String`) and the integers and `bool` (its scalar path)
//! decode exactly as plain postcard decodes them, whole, split after their head, or owned.
#![no_main]

use std::collections::BTreeMap;
use std::fmt::Debug;

use greenhub_ipc::codec::DecodeLimits;
use greenhub_ipc::frame::Payload;
use greenhub_ipc::{Codec, Error, Postcard};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Node(Box<Tree>),
    Fork(Box<Tree>, Box<Tree>),
    Labelled { label: String, children: Vec<Tree> },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    args: Vec<String>,
    deps: BTreeMap<u32, Option<Box<Job>>>,
    tree: Option<Tree>,
    units: Vec<()>,
    blob: Vec<[u64; 8]>,
}

/// Decodes `payload` as a `T` under `limits`; a value must survive a round trip.
fn check<T>(payload: &[u8], limits: &DecodeLimits)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    match Codec::<T>::decode_within(&Postcard, Payload::Borrowed(payload), limits) {
        Ok(value) => {
            let mut again = Vec::new();
            Postcard.encode(&value, &mut again).unwrap();
            let back: T = Codec::<T>::decode_within(&Postcard, Payload::Borrowed(&again), limits)
                .unwrap_or_else(|e| panic!("a decoded value does not decode again: {e}"));
            assert_eq!(back, value);
        }
        Err(Error::Codec(_)) => {}
        Err(other) => panic!("decode gave {other:?}, not Codec"),
    }
}

/// A fast-path byte type decoded from `payload` in each shape a payload arrives in: the same
/// answer as plain postcard (`take_from_bytes`, no bytes left over) whenever the limits allow.
fn check_bytes<T>(payload: &[u8], limits: &DecodeLimits)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    let borrowed = Codec::<T>::decode_within(&Postcard, Payload::Borrowed(payload), limits);
    let owned = Codec::<T>::decode_within(&Postcard, Payload::Owned(payload.to_vec()), limits);
    assert_eq!(borrowed.as_ref().ok(), owned.as_ref().ok(), "borrowed and owned disagree");
    for head in 1..=payload.len().min(3) {
        let (head, body) = payload.split_at(head);
        let split = Payload::Split { head, body: body.to_vec() };
        let split = Codec::<T>::decode_within(&Postcard, split, limits);
        assert_eq!(borrowed.as_ref().ok(), split.as_ref().ok(), "a split payload disagrees");
    }
    let plain = match postcard::take_from_bytes::<T>(payload) {
        Ok((value, rest)) if rest.is_empty() => Some(value),
        _ => None,
    };
    match borrowed {
        Ok(value) => assert_eq!(Some(value), plain, "the fast path accepted what postcard refuses"),
        Err(Error::Codec(why)) if why.contains("deeper") || why.contains("budget") => {}
        Err(Error::Codec(_)) => {
            assert_eq!(plain, None, "the fast path refused what postcard reads")
        }
        Err(other) => panic!("decode gave {other:?}, not Codec"),
    }
}

/// The integers and `bool`, which take the codec's scalar fast path: each decodes `payload`
/// exactly as plain postcard does, whole, split and owned.
fn check_scalars(payload: &[u8], limits: &DecodeLimits) {
    check_bytes::<u8>(payload, limits);
    check_bytes::<u16>(payload, limits);
    check_bytes::<u32>(payload, limits);
    check_bytes::<u64>(payload, limits);
    check_bytes::<usize>(payload, limits);
    check_bytes::<i8>(payload, limits);
    check_bytes::<i16>(payload, limits);
    check_bytes::<i32>(payload, limits);
    check_bytes::<i64>(payload, limits);
    check_bytes::<isize>(payload, limits);
    check_bytes::<bool>(payload, limits);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else { return };
    let limits = DecodeLimits::default()
        .with_max_depth(usize::from(control & 0x7f) * 2)
        .with_max_expansion(usize::from(control >> 7) * 8 + 1);
    match data.len() % 9 {
        0 => check::<Tree>(payload, &limits),
        1 => check::<Job>(payload, &limits),
        2 => check::<Vec<Vec<u64>>>(payload, &limits),
        3 => check::<BTreeMap<String, Vec<Option<Box<Tree>>>>>(payload, &limits),
        4 => check::<(Vec<()>, Option<Box<[u8; 32]>>, String)>(payload, &limits),
        5 => check_bytes::<Vec<u8>>(payload, &limits),
        6 => check_bytes::<Box<[u8]>>(payload, &limits),
        7 => check_bytes::<String>(payload, &limits),
        _ => check_scalars(payload, &limits),
    }
});
