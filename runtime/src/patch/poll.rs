//! `poll`: the fds it names waited on through the hub, or a cooperative sleep for a `poll` of
//! no fds.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use libc::pollfd;

use super::active;
use super::blocking_call::{Dir, fail, guard, interrupted_errno, wait};
use super::real;
use crate::coroutine;
use crate::hub::try_hub;

/// `poll`: try without waiting; else watch the fds with a private epoll instance, whose own
/// readiness the coroutine waits for through the hub.
///
/// # Safety
/// `fds` points to `nfds` live pollfds (as for libc's poll).
pub(super) unsafe fn poll(fds: *mut pollfd, nfds: libc::nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the caller's contract.
    let now = || unsafe { real::poll(fds, nfds, 0) };
    if timeout == 0 || !active() {
        // SAFETY: the caller's contract.
        return unsafe { real::poll(fds, nfds, timeout) };
    }
    guard(-1, || {
        let ready = now();
        if ready != 0 {
            return ready;
        }
        let wanted = u64::try_from(timeout).ok().map(Duration::from_millis);
        if nfds == 0 {
            // C's portable sleep, `poll(NULL, 0, ms)`: nothing to watch, and `fds` may be null.
            return poll_sleep(wanted.unwrap_or(Duration::MAX));
        }
        let deadline = wanted.and_then(|d| Instant::now().checked_add(d));
        // SAFETY: the caller's contract: `fds` holds `nfds` pollfds, and `nfds` is not 0, so
        // `fds` is not null (else the first try failed with EFAULT and returned).
        let set = unsafe { std::slice::from_raw_parts(fds, nfds as usize) };
        let Some(epoll) = Watch::new(set) else {
            // SAFETY: the caller's contract.
            return unsafe { real::poll(fds, nfds, timeout) };
        };
        loop {
            match wait(epoll.fd, Dir::Read, deadline) {
                Ok(true) => match now() {
                    0 => continue, // the event was consumed by someone else meanwhile
                    n => return n,
                },
                Ok(false) => return 0,
                Err(e) => return fail(e) as c_int,
            }
        }
    })
}

/// A `poll` of no fds for `d` (forever for `Duration::MAX`): a greenhub sleep, after which it
/// returns 0 as libc's does. A timeout or cancel makes it fail with `ETIMEDOUT` / `ECANCELED`,
/// as a poll of a set does.
fn poll_sleep(d: Duration) -> c_int {
    let hub = try_hub().expect("a patched call waits only inside a coroutine");
    match coroutine::without_unwinding(hub, || crate::sleep(d)) {
        Ok(()) => 0,
        Err(why) => fail(interrupted_errno(why)) as c_int,
    }
}

/// A private epoll instance watching a poll set (level-triggered, the poll events asked for).
struct Watch {
    fd: c_int,
}

impl Watch {
    fn new(set: &[pollfd]) -> Option<Watch> {
        // SAFETY: epoll_create1 has no memory preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let watch = Watch { fd };
        for (fd, events) in Watch::events(set) {
            let mut event = libc::epoll_event { events, u64: 0 };
            // SAFETY: `event` is a live epoll_event. A regular file gives EPERM (poll calls it
            // always ready, so the first try already returned).
            unsafe { libc::epoll_ctl(watch.fd, libc::EPOLL_CTL_ADD, fd, &mut event) };
        }
        Some(watch)
    }

    /// The epoll events of each fd of `set`, once per fd: an fd listed twice is watched for
    /// the union of its entries' events (a second `EPOLL_CTL_ADD` of it would fail with
    /// EEXIST). Every poll(2) event bit has the epoll one of the same value.
    fn events(set: &[pollfd]) -> Vec<(c_int, u32)> {
        const EVENTS: c_int = libc::EPOLLIN
            | libc::EPOLLPRI
            | libc::EPOLLOUT
            | libc::EPOLLRDNORM
            | libc::EPOLLRDBAND
            | libc::EPOLLWRNORM
            | libc::EPOLLWRBAND
            | libc::EPOLLRDHUP;
        let mut events: Vec<(c_int, u32)> = set
            .iter()
            .filter(|p| p.fd >= 0)
            .map(|p| (p.fd, (p.events as u16 as u32) & EVENTS as u32))
            .collect();
        events.sort_unstable_by_key(|&(fd, _)| fd);
        events.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 |= later.1;
            }
            same
        });
        events
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: the epoll fd belongs to this value only.
        unsafe { real::close(self.fd) };
    }
}
