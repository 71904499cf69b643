//! Readiness waits on raw fds: `wait_readable` / `wait_writable` on a pipe and a socketpair,
//! several waiters on one fd, a full pipe or socket drained by another coroutine, and bad fds as
//! `io::Error`s; no fd leaks.
//!
//! Every test holds `process_lock`: they open and count fds, which are process-wide.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use greenhub::io::{wait_readable, wait_writable};
use greenhub::{spawn, yield_now};
use greenhub_tests::{assert_no_fd_leak, open_fds, process_lock};

/// A pipe from `libc::pipe`: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe(2) to fill.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", io::Error::last_os_error());
    // SAFETY: pipe(2) just created both fds; nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_byte(fd: &OwnedFd, byte: u8) {
    // SAFETY: writes one byte from a live local to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    assert_eq!(n, 1, "write: {}", io::Error::last_os_error());
}

fn read_byte(fd: &OwnedFd) -> u8 {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a live local from an fd we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
    assert_eq!(n, 1, "read: {}", io::Error::last_os_error());
    byte
}

/// Yields enough times for every ready coroutine to reach its next suspension.
fn settle() {
    for _ in 0..3 {
        yield_now();
    }
}

#[test]
fn wait_readable_on_a_raw_pipe() {
    let _serial = process_lock();
    let (r, w) = pipe();
    greenhub::run(|| {
        let fd = r.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished(), "readable before anything was written");
        write_byte(&w, b'x');
        waiter.join().unwrap().unwrap();
        assert_eq!(read_byte(&r), b'x');
        // Data already there: the wait returns without anyone writing.
        write_byte(&w, b'y');
        wait_readable(fd).unwrap();
        assert_eq!(read_byte(&r), b'y');
        wait_writable(w.as_raw_fd()).unwrap();
    });
}

#[test]
fn wait_readable_on_a_socketpair() {
    let _serial = process_lock();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    greenhub::run(|| {
        let fd = b.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished());
        a.write_all(b"ping").unwrap();
        waiter.join().unwrap().unwrap();
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        wait_writable(a.as_raw_fd()).unwrap();
    });
}

#[test]
fn wait_readable_sees_the_peer_close() {
    let _serial = process_lock();
    let (r, w) = pipe();
    greenhub::run(|| {
        let fd = r.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        drop(w); // EOF is readable
        waiter.join().unwrap().unwrap();
    });
}

#[test]
fn two_coroutines_waiting_on_one_fd_both_wake() {
    let _serial = process_lock();
    let (r, w) = pipe();
    greenhub::run(|| {
        let fd = r.as_raw_fd();
        let waiters: Vec<_> = (0..2).map(|_| spawn(move || wait_readable(fd))).collect();
        settle();
        assert!(waiters.iter().all(|h| !h.is_finished()));
        write_byte(&w, b'!');
        for h in waiters {
            h.join().unwrap().unwrap();
        }
    });
}

#[test]
fn a_waiter_on_one_fd_is_not_woken_by_another() {
    let _serial = process_lock();
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    greenhub::run(|| {
        let (fd1, fd2) = (r1.as_raw_fd(), r2.as_raw_fd());
        let one = spawn(move || wait_readable(fd1));
        let two = spawn(move || wait_readable(fd2));
        settle();
        write_byte(&w2, 2);
        two.join().unwrap().unwrap();
        settle();
        assert!(!one.is_finished(), "woken by another fd's readiness");
        write_byte(&w1, 1);
        one.join().unwrap().unwrap();
    });
}

#[test]
fn a_negative_fd_is_an_error_not_a_panic() {
    let _serial = process_lock();
    greenhub::run(|| {
        let err = wait_readable(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
        assert!(wait_writable(-1).is_err());
    });
}

#[test]
fn a_closed_fd_is_an_error_not_a_panic() {
    let _serial = process_lock();
    greenhub::run(|| {
        // Closed inside the hub (the hub's own fds would take the free numbers otherwise); the
        // number stays free: we hold the lock, so no other test opens fds meanwhile.
        let (r, w) = pipe();
        let closed: RawFd = r.as_raw_fd();
        drop((r, w));
        let err = wait_readable(closed).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
        assert!(wait_writable(closed).is_err());
        // The hub is fine afterwards.
        assert_eq!(spawn(|| 1).join().unwrap(), 1);
    });
}

#[test]
fn a_regular_file_is_an_error_not_a_panic() {
    let _serial = process_lock();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    greenhub::run(|| {
        let err = wait_readable(file.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    });
}

#[test]
fn a_cancelled_fd_waiter_leaves_the_fd_usable() {
    let _serial = process_lock();
    let (r, w) = pipe();
    greenhub::run(|| {
        let fd = r.as_raw_fd();
        let first = spawn(move || wait_readable(fd));
        settle();
        first.cancel();
        assert!(first.join().unwrap_err().is_cancelled());
        let second = spawn(move || wait_readable(fd));
        settle();
        write_byte(&w, 0);
        second.join().unwrap().unwrap();
    });
}

#[test]
fn readiness_waits_leak_no_fds() {
    assert_no_fd_leak(20, || {
        let (r, w) = pipe();
        greenhub::run(|| {
            let fd = r.as_raw_fd();
            let waiters: Vec<_> = (0..3).map(|_| spawn(move || wait_readable(fd))).collect();
            settle();
            write_byte(&w, 1);
            waiters.into_iter().for_each(|h| h.join().unwrap().unwrap());
            let fd = w.as_raw_fd();
            assert!(wait_readable(-1).is_err());
            wait_writable(fd).unwrap();
        });
    });
}

#[test]
fn a_hub_itself_leaks_no_fds() {
    let _serial = process_lock();
    let before = open_fds();
    for _ in 0..10 {
        greenhub::run(|| greenhub::sleep(std::time::Duration::from_millis(1)));
    }
    assert_eq!(open_fds(), before, "each run must close its epoll and eventfd");
}

#[test]
fn coroutines_that_keep_yielding_do_not_starve_fd_waiters() {
    let _serial = process_lock();
    let (r, w) = pipe();
    greenhub::run(|| {
        let fd = r.as_raw_fd();
        let woke = std::rc::Rc::new(std::cell::Cell::new(false));
        let spinner = spawn({
            let woke = woke.clone();
            move || {
                while !woke.get() {
                    yield_now(); // always ready: the hub must still poll fds
                }
            }
        });
        let waiter = spawn({
            let woke = woke.clone();
            move || {
                wait_readable(fd).unwrap();
                woke.set(true);
            }
        });
        settle();
        write_byte(&w, 1);
        waiter.join().unwrap();
        spinner.join().unwrap();
    });
}

#[test]
fn wait_readable_on_a_socket_already_drained_by_its_stream_waits_for_new_data() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = greenhub::net::UnixStream::pair().unwrap();
        let reader = spawn(move || {
            let mut buf = [0u8; 4];
            (&b).read_exact(&mut buf).unwrap(); // suspends, then gets exactly the 4 bytes
            b
        });
        settle();
        (&a).write_all(b"4444").unwrap();
        let b = reader.join().unwrap();
        // Nothing is left to read: a readiness wait must suspend until more arrives.
        let fd = b.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished(), "wait_readable returned on a socket with nothing to read");
        (&a).write_all(b"x").unwrap();
        waiter.join().unwrap().unwrap();
        drop(b);
    });
}

// ---------------------------------------------------------------------------------------------
// Closed fds and reused fd numbers (issue 7, bug 1)

/// Runs `f` in a hub on a fresh thread and returns its value, or panics if it has not returned
/// within the safety net: a hang becomes a failed test (the hung thread is left behind). The
/// caller holds `process_lock` for the thread.
fn within_safety_net<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(greenhub::run(f));
    });
    done_rx.recv_timeout(Duration::from_secs(10)).expect("the hub hung (no result in 10 s)")
}

#[test]
fn a_wait_on_an_fd_closed_by_another_coroutine_ends_with_ebadf() {
    let _serial = process_lock();
    let err = within_safety_net(|| {
        let (r, w) = pipe();
        let fd = r.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished());
        drop(r); // closes the fd under the wait
        let err = waiter.join().unwrap().unwrap_err();
        drop(w);
        err.raw_os_error()
    });
    assert_eq!(err, Some(libc::EBADF));
}

#[test]
fn a_root_waiting_on_an_fd_another_coroutine_closes_gets_ebadf_instead_of_hanging() {
    let _serial = process_lock();
    let err = within_safety_net(|| {
        let (r, w) = pipe();
        let fd = r.as_raw_fd();
        let closer = spawn(move || drop(r));
        let err = wait_readable(fd).unwrap_err(); // the root waits; nothing else can wake it
        closer.join().unwrap();
        drop(w);
        err.raw_os_error()
    });
    assert_eq!(err, Some(libc::EBADF));
}

#[test]
fn a_new_pipe_that_gets_the_fd_number_of_a_closed_waited_fd_is_registered_afresh() {
    let _serial = process_lock();
    let got = within_safety_net(|| {
        let (r, w) = pipe();
        let old = r.as_raw_fd();
        let stale = spawn(move || wait_readable(old));
        settle();
        drop(r); // `old` is free again...
        let (reader, writer) = greenhub_ipc::pipe::<u32>().unwrap();
        assert_eq!(reader.as_raw_fd(), old, "the new pipe's read end should reuse the number");
        // ... and the new pipe's waits must reach epoll: its get_timeout sees the message.
        let put = spawn(move || {
            yield_now();
            writer.put(&7).unwrap();
        });
        let got = reader.get_timeout(Duration::from_secs(2));
        put.join().unwrap();
        let stale = stale.join().unwrap().unwrap_err().raw_os_error();
        drop(w);
        (got.map_err(|e| e.to_string()), stale)
    });
    assert_eq!(got, (Ok(7), Some(libc::EBADF)));
}

#[test]
fn a_new_raw_wait_on_a_reused_fd_number_sees_the_new_file() {
    let _serial = process_lock();
    within_safety_net(|| {
        let (r, w) = pipe();
        let old = r.as_raw_fd();
        let stale = spawn(move || wait_readable(old));
        settle();
        drop((r, w));
        let (r2, w2) = pipe();
        assert_eq!(r2.as_raw_fd(), old, "the new pipe should reuse the number");
        let fresh = spawn(move || wait_readable(old));
        settle();
        assert!(!fresh.is_finished(), "the new pipe is empty");
        write_byte(&w2, 1);
        fresh.join().unwrap().unwrap();
        assert_eq!(stale.join().unwrap().unwrap_err().raw_os_error(), Some(libc::EBADF));
        drop((r2, w2));
    });
}

#[test]
fn events_of_a_closed_fd_whose_file_lives_on_in_a_dup_wake_nobody_else() {
    let _serial = process_lock();
    within_safety_net(|| {
        let (r, w) = pipe();
        let old = r.as_raw_fd();
        let dup = r.try_clone().unwrap(); // keeps the old file (and its epoll entry) alive
        let stale = spawn(move || wait_readable(old));
        settle();
        drop(r);
        let (r2, w2) = pipe();
        assert_eq!(r2.as_raw_fd(), old, "the new pipe should reuse the number");
        let fresh = spawn(move || wait_readable(old));
        settle();
        assert_eq!(stale.join().unwrap().unwrap_err().raw_os_error(), Some(libc::EBADF));
        // The old file becomes readable: its lingering epoll entry fires under the old token.
        write_byte(&w, 9);
        settle();
        assert!(!fresh.is_finished(), "woken by the old file's readiness");
        write_byte(&w2, 1);
        fresh.join().unwrap().unwrap();
        assert_eq!(read_byte(&dup), 9);
        drop((dup, w, r2, w2));
    });
}

#[test]
fn dropping_a_stream_wakes_raw_waiters_on_its_fd_with_ebadf() {
    let _serial = process_lock();
    let err = within_safety_net(|| {
        let (a, b) = greenhub::net::UnixStream::pair().unwrap();
        // A read that times out registers the stream's own fd with the hub.
        let mut buf = [0u8; 1];
        let timed_out = greenhub::timeout(Duration::from_millis(1), || (&b).read(&mut buf));
        assert!(timed_out.is_err());
        let fd = b.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished());
        drop(b);
        let err = waiter.join().unwrap().unwrap_err();
        drop(a);
        err.raw_os_error()
    });
    assert_eq!(err, Some(libc::EBADF));
}

#[test]
fn waits_on_closed_and_reused_fds_leak_no_fds() {
    assert_no_fd_leak(10, || {
        greenhub::run(|| {
            let (r, w) = pipe();
            let fd = r.as_raw_fd();
            let waiter = spawn(move || wait_readable(fd));
            settle();
            drop(r);
            assert!(waiter.join().unwrap().is_err());
            let (r2, w2) = pipe();
            let fd = r2.as_raw_fd();
            write_byte(&w2, 1);
            wait_readable(fd).unwrap();
            drop((w, r2, w2));
        });
    });
}

#[test]
fn closing_an_ipc_pipe_end_wakes_raw_waiters_on_its_fd_with_ebadf() {
    let _serial = process_lock();
    let err = within_safety_net(|| {
        let (reader, writer) = greenhub_ipc::pipe::<u32>().unwrap();
        // A get that times out registers the pipe end's own fd with the hub.
        assert!(reader.get_timeout(Duration::from_millis(1)).is_err());
        let fd = reader.as_raw_fd();
        let waiter = spawn(move || wait_readable(fd));
        settle();
        assert!(!waiter.is_finished());
        reader.close().unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        drop(writer);
        err.raw_os_error()
    });
    assert_eq!(err, Some(libc::EBADF));
}

#[test]
fn an_fd_closed_behind_a_streams_back_does_not_pass_its_registration_on() {
    let _serial = process_lock();
    within_safety_net(|| {
        let (a, b) = greenhub::net::UnixStream::pair().unwrap();
        let mut buf = [0u8; 1];
        assert!(greenhub::timeout(Duration::from_millis(1), || (&b).read(&mut buf)).is_err());
        let old = b.as_raw_fd();
        // SAFETY: closes `b`'s fd behind its back (what this test is about); `b` is forgotten
        // below, so it never closes the number again.
        assert_eq!(unsafe { libc::close(old) }, 0);
        let (r, w) = pipe();
        assert_eq!(r.as_raw_fd(), old, "the new pipe should reuse the number");
        let waiter = spawn(move || wait_readable(old));
        settle();
        assert!(!waiter.is_finished(), "the new pipe is empty");
        write_byte(&w, 1);
        waiter.join().unwrap().unwrap();
        std::mem::forget(b);
        drop((a, r, w));
    });
}

// ---------------------------------------------------------------------------------------------
// wait_writable on a full pipe or socket

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: F_GETFL on an fd we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
    // SAFETY: F_SETFL on an fd we own; no memory is passed.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "F_SETFL: {}", io::Error::last_os_error());
}

/// Writes to the non-blocking `fd` until the kernel refuses with `EAGAIN`; returns how many
/// bytes went in.
fn fill(fd: RawFd) -> usize {
    let chunk = [0x5a_u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: writes at most `chunk.len()` bytes from a live local buffer.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "write: {err}");
            return total;
        }
        total += n as usize;
    }
}

/// Reads the non-blocking `fd` until the kernel says `EAGAIN`; returns how many bytes came out.
fn drain(fd: RawFd) -> usize {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: reads at most `chunk.len()` bytes into a live local buffer.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "read: {err}");
            return total;
        }
        assert!(n > 0, "the writing end closed");
        total += n as usize;
    }
}

/// With the non-blocking `writer` full, a coroutine's `wait_writable(writer)` stays suspended
/// (while another coroutine keeps running) until a third coroutine drains `reader`, and then
/// returns.
fn wait_writable_suspends_until_another_coroutine_drains(writer: RawFd, reader: RawFd) {
    let filled = fill(writer);
    assert!(filled > 0, "nothing could be written to the empty fd");
    let waiter = spawn(move || wait_writable(writer));
    let (ticks, stop) = (Rc::new(Cell::new(0u32)), Rc::new(Cell::new(false)));
    let ticker = spawn({
        let (ticks, stop) = (ticks.clone(), stop.clone());
        move || {
            while !stop.get() {
                ticks.set(ticks.get() + 1);
                yield_now();
            }
        }
    });
    settle();
    let before = ticks.get();
    settle();
    assert!(!waiter.is_finished(), "wait_writable returned on a full fd");
    assert!(ticks.get() > before, "no other coroutine ran while one waited to write");
    assert_eq!(fill(writer), 0, "the fd was no longer full");
    let drainer = spawn(move || drain(reader));
    assert_eq!(drainer.join().unwrap(), filled);
    waiter.join().unwrap().unwrap();
    stop.set(true);
    ticker.join().unwrap();
}

#[test]
fn wait_writable_on_a_full_pipe_suspends_until_another_coroutine_drains_it() {
    let _serial = process_lock();
    within_safety_net(|| {
        let (r, w) = pipe();
        set_nonblocking(&r);
        set_nonblocking(&w);
        wait_writable_suspends_until_another_coroutine_drains(w.as_raw_fd(), r.as_raw_fd());
        drop((r, w));
    });
}

#[test]
fn wait_writable_on_a_full_socketpair_suspends_until_another_coroutine_drains_it() {
    let _serial = process_lock();
    within_safety_net(|| {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        wait_writable_suspends_until_another_coroutine_drains(a.as_raw_fd(), b.as_raw_fd());
        drop((a, b));
    });
}
