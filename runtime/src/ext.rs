//! Hooks for crates that build on greenhub (greenhub-ipc uses every one of them).
//!
//! Ordinary programs do not need this module.

use crate::hub::{self, hub};

/// Registers `hook` to run when the current hub's [`run`](crate::run) is about to return: after
/// the root coroutine has ended and every other coroutine has been unwound. Hooks run in the
/// order they were registered, on the loop's stack, with the hub still current but no
/// coroutine running (they must not suspend).
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// let ran = Rc::new(Cell::new(false));
/// greenhub::run(|| {
///     let ran = ran.clone();
///     greenhub::ext::at_exit(move || ran.set(true));
/// });
/// assert!(ran.get());
/// ```
///
/// # Panics
/// Outside a hub.
#[track_caller]
pub fn at_exit(hook: impl FnOnce() + 'static) {
    hub("ext::at_exit").at_exit(Box::new(hook));
}

/// Runs `f` as the root coroutine of a fresh hub, like [`run`](crate::run), in a process that
/// ends as soon as this returns (greenhub-ipc's children, which end with `_exit`).
///
/// Everything up to the end of the shutdown is `run`'s: the loop runs until `f` returns, every
/// other coroutine is unwound, the exit hooks run, a panic in `f` comes out of here. Then the
/// blocking monitor's watchdog is stopped, and the hub itself is leaked, not freed: its stack
/// reservations stay mapped and its fds (epoll, eventfd, timerfd) open until the process
/// exits, which frees them in one go, and helper threads of
/// [`spawn_blocking`](crate::spawn_blocking) idle until then. That saves what dropping the hub
/// costs, a `munmap` per stack reservation and a `close` per fd (about 15 us of CPU per child in the
/// `bench worker greenhub process` row). A process that goes on after this has leaked them.
///
/// ```
/// assert_eq!(greenhub::ext::run_before_exit(|| 7), 7);
/// ```
///
/// # Panics
/// As [`run`](crate::run).
#[track_caller]
pub fn run_before_exit<T>(f: impl FnOnce() -> T) -> T {
    crate::Builder::new().run_then(f, hub::End::Leak)
}

/// Every live coroutine of the current hub, one line each, oldest first: who it is, what it
/// does, and for how long, in the deadlock report's words:
///
/// ```text
/// coroutine #1 (spawned at src/main.rs:3:5) [root]: running for 1.2ms
/// coroutine #2 "conn 7" (spawned at src/main.rs:42:9): waiting on a channel recv for 3.004s
/// coroutine #3 (spawned at src/main.rs:50:13): ready for 15µs
/// ```
///
/// "For how long" is measured from the start of the hub turn in which the coroutine entered
/// that state (the hub reads the clock once per turn, not on every switch).
///
/// ```
/// greenhub::run(|| {
///     let _h = greenhub::coroutine::Builder::new().name("worker").spawn(|| ());
///     let dump = greenhub::ext::dump();
///     assert!(dump.lines().nth(1).unwrap().starts_with("coroutine #"));
///     assert!(dump.contains("\"worker\" (spawned at "));
/// });
/// ```
///
/// # Panics
/// Outside a hub.
#[track_caller]
pub fn dump() -> String {
    hub("ext::dump").dump()
}

/// An id for the current hub, distinct from every other hub this process has run; `None`
/// outside a hub. A registration or cache keyed by it is never mistaken for one of another
/// hub's, including the parent's hub inherited through fork.
#[track_caller]
pub fn hub_id() -> Option<u64> {
    hub::try_hub().map(|h| h.id().get())
}

/// After `fork`, in the child: forgets the hub inherited from the parent, without touching it,
/// so that [`run`](crate::run) can start a fresh one.
///
/// The child shares the parent's epoll instance (polling or deregistering on it would steal or
/// remove the parent's events), and the parent's coroutines must never run or unwind twice. So
/// the inherited hub and its coroutines are leaked (their memory is a copy-on-write image of the
/// parent's), the hub's own three fds (epoll, the wake-up eventfd and the timerfd) are closed
/// without any `epoll_ctl`, and the thread is left without a hub. Helper threads of
/// `spawn_blocking` do not exist in the child; the fresh hub starts its own. Does nothing on a thread without a hub.
///
/// # Safety
/// Call it only in a process just created by `fork` (or `clone` without `CLONE_VM`), on the
/// thread that forked, and never return into the coroutine it was called from: the hub that
/// would resume it is gone. End the child with `std::process::exit` or `libc::_exit` instead.
pub unsafe fn forget_inherited_hub() {
    // SAFETY: the caller upholds the same contract.
    unsafe { hub::forget_inherited() }
}

/// After `fork`, in the child, once every fd but stdio and `keep` has been closed (greenhub-ipc
/// does it):
/// a [`Source`](crate::io::Source) (a [`net`](crate::net) socket) inherited with any other fd
/// refuses I/O from then on with an error saying so, and dropping it does not close its fd
/// number, which the child may have reused for another file. Sources whose fds are in `keep`
/// (the transferred ones) go on as before.
pub fn closed_inherited_fds_except(keep: &[std::os::fd::RawFd]) {
    crate::io::inherited::closed_all_but(keep);
}

/// Whether coroutine stacks get lightweight guard pages on this kernel
/// (`madvise(MADV_GUARD_INSTALL)`, Linux 6.13+, probed once per process). When true, the number
/// of live coroutines is bounded by memory alone; when false, each live stack costs two memory
/// mappings and the sysctl `vm.max_map_count` caps them (about 32,700 at its default). Setting
/// `GREENHUB_STACK_GUARDS=mprotect` in the environment before the first hub starts forces the
/// `mprotect` guards.
pub fn lightweight_stack_guards() -> bool {
    crate::sys::guard_kind() == crate::sys::GuardKind::Lightweight
}

/// After `fork`, in the child: forgets every [`signal::Signals`](crate::signal::Signals) watcher
/// inherited from the parent, so that the child inherits none of them: the dispositions they
/// replaced are put back, greenhub's handler stops acting in the child (until a `Signals` made
/// there installs it again), and the watchers' eventfds are closed. greenhub-ipc calls it while
/// it resets a new child's signals.
///
/// # Safety
/// Call it only in a process just created by `fork`, before any `Signals` is used there, and
/// never use or drop a `Signals` inherited from the parent afterwards (those of the inherited
/// hub, forgotten by [`forget_inherited_hub`], never are).
pub unsafe fn forget_inherited_signals() {
    // SAFETY: the caller upholds the same contract.
    unsafe { crate::signal::forget_inherited() }
}

pub use crate::stack::{FreshStack, on_stack};
