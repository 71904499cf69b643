//! Joining: [`JoinHandle`], [`JoinError`], and the result slot a coroutine shares with its handle.
//!
//! Guarantee: a coroutine's result is stored once, when it ends, and its joiners are woken then
//! (FIFO, on one wait list). Dropping a handle detaches the coroutine. Not guaranteed: when a
//! detached coroutine's result is dropped (with the last reference to its slot).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::coroutine::CoroutineId;
use crate::hub::try_hub;
use crate::sync::waitlist::WaitList;
use crate::task::{TaskRef, WaitReason};

/// The result slot shared by a coroutine and its handle.
pub(crate) struct JoinState<T> {
    result: RefCell<Option<Result<T, JoinError>>>,
    finished: Cell<bool>,
    waiters: WaitList,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Self {
        JoinState {
            result: RefCell::new(None),
            finished: Cell::new(false),
            waiters: WaitList::new(),
        }
    }

    /// Stores the result and wakes the joiners.
    pub(crate) fn finish(&self, result: Result<T, JoinError>) {
        debug_assert!(!self.finished.get(), "a coroutine ends once");
        *self.result.borrow_mut() = Some(result);
        self.finished.set(true);
        self.waiters.notify_all();
    }

    pub(crate) fn take(&self) -> Option<Result<T, JoinError>> {
        self.result.borrow_mut().take()
    }
}

/// The result side of a spawned body, with the closure type erased.
pub(crate) trait Joinable<T> {
    fn state(&self) -> &JoinState<T>;
}

/// A handle to a spawned coroutine: join it, wait for it with a timeout, or cancel it.
///
/// Dropping the handle detaches the coroutine; it runs on. Like every type bound to a hub, it
/// cannot leave its thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: &T) {}
/// greenhub::run(|| assert_send(&greenhub::spawn(|| ())));
/// ```
pub struct JoinHandle<T> {
    task: TaskRef,
    spawned: Rc<dyn Joinable<T>>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TaskRef, spawned: Rc<dyn Joinable<T>>) -> Self {
        JoinHandle { task, spawned }
    }

    /// Suspends the caller until the coroutine ends; returns its value, or why it has none.
    ///
    /// ```
    /// greenhub::run(|| {
    ///     let h = greenhub::spawn(|| -> u8 { panic!("boom") });
    ///     assert!(h.join().unwrap_err().is_panic());
    /// });
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        let state = self.spawned.state();
        let result =
            state.waiters.wait_until(WaitReason::Join(self.task.id), None, || state.take());
        result.expect("a join without deadline returns only with the result")
    }

    /// Suspends the caller until the coroutine ends or `d` passes; true when it has ended.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let state = self.spawned.state();
        let reason = WaitReason::Join(self.task.id);
        state.waiters.wait_until(reason, deadline, || state.finished.get().then_some(())).is_some()
    }

    /// Whether the coroutine has ended (returned, panicked or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.spawned.state().finished.get()
    }

    /// Cancels the coroutine (gevent's `kill`): it unwinds from its current or next suspension
    /// point, running destructors, and ends as cancelled. A coroutine that has not started never
    /// runs its body. Does nothing once it has ended. Does not wait: `join` for that.
    pub fn cancel(&self) {
        if let Some(hub) = try_hub() {
            hub.cancel(self.task);
        }
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoroutineId {
        self.task.id
    }

    /// The coroutine's place in the hub's table (for `sync::Group`).
    pub(crate) fn task(&self) -> TaskRef {
        self.task
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.task.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a coroutine has no value: it panicked, or it was cancelled.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panic(Box<dyn Any + Send>),
}

impl JoinError {
    pub(crate) fn cancelled() -> Self {
        JoinError { repr: Repr::Cancelled }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send>) -> Self {
        JoinError { repr: Repr::Panic(payload) }
    }

    /// True when the coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// True when the coroutine was cancelled (before it started or while it ran).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The panic payload, to rethrow with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the coroutine was cancelled rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.repr {
            Repr::Panic(payload) => payload,
            Repr::Cancelled => panic!("JoinError::into_panic on a cancelled coroutine"),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        let Repr::Panic(payload) = &self.repr else { return None };
        payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("the coroutine was cancelled"),
            (Repr::Panic(_), Some(msg)) => write!(f, "the coroutine panicked: {msg}"),
            (Repr::Panic(_), None) => f.write_str("the coroutine panicked"),
        }
    }
}

impl std::error::Error for JoinError {}
