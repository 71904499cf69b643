//! Thin libc wrappers for the raw measurements and the workers: clocks, peak RSS, CPU pinning,
//! fork/wait, non-blocking pipes, a one-fd epoll, and framed pipe I/O (gipc's 4-byte big-endian
//! length + payload) that reads in large chunks and splits frames in user space.
//!
//! Everything here is single-threaded, blocking-in-epoll code: it is the yardstick ("what a good
//! implementation could reach"), not a runtime.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Converts a libc return value into an `io::Result`, reading errno on -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable across processes of one machine (Python's
/// `time.monotonic()` reads the same clock).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `getrusage(who)`: `RUSAGE_SELF`, or `RUSAGE_CHILDREN` (those waited for).
fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    ru
}

/// Peak resident set size of this process so far (`ru_maxrss`), in MB (10^6 bytes).
pub fn peak_rss_mb() -> f64 {
    rusage(libc::RUSAGE_SELF).ru_maxrss as f64 * 1024.0 / 1e6
}

/// CPU time (user + system) in seconds: of this process, and of its children that have been
/// waited for.
pub fn cpu_s() -> (f64, f64) {
    let of = |who| {
        let ru = rusage(who);
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        s(ru.ru_utime) + s(ru.ru_stime)
    };
    (of(libc::RUSAGE_SELF), of(libc::RUSAGE_CHILDREN))
}

/// The minor page faults this process has taken so far.
pub fn minor_faults() -> i64 {
    rusage(libc::RUSAGE_SELF).ru_minflt
}

/// What this process's memory costs right now: resident memory plus page tables (VmRSS +
/// VmPTE of /proc/self/status), in MB (10^6 bytes).
pub fn rss_pte_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap_or("");
        line[field.len().min(line.len())..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") + kib("VmPTE:")) * 1024.0 / 1e6
}

/// Pins the calling thread (and so the children it forks afterwards) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE for any machine this runs on.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) }).map(drop)
}

/// Forks; the child runs `child` and `_exit`s with 0 (or 101 if it panics), never returning.
///
/// Only for single-threaded callers (the raw worker): a fork of a multithreaded process could
/// inherit a lock held by another thread.
pub fn fork_with(child: impl FnOnce()) -> io::Result<libc::pid_t> {
    // SAFETY: the raw worker is single-threaded, so the child inherits no lock held elsewhere.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).is_ok();
        // SAFETY: _exit ends the child at once, without running the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 101 }) };
    }
    Ok(pid)
}

/// Closes, in a forked child, a descriptor that the parent keeps using: the child's copy of the
/// `OwnedFd` is never dropped (the child ends with `_exit`), so closing its number is enough.
pub fn close_in_child(fd: &OwnedFd) {
    // SAFETY: in the child this number refers to the child's own copy of the descriptor, which
    // nothing in the child uses afterwards.
    unsafe { libc::close(fd.as_raw_fd()) };
}

/// Waits for a child and returns its raw wait status.
pub fn wait_pid(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid, writable int.
        match cvt(unsafe { libc::waitpid(pid, &mut status, 0) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(|_| status),
        }
    }
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
pub fn pipe_nonblocking() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Grows (or shrinks) a pipe's kernel buffer with `F_SETPIPE_SZ`.
pub fn set_pipe_size(fd: RawFd, bytes: usize) -> io::Result<()> {
    // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int) }).map(drop)
}

/// An epoll instance watching one fd for one direction, level-triggered: `wait` returns once the
/// fd is ready (or hung up).
#[derive(Debug)]
pub struct Epoll {
    epfd: OwnedFd,
}

impl Epoll {
    /// Watches `fd` for `events` (`libc::EPOLLIN` or `libc::EPOLLOUT`).
    pub fn new(fd: RawFd, events: i32) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory arguments.
        let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 succeeded, so `epfd` is an open descriptor we own.
        let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
        let mut ev = libc::epoll_event { events: events as u32, u64: 0 };
        // SAFETY: `ev` is a valid epoll_event; both fds are open.
        cvt(unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(Epoll { epfd })
    }

    /// Sleeps in `epoll_wait` until the fd is ready; EINTR is retried.
    pub fn wait(&self) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        loop {
            // SAFETY: `ev` has room for the one event asked for.
            match cvt(unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), &mut ev, 1, -1) }) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map(drop),
            }
        }
    }
}

/// Writes one frame (4-byte big-endian length, then `payload`) to a non-blocking fd with `writev`,
/// sleeping in epoll whenever the pipe is full.
pub fn write_frame(fd: RawFd, ep: &Epoll, payload: &[u8]) -> io::Result<()> {
    if payload.len() <= SMALL_FRAME {
        return write_small_frame(fd, ep, payload);
    }
    let header = (payload.len() as u32).to_be_bytes();
    let total = 4 + payload.len();
    let mut done = 0;
    while done < total {
        let (h, p) =
            if done < 4 { (&header[done..], payload) } else { (&[][..], &payload[done - 4..]) };
        let iov = [
            libc::iovec { iov_base: h.as_ptr() as *mut _, iov_len: h.len() },
            libc::iovec { iov_base: p.as_ptr() as *mut _, iov_len: p.len() },
        ];
        // SAFETY: both iovecs point into live slices of the lengths given.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => ep.wait()?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Payloads up to this size are copied behind their header and written with one `write`.
const SMALL_FRAME: usize = 4096;

fn write_small_frame(fd: RawFd, ep: &Epoll, payload: &[u8]) -> io::Result<()> {
    let mut frame = [0u8; 4 + SMALL_FRAME];
    frame[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    frame[4..4 + payload.len()].copy_from_slice(payload);
    let frame = &frame[..4 + payload.len()];
    let mut done = 0;
    while done < frame.len() {
        // SAFETY: the pointer and length describe a live slice.
        let n = unsafe { libc::write(fd, frame[done..].as_ptr().cast(), frame.len() - done) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => ep.wait()?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Reads frames from a non-blocking fd: large reads into one buffer, split in user space; a
/// payload larger than half the buffer is read straight into the message's own allocation.
#[derive(Debug)]
pub struct FrameReader {
    fd: RawFd,
    ep: Epoll,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// A reader of `fd` with a read buffer of `buf_size` bytes.
    pub fn new(fd: RawFd, buf_size: usize) -> io::Result<FrameReader> {
        let ep = Epoll::new(fd, libc::EPOLLIN)?;
        Ok(FrameReader { fd, ep, buf: vec![0; buf_size], start: 0, end: 0 })
    }

    /// The next message, or `None` at a clean end of stream.
    pub fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        while self.end - self.start < 4 {
            if !self.fill()? {
                return if self.start == self.end { Ok(None) } else { Err(truncated()) };
            }
        }
        let h = &self.buf[self.start..self.start + 4];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        self.start += 4;
        if len > self.buf.len() / 2 {
            return self.read_large(len).map(Some);
        }
        while self.end - self.start < len {
            if !self.fill()? {
                return Err(truncated());
            }
        }
        let msg = self.buf[self.start..self.start + len].to_vec();
        self.start += len;
        Ok(Some(msg))
    }

    /// Copies what is buffered, then reads the rest of the payload directly into the message.
    fn read_large(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut msg = Vec::with_capacity(len);
        let buffered = (self.end - self.start).min(len);
        msg.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        while msg.len() < len {
            let want = len - msg.len();
            let spare = &mut msg.spare_capacity_mut()[..want];
            // SAFETY: `spare` is writable memory of the length given.
            let n = unsafe { libc::read(self.fd, spare.as_mut_ptr().cast(), spare.len()) };
            match n {
                0 => return Err(truncated()),
                // SAFETY: read initialised the first `n` bytes of the spare capacity.
                n if n > 0 => unsafe { msg.set_len(msg.len() + n as usize) },
                _ => self.on_error()?,
            }
        }
        Ok(msg)
    }

    /// One read into the buffer's free tail (compacting first); false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        loop {
            let free = &mut self.buf[self.end..];
            // SAFETY: `free` is writable memory of the length given.
            let n = unsafe { libc::read(self.fd, free.as_mut_ptr().cast(), free.len()) };
            match n {
                0 => return Ok(false),
                n if n > 0 => {
                    self.end += n as usize;
                    return Ok(true);
                }
                _ => self.on_error()?,
            }
        }
    }

    /// EAGAIN: sleep in epoll; EINTR: retry; anything else is an error.
    fn on_error(&self) -> io::Result<()> {
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => self.ep.wait(),
            io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "stream closed inside a frame")
}
