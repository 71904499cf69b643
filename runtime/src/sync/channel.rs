//! Channels between coroutines: unbounded, bounded, and rendezvous (capacity 0).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use std::time::Instant;

use super::waitlist::WaitList;
use crate::sys::HubSection;
use crate::task::{TaskRef, WaitReason};
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
#[track_caller]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    Chan::open(None)
}

/// A bounded channel: `send` suspends while `capacity` items wait. With capacity 0 it is a
/// rendezvous: `send` returns once a receiver has taken the item.
///
/// A rendezvous hands its item over only to a receiver that waits for it: `try_send` and a
/// `send` arm of [`select!`](crate::select) succeed there only while some coroutine waits in
/// `recv` (or in a `select!` with a `recv` arm on it, not yet woken through another arm), and
/// leave the item in the channel for that receiver without waiting for it to run; a `select!`
/// takes the arm it was woken for. (If that receiver is cancelled before it runs, the next
/// receiver gets the item.)
///
/// Every channel is FIFO among its waiters: an item is promised to the receiver its `send`
/// woke, and a freed place to the sender it woke; a `try_recv` or `try_send`, or a waiter that
/// something else resumed, takes only what is not promised. Once every sender is gone, what is
/// left goes to whoever comes.
#[track_caller]
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    Chan::open(Some(capacity))
}

/// The state both ends share.
pub(super) struct Chan<T> {
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
    /// Items pushed so far: a rendezvous sender's item number.
    pushed: Cell<u64>,
    /// Rendezvous items taken so far (counted on a rendezvous only: nothing else reads it).
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

    /// Whether a sender may put an item in now. `woken`: the caller is a sender that a
    /// notification woke (see [`takable`](Self::takable)): free places are promised to those
    /// first, in the order they waited, so another sender (a later one, one woken by its timer,
    /// a `try_send`) takes a place only if more are free than promised.
    fn has_room(&self, woken: bool) -> bool {
        let Some(cap) = self.capacity else { return true };
        let free = cap.max(1).saturating_sub(self.queue.borrow().len());
        free > 0 && (woken || free > self.room_waiters.woken())
    }

    /// Whether a receiver may take an item now. `woken`: the caller is a receiver that a
    /// notification woke and that has not checked since. Each push wakes one waiting receiver,
    /// and the items are promised to those woken receivers first: another receiver (one that
    /// came later, one woken by its own timer, a `try_recv`) takes an item only if more are
    /// queued than promised. That is what keeps wake-ups FIFO among waiters (the semaphore does
    /// the same). Once every sender is gone the promise no longer matters: whoever comes takes.
    fn takable(&self, woken: bool) -> bool {
        let queued = self.queue.borrow().len();
        queued > 0 && (woken || self.senders.get() == 0 || queued > self.item_waiters.woken())
    }

    /// Whether a `recv` would return now (an item, or `Err` for a closed, empty channel);
    /// `woken` as for [`takable`](Self::takable).
    pub(super) fn recv_ready(&self, woken: bool) -> bool {
        self.takable(woken) || (self.senders.get() == 0 && self.queue.borrow().is_empty())
    }

    /// Whether a send that must not wait would succeed now, or fail for good (every receiver
    /// gone); `woken` as for [`has_room`](Self::has_room). A rendezvous accepts an item only
    /// while a receiver other than `me` waits for one (queued, or woken and not yet run) and
    /// no other item is in flight.
    pub(super) fn send_ready(&self, me: Option<TaskRef>, woken: bool) -> bool {
        self.disconnected_for_senders()
            || match self.capacity {
                None => true,
                Some(0) => self.queue.borrow().is_empty() && self.receivers_waiting(me) > 0,
                Some(_) => self.has_room(woken),
            }
    }

    /// Receivers that would take a rendezvous item now: those a notification woke, and those
    /// queued, but not a `select!` already woken through another of its lists (it may take that
    /// arm instead, and the item would be left with nobody to take it).
    fn receivers_waiting(&self, me: Option<TaskRef>) -> usize {
        self.item_waiters.takers_except(me) + self.item_waiters.woken()
    }

    /// Queues `value` and wakes a receiver. The caller has checked that there is room.
    fn push(&self, value: T) {
        HubSection::enter_raw();
        self.queue.borrow_mut().push_back(value);
        self.pushed.set(self.pushed.get() + 1);
        self.item_waiters.notify_one();
        HubSection::leave();
    }

    /// A send that does not wait: `value` back when the channel is full (or, for a
    /// rendezvous, no receiver waits) or closed.
    pub(super) fn send_now(&self, value: T, me: Option<TaskRef>) -> Result<(), TrySendError<T>> {
        if self.disconnected_for_senders() {
            Err(TrySendError::Disconnected(value))
        } else if self.send_ready(me, false) {
            self.push(value);
            Ok(())
        } else {
            Err(TrySendError::Full(value))
        }
    }

    /// A receiver's wait entry entered the queue: on a rendezvous, wake a sender that waits
    /// for a receiver (a `try_send` loop or a `select!` send arm).
    pub(super) fn receiver_entered(&self) {
        if self.capacity == Some(0) {
            self.room_waiters.notify_one();
        }
    }

    /// The list a receiver waits on.
    pub(super) fn item_waiters(&self) -> &WaitList {
        &self.item_waiters
    }

    /// The list a sender waits on for room (or, on a rendezvous, for a receiver).
    pub(super) fn room_waiters(&self) -> &WaitList {
        &self.room_waiters
    }

    /// An item, or `Err` once empty with every sender gone; `None`: wait. `woken` as for
    /// [`takable`](Self::takable).
    // Always inlined, like `Receiver::recv`: on the receive path, a call level of its own costs
    // a mispredicted return after every switch (measured: +60 instructions and a slower round
    // trip when the promise check made it too large for the inliner).
    #[inline(always)]
    pub(super) fn try_take(&self, woken: bool) -> Option<Result<T, RecvError>> {
        HubSection::enter_raw();
        let item = {
            // `takable`, folded into the one borrow that pops.
            let mut queue = self.queue.borrow_mut();
            let promised =
                !woken && queue.len() <= self.item_waiters.woken() && self.senders.get() != 0;
            if promised { None } else { queue.pop_front() }
        };
        HubSection::leave();
        match item {
            Some(value) => {
                match self.capacity {
                    None => {}
                    Some(0) => {
                        // Only a rendezvous sender waits for its item's number to be taken.
                        self.taken.set(self.taken.get() + 1);
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
    #[track_caller]
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let chan = &*self.0;
        // An unbounded channel never waits: the check and the push, without the frame of the
        // wait machinery that a bounded send needs (its prologue and epilogue alone cost ~12
        // instructions per send, by callgrind).
        if chan.capacity.is_none() {
            if chan.disconnected_for_senders() {
                return Err(SendError(value));
            }
            chan.push(value);
            return Ok(());
        }
        self.send_bounded(value)
    }

    /// [`send`](Self::send) on a bounded channel (or a rendezvous).
    #[inline(never)]
    #[track_caller]
    fn send_bounded(&self, value: T) -> Result<(), SendError<T>> {
        match self.send_until(value, None) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Disconnected(value)) => Err(SendError(value)),
            Err(SendTimeoutError::Timeout(_)) => unreachable!("a send without deadline timed out"),
        }
    }

    /// Sends `value` if that needs no wait: `Full(value)` when a bounded channel is full, or a
    /// rendezvous has no receiver waiting; `Disconnected(value)` once every receiver is gone.
    ///
    /// ```
    /// use greenhub::sync::{TrySendError, bounded};
    ///
    /// let (tx, rx) = bounded(1);
    /// assert_eq!(tx.try_send(1), Ok(()));
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// drop(rx);
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Disconnected(3)));
    /// ```
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.0.send_now(value, None)
    }

    /// Like [`send`](Self::send), for at most `d`: `Timeout(value)` when there was no room in
    /// time (or, for a rendezvous, no receiver took the item in time: it is taken back, so
    /// nobody receives it later), `Disconnected(value)` once every receiver is gone.
    #[track_caller]
    pub fn send_timeout(&self, value: T, d: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, deadline_after(d))
    }

    #[track_caller]
    fn send_until(&self, value: T, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.0;
        if chan.capacity.is_some() {
            let ready =
                |woken| (chan.disconnected_for_senders() || chan.has_room(woken)).then_some(());
            if chan.room_waiters.wait_turn(WaitReason::ChannelSend, deadline, ready).is_none() {
                return Err(SendTimeoutError::Timeout(value));
            }
        }
        if chan.disconnected_for_senders() {
            return Err(SendTimeoutError::Disconnected(value));
        }
        chan.push(value);
        match chan.capacity {
            Some(0) => self.wait_taken(chan.pushed.get(), deadline),
            _ => Ok(()),
        }
    }

    /// Rendezvous: waits until item number `seq` has been taken. If the receivers all go, the
    /// deadline passes, or this coroutine unwinds first, the item is taken back.
    #[track_caller]
    fn wait_taken(&self, seq: u64, deadline: Option<Instant>) -> Result<(), SendTimeoutError<T>> {
        let chan = &*self.0;
        let mut pending = TakeBack { chan, seq };
        let done = || (chan.taken.get() >= seq || chan.disconnected_for_senders()).then_some(());
        let ended = chan.taken_waiters.wait_until(WaitReason::ChannelSend, deadline, done);
        match (pending.take_back(), ended) {
            (None, _) => Ok(()),
            (Some(value), Some(())) => Err(SendTimeoutError::Disconnected(value)),
            (Some(value), None) => Err(SendTimeoutError::Timeout(value)),
        }
    }

    /// Whether every receiver is gone (a send would fail).
    pub fn is_closed(&self) -> bool {
        self.0.disconnected_for_senders()
    }

    /// The shared state, for `select!`.
    pub(super) fn chan(&self) -> &Chan<T> {
        &self.0
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
    // Always inlined, with `recv_until`: each function level between the caller and the switch
    // costs a mispredicted return once the coroutine resumes (measured: a channel round trip
    // took ~150 ns without, ~127 ns with; docs: "The switch path").
    #[inline(always)]
    #[track_caller]
    pub fn recv(&self) -> Result<T, RecvError> {
        let got = self.recv_until(None);
        got.expect("a wait without deadline returns only when it succeeds")
    }

    /// Like [`recv`](Self::recv), for at most `d`.
    #[track_caller]
    pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
        match self.recv_until(deadline_after(d)) {
            Some(Ok(value)) => Ok(value),
            Some(Err(RecvError)) => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }

    #[inline(always)] // see `recv`
    #[track_caller]
    fn recv_until(&self, deadline: Option<Instant>) -> Option<Result<T, RecvError>> {
        let chan = &*self.0;
        let reason = WaitReason::ChannelRecv;
        let entered = || chan.receiver_entered();
        chan.item_waiters.wait_hooked(reason, deadline, entered, |woken| chan.try_take(woken))
    }

    /// The shared state, for `select!`.
    pub(super) fn chan(&self) -> &Chan<T> {
        &self.0
    }

    /// An item if one is queued now, without suspending. An item already promised to a
    /// receiver that a send woke (it has not run yet) is left for it, so `Empty` while
    /// [`len`](Self::len) is not zero: wake-ups are FIFO among waiters, and a `try_recv` does
    /// not jump the queue.
    #[track_caller]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.0.try_take(false) {
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

/// Why `try_send` did not send: the value is given back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum TrySendError<T> {
    /// The channel is full (a rendezvous: no receiver waits).
    Full(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Disconnected(value) => value,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("sending on a full channel"),
            TrySendError::Disconnected(_) => fmt::Display::fmt(&SendError(()), f),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(SendError(value): SendError<T>) -> Self {
        TrySendError::Disconnected(value)
    }
}

/// Why `send_timeout` did not send: the value is given back.
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SendTimeoutError<T> {
    /// No room (or, for a rendezvous, no receiver took it) in time.
    Timeout(T),
    /// Every receiver is gone.
    Disconnected(T),
}

impl<T> SendTimeoutError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendTimeoutError::Timeout(value) | SendTimeoutError::Disconnected(value) => value,
        }
    }
}

impl<T> fmt::Debug for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            SendTimeoutError::Disconnected(_) => f.write_str("Disconnected(..)"),
        }
    }
}

impl<T> fmt::Display for SendTimeoutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTimeoutError::Timeout(_) => f.write_str("timed out sending on a channel"),
            SendTimeoutError::Disconnected(_) => fmt::Display::fmt(&SendError(()), f),
        }
    }
}

impl<T> std::error::Error for SendTimeoutError<T> {}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(SendError(value): SendError<T>) -> Self {
        SendTimeoutError::Disconnected(value)
    }
}
