//! I/O readiness: the hub's reactor, [`Source`] (a non-blocking fd registered with the hub), and
//! [`wait_readable`] / [`wait_writable`] for any fd (gevent's `wait_read` / `wait_write`).
//!
//! Guarantee: every I/O call is the same retry loop, "try the syscall; on `WouldBlock` wait for
//! readiness; try again", so a coroutine never blocks the thread on a registered fd and never
//! misses an edge (mio is edge-triggered: the loop drains to `WouldBlock` before it waits).
//! Several coroutines may wait on one fd. Not guaranteed: which of them gets the data first.
//! Linux: epoll through mio.
//!
//! # The registration rule: an fd number never inherits another file's registration
//!
//! epoll keys its interest by *(open file, fd number)*, and removes it silently only when the
//! last fd of that open file closes (a `dup`, `try_clone` or a forked child keeps it alive). The
//! reactor keys its table by fd number, so a number closed and reused by a new file must never
//! find the old file's registration. Who may hold a registration decides how it is checked:
//!
//! - **Owned** (a live [`Source`] holds it): the `Source` owns the fd, so by I/O safety the number
//!   still names the registered file. Its own waits never check: no cost on the hot path. A
//!   `Source` deregisters before it closes its fd (field order).
//! - **Unowned** (only raw [`wait_readable`] / [`wait_writable`] waiters hold it: the caller owns
//!   the fd and may close it under the wait). Checked with one `epoll_ctl(EPOLL_CTL_MOD)`, which
//!   succeeds exactly when epoll still holds *the file now at that number* under that number: a
//!   closed number gives `EBADF`, a reused one `ENOENT` (or `EPERM`). Checked at the start of
//!   each loop poll that follows a turn in which coroutines ran (only they can close an fd under
//!   a wait; a poll that ran nobody checks nothing, so the re-arm that `MOD` causes cannot make
//!   the loop spin). Not covered: another *thread* closing the fd while the hub sleeps in
//!   `epoll_wait` is noticed only once something else wakes the hub. A registration that
//!   fails the check is *retired*: it leaves the table, its waiters wake with `EBADF`, and the
//!   number is registered afresh on its next use.
//!
//! Whoever holds it, a registration found under a number by a *new* wait (a raw wait, or a
//! `Source`'s first) gets the same check before it is shared, so even an fd closed behind a
//! `Source`'s back (`libc::close` on its number, which breaks I/O safety) never passes its
//! registration to the file that reuses the number.
//!
//! Tokens carry a generation next to the slab key, so events from an epoll entry that outlived
//! its fd number (the file is still open elsewhere) are recognised and ignored.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::hub::{Hub, HubId, hub, try_hub};
use crate::sync::waitlist::WaitList;
use crate::sys::{self, HubSection};
use crate::task::WaitReason;

/// The token of the eventfd that other threads write to wake the loop.
const WAKER: Token = Token(usize::MAX);

/// The token of the timerfd armed at the next timer's deadline.
const TIMER: Token = Token(usize::MAX - 1);

/// A registration's token is `generation << GENERATION_SHIFT | slab key`.
const GENERATION_SHIFT: u32 = 32;

/// The slab keys a token can carry (below the two reserved tokens' low halves).
const MAX_KEY: usize = (1 << GENERATION_SHIFT) - 2;

/// How long the loop may wait in one poll.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all: coroutines are ready.
    Poll,
    /// Until this timer deadline (or an event).
    Until(Instant),
    /// Until an event.
    Forever,
}

/// How many readiness events one poll returns at most.
const EVENTS_PER_POLL: usize = 1024;

/// A registration the patch keeps for a managed fd, and the fd table's epoch of its number then.
#[cfg(feature = "patch")]
type Kept = (Rc<Registration>, u64);

/// The hub's side of I/O: the epoll instance and what each registration's token means.
pub(crate) struct Reactor {
    /// The registrations the patch keeps for the fds it manages (feature `patch`), indexed by
    /// fd number (small and dense: cheaper than hashing on every wait), with the fd table's
    /// epoch of the number when it was kept (see [`wait_fd_kept`]).
    #[cfg(feature = "patch")]
    kept: RefCell<Vec<Option<Kept>>>,
    /// The process whose epoll instance `poll` is (feature `patch`): a child made by a plain
    /// `fork` from a coroutine runs on a copy of this reactor over the parent's epoll, and the
    /// patch's `close` there must not deregister the parent's registrations ([`forget_kept`]).
    #[cfg(feature = "patch")]
    pid: u32,
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    registrations: RefCell<Slab<Weak<Registration>>>,
    /// The one live (not retired) registration of each fd number.
    by_fd: RefCell<HashMap<RawFd, Weak<Registration>>>,
    /// Registrations no `Source` owns, by slab key: checked before a poll (see the module doc).
    unowned: RefCell<HashMap<usize, Weak<Registration>>>,
    /// Whether coroutines may have run since the unowned registrations were last checked.
    may_have_closed: Cell<bool>,
    /// The generation of the next registration's token.
    generation: Cell<u32>,
    /// Coroutines suspended on an fd right now (for the deadlock check).
    waiters: Cell<usize>,
    waker_fd: RawFd,
    /// Wakes the loop at a timer's deadline with microsecond precision (a poll timeout is
    /// rounded up to whole milliseconds by mio, which would make every timer late by ~0.5 ms).
    timer: OwnedFd,
    /// The deadline the timerfd is armed for, if any.
    armed: Cell<Option<Instant>>,
}

impl Reactor {
    /// The reactor of a new hub, or what the OS refused it (named) and its error.
    pub(crate) fn new(waker_fd: RawFd) -> Result<Reactor, (&'static str, io::Error)> {
        let poll = Poll::new().map_err(|e| ("epoll instance (epoll_create1)", e))?;
        poll.registry()
            .register(&mut SourceFd(&waker_fd), WAKER, Interest::READABLE)
            .map_err(|e| ("watch of its eventfd (epoll_ctl)", e))?;
        let timer = sys::timerfd().map_err(|e| ("timerfd (timerfd_create)", e))?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)
            .map_err(|e| ("watch of its timerfd (epoll_ctl)", e))?;
        Ok(Reactor {
            #[cfg(feature = "patch")]
            kept: RefCell::new(Vec::new()),
            #[cfg(feature = "patch")]
            pid: std::process::id(),
            timer,
            armed: Cell::new(None),
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_PER_POLL)),
            registrations: RefCell::new(Slab::new()),
            by_fd: RefCell::new(HashMap::new()),
            unowned: RefCell::new(HashMap::new()),
            may_have_closed: Cell::new(true),
            generation: Cell::new(0),
            waiters: Cell::new(0),
            waker_fd,
        })
    }

    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.get() > 0
    }

    /// Waits for readiness (as `wait` says) and wakes the coroutines waiting on what became
    /// ready. EINTR returns early: the loop turns again and recomputes the wait.
    pub(crate) fn poll(&self, hub: &Hub, wait: Wait) {
        // Raw waits whose fd was closed under them wake with EBADF, and then nobody may sleep.
        let retired = self.may_have_closed.get() && self.retire_closed_unowned();
        let timeout = match wait {
            _ if retired => Some(Duration::ZERO),
            Wait::Poll => Some(Duration::ZERO),
            Wait::Forever => None,
            Wait::Until(at) => self.timeout_until(at),
        };
        self.poll_and_wake(hub, timeout);
        // Coroutines run before the next poll only if some are ready now.
        self.may_have_closed.set(hub.tasks.has_ready());
    }

    /// The loop skipped a poll that could wake nobody (coroutines are ready): coroutines run
    /// before the next one, as after a poll that left some ready.
    pub(crate) fn skip_poll(&self) {
        self.may_have_closed.set(true);
    }

    fn poll_and_wake(&self, hub: &Hub, timeout: Option<Duration>) {
        let mut events = self.events.borrow_mut();
        match self.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => panic!("greenhub: epoll_wait failed: {e}"),
        }
        for event in events.iter() {
            if event.token() == WAKER {
                hub.remote.deliver(hub, self.waker_fd);
                continue;
            }
            if event.token() == TIMER {
                sys::eventfd_drain(self.timer.as_raw_fd());
                self.armed.set(None); // the loop fires what is due, and re-arms for the rest
                continue;
            }
            let key = event.token().0 & ((1 << GENERATION_SHIFT) - 1);
            let registration = self.registrations.borrow().get(key).and_then(Weak::upgrade);
            // A token of another generation: an epoll entry that outlived its fd number.
            let Some(registration) = registration.filter(|r| r.token == event.token()) else {
                continue;
            };
            if event.is_read_closed() || event.is_error() {
                registration.read_closed.set(true);
            }
            if event.is_priority() {
                registration.urgent.set(true);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                registration.readable.set(true);
                registration.readers.notify_all();
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                registration.writable.set(true);
                registration.writers.notify_all();
            }
        }
    }

    /// The poll timeout for a wait until `at`: none, with the timerfd armed for `at` (re-armed
    /// only when the earliest deadline changed); mio's millisecond timeout if that fails.
    #[track_caller]
    fn timeout_until(&self, at: Instant) -> Option<Duration> {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Duration::ZERO);
        }
        if self.armed.get() == Some(at) {
            return None;
        }
        match sys::timerfd_arm(&self.timer, left) {
            Ok(()) => {
                self.armed.set(Some(at));
                None
            }
            Err(_) => Some(left),
        }
    }

    /// Registers `fd` (edge-triggered, both directions) as the live registration of its number.
    /// Registering an fd adds it to epoll, which reports its current readiness at the next poll.
    /// An unowned one (a raw wait's) joins the set checked before each poll.
    fn register(&self, hub_id: HubId, fd: RawFd, owned: bool) -> io::Result<Rc<Registration>> {
        let _section = HubSection::enter(); // the tables and epoll, mid-update
        let mut registrations = self.registrations.borrow_mut();
        let entry = registrations.vacant_entry();
        let key = entry.key();
        assert!(key <= MAX_KEY, "greenhub: more than {MAX_KEY} fds registered with one hub");
        let generation = self.generation.get();
        self.generation.set(generation.wrapping_add(1));
        let token = Token((generation as usize) << GENERATION_SHIFT | key);
        self.poll.borrow().registry().register(&mut SourceFd(&fd), token, sys::INTEREST)?;
        let registration = Rc::new(Registration {
            hub_id,
            key,
            token,
            fd,
            readable: Cell::new(false),
            read_closed: Cell::new(false),
            urgent: Cell::new(false),
            writable: Cell::new(false),
            closed: Cell::new(false),
            owners: Cell::new(0), // a `Source` adopts its own right after
            readers: WaitList::new(),
            writers: WaitList::new(),
        });
        entry.insert(Rc::downgrade(&registration));
        self.by_fd.borrow_mut().insert(fd, Rc::downgrade(&registration));
        if !owned {
            self.unowned.borrow_mut().insert(key, Rc::downgrade(&registration));
        }
        Ok(registration)
    }

    /// The last reference to a live registration is gone: leave epoll (the fd is still open:
    /// a `Source` drops its registration before its fd, and a raw wait's fd was checked) and
    /// the tables. A retired registration has left them already.
    fn deregister(&self, registration: &Registration) {
        if registration.closed.get() {
            return;
        }
        let _section = HubSection::enter();
        let fd = registration.fd;
        // An fd closed behind our back (and not checked since) has left epoll if it was the
        // last fd of its open file, or lingers there under a token nobody answers (a `dup` or a
        // forked child keeps the file open): ignore the error.
        let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
        self.forget(registration);
    }

    /// Removes `registration` from the tables, where it (and no newer one) is listed.
    fn forget(&self, registration: &Registration) {
        let is_it = |w: &Weak<Registration>| std::ptr::eq(w.as_ptr(), registration);
        let mut registrations = self.registrations.borrow_mut();
        if registrations.get(registration.key).is_some_and(is_it) {
            registrations.remove(registration.key);
        }
        let mut by_fd = self.by_fd.borrow_mut();
        if by_fd.get(&registration.fd).is_some_and(is_it) {
            by_fd.remove(&registration.fd);
        }
        self.unowned.borrow_mut().remove(&registration.key);
    }

    /// The live registration of `fd` in this hub, if any. It is checked first: if its fd was
    /// closed or now names another file, it is retired and `None` is returned. (Only a new
    /// wait's lookup pays this; a `Source`'s own waits use the registration it holds.)
    fn registration_of(&self, fd: RawFd) -> Option<Rc<Registration>> {
        let _section = HubSection::enter(); // a retirement updates the tables
        let found = self.by_fd.borrow().get(&fd).and_then(Weak::upgrade)?;
        if !self.still_registered(&found) {
            self.retire(&found);
            return None;
        }
        Some(found)
    }

    /// Whether epoll holds the file now at the registration's fd number under that number (see
    /// the module doc). Re-arms the edge-triggered entry: a ready fd reports once more.
    fn still_registered(&self, registration: &Registration) -> bool {
        let fd = registration.fd;
        match self.poll.borrow().registry().reregister(
            &mut SourceFd(&fd),
            registration.token,
            sys::INTEREST,
        ) {
            Ok(()) => true,
            // Out of kernel memory says nothing about the fd: keep it.
            Err(e) => e.raw_os_error() == Some(libc::ENOMEM),
        }
    }

    /// The registration's fd was closed (or reused) under it: it leaves the tables without
    /// touching epoll (the number is not its own any more), and its waiters wake with `EBADF`.
    fn retire(&self, registration: &Registration) {
        registration.closed.set(true);
        self.forget(registration);
        registration.readers.notify_all();
        registration.writers.notify_all();
    }

    /// Checks every unowned registration; retires those whose fd is gone. True if any was.
    fn retire_closed_unowned(&self) -> bool {
        if self.unowned.borrow().is_empty() {
            return false;
        }
        let unowned: Vec<Rc<Registration>> =
            self.unowned.borrow().values().filter_map(Weak::upgrade).collect();
        let mut retired = false;
        for registration in unowned {
            if !self.still_registered(&registration) {
                self.retire(&registration);
                retired = true;
            }
        }
        retired
    }

    /// A `Source` takes (a share of) ownership of `registration`.
    fn adopt(&self, registration: &Registration) {
        let _section = HubSection::enter();
        if registration.owners.replace(registration.owners.get() + 1) == 0 {
            self.unowned.borrow_mut().remove(&registration.key);
        }
    }

    /// A `Source` lets go of `registration`; if raw waits still hold it, it becomes unowned
    /// (its fd may be closed next, and it is checked before the next poll).
    fn release(&self, registration: &Rc<Registration>) {
        let _section = HubSection::enter();
        let owners = registration.owners.get() - 1;
        registration.owners.set(owners);
        if owners == 0 && !registration.closed.get() && Rc::strong_count(registration) > 1 {
            self.unowned.borrow_mut().insert(registration.key, Rc::downgrade(registration));
            self.may_have_closed.set(true);
        }
    }

    /// After fork, in the child: close the epoll fd and the waker without touching epoll.
    pub(crate) fn close_fds_after_fork(&self) {
        sys::close_raw(self.poll.borrow().as_raw_fd());
        sys::close_raw(self.waker_fd);
        sys::close_raw(self.timer.as_raw_fd());
    }
}

/// One fd registered with one hub. Deregistered when the last reference drops, if that hub is
/// still the current one (never after fork: the inherited epoll is shared with the parent).
struct Registration {
    hub_id: HubId,
    key: usize,
    /// The slab key and this registration's generation.
    token: Token,
    fd: RawFd,
    readable: Cell<bool>,
    /// The peer has shut down its side, or the fd has an error: sticky, as the state is (reads
    /// give EOF or the error from now on without a new edge). See `Source::read_stream_until`.
    read_closed: Cell<bool>,
    /// The peer has sent urgent (out-of-band) data, now or before: a TCP read stops at its
    /// mark with more bytes queued, so from now on a short read proves nothing (sticky; see
    /// `Source::read_stream_until`).
    urgent: Cell<bool>,
    writable: Cell<bool>,
    /// Retired: its fd was closed or reused under it; every wait on it gives `EBADF`.
    closed: Cell<bool>,
    /// How many `Source`s hold it (0: only raw waits do).
    owners: Cell<usize>,
    readers: WaitList,
    writers: WaitList,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Read,
    Write,
}

impl Registration {
    fn flag(&self, dir: Direction) -> &Cell<bool> {
        match dir {
            Direction::Read => &self.readable,
            Direction::Write => &self.writable,
        }
    }

    /// Suspends until the fd is ready in `dir` (returns at once if already marked ready), or
    /// until `deadline` (a `WouldBlock` error naming the timeout). `EBADF` once retired.
    #[track_caller]
    fn wait(&self, hub: &Hub, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        let (list, reason) = match dir {
            Direction::Read => (&self.readers, WaitReason::Readable(self.fd)),
            Direction::Write => (&self.writers, WaitReason::Writable(self.fd)),
        };
        let flag = self.flag(dir);
        let closed = &self.closed;
        let _counted = WaiterCount::new(hub);
        let woke = list.wait_until(reason, deadline, || (flag.get() || closed.get()).then_some(()));
        if closed.get() {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        woke.ok_or_else(|| timed_out(dir))
    }
}

/// The error of a read or write whose timeout passed: `WouldBlock`, as std gives on Linux.
fn timed_out(dir: Direction) -> io::Error {
    let what = match dir {
        Direction::Read => "read",
        Direction::Write => "write",
    };
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("greenhub: the socket's {what} timeout passed"),
    )
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = try_hub().filter(|h| h.id() == self.hub_id) {
            hub.reactor.deregister(self);
        }
    }
}

/// Counts a coroutine as waiting on an fd for as long as it lives.
struct WaiterCount<'h>(&'h Hub);

impl<'h> WaiterCount<'h> {
    fn new(hub: &'h Hub) -> Self {
        hub.reactor.waiters.set(hub.reactor.waiters.get() + 1);
        WaiterCount(hub)
    }
}

impl Drop for WaiterCount<'_> {
    fn drop(&mut self) {
        self.0.reactor.waiters.set(self.0.reactor.waiters.get() - 1);
    }
}

/// A `Source`'s share of ownership of its registration: released when dropped.
#[derive(Default)]
struct Ownership(Option<Rc<Registration>>);

impl Ownership {
    /// The held registration if it belongs to `hub`.
    fn of(&self, hub: &Hub) -> Option<&Rc<Registration>> {
        self.0.as_ref().filter(|r| r.hub_id == hub.id())
    }

    /// Holds `registration` (owned), letting go of the previous one.
    fn hold(&mut self, hub: &Hub, registration: Rc<Registration>) {
        hub.reactor.adopt(&registration);
        self.release();
        self.0 = Some(registration);
    }

    fn release(&mut self) {
        let Some(registration) = self.0.take() else { return };
        if let Some(hub) = try_hub().filter(|h| h.id() == registration.hub_id) {
            hub.reactor.release(&registration);
        }
        drop(registration); // the last reference deregisters, while the fd is still open
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.release();
    }
}

/// A non-blocking I/O object registered with the current hub: the building block of
/// [`net`](crate::net) and of greenhub-ipc's pipes.
///
/// `Source` owns `T` and puts its fd in non-blocking mode. [`read_with`](Self::read_with) and
/// [`write_with`](Self::write_with) run the retry loop around any syscall. Registration happens on
/// first wait, with whichever hub is current then, so a `Source` inherited through fork is
/// registered afresh with the child's hub (the parent's registration is left untouched).
/// Dropping it deregisters the fd before `T` closes it; a raw [`wait_readable`] /
/// [`wait_writable`] still waiting on that fd then wakes with `EBADF`.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use greenhub::io::Source;
///
/// greenhub::run(|| {
///     let (a, b) = UnixStream::pair().unwrap();
///     let (a, b) = (Source::new(a).unwrap(), Source::new(b).unwrap());
///     let reader = greenhub::spawn(move || {
///         let mut buf = [0u8; 5];
///         b.read_with(|s| (&*s).read(&mut buf)).unwrap(); // suspends until a writes
///         buf
///     });
///     a.write_with(|s| (&*s).write(b"hello")).unwrap();
///     assert_eq!(&reader.join().unwrap(), b"hello");
/// });
/// ```
pub struct Source<T: AsRawFd> {
    // Field order matters: the registration is released (deregistered) before `io` closes the fd.
    registration: RefCell<Ownership>,
    /// `None` only once `into_inner` has taken it.
    io: Option<T>,
    /// The fork generation ([`inherited`]) this source belongs to: it was made in it, or kept
    /// into it.
    generation: Cell<u64>,
}

impl<T: AsRawFd> Source<T> {
    /// Wraps `io`, putting its fd in non-blocking mode.
    pub fn new(io: T) -> io::Result<Source<T>> {
        sys::set_nonblocking(io.as_raw_fd(), true)?;
        Ok(Source {
            registration: RefCell::new(Ownership::default()),
            io: Some(io),
            generation: Cell::new(inherited::generation()),
        })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("a Source's I/O object is taken only by into_inner")
    }

    /// The I/O object, if its fd is still this source's here: an error in a forked child that
    /// closed it (see [`inherited`]).
    pub(crate) fn io(&self) -> io::Result<&T> {
        self.check_here()?;
        Ok(self.get_ref())
    }

    /// The I/O object, deregistered from the hub (still in non-blocking mode).
    pub fn into_inner(mut self) -> T {
        self.registration.get_mut().release();
        self.io.take().expect("a Source's I/O object is taken only by into_inner")
    }

    /// An error if this source was inherited through fork into a child that closed its fd (it
    /// was not transferred): its number may name another file there by now.
    #[inline]
    fn check_here(&self) -> io::Result<()> {
        if self.generation.get() == inherited::generation() {
            return Ok(());
        }
        match inherited::was_kept(self.get_ref().as_raw_fd()) {
            Some(now) => {
                self.generation.set(now);
                Ok(())
            }
            None => Err(inherited::closed_error()),
        }
    }

    /// Runs `op` until it does not fail with `WouldBlock`, suspending the calling coroutine until
    /// the fd is readable between tries. `Interrupted` is retried too.
    #[track_caller]
    pub fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.retry(Direction::Read, None, op)
    }

    /// The same as [`read_with`](Self::read_with), waiting for writability.
    #[track_caller]
    pub fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.retry(Direction::Write, None, op)
    }

    /// [`read_with`](Self::read_with) that gives up at `deadline` with `WouldBlock`.
    #[track_caller]
    pub(crate) fn read_until<R>(
        &self,
        deadline: Option<Instant>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry(Direction::Read, deadline, op)
    }

    /// [`read_until`](Self::read_until) of a stream read into `len` bytes. `short_read_drains`:
    /// the fd's reads return short only when they empty its receive queue (TCP: a read copies
    /// every queued segment up to the end of the buffer); then, after a read shorter than `len`,
    /// the next one waits for the next readable edge first instead of trying a read that would
    /// fail with `WouldBlock`: one syscall fewer per message on a request/response connection
    /// (tokio does the same). `len` must be what one read can take (a vectored read, at most
    /// `sys::MAX_READ_BUFFERS` buffers' worth). A TCP read also stops at the mark of urgent data
    /// (`MSG_OOB`) with bytes after it queued: once the fd has reported urgent data (`EPOLLPRI`)
    /// this shortcut is off for it. Not for Unix sockets: their reads also stop early between
    /// two writers' bytes and at passed fds.
    pub(crate) fn read_stream_until(
        &self,
        deadline: Option<Instant>,
        len: usize,
        short_read_drains: bool,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if !short_read_drains {
            return self.read_until(deadline, op);
        }
        let registration = try_hub().and_then(|hub| {
            let registration = self.registration.borrow().of(hub).cloned()?;
            Some((hub, registration))
        });
        if let Some((hub, registration)) = &registration {
            // False: the last word on this fd was "nothing more" (WouldBlock, or a short read
            // below), and no edge has come since; `wait` returns at once if one has. A peer's
            // FIN reported with the data that the short read took makes no new edge: the read
            // that returns EOF must not wait (the sticky `read_closed`).
            if !registration.readable.get() && !registration.read_closed.get() {
                registration.wait(hub, Direction::Read, deadline)?;
            }
        }
        let n = self.retry(Direction::Read, deadline, op)?;
        if n > 0 && n < len {
            // No event can be processed between the read and here (the loop is not running), so
            // any byte that arrives after the read is a new edge that sets the flag again.
            if let Some(registration) =
                try_hub().and_then(|h| self.registration.borrow().of(h).cloned())
                && !registration.urgent.get()
            {
                registration.readable.set(false);
            }
        }
        Ok(n)
    }

    /// [`write_with`](Self::write_with) that gives up at `deadline` with `WouldBlock`.
    #[track_caller]
    pub(crate) fn write_until<R>(
        &self,
        deadline: Option<Instant>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.retry(Direction::Write, deadline, op)
    }

    /// Suspends the calling coroutine until the fd is (or was, since the last `WouldBlock`)
    /// readable.
    #[track_caller]
    pub fn readable(&self) -> io::Result<()> {
        let hub = hub("io::Source::readable");
        self.registration(hub)?.wait(hub, Direction::Read, None)
    }

    /// Suspends the calling coroutine until the fd is (or was, since the last `WouldBlock`)
    /// writable.
    #[track_caller]
    pub fn writable(&self) -> io::Result<()> {
        let hub = hub("io::Source::writable");
        self.registration(hub)?.wait(hub, Direction::Write, None)
    }

    /// The retry loop every I/O call uses.
    #[track_caller]
    fn retry<R>(
        &self,
        dir: Direction,
        deadline: Option<Instant>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        let io = self.io()?;
        loop {
            match op(io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_after_would_block(dir, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    #[track_caller]
    fn wait_after_would_block(&self, dir: Direction, deadline: Option<Instant>) -> io::Result<()> {
        let hub = hub(match dir {
            Direction::Read => "io::Source::read_with (a socket or pipe read)",
            Direction::Write => "io::Source::write_with (a socket or pipe write)",
        });
        let registration = self.registration(hub)?;
        // The syscall just said "not ready": forget the old edge and wait for a new one. No
        // event can be processed between the syscall and here (the loop is not running).
        registration.flag(dir).set(false);
        registration.wait(hub, dir, deadline)
    }

    /// This source's registration with `hub`, made on first use (or anew in a forked child).
    fn registration(&self, hub: &Hub) -> io::Result<Rc<Registration>> {
        let mut slot = self.registration.borrow_mut();
        if let Some(r) = slot.of(hub) {
            return Ok(r.clone());
        }
        let fd = self.io()?.as_raw_fd();
        let fresh = match hub.reactor.registration_of(fd) {
            Some(existing) => existing,
            None => hub.reactor.register(hub.id(), fd, true)?,
        };
        slot.hold(hub, fresh.clone());
        Ok(fresh)
    }
}

impl<T: AsRawFd> Drop for Source<T> {
    fn drop(&mut self) {
        // Inherited into a child that closed the fd: the number is not this source's any more
        // (another file may have it by now), so it must not be closed again.
        if self.io.is_some() && self.check_here().is_err() {
            std::mem::forget(self.io.take());
        }
    }
}

impl<T: AsRawFd> AsRawFd for Source<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

impl<T: AsRawFd + AsFd> AsFd for Source<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsRawFd + fmt::Debug> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("io", &self.io).finish()
    }
}

/// The fds a forked child of greenhub-ipc closed: a [`Source`] inherited through that fork
/// whose fd was not kept (transferred) must not use or close its number, which the child may
/// reuse for another file. Each such fork starts a *generation*; a source belongs to the one it
/// was made in, and joins a later one if its fd was kept into it. Processes that fork without
/// greenhub-ipc never start one (their children keep every fd, as fork does).
pub(crate) mod inherited {
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    static GENERATION: AtomicU64 = AtomicU64::new(0);
    /// The fds kept into the current generation.
    static KEPT: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

    pub(crate) fn generation() -> u64 {
        GENERATION.load(Ordering::Relaxed)
    }

    /// Starts a generation: every fd but stdio and `keep` has just been closed in this child.
    pub(crate) fn closed_all_but(keep: &[RawFd]) {
        let kept = [0, 1, 2].into_iter().chain(keep.iter().copied()).collect();
        *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = kept;
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// The current generation, if `fd` was kept into it.
    pub(crate) fn was_kept(fd: RawFd) -> Option<u64> {
        let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        kept.contains(&fd).then(generation)
    }

    pub(crate) fn closed_error() -> io::Error {
        io::Error::other(
            "this socket was inherited through fork and closed in this child (only the handles \
             given to start_process stay open there)",
        )
    }
}

/// Suspends the calling coroutine until `fd` is readable (gevent's `wait_read`).
///
/// Works on any pollable fd (pipe, socket, eventfd, tty, ...); several coroutines may wait on the
/// same fd. The fd is registered for the wait only, unless it already belongs to a [`Source`] of
/// this hub. A negative or closed fd gives an `io::Error` (EBADF); a regular file gives EPERM
/// (epoll cannot watch files; they are always "ready"). An fd closed while the wait is in
/// progress (by another coroutine, or by dropping the greenhub socket or pipe that owned it)
/// ends the wait with EBADF, at the latest when the hub next polls; the fd number, once reused
/// by another file, is registered afresh.
///
/// ```
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// greenhub::run(|| {
///     let (mut a, b) = UnixStream::pair().unwrap();
///     let fd = b.as_raw_fd();
///     let waiter = greenhub::spawn(move || greenhub::io::wait_readable(fd));
///     greenhub::yield_now();
///     a.write_all(b"x").unwrap();
///     waiter.join().unwrap().unwrap();
///     drop(b);
/// });
/// ```
#[track_caller]
pub fn wait_readable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Direction::Read, "io::wait_readable")
}

/// Suspends the calling coroutine until `fd` is writable (gevent's `wait_write`).
///
/// The same rules as [`wait_readable`].
#[track_caller]
pub fn wait_writable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Direction::Write, "io::wait_writable")
}

#[track_caller]
fn wait_fd(fd: RawFd, dir: Direction, what: &str) -> io::Result<()> {
    wait_fd_until(fd, dir == Direction::Read, None, what).map(drop)
}

/// Suspends the calling coroutine until `fd` is readable (`read`) or writable, or until
/// `deadline` passes: `Ok(false)` then. The rules of [`wait_readable`].
#[track_caller]
pub(crate) fn wait_fd_until(
    fd: RawFd,
    read: bool,
    deadline: Option<Instant>,
    what: &str,
) -> io::Result<bool> {
    let dir = if read { Direction::Read } else { Direction::Write };
    let hub = hub(what);
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    let registration = match hub.reactor.registration_of(fd) {
        Some(existing) => {
            // A `Source` sharing the fd may have consumed what its last edge announced without
            // reaching `WouldBlock`, leaving the flag set: trust it only if the fd is ready now.
            // (Clearing it is safe: any later readiness is a new edge.)
            let flag = existing.flag(dir);
            if flag.get() && !sys::ready_now(fd, dir == Direction::Read)? {
                flag.set(false);
            }
            existing
        }
        None => hub.reactor.register(hub.id(), fd, false)?,
    };
    match registration.wait(hub, dir, deadline) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false), // the deadline passed
        Err(e) => Err(e),
    }
}

/// The patch's wait on a socket or pipe it manages (feature `patch`), right after the call
/// failed with `EAGAIN`: [`wait_fd_until`], except that the registration is kept, owned, for
/// the next wait on `fd`, as a [`Source`] keeps its own. A wait then costs no `epoll_ctl` and no
/// check, as greenhub's own sockets do.
///
/// The patch owns the registration the way a `Source` owns its fd: its `close`, `dup2`, `dup3`
/// and `accept` hooks see every change of what the number names (through the libc calls) and
/// bump the number's `epoch` in the fd table. A kept registration of another epoch is retired
/// without touching epoll (the number may name another file by now) and a fresh one is made,
/// after `still_same` (the fd table's identity check) says the number still names the file the
/// patch knows; `Ok(None)` when it does not. Not covered: a number closed and reused by calls the
/// patch never sees (raw syscalls) after a wait on it, the same limit as for a `Source`.
#[cfg(feature = "patch")]
pub(crate) fn wait_fd_kept(
    fd: RawFd,
    read: bool,
    deadline: Option<Instant>,
    epoch: u64,
    still_same: impl FnOnce() -> bool,
) -> io::Result<Option<bool>> {
    let dir = if read { Direction::Read } else { Direction::Write };
    let hub = hub("patch");
    let reactor = &hub.reactor;
    let Ok(index) = usize::try_from(fd) else { return Ok(None) };
    let section = HubSection::enter(); // the kept table and the reactor's, mid-update
    let kept = reactor.kept.borrow().get(index).cloned().flatten();
    let registration = match kept {
        Some((r, e)) if e == epoch && !r.closed.get() => r,
        stale => {
            if let Some((old, _)) = stale {
                reactor.kept.borrow_mut()[index] = None;
                reactor.release(&old);
                if !old.closed.get() {
                    reactor.retire(&old);
                }
            }
            if !still_same() {
                return Ok(None);
            }
            let fresh = match reactor.registration_of(fd) {
                Some(existing) => existing,
                None => reactor.register(hub.id(), fd, true)?,
            };
            reactor.adopt(&fresh);
            let mut kept = reactor.kept.borrow_mut();
            if kept.len() <= index {
                kept.resize(index + 1, None);
            }
            kept[index] = Some((fresh.clone(), epoch));
            fresh
        }
    };
    drop(section); // (the wait's own bookkeeping has its sections: see `WaitList`)
    // The call just said "not ready": forget the old edge and wait for a new one (as a
    // `Source` does after `WouldBlock`; no event is processed in between).
    registration.flag(dir).set(false);
    match registration.wait(hub, dir, deadline) {
        Ok(()) => Ok(Some(true)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(false)),
        Err(e) => Err(e),
    }
}

/// Whether the registration this thread's hub keeps for `fd` (at the fd table's `epoch`) has
/// seen the fd's read side closed: the sticky `read_closed` (a hang-up or a shutdown of the
/// receive side, or an error at some point), for the patch, which then asks the kernel which.
#[cfg(feature = "patch")]
pub(crate) fn kept_read_closed(fd: RawFd, epoch: u64) -> bool {
    let Some(hub) = try_hub() else { return false };
    let Ok(index) = usize::try_from(fd) else { return false };
    let _section = HubSection::enter();
    let kept = hub.reactor.kept.borrow();
    matches!(kept.get(index), Some(Some((r, e))) if *e == epoch && !r.closed.get() && r.read_closed.get())
}

/// The patch's `close` (or `dup2` over) `fd` on this thread, before the real call: the hub lets
/// go of the registration it kept for `fd`, deregistering it while the fd is still open (unless
/// a waiter still holds it: it is then checked before the next poll, and wakes with `EBADF`).
///
/// In a child made by a plain `fork` from a coroutine (not `start_process`, which gives the
/// child a fresh hub), the reactor is a copy over the parent's epoll instance, where a
/// registration is the parent's too: deregistering it there left the parent's next wait on the
/// fd without events, forever (a probe's child closed an inherited socket before `_exit`). Such
/// a child lets go of nothing.
#[cfg(feature = "patch")]
pub(crate) fn forget_kept(fd: RawFd) {
    let Some(hub) = try_hub() else { return };
    if hub.reactor.pid != std::process::id() {
        return; // a forked copy: the epoll instance and its registrations are the parent's
    }
    let Ok(index) = usize::try_from(fd) else { return };
    let _section = HubSection::enter();
    let taken = hub.reactor.kept.borrow_mut().get_mut(index).and_then(Option::take);
    let Some((registration, _)) = taken else { return };
    hub.reactor.release(&registration);
    drop(registration);
}
