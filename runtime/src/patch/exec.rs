//! Fds given to another program. A description the patch made non-blocking must not reach a
//! program that way: the program expects the blocking fd it was given. So before an `exec` (the
//! exec hooks: usually in a child between `fork` and `exec`) and before a `posix_spawn` (its
//! hooks, in the parent), every fd that will be open in the new program is *handed over*
//! ([`hand_over`]): the patch's O_NONBLOCK comes off its description, and the table records the
//! description as shared from then on (polled: waited on, never switched to non-blocking again).
//!
//! Guarantee: a description the program made non-blocking itself keeps its flag; the exec path
//! neither allocates nor takes a lock (a threaded parent's locks may stay held forever in its
//! forked child). Not guaranteed: that the parent learns what a child it forked hands over
//! before its `exec` (the table is the child's copy): another fd the parent keeps on that
//! description still has its managed entry, though the description is blocking now, so a call
//! on it in a coroutine blocks the hub until it completes. (`posix_spawn`, std's usual way, runs
//! the hand-over in the parent, which has no such gap.)

use std::ffi::c_int;

use super::blocking_call::{WAITS, guard, managed_twin, same_description};
use super::fdtable::{self, Entry, Kind, Mode};
use super::{is_installed, real};

/// Before an `exec` of this process: hands over every fd that stays open across it. Runs in a
/// forked child: allocates nothing.
pub(super) fn before_exec() {
    if is_installed() {
        guard((), || each_open_fd(|fd| hand_over_if_inherited(fd, false)));
    }
}

/// Before a `posix_spawn` (in the parent): hands over every fd the new program inherits (those
/// it is given with `posix_spawn_file_actions_adddup2` are handed over by that hook: [`giving`]).
pub(super) fn before_spawn() {
    if is_installed() {
        guard((), || each_open_fd(|fd| hand_over_if_inherited(fd, true)));
    }
}

/// `posix_spawn_file_actions_adddup2(actions, fd, ..)`: `fd` goes to the program to be spawned.
pub(super) fn giving(fd: c_int) {
    if is_installed() {
        guard((), || hand_over(fd, true));
    }
}

/// `sendmsg(.., msg, ..)`: every fd `msg` passes with `SCM_RIGHTS` goes to whoever reads the
/// socket, another program as likely as not, which expects the blocking fd this one believes it
/// has: each is handed over first, as a spawned program's are.
///
/// # Safety
/// `msg` is the caller's live msghdr (sendmsg's contract: its control buffer holds
/// `msg_controllen` bytes).
pub(super) unsafe fn sending(msg: &libc::msghdr) {
    if is_installed() && !msg.msg_control.is_null() {
        // SAFETY: the caller's contract.
        guard((), || unsafe { each_fd_passed(msg, |fd| hand_over(fd, true)) });
    }
}

/// `recvmsg(.., msg, ..)` returned: every fd it received with `SCM_RIGHTS` is new here (its
/// number's old entry goes), and its description is shared with the sender: it is polled,
/// never switched to non-blocking. An O_NONBLOCK it came with is the sender's own: its calls go
/// straight through.
///
/// # Safety
/// `msg` is the caller's live msghdr, filled in by a successful recvmsg (its `msg_controllen`
/// says how much of the control buffer the kernel wrote).
pub(super) unsafe fn received(msg: &libc::msghdr) {
    if is_installed() && !msg.msg_control.is_null() {
        // SAFETY: the caller's contract.
        guard((), || unsafe { each_fd_passed(msg, shared_from_now_on) })
    }
}

/// A received fd: a new number, on a description another process may share.
fn shared_from_now_on(fd: c_int) {
    fdtable::clear(fd);
    let Some((kind, inode)) = fdtable::identify(fd) else { return };
    if kind == Kind::Other {
        return; // files never block
    }
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 {
        return;
    }
    let user_nonblocking = flags & libc::O_NONBLOCK != 0;
    let timeouts = kind == Kind::Socket; // unknown: a wait asks
    fdtable::set(fd, Entry { mode: Mode::Polled { user_nonblocking }, kind, inode, timeouts });
}

/// Calls `f` on every fd of the `SCM_RIGHTS` control messages of `msg`.
///
/// # Safety
/// `msg`'s control buffer is live and holds `msg_controllen` bytes of control messages.
unsafe fn each_fd_passed(msg: &libc::msghdr, mut f: impl FnMut(c_int)) {
    // SAFETY: the caller's contract: CMSG_FIRSTHDR and CMSG_NXTHDR stay within the
    // `msg_controllen` bytes of the control buffer (they return null past its end), and a
    // header they return is a whole `cmsghdr` inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: see above.
        let header = unsafe { std::ptr::read_unaligned(cmsg) };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_DATA of a header inside the buffer; `CMSG_LEN(0)` is the header's
            // own length, so the ints counted below lie after it, within both the `cmsg_len`
            // bytes the message says it has and the control buffer.
            let (data, start) = unsafe { (libc::CMSG_DATA(cmsg), libc::CMSG_LEN(0) as usize) };
            // Never past the buffer, whatever length a caller's header claims.
            let end = msg.msg_control as usize + msg.msg_controllen;
            let len = (header.cmsg_len as usize).min(end.saturating_sub(cmsg as usize));
            let count = len.saturating_sub(start) / size_of::<c_int>();
            for i in 0..count {
                // SAFETY: the i-th int of the message's data, within its length and the buffer.
                f(unsafe { std::ptr::read_unaligned(data.cast::<c_int>().add(i)) });
            }
        }
        // SAFETY: see above.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

fn hand_over_if_inherited(fd: c_int, may_allocate: bool) {
    // SAFETY: F_GETFD takes no argument and has no memory preconditions.
    let fd_flags = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
    if fd_flags >= 0 && fd_flags & libc::FD_CLOEXEC == 0 {
        hand_over(fd, may_allocate);
    }
}

/// `fd`'s description goes to another program, and is shared from now on: if the patch set its
/// O_NONBLOCK, it comes off; `fd`, and every fd the table knows on the same description, is
/// polled from now on. `may_allocate` is false between `fork` and `exec`: then an fd whose
/// table chunk does not exist yet gets no entry (the process image is about to go anyway).
fn hand_over(fd: c_int, may_allocate: bool) {
    let Some((kind, inode)) = fdtable::identify(fd) else { return };
    if !matches!(kind, Kind::Socket | Kind::Fifo) {
        return; // terminals are polled already; files never block
    }
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 {
        return;
    }
    let own = fdtable::get(fd).filter(|e| (e.kind, e.inode) == (kind, inode));
    let the_patchs = flags & libc::O_NONBLOCK != 0
        && match own {
            Some(entry) => entry.mode == WAITS,
            None => managed_twin(fd, kind, inode, flags).is_some(),
        };
    if the_patchs {
        // SAFETY: F_SETFL takes an int; no memory preconditions.
        unsafe { real::fcntl(fd, libc::F_SETFL, (flags & !libc::O_NONBLOCK) as usize) };
    }
    let user_nonblocking = flags & libc::O_NONBLOCK != 0 && !the_patchs;
    let timeouts = kind == Kind::Socket; // unknown: a wait asks
    let shared = Entry { mode: Mode::Polled { user_nonblocking }, kind, inode, timeouts };
    if may_allocate {
        fdtable::set(fd, shared);
    } else {
        fdtable::update(fd, shared);
    }
    if the_patchs {
        let polled = Entry { mode: Mode::Polled { user_nonblocking: false }, ..shared };
        fdtable::each(|other, entry| {
            if entry.mode == WAITS && same_description(fd, kind, inode, flags, other, entry) {
                fdtable::update(other, Entry { timeouts: entry.timeouts, ..polled });
            }
        });
    }
}

/// A buffer for `getdents64`, aligned as its records are.
#[repr(C, align(8))]
struct Dirents([u8; 4096]);

/// Calls `f` on every fd open in this process: the entries of `/proc/self/fd`, read with
/// `getdents64` into a buffer on the stack (no allocation); if `/proc` cannot be read, every fd
/// the table knows.
fn each_open_fd(mut f: impl FnMut(c_int)) {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path; the result is checked.
    let dir = unsafe { libc::open(c"/proc/self/fd".as_ptr(), flags) };
    if dir < 0 {
        fdtable::each(|fd, _| f(fd));
        return;
    }
    let mut buf = Dirents([0; 4096]);
    loop {
        // SAFETY: `buf` is writable for the length given; `dir` is open.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.0.as_mut_ptr(), buf.0.len()) };
        let Ok(n @ 1..) = usize::try_from(n) else { break };
        each_fd_named(&buf.0[..n], |fd| {
            if fd != dir {
                f(fd);
            }
        });
    }
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { real::close(dir) };
}

/// The fd numbers named by the `linux_dirent64` records in `records`: `d_ino` (8 bytes),
/// `d_off` (8), `d_reclen` (2), `d_type` (1), then the NUL-terminated name.
fn each_fd_named(records: &[u8], mut f: impl FnMut(c_int)) {
    const NAME: usize = 19;
    let mut at = 0;
    while let Some(record) = records.get(at..at + NAME) {
        let len = usize::from(u16::from_ne_bytes([record[16], record[17]]));
        let Some(name) = records.get(at + NAME..at + len) else { return };
        let digits = name.split(|&b| b == 0).next().unwrap_or_default();
        if let Some(fd) = std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()) {
            f(fd);
        }
        at += len.max(NAME + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Vec<u8> {
        let len = (19 + name.len() + 1).next_multiple_of(8);
        let mut r = vec![0u8; len];
        r[16..18].copy_from_slice(&(len as u16).to_ne_bytes());
        r[19..19 + name.len()].copy_from_slice(name.as_bytes());
        r
    }

    #[test]
    fn dirent_records_name_their_fds_and_dot_entries_are_skipped() {
        let records: Vec<u8> =
            [".", "..", "0", "17", "1023"].iter().flat_map(|n| record(n)).collect();
        let mut seen = Vec::new();
        each_fd_named(&records, |fd| seen.push(fd));
        assert_eq!(seen, [0, 17, 1023]);
        seen.clear();
        each_fd_named(&records[..records.len() - 3], |fd| seen.push(fd)); // a cut-off record
        assert_eq!(seen, [0, 17]);
    }
}
