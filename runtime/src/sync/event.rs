//! `Event`: a flag that coroutines wait for (gevent's `Event`).

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use super::waitlist::WaitList;
use crate::task::WaitReason;
use crate::timer::deadline_after;

/// A flag coroutines can wait for; `set` wakes every waiter, and later waits return at once
/// until `clear`.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Event;
///
/// greenhub::run(|| {
///     let ready = Rc::new(Event::new());
///     let waiter = greenhub::spawn({
///         let ready = ready.clone();
///         move || { ready.wait(); "woken" }
///     });
///     greenhub::yield_now(); // the waiter suspends in wait()
///     ready.set();
///     assert_eq!(waiter.join().unwrap(), "woken");
/// });
/// ```
#[derive(Default)]
pub struct Event {
    flag: Cell<bool>,
    waiters: WaitList,
}

impl Event {
    /// A new, unset event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.flag.set(true);
        self.waiters.notify_all();
    }

    /// Clears the flag: later waits suspend until the next `set`.
    pub fn clear(&self) {
        self.flag.set(false);
    }

    /// Whether the flag is set.
    #[track_caller]
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }

    /// Suspends the caller until the flag is set (returns at once if it is).
    #[track_caller]
    pub fn wait(&self) {
        self.waiters.wait_until(WaitReason::Event, None, || self.flag.get().then_some(()));
    }

    /// Like [`wait`](Self::wait), for at most `d`; true when the flag is set.
    #[track_caller]
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = deadline_after(d);
        let check = || self.flag.get().then_some(());
        self.waiters.wait_until(WaitReason::Event, deadline, check).is_some()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .field("waiters", &self.waiters)
            .finish()
    }
}
