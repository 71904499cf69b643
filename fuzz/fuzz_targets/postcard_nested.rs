//! Postcard decoding of nested and recursive types under `DecodeLimits` of any setting: never a
//! panic, an abort (stack overflow, allocation failure) or a hang; a value that decodes
//! re-encodes to a payload that decodes to the same value.
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
    T: Serialize + DeserializeOwned + PartialEq + Debug,
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

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else { return };
    let limits = DecodeLimits::default()
        .with_max_depth(usize::from(control & 0x7f) * 2)
        .with_max_expansion(usize::from(control >> 7) * 8 + 1);
    match data.len() % 5 {
        0 => check::<Tree>(payload, &limits),
        1 => check::<Job>(payload, &limits),
        2 => check::<Vec<Vec<u64>>>(payload, &limits),
        3 => check::<BTreeMap<String, Vec<Option<Box<Tree>>>>>(payload, &limits),
        _ => check::<(Vec<()>, Option<Box<[u8; 32]>>, String)>(payload, &limits),
    }
});
