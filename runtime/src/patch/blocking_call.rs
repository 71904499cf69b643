//! What a patched call does: look the fd up, try the real call, and wait through the hub when it
//! would block. The hooks in `hooks.rs` are one-line calls into these functions.
//!
//! Guarantee: nothing here unwinds into the C caller (every entry point runs under [`guard`]),
//! and errno is what libc would leave, except where the contract says otherwise (`ETIMEDOUT` /
//! `ECANCELED` for a call cut short by a `timeout` or a cancel). Not guaranteed: that a call on a
//! polled fd ([`Mode::Polled`]) never blocks (another process may drain the readiness it waited
//! for).

use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use libc::{addrinfo, pollfd};

use super::fdtable::{self, Entry, Kind, Mode};
use super::real::{self, errno, set_errno};
use super::{INSTALLED, active, record_inherited_fds};
use crate::coroutine::{self, Interrupted};
use crate::hub::try_hub;

/// Runs a hook's body; a panic becomes `EIO` and the failure value, never an unwind across the
/// C ABI (the panic message has been printed by the panic hook).
pub(super) fn guard<R: Copy>(failure: R, body: impl FnOnce() -> R) -> R {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(_) => {
            set_errno(libc::EIO);
            failure
        }
    }
}

/// Which way a call moves data, and so which readiness it waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Dir {
    Read,
    Write,
}

/// The receive flags with which the kernel never waits, whatever the fd's mode: the caller's
/// own `MSG_DONTWAIT`, and `MSG_ERRQUEUE` (an empty error queue is `EAGAIN` at once, even on a
/// blocking socket; a probe's coroutine waited for readability forever instead).
pub(super) const NEVER_WAITS: c_int = libc::MSG_DONTWAIT | libc::MSG_ERRQUEUE;

/// A read- or write-shaped call (`read`, `recv`, `send`, `accept`, ...) on `fd`. `dont_wait` is
/// the caller's own `MSG_DONTWAIT` (or, for a receive, a flag in [`NEVER_WAITS`]): such a call
/// never waits. `call` says what the hook knows of the call: on a polled fd it tells a call the
/// kernel answers at once ([`answers_at_once`]).
///
/// The fast path is what a call on a ready fd costs: on an fd the table already knows (in any
/// mode but a blocking [`Mode::Polled`], which must wait first), the call is tried at once,
/// inlined into the hook: one thread-local load, one table load, the call. Only an `EAGAIN` to be waited out
/// (and a first call on the fd) takes the out-of-line paths. Nothing before the call can panic,
/// so the panic guard starts with them too. Inlining and skipping it saves ~50 instructions
/// (function prologues, the guard's closure, a full entry decode) per call on a ready fd
/// (callgrind, the `patch_read` worker: 50.1 M -> 39.5 M for 200k reads in a hub, 200k outside).
#[inline(always)]
pub(super) fn io(
    fd: c_int,
    dir: Dir,
    dont_wait: bool,
    call: Call,
    mut op: impl FnMut() -> isize,
) -> isize {
    if !active() {
        return outside_hub(fd, dir, dont_wait, op);
    }
    let Some(entry) = fdtable::get(fd).filter(|e| e.mode != POLLED) else {
        return first_or_polled(fd, dir, dont_wait, call, op);
    };
    let result = op();
    if result >= 0 || dont_wait || entry.mode != WAITS || errno() != libc::EAGAIN {
        return result;
    }
    guard(-1, || managed_after_eagain(fd, entry, dir, op))
}

/// What a hook knows of its call, for [`answers_at_once`]: the count of bytes it moves at most
/// (`None` where the hook does not look), and whether it is a call on sockets only (`recv`,
/// `send`, `accept`, ..., which fail with `ENOTSOCK` on anything else).
#[derive(Clone, Copy, Debug)]
pub(super) struct Call {
    pub(super) len: Option<usize>,
    pub(super) socket: bool,
}

impl Call {
    /// A call on any fd (`read`, `write`, ...) of at most `len` bytes.
    pub(super) fn of(len: usize) -> Call {
        Call { len: Some(len), socket: false }
    }

    /// A call on any fd whose byte count the hook does not look at.
    pub(super) const ANY: Call = Call { len: None, socket: false };

    /// A call on sockets only.
    pub(super) const SOCKET: Call = Call { len: None, socket: true };
}

/// A write-shaped call (`write`, `send`, `sendto`, `writev`, `sendmsg`) of the bytes of
/// `segments`, in order, made as on the blocking fd the program believes it has (`socket`: the
/// call is one on sockets only):
/// `op(segments, done)` writes `segments`, which start at byte `done` of the whole (after a
/// short write, the rest: a new array over the same buffers). Where the patch made the fd
/// non-blocking behind the program's back, a short count (the socket or pipe took only part)
/// does not come back, as it would not from a blocking fd: the rest is written too, waiting as
/// [`io`] does. An error after some bytes went (the send timeout, a cancel) returns their count,
/// as a blocking write cut short after progress does; the next call reports the error.
#[inline(always)]
pub(super) fn write_whole(
    fd: c_int,
    dont_wait: bool,
    socket: bool,
    segments: &[libc::iovec],
    mut op: impl FnMut(&[libc::iovec], usize) -> isize,
) -> isize {
    let len = total(segments);
    let call = Call { len: Some(len), socket };
    let first = io(fd, Dir::Write, dont_wait, call, || op(segments, 0));
    if first <= 0 || dont_wait {
        return first;
    }
    if first as usize >= len {
        return first;
    }
    guard(first, || write_rest(fd, segments, len, first as usize, op))
}

/// [`write_whole`] after a short first write.
#[inline(never)]
fn write_rest(
    fd: c_int,
    segments: &[libc::iovec],
    len: usize,
    done: usize,
    op: impl FnMut(&[libc::iovec], usize) -> isize,
) -> isize {
    let Some(entry) = fdtable::get(fd).filter(|e| e.mode == WAITS) else {
        return done as isize; // the program's own non-blocking fd, or a shared one: as libc
    };
    // One send timeout for the whole call, as a blocking send has, not one per part.
    parts_until_whole(fd, entry, Dir::Write, segments, len, done, op)
}

/// The rest of a call that moves the bytes of `segments` part by part (`write_rest`,
/// `read_rest`), from byte `done` of the `len`: each part a call `op(rest, done)` over the
/// buffers not done yet, waited for cooperatively on `EAGAIN`, all under one socket timeout
/// (`SO_SNDTIMEO` or `SO_RCVTIMEO`) for the whole call, as the kernel counts it. Stops at `len`,
/// at a part that moves nothing or fails (the count so far comes back, as from the kernel).
fn parts_until_whole(
    fd: c_int,
    entry: Entry,
    dir: Dir,
    segments: &[libc::iovec],
    len: usize,
    mut done: usize,
    mut op: impl FnMut(&[libc::iovec], usize) -> isize,
) -> isize {
    let deadline = socket_deadline(fd, entry, dir);
    let mut rest = Vec::with_capacity(segments.len());
    while done < len {
        rest.clear();
        rest.extend(after(segments, done));
        let mut part = || op(&rest, done);
        let moved = if active() {
            match part() {
                n if n < 0 && errno() == libc::EAGAIN => {
                    managed_after_eagain_until(fd, entry, dir, deadline, part)
                }
                n => n,
            }
        } else {
            io(fd, dir, false, Call::ANY, part)
        };
        if moved <= 0 {
            break;
        }
        done += moved as usize;
    }
    done as isize
}

/// A receive (`recv`, `recvfrom`, `recvmsg`) with the caller's `flags` into the buffers of
/// `segments`: [`io`], and, for a blocking `MSG_WAITALL` on a stream socket the patch made
/// non-blocking, on until the buffers are full, as the kernel's blocking call goes on:
/// `op(segments, done)` receives into `segments`, which start at byte `done` of the whole.
/// The non-blocking call returns what is there; the kernel's blocking one returns early only
/// at the end of the stream, an error or a signal, the receive timeout, or (Unix sockets) fds
/// passed with the data. Those end this loop too: `op` returns 0 where a part must be the last
/// (it got control data), and an error after some bytes returns their count, as the kernel
/// does.
#[inline(always)]
pub(super) fn read_whole(
    fd: c_int,
    flags: c_int,
    segments: &[libc::iovec],
    mut op: impl FnMut(&[libc::iovec], usize) -> isize,
) -> isize {
    let dont_wait = flags & NEVER_WAITS != 0;
    let len = total(segments);
    let call = Call { len: Some(len), socket: true };
    let first = io(fd, Dir::Read, dont_wait, call, || op(segments, 0));
    if first <= 0 || dont_wait || flags & (libc::MSG_WAITALL | libc::MSG_PEEK) != libc::MSG_WAITALL
    {
        return first;
    }
    if first as usize >= len {
        return first;
    }
    guard(first, || read_rest(fd, segments, len, first as usize, op))
}

/// [`read_whole`] after a short first part of a `MSG_WAITALL` receive.
#[inline(never)]
fn read_rest(
    fd: c_int,
    segments: &[libc::iovec],
    len: usize,
    done: usize,
    op: impl FnMut(&[libc::iovec], usize) -> isize,
) -> isize {
    let Some(entry) = fdtable::get(fd).filter(|e| e.mode == WAITS && e.kind == Kind::Socket) else {
        return done as isize; // the program's own non-blocking fd, or a shared one: as libc
    };
    if !is_stream(fd) {
        return done as isize; // MSG_WAITALL means nothing to a datagram
    }
    // One receive timeout for the whole call, as the kernel counts it.
    parts_until_whole(fd, entry, Dir::Read, segments, len, done, op)
}

/// Whether `fd` is a stream socket (`SO_TYPE`).
fn is_stream(fd: c_int) -> bool {
    let mut kind: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `kind` and `len` are valid out-pointers of the sizes given.
    let rc = unsafe {
        real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut len)
    };
    rc == 0 && kind == libc::SOCK_STREAM
}

/// The segments that hold the bytes of `segments` after the first `skip`.
fn after(segments: &[libc::iovec], mut skip: usize) -> impl Iterator<Item = libc::iovec> + '_ {
    segments.iter().filter_map(move |s| {
        if skip >= s.iov_len {
            skip -= s.iov_len;
            return None;
        }
        let from = std::mem::take(&mut skip);
        let base = s.iov_base.cast::<u8>().wrapping_add(from).cast();
        Some(libc::iovec { iov_base: base, iov_len: s.iov_len - from })
    })
}

/// The count of bytes in `segments`.
pub(super) fn total(segments: &[libc::iovec]) -> usize {
    segments.iter().fold(0usize, |sum, s| sum.saturating_add(s.iov_len))
}

/// `buf`'s `len` bytes as one segment, for [`write_whole`].
pub(super) fn segment(buf: *const std::ffi::c_void, len: usize) -> libc::iovec {
    libc::iovec { iov_base: buf.cast_mut(), iov_len: len }
}

/// The segments of a caller's `iov` array of `count` entries, when it is one libc would take
/// (else the call goes to libc as it is, to fail there as libc decides).
///
/// # Safety
/// `iov` must be the caller's array of `count` segments, live for the call (writev's and
/// sendmsg's own contract).
pub(super) unsafe fn segments<'a>(
    iov: *const libc::iovec,
    count: usize,
) -> Option<&'a [libc::iovec]> {
    if iov.is_null() || count == 0 || count > libc::UIO_MAXIOV as usize {
        return None;
    }
    // SAFETY: the caller's contract above; the count is within libc's own limit.
    Some(unsafe { std::slice::from_raw_parts(iov, count) })
}

/// The mode whose `EAGAIN` the patch waits out: managed, and the program never asked for
/// O_NONBLOCK itself.
pub(super) const WAITS: Mode = Mode::Managed { user_nonblocking: false };

/// The mode that waits for readiness before the call: polled, and blocking.
const POLLED: Mode = Mode::Polled { user_nonblocking: false };

/// The slow start of [`io`]: an fd without an entry yet (made now), or a polled one.
#[inline(never)]
fn first_or_polled(
    fd: c_int,
    dir: Dir,
    dont_wait: bool,
    call: Call,
    mut op: impl FnMut() -> isize,
) -> isize {
    guard(-1, || {
        let Some(entry) = entry_for(fd) else { return op() };
        if dont_wait || entry.mode.direct() {
            return op();
        }
        match entry.mode {
            Mode::Polled { .. } => polled(fd, entry, dir, call, op),
            _ => managed(fd, entry, dir, op),
        }
    })
}

/// The retry loop: try; on EAGAIN wait for readiness through the hub; try again. The wait
/// keeps the fd's registration for the next call ([`wait_managed`]): on a ready fd this costs
/// the call itself and a few loads, on a waiting one no syscall beyond greenhub's own sockets'.
fn managed(fd: c_int, entry: Entry, dir: Dir, mut op: impl FnMut() -> isize) -> isize {
    let result = op();
    if result >= 0 || errno() != libc::EAGAIN {
        return result;
    }
    managed_after_eagain(fd, entry, dir, op)
}

/// [`managed`] once the first try said `EAGAIN`: wait, try again, until the call goes through,
/// fails otherwise, or the wait ends without readiness.
#[inline(never)]
fn managed_after_eagain(fd: c_int, entry: Entry, dir: Dir, op: impl FnMut() -> isize) -> isize {
    managed_after_eagain_until(fd, entry, dir, socket_deadline(fd, entry, dir), op)
}

/// [`managed_after_eagain`] with the socket timeout's `deadline` given (a write of many parts
/// keeps one).
fn managed_after_eagain_until(
    fd: c_int,
    entry: Entry,
    dir: Dir,
    deadline: Option<Instant>,
    mut op: impl FnMut() -> isize,
) -> isize {
    loop {
        // The wake that set the kept registration's `read_closed` came (or came before); a
        // receive shut down gives no edge again.
        let closed = || crate::io::kept_read_closed(fd, fdtable::epoch(fd));
        if dir == Dir::Read && entry.kind == Kind::Socket && closed() && receive_shut_down(fd) {
            return as_blocking_after_receive_shutdown(fd);
        }
        match wait_managed(fd, entry, dir, deadline) {
            Ok(Some(true)) => {}
            Ok(Some(false)) => return fail(libc::EAGAIN), // SO_RCVTIMEO / SO_SNDTIMEO expired
            Ok(None) => {
                // The number now names another fd, closed and reopened behind our back: its
                // EAGAIN is its own (the program made it non-blocking).
                fdtable::clear(fd);
                return fail(libc::EAGAIN);
            }
            Err(e) => return fail(e),
        }
        let result = op();
        if result >= 0 || errno() != libc::EAGAIN {
            return result;
        }
    }
}

/// [`wait`] for a managed fd, through the registration the hub keeps for it
/// (`io::wait_fd_kept`); `Ok(None)` when the entry no longer describes the fd (checked only when
/// a registration is made: a kept one is as current as the fd table's epoch says).
fn wait_managed(
    fd: c_int,
    entry: Entry,
    dir: Dir,
    deadline: Option<Instant>,
) -> Result<Option<bool>, c_int> {
    let hub = try_hub().expect("a patched call waits only inside a coroutine");
    let epoch = fdtable::epoch(fd);
    let outcome = coroutine::without_unwinding(hub, || {
        let still_same = || entry.still_describes(fd);
        crate::io::wait_fd_kept(fd, dir == Dir::Read, deadline, epoch, still_same)
    });
    match outcome {
        Ok(Ok(ready)) => Ok(ready),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EBADF) => Err(libc::EBADF),
        Ok(Err(_)) => Ok(Some(blocking_poll(fd, dir, deadline))),
        Err(why) => Err(interrupted_errno(why)),
    }
}

/// A shared description: wait until it is ready, then make the (blocking) call once.
///
/// Readiness is looked at again after every wake, before the call: one readiness wakes every
/// coroutine waiting on the fd, and the first to run may take it all (a second reader of a
/// pipe finds it empty again), so the others' blocking calls would hold the hub's thread until
/// more came. One socket timeout bounds the whole wait. A call the kernel answers at once
/// whatever the readiness ([`answers_at_once`]) is made without waiting.
fn polled(fd: c_int, entry: Entry, dir: Dir, call: Call, mut op: impl FnMut() -> isize) -> isize {
    let mut deadline = None;
    while !ready_now(fd, dir) {
        if deadline.is_none() && answers_at_once(fd, entry, dir, call) {
            break;
        }
        let until = *deadline.get_or_insert_with(|| socket_deadline(fd, entry, dir));
        match wait(fd, dir, until) {
            Ok(true) => {}
            Ok(false) => return fail(libc::EAGAIN),
            Err(e) => return fail(e),
        }
    }
    op()
}

/// Whether `call` on the polled `fd` (whose entry is `entry`), in `dir`, fails or returns in
/// the kernel at once, however long the fd stays unready: then waiting for readiness first
/// would turn libc's answer into a wait that may never end (a probe's `read(0, buf, 0)` on an
/// empty stdin pipe, its `read` of the stdout pipe's write end, its 4-byte `read` of an eventfd,
/// its `recv` on the stdin pipe all waited forever). These are: a socket call on an fd that is
/// not a socket (`ENOTSOCK`), a direction the fd was not opened for (`EBADF`), a pipe call of
/// no bytes (0), and a read too short for one record of an eventfd or timerfd (8 bytes) or a
/// signalfd (one `signalfd_siginfo`), or of an fd that cannot be read at all, an epoll
/// instance or a pidfd (`EINVAL`). Asked only before a wait.
fn answers_at_once(fd: c_int, entry: Entry, dir: Dir, call: Call) -> bool {
    if call.socket && entry.kind != Kind::Socket {
        return true;
    }
    let len = call.len;
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let access = unsafe { real::fcntl(fd, libc::F_GETFL, 0) } & libc::O_ACCMODE;
    let not_opened_for = match dir {
        Dir::Read => access == libc::O_WRONLY,
        Dir::Write => access == libc::O_RDONLY,
    };
    not_opened_for
        || (entry.kind == Kind::Fifo && len == Some(0))
        || (entry.kind == Kind::Anon
            && dir == Dir::Read
            && len.is_some_and(|len| len < anon_record(fd)))
}

/// The least a read of the anonymous-inode fd `fd` must ask for (0 where any length waits):
/// one record of an eventfd, timerfd or signalfd, and more than any buffer for an epoll
/// instance or a pidfd, whose reads always fail. Told apart by the name of the fd's link in
/// `/proc/self/fd` (`anon_inode:[eventfd]`, ...).
fn anon_record(fd: c_int) -> usize {
    let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else { return 0 };
    match link.as_os_str().as_encoded_bytes() {
        b"anon_inode:[eventfd]" | b"anon_inode:[timerfd]" => size_of::<u64>(),
        b"anon_inode:[signalfd]" => size_of::<libc::signalfd_siginfo>(),
        b"anon_inode:[eventpoll]" | b"anon_inode:[pidfd]" => usize::MAX,
        _ => 0,
    }
}

/// Outside a coroutine the call is libc's; only an fd the patch made non-blocking behind the
/// program's back needs care: its EAGAIN is turned back into a blocking wait.
fn outside_hub(fd: c_int, dir: Dir, dont_wait: bool, mut op: impl FnMut() -> isize) -> isize {
    let result = op();
    if result >= 0 || dont_wait || !INSTALLED.load(std::sync::atomic::Ordering::Relaxed) {
        return result;
    }
    if errno() != libc::EAGAIN {
        return result;
    }
    guard(-1, || {
        let Some(entry) = entry_or_twin(fd) else { return fail(libc::EAGAIN) };
        if entry.mode != WAITS || !entry.still_describes(fd) {
            return fail(libc::EAGAIN);
        }
        let deadline = socket_deadline(fd, entry, dir);
        loop {
            if !blocking_poll(fd, dir, deadline) {
                return fail(libc::EAGAIN);
            }
            let result = op();
            if result >= 0 || errno() != libc::EAGAIN {
                return result;
            }
            // Ready, yet EAGAIN: a receive shut down polls ready for ever (a spin, else).
            if dir == Dir::Read && entry.kind == Kind::Socket && receive_shut_down(fd) {
                return as_blocking_after_receive_shutdown(fd);
            }
        }
    })
}

/// Whether the receive side of the socket `fd` is shut down (`shutdown(SHUT_RD)`, by this
/// process or, for a connected Unix stream, by its peer): `poll` says `POLLRDHUP` or `POLLHUP`.
///
/// Then the kernel's blocking receive on a datagram socket (UDP, Unix datagram) and its
/// blocking `accept` on a Unix listener no longer wait: they return 0 and fail with `EINVAL`,
/// where the non-blocking calls the patch makes go on saying `EAGAIN`, and no new readiness
/// edge comes to end a wait (a probe's `UdpSocket::recv`, shut down by another thread to stop
/// it, waited forever in a coroutine and spun on a plain thread).
fn receive_shut_down(fd: c_int) -> bool {
    let events = libc::POLLIN | libc::POLLRDHUP;
    let mut p = pollfd { fd, events, revents: 0 };
    // SAFETY: one live pollfd; a zero timeout never blocks.
    let n = unsafe { real::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// What the kernel's blocking call answers on a socket whose receive side is shut down, where
/// the non-blocking one said `EAGAIN` ([`receive_shut_down`]): `EINVAL` from an `accept` on a
/// listener, else the end of the data (0).
fn as_blocking_after_receive_shutdown(fd: c_int) -> isize {
    let mut listening: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `listening` and `len` are valid out-pointers of the sizes given.
    let rc = unsafe {
        let out = (&raw mut listening).cast();
        real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, out, &mut len)
    };
    if rc == 0 && listening != 0 { fail(libc::EINVAL) } else { 0 }
}

/// Sets errno and returns -1.
fn fail(e: c_int) -> isize {
    set_errno(e);
    -1
}

/// The errno a call cut short by `why` fails with.
fn interrupted_errno(why: Interrupted) -> c_int {
    match why {
        Interrupted::TimedOut => libc::ETIMEDOUT,
        Interrupted::Cancelled => libc::ECANCELED,
    }
}

/// Suspends the coroutine until `fd` is ready in `dir`: `Ok(false)` when `deadline` passed
/// first, `Err(errno)` when a timeout or cancel interrupted the wait. An fd epoll cannot watch
/// is waited on with a blocking poll (correct, but the hub waits too). An fd closed during the
/// wait (the hub retires its registration: `EBADF`) fails the call with `EBADF`, whatever file
/// its number names by then: a blocking poll on that number blocked the whole hub on a file
/// the caller never waited for (a probe's did, once another coroutine's `pipe` reused it).
fn wait(fd: c_int, dir: Dir, deadline: Option<Instant>) -> Result<bool, c_int> {
    let hub = try_hub().expect("a patched call waits only inside a coroutine");
    let outcome = coroutine::without_unwinding(hub, || {
        crate::io::wait_fd_until(fd, dir == Dir::Read, deadline, "patch")
    });
    match outcome {
        Ok(Ok(ready)) => Ok(ready),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EBADF) => Err(libc::EBADF),
        Ok(Err(_)) => Ok(blocking_poll(fd, dir, deadline)),
        Err(why) => Err(interrupted_errno(why)),
    }
}

/// The entry of `fd`, made on first use from what the kernel says; `None` for a bad fd.
fn entry_for(fd: c_int) -> Option<Entry> {
    if let Some(entry) = fdtable::get(fd) {
        return Some(entry);
    }
    record_inherited_fds();
    if let Some(entry) = fdtable::get(fd) {
        return Some(entry);
    }
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 {
        return None;
    }
    let (kind, inode) = fdtable::identify(fd)?;
    let mode = match kind {
        Kind::Other => Mode::Direct,
        // The patch's flag, set through a duplicate made before the patch saw either fd.
        _ if flags & libc::O_NONBLOCK != 0 && managed_twin(fd, kind, inode, flags).is_some() => {
            WAITS
        }
        // The program's own non-blocking fd; and greenhub's own eventfds, timerfds and epoll
        // instances, which it makes non-blocking from the start (and the patch's pidfds, which
        // are never read), so the patch never waits on the hub's own fds.
        _ if flags & libc::O_NONBLOCK != 0 => Mode::Direct,
        // Terminals; and eventfds, timerfds, signalfds, inotify instances: pollable, and
        // often shared (across fork, or with another thread that writes the counter), so never
        // switched: waited on, then called blocking. One that epoll cannot watch reads as ready.
        Kind::CharDevice | Kind::Anon => POLLED,
        Kind::Socket | Kind::Fifo if fd <= 2 => POLLED,
        Kind::Socket | Kind::Fifo if set_nonblocking(fd, flags) => WAITS,
        Kind::Socket | Kind::Fifo => Mode::Direct,
    };
    let timeouts = kind == Kind::Socket && has_timeouts(fd);
    let entry = Entry { mode, kind, inode, timeouts };
    fdtable::set(fd, entry);
    Some(entry)
}

/// Another fd on the description of `fd` (whose kind, inode and flags are given) with a
/// [`WAITS`] entry, if the table may hold one (a duplicate was made of an fd with no entry:
/// [`fdtable::untracked_twins`]): then `fd`'s O_NONBLOCK is the patch's. Twins are told apart
/// from other fds on the same inode by their access mode, which tells a pipe's two ends apart.
pub(super) fn managed_twin(fd: c_int, kind: Kind, inode: u64, flags: c_int) -> Option<Entry> {
    if !fdtable::untracked_twins() || !matches!(kind, Kind::Socket | Kind::Fifo) {
        return None;
    }
    let twin = |other: c_int, e: Entry| {
        e.mode == WAITS && same_description(fd, kind, inode, flags, other, e)
    };
    fdtable::find(twin).map(|(_, entry)| entry)
}

/// Whether `other` (another fd, whose entry is `e`) is on the same description as `fd` (whose
/// kind, inode and flags are given), as far as the patch can tell: the same kind and inode,
/// the same access mode (which tells a pipe's two ends apart), and the entry is not stale.
pub(super) fn same_description(
    fd: c_int,
    kind: Kind,
    inode: u64,
    flags: c_int,
    other: c_int,
    e: Entry,
) -> bool {
    if other == fd || (e.kind, e.inode) != (kind, inode) {
        return false;
    }
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let access = unsafe { real::fcntl(other, libc::F_GETFL, 0) } & libc::O_ACCMODE;
    access == flags & libc::O_ACCMODE && e.still_describes(other)
}

/// The entry of `fd`, for the calls that need it before the fd's first call in a coroutine
/// (`fcntl`, `ioctl`, calls outside a hub). An fd with none that is non-blocking, while
/// untracked twins may exist, gets one now: a copy of its twin's if the patch manages its
/// description through a twin ([`managed_twin`]), else [`Mode::Direct`] (so that the search runs
/// once per fd, not once per `EAGAIN`).
fn entry_or_twin(fd: c_int) -> Option<Entry> {
    if let Some(entry) = fdtable::get(fd) {
        return Some(entry);
    }
    if !fdtable::untracked_twins() {
        return None;
    }
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 || flags & libc::O_NONBLOCK == 0 {
        return None;
    }
    let (kind, inode) = fdtable::identify(fd)?;
    let entry = match managed_twin(fd, kind, inode, flags) {
        Some(twin) => Entry { inode, ..twin },
        None => Entry { mode: Mode::Direct, kind, inode, timeouts: false },
    };
    fdtable::set(fd, entry);
    Some(entry)
}

/// Adds O_NONBLOCK to `flags` on `fd`; false if the kernel refused.
fn set_nonblocking(fd: c_int, flags: c_int) -> bool {
    // SAFETY: F_SETFL takes an int; no memory preconditions.
    unsafe { real::fcntl(fd, libc::F_SETFL, (flags | libc::O_NONBLOCK) as usize) == 0 }
}

/// The deadline `SO_RCVTIMEO` / `SO_SNDTIMEO` set for a call starting now (sockets whose entry
/// says they may have one: no syscall for the others).
fn socket_deadline(fd: c_int, entry: Entry, dir: Dir) -> Option<Instant> {
    if entry.kind != Kind::Socket || !entry.timeouts {
        return None;
    }
    let name = match dir {
        Dir::Read => libc::SO_RCVTIMEO,
        Dir::Write => libc::SO_SNDTIMEO,
    };
    let d = socket_timeout(fd, name)?;
    Instant::now().checked_add(d)
}

/// Whether either socket timeout is set on `fd` now (asked once, when its entry is made).
fn has_timeouts(fd: c_int) -> bool {
    socket_timeout(fd, libc::SO_RCVTIMEO).is_some()
        || socket_timeout(fd, libc::SO_SNDTIMEO).is_some()
}

/// The socket timeout `name` (`SO_RCVTIMEO` or `SO_SNDTIMEO`) of `fd`, if one is set.
fn socket_timeout(fd: c_int, name: c_int) -> Option<Duration> {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid out-pointers of the sizes given.
    let rc =
        unsafe { real::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut tv).cast(), &mut len) };
    if rc != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0) {
        return None;
    }
    Some(Duration::new(tv.tv_sec.max(0) as u64, tv.tv_usec.clamp(0, 999_999) as u32 * 1000))
}

/// `SO_RCVTIMEO_NEW` and `SO_SNDTIMEO_NEW` (asm-generic, as on x86_64 and aarch64): the names
/// glibc uses for the socket timeouts with 64-bit time.
const SO_RCVTIMEO_NEW: c_int = 66;
const SO_SNDTIMEO_NEW: c_int = 67;

/// `setsockopt`: after a socket timeout is set, the entries of every fd on that socket say so,
/// so that their waits read it. A socket's timeouts belong to the socket, shared by all its fds
/// (`dup`, `try_clone`): one set through a duplicate bounds the original's calls too. (An entry
/// is never told a timeout went away: a wait then finds none, at one syscall.)
pub(super) fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    op: impl FnOnce() -> c_int,
) -> c_int {
    let rc = op();
    let timeout = level == libc::SOL_SOCKET
        && matches!(
            name,
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO | SO_RCVTIMEO_NEW | SO_SNDTIMEO_NEW
        );
    if rc == 0 && timeout {
        guard((), || timeouts_set(fd));
    }
    rc
}

/// Marks the entry of `fd`, and of every other fd the table knows on the same socket (same
/// inode: a socket has one), as possibly having a timeout.
fn timeouts_set(fd: c_int) {
    if let Some(entry) = fdtable::get(fd).filter(|e| !e.timeouts) {
        fdtable::set(fd, Entry { timeouts: true, ..entry });
    }
    let Some((Kind::Socket, inode)) = fdtable::identify(fd) else { return };
    fdtable::each(|other, e| {
        if other != fd && (e.kind, e.inode, e.timeouts) == (Kind::Socket, inode, false) {
            fdtable::set(other, Entry { timeouts: true, ..e });
        }
    });
}

/// Records the program's `O_NONBLOCK` wish `wants`, just made through `fd` (whose entry is
/// `e`), on every other fd the table knows on the same description: the flag belongs to the
/// description, so a duplicate made non-blocking makes the original non-blocking too (a
/// probe's `try_clone().set_nonblocking(true)` left the original blocking, and its `F_GETFL`
/// hid the flag). Duplicates are found as socket timeouts are (`same_description`).
fn share_nonblocking_wish(fd: c_int, e: Entry, wants: bool) {
    // SAFETY: F_GETFL takes no argument and has no memory preconditions.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    fdtable::each(|other, o| {
        if !same_description(fd, e.kind, e.inode, flags, other, o) {
            return;
        }
        let mode = match o.mode {
            Mode::Managed { .. } => Mode::Managed { user_nonblocking: wants },
            Mode::Polled { .. } => Mode::Polled { user_nonblocking: wants },
            direct => direct,
        };
        fdtable::set(other, Entry { mode, ..o });
    });
}

fn poll_events(dir: Dir) -> i16 {
    match dir {
        Dir::Read => libc::POLLIN,
        Dir::Write => libc::POLLOUT,
    }
}

/// Whether `fd` is ready now (hang-up and errors count: the call reports them).
fn ready_now(fd: c_int, dir: Dir) -> bool {
    let mut p = pollfd { fd, events: poll_events(dir), revents: 0 };
    // SAFETY: one live pollfd; a zero timeout never blocks.
    let n = unsafe { real::poll(&mut p, 1, 0) };
    n != 0
}

/// Blocks the thread in libc's poll until `fd` is ready or `deadline` passes (false then).
fn blocking_poll(fd: c_int, dir: Dir, deadline: Option<Instant>) -> bool {
    loop {
        let mut p = pollfd { fd, events: poll_events(dir), revents: 0 };
        let timeout = millis_until(deadline);
        // SAFETY: one live pollfd.
        match unsafe { real::poll(&mut p, 1, timeout) } {
            0 => return false,
            n if n > 0 => return true,
            _ if errno() == libc::EINTR => {}
            _ => return true, // the call itself reports the error
        }
    }
}

/// A poll(2) timeout in whole milliseconds (rounded up) until `deadline`; -1 for none.
fn millis_until(deadline: Option<Instant>) -> c_int {
    let Some(at) = deadline else { return -1 };
    let left = at.saturating_duration_since(Instant::now());
    let ms = left.as_nanos().div_ceil(1_000_000);
    c_int::try_from(ms).unwrap_or(c_int::MAX)
}

// ---------------------------------------------------------------------------------------------
// Two fds: splice, sendfile

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

// ---------------------------------------------------------------------------------------------
// connect, poll

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

// ---------------------------------------------------------------------------------------------
// Sleeping

/// `nanosleep` / `clock_nanosleep` for `d` from now: a greenhub sleep inside a coroutine.
/// Returns `None` when the call must go to libc (outside a coroutine). A sleep cut short by a
/// timeout or cancel returns early with success: failing it would make `std::thread::sleep`
/// panic (it accepts only EINTR), and an EINTR would make a retry loop spin.
pub(super) fn sleep(d: Duration) -> Option<()> {
    if !active() {
        return None;
    }
    guard(Some(()), || {
        let hub = try_hub()?;
        let _ = coroutine::without_unwinding(hub, || crate::sleep(d));
        Some(())
    })
}

/// `clock_nanosleep(clock, flags, req)` on a clock whose time greenhub's timers do not keep
/// (`CLOCK_BOOTTIME`, which goes on while the machine is suspended, and the `_ALARM` clocks,
/// which also wake it): a timerfd on that very clock, armed as the call asks (relative, or
/// absolute with `TIMER_ABSTIME`), waited on through the hub, so the sleep ends when the
/// kernel's would. First the real call for no time at all, which answers at once what libc
/// answers at once (`EPERM` without `CAP_WAKE_ALARM`, `EOPNOTSUPP` without an RTC, `EINVAL`):
/// then the same error. `None` when the call must go to libc: outside a coroutine, a request
/// of no time (a timerfd armed for 0 is disarmed), or no timerfd to be had. A sleep cut short
/// by a timeout or cancel returns early with success, as [`sleep`] does.
pub(super) fn sleep_on_clock(
    clock: libc::clockid_t,
    flags: c_int,
    req: &libc::timespec,
) -> Option<c_int> {
    if !active() || duration_of(req).is_none_or(|d| d.is_zero()) {
        return None;
    }
    guard(None, || {
        let none = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a live timespec; no remainder wanted. A relative sleep of 0 returns at once.
        let refused = unsafe { real::clock_nanosleep(clock, 0, &none, std::ptr::null_mut()) };
        if refused != 0 {
            return Some(refused);
        }
        // SAFETY: timerfd_create takes a clock and flags; the result is checked.
        let fd = unsafe { real::timerfd_create(clock, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let spec = libc::itimerspec { it_interval: none, it_value: *req };
        let abs = if flags & libc::TIMER_ABSTIME != 0 { libc::TFD_TIMER_ABSTIME } else { 0 };
        // SAFETY: `spec` is a live itimerspec; no old value wanted.
        let armed = unsafe { libc::timerfd_settime(fd, abs, &spec, std::ptr::null_mut()) } == 0;
        if armed {
            let _ = wait(fd, Dir::Read, None); // expired, or cut short by a timeout or cancel
        }
        // SAFETY: the timerfd was made above and belongs to this call only.
        unsafe { real::close(fd) };
        armed.then_some(0)
    })
}

/// A timespec as a duration; `None` when libc would reject it (EINVAL).
pub(super) fn duration_of(ts: &libc::timespec) -> Option<Duration> {
    let nanos = u32::try_from(ts.tv_nsec).ok().filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(u64::try_from(ts.tv_sec).ok()?, nanos))
}

// ---------------------------------------------------------------------------------------------
// Children

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

// ---------------------------------------------------------------------------------------------
// Name resolution

/// A result list of getaddrinfo, freed unless handed to the caller.
struct AddrList(*mut addrinfo);

// SAFETY: the list is plain heap memory owned by this value; glibc's freeaddrinfo may run on
// any thread.
unsafe impl Send for AddrList {}

impl Drop for AddrList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a non-null list came from getaddrinfo and is freed once, here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// `getaddrinfo` inside a coroutine: copies its inputs and runs the real call on a helper thread
/// (glibc's resolver makes its own, unpatched, blocking calls). `None` outside a coroutine.
///
/// # Safety
/// The pointers are valid as for libc's getaddrinfo.
pub(super) unsafe fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Option<c_int> {
    if !active() || res.is_null() {
        return None;
    }
    // SAFETY: non-null strings are NUL-terminated (the caller's contract).
    let copy = |s: *const c_char| (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_owned());
    let (node, service) = (copy(node), copy(service));
    // SAFETY: a non-null `hints` points to a live addrinfo (the caller's contract).
    let hints = (!hints.is_null())
        .then(|| unsafe { *hints })
        .map(|h| (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol));
    Some(guard(libc::EAI_SYSTEM, || {
        let hub = try_hub().expect("inside a coroutine");
        let job = move || resolve(node, service, hints);
        match coroutine::without_unwinding(hub, || crate::spawn_blocking(job)) {
            Ok((rc, list, e)) => {
                let mut list = list;
                // SAFETY: `res` is a valid out-pointer (the caller's contract).
                unsafe { *res = std::mem::replace(&mut list.0, std::ptr::null_mut()) };
                if rc == libc::EAI_SYSTEM {
                    set_errno(e);
                }
                rc
            }
            Err(why) => {
                set_errno(interrupted_errno(why));
                libc::EAI_SYSTEM
            }
        }
    }))
}

type Hints = Option<(c_int, c_int, c_int, c_int)>;

/// On the helper thread: the real getaddrinfo over owned copies of the inputs.
fn resolve(
    node: Option<CString>,
    service: Option<CString>,
    hints: Hints,
) -> (c_int, AddrList, c_int) {
    // SAFETY: an all-zero addrinfo is the documented "no hints" value.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    if let Some((flags, family, socktype, protocol)) = hints {
        (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol) =
            (flags, family, socktype, protocol);
    }
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    let mut list = AddrList(std::ptr::null_mut());
    let hints_ptr = if hints.is_some() { &raw const h } else { std::ptr::null() };
    // SAFETY: the strings and hints are live for the call; `list.0` is a valid out-pointer.
    let rc = unsafe { real::getaddrinfo(ptr(&node), ptr(&service), hints_ptr, &mut list.0) };
    (rc, list, errno())
}

// ---------------------------------------------------------------------------------------------
// The fd table's bookkeeping calls: close, dup, fcntl, ioctl

/// `fcntl`: hides the O_NONBLOCK the patch set from F_GETFL, records the program's own
/// O_NONBLOCK from F_SETFL (on a shared fd it reaches the kernel unchanged, and the fd stays
/// shared), and copies the entry to a duplicate.
pub(super) fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: forwards the caller's arguments unchanged (the caller's contract).
    let real = |arg: usize| unsafe { real::fcntl(fd, cmd, arg) };
    guard(-1, || match cmd {
        libc::F_GETFL => {
            let flags = real(arg);
            if flags < 0 || flags & libc::O_NONBLOCK == 0 {
                return flags;
            }
            match entry_or_twin(fd) {
                Some(e) if e.mode == WAITS => {
                    if e.still_describes(fd) {
                        flags & !libc::O_NONBLOCK
                    } else {
                        fdtable::clear(fd);
                        flags
                    }
                }
                _ => flags,
            }
        }
        libc::F_SETFL => {
            let wants = arg as c_int & libc::O_NONBLOCK != 0;
            match entry_or_twin(fd) {
                Some(e @ Entry { mode: Mode::Managed { .. }, .. }) if e.still_describes(fd) => {
                    let rc = real(arg | libc::O_NONBLOCK as usize);
                    if rc == 0 {
                        let mode = Mode::Managed { user_nonblocking: wants };
                        fdtable::set(fd, Entry { mode, ..e });
                        share_nonblocking_wish(fd, e, wants);
                    }
                    rc
                }
                // Shared: the program's wish reaches the kernel, and the fd stays shared.
                Some(e @ Entry { mode: Mode::Polled { .. }, .. }) if e.still_describes(fd) => {
                    let rc = real(arg);
                    if rc == 0 {
                        let mode = Mode::Polled { user_nonblocking: wants };
                        fdtable::set(fd, Entry { mode, ..e });
                        share_nonblocking_wish(fd, e, wants);
                    }
                    rc
                }
                _ => {
                    fdtable::clear(fd); // made afresh from the new flags on next use
                    real(arg)
                }
            }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let new = real(arg);
            if new >= 0 {
                fdtable::copy(fd, new);
            }
            new
        }
        _ => real(arg),
    })
}

/// `ioctl(FIONBIO)` is how std's `set_nonblocking` works: treat it as F_SETFL's O_NONBLOCK.
///
/// # Safety
/// As for libc's ioctl with this request and argument.
pub(super) unsafe fn ioctl(fd: c_int, request: libc::c_ulong, arg: usize) -> c_int {
    // SAFETY: forwards the caller's arguments (the caller's contract).
    let real = |arg: usize| unsafe { real::ioctl(fd, request, arg) };
    if request != libc::FIONBIO || arg == 0 {
        return real(arg);
    }
    // SAFETY: FIONBIO's argument points to an int (the caller's contract).
    let wants = || unsafe { *(arg as *const c_int) } != 0;
    guard(-1, || match entry_or_twin(fd) {
        Some(e @ Entry { mode: Mode::Managed { .. }, .. }) if e.still_describes(fd) => {
            let wants = wants();
            let on: c_int = 1;
            let rc = real(&raw const on as usize);
            if rc == 0 {
                fdtable::set(fd, Entry { mode: Mode::Managed { user_nonblocking: wants }, ..e });
                share_nonblocking_wish(fd, e, wants);
            }
            rc
        }
        // Shared: the program's wish reaches the kernel, and the fd stays shared.
        Some(e @ Entry { mode: Mode::Polled { .. }, .. }) if e.still_describes(fd) => {
            let wants = wants();
            let rc = real(arg);
            if rc == 0 {
                fdtable::set(fd, Entry { mode: Mode::Polled { user_nonblocking: wants }, ..e });
                share_nonblocking_wish(fd, e, wants);
            }
            rc
        }
        _ => {
            fdtable::clear(fd);
            real(arg)
        }
    })
}
