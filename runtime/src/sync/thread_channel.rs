//! `thread_channel`: a way into a hub from other threads (a plain thread, a `spawn_blocking`
//! job, another hub).
//!
//! Guarantee: [`ThreadSender::send`] never blocks and works from any thread; the receiving
//! coroutine suspends, and is woken through its hub's cross-thread wake path (the eventfd that
//! `spawn_blocking` completions use). While a coroutine waits on a `ThreadReceiver` whose
//! senders live, the hub counts a pending wake from another thread (so it is not a deadlock);
//! when the last sender goes, waiters wake and get `Err`. Not guaranteed: how soon after `send`
//! the receiver runs (it takes one turn of the receiving hub's loop).
//!
//! Who may touch what: the queue, the sender count and the *waker* (the receiving hub's
//! `Remote` and the receiver's key in its thread's registry) sit behind one `Mutex`, shared by
//! every thread. The wait list is the receiving hub's only. A sender that queues an item sets
//! `signalled` and writes the eventfd only if `signalled` was clear; every check by the receiver
//! clears it, so a receiver that sleeps has always just cleared it, and the next send signals.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use slab::Slab;

use super::channel::{RecvError, RecvTimeoutError, SendError, TryRecvError};
use super::select::{SelectRecv, sealed::Arm};
use super::waitlist::WaitList;
use crate::blocking::Remote;
use crate::hub::{Hub, HubId, hub};
use crate::sys::HubSection;
use crate::task::TaskRef;
use crate::task::WaitReason;
use crate::timer::deadline_after;

/// A channel whose [`ThreadSender`] works from any thread and whose [`ThreadReceiver`] belongs
/// to one hub's coroutines.
///
/// ```
/// use greenhub::sync::thread_channel;
///
/// greenhub::run(|| {
///     let (tx, rx) = thread_channel();
///     let worker = std::thread::spawn(move || {
///         for i in 0..3 {
///             tx.send(i).unwrap(); // never blocks; wakes the hub
///         }
///     });
///     let got: Vec<i32> = std::iter::from_fn(|| rx.recv().ok()).collect();
///     assert_eq!(got, [0, 1, 2]); // Err once the thread's sender is gone
///     worker.join().unwrap();
/// });
/// ```
///
/// The receiver stays on its thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: &T) {}
/// let (_tx, rx) = greenhub::sync::thread_channel::<u8>();
/// assert_send(&rx);
/// ```
#[track_caller]
pub fn thread_channel<T: Send>() -> (ThreadSender<T>, ThreadReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            waker: None,
            signalled: false,
        }),
    });
    let local = Local {
        shared: shared.clone(),
        core: Rc::new(Core { waiters: WaitList::new() }),
        binding: Cell::new(None),
    };
    (ThreadSender { shared }, ThreadReceiver { local: Rc::new(local), _not_send: PhantomData })
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    queue: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
    /// Where to signal news: the receiving hub, once a receiver has waited in one.
    waker: Option<Waker>,
    /// A signal is on its way, or was delivered and no check has run since.
    signalled: bool,
}

struct Waker {
    remote: Arc<Remote>,
    key: usize,
}

impl<T> Shared<T> {
    fn lock(&self) -> Locked<'_, T> {
        let section = HubSection::enter();
        Locked {
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            _section: section,
        }
    }
}

/// The state, locked, and greenhub's bookkeeping for as long as the lock is held
/// ([`HubSection`]): a coroutine whose stack overflowed here would never unlock it, and every
/// thread using the channel would hang, so such an overflow is never recovered.
struct Locked<'a, T> {
    // Field order: the lock is released before the section closes.
    state: MutexGuard<'a, State<T>>,
    _section: HubSection,
}

impl<T> std::ops::Deref for Locked<'_, T> {
    type Target = State<T>;

    fn deref(&self) -> &State<T> {
        &self.state
    }
}

impl<T> std::ops::DerefMut for Locked<'_, T> {
    fn deref_mut(&mut self) -> &mut State<T> {
        &mut self.state
    }
}

impl<T> State<T> {
    /// Tells the receiving hub, unless a signal is already pending.
    fn signal(&mut self) {
        if let Some(waker) = self.waker.as_ref().filter(|_| !self.signalled) {
            self.signalled = true;
            waker.remote.signal_channel(waker.key);
        }
    }
}

/// The sending end: `Send + Sync + Clone`, usable from any thread, inside a hub or not.
pub struct ThreadSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> ThreadSender<T> {
    /// Queues `value` for the receiver and wakes its hub; never blocks. Gives the value back
    /// once the receiver is gone.
    #[track_caller]
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(SendError(value));
        }
        state.queue.push_back(value);
        state.signal();
        Ok(())
    }

    /// Whether the receiver is gone (a send would fail).
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }
}

impl<T> Clone for ThreadSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        ThreadSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for ThreadSender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            state.signal(); // waiters wake and see the channel closed
        }
    }
}

impl<T> fmt::Debug for ThreadSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadSender").field("queued", &self.shared.lock().queue.len()).finish()
    }
}

/// The receiving end, bound to the hub of the thread it waits in (`!Send`); clone it for more
/// receivers on that thread (each item goes to one of them).
pub struct ThreadReceiver<T> {
    local: Rc<Local<T>>,
    _not_send: PhantomData<*const ()>,
}

/// The receiving side's state: the shared queue, and the wait list of this thread's hub.
struct Local<T> {
    shared: Arc<Shared<T>>,
    core: Rc<Core>,
    /// The hub id and registry key this receiver is bound to, once it has waited.
    binding: Cell<Option<(HubId, usize)>>,
}

/// What a signal reaches: the receivers' wait list (not generic, so the registry can hold it).
struct Core {
    waiters: WaitList,
}

thread_local! {
    /// This thread's receivers that may be signalled, by key.
    static RECEIVERS: RefCell<Slab<Weak<Core>>> = const { RefCell::new(Slab::new()) };
}

/// In the receiving hub's loop: the channel registered under `key` was signalled.
pub(crate) fn deliver(key: usize) {
    let core = RECEIVERS.with(|r| r.borrow().get(key).and_then(Weak::upgrade));
    if let Some(core) = core {
        core.waiters.notify_all(); // each waiter re-checks; items go to them in FIFO order
    }
}

impl<T> Local<T> {
    /// An item, or `Err` once empty with every sender gone; `None`: wait. Clears `signalled`
    /// (this is a check: a send after it must signal again).
    fn try_take(&self) -> Option<Result<T, RecvError>> {
        let mut state = self.shared.lock();
        state.signalled = false;
        match state.queue.pop_front() {
            Some(value) => Some(Ok(value)),
            None if state.senders == 0 => Some(Err(RecvError)),
            None => None,
        }
    }

    fn ready(&self) -> bool {
        let mut state = self.shared.lock();
        state.signalled = false;
        !state.queue.is_empty() || state.senders == 0
    }

    /// Makes senders signal `hub` (binding anew if the receiver last waited in another hub),
    /// and counts a pending remote wake for as long as the returned hold lives.
    fn hold(&self, hub: &Hub) -> RemoteHold {
        if self.binding.get().is_none_or(|(hub_id, _)| hub_id != hub.id()) {
            let _section = HubSection::enter(); // the hub's receiver table, mid-update
            self.unregister();
            let key = RECEIVERS.with(|r| r.borrow_mut().insert(Rc::downgrade(&self.core)));
            self.binding.set(Some((hub.id(), key)));
            let mut state = self.shared.lock();
            state.waker = Some(Waker { remote: hub.remote.clone(), key });
            state.signalled = false;
        }
        hub.remote.hold();
        RemoteHold { remote: hub.remote.clone() }
    }

    fn unregister(&self) {
        if let Some((_, key)) = self.binding.take() {
            let _section = HubSection::enter();
            RECEIVERS.with(|r| r.borrow_mut().try_remove(key));
        }
    }

    #[track_caller]
    fn wait(&self, deadline: Option<Instant>) -> Option<Result<T, RecvError>> {
        if let Some(ready) = self.try_take() {
            return Some(ready);
        }
        let hub = hub("ThreadReceiver::recv");
        let _hold = self.hold(hub);
        self.core.waiters.wait_until(WaitReason::ThreadChannelRecv, deadline, || self.try_take())
    }
}

impl<T> Drop for Local<T> {
    fn drop(&mut self) {
        self.unregister();
        let queued = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        drop(queued); // outside the lock: an item's destructor may use the channel
    }
}

/// A coroutine waits on a thread channel: a wake from another thread may come.
struct RemoteHold {
    remote: Arc<Remote>,
}

impl Drop for RemoteHold {
    fn drop(&mut self) {
        self.remote.release();
    }
}

impl<T> ThreadReceiver<T> {
    /// Suspends the calling coroutine until an item arrives; `Err` once the channel is empty
    /// and every sender is gone.
    ///
    /// # Panics
    /// Outside a coroutine, when it must wait.
    #[track_caller]
    pub fn recv(&self) -> Result<T, RecvError> {
        let got = self.local.wait(None);
        got.expect("a wait without deadline returns only when it succeeds")
    }

    /// Like [`recv`](Self::recv), for at most `d`.
    #[track_caller]
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        match self.local.wait(deadline_after(d)) {
            Some(Ok(value)) => Ok(value),
            Some(Err(RecvError)) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// An item if one is queued now, without suspending (works outside a hub too).
    #[track_caller]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.local.try_take() {
            Some(Ok(value)) => Ok(value),
            Some(Err(RecvError)) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// How many items are queued now.
    pub fn len(&self) -> usize {
        self.local.shared.lock().queue.len()
    }

    /// Whether no item is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for ThreadReceiver<T> {
    fn clone(&self) -> Self {
        ThreadReceiver { local: self.local.clone(), _not_send: PhantomData }
    }
}

impl<T> fmt::Debug for ThreadReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadReceiver").field("queued", &self.len()).finish()
    }
}

// A sealed trait's methods (see select.rs): crate-private types in them never leak.
#[allow(private_interfaces)]
impl<T> Arm for ThreadReceiver<T> {
    fn ready(&self, _me: Option<TaskRef>, _woken: bool) -> bool {
        self.local.ready()
    }

    fn wait_list(&self) -> &WaitList {
        &self.local.core.waiters
    }

    fn hold(&self) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(self.local.hold(hub("select!"))))
    }
}

impl<T> SelectRecv for ThreadReceiver<T> {
    type Output = Result<T, RecvError>;

    fn commit_recv(&self) -> Self::Output {
        self.local.try_take().expect("select! chose a recv arm that was not ready")
    }
}

#[cfg(test)]
mod tests {
    use crate::overflow_in_child::{aborts_inside_bookkeeping, recurse};

    /// A coroutine overflowing while it holds a thread channel's lock would hold it forever
    /// (other threads would hang on it): that overflow is greenhub's bookkeeping's, and aborts
    /// even with recovery on. (The lock is held only by greenhub's own code; the test holds it
    /// from inside to put the overflow there.)
    #[test]
    fn an_overflow_with_a_thread_channels_lock_held_aborts_even_with_recovery_on() {
        let test = "sync::thread_channel::tests::an_overflow_with_a_thread_channels_lock_held_aborts_even_with_recovery_on";
        aborts_inside_bookkeeping(test, || {
            let (tx, _rx) = super::thread_channel::<u8>();
            let _locked = tx.shared.lock();
            recurse(0)
        });
    }
}
