//! Terminals and fds 0-2 that are opened (or put in place) after `install` are waited on with
//! poll and then read blocking: their file description is often shared with other programs (a
//! shell, a parent), so the patch never switches it to non-blocking. One test function, so the
//! swap of fd 0 runs alone in this binary.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use greenhub_patch_tests::{SAFETY_NET, kernel_flags};

/// Reads a line from `fd` in a coroutine while the root checks the fd's kernel flags, then
/// writes the line through `writer`. If the read blocked the hub's thread instead of suspending
/// its coroutine, a plain thread writes after [`SAFETY_NET`] and the check fails, not hangs.
fn read_waits_cooperatively_and_stays_blocking(fd: RawFd, writer: File, what: &str) {
    let written = Rc::new(Cell::new(false));
    let w = written.clone();
    let reader = greenhub::spawn(move || {
        // SAFETY: `fd` stays open for the whole test; ManuallyDrop leaves it to its owner.
        let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let mut line = [0u8; 6];
        file.read_exact(&mut line).unwrap();
        (line, w.get())
    });
    let mut writer = Some(writer);
    let net = writer.as_ref().unwrap().try_clone().unwrap();
    let safety_net = std::thread::spawn(move || {
        std::thread::sleep(SAFETY_NET);
        let _ = (&net).write_all(b"late!\n");
    });
    greenhub::yield_now(); // the reader waits in read
    assert!(!reader.is_finished(), "{what}: the read returned before anything was written");
    let nonblocking = kernel_flags(fd) & libc::O_NONBLOCK != 0;
    assert!(!nonblocking, "{what}: the patch switched a shared description to non-blocking");
    written.set(true);
    writer.take().unwrap().write_all(b"hello\n").unwrap();
    let (line, saw_written) = reader.join().unwrap();
    assert!(saw_written, "{what}: the read blocked the hub's thread");
    assert_eq!(&line, b"hello\n", "{what}");
    // Detached: it holds its own clone of the writer, so its late write (into a pty nobody
    // reads, or a socket whose peer is closed: an ignored EPIPE) can reach no later check.
    drop(safety_net);
}

#[test]
fn a_terminal_and_a_socket_at_fd_0_opened_after_install_are_polled_never_made_non_blocking() {
    greenhub::patch::install();
    greenhub::run(|| {
        // A pseudo-terminal (canonical mode: a read returns a whole line).
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: out-pointers to two live ints; the other arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh fds that nothing else owns.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        read_waits_cooperatively_and_stays_blocking(slave.as_raw_fd(), master, "a terminal");

        // A socket put at fd 0 after install (a parent's stdin is often one).
        let (ours, theirs) = UnixStream::pair().unwrap();
        // SAFETY: dup and dup2 on open fds; fd 0 is put back below.
        let saved = unsafe { libc::dup(0) };
        assert!(saved >= 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::dup2(theirs.as_raw_fd(), 0) }, 0);
        drop(theirs);
        let writer = File::from(OwnedFd::from(ours));
        read_waits_cooperatively_and_stays_blocking(0, writer, "a socket at fd 0");
        // SAFETY: as above.
        unsafe {
            libc::dup2(saved, 0);
            libc::close(saved);
        }
    });
}
