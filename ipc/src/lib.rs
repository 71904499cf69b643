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
//! module, the only place with `unsafe`.
#![deny(unsafe_code)]

pub mod codec;
mod command;
mod error;
pub mod frame;
mod handle;
mod pipe;
mod pool;
mod process;
mod sigpipe;
mod socket;
mod sys;
mod transfer;

pub use codec::{Codec, Postcard, Raw};
pub use command::{ChildStderr, ChildStdin, ChildStdout, Command};
pub use error::Error;
pub use pipe::{Duplex, Reader, Writer, duplex, pipe, pipe_with, raw_pipe};
pub use pool::{Pool, PoolBuilder};
pub use process::{ChildResult, Process, ProcessBuilder, start_process};
pub use transfer::Transfer;

/// For greenhub's own tests: not part of the API.
#[doc(hidden)]
pub mod __private {
    /// How many greenhub-ipc handles (pipe ends, pidfds, program stdio) this process owns.
    pub fn owned_handle_count() -> usize {
        crate::handle::Registry::lock().len()
    }
}
