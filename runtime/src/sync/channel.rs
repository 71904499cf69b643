//! Channels between coroutines: unbounded, bounded, and rendezvous (capacity 0).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use super::waitlist::WaitList;
use crate::sys::HubSection;
use crate::task::WaitReason;
use crate::timer::deadline_after;

/// An unbounded channel: `send` never suspends.
///
/// ```
/// greenhub::run(|| {
///     let (tx, rx) = greenhub::sync::channel();
///     greenhub::spawn(move || for i in 0..3 { tx.send(i).unwrap() });
///     let got: Vec<i32> = std::iter::from_fn(|| rx.recv().ok()).collect();
///     assert_eq!(got, [0, 1, 2]); // recv fails once the sender is gone
/// });
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    Chan::open(None)
}

/// A bounded channel: `send` suspends while `capacity` items wait. With capacity 0 it is a
/// rendezvous: `send` returns once a receiver has taken the item.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    Chan::open(Some(capacity))
}

/// The state both ends share.
struct Chan<T> {
    queue: RefCell<VecDeque<T>>,
    /// `None`: unbounded; `Some(0)`: rendezvous (one item in flight, whose sender waits).
    capacity: Option<usize>,
    senders: Cell<usize>,
    receivers: Cell<usize>,
    /// Receivers waiting for an item (or for the last sender to go).
    item_waiters: WaitList,
    /// Senders waiting for room (or for the last receiver to go).
    room_waiters: WaitList,
    /// Rendezvous senders waiting for their item to be taken.
    taken_waiters: WaitList,
    pushed: Cell<u64>,
    taken: Cell<u64>,
}

impl<T> Chan<T> {
    fn open(capacity: Option<usize>) -> (Sender<T>, Receiver<T>) {
        let chan = Rc::new(Chan {
            queue: RefCell::new(VecDeque::new()),
            capacity,
            senders: Cell::new(1),
            receivers: Cell::new(1),
            item_waiters: WaitList::new(),
            room_waiters: WaitList::new(),
            taken_waiters: WaitList::new(),
            pushed: Cell::new(0),
            taken: Cell::new(0),
        });
        (Sender(chan.clone()), Receiver(chan))
    }

    fn disconnected_for_senders(&self) -> bool {
        self.receivers.get() == 0
    }

    fn has_room(&self) -> bool {
        match self.capacity {
            None => true,
            Some(cap) => self.queue.borrow().len() < cap.max(1),
        }
    }

    /// An item, or `Err` once empty with every sender gone; `None`: wait.
    #[inline]
    fn try_take(&self) -> Option<Result<T, RecvError>> {
        HubSection::enter_raw();
        let item = self.queue.borrow_mut().pop_front();
        HubSection::leave();
        match item {
            Some(value) => {
                self.taken.set(self.taken.get() + 1);
                match self.capacity {
                    None => {}
                    Some(0) => {
                        self.room_waiters.notify_one();
                        self.taken_waiters.notify_all();
                    }
                    Some(_) => drop(self.room_waiters.notify_one()),
                }
                Some(Ok(value))
            }
            None if self.senders.get() == 0 => Some(Err(RecvError)),
            None => None,
        }
    }
}

/// The sending end; clone it for more senders.
pub struct Sender<T>(Rc<Chan<T>>);

impl<T> Sender<T> {
    /// Sends `value`: suspends while a bounded channel is full (and, for a rendezvous, until a
    /// receiver has taken it). Gives the value back once every receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let chan = &*self.0;
        if chan.capacity.is_some() {
            let ready = || (chan.disconnected_for_senders() || chan.has_room()).then_some(());
            chan.room_waiters.wait_until(WaitReason::ChannelSend, None, ready);
        }
        if chan.disconnected_for_senders() {
            return Err(SendError(value));
        }
        HubSection::enter_raw();
        chan.queue.borrow_mut().push_back(value);
        chan.pushed.set(chan.pushed.get() + 1);
        chan.item_waiters.notify_one();
        HubSection::leave();
        match chan.capacity {
            Some(0) => self.wait_taken(chan.pushed.get()),
            _ => Ok(()),
        }
    }

    /// Rendezvous: waits until item number `seq` has been taken. If the receivers all go (or
    /// this coroutine unwinds) first, the item is taken back.
    fn wait_taken(&self, seq: u64) -> Result<(), SendError<T>> {
        let chan = &*self.0;
        let mut pending = TakeBack { chan, seq };
        let done = || (chan.taken.get() >= seq || chan.disconnected_for_senders()).then_some(());
        chan.taken_waiters.wait_until(WaitReason::ChannelSend, None, done);
        match pending.take_back() {
            Some(value) => Err(SendError(value)),
            None => Ok(()),
        }
    }

    /// Whether every receiver is gone (a send would fail).
    pub fn is_closed(&self) -> bool {
        self.0.disconnected_for_senders()
    }
}

/// Takes a rendezvous item back out of the queue unless it was received.
struct TakeBack<'a, T> {
    chan: &'a Chan<T>,
    seq: u64,
}

impl<T> TakeBack<'_, T> {
    fn take_back(&mut self) -> Option<T> {
        if self.chan.taken.get() >= self.seq {
            return None;
        }
        // A rendezvous holds one item at a time, and this sender's is it: take it back, and
        // its number with it, so the next sender waits for the right count.
        self.seq = 0;
        self.chan.pushed.set(self.chan.pushed.get() - 1);
        let item = self.chan.queue.borrow_mut().pop_back();
        self.chan.room_waiters.notify_one();
        item
    }
}

impl<T> Drop for TakeBack<'_, T> {
    fn drop(&mut self) {
        drop(self.take_back());
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.set(self.0.senders.get() + 1);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let left = self.0.senders.get() - 1;
        self.0.senders.set(left);
        if left == 0 {
            self.0.item_waiters.notify_all();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("queued", &self.0.queue.borrow().len()).finish()
    }
}

/// The receiving end; clone it for more receivers (each item goes to one of them).
pub struct Receiver<T>(Rc<Chan<T>>);

impl<T> Receiver<T> {
    /// Suspends the caller until an item arrives; `Err` once the channel is empty and every
    /// sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        let chan = &*self.0;
        let got = chan.item_waiters.wait_until(WaitReason::ChannelRecv, None, || chan.try_take());
        got.expect("a wait without deadline returns only when it succeeds")
    }

    /// Like [`recv`](Self::recv), for at most `d`.
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        let chan = &*self.0;
        let deadline = deadline_after(d);
        match chan.item_waiters.wait_until(WaitReason::ChannelRecv, deadline, || chan.try_take()) {
            Some(Ok(value)) => Ok(value),
            Some(Err(RecvError)) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    /// An item if one is queued now, without suspending.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.0.try_take() {
            Some(Ok(value)) => Ok(value),
            Some(Err(RecvError)) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// How many items are queued now.
    pub fn len(&self) -> usize {
        self.0.queue.borrow().len()
    }

    /// Whether no item is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.0.receivers.set(self.0.receivers.get() + 1);
        Receiver(self.0.clone())
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let left = self.0.receivers.get() - 1;
        self.0.receivers.set(left);
        if left == 0 {
            self.0.room_waiters.notify_all();
            self.0.taken_waiters.notify_all();
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("queued", &self.len()).finish()
    }
}

/// The value a `send` could not deliver: every receiver is gone.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a closed channel (every receiver is gone)")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// `recv` on a channel that is empty and whose senders are all gone.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}

impl std::error::Error for RecvError {}

/// Why `recv_timeout` returned no item.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum RecvTimeoutError {
    /// No item arrived in time.
    Timeout,
    /// The channel is empty and every sender is gone.
    Disconnected,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("timed out waiting on a channel"),
            RecvTimeoutError::Disconnected => fmt::Display::fmt(&RecvError, f),
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

/// Why `try_recv` returned no item.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum TryRecvError {
    /// No item is queued now.
    Empty,
    /// The channel is empty and every sender is gone.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receiving on an empty channel"),
            TryRecvError::Disconnected => fmt::Display::fmt(&RecvError, f),
        }
    }
}

impl std::error::Error for TryRecvError {}
