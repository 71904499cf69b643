//! The one wait-list skeleton under every primitive: check, register, suspend, check again.
//!
//! Guarantee: waiters are woken in the order they first registered (a waiter that was woken but
//! lost the race for the resource goes back to its original place, not to the back), and a
//! notification is never lost: a waiter woken and then cancelled or timed out passes its
//! notification to the next waiter. Not guaranteed by the list itself: that a woken waiter gets
//! the resource; every caller re-checks its condition after each resume. A primitive that must
//! hand its resource to the waiter it woke (Semaphore, channels, so nobody jumps the queue)
//! uses [`WaitList::wait_turn`], whose check is told whether the caller is such a woken waiter,
//! and [`WaitList::woken`].
//!
//! `select!` waits on several lists at once ([`wait_any`]): one entry per list, all for the same
//! coroutine and marked as a *select* entry. The first notification wakes the coroutine; a
//! notification that reaches one of its other entries while it is already woken (or running)
//! skips it and goes to the next waiter of that list, so no list's notification is spent on a
//! coroutine that will take only one thing. When the select commits one arm, its other entries
//! leave their lists, and an entry that a notification did take passes it on, as any unused
//! notification is.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::time::Instant;

use crate::coroutine::{self, Suspend};
use crate::hub::{Hub, hub, try_hub};
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
    /// One of several entries of a `select!`: skipped by a notification while its coroutine is
    /// not suspended (another list woke it already, or it is running).
    select: bool,
}

impl WaitList {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Suspends the caller until `check` returns `Some`, or until `deadline` passes (`None`).
    ///
    /// `check` must be side-effect free when it returns `None`.
    #[track_caller]
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
    #[track_caller]
    pub(crate) fn wait_turn<R>(
        &self,
        reason: WaitReason,
        deadline: Option<Instant>,
        check: impl FnMut(bool) -> Option<R>,
    ) -> Option<R> {
        self.wait_hooked(reason, deadline, || {}, check)
    }

    /// [`wait_turn`](Self::wait_turn), calling `entered` each time the caller's entry enters
    /// the queue (when it registers, and when it goes back after a wake that did not let it
    /// proceed): a rendezvous receiver announces itself to the senders waiting for one.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn wait_hooked<R>(
        &self,
        reason: WaitReason,
        deadline: Option<Instant>,
        mut entered: impl FnMut(),
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
        let mut entry = Entry::register(self, me, false);
        entered();
        // No second check before the first suspension: between the check above and here
        // nothing else ran (no suspension; `entered` only wakes), the timer cannot have fired
        // (only the loop fires timers) and another thread's wake-up reaches this list through
        // the loop too, so the condition is what it was. (A check costs a primitive's
        // bookkeeping; skipping it saves that on every wait that suspends.)
        loop {
            HubSection::leave();
            // 3. Suspend.
            coroutine::suspend(hub, Suspend::Wait(reason));
            HubSection::enter_raw();
            entry.look();
            // 4. Check again (the condition may have changed while we slept).
            if let Some(ready) = check(!entry.queued) {
                entry.settle();
                HubSection::leave();
                return Some(ready);
            }
            if timer.as_ref().is_some_and(TimerGuard::fired) {
                HubSection::leave();
                return None; // `entry` passes on a notification it did not use
            }
            if entry.requeue_if_woken() {
                entered();
            }
        }
    }

    /// Wakes the longest-waiting coroutine; false if none waits.
    ///
    /// A select entry whose coroutine is not suspended is skipped (it stays queued): that
    /// coroutine is already going to re-check every arm, so the notification goes to the next
    /// waiter instead.
    #[inline]
    pub(crate) fn notify_one(&self) -> bool {
        let mut queue = self.queue.borrow_mut();
        // Nobody waits (a coroutine's end with nobody joining yet, a send with no receiver
        // parked): one borrow check, without the section and the hub lookup.
        let Some(front) = queue.front() else { return false };
        HubSection::enter_raw();
        // The usual case inline, in the borrow that looked: a plain waiter first in line is
        // popped (`pop_front`; `remove(0)` pays for the general shift).
        let waiter = if front.select { pop_unskipped(&mut queue) } else { queue.pop_front() };
        drop(queue);
        let woke = waiter.is_some();
        if let Some(waiter) = waiter {
            self.woken.set(self.woken.get() + 1);
            if let Some(hub) = try_hub() {
                hub.tasks.wake_in_section(waiter.task);
            }
        }
        HubSection::leave();
        woke
    }

    /// Wakes the longest-waiting coroutine that is not in a `select!`, if any: for a
    /// notification a `select!` was woken by and could not use (see [`wait_any`]). Only plain
    /// waiters get it, which never pass it on again, so two selects that cannot use it do not
    /// hand it back and forth.
    fn notify_one_plain(&self) {
        HubSection::enter_raw();
        let waiter = {
            let mut queue = self.queue.borrow_mut();
            queue.iter().position(|w| !w.select).and_then(|at| queue.remove(at))
        };
        if let Some(waiter) = waiter {
            self.woken.set(self.woken.get() + 1);
            if let Some(hub) = try_hub() {
                hub.wake(waiter.task);
            }
        }
        HubSection::leave();
    }

    /// Wakes every waiting coroutine.
    pub(crate) fn notify_all(&self) {
        while self.notify_one() {}
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    /// How many queued entries belong to coroutines other than `task` and would take what a
    /// notification brings: every entry but a `select!`'s whose coroutine is not suspended (a
    /// notification skips it; another of its lists woke it, and it may take that arm).
    pub(crate) fn takers_except(&self, task: Option<TaskRef>) -> usize {
        let hub = try_hub();
        let queue = self.queue.borrow();
        queue.iter().filter(|w| Some(w.task) != task && !skipped(hub, w)).count()
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

/// Takes the first waiter of `queue` that a notification does not skip (the first one is a
/// select entry), if any.
#[inline(never)]
fn pop_unskipped(queue: &mut VecDeque<Waiter>) -> Option<Waiter> {
    let hub = try_hub();
    let at = queue.iter().position(|w| !skipped(hub, w))?;
    queue.remove(at)
}

/// Whether a notification passes over `waiter`: a select entry of a coroutine that is not
/// suspended (woken already through another of its lists, or running now).
fn skipped(hub: Option<&Hub>, waiter: &Waiter) -> bool {
    hub.filter(|_| waiter.select).is_some_and(|hub| !hub.tasks.is_suspended(waiter.task))
}

/// Suspends the caller until `check` names a ready operation (its index), registered meanwhile
/// on every list of `lists` (one entry each, in the order given), or until `deadline` passes
/// (`None`). `entered(i)` is called each time the entry on `lists[i]` enters its queue.
///
/// The select skeleton: check; register on every list; check again; suspend. On success the
/// entry of the chosen list is settled and every other entry leaves its list, passing on a
/// notification it took. `check(me, woken)` must be side-effect free; `woken[i]` says whether a
/// notification of `lists[i]` took the coroutine's entry there off the queue (what it brought
/// is promised to this coroutine; empty before the coroutine registers). The caller commits
/// the operation itself, before it can suspend again.
#[track_caller]
pub(crate) fn wait_any(
    lists: &[&WaitList],
    reason: WaitReason,
    deadline: Option<Instant>,
    mut entered: impl FnMut(usize),
    mut check: impl FnMut(Option<TaskRef>, &[bool]) -> Option<usize>,
) -> Option<usize> {
    // As in `wait_hooked`: everything but the suspension is greenhub's bookkeeping (the
    // entries are registered in several lists at once: an overflow halfway is never recovered).
    HubSection::enter_raw();
    if let Some(ready) = check(None, &[]) {
        HubSection::leave();
        return Some(ready);
    }
    let hub = hub(reason.api_name());
    let me = hub.current_task(reason.api_name());
    let timer = deadline.map(|at| TimerGuard::new(hub, at, TimerAction::Wake(me)));
    let mut entries: Vec<Entry<'_>> = lists.iter().map(|l| Entry::register(l, me, true)).collect();
    (0..entries.len()).for_each(&mut entered);
    let mut woken = vec![false; entries.len()];
    loop {
        if let Some(ready) = check(Some(me), &woken) {
            entries[ready].settle();
            HubSection::leave();
            return Some(ready); // the other entries leave (and pass on) as they drop
        }
        if timer.as_ref().is_some_and(TimerGuard::fired) {
            HubSection::leave();
            return None;
        }
        for (i, entry) in entries.iter_mut().enumerate() {
            if entry.requeue_if_woken() {
                entered(i);
                // Woken through this list and no arm ready: a plain waiter of the list may
                // use what the notification brought (a rendezvous's free slot serves a plain
                // `send`, while a select's send arm also needs a waiting receiver; a probe's
                // plain sender waited forever behind such a select).
                lists[i].notify_one_plain();
            }
        }
        HubSection::leave();
        coroutine::suspend(hub, Suspend::Wait(reason));
        HubSection::enter_raw();
        for (entry, woken) in entries.iter_mut().zip(&mut woken) {
            entry.look();
            *woken = !entry.queued;
        }
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
    fn register(list: &'a WaitList, task: TaskRef, select: bool) -> Self {
        let ticket = list.next_ticket.get();
        list.next_ticket.set(ticket + 1);
        let waiter = Waiter { task, ticket, select };
        list.queue.borrow_mut().push_back(waiter);
        Entry { list, waiter, queued: true, settled: false }
    }

    /// After a resume: is the entry still queued, or did a notification take it off?
    #[inline]
    fn look(&mut self) {
        // The queue is in ticket order: when it is empty or starts after this ticket (the usual
        // case after a notification popped the entry), the entry is not in it, without a search.
        let after_me = match self.list.queue.borrow().front() {
            None => true,
            Some(front) => front.ticket > self.waiter.ticket,
        };
        self.queued = !after_me && self.list.position(self.waiter.ticket).is_ok();
    }

    /// Back to its original place after a wake that did not let it proceed; true if it went
    /// back.
    #[inline]
    fn requeue_if_woken(&mut self) -> bool {
        if self.queued {
            return false;
        }
        self.list.woken.set(self.list.woken.get() - 1);
        let at = self.list.position(self.waiter.ticket).unwrap_err();
        self.list.queue.borrow_mut().insert(at, self.waiter);
        self.queued = true;
        true
    }

    /// The wait succeeded: leave the list without passing anything on.
    #[inline]
    fn settle(&mut self) {
        self.settled = true;
        self.leave();
    }

    /// Leaves the list: removes the entry if still queued, else stops counting it as woken.
    // The woken case (every wait a notification ended) is one decrement inline; the search and
    // removal are out of line. With both inline the function was too large to inline: a call
    // (and a call to `drop_in_place::<Entry>`) cost every successful wait ~20 instructions.
    #[inline]
    fn leave(&self) {
        if self.queued {
            self.remove();
        } else {
            self.list.woken.set(self.list.woken.get() - 1);
        }
    }

    /// [`leave`](Self::leave) for an entry still in the queue.
    #[inline(never)]
    fn remove(&self) {
        let at = self.list.position(self.waiter.ticket).expect("a queued entry is in the list");
        self.list.queue.borrow_mut().remove(at);
    }

    /// [`Drop`] for a wait that did not succeed (see there).
    #[inline(never)]
    fn abandon(&mut self) {
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

impl Drop for Entry<'_> {
    /// A settled entry has left already; any other leaves now, passing on a notification it
    /// took (the check inline, the work out of line, so that a successful wait pays one test).
    #[inline]
    fn drop(&mut self) {
        if !self.settled {
            self.abandon();
        }
    }
}
