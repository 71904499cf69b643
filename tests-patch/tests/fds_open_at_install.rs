//! The fds open when `install` runs may be shared with other processes: the patch never
//! switches them to non-blocking, not even after the program changed their O_NONBLOCK itself
//! and back; and one the program had made non-blocking before still gives EAGAIN at once.
//!
//! One test only: `install` has to run after the fds were made, and runs once per process.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use greenhub_patch_tests::{kernel_flags, suspends_only_the_caller};

/// A read on `reader` that has to wait until a plain thread writes through `writer`: it
/// suspends only this coroutine, and `reader` is still blocking in the kernel afterwards.
fn read_after_a_wait(reader: &UnixStream, writer: &UnixStream) {
    let writer = writer.try_clone().unwrap();
    let n = suspends_only_the_caller(
        || (&*reader).read(&mut [0u8; 1]).unwrap(),
        move || (&writer).write_all(b"+").unwrap(),
    );
    assert_eq!(n, 1);
    assert_eq!(kernel_flags(reader.as_raw_fd()) & libc::O_NONBLOCK, 0, "switched to non-blocking");
}

fn set_fl(stream: &UnixStream, nonblocking: bool) {
    let flags = libc::O_RDWR | if nonblocking { libc::O_NONBLOCK } else { 0 };
    // SAFETY: F_SETFL with an int argument.
    assert_eq!(unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_SETFL, flags) }, 0);
}

fn would_block(stream: &UnixStream) -> bool {
    let read = greenhub::timeout(Duration::from_secs(1), || (&*stream).read(&mut [0u8; 1]));
    matches!(read, Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn fds_open_at_install_stay_as_the_program_set_them() {
    let (a, b) = UnixStream::pair().unwrap();
    let (c, d) = UnixStream::pair().unwrap();
    d.set_nonblocking(true).unwrap(); // the program's own choice, before install
    greenhub::patch::install();
    greenhub::run(move || {
        read_after_a_wait(&b, &a);

        b.set_nonblocking(true).unwrap(); // ioctl(FIONBIO), as std does it
        assert!(would_block(&b), "the program's O_NONBLOCK did not give EAGAIN");
        b.set_nonblocking(false).unwrap();
        read_after_a_wait(&b, &a);

        set_fl(&b, true);
        assert!(would_block(&b), "the program's O_NONBLOCK did not give EAGAIN");
        set_fl(&b, false);
        read_after_a_wait(&b, &a);

        assert!(would_block(&d), "an fd non-blocking at install did not give EAGAIN at once");
        d.set_nonblocking(false).unwrap();
        read_after_a_wait(&d, &c);
    });
}
