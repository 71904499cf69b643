//! Outside a hub (a plain thread, and the main thread before and after `run`), the patched
//! calls are exactly libc's: blocking calls block the thread, the program's own O_NONBLOCK gives
//! EAGAIN, flags are what the program set. And an fd the patch made non-blocking inside a hub
//! still behaves as blocking when a plain thread uses it afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn visible_flags(fd: i32) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

/// The std calls the patch covers, on whatever thread runs this (no hub).
fn std_calls_behave_as_libc() {
    assert!(!greenhub_is_running());
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    assert!(start.elapsed() >= Duration::from_millis(5));

    let out = Command::new("sh").args(["-c", "echo plain"]).output().unwrap();
    assert_eq!(out.stdout, b"plain\n");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let mut client = TcpStream::connect(addr).unwrap();
    assert_eq!(visible_flags(client.as_raw_fd()) & libc::O_NONBLOCK, 0);
    client.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    server.join().unwrap();

    let (_a, mut b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    assert_eq!(b.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_ne!(visible_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0);
    b.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    b.set_nonblocking(false).unwrap();
    assert_eq!(b.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::WouldBlock); // SO_RCVTIMEO
}

fn greenhub_is_running() -> bool {
    greenhub::ext::hub_id().is_some()
}

#[test]
fn on_a_plain_thread_std_calls_are_libcs() {
    greenhub::patch::install();
    std::thread::spawn(std_calls_behave_as_libc).join().unwrap();
}

#[test]
fn before_and_after_run_on_the_hubs_own_thread_std_calls_are_libcs() {
    greenhub::patch::install();
    std_calls_behave_as_libc();
    greenhub::run(|| greenhub::sleep(Duration::from_millis(1)));
    std_calls_behave_as_libc();
}

#[test]
fn a_socket_managed_in_a_hub_still_blocks_on_a_plain_thread() {
    greenhub::patch::install();
    let (a, b) = UnixStream::pair().unwrap();
    // Used in a coroutine first: the patch puts it in non-blocking mode behind the program.
    let b = greenhub::run(move || {
        (&b).write_all(b"-").unwrap();
        b
    });
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        tx.send(()).unwrap();
        let mut buf = [0u8; 1];
        (&b).read_exact(&mut buf).map(|()| buf[0]) // must block, not fail with WouldBlock
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20)); // (only widens the window the bug would show in)
    (&a).write_all(b"z").unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), b'z');
}
