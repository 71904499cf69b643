//! `splice` and `sendfile`: a patched call between two fds, each of which may make it wait
//! (the pipe end for room or data, the socket for readiness).
//!
//! Guarantee: the call is made as on the blocking fds the program believes it has; a wait on
//! either end goes through the hub. Not guaranteed: that a polled end is not waited on first
//! where the kernel would answer at once.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use super::blocking_call::{
    Dir, POLLED, WAITS, blocking_poll, entry_for, entry_or_twin, fail, guard, interrupted_errno,
    ready_now, socket_deadline, wait, wait_managed,
};
use super::fdtable::{self, Entry, Kind};
use super::real::errno;
use super::{INSTALLED, active};
use crate::coroutine;
use crate::hub::try_hub;

/// One end of a call that moves data from one fd to another.
#[derive(Clone, Copy, Debug)]
pub(super) struct End {
    pub(super) fd: c_int,
    pub(super) dir: Dir,
    /// The caller asked that this end never wait if it is a pipe (`SPLICE_F_NONBLOCK`).
    pub(super) pipe_nonblocking: bool,
}

impl End {
    /// Whether the caller wants this end (whose entry is `entry`) never to wait.
    fn dont_wait(&self, entry: Option<Entry>) -> bool {
        self.pipe_nonblocking && entry.is_none_or(|e| e.kind == Kind::Fifo)
    }
}

/// A call that moves data between two fds (`splice`, `sendfile`): [`io`] for two fds. A shared
/// end is waited on before the call (as [`polled`] does); on `EAGAIN`, the call waits for the
/// end the patch made non-blocking that is not ready, and tries again ([`blame`]).
pub(super) fn transfer(ends: [End; 2], mut op: impl FnMut() -> isize) -> isize {
    if !active() {
        return transfer_outside_hub(ends, op);
    }
    guard(-1, || {
        let entries = ends.map(|end| entry_for(end.fd));
        let deadlines = deadlines(&ends, &entries);
        for ((end, entry), deadline) in ends.iter().zip(entries).zip(deadlines) {
            if entry.is_some_and(|e| e.mode == POLLED)
                && !end.dont_wait(entry)
                && !ready_now(end.fd, end.dir)
            {
                match wait(end.fd, end.dir, deadline) {
                    Ok(true) => {}
                    Ok(false) => return fail(libc::EAGAIN),
                    Err(e) => return fail(e),
                }
            }
        }
        loop {
            let result = op();
            if result >= 0 || errno() != libc::EAGAIN {
                return result;
            }
            let waited = match blame(&ends, &entries) {
                Blame::End(i, entry) => wait_for_end(ends[i], entry, deadlines[i]),
                Blame::Caller => Err(libc::EAGAIN),
                Blame::Neither => pause(),
            };
            if let Err(e) = waited {
                return fail(e);
            }
        }
    })
}

/// [`wait_managed`] for one end of a [`transfer`]: `Err(EAGAIN)` when its socket timeout
/// expired or the entry no longer describes the fd (then it is dropped).
fn wait_for_end(end: End, entry: Entry, deadline: Option<Instant>) -> Result<(), c_int> {
    match wait_managed(end.fd, entry, end.dir, deadline)? {
        Some(true) => Ok(()),
        Some(false) => Err(libc::EAGAIN),
        None => {
            fdtable::clear(end.fd);
            Err(libc::EAGAIN)
        }
    }
}

/// [`transfer`] outside a coroutine: libc's call; only an `EAGAIN` from an end the patch made
/// non-blocking behind the program's back is turned back into a blocking wait.
fn transfer_outside_hub(ends: [End; 2], mut op: impl FnMut() -> isize) -> isize {
    let result = op();
    let installed = INSTALLED.load(std::sync::atomic::Ordering::Relaxed);
    if result >= 0 || !installed || errno() != libc::EAGAIN {
        return result;
    }
    guard(-1, || {
        let entries = ends.map(|end| entry_or_twin(end.fd));
        let deadlines = deadlines(&ends, &entries);
        loop {
            match blame(&ends, &entries) {
                Blame::End(i, entry) if entry.still_describes(ends[i].fd) => {
                    if !blocking_poll(ends[i].fd, ends[i].dir, deadlines[i]) {
                        return fail(libc::EAGAIN);
                    }
                }
                Blame::Neither => std::thread::sleep(PAUSE),
                _ => return fail(libc::EAGAIN),
            }
            let result = op();
            if result >= 0 || errno() != libc::EAGAIN {
                return result;
            }
        }
    })
}

/// The socket-timeout deadlines of both ends, for a call starting now.
fn deadlines(ends: &[End; 2], entries: &[Option<Entry>; 2]) -> [Option<Instant>; 2] {
    [0, 1].map(|i| entries[i].and_then(|e| socket_deadline(ends[i].fd, e, ends[i].dir)))
}

/// Whom a two-fd call's `EAGAIN` is for.
enum Blame {
    /// End `i`, which the patch made non-blocking, is not ready: wait for it.
    End(usize, Entry),
    /// An end the program made non-blocking itself (or a shared one) may have said it: as libc.
    Caller,
    /// Every end is the patch's and ready again (it changed in between): try again soon.
    Neither,
}

fn blame(ends: &[End; 2], entries: &[Option<Entry>; 2]) -> Blame {
    for (i, (end, entry)) in ends.iter().zip(entries).enumerate() {
        if let Some(e) = entry.filter(|e| e.mode == WAITS)
            && !end.dont_wait(*entry)
            && !ready_now(end.fd, end.dir)
        {
            return Blame::End(i, e);
        }
    }
    let the_patchs = |(end, entry): (&End, &Option<Entry>)| {
        !end.dont_wait(*entry) && entry.is_some_and(|e| e.mode == WAITS || e.kind == Kind::Other)
    };
    if ends.iter().zip(entries).all(the_patchs) { Blame::Neither } else { Blame::Caller }
}

/// How long [`Blame::Neither`] pauses before the call is tried again.
const PAUSE: Duration = Duration::from_millis(1);

/// A cooperative [`PAUSE`]; `Err(errno)` when a timeout or cancel cut it short.
fn pause() -> Result<(), c_int> {
    let hub = try_hub().expect("a patched call waits only inside a coroutine");
    coroutine::without_unwinding(hub, || crate::sleep(PAUSE)).map_err(interrupted_errno)
}
