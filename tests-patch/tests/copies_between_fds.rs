//! Data moved between two fds, at least one a socket or pipe the patch made non-blocking, still
//! behaves as blocking: `std::io::copy` (which moves data with `splice` between a pipe and a
//! socket), `sendfile`, and plain writes through a duplicate (`try_clone`) made before the patch
//! first saw the fd. Each waits, suspending only its coroutine, where libc's call would block.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use greenhub_patch_tests::{errno, kernel_flags};
use greenhub_tests::pattern;

const LEN: usize = 1 << 20;

/// A coroutine that reads `stream` to its end slowly (a millisecond's pause before each read),
/// so that the writer's buffer fills up: the writer has to wait.
fn slow_reader(stream: UnixStream) -> greenhub::JoinHandle<Vec<u8>> {
    greenhub::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            greenhub::sleep(Duration::from_millis(1));
            match (&stream).read(&mut buf).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// A connected pair whose `b` end the patch manages already (it was used in a coroutine).
fn managed_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (&a).write_all(b"-").unwrap();
    (&b).read_exact(&mut [0u8; 1]).unwrap();
    (a, b)
}

/// A temporary file holding `data`, open for reading (its name is gone already).
fn file_with(data: &[u8]) -> std::fs::File {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let name = format!("greenhub-patch-copy-{}-{n}", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, data).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

#[test]
fn a_clone_made_before_the_first_use_blocks_like_its_twin() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let twin = a.try_clone().unwrap(); // neither fd has been seen by the patch yet
        (&twin).write_all(b"-").unwrap(); // the patch manages the shared description now
        (&b).read_exact(&mut [0u8; 1]).unwrap();
        assert_eq!(visible_flags(&a) & libc::O_NONBLOCK, 0, "F_GETFL shows the patch's flag");
        let reader = slow_reader(b);
        let data = pattern(1, LEN);
        (&a).write_all(&data).expect("a write on the blocking clone failed");
        drop((a, twin));
        assert!(reader.join().unwrap() == data, "the reader got other bytes");
    });
}

#[test]
fn a_clone_made_before_the_first_use_blocks_on_a_plain_thread_too() {
    greenhub::patch::install();
    let (a, b) = UnixStream::pair().unwrap();
    let twin = a.try_clone().unwrap();
    let (twin, b) = greenhub::run(move || {
        (&twin).write_all(b"-").unwrap(); // the patch manages the shared description now
        (&b).read_exact(&mut [0u8; 1]).unwrap();
        (twin, b)
    });
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            std::thread::sleep(Duration::from_millis(1));
            match (&b).read(&mut buf).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    });
    let data = pattern(5, LEN);
    (&a).write_all(&data).expect("a write on the blocking clone failed outside the hub");
    drop((a, twin));
    assert!(reader.join().unwrap() == data, "the reader got other bytes");
}

/// The flags of `stream` as the program sees them (through the patch's `fcntl` hook).
fn visible_flags(stream: &UnixStream) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions.
    unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFL) }
}

#[test]
fn std_io_copy_from_a_file_to_a_socket_whose_clone_was_used_first() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let twin = a.try_clone().unwrap();
        (&twin).write_all(b"-").unwrap();
        (&b).read_exact(&mut [0u8; 1]).unwrap();
        let reader = slow_reader(b);
        let data = pattern(2, LEN);
        let copied = std::io::copy(&mut file_with(&data), &mut &a).expect("std::io::copy failed");
        assert_eq!(copied, LEN as u64);
        drop((a, twin));
        assert!(reader.join().unwrap() == data, "the reader got other bytes");
    });
}

#[test]
fn std_io_copy_from_a_childs_stdout_to_a_socket_waits_for_room() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let mut child = Command::new("head")
            .args(["-c", &LEN.to_string(), "/dev/zero"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = slow_reader(a);
        // A pipe into a socket: std moves the data with splice.
        let copied = std::io::copy(&mut stdout, &mut &b).expect("std::io::copy failed");
        assert_eq!(copied, LEN as u64);
        drop(b);
        assert_eq!(reader.join().unwrap().len(), LEN);
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn std_io_copy_from_a_socket_to_a_childs_stdin_waits_for_data() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let mut child = Command::new("wc")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = greenhub::spawn(move || {
            for chunk in pattern(3, LEN).chunks(64 << 10) {
                greenhub::sleep(Duration::from_millis(1)); // so that the copy has to wait
                (&a).write_all(chunk).unwrap();
            }
        });
        // A socket into a pipe: std moves the data with splice.
        let copied = std::io::copy(&mut &b, &mut stdin).expect("std::io::copy failed");
        assert_eq!(copied, LEN as u64);
        writer.join().unwrap();
        drop(stdin);
        let mut counted = String::new();
        child.stdout.take().unwrap().read_to_string(&mut counted).unwrap();
        assert_eq!(counted.trim(), LEN.to_string());
        assert!(child.wait().unwrap().success());
    });
}

/// `sendfile(out, file, NULL, len)` until all of `len` went out, as a caller of the blocking call
/// writes it; panics with the errno if a call fails.
fn sendfile_all(out: &UnixStream, file: &std::fs::File, len: usize) {
    let mut sent = 0;
    while sent < len {
        // SAFETY: plain fds; a null offset uses (and moves) the file's own position.
        let n = unsafe {
            libc::sendfile(out.as_raw_fd(), file.as_raw_fd(), std::ptr::null_mut(), len - sent)
        };
        assert!(n > 0, "sendfile returned {n} after {sent} bytes (errno {})", errno());
        sent += n as usize;
    }
}

#[test]
fn sendfile_to_a_socket_waits_for_room_in_a_coroutine_and_on_a_plain_thread() {
    greenhub::patch::install();
    let data = pattern(4, LEN);
    greenhub::run(|| {
        let (a, b) = managed_pair();
        let reader = slow_reader(a);
        sendfile_all(&b, &file_with(&data), LEN);
        drop(b);
        assert!(reader.join().unwrap() == data, "the reader got other bytes");
    });
    // Outside a hub, on a socket the patch made non-blocking in a hub before.
    let (a, b) = greenhub::run(managed_pair);
    assert_ne!(kernel_flags(b.as_raw_fd()) & libc::O_NONBLOCK, 0, "not managed by the patch");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            std::thread::sleep(Duration::from_millis(1));
            match (&a).read(&mut buf).unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    });
    sendfile_all(&b, &file_with(&data), LEN);
    drop(b);
    assert!(reader.join().unwrap() == data, "the reader got other bytes");
}
