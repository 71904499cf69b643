//! I/O readiness: the hub's reactor, [`Source`] (a non-blocking fd registered with the hub), and
//! [`wait_readable`] / [`wait_writable`] for any fd (gevent's `wait_read` / `wait_write`).
//!
//! Guarantee: every I/O call is the same retry loop, "try the syscall; on `WouldBlock` wait for
//! readiness; try again", so a coroutine never blocks the thread on a registered fd and never
//! misses an edge (mio is edge-triggered: the loop drains to `WouldBlock` before it waits).
//! Several coroutines may wait on one fd. Not guaranteed: which of them gets the data first.
//! Linux: epoll through mio.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::hub::{Hub, HubId, hub, try_hub};
use crate::sync::waitlist::WaitList;
use crate::sys;
use crate::task::WaitReason;

/// The token of the eventfd that other threads write to wake the loop.
const WAKER: Token = Token(usize::MAX);

/// The token of the timerfd armed at the next timer's deadline.
const TIMER: Token = Token(usize::MAX - 1);

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

/// The hub's side of I/O: the epoll instance and what each registration's token means.
pub(crate) struct Reactor {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    registrations: RefCell<Slab<Weak<Registration>>>,
    by_fd: RefCell<HashMap<RawFd, Weak<Registration>>>,
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
    pub(crate) fn new(waker_fd: RawFd) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        poll.registry().register(&mut SourceFd(&waker_fd), WAKER, Interest::READABLE)?;
        let timer = sys::timerfd()?;
        poll.registry().register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        Ok(Reactor {
            timer,
            armed: Cell::new(None),
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_PER_POLL)),
            registrations: RefCell::new(Slab::new()),
            by_fd: RefCell::new(HashMap::new()),
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
        let timeout = match wait {
            Wait::Poll => Some(Duration::ZERO),
            Wait::Forever => None,
            Wait::Until(at) => self.timeout_until(at),
        };
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
            let registration =
                self.registrations.borrow().get(event.token().0).and_then(Weak::upgrade);
            let Some(registration) = registration else { continue };
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

    /// Registers `fd` (edge-triggered, both directions). Registering an fd adds it to epoll,
    /// which reports its current readiness at the next poll.
    fn register(&self, hub_id: HubId, fd: RawFd) -> io::Result<Rc<Registration>> {
        let mut registrations = self.registrations.borrow_mut();
        let entry = registrations.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll.borrow().registry().register(&mut SourceFd(&fd), Token(key), interest)?;
        let registration = Rc::new(Registration {
            hub_id,
            key,
            fd,
            readable: Cell::new(false),
            writable: Cell::new(false),
            readers: WaitList::new(),
            writers: WaitList::new(),
        });
        entry.insert(Rc::downgrade(&registration));
        self.by_fd.borrow_mut().insert(fd, Rc::downgrade(&registration));
        Ok(registration)
    }

    fn deregister(&self, registration: &Registration) {
        let fd = registration.fd;
        // An fd closed behind our back has already left epoll; ignore that error.
        let _ = self.poll.borrow().registry().deregister(&mut SourceFd(&fd));
        self.registrations.borrow_mut().try_remove(registration.key);
        let mut by_fd = self.by_fd.borrow_mut();
        if by_fd.get(&fd).is_some_and(|w| w.strong_count() == 0) {
            by_fd.remove(&fd);
        }
    }

    /// The live registration of `fd` in this hub, if any.
    fn registration_of(&self, fd: RawFd) -> Option<Rc<Registration>> {
        self.by_fd.borrow().get(&fd).and_then(Weak::upgrade)
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
    fd: RawFd,
    readable: Cell<bool>,
    writable: Cell<bool>,
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

    /// Suspends until the fd is ready in `dir` (returns at once if already marked ready).
    fn wait(&self, hub: &Hub, dir: Direction) {
        let (list, reason) = match dir {
            Direction::Read => (&self.readers, WaitReason::Readable(self.fd)),
            Direction::Write => (&self.writers, WaitReason::Writable(self.fd)),
        };
        let flag = self.flag(dir);
        let _counted = WaiterCount::new(hub);
        list.wait_until(reason, None, || flag.get().then_some(()));
    }
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

/// A non-blocking I/O object registered with the current hub: the building block of
/// [`net`](crate::net) and of greenhub-ipc's pipes.
///
/// `Source` owns `T` and puts its fd in non-blocking mode. [`read_with`](Self::read_with) and
/// [`write_with`](Self::write_with) run the retry loop around any syscall. Registration happens on
/// first wait, with whichever hub is current then, so a `Source` inherited through fork is
/// registered afresh with the child's hub (the parent's registration is left untouched).
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
    // Field order matters: the registration is dropped (deregistered) before `io` closes the fd.
    registration: RefCell<Option<Rc<Registration>>>,
    io: T,
}

impl<T: AsRawFd> Source<T> {
    /// Wraps `io`, putting its fd in non-blocking mode.
    pub fn new(io: T) -> io::Result<Source<T>> {
        sys::set_nonblocking(io.as_raw_fd())?;
        Ok(Source { registration: RefCell::new(None), io })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The I/O object, deregistered from the hub.
    pub fn into_inner(self) -> T {
        let Source { registration, io } = self;
        drop(registration);
        io
    }

    /// Runs `op` until it does not fail with `WouldBlock`, suspending the calling coroutine until
    /// the fd is readable between tries. `Interrupted` is retried too.
    pub fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.retry(Direction::Read, op)
    }

    /// The same as [`read_with`](Self::read_with), waiting for writability.
    pub fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.retry(Direction::Write, op)
    }

    /// Suspends the calling coroutine until the fd is (or was, since the last `WouldBlock`)
    /// readable.
    pub fn readable(&self) -> io::Result<()> {
        let hub = hub("io::Source::readable");
        self.registration(hub)?.wait(hub, Direction::Read);
        Ok(())
    }

    /// Suspends the calling coroutine until the fd is (or was, since the last `WouldBlock`)
    /// writable.
    pub fn writable(&self) -> io::Result<()> {
        let hub = hub("io::Source::writable");
        self.registration(hub)?.wait(hub, Direction::Write);
        Ok(())
    }

    /// The retry loop every I/O call uses.
    fn retry<R>(&self, dir: Direction, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        loop {
            match op(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait_after_would_block(dir)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    fn wait_after_would_block(&self, dir: Direction) -> io::Result<()> {
        let hub = hub("io");
        let registration = self.registration(hub)?;
        // The syscall just said "not ready": forget the old edge and wait for a new one. No
        // event can be processed between the syscall and here (the loop is not running).
        registration.flag(dir).set(false);
        registration.wait(hub, dir);
        Ok(())
    }

    /// This source's registration with `hub`, made on first use (or anew in a forked child).
    fn registration(&self, hub: &Hub) -> io::Result<Rc<Registration>> {
        let mut slot = self.registration.borrow_mut();
        if let Some(r) = slot.as_ref().filter(|r| r.hub_id == hub.id()) {
            return Ok(r.clone());
        }
        let fd = self.io.as_raw_fd();
        let fresh = match hub.reactor.registration_of(fd) {
            Some(existing) => existing,
            None => hub.reactor.register(hub.id(), fd)?,
        };
        *slot = Some(fresh.clone());
        Ok(fresh)
    }
}

impl<T: AsRawFd> AsRawFd for Source<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl<T: AsRawFd + fmt::Debug> fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("io", &self.io).finish()
    }
}

/// Suspends the calling coroutine until `fd` is readable (gevent's `wait_read`).
///
/// Works on any pollable fd (pipe, socket, eventfd, tty, ...); several coroutines may wait on the
/// same fd. The fd is registered for the wait only, unless it already belongs to a [`Source`] of
/// this hub. A negative or closed fd gives an `io::Error` (EBADF); a regular file gives EPERM
/// (epoll cannot watch files; they are always "ready").
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
pub fn wait_readable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Direction::Read, "io::wait_readable")
}

/// Suspends the calling coroutine until `fd` is writable (gevent's `wait_write`).
///
/// The same rules as [`wait_readable`].
pub fn wait_writable(fd: RawFd) -> io::Result<()> {
    wait_fd(fd, Direction::Write, "io::wait_writable")
}

fn wait_fd(fd: RawFd, dir: Direction, what: &str) -> io::Result<()> {
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
        None => hub.reactor.register(hub.id(), fd)?,
    };
    registration.wait(hub, dir);
    Ok(())
}
