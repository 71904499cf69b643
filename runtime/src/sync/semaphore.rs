//! `Semaphore`: a count of permits that coroutines acquire and release (gevent's `Semaphore`).

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use super::waitlist::WaitList;
use crate::task::WaitReason;

/// A count of permits; [`acquire`](Self::acquire) suspends while none is available. Permits are
/// handed out in the order coroutines asked for them.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Semaphore;
///
/// greenhub::run(|| {
///     let sem = Rc::new(Semaphore::new(1));
///     let permit = sem.acquire();
///     assert!(sem.try_acquire().is_none());
///     drop(permit);
///     assert_eq!(sem.available_permits(), 1);
/// });
/// ```
#[derive(Default)]
pub struct Semaphore {
    permits: Cell<usize>,
    waiters: WaitList,
}

impl Semaphore {
    /// A semaphore with `permits` permits available.
    pub fn new(permits: usize) -> Self {
        Semaphore { permits: Cell::new(permits), waiters: WaitList::new() }
    }

    /// Suspends the caller until a permit is available and takes it; dropping the permit
    /// returns it.
    pub fn acquire(&self) -> SemaphorePermit<'_> {
        self.acquire_as(WaitReason::Semaphore)
    }

    /// `acquire`, reported as `reason` while it waits.
    pub(super) fn acquire_as(&self, reason: WaitReason) -> SemaphorePermit<'_> {
        let taken = self.waiters.wait_turn(reason, None, |woken| self.try_take(woken));
        taken.expect("a wait without deadline returns only when it succeeds")
    }

    /// [`acquire`](Self::acquire), for a permit that holds the semaphore by `Rc` instead of
    /// borrowing it (tokio's shape): it is `'static`, so a coroutine spawned to do the work can
    /// own it.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use greenhub::sync::Semaphore;
    ///
    /// greenhub::run(|| {
    ///     let sem = Rc::new(Semaphore::new(2));
    ///     let workers: Vec<_> = (0..5)
    ///         .map(|i| {
    ///             let permit = sem.acquire_owned(); // suspends while two workers run
    ///             greenhub::spawn(move || {
    ///                 let _permit = permit; // released when the worker ends
    ///                 greenhub::yield_now();
    ///                 i
    ///             })
    ///         })
    ///         .collect();
    ///     let sum: i32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    ///     assert_eq!(sum, 10);
    ///     assert_eq!(sem.available_permits(), 2);
    /// });
    /// ```
    pub fn acquire_owned(self: &Rc<Self>) -> OwnedSemaphorePermit {
        self.acquire_owned_as(WaitReason::Semaphore)
    }

    /// `acquire_owned`, reported as `reason` while it waits.
    pub(super) fn acquire_owned_as(self: &Rc<Self>, reason: WaitReason) -> OwnedSemaphorePermit {
        self.acquire_as(reason).forget();
        OwnedSemaphorePermit { semaphore: self.clone(), forgotten: false }
    }

    /// [`try_acquire`](Self::try_acquire), for an owned permit (see
    /// [`acquire_owned`](Self::acquire_owned)).
    #[track_caller]
    pub fn try_acquire_owned(self: &Rc<Self>) -> Option<OwnedSemaphorePermit> {
        self.try_acquire().map(|permit| {
            permit.forget();
            OwnedSemaphorePermit { semaphore: self.clone(), forgotten: false }
        })
    }

    /// Takes a permit if one is available now, without suspending. Never jumps the queue: while
    /// coroutines wait for a permit, the permit is theirs.
    #[track_caller]
    pub fn try_acquire(&self) -> Option<SemaphorePermit<'_>> {
        if self.waiters.len() > 0 {
            return None;
        }
        self.try_take(false)
    }

    /// How many permits are available now.
    #[track_caller]
    pub fn available_permits(&self) -> usize {
        self.permits.get()
    }

    /// Takes a permit for a waiter that a release woke (`woken`), or for anyone else if a
    /// permit is left over once every woken waiter has one: a released permit belongs to the
    /// waiter it woke until that waiter runs (or passes it on, if cancelled first).
    fn try_take(&self, woken: bool) -> Option<SemaphorePermit<'_>> {
        let n = self.permits.get();
        let spare = if woken { n } else { n.saturating_sub(self.waiters.woken()) };
        (spare > 0).then(|| {
            self.permits.set(n - 1);
            SemaphorePermit { semaphore: self }
        })
    }

    fn release(&self) {
        self.permits.set(self.permits.get() + 1);
        self.waiters.notify_one();
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.permits.get())
            .field("waiters", &self.waiters)
            .finish()
    }
}

/// A permit of a [`Semaphore`]; dropping it releases the permit to the next waiter.
#[must_use = "dropping the permit releases it at once"]
pub struct SemaphorePermit<'a> {
    semaphore: &'a Semaphore,
}

impl SemaphorePermit<'_> {
    /// Gives the permit up without returning it: the semaphore has one permit fewer.
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        self.semaphore.release();
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphorePermit")
    }
}

/// A permit of a [`Semaphore`] that holds it by `Rc` ([`Semaphore::acquire_owned`]); dropping
/// it releases the permit to the next waiter.
#[must_use = "dropping the permit releases it at once"]
pub struct OwnedSemaphorePermit {
    semaphore: Rc<Semaphore>,
    forgotten: bool,
}

impl OwnedSemaphorePermit {
    /// Gives the permit up without returning it: the semaphore has one permit fewer.
    pub fn forget(mut self) {
        self.forgotten = true;
    }

    /// The semaphore this permit belongs to.
    pub fn semaphore(&self) -> &Rc<Semaphore> {
        &self.semaphore
    }
}

impl Drop for OwnedSemaphorePermit {
    fn drop(&mut self) {
        if !self.forgotten {
            self.semaphore.release();
        }
    }
}

impl fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnedSemaphorePermit")
    }
}
