//! What a program sees through the patch is what libc would show it: blocking fds behave as
//! blocking, O_NONBLOCK set by the patch is invisible, the program's own O_NONBLOCK still gives
//! EAGAIN, socket timeouts and poll's timeout are honoured, regular files pass straight through,
//! bad fds give EBADF, and a reused fd number never inherits the old fd's state.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The flags as the kernel holds them, past the patch's `fcntl` hook (a raw syscall).
fn kernel_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

/// The flags as the program sees them (through the hook).
fn visible_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

/// A coroutine that counts how often it ran, until stopped.
fn spawn_counter() -> (Rc<Cell<u32>>, Rc<Cell<bool>>, greenhub::JoinHandle<()>) {
    let (count, stop) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
    let (c, s) = (count.clone(), stop.clone());
    let handle = greenhub::spawn(move || {
        while !s.get() {
            c.set(c.get() + 1);
            greenhub::sleep(Duration::from_millis(1));
        }
    });
    (count, stop, handle)
}

#[test]
fn the_nonblocking_flag_the_patch_sets_is_hidden_from_f_getfl() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (mut a, b) = UnixStream::pair().unwrap();
        let reader = greenhub::spawn(move || {
            let mut buf = [0u8; 2];
            (&b).read_exact(&mut buf).unwrap(); // suspends: the patch makes `b` non-blocking
            (buf, kernel_flags(b.as_raw_fd()), visible_flags(b.as_raw_fd()))
        });
        greenhub::yield_now();
        a.write_all(b"hi").unwrap();
        let (buf, kernel, visible) = reader.join().unwrap();
        assert_eq!(&buf, b"hi");
        assert_ne!(kernel & libc::O_NONBLOCK, 0, "the patch did not manage the socket");
        assert_eq!(visible & libc::O_NONBLOCK, 0, "F_GETFL shows the patch's O_NONBLOCK");
        assert_eq!(visible, kernel & !libc::O_NONBLOCK, "F_GETFL changed other flags");
    });
}

#[test]
fn an_fd_the_program_made_non_blocking_still_gives_would_block() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 1];
        b.write_all(b"-").unwrap(); // first use: the patch manages it
        b.set_nonblocking(true).unwrap(); // ioctl(FIONBIO), as std does it
        assert_eq!(b.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_ne!(visible_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0);
        b.set_nonblocking(false).unwrap(); // blocking again: suspends until data comes
        let peer = a.try_clone().unwrap();
        let writer = greenhub::spawn(move || (&peer).write_all(b"x").unwrap());
        assert_eq!(b.read(&mut buf).unwrap(), 1);
        writer.join().unwrap();
        assert_eq!(visible_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0);
        // And through fcntl(F_SETFL) too.
        // SAFETY: F_SETFL with an int argument.
        unsafe { libc::fcntl(b.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(b.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        drop(a);
    });
}

#[test]
fn a_socket_read_timeout_is_honoured_while_other_coroutines_run() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_a, mut b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let (count, stop, counter) = spawn_counter();
        let start = Instant::now();
        let err = b.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "SO_RCVTIMEO gives EAGAIN, as libc");
        assert!(start.elapsed() >= Duration::from_millis(50), "the timeout fired early");
        assert!(count.get() > 0, "the other coroutine did not run during the wait");
        stop.set(true);
        counter.join().unwrap();
    });
}

#[test]
fn poll_honours_its_timeout_and_reports_readiness() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (count, stop, counter) = spawn_counter();
        let mut fds = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let start = Instant::now();
        // SAFETY: one live pollfd.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 50) }, 0);
        assert!(start.elapsed() >= Duration::from_millis(50), "poll returned before its timeout");
        assert!(count.get() > 0, "the other coroutine did not run during the poll");
        let writer = greenhub::spawn(move || a.write_all(b"x").unwrap());
        // SAFETY: as above; no timeout.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) }, 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
        writer.join().unwrap();
        stop.set(true);
        counter.join().unwrap();
    });
}

/// Regression (F4): a poll set asking only for `POLLRDNORM`, or listing one fd twice (a second
/// registration of the fd in the patch's epoll instance failed with EEXIST and was dropped),
/// missed the data and returned 0 after the full timeout.
#[test]
fn poll_sees_rdnorm_and_an_fd_listed_twice() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let sets = [
            vec![libc::pollfd { fd, events: libc::POLLRDNORM, revents: 0 }],
            vec![
                libc::pollfd { fd, events: libc::POLLPRI, revents: 0 },
                libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
            ],
        ];
        for mut set in sets {
            // Runs once the poll below waits (the root does not suspend before).
            let peer = a.try_clone().unwrap();
            let writer = greenhub::spawn(move || (&peer).write_all(b"1").unwrap());
            // SAFETY: a live set of pollfds; the timeout only detects a failure.
            let n = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, 5000) };
            writer.join().unwrap();
            assert_eq!(n, 1, "poll missed the data: {set:?}");
            let wanted = set.iter().map(|p| p.events).fold(0, |all, e| all | e);
            let got = set.iter().map(|p| p.revents).fold(0, |all, e| all | e);
            assert_ne!(got & wanted & (libc::POLLIN | libc::POLLRDNORM), 0, "{set:?}");
            (&b).read_exact(&mut [0u8; 1]).unwrap();
        }
    });
}

/// Regression (F5): `poll(NULL, 0, ms)`, C's portable sleep, built a slice from the null
/// pointer (an abort in debug builds). It sleeps cooperatively and returns 0, as libc's does.
#[test]
fn poll_of_no_fds_is_a_cooperative_sleep() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (count, stop, counter) = spawn_counter();
        let start = Instant::now();
        // SAFETY: no fds: libc never reads the null pointer.
        assert_eq!(unsafe { libc::poll(std::ptr::null_mut(), 0, 60) }, 0);
        assert!(start.elapsed() >= Duration::from_millis(60), "poll returned before its timeout");
        assert!(count.get() > 0, "the other coroutine did not run during the poll");
        stop.set(true);
        counter.join().unwrap();
    });
}

#[test]
fn regular_files_pass_straight_through() {
    greenhub::patch::install();
    greenhub::run(|| {
        let mut file = std::fs::File::open("/proc/self/status").unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert!(text.contains("Pid:"));
        assert_eq!(kernel_flags(file.as_raw_fd()) & libc::O_NONBLOCK, 0, "a file was changed");
    });
}

#[test]
fn a_bad_fd_gives_ebadf_as_libc_does() {
    greenhub::patch::install();
    greenhub::run(|| {
        let mut buf = [0u8; 4];
        for fd in [-1, 1_000_000, 65_000] {
            // SAFETY: reading into a live buffer; the fd is invalid on purpose.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            assert_eq!(n, -1);
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EBADF));
            // SAFETY: as above.
            let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) };
            assert_eq!(
                (n, std::io::Error::last_os_error().raw_os_error()),
                (-1, Some(libc::EBADF))
            );
        }
    });
}

#[test]
fn a_reused_fd_number_never_sees_the_old_fds_state() {
    greenhub::patch::install();
    greenhub::run(|| {
        // An fd the patch manages (internally non-blocking, looks blocking)...
        let (keep, old) = UnixStream::pair().unwrap();
        (&old).write_all(b"-").unwrap();
        let number = old.into_raw_fd();
        // ...replaced behind the patch's back (raw syscalls, like glibc's internal calls) by a
        // socket the program made non-blocking itself.
        let (new, _peer) = UnixStream::pair().unwrap();
        let new_fd = new.as_raw_fd();
        // SAFETY: plain fd syscalls; `number` stays owned here and now names `new`'s socket.
        unsafe {
            libc::syscall(libc::SYS_fcntl, new_fd, libc::F_SETFL, libc::O_NONBLOCK);
            libc::syscall(libc::SYS_dup3, new_fd, number, libc::O_CLOEXEC);
        }
        drop(new);
        // SAFETY: `number` is open (dup3 above) and owned here from now on.
        let mut reused = unsafe { UnixStream::from_raw_fd(number) };
        assert_ne!(visible_flags(number) & libc::O_NONBLOCK, 0, "the old entry hid O_NONBLOCK");
        let err = reused.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "the old entry made it wait");
        drop(keep);
    });
}

/// One read that has to wait: `reader`'s peer writes a byte from another coroutine.
fn read_after_a_wait(reader: &UnixStream, writer: UnixStream) -> UnixStream {
    let feeder = greenhub::spawn(move || {
        greenhub::yield_now();
        (&writer).write_all(b"+").unwrap();
        writer
    });
    let mut byte = [0u8; 1];
    (&*reader).read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"+");
    feeder.join().unwrap()
}

#[test]
fn a_read_timeout_set_after_the_sockets_first_wait_is_still_honoured() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let _a = read_after_a_wait(&b, a); // the fd's entry and registration exist, no timeout
        b.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        let err = (&b).read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "the new SO_RCVTIMEO was ignored");
    });
}

/// `SO_RCVTIMEO_NEW` (asm-generic: x86_64, aarch64), the 64-bit-time name of `SO_RCVTIMEO`.
const SO_RCVTIMEO_NEW: i32 = 66;

/// Regression (F8): a read timeout set through a duplicate (`try_clone`) was ignored on the
/// original, whose entry said it had none (a socket's timeouts belong to the socket, shared by
/// every fd on it); and one set with `SO_RCVTIMEO_NEW` was ignored too.
#[test]
fn a_read_timeout_set_through_a_duplicate_or_its_new_name_is_honoured() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let _a = read_after_a_wait(&b, a); // `b`'s entry exists, with no timeout
        let twin = b.try_clone().unwrap();
        twin.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
        // The timeout only detects a read that never ends.
        let read = greenhub::timeout(Duration::from_secs(5), || (&b).read(&mut [0u8; 1]));
        let err = read.expect("the twin's SO_RCVTIMEO was ignored").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);

        let (c, d) = UnixStream::pair().unwrap();
        let _c = read_after_a_wait(&d, c);
        let tv: [i64; 2] = [0, 30_000]; // struct __kernel_sock_timeval: 30 ms
        let size = std::mem::size_of_val(&tv) as libc::socklen_t;
        // SAFETY: `tv` is a live __kernel_sock_timeval of `size` bytes.
        let rc = unsafe {
            libc::setsockopt(
                d.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_RCVTIMEO_NEW,
                (&raw const tv).cast(),
                size,
            )
        };
        assert_eq!(rc, 0, "setsockopt(SO_RCVTIMEO_NEW): {}", std::io::Error::last_os_error());
        let read = greenhub::timeout(Duration::from_secs(5), || (&d).read(&mut [0u8; 1]));
        let err = read.expect("SO_RCVTIMEO_NEW was ignored").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
    });
}

#[test]
fn a_number_waited_on_then_replaced_by_dup2_waits_on_the_new_file() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let _a = read_after_a_wait(&b, a);
        let number = b.into_raw_fd();
        let (c, d) = UnixStream::pair().unwrap();
        let reused = reopen_at(number, d); // dup2 over the number closes the old file
        let _c = read_after_a_wait(&reused, c);
    });
}

/// `fd` moved to the number `at` with `dup2` (through the patch's hook), its old number closed.
fn reopen_at(at: RawFd, fd: UnixStream) -> UnixStream {
    // SAFETY: `at` is a number this test owns (closed or about to be replaced); dup2 makes it
    // name `fd`'s socket, owned by the returned stream from then on.
    unsafe {
        assert_eq!(libc::dup2(fd.as_raw_fd(), at), at);
        UnixStream::from_raw_fd(at)
    }
}

/// A large write on a blocking socket in a coroutine returns the whole count, as libc's does on
/// a blocking fd (the patch made the fd non-blocking behind the program's back, so the kernel
/// took only part of it at a time): the rest was written while the caller was suspended, and a
/// reader coroutine got every byte.
#[test]
fn a_large_write_to_a_blocking_socket_returns_the_whole_count() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    greenhub::patch::install();
    greenhub::run(|| {
        const SIZE: usize = 4 << 20;
        let (writer, mut reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let drained = greenhub::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                match reader.read(&mut buf).unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let data = vec![b'x'; SIZE];
        for call in ["write", "send", "sendto"] {
            let fd = writer.as_raw_fd();
            // SAFETY: `data` is live for the call; a null address is ignored on a connected
            // stream socket.
            let n = unsafe {
                match call {
                    "write" => libc::write(fd, data.as_ptr().cast(), SIZE),
                    "send" => libc::send(fd, data.as_ptr().cast(), SIZE, 0),
                    _ => libc::sendto(fd, data.as_ptr().cast(), SIZE, 0, std::ptr::null(), 0),
                }
            };
            assert_eq!(n, SIZE as isize, "{call} returned a short count");
        }
        drop(writer);
        assert_eq!(drained.join().unwrap(), 3 * SIZE);
    });
}

/// The same for `writev` and `sendmsg` over several buffers: the whole count comes back, and the
/// reader gets every byte in order (the rest of a short write is the rest of the segments).
#[test]
fn a_large_vectored_write_to_a_blocking_socket_returns_the_whole_count_in_order() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    greenhub::patch::install();
    greenhub::run(|| {
        const MIB: usize = 1 << 20;
        let (writer, mut reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let received = greenhub::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let parts = [vec![b'a'; MIB], vec![b'b'; 2 * MIB + 17], vec![b'c'; MIB]];
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() })
            .collect();
        let total = parts.iter().map(Vec::len).sum::<usize>() as isize;
        let fd = writer.as_raw_fd();
        // SAFETY: `iov` points at `parts`, live for the call.
        let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
        assert_eq!(n, total, "writev returned a short count");
        // SAFETY: an all-zero msghdr is valid (no name, no control); it points at `iov`.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // SAFETY: `msg` and what it points at are live for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        assert_eq!(n, total, "sendmsg returned a short count");
        drop(writer);
        let expected: Vec<u8> = parts.concat();
        let got = received.join().unwrap();
        assert_eq!(got.len(), 2 * expected.len());
        assert!(got[..expected.len()] == expected[..] && got[expected.len()..] == expected[..]);
    });
}

/// `SO_SNDTIMEO` bounds a large write as a whole, as the kernel's blocking send counts it: a
/// reader that frees a little room now and then does not restart the timeout for each part, so
/// the write returns the count it got through once the timeout has passed.
#[test]
fn a_send_timeout_bounds_a_large_write_as_a_whole() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    greenhub::patch::install();
    greenhub::run(|| {
        const SIZE: usize = 4 << 20;
        let (writer, mut reader) = std::os::unix::net::UnixStream::pair().unwrap();
        writer.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let written = std::sync::Arc::new(AtomicBool::new(false));
        // A slow reader on a plain thread: it empties the socket every 100 ms (room for the
        // writer to go on within each 200 ms timeout), then reads the rest at once.
        let drainer = std::thread::spawn({
            let written = written.clone();
            move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0;
                loop {
                    if !written.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    match reader.read(&mut buf).unwrap() {
                        0 => return total,
                        n => total += n,
                    }
                }
            }
        });
        let data = vec![b'x'; SIZE];
        let start = Instant::now();
        // SAFETY: `data` is live for the call.
        let n = unsafe { libc::write(writer.as_raw_fd(), data.as_ptr().cast(), SIZE) };
        let took = start.elapsed();
        written.store(true, Ordering::SeqCst);
        assert!(n > 0 && (n as usize) < SIZE, "wrote {n} of {SIZE} bytes");
        assert!(took < Duration::from_secs(5), "the timeout restarted for each part: {took:?}");
        drop(writer);
        assert_eq!(drainer.join().unwrap(), n as usize);
    });
}

/// Bytes queued for reading on `fd` (`FIONREAD`).
fn queued(fd: RawFd) -> i32 {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
    n
}

/// Regression (F1): a blocking `MSG_WAITALL` receive returned the first part that came (5 of
/// 10 bytes), since the patch's non-blocking call returns what is there. It goes on until the
/// buffer is full, as the kernel's blocking call does, for `recv`, `recvfrom` and `recvmsg`.
#[test]
fn a_waitall_receive_on_a_blocking_socket_fills_the_whole_buffer() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        for call in ["recv", "recvfrom", "recvmsg"] {
            let peer = a.try_clone().unwrap();
            // Runs once the receive below waits; the second half goes only after the receiver
            // took the first (a bounded check of the kernel's queue, not a timed guess).
            let writer = greenhub::spawn(move || {
                (&peer).write_all(b"12345").unwrap();
                for _ in 0..5000 {
                    if queued(fd) == 0 {
                        break;
                    }
                    greenhub::sleep(Duration::from_millis(1));
                }
                (&peer).write_all(b"67890").unwrap();
            });
            let mut buf = [0u8; 10];
            let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
            let n = match call {
                // SAFETY: `buf` is live for the call.
                "recv" => unsafe { libc::recv(fd, ptr, len, libc::MSG_WAITALL) },
                "recvfrom" => {
                    // SAFETY: `buf` is live for the call; no address wanted.
                    unsafe {
                        let (addr, addrlen) = (std::ptr::null_mut(), std::ptr::null_mut());
                        libc::recvfrom(fd, ptr, len, libc::MSG_WAITALL, addr, addrlen)
                    }
                }
                _ => {
                    let mut iov = libc::iovec { iov_base: ptr, iov_len: len };
                    // SAFETY: an all-zero msghdr is a valid "no name, no control" message.
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    (msg.msg_iov, msg.msg_iovlen) = (&raw mut iov, 1);
                    // SAFETY: `msg` and the buffer it names are live for the call.
                    unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_WAITALL) }
                }
            };
            writer.join().unwrap();
            assert_eq!(n, 10, "{call} with MSG_WAITALL returned a short count");
            assert_eq!(&buf, b"1234567890", "{call}");
        }
    });
}

/// Regression (F11): a number closed behind the patch's back (glibc's internal `close` in
/// `fclose`) and reused by a new blocking socket kept the old socket's managed entry, so the
/// fast path made the real, blocking, read on it and held the hub's thread until data came.
/// The `socketpair` that reuses the number forgets the old entry.
#[test]
fn a_number_closed_by_fclose_and_reused_by_a_blocking_socket_waits_cooperatively() {
    greenhub::patch::install();
    greenhub::run(|| {
        // Another test's thread may take the number first: try again then.
        let (c, d) = (0..20)
            .find_map(|_| {
                let (a, b) = UnixStream::pair().unwrap();
                let _b = read_after_a_wait(&a, b); // `a`'s entry: managed, registered
                let number = a.into_raw_fd();
                // SAFETY: `number` is an open fd owned here; fclose closes it (in glibc, past
                // the patch's `close` hook) and frees the FILE.
                unsafe {
                    let file = libc::fdopen(number, c"r".as_ptr());
                    assert!(!file.is_null(), "fdopen: {}", std::io::Error::last_os_error());
                    libc::fclose(file);
                }
                let (c, d) = UnixStream::pair().unwrap();
                (c.as_raw_fd() == number).then_some((c, d))
            })
            .expect("the closed number was never reused");
        assert_eq!(kernel_flags(c.as_raw_fd()) & libc::O_NONBLOCK, 0, "a new socket is blocking");
        let mut byte = [0u8; 1];
        let n = greenhub_patch_tests::suspends_only_the_caller(
            || (&c).read(&mut byte).unwrap(),
            move || (&d).write_all(b"!").unwrap(),
        );
        assert_eq!((n, &byte), (1, b"!"));
    });
}

/// Regression: the kernel never waits on a socket's error queue (an empty one is `EAGAIN` at
/// once, even on a blocking socket), but the patch took that `EAGAIN` for "wait until
/// readable": a `recvmsg(MSG_ERRQUEUE)` (zerocopy completions, timestamps, `IP_RECVERR`) waited
/// forever.
#[test]
fn an_error_queue_receive_never_waits() {
    greenhub::patch::install();
    greenhub::run(|| {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one int from a live variable.
        let set = unsafe {
            let on: *const libc::c_int = &on;
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, on.cast(), 4)
        };
        assert_eq!(set, 0);
        let got = greenhub::timeout(Duration::from_secs(5), || {
            let mut buf = [0u8; 64];
            let mut control = [0u8; 256];
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len();
            // SAFETY: `msg` describes live buffers.
            let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
            (n, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(got, Ok((-1, Some(libc::EAGAIN))), "EAGAIN at once, as libc gives");
    });
}

/// Regression: a coroutine waiting in a read on an fd that another coroutine closed, whose
/// number a new (idle) file then took, fell back to a blocking poll of that number: the whole
/// hub waited on a file the reader never asked for. The wait now ends with `EBADF`, as it does
/// when the number is not reused.
#[test]
fn a_read_waiting_on_an_fd_closed_and_reused_under_it_fails_with_ebadf() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        let reader = greenhub::spawn(move || {
            let mut byte = [0u8; 1];
            // SAFETY: `byte` is live for the call.
            let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
            (n, std::io::Error::last_os_error().raw_os_error())
        });
        greenhub::yield_now(); // it waits
        // SAFETY: `fd` is ours (taken from `a`); the reader's wait sees the close.
        unsafe { libc::close(fd) };
        let mut pipe = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        assert_eq!(pipe[0], fd, "the pipe took the closed number");
        // Were the hub blocked on the pipe, this thread's byte would end it (and the reader
        // would read the pipe's byte): the test fails instead of hanging.
        let writer = pipe[1];
        let unblock = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            // SAFETY: writes one byte from a live buffer to the pipe's write end.
            unsafe { libc::write(writer, c"x".as_ptr().cast(), 1) };
        });
        let got = greenhub::timeout(Duration::from_secs(5), || reader.join().unwrap());
        assert_eq!(got, Ok((-1, Some(libc::EBADF))), "the reader's fd was closed");
        drop(unblock); // detached: it writes into the pipe later, harmlessly
    });
}

/// Regression: `O_NONBLOCK` belongs to the open file description, but a wish made through a
/// duplicate (`try_clone` then `set_nonblocking`) was recorded for that duplicate only: the
/// original went on blocking (cooperatively) and its `F_GETFL` hid the flag, where with libc
/// both are non-blocking.
#[test]
fn a_duplicate_made_non_blocking_makes_the_original_non_blocking_too() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut byte = [0u8; 1];
        let waited = greenhub::timeout(Duration::from_millis(10), || (&a).read(&mut byte));
        assert!(waited.is_err(), "a read that waits: `a` is managed now");
        let clone = a.try_clone().unwrap();
        clone.set_nonblocking(true).unwrap();
        assert_ne!(visible_flags(a.as_raw_fd()) & libc::O_NONBLOCK, 0, "F_GETFL shows it");
        let read = greenhub::timeout(Duration::from_secs(5), || (&a).read(&mut byte));
        assert_eq!(read.map(|r| r.map_err(|e| e.kind())), Ok(Err(ErrorKind::WouldBlock)));
        clone.set_nonblocking(false).unwrap();
        assert_eq!(visible_flags(a.as_raw_fd()) & libc::O_NONBLOCK, 0, "and back");
    });
}

/// Regression: once a socket's receive side is shut down (`shutdown(SHUT_RD)`, a usual way to
/// stop a thread's receive loop), the kernel's blocking receive on a datagram socket returns 0
/// and its blocking `accept` on a Unix listener fails with `EINVAL`, but the patch's
/// non-blocking calls go on saying `EAGAIN` and no new readiness edge comes: a `recv` waiting
/// when the shutdown came, or made after it, waited forever in a coroutine, and spun on a plain
/// thread.
#[test]
fn a_receive_or_accept_after_the_receive_side_was_shut_down_returns_as_libc() {
    use std::net::UdpSocket;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    greenhub::patch::install();
    greenhub::run(|| {
        let shut = |fd: RawFd| {
            // SAFETY: shutdown takes two ints.
            assert_eq!(unsafe { libc::shutdown(fd, libc::SHUT_RD) }, 0);
        };
        let bounded = |what: &str, call: Box<dyn FnOnce() -> std::io::Result<usize>>| {
            let got = greenhub::timeout(Duration::from_secs(5), call);
            let got = got.unwrap_or_else(|_| panic!("{what} waited; libc returns at once"));
            got.map_err(|e| e.raw_os_error())
        };
        // Shut down while a coroutine waits in the receive.
        let udp = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        udp.connect(udp.local_addr().unwrap()).unwrap();
        let waiting = udp.clone();
        let receiver = greenhub::spawn(move || {
            let call = Box::new(move || waiting.recv(&mut [0u8; 8]));
            bounded("a UDP recv waiting at the shutdown", call)
        });
        greenhub::yield_now();
        shut(udp.as_raw_fd());
        assert_eq!(receiver.join().unwrap(), Ok(0));
        // Shut down before the receive.
        let (dgram, _peer) = UnixDatagram::pair().unwrap();
        shut(dgram.as_raw_fd());
        let call = Box::new(move || dgram.recv(&mut [0u8; 8]));
        assert_eq!(bounded("a Unix datagram recv after the shutdown", call), Ok(0));
        // A Unix listener: accept fails with EINVAL.
        let dir = std::env::temp_dir().join(format!("greenhub-shut-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = Rc::new(UnixListener::bind(&dir).unwrap());
        let waiting = listener.clone();
        let acceptor = greenhub::spawn(move || {
            let call = Box::new(move || waiting.accept().map(|_| 1));
            bounded("an accept waiting at the shutdown", call)
        });
        greenhub::yield_now();
        shut(listener.as_raw_fd());
        assert_eq!(acceptor.join().unwrap(), Err(Some(libc::EINVAL)));
        std::fs::remove_file(&dir).unwrap();
        // A plain thread's receive on a socket the patch manages (the one above).
        let (done, finished) = std::sync::mpsc::channel();
        let fd = udp.as_raw_fd();
        std::thread::spawn(move || {
            // SAFETY: receives at most 8 bytes into a live buffer; the socket outlives the call.
            let n = unsafe { libc::recv(fd, [0u8; 8].as_mut_ptr().cast(), 8, 0) };
            let _ = done.send(n);
        });
        let got = finished.recv_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok(0), "a plain thread's recv after the shutdown did not return");
    });
}
