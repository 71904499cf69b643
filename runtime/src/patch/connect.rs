//! `connect` on a socket the patch manages: start it, wait until writable, collect the outcome,
//! as the kernel's blocking connect does.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use super::active;
use super::blocking_call::{
    Dir, WAITS, blocking_poll, entry_for, fail, guard, interrupted_errno, socket_deadline, wait,
};
use super::fdtable::{self, Entry};
use super::real::{self, errno};
use crate::coroutine;
use crate::hub::try_hub;

/// `connect`: on a socket the patch manages, start it, wait until writable, and collect the
/// outcome with the same call again, as the kernel's blocking connect does: a second `connect`
/// on a socket whose connect finished returns 0 (or EISCONN) on success and the error
/// otherwise, and leaves the socket unconnected after a failure, so that the program may
/// connect it again (`getsockopt(SO_ERROR)` would leave it "connecting": the next connect then
/// fails with ECONNABORTED). `op` makes the caller's call.
pub(super) fn connect(fd: c_int, mut op: impl FnMut() -> c_int) -> c_int {
    let inside = active();
    guard(-1, || {
        let entry = if inside { entry_for(fd) } else { fdtable::get(fd) };
        let Some(entry) = entry.filter(|e| e.mode == WAITS) else { return op() };
        let result = op();
        if result == 0 {
            return 0;
        }
        match errno() {
            libc::EINPROGRESS => {}
            libc::EAGAIN if is_unix_connection(fd) => {
                return connect_when_there_is_room(fd, entry, inside, op);
            }
            _ => return result,
        }
        let deadline = socket_deadline(fd, entry, Dir::Write);
        loop {
            let ready = if inside {
                wait(fd, Dir::Write, deadline)
            } else {
                Ok(blocking_poll(fd, Dir::Write, deadline))
            };
            match ready {
                Ok(true) => {}
                Ok(false) => return fail(libc::EINPROGRESS) as c_int, // as Linux on SO_SNDTIMEO
                Err(e) => return fail(e) as c_int,
            }
            match op() {
                0 => return 0,
                _ => match errno() {
                    libc::EISCONN => return 0,
                    libc::EALREADY | libc::EINPROGRESS => {} // not finished: wait again
                    e => return fail(e) as c_int,
                },
            }
        }
    })
}

/// The longest pause between two tries of a Unix connect to a full backlog.
const ROOM_PAUSE_MAX: Duration = Duration::from_millis(50);

/// A connect to a Unix listener whose backlog is full: the non-blocking connect fails with
/// EAGAIN and, unlike TCP, leaves nothing in progress (epoll never says when room appears),
/// where the kernel's blocking connect waits for room for up to the socket's `SO_SNDTIMEO`
/// (then EAGAIN). So the connect is tried again after pauses of 1 ms, doubling to
/// [`ROOM_PAUSE_MAX`] (cooperative sleeps inside a coroutine, the thread's outside), until it
/// goes through, fails otherwise, or the send timeout passes. A try that fails leaves the
/// socket as it was.
fn connect_when_there_is_room(
    fd: c_int,
    entry: Entry,
    inside: bool,
    mut op: impl FnMut() -> c_int,
) -> c_int {
    let deadline = socket_deadline(fd, entry, Dir::Write);
    let mut pause = Duration::from_millis(1);
    loop {
        let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return fail(libc::EAGAIN) as c_int; // SO_SNDTIMEO passed, as the kernel's
        }
        let nap = left.map_or(pause, |left| left.min(pause));
        if inside {
            let hub = try_hub().expect("inside a coroutine");
            if let Err(why) = coroutine::without_unwinding(hub, || crate::sleep(nap)) {
                return fail(interrupted_errno(why)) as c_int;
            }
        } else {
            std::thread::sleep(nap);
        }
        pause = (pause * 2).min(ROOM_PAUSE_MAX);
        let result = op();
        if result == 0 || errno() != libc::EAGAIN {
            return result;
        }
    }
}

/// Whether `fd` is a Unix socket whose connect waits for room in a backlog (stream or
/// seqpacket: their EAGAIN says the backlog is full).
fn is_unix_connection(fd: c_int) -> bool {
    let option = |name: c_int| {
        let mut value: c_int = 0;
        let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid out-pointers of the sizes given.
        let rc = unsafe {
            real::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len)
        };
        (rc == 0).then_some(value)
    };
    option(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && matches!(option(libc::SO_TYPE), Some(libc::SOCK_STREAM | libc::SOCK_SEQPACKET))
}
