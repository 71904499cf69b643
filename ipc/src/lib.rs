//! # greenhub-ipc: gipc's cooperative pipes and child processes on the greenhub hub
//!
//! Message pipes between processes whose `get` and `put` suspend only the calling coroutine, and
//! child processes that each run their own fresh hub. Handles are transferred to a child
//! explicitly and closed in the parent (gipc's rule, enforced by ownership).
//!
//! ```
//! greenhub::run(|| {
//!     let (reader, writer) = greenhub_ipc::pipe::<String>().unwrap();
//!     let sender = greenhub::spawn(move || writer.put(&"hello".to_string()).unwrap());
//!     assert_eq!(reader.get().unwrap(), "hello");
//!     sender.join().unwrap();
//! });
//! ```
//!
//! Linux only for now (pidfd, pipe2, `F_SETPIPE_SZ`); all OS calls live in the private `sys`
//! module, the only place with `unsafe` blocks besides the `FromRawFd` impls of `Reader` and
//! `Writer` (an unsafe trait method by definition, beside the handles it makes).
#![deny(unsafe_code)]

pub mod codec;
mod command;
mod error;
mod fork;
pub mod frame;
mod handle;
mod pipe;
mod pool;
mod process;
mod reap;
mod sigpipe;
mod socket;
mod stdio;
mod sys;
mod transfer;

pub use codec::{Codec, Postcard, Raw};
pub use command::Command;
pub use error::Error;
pub use fork::ChildResult;
pub use pipe::{Duplex, Reader, Writer, duplex, pipe, pipe_with, raw_pipe};
pub use pool::{Pool, PoolBuilder};
pub use process::{Process, ProcessBuilder, start_process};
pub use stdio::{ChildStderr, ChildStdin, ChildStdout};
pub use transfer::Transfer;

/// For greenhub's own tests: not part of the API.
#[doc(hidden)]
pub mod __private {
    /// How many greenhub-ipc handles (pipe ends, pidfds, program stdio) this process owns.
    #[track_caller]
    pub fn owned_handle_count() -> usize {
        crate::handle::Registry::lock().len()
    }
}
