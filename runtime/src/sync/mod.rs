//! Synchronisation between the coroutines of one hub: [`Event`], [`channel`] / [`bounded`],
//! [`Semaphore`], [`Mutex`].
//!
//! All are `!Send` (share them between coroutines with `Rc`) and are built on one wait-list
//! skeleton ("check, register, suspend, check again"), so wake-ups are FIFO among the waiters of
//! one primitive and none is lost, even when a waiter is cancelled or times out. Waits suspend
//! only the calling coroutine. The errors are shaped like `std::sync::mpsc`'s.
//!
//! They belong to one thread's hub, so they cannot be sent to another thread (each is `!Send`
//! itself: the `u8` inside the generic ones is `Send`):
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Event>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Semaphore>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Sender<u8>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Receiver<u8>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Mutex<u8>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::MutexGuard<'static, u8>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::SemaphorePermit<'static>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::OwnedSemaphorePermit>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Group>();
//! ```
//!
//! ```compile_fail,E0277
//! fn assert_send<T: Send>() {}
//! assert_send::<greenhub::sync::Pool>();
//! ```

mod channel;
mod event;
mod group;
mod mutex;
mod pool;
mod select;
mod semaphore;
pub(crate) mod thread_channel;
pub(crate) mod waitlist;

pub use channel::{
    Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError,
    TrySendError, bounded, channel,
};
pub use event::Event;
pub use group::Group;
pub use mutex::{Mutex, MutexGuard};
pub use pool::Pool;
pub use semaphore::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
pub use thread_channel::{ThreadReceiver, ThreadSender, thread_channel};

/// The machinery behind [`select!`](crate::select); not a stable interface.
#[doc(hidden)]
pub mod __select {
    pub use super::select::{Mode, SelectRecv, Selected, Selector};
}
