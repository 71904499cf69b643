//! Unix signals delivered to coroutines: [`Signals`] (gevent's `signal_handler`, signal-hook's
//! `Signals`).
//!
//! Guarantee: every `Signals` watching a signal gets every delivery of it, though deliveries that
//! arrive while nobody calls [`Signals::recv`] may coalesce into one (never into none); while any
//! `Signals` watches a signal its default action does not happen, and when the last one is
//! dropped the disposition from before is back. Not guaranteed: the order in which two different
//! signals that arrived between two `recv` calls are returned.
//!
//! # Implementation
//! A process-wide `sigaction` handler (in `sys`) counts each delivery in a per-signal atomic
//! counter and writes to the eventfd of every `Signals` watching that signal; `recv` compares the
//! counters with the ones it saw last and otherwise waits for its eventfd like any fd. So it
//! works with any number of threads and hubs, and a signal wakes a hub sleeping in `epoll_wait`
//! at once. (signalfd would need the signal blocked in every thread of the process, which a
//! library cannot guarantee.) The table the handler reads is lock-free; this module's registry,
//! behind a mutex, decides when to install and restore dispositions.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use crate::hub::hub;
use crate::io::Source;
use crate::sys::{self, Disposition, MAX_SIGNAL, MAX_WATCHERS};

/// Signals a coroutine cannot watch: SIGKILL and SIGSTOP cannot be caught, and the synchronous
/// fault signals are raised by the faulting instruction itself (greenhub's stack-overflow
/// reporter owns SIGSEGV and SIGBUS).
const REFUSED: [(i32, &str); 6] = [
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGILL, "SIGILL"),
];

/// Receives Unix signals in a coroutine: `Signals::new(&[libc::SIGTERM, libc::SIGINT])`, then
/// [`recv`](Signals::recv) suspends the caller until one of them arrives.
///
/// ```
/// use greenhub::signal::Signals;
/// greenhub::run(|| {
///     let signals = Signals::new(&[libc::SIGUSR1]).unwrap();
///     // SAFETY: raise(3) has no preconditions; it sends the signal to this thread.
///     unsafe { libc::raise(libc::SIGUSR1) }; // its default action (terminate) does not happen
///     assert_eq!(signals.recv().unwrap(), libc::SIGUSR1);
/// });
/// ```
///
/// Several `Signals` may watch the same signal (in one hub or in several): each gets every
/// delivery. Deliveries that arrive while nobody calls `recv` may coalesce into one, as with
/// signalfd, but are never lost. While any `Signals` watches a signal, its default action (or
/// the handler that was installed before) does not happen; when the last one is dropped, the
/// disposition from before is back. A child started with `greenhub_ipc::start_process` inherits
/// none of them (its dispositions are the defaults). A server that must not meet SIGTERM's
/// default action until it has exited, however often the signal comes, leaks its watcher
/// (`Box::leak`) instead of dropping it (`examples/prefork_server.rs` does).
///
/// Hub-bound, like every greenhub type that waits:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: &T) {}
/// let s = greenhub::signal::Signals::new(&[libc::SIGUSR1]).unwrap();
/// assert_send(&s);
/// ```
pub struct Signals {
    /// The signals watched, sorted, without duplicates.
    signals: Box<[i32]>,
    /// For each of them, the delivery count this `Signals` has reported up to.
    seen: RefCell<Box<[u64]>>,
    /// Where the next scan of `seen` starts, so that one busy signal cannot hide another.
    next: Cell<usize>,
    /// This value's row of the handler's table.
    slot: usize,
    /// The eventfd the handler writes to; dropped (deregistered, closed) after `Drop` has taken
    /// the row out of the handler's table.
    wake: Source<OwnedFd>,
    _not_send: PhantomData<*mut ()>,
}

impl Signals {
    /// Starts watching `signals`: from now on their deliveries are recorded for this value, and
    /// their default actions are suppressed until every `Signals` watching them is dropped.
    ///
    /// May be called outside a hub; [`recv`](Self::recv) needs one.
    ///
    /// # Errors
    /// `InvalidInput` for an empty list, a number that is not a signal, SIGKILL, SIGSTOP, or a
    /// synchronous fault signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL); the OS's error when it
    /// refuses an eventfd or a disposition (e.g. the signals libc reserves for itself); an error
    /// naming the limit when 256 `Signals` are alive at once in the process.
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        let mut list = signals.to_vec();
        list.sort_unstable();
        list.dedup();
        validate(&list)?;
        let wake = Source::new(sys::eventfd()?)?;
        // The counts are read before the handler goes in: a delivery between the two is then
        // reported (at worst one that came just before), never counted by the handler (which
        // suppresses its default action) and missed by this value.
        let seen = list.iter().map(|&s| sys::signal_deliveries(s)).collect();
        let slot = registry().watch(&list, wake.as_raw_fd())?;
        Ok(Signals {
            signals: list.into(),
            seen: RefCell::new(seen),
            next: Cell::new(0),
            slot,
            wake,
            _not_send: PhantomData,
        })
    }

    /// Suspends the calling coroutine until one of the watched signals arrives (or has arrived
    /// since the last `recv`), and returns its number.
    ///
    /// # Errors
    /// The OS's error if the wait on the eventfd fails (it does not in practice).
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn recv(&self) -> io::Result<i32> {
        hub("signal::Signals::recv");
        loop {
            if let Some(signal) = self.take_delivered() {
                return Ok(signal);
            }
            // A nonzero count may be left by deliveries already taken: check again after it.
            self.wake.read_with(|fd| sys::eventfd_take(fd.as_raw_fd()))?;
        }
    }

    /// [`recv`](Self::recv) for at most `d`: `Ok(None)` when none arrived in time. `d` may be
    /// `Duration::MAX` (wait forever); `Duration::ZERO` only takes what has already arrived.
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn recv_timeout(&self, d: Duration) -> io::Result<Option<i32>> {
        hub("signal::Signals::recv_timeout");
        if let Some(signal) = self.take_delivered() {
            return Ok(Some(signal));
        }
        match crate::timeout(d, || self.recv()) {
            Ok(result) => result.map(Some),
            Err(_elapsed) => Ok(None),
        }
    }

    /// The signals this value watches, sorted.
    pub fn signals(&self) -> &[i32] {
        &self.signals
    }

    /// The first watched signal (scanning round-robin) delivered since this value last saw it.
    fn take_delivered(&self) -> Option<i32> {
        let mut seen = self.seen.borrow_mut();
        let n = self.signals.len();
        (0..n).map(|k| (self.next.get() + k) % n).find_map(|i| {
            let now = sys::signal_deliveries(self.signals[i]);
            (now != seen[i]).then(|| {
                seen[i] = now; // several deliveries since the last look coalesce here
                self.next.set(i + 1);
                self.signals[i]
            })
        })
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        registry().unwatch(self.slot, &self.signals);
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals").field("signals", &self.signals).finish()
    }
}

fn validate(signals: &[i32]) -> io::Result<()> {
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if signals.is_empty() {
        return invalid("greenhub::signal::Signals::new needs at least one signal".into());
    }
    for &signal in signals {
        if let Some((_, name)) = REFUSED.iter().find(|(s, _)| *s == signal) {
            return invalid(format!(
                "greenhub::signal::Signals cannot watch {name}: SIGKILL and SIGSTOP cannot be \
                 caught, and the fault signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL) are raised by \
                 the faulting instruction itself"
            ));
        }
        if !(1..=MAX_SIGNAL as i32).contains(&signal) {
            return invalid(format!("greenhub::signal::Signals: {signal} is not a signal number"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The registry: who watches what, and the dispositions to restore

/// Process-wide bookkeeping, touched only by `Signals::new` and `drop` (never by the handler).
struct Registry {
    /// The process this state belongs to (after a fork, the child starts afresh).
    pid: u32,
    /// How many `Signals` watch each signal.
    watching: [u32; MAX_SIGNAL + 1],
    /// The disposition each watched signal had before its first watcher.
    previous: [Option<Disposition>; MAX_SIGNAL + 1],
    /// Which rows of the handler's table are taken.
    slots: [bool; MAX_WATCHERS],
}

impl Registry {
    const fn new() -> Registry {
        Registry {
            pid: 0,
            watching: [0; MAX_SIGNAL + 1],
            previous: [None; MAX_SIGNAL + 1],
            slots: [false; MAX_WATCHERS],
        }
    }

    /// Takes a row for a new watcher of `signals` on `fd`, installing the handler for those that
    /// had no watcher yet. On error nothing has changed.
    fn watch(&mut self, signals: &[i32], fd: i32) -> io::Result<usize> {
        let slot = self.slots.iter().position(|taken| !taken).ok_or_else(|| {
            io::Error::other(format!(
                "greenhub::signal::Signals: {MAX_WATCHERS} Signals values are alive in this \
                 process, the most it supports; share one (it can watch several signals)"
            ))
        })?;
        for (done, &signal) in signals.iter().enumerate() {
            if let Err(e) = self.add_watcher(signal) {
                signals[..done].iter().for_each(|&s| self.remove_watcher(s));
                return Err(e);
            }
        }
        let mask = signals.iter().fold(0u64, |m, &s| m | 1 << (s - 1));
        self.slots[slot] = true;
        sys::publish_watcher(slot, fd, mask);
        Ok(slot)
    }

    fn unwatch(&mut self, slot: usize, signals: &[i32]) {
        sys::retract_watcher(slot);
        self.slots[slot] = false;
        signals.iter().for_each(|&s| self.remove_watcher(s));
    }

    fn add_watcher(&mut self, signal: i32) -> io::Result<()> {
        let i = signal as usize;
        if self.watching[i] == 0 {
            self.previous[i] = Some(sys::install_signal_handler(signal)?);
        }
        self.watching[i] += 1;
        Ok(())
    }

    fn remove_watcher(&mut self, signal: i32) {
        let i = signal as usize;
        self.watching[i] -= 1;
        if self.watching[i] == 0
            && let Some(previous) = self.previous[i].take()
        {
            sys::restore_signal_disposition(signal, &previous);
        }
    }
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry::new());

/// Null, or the registry that replaces [`REGISTRY`] in a fork child whose parent had the
/// registry's lock held (by another thread) at the instant of the fork: that lock is never
/// released there. Set only by [`forget_inherited`], to a mutex leaked from a `Box`.
static REPLACEMENT: AtomicPtr<Mutex<Registry>> = AtomicPtr::new(std::ptr::null_mut());

/// The registry's mutex in this process: [`REGISTRY`], or its replacement after such a fork.
fn registry_mutex() -> &'static Mutex<Registry> {
    let replacement = REPLACEMENT.load(Ordering::Acquire);
    if replacement.is_null() {
        &REGISTRY
    } else {
        // SAFETY: a non-null pointer came from `Box::leak` in `forget_inherited` and is never
        // freed, so it is valid for `'static`; the mutex behind it is only ever shared.
        unsafe { &*replacement }
    }
}

/// The registry, reset first if it was inherited through fork (a parent's watchers are not ours).
fn registry() -> MutexGuard<'static, Registry> {
    let mut registry = registry_mutex().lock().unwrap_or_else(PoisonError::into_inner);
    if registry.pid != std::process::id() {
        *registry = Registry { pid: std::process::id(), ..Registry::new() };
    }
    registry
}

/// After fork, in the child: forget every watcher inherited from the parent, so that the child
/// inherits none of them. Their eventfds are closed, the handler stops acting in the child, and
/// the dispositions the parent's watchers replaced are put back.
///
/// A registry mutex that another thread of the parent held at the instant of `fork` stays held
/// in the child, by a thread that does not exist there: then only the handler's table is reset
/// (the dispositions the parent's watchers replaced are not put back), and a fresh registry
/// replaces the stuck one, so that a `Signals` made in the child works instead of waiting
/// forever for that lock.
///
/// # Safety
/// Call only in a process just created by `fork`, before any `Signals` is used in it: the
/// inherited `Signals` values' eventfds are closed (their values must never be used or dropped
/// afterwards, which holds for those of the leaked, inherited hub).
pub(crate) unsafe fn forget_inherited() {
    // SAFETY: the caller's contract is this function's.
    unsafe { sys::forget_signal_watchers_after_fork() };
    let mut registry = match registry_mutex().try_lock() {
        Ok(registry) => registry,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            // Its holder is a thread of the parent: the lock stays held here forever. The stuck
            // mutex is abandoned (never used again, so the leak is one small box per such fork).
            let fresh = Registry { pid: std::process::id(), ..Registry::new() };
            let fresh: &'static Mutex<Registry> = Box::leak(Box::new(Mutex::new(fresh)));
            REPLACEMENT.store(std::ptr::from_ref(fresh).cast_mut(), Ordering::Release);
            return;
        }
    };
    // Only what the parent's watchers changed is written: a store to a page of the registry
    // makes the child copy that page (copy-on-write), three of them per child when nothing
    // needs restoring. The rest resets itself on first use: `registry()` sees the parent's pid.
    for (signal, slot) in registry.previous.iter_mut().enumerate() {
        if slot.is_some()
            && let Some(previous) = slot.take()
        {
            sys::restore_signal_disposition(signal as i32, &previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::{Signals, forget_inherited, registry};

    /// A fork while another thread holds the registry's lock (here, a test thread; in a program,
    /// one creating or dropping a `Signals` while `start_process` forks): a `Signals` made in
    /// the child works, instead of waiting forever for a lock whose holder is not there.
    #[test]
    fn a_fork_child_can_watch_though_another_thread_held_the_registry_lock_at_the_fork() {
        let (locked_tx, locked_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _registry = registry();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        locked_rx.recv().unwrap();
        // SAFETY: fork has no preconditions; the child runs only the calls below and ends with
        // `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: alarm has no preconditions: a child that hangs dies of SIGALRM.
            unsafe { libc::alarm(10) };
            // SAFETY: a process just created by fork; no inherited `Signals` is used here.
            unsafe { forget_inherited() };
            let received = Signals::new(&[libc::SIGUSR1]).is_ok_and(|signals| {
                // SAFETY: raise has no preconditions; SIGUSR1 is watched, so it is recorded.
                unsafe { libc::raise(libc::SIGUSR1) };
                signals.take_delivered() == Some(libc::SIGUSR1)
            });
            // SAFETY: _exit ends the child at once, without running the harness's cleanup.
            unsafe { libc::_exit(if received { 0 } else { 1 }) };
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child into a live int.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child did not receive its signal (status {status:#x}; SIGALRM: it hung)"
        );
    }
}
