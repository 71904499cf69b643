//! `Mutex`: exclusive access to a value across suspension points.

use std::cell::{RefCell, RefMut};
use std::fmt;
use std::ops::{Deref, DerefMut};

use super::semaphore::{Semaphore, SemaphorePermit};
use crate::task::WaitReason;

/// Exclusive access to a value for coroutines that suspend while they hold it (a `RefCell`
/// would panic; this waits). Locks are granted in the order coroutines asked.
///
/// ```
/// use std::rc::Rc;
/// use greenhub::sync::Mutex;
///
/// greenhub::run(|| {
///     let log = Rc::new(Mutex::new(Vec::new()));
///     let writers: Vec<_> = (0..3).map(|i| {
///         let log = log.clone();
///         greenhub::spawn(move || {
///             let mut guard = log.lock();
///             greenhub::yield_now(); // others wait for the lock meanwhile
///             guard.push(i);
///         })
///     }).collect();
///     writers.into_iter().for_each(|w| w.join().unwrap());
///     assert_eq!(*log.lock(), vec![0, 1, 2]);
/// });
/// ```
pub struct Mutex<T> {
    lock: Semaphore,
    value: RefCell<T>,
}

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub fn new(value: T) -> Self {
        Mutex { lock: Semaphore::new(1), value: RefCell::new(value) }
    }

    /// Suspends the caller until the lock is free, then holds it until the guard drops.
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let permit = self.lock.acquire_as(WaitReason::Mutex);
        MutexGuard { value: self.value.borrow_mut(), _permit: permit }
    }

    /// The lock if it is free now, without suspending.
    #[track_caller]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let permit = self.lock.try_acquire()?;
        Some(MutexGuard { value: self.value.borrow_mut(), _permit: permit })
    }

    /// The value, through exclusive access (no guard can exist).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// The value, when no guard can exist.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value.try_borrow() {
            Ok(value) => f.debug_struct("Mutex").field("value", &*value).finish(),
            Err(_) => f.debug_struct("Mutex").field("value", &"<locked>").finish(),
        }
    }
}

/// Holds a [`Mutex`] locked; dereferences to the value. The fields drop in order: the borrow
/// ends before the lock passes to the next waiter.
pub struct MutexGuard<'a, T> {
    value: RefMut<'a, T>,
    _permit: SemaphorePermit<'a>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.value, f)
    }
}
