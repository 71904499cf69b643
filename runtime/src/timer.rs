//! Timers: `sleep`, `timeout`, and the hub's timer queue.
//!
//! Guarantee: a timer never fires before its deadline (the loop sleeps on a timerfd armed for
//! the earliest deadline, falling back to mio's poll timeout, which rounds up to whole
//! milliseconds; expiry is checked against `Instant::now()`); timers with the same
//! deadline fire in the order they were set; a `timeout` whose deadline passed while its closure
//! was suspended unwinds it when it is resumed, even if the loop has not fired that timer yet
//! (a resume inside a `timeout` fires the due timers first). Not guaranteed: how late a timer
//! fires, which depends on what the other coroutines do before they suspend.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::coroutine::{self, Suspend, Wake};
use crate::hub::{Hub, hub};
use crate::sys::HubSection;
use crate::task::{TaskRef, WaitReason};

/// A timer's key and id: its deadline, then a sequence number so that equal deadlines keep their
/// order (and two timers never share a key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct TimerKey {
    at: Instant,
    seq: u64,
}

/// The id of one `timeout` call, carried by its unwind payload to the boundary that set it.
/// Ids grow with time, so of two nested timeouts the outer one has the smaller id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct TimeoutId(u64);

impl TimeoutId {
    /// The number (from 1), for `Doom`'s one-word encoding.
    pub(crate) fn get(self) -> u64 {
        self.0
    }

    /// The id whose number is `n` (from [`get`](Self::get)).
    pub(crate) fn from_raw(n: u64) -> TimeoutId {
        TimeoutId(n)
    }
}

/// What a timer does when it fires.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TimerAction {
    /// Make the task ready (sleep, waits with a deadline).
    Wake(TaskRef),
    /// Unwind the task to the `timeout` boundary with this id.
    Interrupt(TaskRef, TimeoutId),
}

/// The hub's timer queue: obviously correct before it is clever.
#[derive(Default)]
pub(crate) struct Timers {
    queue: RefCell<BTreeMap<TimerKey, TimerAction>>,
    next_seq: Cell<u64>,
}

impl Timers {
    pub(crate) fn insert(&self, at: Instant, action: TimerAction) -> TimerKey {
        let key = TimerKey { at, seq: self.next_seq.get() };
        self.next_seq.set(key.seq + 1);
        HubSection::enter_raw();
        self.queue.borrow_mut().insert(key, action);
        HubSection::leave();
        key
    }

    /// Removes a timer; false if it had already fired (or been removed).
    pub(crate) fn remove(&self, key: TimerKey) -> bool {
        HubSection::enter_raw();
        let removed = self.queue.borrow_mut().remove(&key).is_some();
        HubSection::leave();
        removed
    }

    /// Removes every timer of `task`: one whose stack overflowed and was buried never drops the
    /// guards its frames held, and a timer left behind would keep the hub awake (and its
    /// deadlock report waiting) until the deadline.
    pub(crate) fn forget_task(&self, task: TaskRef) {
        self.queue.borrow_mut().retain(|_, action| match *action {
            TimerAction::Wake(t) | TimerAction::Interrupt(t, _) => t != task,
        });
    }

    pub(crate) fn contains(&self, key: TimerKey) -> bool {
        // Reached from a coroutine's code: see `TaskTable::with` for why the section.
        let _section = HubSection::enter();
        self.queue.borrow().contains_key(&key)
    }

    pub(crate) fn is_empty(&self) -> bool {
        let _section = HubSection::enter();
        self.queue.borrow().is_empty()
    }

    /// The earliest deadline, if any timer is set.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.borrow().first_key_value().map(|(key, _)| key.at)
    }

    /// Fires every timer whose deadline has passed, in deadline order.
    pub(crate) fn fire_expired(&self, hub: &Hub) {
        if self.is_empty() {
            return;
        }
        let now = Instant::now();
        loop {
            let action = {
                let mut queue = self.queue.borrow_mut();
                match queue.first_entry() {
                    Some(entry) if entry.key().at <= now => entry.remove(),
                    _ => return,
                }
            };
            match action {
                TimerAction::Wake(task) => hub.wake(task),
                TimerAction::Interrupt(task, id) => hub.interrupt(task, Wake::Timeout(id)),
            }
        }
    }
}

/// A timer that is removed when this guard drops (the wait ended, or unwound).
pub(crate) struct TimerGuard<'h> {
    hub: &'h Hub,
    key: TimerKey,
}

impl<'h> TimerGuard<'h> {
    pub(crate) fn new(hub: &'h Hub, at: Instant, action: TimerAction) -> Self {
        TimerGuard { hub, key: hub.timers.insert(at, action) }
    }

    /// Whether the timer has fired.
    pub(crate) fn fired(&self) -> bool {
        !self.hub.timers.contains(self.key)
    }
}

impl Drop for TimerGuard<'_> {
    fn drop(&mut self) {
        self.hub.timers.remove(self.key);
    }
}

/// A deadline `d` from now; `None` when it is too far to represent (wait forever).
pub(crate) fn deadline_after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// Suspends the calling coroutine for at least `d`; `sleep(Duration::ZERO)` is a yield.
///
/// ```
/// use std::time::{Duration, Instant};
/// greenhub::run(|| {
///     let start = Instant::now();
///     greenhub::sleep(Duration::from_millis(5));
///     assert!(start.elapsed() >= Duration::from_millis(5));
/// });
/// ```
///
/// # Panics
/// Outside a hub.
#[track_caller]
pub fn sleep(d: Duration) {
    let hub = hub("sleep");
    let me = hub.current_task("sleep"); // a misuse names `sleep`, also for a zero duration
    if d.is_zero() {
        return coroutine::suspend(hub, Suspend::Yield);
    }
    let Some(deadline) = deadline_after(d) else {
        // Longer than `Instant` can represent: a sleep that never ends (still cancellable).
        loop {
            coroutine::suspend(hub, Suspend::Wait(WaitReason::Sleep(hub.tasks.deadline(None))));
        }
    };
    let timer = TimerGuard::new(hub, deadline, TimerAction::Wake(me));
    let reason = WaitReason::Sleep(hub.tasks.deadline(Some(deadline)));
    while !timer.fired() {
        coroutine::suspend(hub, Suspend::Wait(reason));
    }
}

/// The unwind payload that carries a fired timeout to its boundary. Which boundary is the task's
/// sticky `timed_out` id, not the payload: a library may catch one unwind and start another.
pub(crate) struct TimedOut;

thread_local! {
    static NEXT_TIMEOUT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Runs `f`, unwinding it if it is still suspended when `d` has passed (gevent's `Timeout`).
///
/// When the deadline passes while `f` is suspended (in `sleep`, `recv`, `read`, `join`, ...), that
/// suspension point unwinds to this boundary, running destructors, and `timeout` returns
/// `Err(Elapsed)`. Nested timeouts work: the one that fired is the one that returns `Err`. An `f`
/// that returns without being suspended past the deadline gives `Ok`, however long it took.
/// A library inside `f` that catches the unwind (`catch_unwind`) does not make the deadline
/// disappear: every later suspension point inside `f` unwinds again, and `timeout` gives
/// `Err(Elapsed)` also when `f` returns after its deadline fired.
///
/// ```
/// use std::time::Duration;
/// greenhub::run(|| {
///     let slow = greenhub::timeout(Duration::from_millis(5), || {
///         greenhub::sleep(Duration::from_secs(10));
///     });
///     assert!(slow.is_err());
///     assert_eq!(greenhub::timeout(Duration::from_secs(1), || 3), Ok(3));
/// });
/// ```
///
/// # Panics
/// Outside a hub. A panic inside `f` propagates.
#[track_caller]
pub fn timeout<T>(d: Duration, f: impl FnOnce() -> T) -> Result<T, Elapsed> {
    let hub = hub("timeout");
    let me = hub.current_task("timeout");
    let Some(deadline) = deadline_after(d) else { return Ok(f()) };
    let id = NEXT_TIMEOUT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        TimeoutId(id)
    });
    let timer = TimerGuard::new(hub, deadline, TimerAction::Interrupt(me, id));
    // A resume of this coroutine after the deadline delivers the timeout even if the loop has
    // not fired the timer yet (it fires timers after running the ready coroutines).
    let outer = hub.tasks.enter_timeout(me);
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    hub.tasks.leave_timeout(me, outer);
    drop(timer);
    let fired = hub.take_timed_out(id);
    match outcome {
        // Ours fired and `f`'s code saw it as an error (a patched call's ETIMEDOUT): whether `f`
        // returned or panicked on that error, this timeout is what ended it.
        // (A cancellation stays armed in the coroutine and unwinds it at its next suspension.)
        _ if fired.is_some_and(|f| f.as_error()) => Err(Elapsed(())),
        // A panic in `f`, or a cancellation: never turned into `Elapsed`.
        Err(payload) if !payload.is::<TimedOut>() => panic::resume_unwind(payload),
        // Ours fired: whether its unwind got here, or a library inside `f` caught it and `f`
        // returned (a value computed past the deadline is dropped, as gevent's Timeout would).
        _ if fired.is_some() => Err(Elapsed(())),
        Ok(value) => Ok(value),
        // An outer timeout's unwind, on its way to its own boundary.
        Err(payload) => panic::resume_unwind(payload),
    }
}

/// The error of a [`timeout`] whose deadline passed while its closure was suspended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Debug for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Elapsed")
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coroutine::CoroutineId;

    fn task(n: usize) -> TaskRef {
        TaskRef { key: n, id: CoroutineId::for_test(n as u64) }
    }

    #[test]
    fn equal_deadlines_keep_insertion_order() {
        let timers = Timers::default();
        let at = Instant::now();
        let a = timers.insert(at, TimerAction::Wake(task(1)));
        let b = timers.insert(at, TimerAction::Wake(task(2)));
        assert!(a < b);
        assert_eq!(timers.queue.borrow().keys().copied().collect::<Vec<_>>(), vec![a, b]);
    }

    #[test]
    fn next_deadline_is_the_earliest_and_none_when_empty() {
        let timers = Timers::default();
        assert_eq!(timers.next_deadline(), None);
        let now = Instant::now();
        let late = timers.insert(now + Duration::from_millis(50), TimerAction::Wake(task(1)));
        let early = timers.insert(now, TimerAction::Wake(task(2)));
        assert_eq!(timers.next_deadline(), Some(now));
        assert!(timers.remove(early));
        assert!(!timers.remove(early));
        assert_eq!(timers.next_deadline(), Some(late.at));
        assert!(timers.remove(late));
        assert!(timers.is_empty());
    }
}
