//! Joining: [`JoinHandle`], [`JoinError`], and the result slot a coroutine shares with its handle.
//!
//! Guarantee: a coroutine's result is stored once, when it ends, and its joiners are woken then
//! (FIFO, on one wait list). Dropping a handle detaches the coroutine. Not guaranteed: when a
//! detached coroutine's result is dropped (with the last reference to its slot).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
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
        crate::sys::HubSection::enter_raw();
        *self.result.borrow_mut() = Some(result);
        self.finished.set(true);
        crate::sys::HubSection::leave();
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
    name: Option<Rc<str>>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TaskRef, spawned: Rc<dyn Joinable<T>>, name: Option<Rc<str>>) -> Self {
        JoinHandle { task, spawned, name }
    }

    /// Suspends the caller until the coroutine ends; returns its value, or why it has none.
    ///
    /// ```
    /// greenhub::run(|| {
    ///     let h = greenhub::spawn(|| -> u8 { panic!("boom") });
    ///     assert!(h.join().unwrap_err().is_panic());
    /// });
    /// ```
    ///
    /// # Panics
    /// When the coroutine joins its own handle: it would wait for itself forever.
    #[track_caller]
    pub fn join(self) -> Result<T, JoinError> {
        if let Some(hub) = try_hub() {
            hub.assert_not_self_join(self.task);
        }
        let state = self.spawned.state();
        let result =
            state.waiters.wait_until(WaitReason::Join(self.task.id), None, || state.take());
        result.expect("a join without deadline returns only with the result")
    }

    /// Suspends the caller until the coroutine ends or `d` passes; true when it has ended.
    #[track_caller]
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let state = self.spawned.state();
        let reason = WaitReason::Join(self.task.id);
        state.waiters.wait_until(reason, deadline, || state.finished.get().then_some(())).is_some()
    }

    /// Whether the coroutine has ended (returned, panicked or was cancelled).
    #[track_caller]
    pub fn is_finished(&self) -> bool {
        self.spawned.state().finished.get()
    }

    /// Cancels the coroutine (gevent's `kill`): it unwinds from its current or next suspension
    /// point, running destructors, and ends as cancelled. A coroutine that has not started never
    /// runs its body. Does nothing once it has ended. Does not wait: `join` for that.
    #[track_caller]
    pub fn cancel(&self) {
        if let Some(hub) = try_hub() {
            hub.cancel(self.task);
        }
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoroutineId {
        self.task.id
    }

    /// The coroutine's name, if [`coroutine::Builder::name`](crate::coroutine::Builder::name)
    /// gave it one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
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
            .field("name", &self.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a coroutine has no value: it panicked, or it was cancelled.
///
/// A coroutine that could not start because the OS refused its stack counts as panicked, with a
/// message naming what ran out.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panic(Box<dyn Any + Send>),
    /// No stack: the message is shared by every coroutine refused for the same reason.
    NoStack(Arc<str>),
    /// It ran off its stack of this many usable bytes (`recover_stack_overflow`).
    StackOverflow(usize),
}

impl JoinError {
    pub(crate) fn cancelled() -> Self {
        JoinError { repr: Repr::Cancelled }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send>) -> Self {
        JoinError { repr: Repr::Panic(payload) }
    }

    pub(crate) fn no_stack(message: Arc<str>) -> Self {
        JoinError { repr: Repr::NoStack(message) }
    }

    /// True when the coroutine panicked (or could not start for want of a stack).
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_) | Repr::NoStack(_))
    }

    pub(crate) fn stack_overflow(size: usize) -> Self {
        JoinError { repr: Repr::StackOverflow(size) }
    }

    /// True when the coroutine overflowed its stack and the hub, built with
    /// [`recover_stack_overflow(true)`](crate::Builder::recover_stack_overflow), ended it there.
    pub fn is_stack_overflow(&self) -> bool {
        matches!(self.repr, Repr::StackOverflow(_))
    }

    /// True when the coroutine was cancelled (before it started or while it ran).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The panic payload, to rethrow with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the coroutine was cancelled, or overflowed its stack, rather than panicked.
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.repr {
            Repr::Panic(payload) => payload,
            Repr::NoStack(message) => Box::new(message.to_string()),
            Repr::Cancelled => panic!("JoinError::into_panic on a cancelled coroutine"),
            Repr::StackOverflow(_) => {
                panic!("JoinError::into_panic on a coroutine that overflowed its stack")
            }
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic(payload) => payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str)),
            Repr::NoStack(message) => Some(message),
            Repr::Cancelled | Repr::StackOverflow(_) => None,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
            Repr::NoStack(message) => write!(f, "JoinError::NoStack({message:?})"),
            Repr::StackOverflow(size) => write!(f, "JoinError::StackOverflow({size})"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("the coroutine was cancelled"),
            (Repr::NoStack(message), _) => write!(f, "the coroutine could not start: {message}"),
            (Repr::StackOverflow(size), _) => {
                write!(f, "the coroutine overflowed its stack ({size} bytes) and was ended there")
            }
            (Repr::Panic(_), Some(msg)) => write!(f, "the coroutine panicked: {msg}"),
            (Repr::Panic(_), None) => f.write_str("the coroutine panicked"),
        }
    }
}

impl std::error::Error for JoinError {}
