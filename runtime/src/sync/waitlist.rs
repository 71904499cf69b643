//! The one wait-list skeleton under every primitive: check, register, check again, suspend.
//!
//! Guarantee: waiters are woken in the order they first registered (a waiter that was woken but
//! lost the race for the resource goes back to its original place, not to the back), and a
//! notification is never lost: a waiter woken and then cancelled or timed out passes its
//! notification to the next waiter. Not guaranteed: that a woken waiter gets the resource; every
//! caller re-checks its condition after each resume. A primitive that must hand its resource to
//! the waiter it woke (Semaphore, so nobody jumps the queue) uses [`WaitList::wait_turn`], whose
//! check is told whether the caller is such a woken waiter, and [`WaitList::woken`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::time::Instant;

use crate::coroutine::{self, Suspend};
use crate::hub::{hub, try_hub};
use crate::sys::HubSection;
use crate::task::{TaskRef, WaitReason};
use crate::timer::{TimerAction, TimerGuard};

/// Coroutines waiting on one primitive, in ticket (arrival) order. `!Send`, like everything
/// bound to one hub: every primitive built on it is `!Send` too.
#[derive(Default)]
pub(crate) struct WaitList {
    queue: RefCell<VecDeque<Waiter>>,
    next_ticket: Cell<u64>,
    _not_send: PhantomData<*const ()>,
    /// Waiters taken off the queue by a notification that have not yet re-checked (or left).
    woken: Cell<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Waiter {
    task: TaskRef,
    ticket: u64,
}

impl WaitList {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Suspends the caller until `check` returns `Some`, or until `deadline` passes (`None`).
    ///
    /// `check` must be side-effect free when it returns `None`.
    pub(crate) fn wait_until<R>(
        &self,
        reason: WaitReason,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        self.wait_turn(reason, deadline, |_| check())
    }

    /// [`wait_until`](Self::wait_until), with `check(woken)` told whether the caller is a waiter
    /// that a notification woke and that has not re-checked since: a primitive that reserves
    /// its resource for the woken (see [`woken`](Self::woken)) lets only them take it.
    pub(crate) fn wait_turn<R>(
        &self,
        reason: WaitReason,
        deadline: Option<Instant>,
        mut check: impl FnMut(bool) -> Option<R>,
    ) -> Option<R> {
        // Everything but the suspension is greenhub's bookkeeping (`HubSection`: an overflow
        // in it is never recovered).
        HubSection::enter_raw();
        // 1. Check.
        if let Some(ready) = check(false) {
            HubSection::leave();
            return Some(ready);
        }
        let hub = hub(reason.api_name());
        let me = hub.current_task(reason.api_name());
        let timer = deadline.map(|at| TimerGuard::new(hub, at, TimerAction::Wake(me)));
        // 2. Register.
        let mut entry = Entry::register(self, me);
        loop {
            // 3. Check again (the condition may have changed while we registered or slept).
            if let Some(ready) = check(!entry.queued) {
                entry.settle();
                HubSection::leave();
                return Some(ready);
            }
            if timer.as_ref().is_some_and(TimerGuard::fired) {
                HubSection::leave();
                return None; // `entry` passes on a notification it did not use
            }
            entry.requeue_if_woken();
            HubSection::leave();
            // 4. Suspend.
            coroutine::suspend(hub, Suspend::Wait(reason));
            HubSection::enter_raw();
            entry.look();
        }
    }

    /// Wakes the longest-waiting coroutine; false if none waits.
    #[inline]
    pub(crate) fn notify_one(&self) -> bool {
        HubSection::enter_raw();
        let waiter = self.queue.borrow_mut().pop_front();
        if let Some(waiter) = waiter {
            self.woken.set(self.woken.get() + 1);
            if let Some(hub) = try_hub() {
                hub.wake(waiter.task);
            }
        }
        HubSection::leave();
        waiter.is_some()
    }

    /// Wakes every waiting coroutine.
    pub(crate) fn notify_all(&self) {
        while self.notify_one() {}
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// How many waiters were woken by a notification and have not re-checked yet.
    pub(crate) fn woken(&self) -> usize {
        self.woken.get()
    }

    #[inline]
    fn position(&self, ticket: u64) -> Result<usize, usize> {
        self.queue.borrow().binary_search_by_key(&ticket, |w| w.ticket)
    }
}

impl fmt::Debug for WaitList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} waiting", self.len())
    }
}

/// One coroutine's place in a wait list, for the duration of one wait.
struct Entry<'a> {
    list: &'a WaitList,
    waiter: Waiter,
    /// Whether the entry was in the queue when last looked at (a notification pops it).
    queued: bool,
    settled: bool,
}

impl<'a> Entry<'a> {
    #[inline]
    fn register(list: &'a WaitList, task: TaskRef) -> Self {
        let ticket = list.next_ticket.get();
        list.next_ticket.set(ticket + 1);
        let waiter = Waiter { task, ticket };
        list.queue.borrow_mut().push_back(waiter);
        Entry { list, waiter, queued: true, settled: false }
    }

    /// After a resume: is the entry still queued, or did a notification take it off?
    #[inline]
    fn look(&mut self) {
        self.queued = self.list.position(self.waiter.ticket).is_ok();
    }

    /// Back to its original place after a wake that did not let it proceed.
    #[inline]
    fn requeue_if_woken(&mut self) {
        if !self.queued {
            self.list.woken.set(self.list.woken.get() - 1);
            let at = self.list.position(self.waiter.ticket).unwrap_err();
            self.list.queue.borrow_mut().insert(at, self.waiter);
            self.queued = true;
        }
    }

    /// The wait succeeded: leave the list without passing anything on.
    #[inline]
    fn settle(&mut self) {
        self.settled = true;
        self.leave();
    }

    /// Leaves the list: removes the entry if still queued, else stops counting it as woken.
    #[inline]
    fn leave(&self) {
        if self.queued {
            let at = self.list.position(self.waiter.ticket).expect("a queued entry is in the list");
            self.list.queue.borrow_mut().remove(at);
        } else {
            self.list.woken.set(self.list.woken.get() - 1);
        }
    }
}

impl Drop for Entry<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let _section = HubSection::enter(); // runs during unwinds too: a guard
        // Timed out, or unwinding out of `suspend` (cancelled), maybe after a notification
        // took the entry off the queue: look again before leaving.
        self.look();
        self.leave();
        if !self.queued {
            // Notified, then timed out or cancelled before using it: pass it on.
            self.list.notify_one();
        }
    }
}
