//! `waitpid`, `wait4`, `waitid`: a child's exit waited for through its pidfd, so the calling
//! coroutine alone waits.

use std::ffi::c_int;
use std::time::Duration;

use super::active;
use super::blocking_call::{Dir, fail, guard, interrupted_errno, wait};
use super::real;
use crate::coroutine;
use crate::hub::try_hub;

/// Whom a wait names.
#[derive(Clone, Copy, Debug)]
pub(super) enum Child {
    /// One process by pid.
    Pid(libc::pid_t),
    /// The process behind a pidfd.
    Pidfd(c_int),
    /// Any child, or a process group: no pidfd can name it.
    Any,
}

/// `waitpid` / `wait4` / `waitid` without WNOHANG, in a coroutine: first the real call with
/// WNOHANG, which answers at once what libc would answer at once (ECHILD for a process that is
/// not our child, EINVAL for bad options, a child that has changed state already). Then, for a
/// wait for one child's exit, wait for its pidfd to become readable (it has exited) and reap
/// with the real call; for any other wait (any child, a process group, stops or continues),
/// poll with WNOHANG ([`poll_child`]). `reap(nohang)` makes the real call, with WNOHANG added
/// when `nohang`, and returns whether it found a child.
pub(super) fn wait_child(
    child: Child,
    options: c_int,
    mut reap: impl FnMut(bool) -> (c_int, bool),
) -> c_int {
    if options & libc::WNOHANG != 0 || !active() {
        return reap(false).0;
    }
    guard(-1, || {
        if let Child::Pidfd(fd) = child
            && nonblocking(fd)
        {
            return reap(false).0; // the kernel never waits: EAGAIN while the child runs
        }
        let (result, found) = reap(true);
        if result < 0 || found {
            return result;
        }
        let only_exits = options & (libc::WUNTRACED | libc::WCONTINUED) == 0;
        let pidfd = match child {
            Child::Pidfd(fd) if only_exits => Some((fd, false)),
            Child::Pid(pid) if pid > 0 && only_exits => pidfd_open(pid).map(|fd| (fd, true)),
            _ => None,
        };
        let Some((fd, owned)) = pidfd else { return poll_child(&mut reap) };
        let waited = wait(fd, Dir::Read, None);
        if owned {
            // SAFETY: the pidfd was opened above and belongs to this call only.
            unsafe { real::close(fd) };
        }
        match waited {
            Ok(_) => reap(false).0,
            Err(e) => fail(e) as c_int,
        }
    })
}

/// The fallback: sleep cooperatively (1 ms, doubling to 50 ms), then try with WNOHANG again.
fn poll_child(reap: &mut impl FnMut(bool) -> (c_int, bool)) -> c_int {
    let hub = try_hub().expect("inside a coroutine");
    let mut pause = Duration::from_millis(1);
    loop {
        if let Err(why) = coroutine::without_unwinding(hub, || crate::sleep(pause)) {
            return fail(interrupted_errno(why)) as c_int;
        }
        pause = (pause * 2).min(Duration::from_millis(50));
        let (result, found) = reap(true);
        if result < 0 || found {
            return result;
        }
    }
}

/// Whether `fd` is open with O_NONBLOCK (a pidfd opened with `PIDFD_NONBLOCK`, say).
fn nonblocking(fd: c_int) -> bool {
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

fn pidfd_open(pid: libc::pid_t) -> Option<c_int> {
    // SAFETY: pidfd_open takes a pid and flags; no memory preconditions.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    c_int::try_from(fd).ok().filter(|&fd| fd >= 0)
}
