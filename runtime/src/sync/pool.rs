//! `Pool`: a [`Group`] with at most `size` members running at once (gevent's
//! `gevent.pool.Pool`), and its `map` / `imap_unordered`.
//!
//! Guarantee: at most `size` members run at once; `spawn` suspends the caller while the pool is
//! full, and slots are handed out in the order callers asked (a [`Semaphore`] underneath).
//! `map` gives results in input order, `imap_unordered` in completion order; both pull items
//! lazily, one per free slot. Not guaranteed: that a `map` started while other coroutines use
//! the same pool gets all `size` slots.

use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;
use std::time::Duration;

use super::channel::{Receiver, Sender, channel};
use super::group::Group;
use super::semaphore::{OwnedSemaphorePermit, Semaphore};
use crate::join::{JoinError, JoinHandle};
use crate::task::WaitReason;

/// A group of coroutines of which at most `size` run at once (gevent's `Pool`).
///
/// ```
/// use greenhub::sync::Pool;
///
/// greenhub::run(|| {
///     let pool = Pool::new(2);
///     let squares = pool.map(1..=5u64, |n| {
///         greenhub::yield_now(); // at most two of these run at once
///         n * n
///     });
///     assert_eq!(squares.unwrap(), [1, 4, 9, 16, 25]);
/// });
/// ```
pub struct Pool {
    group: Group,
    slots: Rc<Semaphore>,
    size: usize,
}

impl Pool {
    /// A pool that runs at most `size` members at once.
    ///
    /// # Panics
    /// When `size` is 0 (a pool needs at least one slot).
    #[track_caller]
    pub fn new(size: usize) -> Pool {
        assert!(
            size >= 1,
            "greenhub::sync::Pool::new(0): a pool's size must be at least 1 (it is how many \
             members may run at once)"
        );
        Pool { group: Group::new(), slots: Rc::new(Semaphore::new(size)), size }
    }

    /// Spawns `f` as a member, first suspending the caller while `size` members run.
    ///
    /// # Panics
    /// Outside a hub, or outside a coroutine when the pool is full.
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let slot = self.reserve();
        self.spawn_reserved(slot, f)
    }

    /// Waits for a free slot and holds it (for `net::Server`: no connection is accepted until
    /// a handler could start on it).
    pub(crate) fn reserve(&self) -> OwnedSemaphorePermit {
        self.slots.acquire_owned_as(WaitReason::PoolSlot)
    }

    /// Spawns `f` as a member on a slot [`reserve`](Self::reserve)d before.
    #[track_caller]
    pub(crate) fn spawn_reserved<F, T>(&self, slot: OwnedSemaphorePermit, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        self.spawn_reserved_guarded(slot, f, (), Location::caller())
    }

    /// [`spawn_reserved`](Self::spawn_reserved) (spawned at `site`), with `guard` dropped when
    /// the member ends, just before its slot is freed.
    fn spawn_reserved_guarded<F, T, G>(
        &self,
        slot: OwnedSemaphorePermit,
        f: F,
        guard: G,
        site: &'static Location<'static>,
    ) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
        G: 'static,
    {
        // The slot goes with the task, however it ends (see `Group::spawn_guarded`).
        self.group.spawn_guarded(f, (guard, slot), site)
    }

    /// Cancels every member without waiting for them to unwind (never suspends).
    pub(crate) fn cancel_now(&self) {
        self.group.cancel_running();
    }

    /// How many more members could start now without waiting (`size - len`).
    #[track_caller]
    pub fn free_count(&self) -> usize {
        self.size.saturating_sub(self.len())
    }

    /// The most members that run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many members are still running (started or not).
    pub fn len(&self) -> usize {
        self.group.len()
    }

    /// Whether no member is running.
    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// Suspends the caller until every member has ended (see [`Group::join`]).
    ///
    /// # Panics
    /// Outside a coroutine, when it must wait, and from a member of the pool itself (it would
    /// wait for itself).
    #[track_caller]
    pub fn join(&self) {
        self.group.join_as("Pool::join");
    }

    /// Like [`join`](Self::join), for at most `d`; true when every member has ended.
    #[track_caller]
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.group.join_timeout(d)
    }

    /// Cancels every member and suspends the caller until all have unwound (see
    /// [`Group::cancel_all`]).
    #[track_caller]
    pub fn cancel_all(&self) {
        self.group.cancel_all();
    }

    /// Runs `f` on every item, each in a member coroutine of this pool (so at most `size` at
    /// once), and returns the results in input order. Items are pulled from `items` one per free
    /// slot. The first member to fail (panic, or be cancelled) cancels the others, which have
    /// unwound by the time its `JoinError` is returned; the items not yet pulled never run.
    #[track_caller]
    pub fn map<I, T, F>(
        &self,
        items: impl IntoIterator<Item = I>,
        f: F,
    ) -> Result<Vec<T>, JoinError>
    where
        F: Fn(I) -> T + Clone + 'static,
        I: 'static,
        T: 'static,
    {
        let mut mapper = Mapper::new(self, items.into_iter(), f);
        let mut results: Vec<Option<T>> = Vec::new();
        while let Some((index, result)) = mapper.next_done() {
            match result {
                Ok(value) => {
                    if results.len() <= index {
                        results.resize_with(index + 1, || None);
                    }
                    results[index] = Some(value);
                }
                Err(error) => {
                    mapper.cancel_and_wait();
                    return Err(error);
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every item has a result")).collect())
    }

    /// Runs `f` on every item, each in a member coroutine of this pool, and yields the results
    /// as they complete. Items are pulled lazily: one per free slot, and at most `size` are in
    /// flight at once. A failed item yields its `JoinError` and the others go on.
    ///
    /// Dropping the iterator early cancels the items in flight (their coroutines unwind at their
    /// next suspension point; the drop does not wait for that) and pulls no more items. gevent's
    /// `imap_unordered` lets them finish instead; in Rust, dropping an iterator means its results
    /// are no longer wanted (as dropping a tokio `JoinSet` aborts its tasks), and cancelling
    /// frees the pool's slots at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use greenhub::sync::Pool;
    ///
    /// greenhub::run(|| {
    ///     let pool = Pool::new(3);
    ///     let delays = [30u64, 10, 20];
    ///     let order: Vec<u64> = pool
    ///         .imap_unordered(delays, |ms| {
    ///             greenhub::sleep(Duration::from_millis(ms));
    ///             ms
    ///         })
    ///         .map(Result::unwrap)
    ///         .collect();
    ///     assert_eq!(order, [10, 20, 30]); // completion order
    /// });
    /// ```
    #[track_caller]
    pub fn imap_unordered<I, T, F>(
        &self,
        items: impl IntoIterator<Item = I>,
        f: F,
    ) -> impl Iterator<Item = Result<T, JoinError>>
    where
        F: Fn(I) -> T + Clone + 'static,
        I: 'static,
        T: 'static,
    {
        let mut mapper = Mapper::new(self, items.into_iter(), f);
        std::iter::from_fn(move || mapper.next_done().map(|(_, result)| result))
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("size", &self.size).field("running", &self.len()).finish()
    }
}

/// The engine of `map` and `imap_unordered`: items in flight by input index, and a channel on
/// which each member announces its index as it ends.
struct Mapper<'p, It, F, T> {
    pool: &'p Pool,
    items: std::iter::Enumerate<It>,
    f: F,
    in_flight: HashMap<usize, JoinHandle<T>>,
    done_tx: Sender<usize>,
    done_rx: Receiver<usize>,
    /// The caller of `map` or `imap_unordered`: where the reports say the members were spawned.
    site: &'static Location<'static>,
}

/// Announces a member's index when it ends, however it ends.
struct Done {
    tx: Sender<usize>,
    index: usize,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.tx.send(self.index); // unbounded: never suspends; Err once nobody listens
    }
}

impl<'p, It, F, I, T> Mapper<'p, It, F, T>
where
    It: Iterator<Item = I>,
    F: Fn(I) -> T + Clone + 'static,
    I: 'static,
    T: 'static,
{
    #[track_caller]
    fn new(pool: &'p Pool, items: It, f: F) -> Self {
        let (done_tx, done_rx) = channel();
        let site = Location::caller();
        Mapper {
            pool,
            items: items.enumerate(),
            f,
            in_flight: HashMap::new(),
            done_tx,
            done_rx,
            site,
        }
    }

    /// The next finished item (index and result), starting items while there is room;
    /// `None` once every item has been yielded.
    #[track_caller]
    fn next_done(&mut self) -> Option<(usize, Result<T, JoinError>)> {
        loop {
            if let Ok(index) = self.done_rx.try_recv() {
                return Some(self.finish(index));
            }
            if self.in_flight.len() < self.pool.size
                && let Some((index, item)) = self.items.next()
            {
                self.start(index, item);
                continue;
            }
            if self.in_flight.is_empty() {
                return None;
            }
            let index = self.done_rx.recv().expect("the mapper holds a sender");
            return Some(self.finish(index));
        }
    }

    fn start(&mut self, index: usize, item: I) {
        let f = self.f.clone();
        // The notice goes with the task, however it ends (see `Group::spawn_guarded`): a
        // member that overflows its stack still tells the mapper.
        let done = Done { tx: self.done_tx.clone(), index };
        let slot = self.pool.reserve();
        let handle = self.pool.spawn_reserved_guarded(slot, move || f(item), done, self.site);
        self.in_flight.insert(index, handle);
    }

    fn finish(&mut self, index: usize) -> (usize, Result<T, JoinError>) {
        let handle = self.in_flight.remove(&index).expect("a finished item was in flight");
        (index, handle.join()) // it has ended, or ends before it suspends again
    }

    /// Cancels the items in flight and waits until they have unwound.
    #[track_caller]
    fn cancel_and_wait(&mut self) {
        self.in_flight.values().for_each(JoinHandle::cancel);
        for (_, handle) in self.in_flight.drain() {
            let _ = handle.join();
        }
    }
}

impl<It, F, T> Drop for Mapper<'_, It, F, T> {
    fn drop(&mut self) {
        self.in_flight.values().for_each(JoinHandle::cancel); // never suspends
    }
}
