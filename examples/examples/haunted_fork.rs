//! haunted_fork: what goes wrong when a forked child keeps its parent's hub, and how
//! `start_process` avoids it.
//!
//! Teaches: `fork` copies the whole hub into the child: its coroutines, its timers, and the file
//! descriptor of its epoll instance, which names the *same* kernel object as the parent's. A child
//! made by a raw `libc::fork` inside a hub that goes on using that hub (here: it just calls
//! `greenhub::sleep`) runs the parent's loop on the parent's epoll instance. The edge-triggered
//! event meant for the parent's reader coroutine is reported to the child instead, the child's
//! *copy* of that coroutine wakes up and reads the parent's message (a "haunting" clone), and the
//! parent's reader never hears of it. Then the same with `greenhub_ipc::start_process`, whose
//! child forgets the inherited hub without touching it and runs a fresh one: the parent's reader
//! gets its message. See `docs/more-than-one-hub.md`.
//!
//! The run is deterministic: the parent blocks in `waitpid` (on purpose, stalling its own hub)
//! while the haunted child runs, so only the child polls the shared epoll instance.
//!
//! Run it: `cargo run --release -p examples --example haunted_fork`
//!
//! Expected output:
//! ```text
//! -- a raw fork inside a hub; the child goes on with the hub it inherited
//! parent: the reader coroutine waits on a socket; fork, then waitpid
//! child: the reader coroutine, a copy of the parent's, woke up in the child and read "for the parent"
//! parent: the child has exited; the message is gone from the socket: true; the reader still waits: true
//! parent: after "sent again" the reader woke within 200 ms: false; the data waits unread: true
//! parent: the child's copy of the reader dropped its socket when it ended, and that deregistered the fd from the shared epoll instance
//! -- start_process: the child forgets the inherited hub and runs a fresh one
//! parent: the reader read "for the parent"; the child exited with exit status: 0
//! ```

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use greenhub::net::UnixStream;

/// A coroutine that reads one message from `socket`. Should it ever run in another process
/// than the one that spawned it, it says so: that is the haunting.
fn reader(mut socket: UnixStream) -> greenhub::JoinHandle<String> {
    let spawner = std::process::id();
    greenhub::spawn(move || {
        let mut buf = [0; 64];
        let n = socket.read(&mut buf).expect("read"); // suspends until the socket is readable
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if std::process::id() != spawner {
            println!(
                "child: the reader coroutine, a copy of the parent's, woke up in the child and \
                 read {message:?}"
            );
        }
        message
    })
}

/// Whether nothing is waiting to be read on `fd` (a non-blocking peek).
fn nothing_to_read(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into a live local; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

fn haunted() -> io::Result<()> {
    let (ours, mut theirs) = UnixStream::pair()?;
    let ours_fd = ours.as_raw_fd();
    let reader = reader(ours);
    greenhub::yield_now(); // the reader runs, finds nothing, registers with epoll, suspends
    println!("parent: the reader coroutine waits on a socket; fork, then waitpid");
    // SAFETY: this process has one thread (the example starts no other), so no lock is held
    // across the fork by a thread that would not exist in the child. The child writes, sleeps
    // on the hub it inherited (the mistake this example shows), prints, and ends with `_exit`,
    // so it never returns into the parent's frames nor runs the parent's destructors.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        theirs.write_all(b"for the parent").expect("write"); // readable edge: on the shared epoll
        greenhub::sleep(Duration::from_millis(50)); // the inherited loop polls the shared epoll
        io::stdout().flush().expect("flush");
        // SAFETY: ends the child at once; nothing of the parent's state is unwound.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live local. Blocking here stalls this hub,
    // on purpose: only the child polls the shared epoll instance meanwhile.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
    for _ in 0..3 {
        greenhub::yield_now(); // turns of our loop: each polls epoll, finding no event
    }
    println!(
        "parent: the child has exited; the message is gone from the socket: {}; the reader still \
         waits: {}",
        nothing_to_read(ours_fd),
        !reader.is_finished()
    );
    theirs.write_all(b"sent again")?;
    let woke = reader.wait_timeout(Duration::from_millis(200));
    let data_waits = !nothing_to_read(ours_fd);
    println!(
        "parent: after \"sent again\" the reader woke within 200 ms: {woke}; the data waits \
         unread: {data_waits}"
    );
    println!(
        "parent: the child's copy of the reader dropped its socket when it ended, and that \
         deregistered the fd from the shared epoll instance"
    );
    reader.cancel();
    Ok(())
}

fn fresh() -> Result<(), greenhub_ipc::Error> {
    let (ours, theirs) = UnixStream::pair()?;
    let reader = reader(ours);
    greenhub::yield_now();
    let child = greenhub_ipc::start_process(theirs, |mut theirs| {
        theirs.write_all(b"for the parent")?;
        greenhub::sleep(Duration::from_millis(50)); // this loop polls the child's own epoll
        Ok::<(), io::Error>(())
    })?;
    let status = child.join()?;
    let message = reader.join().expect("the reader");
    println!("parent: the reader read {message:?}; the child exited with {status}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("-- a raw fork inside a hub; the child goes on with the hub it inherited");
    greenhub::run(haunted)?;
    println!("-- start_process: the child forgets the inherited hub and runs a fresh one");
    greenhub::run(fresh)?;
    Ok(())
}
