//! Bytes through the default codec: which messages skip serde, and how to keep a struct's bytes
//! fast with `serde_bytes`.
//!
//! A message that *is* a `Vec<u8>` (or `Box<[u8]>`, or `String`) takes postcard's fast path: its
//! length and its bytes, written straight from the vector and read into the vector that `get`
//! returns. Bytes inside a struct take serde's path, where a plain `Vec<u8>` is a sequence that
//! postcard encodes and decodes one `u8` at a time; `#[serde(with = "serde_bytes")]` makes the
//! field one byte string instead. All three put the same bytes on the wire, so a peer may use
//! either type. The times show what each costs (they vary with the machine and the build; the
//! plain field is the slow one, several times the others in a release build).
//!
//! Run: `cargo run --release -p examples --example byte_messages`
//!
//! Expected output:
//! ```text
//! pipe::<Vec<u8>>(): 8388608 bytes in {n} ms
//! struct with a serde_bytes field: 8388608 bytes in {n} ms
//! struct with a plain Vec<u8> field: 8388608 bytes in {n} ms
//! the same payload on the wire all three ways: true
//! ```

use std::time::Instant;

use greenhub_ipc::{Codec, Error, Postcard, pipe};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The size of each message: 8 MiB.
const SIZE: usize = 8 << 20;

/// A blob whose bytes serde sees as one byte string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marked {
    name: String,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The same blob, with its bytes a sequence of `u8` as far as serde knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plain {
    name: String,
    data: Vec<u8>,
}

/// Sends `message` from a coroutine to this one through a fresh `pipe::<T>()`; prints how long
/// the whole exchange took (encode, write, read, decode) and how many bytes it carried.
fn send<T>(what: &str, message: T, bytes: impl Fn(&T) -> usize) -> Result<(), Error>
where
    T: Serialize + DeserializeOwned + PartialEq + 'static,
{
    let (reader, writer) = pipe::<T>()?;
    let start = Instant::now();
    let sent = greenhub::spawn(move || writer.put(&message).map(|()| message));
    let received = reader.get()?;
    let elapsed = start.elapsed();
    let message = sent.join().expect("the sending coroutine ends")?;
    assert!(received == message, "{what}: the message changed on the way");
    println!("{what}: {} bytes in {} ms", bytes(&received), elapsed.as_millis());
    Ok(())
}

/// The payload postcard makes of `value`.
fn payload<T: Serialize + DeserializeOwned + 'static>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    Postcard.encode(value, &mut out)?;
    Ok(out)
}

fn main() -> Result<(), Error> {
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let marked = Marked { name: String::new(), data: data.clone() };
    let plain = Plain { name: String::new(), data: data.clone() };
    // A struct's empty name is one zero byte, then its data as the Vec<u8> itself would be.
    let same =
        payload(&marked)?[1..] == payload(&data)?[..] && payload(&marked)? == payload(&plain)?;
    greenhub::run(|| {
        send("pipe::<Vec<u8>>()", data, Vec::len)?;
        send("struct with a serde_bytes field", marked, |m| m.data.len())?;
        send("struct with a plain Vec<u8> field", plain, |p| p.data.len())
    })?;
    println!("the same payload on the wire all three ways: {same}");
    Ok(())
}
