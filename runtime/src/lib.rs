//! # greenhub: gevent's programming model for Rust
//!
//! One hand-written event loop (the *hub*) per thread, on [`mio`] (epoll), schedules stackful
//! coroutines (on [`corosensei`] stacks). Code written in plain blocking style, [`sleep`],
//! [`JoinHandle::join`], [`sync::Receiver::recv`], [`net::TcpStream`]'s `read`, suspends only the
//! calling coroutine; the hub runs whichever coroutine can proceed.
//!
//! ```
//! use std::time::Duration;
//!
//! let total = greenhub::run(|| {
//!     let workers: Vec<_> = (1..=3u64)
//!         .map(|i| greenhub::spawn(move || {
//!             greenhub::sleep(Duration::from_millis(10 * i));
//!             i * 10
//!         }))
//!         .collect();
//!     workers.into_iter().map(|w| w.join().unwrap()).sum::<u64>()
//! });
//! assert_eq!(total, 60);
//! ```
//!
//! ## Guarantees
//! - A hub belongs to one thread; hub-bound types ([`JoinHandle`], the primitives of [`sync`],
//!   the sockets of [`net`]) are `!Send`. The one way in from another thread is
//!   [`sync::ThreadSender`] (`Send + Sync`), the sending end of a [`sync::thread_channel`].
//! - Coroutines start in spawn order, never inside [`spawn`]; wake-ups are FIFO among the waiters
//!   of one primitive; timers never fire early.
//! - Cancellation ([`JoinHandle::cancel`]) and [`timeout`] unwind the target's stack, so
//!   destructors run. A `Drop` impl must never suspend (see `docs/coroutines-and-stacks.md`).
//! - A blocked root coroutine that nothing can ever wake panics with `would block forever` and a
//!   report of every live coroutine, instead of hanging.
//!
//! ## Implementation
//! [`run`] builds a hub and runs the closure as the *root* coroutine; the thread's own stack (in a
//! forked child, a fresh one of the child's) runs the loop. One turn of the loop: run ready coroutines (at most a fairness budget of them), fire
//! expired timers, poll mio with a timeout that the next timer sets, and mark ready the coroutines
//! whose fds, timers or helper threads answered. See `docs/hub-loop.md`.
//!
//! Linux is the platform of record (epoll; pidfd in greenhub-ipc); OS-specific code lives in the
//! private `sys` module.

mod blocking;
pub mod coroutine;
pub mod ext;
#[cfg(test)]
mod footprint;
mod hub;
pub mod io;
mod join;
pub mod local;
mod monitor;
pub mod net;
#[cfg(test)]
mod overflow_in_child;
#[cfg(feature = "patch")]
pub mod patch;
pub mod signal;
mod spawn_later;
mod stack;
mod stderr;
pub mod sync;
mod sys;
mod task;
mod timer;

pub use blocking::{DEFAULT_BLOCKING_THREADS, spawn_blocking};
pub use coroutine::{CoroutineId, current, spawn, yield_now};
pub use hub::{Builder, run};
pub use join::{JoinError, JoinHandle};
pub use spawn_later::spawn_later;
pub use timer::{Elapsed, sleep, timeout};
