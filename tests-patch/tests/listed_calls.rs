//! Each call the contract lists that std does not make on its own paths, made directly through
//! libc in a coroutine when it has to wait: it suspends only its caller (a ticker coroutine runs
//! meanwhile, and the call returns no sooner than a plain thread unblocks it) and returns what
//! libc would. `read`, `write`, `recv`, `send`, `connect`, `poll` and `nanosleep` are exercised
//! through std in the other files, `accept4` (std's `TcpListener::accept`) in the patch module's
//! doctest, and the child waits in `child_waits.rs`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use greenhub_patch_tests::{Ticker, errno, kernel_flags, suspends_only_the_caller};

fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() }
}

fn iovec_mut(buf: &mut [u8]) -> libc::iovec {
    libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() }
}

/// Sends `chunk`-byte messages with MSG_DONTWAIT until the socket can take no more; returns how
/// many bytes went out (the patch never waits on MSG_DONTWAIT).
fn fill(fd: RawFd, chunk: usize) -> usize {
    let buf = vec![b'.'; chunk];
    let mut sent = 0;
    loop {
        // SAFETY: `buf` is live for the call.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), chunk, libc::MSG_DONTWAIT) };
        if n < 0 {
            assert_eq!(errno(), libc::EAGAIN, "filling the socket failed");
            return sent;
        }
        sent += n as usize;
    }
}

/// Receives datagrams on `socket` (a plain thread: libc's calls) until one equals `last`;
/// returns how many came before it.
fn receive_until(socket: &UnixDatagram, last: &[u8]) -> usize {
    let mut buf = [0u8; 256];
    let mut before = 0;
    loop {
        let n = socket.recv(&mut buf).unwrap();
        if &buf[..n] == last {
            return before;
        }
        before += 1;
    }
}

#[test]
fn readv_waits_for_data_and_scatters_it() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut head, mut tail) = ([0u8; 3], [0u8; 4]);
        let n = suspends_only_the_caller(
            || {
                let iov = [iovec_mut(&mut head), iovec_mut(&mut tail)];
                // SAFETY: two live iovecs.
                unsafe { libc::readv(b.as_raw_fd(), iov.as_ptr(), 2) }
            },
            move || (&a).write_all(b"abcdefg").unwrap(),
        );
        assert_eq!(n, 7);
        assert_eq!((&head, &tail), (b"abc", b"defg"));
    });
}

#[test]
fn writev_waits_for_room_and_gathers_its_buffers() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let queued = fill(a.as_raw_fd(), 4096);
        let n = suspends_only_the_caller(
            || {
                let iov = [iovec(b"head"), iovec(b"tail")];
                // SAFETY: two live iovecs.
                unsafe { libc::writev(a.as_raw_fd(), iov.as_ptr(), 2) }
            },
            move || {
                let mut all = vec![0u8; queued + 8];
                (&b).read_exact(&mut all).unwrap();
                assert_eq!(&all[queued..], b"headtail");
            },
        );
        assert_eq!(n, 8);
    });
}

#[test]
fn recvfrom_waits_for_a_datagram_and_reports_its_sender() {
    greenhub::patch::install();
    greenhub::run(|| {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to, from) = (receiver.local_addr().unwrap(), sender.local_addr().unwrap());
        let mut buf = [0u8; 32];
        // SAFETY: an all-zero sockaddr_in is a valid value of the plain C struct.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let n = suspends_only_the_caller(
            || {
                let (fd, addr) = (receiver.as_raw_fd(), (&raw mut addr).cast::<libc::sockaddr>());
                // SAFETY: live buffer, address and length out-pointers of the sizes given.
                unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), 32, 0, addr, &mut len) }
            },
            move || {
                sender.send_to(b"datagram", to).unwrap();
            },
        );
        assert_eq!(n, 8);
        assert_eq!(&buf[..8], b"datagram");
        assert_eq!(len as usize, std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(u16::from_be(addr.sin_port), from.port(), "the wrong sender address");
    });
}

#[test]
fn sendto_waits_for_room_in_the_peers_queue() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixDatagram::pair().unwrap();
        let queued = fill(a.as_raw_fd(), 64) / 64; // datagrams
        let n = suspends_only_the_caller(
            || {
                let msg = b"sendto";
                // SAFETY: a live buffer; no address (the socket is connected).
                unsafe {
                    libc::sendto(a.as_raw_fd(), msg.as_ptr().cast(), 6, 0, std::ptr::null(), 0)
                }
            },
            move || assert_eq!(receive_until(&b, b"sendto"), queued),
        );
        assert_eq!(n, 6);
    });
}

#[test]
fn recvmsg_waits_for_data_and_scatters_it() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut head, mut tail) = ([0u8; 4], [0u8; 6]);
        let mut iov = [iovec_mut(&mut head), iovec_mut(&mut tail)];
        let (n, flags) = suspends_only_the_caller(
            || {
                // SAFETY: an all-zero msghdr is a valid (empty) header.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = 2;
                // SAFETY: the header points to two live iovecs.
                let n = unsafe { libc::recvmsg(b.as_raw_fd(), &mut msg, 0) };
                (n, msg.msg_flags)
            },
            move || (&a).write_all(b"0123456789").unwrap(),
        );
        assert_eq!((n, flags), (10, 0));
        assert_eq!((&head, &tail), (b"0123", b"456789"));
    });
}

#[test]
fn sendmsg_waits_for_room_in_the_peers_queue() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixDatagram::pair().unwrap();
        let queued = fill(a.as_raw_fd(), 64) / 64; // datagrams
        let n = suspends_only_the_caller(
            || {
                let mut iov = [iovec(b"send"), iovec(b"msg")];
                // SAFETY: an all-zero msghdr is a valid (empty) header.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = 2;
                // SAFETY: the header points to two live iovecs.
                unsafe { libc::sendmsg(a.as_raw_fd(), &msg, 0) }
            },
            move || assert_eq!(receive_until(&b, b"sendmsg"), queued),
        );
        assert_eq!(n, 7);
    });
}

#[test]
fn accept_waits_for_a_connection_and_reports_the_peer() {
    greenhub::patch::install();
    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        // SAFETY: an all-zero sockaddr_in is a valid value of the plain C struct.
        let mut peer: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let fd = suspends_only_the_caller(
            || {
                let peer = (&raw mut peer).cast::<libc::sockaddr>();
                // SAFETY: address and length out-pointers of the sizes given.
                unsafe { libc::accept(listener.as_raw_fd(), peer, &mut len) }
            },
            move || {
                let client = TcpStream::connect(addr).unwrap();
                tx.send(client).unwrap();
            },
        );
        assert!(fd >= 0, "accept: {}", std::io::Error::last_os_error());
        // SAFETY: accept returned a new fd, owned here from now on.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        let client = rx.recv().unwrap();
        assert_eq!(u16::from_be(peer.sin_port), client.local_addr().unwrap().port());
        assert_eq!(
            kernel_flags(conn.as_raw_fd()) & libc::O_NONBLOCK,
            0,
            "libc's accept gives a blocking fd"
        );
        let mut conn = TcpStream::from(conn);
        (&client).write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    });
}

#[test]
fn clock_nanosleep_relative_and_absolute_suspends_only_its_caller() {
    greenhub::patch::install();
    greenhub::run(|| {
        let d = libc::timespec { tv_sec: 0, tv_nsec: 30_000_000 };
        for clock in [libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME] {
            let ticker = Ticker::start();
            let start = Instant::now();
            // SAFETY: a live timespec; no remainder wanted.
            let rc = unsafe { libc::clock_nanosleep(clock, 0, &d, std::ptr::null_mut()) };
            assert_eq!(rc, 0);
            assert!(start.elapsed() >= Duration::from_millis(30), "clock {clock}: woke early");
            assert!(ticker.stop() > 0, "clock {clock}: no other coroutine ran during the sleep");
        }
        let mut at = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut at) };
        at.tv_nsec += 30_000_000;
        if at.tv_nsec >= 1_000_000_000 {
            (at.tv_sec, at.tv_nsec) = (at.tv_sec + 1, at.tv_nsec - 1_000_000_000);
        }
        let ticker = Ticker::start();
        let start = Instant::now();
        // SAFETY: a live timespec.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &at,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0);
        assert!(start.elapsed() >= Duration::from_millis(25), "woke before the absolute time");
        assert!(ticker.stop() > 0, "no other coroutine ran during the absolute sleep");
    });
}

#[test]
fn a_socket_write_timeout_is_honoured_while_other_coroutines_run() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (mut a, _b) = UnixStream::pair().unwrap();
        fill(a.as_raw_fd(), 4096); // the first use: the patch manages it from here
        a.set_write_timeout(Some(Duration::from_millis(60))).unwrap(); // SO_SNDTIMEO
        let ticker = Ticker::start();
        let start = Instant::now();
        let err = a.write(b"x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "SO_SNDTIMEO gives EAGAIN, as libc: {err}");
        assert!(start.elapsed() >= Duration::from_millis(60), "the timeout fired early");
        assert!(ticker.stop() > 0, "no other coroutine ran during the wait");
    });
}

/// Regression (F7): after a blocking `connect` failed (ECONNREFUSED), a second `connect` on the
/// same socket failed with ECONNABORTED, since the patch had read the outcome with
/// `getsockopt(SO_ERROR)`, which leaves the socket connecting; with libc it succeeds.
#[test]
fn connect_again_after_a_refused_connect_succeeds() {
    greenhub::patch::install();
    greenhub::run(|| {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: `fd` is open and owned here from now on.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let connect = || {
            let len = std::mem::size_of_val(&addr) as libc::socklen_t;
            // SAFETY: `addr` is a live sockaddr_in of `len` bytes.
            let rc = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
            (rc, if rc == 0 { 0 } else { errno() })
        };
        assert_eq!(connect(), (-1, libc::ECONNREFUSED), "nobody listens yet");
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(connect(), (0, 0), "the second connect, now that someone listens");
        let (_peer, _) = listener.accept().unwrap();
        drop(socket);
    });
}

/// Regression (F6): a blocking `connect` of a Unix stream socket to a listener whose backlog is
/// full failed at once with EAGAIN (the patch's non-blocking connect says so, and epoll never
/// tells when room appears). It waits until there is room, as the kernel's blocking connect
/// does, suspending only its caller; and gives up with EAGAIN once `SO_SNDTIMEO` passes.
#[test]
fn a_unix_connect_to_a_full_backlog_waits_for_room() {
    greenhub::patch::install();
    greenhub::run(|| {
        let dir = std::env::temp_dir().join(format!("greenhub-f6-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("listener");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // SAFETY: listen on our own listening socket: a backlog of one pending connection.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let first = UnixStream::connect(&path).unwrap(); // fills the backlog

        // Nobody accepts: a send timeout bounds the wait.
        // SAFETY: plain socket creation.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: `fd` is open and owned here from now on.
        let bounded = unsafe { UnixStream::from_raw_fd(fd) };
        bounded.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        // SAFETY: an all-zero sockaddr_un is a valid value of the plain C struct.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let name = path.as_os_str().as_encoded_bytes();
        for (to, &from) in sun.sun_path.iter_mut().zip(name) {
            *to = from as libc::c_char;
        }
        let ticker = Ticker::start();
        let start = Instant::now();
        let len = std::mem::size_of_val(&sun) as libc::socklen_t;
        // SAFETY: `sun` is a live sockaddr_un of `len` bytes.
        let rc = unsafe { libc::connect(fd, (&raw const sun).cast(), len) };
        assert_eq!((rc, errno()), (-1, libc::EAGAIN), "the send timeout ends the wait");
        assert!(start.elapsed() >= Duration::from_millis(50), "gave up before the send timeout");
        assert!(ticker.stop() > 0, "no other coroutine ran while connect waited");
        drop(bounded);

        // Someone accepts, once this connect waits (the acceptor runs when the root suspends).
        let acceptor = greenhub::spawn(move || {
            let (_one, _) = listener.accept().unwrap();
            let (_two, _) = listener.accept().unwrap();
        });
        let second = greenhub::timeout(Duration::from_secs(5), || UnixStream::connect(&path));
        let second = second.expect("the connect did not return");
        assert!(second.is_ok(), "the connect to a full backlog failed: {second:?}");
        acceptor.join().unwrap();
        drop((first, second));
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Regression (F12): a blocking read on an fd with an anonymous inode (eventfd, timerfd,
/// signalfd, inotify: no file type in `st_mode`) was passed straight to libc, as a regular file
/// is, and held the hub's thread until the fd was ready. It waits for readiness through the hub.
#[test]
fn a_read_on_an_eventfd_or_a_timerfd_suspends_only_its_caller() {
    greenhub::patch::install();
    greenhub::run(|| {
        // SAFETY: eventfd and timerfd_create take flags only; the results are checked and owned.
        let (event, timer) = unsafe {
            let event = libc::eventfd(0, libc::EFD_CLOEXEC);
            let timer = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
            assert!(event >= 0 && timer >= 0, "{}", std::io::Error::last_os_error());
            (OwnedFd::from_raw_fd(event), OwnedFd::from_raw_fd(timer))
        };
        let read_count = |fd: RawFd| {
            let mut count = 0u64;
            // SAFETY: reads at most 8 bytes into a live u64.
            let n = unsafe { libc::read(fd, (&raw mut count).cast(), 8) };
            (n, count)
        };
        let fd = event.as_raw_fd();
        let got = suspends_only_the_caller(
            || read_count(fd),
            move || {
                let three = 3u64;
                // SAFETY: writes 8 bytes from a live u64.
                assert_eq!(unsafe { libc::write(fd, (&raw const three).cast(), 8) }, 8);
            },
        );
        assert_eq!(got, (8, 3), "the eventfd's count");
        assert_eq!(kernel_flags(fd) & libc::O_NONBLOCK, 0, "the eventfd was made non-blocking");
        let fd = timer.as_raw_fd();
        let got = suspends_only_the_caller(
            || read_count(fd),
            move || {
                let soon = libc::itimerspec {
                    it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                    it_value: libc::timespec { tv_sec: 0, tv_nsec: 1 },
                };
                // SAFETY: a live itimerspec; no old value wanted.
                let rc = unsafe { libc::timerfd_settime(fd, 0, &soon, std::ptr::null_mut()) };
                assert_eq!(rc, 0);
            },
        );
        assert_eq!(got, (8, 1), "the timerfd's expiries");
    });
}

/// Regression (F12): `clock_nanosleep` on `CLOCK_BOOTTIME` (relative or absolute) went
/// straight to libc and held the hub's thread; and on an `_ALARM` clock, it answers what libc
/// answers (`EPERM` without `CAP_WAKE_ALARM`), and sleeps cooperatively where libc would sleep.
#[test]
fn clock_nanosleep_on_the_boot_and_alarm_clocks_suspends_only_its_caller() {
    greenhub::patch::install();
    let sleep = |clock, flags, at: &libc::timespec| {
        // SAFETY: a live timespec; no remainder wanted.
        unsafe { libc::clock_nanosleep(clock, flags, at, std::ptr::null_mut()) }
    };
    let now = |clock| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { libc::clock_gettime(clock, &mut t) }, 0);
        t
    };
    let tiny = libc::timespec { tv_sec: 0, tv_nsec: 1 };
    let clocks = [libc::CLOCK_BOOTTIME, libc::CLOCK_REALTIME_ALARM, libc::CLOCK_BOOTTIME_ALARM];
    // What libc answers on this machine (no hub: the hook is libc's call).
    let libc_says = clocks.map(|clock| sleep(clock, 0, &tiny));
    assert_eq!(libc_says[0], 0, "CLOCK_BOOTTIME");
    greenhub::run(move || {
        let d = libc::timespec { tv_sec: 0, tv_nsec: 30_000_000 };
        for (clock, libc_says) in clocks.into_iter().zip(libc_says) {
            for absolute in [false, true] {
                let (flags, at) = match absolute {
                    false => (0, d),
                    // libc refuses the clock (its time may not even be read without an RTC).
                    true if libc_says != 0 => (libc::TIMER_ABSTIME, d),
                    true => {
                        let mut at = now(clock);
                        at.tv_nsec += d.tv_nsec;
                        if at.tv_nsec >= 1_000_000_000 {
                            (at.tv_sec, at.tv_nsec) = (at.tv_sec + 1, at.tv_nsec - 1_000_000_000);
                        }
                        (libc::TIMER_ABSTIME, at)
                    }
                };
                let ticker = Ticker::start();
                let start = Instant::now();
                let rc = sleep(clock, flags, &at);
                let (waited, ticks) = (start.elapsed(), ticker.stop());
                let what = format!("clock {clock}, absolute: {absolute}");
                assert_eq!(rc, libc_says, "{what}: not libc's answer");
                if rc == 0 {
                    assert!(waited >= Duration::from_millis(25), "{what}: woke early");
                    assert!(ticks > 0, "{what}: no other coroutine ran during the sleep");
                }
            }
        }
    });
}
