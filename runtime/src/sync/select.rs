//! `select!`: wait on several channel operations at once and perform exactly one of them.
//!
//! Guarantee: exactly one arm's operation takes effect; every other arm leaves its channel
//! untouched (no item taken, none sent: a send arm's value expression is evaluated only when
//! its arm is chosen). A disconnected channel's arm is ready and gives its `Err`. An arm whose
//! channel woke the waiting coroutine is chosen if it is ready (the item or place it was woken
//! for is promised to it); otherwise, among ready arms the one checked first is chosen, and the
//! check starts at a random arm each time, so none starves. Not guaranteed: which of several
//! ready arms is chosen.
//!
//! How (the wait-list skeleton, extended to several lists: [`wait_any`]): check every arm;
//! register one entry on each arm's wait list; check again; suspend. The first notification
//! wakes the coroutine; the others skip it while it is awake. Once an arm is ready, the
//! coroutine leaves every other list (passing on a notification it did not use) and commits
//! the chosen operation before it can suspend again, so the readiness it saw still holds.

// `sealed::Arm` is a supertrait of the public `SelectRecv`, so rustc counts its methods as
// public; the trait lives in a private module and cannot be named or implemented outside
// greenhub (the sealed-trait pattern), so the crate-private types in its signatures never leak.
#![allow(private_interfaces)]

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use super::channel::{Receiver, RecvError, SendError, Sender};
use super::waitlist::{WaitList, wait_any};
use crate::sys::HubSection;
use crate::task::TaskRef;
use crate::task::WaitReason;
use crate::timer::deadline_after;

/// What the arms of a `select!` are built from; implemented inside greenhub only.
pub(crate) mod sealed {
    use super::*;

    /// One channel end as a `select!` arm.
    pub trait Arm {
        /// Whether the arm's operation would complete now (or fail for good) for coroutine
        /// `me` (`None`: before it registered anywhere); `woken`: a notification of the arm's
        /// list woke `me`, so what it brought is promised to `me`. No side effects.
        fn ready(&self, me: Option<TaskRef>, woken: bool) -> bool;
        /// The list the arm's coroutine waits on.
        fn wait_list(&self) -> &WaitList;
        /// The arm's entry entered its list's queue.
        fn entered(&self) {}
        /// The selecting coroutine is about to suspend on this arm: anything it must hold while
        /// it waits (a thread channel binds to the hub and counts as a pending remote wake).
        fn hold(&self) -> Option<Box<dyn std::any::Any>> {
            None
        }
    }
}

use sealed::Arm;

/// A channel end that a `recv` arm of [`select!`](crate::select) can take from:
/// [`Receiver`] and [`ThreadReceiver`](super::ThreadReceiver).
pub trait SelectRecv: sealed::Arm {
    /// What `recv` gives.
    type Output;
    #[doc(hidden)]
    fn commit_recv(&self) -> Self::Output;
}

impl<T> Arm for Receiver<T> {
    fn ready(&self, _me: Option<TaskRef>, woken: bool) -> bool {
        self.chan().recv_ready(woken)
    }

    fn wait_list(&self) -> &WaitList {
        self.chan().item_waiters()
    }

    fn entered(&self) {
        self.chan().receiver_entered();
    }
}

impl<T> SelectRecv for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn commit_recv(&self) -> Self::Output {
        // As a receiver entitled to the item: the arm was chosen because `ready` said so just
        // now, and nothing ran since. (Re-checking the promise as a newcomer could refuse:
        // a rendezvous item taken back leaves a promise with no item behind it, so promises
        // can outnumber items for a moment; a probe's select panicked here.)
        self.chan().try_take(true).expect("select! chose a recv arm that was not ready")
    }
}

impl<T> Arm for Sender<T> {
    fn ready(&self, me: Option<TaskRef>, woken: bool) -> bool {
        self.chan().send_ready(me, woken)
    }

    fn wait_list(&self) -> &WaitList {
        self.chan().room_waiters()
    }
}

thread_local! {
    /// xorshift64 state for the arm a check starts at.
    static ROTATION: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (nanos ^ (&nanos as *const u64 as u64)) | 1
}

/// A random arm index below `n`.
fn random_start(n: usize) -> usize {
    ROTATION.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % n as u64) as usize
    })
}

/// How long a [`Selector`] waits. Used by [`select!`](crate::select).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Until an arm is ready.
    Block,
    /// Not at all (`default => ...`).
    Now,
    /// At most this long (`default(d) => ...`).
    Timeout(Duration),
}

/// The arms of one `select!`, in the order written. Used by [`select!`](crate::select).
#[doc(hidden)]
pub struct Selector<'a> {
    arms: Vec<&'a dyn Arm>,
}

impl Default for Selector<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Selector<'a> {
    /// No arms yet.
    pub fn new() -> Self {
        Selector { arms: Vec::with_capacity(4) }
    }

    /// Adds a `recv` arm; its index.
    #[track_caller]
    pub fn recv<R: SelectRecv>(&mut self, r: &'a R) -> usize {
        self.arms.push(r);
        self.arms.len() - 1
    }

    /// Adds a `send` arm; its index.
    #[track_caller]
    pub fn send<T>(&mut self, s: &'a Sender<T>) -> usize {
        self.arms.push(s);
        self.arms.len() - 1
    }

    /// Waits as `mode` says for an arm to be ready, and names it (`None`: none was ready in
    /// time). The caller then commits that arm's operation at once.
    ///
    /// # Panics
    /// With no arms and `Mode::Block` (it would wait forever); outside a coroutine, when it
    /// must wait.
    #[track_caller]
    pub fn wait(self, mode: Mode) -> Selected {
        let arms = &self.arms;
        let n = arms.len();
        if n == 0 {
            assert!(
                !matches!(mode, Mode::Block),
                "greenhub::select! needs at least one recv or send arm, or a default arm: \
                 with none it would wait forever"
            );
            return Selected { index: None };
        }
        let start = random_start(n);
        let check = |me, woken: &[bool]| {
            let woken_by = |i: usize| woken.get(i).copied().unwrap_or(false);
            // The arm whose notification woke the coroutine first: what it brought (an item, a
            // place, a rendezvous hand-over) is promised to this coroutine, and taking another
            // arm would leave it to whoever comes next, or to nobody.
            if let Some(i) = (0..n).find(|&i| woken_by(i)).filter(|&i| arms[i].ready(me, true)) {
                return Some(i);
            }
            (0..n).map(|k| (start + k) % n).find(|&i| arms[i].ready(me, woken_by(i)))
        };
        if let Some(ready) = check(None, &[]) {
            return Selected { index: Some(ready) };
        }
        let deadline = match mode {
            Mode::Now => return Selected { index: None },
            Mode::Timeout(d) if d.is_zero() => return Selected { index: None },
            Mode::Timeout(d) => deadline_after(d),
            Mode::Block => None,
        };
        // Holding the arms registers thread channels with the hub: greenhub's bookkeeping.
        let section = HubSection::enter();
        let _holds: Vec<Box<dyn std::any::Any>> = arms.iter().filter_map(|a| a.hold()).collect();
        let lists: Vec<&WaitList> = arms.iter().map(|a| a.wait_list()).collect();
        drop(section);
        let reason = WaitReason::Select(n);
        let index = wait_any(&lists, reason, deadline, |i| arms[i].entered(), check);
        Selected { index }
    }
}

impl fmt::Debug for Selector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({} arms)", self.arms.len())
    }
}

/// The arm a [`Selector`] chose; commit it with [`recv`](Self::recv) or [`send`](Self::send).
#[doc(hidden)]
#[derive(Debug)]
#[must_use = "the chosen operation must be committed"]
pub struct Selected {
    index: Option<usize>,
}

impl Selected {
    /// The chosen arm's index; `None` when none was ready in time.
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// Commits a chosen `recv` arm.
    #[track_caller]
    pub fn recv<R: SelectRecv>(self, r: &R) -> R::Output {
        r.commit_recv()
    }

    /// Commits a chosen `send` arm.
    #[track_caller]
    pub fn send<T>(self, s: &Sender<T>, value: T) -> Result<(), SendError<T>> {
        match s.chan().send_now(value, None) {
            Ok(()) => Ok(()),
            Err(super::TrySendError::Disconnected(value)) => Err(SendError(value)),
            Err(super::TrySendError::Full(_)) => {
                unreachable!("select! chose a send arm that was not ready")
            }
        }
    }
}

/// Waits on several channel operations at once and performs exactly one of them
/// (crossbeam-channel's `select!` syntax).
///
/// ```text
/// select! {
///     recv(rx) -> msg => { /* msg: Result<T, RecvError> */ },
///     send(tx, value) -> res => { /* res: Result<(), SendError<T>> */ },
///     default(Duration::from_millis(50)) => { /* none was ready in 50 ms */ },
/// }
/// ```
///
/// - `recv(r) -> pat => body`: `r` is a [`Receiver`](crate::sync::Receiver) or a
///   [`ThreadReceiver`](crate::sync::ThreadReceiver); the arm is ready when an item is queued or
///   every sender is gone (then `pat` binds `Err(RecvError)`).
/// - `send(s, value) -> pat => body`: `s` is a [`Sender`](crate::sync::Sender); the arm is ready
///   when the channel has room (a rendezvous: when a receiver waits for an item) or every
///   receiver is gone (then `pat` binds `Err(SendError(value))`). `value` is evaluated only if
///   this arm is chosen, right before it is sent: it must not suspend.
/// - `default => body`: runs when no arm is ready now; `default(d) => body`: when none became
///   ready within `d`. Without a default arm the coroutine suspends until one is ready.
///
/// Exactly one operation takes effect: the other arms take and send nothing. Among ready arms
/// the check starts at a random one, so none starves. `timeout` and `JoinHandle::cancel` unwind
/// a selecting coroutine like any other suspension point, with nothing taken or sent. Bodies
/// may `break`, `continue`, `return` or use `?`, as in a `match`.
///
/// ```
/// use std::time::Duration;
/// use greenhub::sync::channel;
///
/// greenhub::run(|| {
///     let (tx_a, rx_a) = channel::<&str>();
///     let (tx_b, rx_b) = channel::<u32>();
///     greenhub::spawn(move || tx_b.send(7).unwrap());
///     let got = greenhub::select! {
///         recv(rx_a) -> msg => format!("a: {msg:?}"),
///         recv(rx_b) -> msg => format!("b: {}", msg.unwrap()),
///     };
///     assert_eq!(got, "b: 7");
///     let timed_out = greenhub::select! {
///         recv(rx_a) -> _msg => false,
///         default(Duration::from_millis(5)) => true,
///     };
///     assert!(timed_out);
///     tx_a.send("hi").unwrap();
///     greenhub::select! {
///         recv(rx_a) -> msg => {
///             assert_eq!(msg, Ok("hi"));
///         },
///         default => {
///             unreachable!("an item is queued");
///         },
///     }
/// });
/// ```
///
/// A `select!` with no arm at all does not compile:
///
/// ```compile_fail
/// greenhub::run(|| greenhub::select! {});
/// ```
#[macro_export]
macro_rules! select {
    () => {
        ::core::compile_error!(
            "greenhub::select! needs at least one arm: recv(r) -> msg => ..., \
             send(s, v) -> res => ..., or default => ..."
        )
    };
    ($($tokens:tt)+) => {
        $crate::__select_parse!(@parse [] [] $($tokens)+)
    };
}

/// Parses `select!`'s arms into a list of operations and an optional default.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_parse {
    // recv(r) -> pat => { block } [,]: the comma and no comma are two rules, because
    // `$(,)? $($rest:tt)*` cannot tell an optional comma from the first token of the rest.
    (@parse [$($ops:tt)*] [$($def:tt)*]
        recv($r:expr $(,)?) -> $p:pat => { $($body:tt)* } , $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)* (recv ($r) ($p) ({ $($body)* }))] [$($def)*]
            $($rest)*)
    };
    (@parse [$($ops:tt)*] [$($def:tt)*]
        recv($r:expr $(,)?) -> $p:pat => { $($body:tt)* } $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)* (recv ($r) ($p) ({ $($body)* }))] [$($def)*]
            $($rest)*)
    };
    (@parse [$($ops:tt)*] [$($def:tt)*]
        recv($r:expr $(,)?) -> $p:pat => $body:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!(@parse [$($ops)* (recv ($r) ($p) ($body))] [$($def)*]
            $($($rest)*)?)
    };
    // send(s, v) -> pat => { block } [,]
    (@parse [$($ops:tt)*] [$($def:tt)*]
        send($s:expr, $v:expr $(,)?) -> $p:pat => { $($body:tt)* } , $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)* (send ($s) ($v) ($p) ({ $($body)* }))]
            [$($def)*] $($rest)*)
    };
    (@parse [$($ops:tt)*] [$($def:tt)*]
        send($s:expr, $v:expr $(,)?) -> $p:pat => { $($body:tt)* } $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)* (send ($s) ($v) ($p) ({ $($body)* }))]
            [$($def)*] $($rest)*)
    };
    (@parse [$($ops:tt)*] [$($def:tt)*]
        send($s:expr, $v:expr $(,)?) -> $p:pat => $body:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!(@parse [$($ops)* (send ($s) ($v) ($p) ($body))] [$($def)*]
            $($($rest)*)?)
    };
    // default [(d)] => body
    (@parse [$($ops:tt)*] [] default => { $($body:tt)* } , $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Now) ({ $($body)* })] $($rest)*)
    };
    (@parse [$($ops:tt)*] [] default => { $($body:tt)* } $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Now) ({ $($body)* })] $($rest)*)
    };
    (@parse [$($ops:tt)*] [] default => $body:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Now) ($body)] $($($rest)*)?)
    };
    (@parse [$($ops:tt)*] [] default($d:expr $(,)?) => { $($body:tt)* } , $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Timeout($d)) ({ $($body)* })] $($rest)*)
    };
    (@parse [$($ops:tt)*] [] default($d:expr $(,)?) => { $($body:tt)* } $($rest:tt)*) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Timeout($d)) ({ $($body)* })] $($rest)*)
    };
    (@parse [$($ops:tt)*] [] default($d:expr $(,)?) => $body:expr $(, $($rest:tt)*)?) => {
        $crate::__select_parse!(@parse [$($ops)*] [(Timeout($d)) ($body)] $($($rest)*)?)
    };
    (@parse [$($ops:tt)*] [$($def:tt)+] default $($rest:tt)*) => {
        ::core::compile_error!("greenhub::select! takes at most one default arm")
    };
    // Done: emit.
    (@parse [$($ops:tt)*] [($($mode:tt)*) ($default:expr)]) => {{
        let __selector = $crate::sync::__select::Selector::new();
        match $crate::__select_emit!(__selector [$($mode)*] $($ops)*) {
            ::core::result::Result::Ok(__value) => __value,
            ::core::result::Result::Err(_) => $default,
        }
    }};
    (@parse [$($ops:tt)+] []) => {{
        let __selector = $crate::sync::__select::Selector::new();
        match $crate::__select_emit!(__selector [Block] $($ops)+) {
            ::core::result::Result::Ok(__value) => __value,
            ::core::result::Result::Err(_) => {
                ::core::unreachable!("select! without a default returned no arm")
            }
        }
    }};
    (@parse [$($ops:tt)*] [$($def:tt)*] $($rest:tt)+) => {
        ::core::compile_error!(::core::concat!(
            "greenhub::select!: expected `recv(r) -> pat => body`, `send(s, v) -> pat => body`, ",
            "`default => body` or `default(timeout) => body`, found: ",
            ::core::stringify!($($rest)+)
        ))
    };
}

/// Registers each arm with the selector, waits, and runs the chosen arm's body: each level
/// registers its arm, lets the inner levels register theirs and wait, then commits its own
/// operation if it was chosen. `Ok(value)`: a body ran; `Err(selected)`: no arm was chosen.
#[doc(hidden)]
#[macro_export]
macro_rules! __select_emit {
    ($sel:ident [$($mode:tt)*]) => {
        ::core::result::Result::Err($sel.wait($crate::sync::__select::Mode::$($mode)*))
    };
    ($sel:ident [$($mode:tt)*] (recv ($r:expr) ($p:pat) ($body:expr)) $($rest:tt)*) => {{
        let __chan = &$r;
        let mut $sel = $sel;
        let __index = $sel.recv(__chan);
        match $crate::__select_emit!($sel [$($mode)*] $($rest)*) {
            // A body may diverge (`break`, `return`): then `Ok` is never reached, which is fine.
            #[allow(unreachable_code)]
            ::core::result::Result::Err(__op)
                if __op.index() == ::core::option::Option::Some(__index) =>
            {
                let $p = __op.recv(__chan);
                ::core::result::Result::Ok($body)
            }
            __other => __other,
        }
    }};
    ($sel:ident [$($mode:tt)*] (send ($s:expr) ($v:expr) ($p:pat) ($body:expr)) $($rest:tt)*) => {{
        let __chan = &$s;
        let mut $sel = $sel;
        let __index = $sel.send(__chan);
        match $crate::__select_emit!($sel [$($mode)*] $($rest)*) {
            #[allow(unreachable_code)]
            ::core::result::Result::Err(__op)
                if __op.index() == ::core::option::Option::Some(__index) =>
            {
                let $p = __op.send(__chan, $v);
                ::core::result::Result::Ok($body)
            }
            __other => __other,
        }
    }};
}
