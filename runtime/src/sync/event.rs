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
/// A waiter that was waiting when `set` was called returns even if the flag was cleared again
/// before it ran (gevent's rule since 1.1): a `set` then `clear` wakes the waiters of that
/// moment, and it is not lost.
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
    /// How many times `set` has been called: a waiter is done when the flag is set or when this
    /// moved since it began to wait (a `set` then `clear` happened meanwhile).
    sets: Cell<u64>,
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
        self.sets.set(self.sets.get() + 1);
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

    /// Suspends the caller until the flag is set (returns at once if it is), or until a `set`
    /// while it waits, even if the flag was cleared again before it ran.
    #[track_caller]
    pub fn wait(&self) {
        let since = self.sets.get();
        self.waiters.wait_until(WaitReason::Event, None, || self.was_set_since(since));
    }

    /// Like [`wait`](Self::wait), for at most `d`; true when it returned because of a `set`,
    /// false when the time ran out.
    #[track_caller]
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = deadline_after(d);
        let since = self.sets.get();
        let check = || self.was_set_since(since);
        self.waiters.wait_until(WaitReason::Event, deadline, check).is_some()
    }

    fn was_set_since(&self, sets: u64) -> Option<()> {
        (self.flag.get() || self.sets.get() != sets).then_some(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A `set` then `clear` with a waiter suspended wakes it (gevent's rule): the wake-up of
    /// that moment is not lost because the flag went down before the waiter ran.
    #[test]
    fn a_set_then_clear_wakes_the_waiters_of_that_moment() {
        crate::run(|| {
            let event = Rc::new(Event::new());
            let waiter = crate::spawn({
                let event = event.clone();
                move || event.wait_timeout(Duration::from_secs(60))
            });
            crate::yield_now(); // the waiter suspends in wait_timeout
            event.set();
            event.clear();
            assert!(waiter.join().unwrap(), "woken by the set, not by the timeout");
            assert!(!event.is_set());
            // A wait that starts after the pulse waits for the next set.
            assert!(!event.wait_timeout(Duration::from_millis(1)));
        });
    }
}
