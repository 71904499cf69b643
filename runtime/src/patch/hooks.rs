//! The interposers: C functions named like libc's, exported from the executable, so that every
//! call the program makes (std's, any crate's, a dlopen'ed C library's through the PLT) reaches
//! them instead of glibc's. Each is one line into `blocking_call.rs` or the file of its family of
//! calls beside it (`connect.rs`, `poll.rs`, `sleep.rs`, ...).
//!
//! Guarantee: the C signatures are glibc's (x86_64 and aarch64 Linux); `fcntl` and `ioctl` are
//! variadic in C and are defined here with one word-sized third argument, and the `open`s with
//! one int mode, which is how those ABIs pass the single optional argument. Nothing here unwinds. Not interposed: the variadic
//! `execl`, `execlp` and `execle` (stable Rust cannot define a variadic function), and the calls
//! glibc makes internally (`system` and `popen` spawn through its internal `posix_spawn`).

#![allow(clippy::missing_safety_doc)] // each hook's contract is the libc function's

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::time::Duration;

use libc::{
    addrinfo, id_t, idtype_t, iovec, loff_t, msghdr, nfds_t, off_t, off64_t, pid_t, pollfd,
    posix_spawn_file_actions_t, posix_spawnattr_t, rusage, siginfo_t, size_t, sockaddr, socklen_t,
    ssize_t, timespec,
};

use super::blocking_call::{
    self, Call, Dir, io, read_whole, segment, segments, total, write_whole,
};
use super::children::{Child, wait_child};
use super::sleep::duration_of;
use super::two_fds::{End, transfer};
use super::{connect, exec, fd_calls, fdtable, poll, real, resolve, sleep};

const DONTWAIT: c_int = libc::MSG_DONTWAIT;

/// Every hook's address: `install` references them all, so the linker keeps this object.
pub(super) fn every_hook() -> [usize; 56] {
    [
        read as *const () as usize,
        readv as *const () as usize,
        write as *const () as usize,
        writev as *const () as usize,
        recv as *const () as usize,
        recvfrom as *const () as usize,
        recvmsg as *const () as usize,
        send as *const () as usize,
        sendto as *const () as usize,
        sendmsg as *const () as usize,
        connect as *const () as usize,
        accept as *const () as usize,
        accept4 as *const () as usize,
        poll as *const () as usize,
        nanosleep as *const () as usize,
        clock_nanosleep as *const () as usize,
        waitpid as *const () as usize,
        wait4 as *const () as usize,
        waitid as *const () as usize,
        getaddrinfo as *const () as usize,
        close as *const () as usize,
        dup as *const () as usize,
        dup2 as *const () as usize,
        dup3 as *const () as usize,
        fcntl as *const () as usize,
        ioctl as *const () as usize,
        setsockopt as *const () as usize,
        splice as *const () as usize,
        sendfile as *const () as usize,
        sendfile64 as *const () as usize,
        execve as *const () as usize,
        execv as *const () as usize,
        execvp as *const () as usize,
        execvpe as *const () as usize,
        fexecve as *const () as usize,
        posix_spawn as *const () as usize,
        posix_spawnp as *const () as usize,
        posix_spawn_file_actions_adddup2 as *const () as usize,
        socket as *const () as usize,
        socketpair as *const () as usize,
        pipe as *const () as usize,
        pipe2 as *const () as usize,
        open as *const () as usize,
        open64 as *const () as usize,
        openat as *const () as usize,
        openat64 as *const () as usize,
        creat as *const () as usize,
        creat64 as *const () as usize,
        eventfd as *const () as usize,
        timerfd_create as *const () as usize,
        signalfd as *const () as usize,
        inotify_init as *const () as usize,
        inotify_init1 as *const () as usize,
        epoll_create as *const () as usize,
        epoll_create1 as *const () as usize,
        memfd_create as *const () as usize,
    ]
}

// SAFETY (for every `unsafe` block below): each forwards the caller's arguments unchanged to
// libc's function of the same name, so the caller's contract for that function covers it.

#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: see above.
    io(fd, Dir::Read, false, Call::of(count), || unsafe { real::read(fd, buf, count) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: readv's contract: `iov` holds `iovcnt` segments, live for the call.
    let len = unsafe { segments(iov, usize::try_from(iovcnt).unwrap_or(0)) }.map(total);
    let call = Call { len, socket: false };
    // SAFETY: see above.
    io(fd, Dir::Read, false, call, || unsafe { real::readv(fd, iov, iovcnt) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: see above; `rest` is one segment inside `buf`.
    write_whole(fd, false, false, &[segment(buf, count)], |rest, _| unsafe {
        real::write(fd, rest[0].iov_base, rest[0].iov_len)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    // SAFETY: writev's contract: `iov` holds `iovcnt` segments, live for the call.
    let Some(all) = (unsafe { segments(iov, usize::try_from(iovcnt).unwrap_or(0)) }) else {
        // SAFETY: see above.
        return io(fd, Dir::Write, false, Call::ANY, || unsafe { real::writev(fd, iov, iovcnt) });
    };
    // SAFETY: see above; `rest` is `all` or the part of its buffers not written yet.
    write_whole(fd, false, false, all, |rest, _| unsafe {
        real::writev(fd, rest.as_ptr(), rest.len() as c_int)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    // SAFETY: see above; `rest` is one segment inside `buf`.
    read_whole(fd, flags, &[segment(buf, len)], |rest, _| unsafe {
        real::recv(fd, rest[0].iov_base, rest[0].iov_len, flags)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    addrlen: *mut socklen_t,
) -> ssize_t {
    read_whole(fd, flags, &[segment(buf, len)], |rest, done| {
        // The rest of a stream: the first part reported the sender.
        let (addr, addrlen) =
            if done > 0 { (std::ptr::null_mut(), std::ptr::null_mut()) } else { (addr, addrlen) };
        // SAFETY: see above; `rest` is one segment inside `buf`.
        unsafe { real::recvfrom(fd, rest[0].iov_base, rest[0].iov_len, flags, addr, addrlen) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let nb = flags & blocking_call::NEVER_WAITS != 0;
    // SAFETY: recvmsg's contract: a non-null `msg` is a live msghdr.
    let whole = (!msg.is_null()).then(|| unsafe { *msg });
    // SAFETY: recvmsg's contract: its `msg_iov` holds `msg_iovlen` segments, live for the call.
    let all = whole.and_then(|m| unsafe { segments(m.msg_iov, m.msg_iovlen) });
    let (Some(whole), Some(all)) = (whole, all) else {
        // SAFETY: see above.
        let got = io(fd, Dir::Read, nb, Call::SOCKET, || unsafe { real::recvmsg(fd, msg, flags) });
        if got >= 0 && !msg.is_null() {
            // SAFETY: the call filled in the caller's live msghdr.
            unsafe { exec::received(&*msg) };
        }
        return got;
    };
    let got = read_whole(fd, flags, all, |rest, done| {
        if done == 0 {
            // SAFETY: see above.
            return unsafe { real::recvmsg(fd, msg, flags) };
        }
        // SAFETY: `msg` is the caller's live msghdr; the kernel wrote its lengths and flags.
        let caller = unsafe { &mut *msg };
        if caller.msg_controllen > 0 {
            return 0; // control data came with the last part: the kernel stops there too
        }
        // The rest, into the caller's buffers not filled yet, with its own control buffer and
        // address (at their original lengths) for what comes with it.
        let mut part = whole;
        part.msg_iov = rest.as_ptr().cast_mut();
        part.msg_iovlen = rest.len() as _;
        // SAFETY: `part` is the caller's message over `rest`, the part of its buffers not
        // filled yet, and its own control and address buffers.
        let got = unsafe { real::recvmsg(fd, &mut part, flags) };
        if got >= 0 {
            (caller.msg_controllen, caller.msg_namelen) = (part.msg_controllen, part.msg_namelen);
            caller.msg_flags = part.msg_flags;
        }
        got
    });
    if got >= 0 {
        // SAFETY: the call filled in the caller's live msghdr: fds passed with SCM_RIGHTS.
        unsafe { exec::received(&*msg) };
    }
    got
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    let nb = flags & DONTWAIT != 0;
    // SAFETY: see above; `rest` is one segment inside `buf`.
    write_whole(fd, nb, true, &[segment(buf, len)], |rest, _| unsafe {
        real::send(fd, rest[0].iov_base, rest[0].iov_len, flags)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    let nb = flags & DONTWAIT != 0;
    write_whole(fd, nb, true, &[segment(buf, len)], |rest, done| {
        // The rest of a stream goes without the address, which went with the first bytes.
        let (addr, addrlen) = if done > 0 { (std::ptr::null(), 0) } else { (addr, addrlen) };
        // SAFETY: see above; `rest` is one segment inside `buf`.
        unsafe { real::sendto(fd, rest[0].iov_base, rest[0].iov_len, flags, addr, addrlen) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let nb = flags & DONTWAIT != 0;
    // SAFETY: sendmsg's contract: a non-null `msg` is a live msghdr.
    let whole = (!msg.is_null()).then(|| unsafe { *msg });
    // SAFETY: sendmsg's contract: its `msg_iov` holds `msg_iovlen` segments, live for the call.
    let all = whole.and_then(|m| unsafe { segments(m.msg_iov, m.msg_iovlen) });
    if let Some(whole) = &whole {
        // SAFETY: sendmsg's contract: the live msghdr's control buffer holds its
        // `msg_controllen` bytes. Fds passed with SCM_RIGHTS are handed over first.
        unsafe { exec::sending(whole) };
    }
    let (Some(whole), Some(all)) = (whole, all) else {
        // SAFETY: see above.
        return io(fd, Dir::Write, nb, Call::SOCKET, || unsafe { real::sendmsg(fd, msg, flags) });
    };
    write_whole(fd, nb, true, all, |rest, done| {
        let mut part = whole;
        part.msg_iov = rest.as_ptr().cast_mut();
        part.msg_iovlen = rest.len() as _;
        if done > 0 {
            // The rest of a stream: its ancillary data (fds passed with SCM_RIGHTS) and address
            // went with the first bytes.
            part.msg_control = std::ptr::null_mut();
            part.msg_controllen = 0;
            part.msg_name = std::ptr::null_mut();
            part.msg_namelen = 0;
        }
        // SAFETY: `part` is the caller's message over `rest`, the part of its buffers not
        // written yet.
        unsafe { real::sendmsg(fd, &part, flags) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: see above (the call is made again, with the same arguments, to collect the
    // outcome of a connect that went on in the background).
    connect::connect(fd, || unsafe { real::connect(fd, addr, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: see above.
    let new = io(fd, Dir::Read, false, Call::SOCKET, || unsafe { real::accept(fd, addr, len) }
        as ssize_t);
    accepted(new)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: see above.
    let new =
        io(fd, Dir::Read, false, Call::SOCKET, || unsafe { real::accept4(fd, addr, len, flags) }
            as ssize_t);
    accepted(new)
}

/// A new connection's fd number names a new description: forget what it named before.
fn accepted(new: ssize_t) -> c_int {
    fresh(new as c_int)
}

// The calls that make new fds: the number a new fd gets may have been closed by a call the
// patch never saw (glibc's internal `close` in `fclose`), its entry still there; the new fd
// must not be taken for the old one (F11: the fast path of `io` trusts an entry it finds), so
// each of these forgets the entry of every number it returns. No syscall: one store per fd.

/// `fd`, a number a call just returned (or -1): what it named before is forgotten.
fn fresh(fd: c_int) -> c_int {
    if fd >= 0 {
        fdtable::clear(fd);
    }
    fd
}

/// [`fresh`] for the two numbers a successful `socketpair`/`pipe`/`pipe2` wrote to `fds`.
///
/// # Safety
/// When `rc` is 0, `fds` is the caller's array of two ints, filled in by the call.
unsafe fn fresh_pair(rc: c_int, fds: *const c_int) -> c_int {
    if rc == 0 {
        // SAFETY: the call succeeded, so `fds` is the caller's two ints it filled in.
        let [a, b] = unsafe { *fds.cast::<[c_int; 2]>() };
        fresh(a);
        fresh(b);
    }
    rc
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::socket(domain, kind, protocol) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    kind: c_int,
    protocol: c_int,
    fds: *mut c_int,
) -> c_int {
    // SAFETY: see above; `fds` is filled in when the call succeeds.
    unsafe { fresh_pair(real::socketpair(domain, kind, protocol, fds), fds) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    // SAFETY: see above; `fds` is filled in when the call succeeds.
    unsafe { fresh_pair(real::pipe(fds), fds) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: see above; `fds` is filled in when the call succeeds.
    unsafe { fresh_pair(real::pipe2(fds, flags), fds) }
}

// `open` and `openat` are variadic in C; like `fcntl` they are defined with one more int,
// which is how x86_64 and aarch64 Linux pass the mode (read only with O_CREAT or O_TMPFILE).

#[unsafe(no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::open(None, false, path, flags, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::open(None, true, path, flags, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat(
    dir: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::open(Some(dir), false, path, flags, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat64(
    dir: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::open(Some(dir), true, path, flags, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn creat(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::creat(path, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn creat64(path: *const c_char, mode: libc::mode_t) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::creat64(path, mode) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn eventfd(initval: c_uint, flags: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::eventfd(initval, flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn timerfd_create(clock: libc::clockid_t, flags: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::timerfd_create(clock, flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn signalfd(fd: c_int, mask: *const libc::sigset_t, flags: c_int) -> c_int {
    // SAFETY: see above.
    let new = unsafe { real::signalfd(fd, mask, flags) };
    if fd == -1 { fresh(new) } else { new } // a given signalfd is changed, not made
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn inotify_init() -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::inotify_init() })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn inotify_init1(flags: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::inotify_init1(flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::epoll_create(size) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::epoll_create1(flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn memfd_create(name: *const c_char, flags: c_uint) -> c_int {
    // SAFETY: see above.
    fresh(unsafe { real::memfd_create(name, flags) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn splice(
    fd_in: c_int,
    off_in: *mut loff_t,
    fd_out: c_int,
    off_out: *mut loff_t,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    let pipe_nonblocking = flags & libc::SPLICE_F_NONBLOCK != 0;
    let ends = [
        End { fd: fd_in, dir: Dir::Read, pipe_nonblocking },
        End { fd: fd_out, dir: Dir::Write, pipe_nonblocking },
    ];
    // SAFETY: see above.
    transfer(ends, || unsafe { real::splice(fd_in, off_in, fd_out, off_out, len, flags) })
}

/// The two ends of a `sendfile`.
fn sendfile_ends(out_fd: c_int, in_fd: c_int) -> [End; 2] {
    [
        End { fd: in_fd, dir: Dir::Read, pipe_nonblocking: false },
        End { fd: out_fd, dir: Dir::Write, pipe_nonblocking: false },
    ]
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: see above.
    transfer(sendfile_ends(out_fd, in_fd), || unsafe {
        real::sendfile(out_fd, in_fd, offset, count)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off64_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: see above.
    transfer(sendfile_ends(out_fd, in_fd), || unsafe {
        real::sendfile64(out_fd, in_fd, offset, count)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: see above.
    unsafe { poll::poll(fds, nfds, timeout) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int {
    // SAFETY: a non-null `req` points to a live timespec (the caller's contract).
    let d = (!req.is_null()).then(|| unsafe { &*req }).and_then(duration_of);
    match d.filter(|d| !d.is_zero()).and_then(sleep::sleep) {
        Some(()) => 0,
        // SAFETY: see above.
        None => unsafe { real::nanosleep(req, rem) },
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const timespec,
    rem: *mut timespec,
) -> c_int {
    // SAFETY: a non-null `req` points to a live timespec (the caller's contract).
    let at = (!req.is_null()).then(|| unsafe { &*req });
    if let Some(at) = at
        && matches!(
            clock,
            libc::CLOCK_BOOTTIME | libc::CLOCK_REALTIME_ALARM | libc::CLOCK_BOOTTIME_ALARM
        )
        && let Some(rc) = sleep::sleep_on_clock(clock, flags, at)
    {
        return rc;
    }
    let d = match at.and_then(duration_of) {
        Some(d) if flags & libc::TIMER_ABSTIME != 0 => until(clock, d),
        // A relative sleep on a clock that runs as the monotonic one does (the realtime clocks
        // only jump, which a relative sleep does not see) lasts as long on greenhub's.
        Some(d)
            if matches!(clock, libc::CLOCK_MONOTONIC | libc::CLOCK_REALTIME | libc::CLOCK_TAI) =>
        {
            Some(d)
        }
        _ => None,
    };
    match d.filter(|d| !d.is_zero()).and_then(sleep::sleep) {
        Some(()) => 0,
        // SAFETY: see above.
        None => unsafe { real::clock_nanosleep(clock, flags, req, rem) },
    }
}

/// How long until the absolute time `at` on `clock` (monotonic, realtime or TAI only).
fn until(clock: libc::clockid_t, at: Duration) -> Option<Duration> {
    if !matches!(clock, libc::CLOCK_MONOTONIC | libc::CLOCK_REALTIME | libc::CLOCK_TAI) {
        return None;
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid out-pointer.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(at.saturating_sub(duration_of(&now)?))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t {
    wait_child(child_of(pid), options, |nohang| {
        let options = options | if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: see above.
        let r = unsafe { real::waitpid(pid, status, options) };
        (r, r != 0)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn wait4(
    pid: pid_t,
    status: *mut c_int,
    options: c_int,
    usage: *mut rusage,
) -> pid_t {
    wait_child(child_of(pid), options, |nohang| {
        let options = options | if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: see above.
        let r = unsafe { real::wait4(pid, status, options, usage) };
        (r, r != 0)
    })
}

fn child_of(pid: pid_t) -> Child {
    if pid > 0 { Child::Pid(pid) } else { Child::Any }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn waitid(
    idtype: idtype_t,
    id: id_t,
    info: *mut siginfo_t,
    options: c_int,
) -> c_int {
    let child = match idtype {
        libc::P_PID => Child::Pid(id as pid_t),
        libc::P_PIDFD => Child::Pidfd(id as c_int),
        _ => Child::Any,
    };
    // A WNOHANG try tells whether it found a child by `si_pid`: it needs an info struct even
    // when the caller passed none (Linux allows a null one).
    // SAFETY: an all-zero siginfo_t is a valid value of the plain C struct.
    let mut own: siginfo_t = unsafe { std::mem::zeroed() };
    wait_child(child, options, |nohang| {
        if !nohang {
            // SAFETY: see above.
            return (unsafe { real::waitid(idtype, id, info, options) }, true);
        }
        let out = if info.is_null() { &raw mut own } else { info };
        // SAFETY: see above; `out` is a valid out-pointer (the caller's or `own`), and the
        // kernel fills it in (si_pid 0 when no child changed state).
        unsafe {
            std::ptr::write_bytes(out, 0, 1);
            let r = real::waitid(idtype, id, out, options | libc::WNOHANG);
            (r, r != 0 || (*out).si_pid() != 0)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // SAFETY: see above.
    unsafe { resolve::getaddrinfo(node, service, hints, res) }
        .unwrap_or_else(|| unsafe { real::getaddrinfo(node, service, hints, res) })
}

// The exec family and posix_spawn: fds that reach the new program are handed over first
// (`exec.rs`).

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec::before_exec();
    // SAFETY: see above.
    unsafe { real::execve(path, argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    exec::before_exec();
    // SAFETY: see above.
    unsafe { real::execv(path, argv) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    exec::before_exec();
    // SAFETY: see above.
    unsafe { real::execvp(file, argv) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec::before_exec();
    // SAFETY: see above.
    unsafe { real::execvpe(file, argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    exec::before_exec();
    // SAFETY: see above.
    unsafe { real::fexecve(fd, argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    exec::before_spawn();
    // SAFETY: see above.
    unsafe { real::posix_spawn(pid, path, actions, attr, argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    exec::before_spawn();
    // SAFETY: see above.
    unsafe { real::posix_spawnp(pid, file, actions, attr, argv, envp) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn_file_actions_adddup2(
    actions: *mut posix_spawn_file_actions_t,
    fd: c_int,
    newfd: c_int,
) -> c_int {
    exec::giving(fd);
    // SAFETY: see above.
    unsafe { real::posix_spawn_file_actions_adddup2(actions, fd, newfd) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    fdtable::clear(fd);
    crate::io::forget_kept(fd); // while the fd is still open: its registration leaves epoll
    // SAFETY: see above.
    unsafe { real::close(fd) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: see above.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        fdtable::copy(fd, new);
    }
    new
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        crate::io::forget_kept(new); // `new` is closed by the call
    }
    // SAFETY: see above.
    let rc = unsafe { real::dup2(old, new) };
    if rc >= 0 && old != new {
        fdtable::copy(old, new);
    }
    rc
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new {
        crate::io::forget_kept(new); // `new` is closed by the call
    }
    // SAFETY: see above.
    let rc = unsafe { real::dup3(old, new, flags) };
    if rc >= 0 {
        fdtable::copy(old, new);
    }
    rc
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    fd_calls::fcntl(fd, cmd, arg)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: libc::c_ulong, arg: usize) -> c_int {
    // SAFETY: see above.
    unsafe { fd_calls::ioctl(fd, request, arg) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    // SAFETY: see above.
    blocking_call::setsockopt(fd, level, name, || unsafe {
        real::setsockopt(fd, level, name, value, len)
    })
}
