//! greenhub-ipc: gipc's cooperative pipes and child processes on the greenhub hub.
#![deny(unsafe_code)]

pub mod codec;
mod error;
pub mod frame;

pub use codec::{Codec, Postcard, Raw};
pub use error::Error;
