//! The O_NONBLOCK the patch sets never reaches another program: a socket or pipe the patch
//! manages is blocking in a program it is given to (as stdio by std's `Command`, inherited
//! across `exec`, through a `pre_exec` fork and exec, or with greenhub-ipc's `Command::pass`).
//! In the parent, such a description is shared from then on: still cooperative, never switched
//! back to non-blocking.

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::time::Duration;

use greenhub_patch_tests::{kernel_flags, suspends_only_the_caller};

/// A connected pair whose `b` end the patch manages (it was used in a coroutine with a wait).
fn managed_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    let writer = greenhub::spawn(move || {
        greenhub::yield_now();
        (&a).write_all(b"-").unwrap();
        a
    });
    (&b).read_exact(&mut [0u8; 1]).unwrap();
    let a = writer.join().unwrap();
    assert_ne!(kernel_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0, "the patch does not manage it");
    (a, b)
}

/// A pipe whose write end the patch manages (a write went through it in a coroutine).
fn managed_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (mut reader, writer) = std::io::pipe().unwrap();
    (&writer).write_all(b"-").unwrap();
    reader.read_exact(&mut [0u8; 1]).unwrap();
    assert_ne!(kernel_flags(writer.as_raw_fd()) & libc::O_NONBLOCK, 0, "not managed");
    (reader, writer)
}

/// A shell command that prints the `flags:` line of its fd `fd` on its stderr.
fn print_flags_of(fd: i32) -> String {
    format!("grep flags /proc/self/fdinfo/{fd} >&2")
}

/// Whether a `flags:` line (octal) has O_NONBLOCK.
fn nonblocking_in(line: &str) -> bool {
    let octal = line.trim().strip_prefix("flags:").unwrap_or_else(|| panic!("no flags: {line:?}"));
    let flags = i32::from_str_radix(octal.trim(), 8).unwrap();
    flags & libc::O_NONBLOCK != 0
}

/// Whether the `flags:` line a program printed on stderr has O_NONBLOCK.
fn nonblocking_there(out: &Output) -> bool {
    nonblocking_in(&String::from_utf8_lossy(&out.stderr))
}

/// Whether a program given `fd` as its stdin (by std's `Command`) finds it non-blocking.
fn nonblocking_as_stdin(fd: OwnedFd) -> bool {
    let out = Command::new("sh")
        .args(["-c", &print_flags_of(0)])
        .stdin(Stdio::from(fd))
        .output()
        .unwrap();
    nonblocking_there(&out)
}

/// The parent's own fd on a description it gave away: a read still waits cooperatively, and
/// the patch did not switch it back to non-blocking.
fn still_cooperative_and_blocking(a: UnixStream, b: &UnixStream) {
    let n = suspends_only_the_caller(
        || (&*b).read(&mut [0u8; 4]).unwrap(),
        move || (&a).write_all(b"ping").unwrap(),
    );
    assert_eq!(n, 4);
    assert_eq!(kernel_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0, "non-blocking while shared");
}

#[test]
fn a_managed_socket_given_as_stdin_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let given = OwnedFd::from(b.try_clone().unwrap());
        assert!(!nonblocking_as_stdin(given), "the program got the patch's O_NONBLOCK");
        still_cooperative_and_blocking(a, &b);
    });
}

#[test]
fn a_clone_made_before_the_patch_saw_the_socket_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let given = OwnedFd::from(b.try_clone().unwrap()); // before the patch saw `b`
        (&a).write_all(b"-").unwrap();
        (&b).read_exact(&mut [0u8; 1]).unwrap(); // the patch manages the description now
        assert_ne!(kernel_flags(given.as_raw_fd()) & libc::O_NONBLOCK, 0, "not managed");
        assert!(!nonblocking_as_stdin(given), "the program got the patch's O_NONBLOCK");
        still_cooperative_and_blocking(a, &b);
    });
}

#[test]
fn a_managed_pipe_given_as_stdout_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (mut reader, writer) = managed_pipe();
        let mut command = Command::new("sh");
        // The program reports the flags of its stdout through its stdout.
        command.args(["-c", "grep flags /proc/self/fdinfo/1"]).stdout(writer);
        assert!(command.status().unwrap().success());
        drop(command); // closes the parent's copy of the write end
        let mut line = String::new();
        reader.read_to_string(&mut line).unwrap();
        assert!(!nonblocking_in(&line), "the program got the patch's O_NONBLOCK");
    });
}

#[test]
fn a_managed_socket_inherited_across_exec_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let fd = b.as_raw_fd();
        // SAFETY: F_SETFD on an fd we own: it stays open across exec.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
        let out = Command::new("sh").args(["-c", &print_flags_of(fd)]).output().unwrap();
        assert!(!nonblocking_there(&out), "the program got the patch's O_NONBLOCK");
        still_cooperative_and_blocking(a, &b);
    });
}

#[test]
fn a_managed_socket_given_through_fork_and_exec_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (_a, b) = managed_pair();
        let mut command = Command::new("sh");
        command.args(["-c", &print_flags_of(0)]).stdin(Stdio::from(OwnedFd::from(b)));
        // SAFETY: the hook does nothing; having one makes std fork and exec by itself (no
        // posix_spawn), through the patch's `dup2` and `execvp`.
        unsafe { command.pre_exec(|| Ok(())) };
        let out = command.output().unwrap();
        assert!(!nonblocking_there(&out), "the program got the patch's O_NONBLOCK");
    });
}

#[test]
fn a_managed_socket_passed_with_greenhub_ipc_is_blocking_in_the_program() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (_a, b) = managed_pair();
        let mut command = greenhub_ipc::Command::new("sh");
        let fd = command.pass(b);
        command.args(["-c", &print_flags_of(fd)]);
        let out = command.output().unwrap();
        assert!(!nonblocking_there(&out), "the program got the patch's O_NONBLOCK");
    });
}

#[test]
fn a_second_reader_of_a_shared_pipe_waits_again_when_the_first_took_the_bytes() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (reader, mut writer) = managed_pipe();
        // A program gets a copy of the read end: the description is shared from now on, left
        // blocking, and waited on with poll.
        let given = reader.try_clone().unwrap();
        assert!(Command::new("true").stdin(given).status().unwrap().success());
        assert_eq!(kernel_flags(reader.as_raw_fd()) & libc::O_NONBLOCK, 0, "non-blocking");
        let reader = Rc::new(reader);
        let done = Rc::new(Cell::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (reader, done) = (Rc::clone(&reader), Rc::clone(&done));
                greenhub::spawn(move || {
                    let mut byte = [0u8; 1];
                    assert_eq!((&*reader).read(&mut byte).unwrap(), 1);
                    done.set(done.get() + 1);
                    byte[0]
                })
            })
            .collect();
        // One byte wakes both readers; the second must wait again, not block the thread in
        // `read`, or this coroutine cannot tell the writer thread that the first got it.
        let (took_one, first_taken) = std::sync::mpsc::channel();
        let feeder = std::thread::spawn(move || {
            writer.write_all(b"x").unwrap();
            let hub_ran = first_taken.recv_timeout(Duration::from_secs(10)).is_ok();
            writer.write_all(b"y").unwrap();
            hub_ran
        });
        while done.get() == 0 {
            greenhub::yield_now();
        }
        took_one.send(()).unwrap();
        let mut got: Vec<u8> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, b"xy");
        assert!(feeder.join().unwrap(), "the second reader's read held the hub's thread");
    });
}

#[test]
fn a_large_datagram_to_a_socket_shared_with_a_program_stays_one_datagram() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        a.send(b"-").unwrap(); // the patch sees the socket in a coroutine
        b.recv(&mut [0u8; 1]).unwrap();
        let given = OwnedFd::from(a.try_clone().unwrap());
        assert!(Command::new("true").stdin(given).status().unwrap().success());
        // Bigger than PIPE_BUF: a write in parts would make two datagrams of it.
        let datagram = vec![7u8; 3 * libc::PIPE_BUF];
        assert_eq!(a.send(&datagram).unwrap(), datagram.len());
        let mut got = vec![0u8; 2 * datagram.len()];
        assert_eq!(b.recv(&mut got).unwrap(), datagram.len(), "the datagram was split");
    });
}

/// Sends `fd` over `via` with `SCM_RIGHTS`: through the patch's `sendmsg` hook, or (`raw`) with
/// a raw syscall, as a program without the patch would.
fn send_fd(via: &UnixStream, fd: RawFd, raw: bool) {
    let mut space = [0u64; 8]; // aligned for cmsghdr; far more than CMSG_SPACE(4)
    let mut byte = *b"f";
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: an all-zero msghdr is a valid "no name, no control" message; the control buffer
    // is live and large enough for one cmsghdr with one int, which the CMSG macros fill in.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        (msg.msg_iov, msg.msg_iovlen) = (&raw mut iov, 1);
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
        match raw {
            true => libc::syscall(libc::SYS_sendmsg, via.as_raw_fd(), &msg, 0) as isize,
            false => libc::sendmsg(via.as_raw_fd(), &msg, 0),
        }
    };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
}

/// Receives one fd sent with `SCM_RIGHTS` over `via`: through the patch's `recvmsg` hook, or
/// (`raw`) with a raw syscall.
fn recv_fd(via: &UnixStream, raw: bool) -> OwnedFd {
    let mut space = [0u64; 8];
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: as in `send_fd`; the kernel fills in the control buffer, and the fd read from
    // it is new and owned here from then on.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        (msg.msg_iov, msg.msg_iovlen) = (&raw mut iov, 1);
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space) as _;
        let got = match raw {
            true => libc::syscall(libc::SYS_recvmsg, via.as_raw_fd(), &mut msg, 0) as isize,
            false => libc::recvmsg(via.as_raw_fd(), &mut msg, 0),
        };
        assert_eq!(got, 1, "recvmsg: {}", std::io::Error::last_os_error());
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS, "no fd came");
        OwnedFd::from_raw_fd(libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned())
    }
}

/// Regression (SCM_RIGHTS, sending): a managed socket passed with `SCM_RIGHTS` carried the
/// patch's O_NONBLOCK to the receiver, a program expecting the blocking fd it was given. The
/// `sendmsg` hook hands each fd it passes over first, as a spawn does.
#[test]
fn a_managed_socket_passed_with_scm_rights_is_blocking_for_the_receiver() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let (tx, rx) = UnixStream::pair().unwrap();
        send_fd(&tx, b.as_raw_fd(), false);
        let theirs = recv_fd(&rx, true); // as a program without the patch receives it
        assert_eq!(kernel_flags(theirs.as_raw_fd()) & libc::O_NONBLOCK, 0, "the flag leaked");
        still_cooperative_and_blocking(a, &b);
    });
}

/// Regression (SCM_RIGHTS, receiving): a blocking socket received with `SCM_RIGHTS` had no
/// entry, so its first wait in a coroutine made it managed, setting O_NONBLOCK on a description
/// the sender shares. The `recvmsg` hook makes each fd it receives polled.
#[test]
fn a_blocking_socket_received_with_scm_rights_is_never_made_non_blocking() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let (tx, rx) = UnixStream::pair().unwrap();
        send_fd(&tx, b.as_raw_fd(), true); // as a program without the patch sends it
        drop(b);
        let ours = UnixStream::from(recv_fd(&rx, false));
        still_cooperative_and_blocking(a, &ours);
    });
}

/// Regression: on a polled fd (a pipe received with `SCM_RIGHTS`, as inherited stdio is; a
/// blocking eventfd, timerfd, signalfd, epoll instance), the patch waited for readiness before
/// calls that the kernel answers at once whatever the readiness: a read of no bytes from an empty
/// pipe (0), a read of a pipe's write end or a write to its read end (`EBADF`), a `recv` or
/// `accept` on a pipe (`ENOTSOCK`), a read shorter than an eventfd's, timerfd's or signalfd's
/// record, and any read of an epoll fd (`EINVAL`).
/// Each waited until the fd became ready, forever here; libc returns at once.
#[test]
fn calls_the_kernel_answers_at_once_never_wait_on_a_polled_fd() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (tx, rx) = UnixStream::pair().unwrap();
        let mut ends = [0; 2];
        // SAFETY: `ends` is a valid array of two ints; the fds are owned below.
        assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the pipe's two fds, new and owned here.
        let mine = unsafe { ends.map(|fd| OwnedFd::from_raw_fd(fd)) };
        send_fd(&tx, mine[0].as_raw_fd(), false);
        send_fd(&tx, mine[1].as_raw_fd(), false);
        let (read_end, write_end) = (recv_fd(&rx, false), recv_fd(&rx, false));
        // SAFETY: the flags are valid; the results are checked and owned.
        let anon = unsafe {
            let mut usr2: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            [
                libc::eventfd(0, libc::EFD_CLOEXEC),
                libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC),
                libc::signalfd(-1, &usr2, libc::SFD_CLOEXEC),
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
            ]
            .map(|fd| {
                assert!(fd >= 0, "{}", std::io::Error::last_os_error());
                OwnedFd::from_raw_fd(fd)
            })
        };
        let mut buf = [0u8; 8];
        let at_once = |what: &str, call: &dyn Fn() -> isize| {
            let answer = greenhub::timeout(Duration::from_secs(5), || match call() {
                n if n < 0 => Err(std::io::Error::last_os_error().raw_os_error()),
                n => Ok(n),
            });
            answer.unwrap_or_else(|_| panic!("{what} waited; libc answers at once"))
        };
        let p = buf.as_mut_ptr().cast::<libc::c_void>();
        // SAFETY: reads at most 8 bytes into the live `buf`.
        let read = move |fd: RawFd, n: usize| move || unsafe { libc::read(fd, p, n.min(8)) };
        // SAFETY: writes at most 8 bytes of the live `buf`.
        let write = move |fd: RawFd, n: usize| move || unsafe { libc::write(fd, p, n.min(8)) };
        let (r, w) = (read_end.as_raw_fd(), write_end.as_raw_fd());
        assert_eq!(at_once("a read of 0 bytes", &read(r, 0)), Ok(0));
        // (The pipe is empty: these would wait for readiness.)
        // SAFETY: receives at most 8 bytes into the live `buf`.
        let recv = || unsafe { libc::recv(r, p, 8, 0) };
        let enotsock = Err(Some(libc::ENOTSOCK));
        assert_eq!(at_once("a recv on a pipe", &recv), enotsock);
        // SAFETY: accept allows null address pointers.
        let accept = || unsafe { libc::accept(r, std::ptr::null_mut(), std::ptr::null_mut()) };
        assert_eq!(at_once("an accept on a pipe", &|| accept() as isize), enotsock);
        // SAFETY: `w` is a pipe's write end.
        let fill_then_write_none = || unsafe { fill_then_write_none(w) };
        assert_eq!(at_once("a write of 0 bytes", &fill_then_write_none), Ok(0));
        let ebadf = Err(Some(libc::EBADF));
        assert_eq!(at_once("a read of the write end", &read(w, 1)), ebadf);
        assert_eq!(at_once("a write to the read end", &write(r, 1)), ebadf);
        let einval = Err(Some(libc::EINVAL));
        for (fd, what) in anon.iter().zip(["eventfd", "timerfd", "signalfd", "epoll fd"]) {
            let got = at_once(what, &read(fd.as_raw_fd(), 4));
            assert_eq!(got, einval, "a 4-byte read of a {what}");
        }
    });
}

/// Fills the pipe whose write end is `fd` (blocking), then writes nothing to it.
///
/// # Safety
/// `fd` is a pipe's write end.
unsafe fn fill_then_write_none(fd: RawFd) -> isize {
    // SAFETY: F_GETPIPE_SZ and F_SETFL take ints; the writes read a live buffer.
    unsafe {
        let size = libc::fcntl(fd, libc::F_GETPIPE_SZ) as usize;
        let chunk = vec![0u8; size];
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        while libc::write(fd, chunk.as_ptr().cast(), size) > 0 {}
        libc::fcntl(fd, libc::F_SETFL, flags);
        libc::write(fd, chunk.as_ptr().cast(), 0)
    }
}
