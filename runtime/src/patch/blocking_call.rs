//! What a patched call on one fd does: look the fd up, try the real call, and wait through the
//! hub when it would block. The read- and write-shaped hooks in `hooks.rs` are one-line calls
//! into these functions; the other families of calls (`two_fds.rs`, `connect.rs`, `poll.rs`,
//! `sleep.rs`, `children.rs`, `resolve.rs`, `fd_calls.rs`) wait through the same pieces.
//!
//! Guarantee: nothing here unwinds into the C caller (every entry point runs under [`guard`]),
//! and errno is what libc would leave, except where the contract says otherwise (`ETIMEDOUT` /
//! `ECANCELED` for a call cut short by a `timeout` or a cancel). Not guaranteed: that a call on a
//! polled fd ([`Mode::Polled`]) never blocks (another process may drain the readiness it waited
//! for).

use std::ffi::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use libc::pollfd;

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
pub(super) const POLLED: Mode = Mode::Polled { user_nonblocking: false };

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
pub(super) fn wait_managed(
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
pub(super) fn fail(e: c_int) -> isize {
    set_errno(e);
    -1
}

/// The errno a call cut short by `why` fails with.
pub(super) fn interrupted_errno(why: Interrupted) -> c_int {
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
pub(super) fn wait(fd: c_int, dir: Dir, deadline: Option<Instant>) -> Result<bool, c_int> {
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
pub(super) fn entry_for(fd: c_int) -> Option<Entry> {
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
pub(super) fn entry_or_twin(fd: c_int) -> Option<Entry> {
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
pub(super) fn socket_deadline(fd: c_int, entry: Entry, dir: Dir) -> Option<Instant> {
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
pub(super) fn share_nonblocking_wish(fd: c_int, e: Entry, wants: bool) {
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
pub(super) fn ready_now(fd: c_int, dir: Dir) -> bool {
    let mut p = pollfd { fd, events: poll_events(dir), revents: 0 };
    // SAFETY: one live pollfd; a zero timeout never blocks.
    let n = unsafe { real::poll(&mut p, 1, 0) };
    n != 0
}

/// Blocks the thread in libc's poll until `fd` is ready or `deadline` passes (false then).
pub(super) fn blocking_poll(fd: c_int, dir: Dir, deadline: Option<Instant>) -> bool {
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
