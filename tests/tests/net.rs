//! Sockets: TCP echo with 50 concurrent clients in one hub, Unix-domain echo, refused
//! connections, peer close and reset as results (never panics), and no fd leaks.
//!
//! Every test holds `process_lock`: they open and count fds, which are process-wide.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use greenhub::spawn;
use greenhub_tests::{assert_no_fd_leak, is_nonblocking, process_lock};

/// Bytes each echo client sends: more than the socket buffers hold, so writes suspend.
const PAYLOAD: usize = 256 * 1024;

/// Client `n`'s payload: distinct per client, so crossed streams would show.
fn payload(n: usize) -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i.wrapping_mul(31) ^ n.wrapping_mul(131)) as u8).collect()
}

/// Echoes what it reads until the peer shuts its write half.
fn echo<S>(conn: S) -> io::Result<u64>
where
    for<'a> &'a S: Read + Write,
{
    io::copy(&mut &conn, &mut &conn)
}

/// Writes `data` from a second coroutine while this one reads the echo back (a client that
/// wrote everything first would deadlock with the server once both buffers fill), then checks
/// every byte.
fn echo_client<S>(stream: S, data: Vec<u8>) -> Result<(), String>
where
    S: 'static,
    for<'a> &'a S: Read + Write,
    S: ShutdownWrite,
{
    let stream = Rc::new(stream);
    let writer = spawn({
        let stream = stream.clone();
        let data = data.clone();
        move || {
            (&*stream).write_all(&data)?;
            stream.shutdown_write()
        }
    });
    let mut back = Vec::with_capacity(data.len());
    (&*stream).read_to_end(&mut back).map_err(|e| format!("read: {e}"))?;
    writer.join().map_err(|e| e.to_string())?.map_err(|e| format!("write: {e}"))?;
    if back != data {
        let at = back.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(back.len());
        return Err(format!("echo differs at byte {at} of {} (got {})", data.len(), back.len()));
    }
    Ok(())
}

/// Shutting the write half, for both stream types.
trait ShutdownWrite {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl ShutdownWrite for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl ShutdownWrite for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// One TCP echo server and `clients` concurrent clients, all in one hub.
fn tcp_echo_round(clients: usize) {
    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(move || {
            let handlers: Vec<_> = (0..clients)
                .map(|_| {
                    let (conn, peer) = listener.accept().unwrap();
                    assert_eq!(conn.peer_addr().unwrap(), peer);
                    spawn(move || echo(conn).unwrap())
                })
                .collect();
            handlers.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        let handles: Vec<_> = (0..clients)
            .map(|n| {
                spawn(move || {
                    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                    assert_eq!(stream.peer_addr().unwrap(), addr);
                    echo_client(stream, payload(n))
                })
            })
            .collect();
        for (n, c) in handles.into_iter().enumerate() {
            c.join().unwrap().unwrap_or_else(|e| panic!("client {n}: {e}"));
        }
        assert_eq!(server.join().unwrap(), (clients * PAYLOAD) as u64, "bytes echoed in all");
    });
}

#[test]
fn tcp_echo_with_fifty_concurrent_clients_in_one_hub() {
    let _serial = process_lock();
    assert_no_fd_leak(1, || tcp_echo_round(50));
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("greenhub-test-{}-{name}.sock", std::process::id()))
}

#[test]
fn unix_stream_echo() {
    let _serial = process_lock();
    let path = socket_path("echo");
    let _ = std::fs::remove_file(&path);
    assert_no_fd_leak(1, || {
        greenhub::run(|| {
            let listener = UnixListener::bind(&path).unwrap();
            let server = spawn(move || {
                let handlers: Vec<_> = (0..10)
                    .map(|_| {
                        let (conn, _) = listener.accept().unwrap();
                        spawn(move || echo(conn).unwrap())
                    })
                    .collect();
                handlers.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            });
            let clients: Vec<_> = (0..10)
                .map(|n| {
                    let path = path.clone();
                    spawn(move || {
                        let stream = UnixStream::connect(&path).map_err(|e| e.to_string())?;
                        echo_client(stream, payload(n))
                    })
                })
                .collect();
            for c in clients {
                c.join().unwrap().unwrap();
            }
            assert_eq!(server.join().unwrap(), 10 * PAYLOAD as u64);
        });
        std::fs::remove_file(&path).unwrap();
    });
}

/// A Unix listener's backlog holds `backlog + 1` pending connections on Linux; the next
/// `connect` waits (in a coroutine: suspended) until an `accept` makes room, as std's blocking
/// connect does, instead of failing with `WouldBlock` (a non-blocking Unix connect's EAGAIN).
///
/// No fd-leak check here: the helper thread that made the connect drops its handle on the hub's
/// wake-up eventfd just after waking the hub, so for a moment after `run` returns that eventfd
/// may still be open (it closes with the helper's last reference, not a leak).
#[test]
fn a_unix_connect_to_a_full_backlog_waits_until_an_accept_makes_room() {
    let _serial = process_lock();
    let path = socket_path("full-backlog");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::bind_with_backlog(&path, 1).unwrap();
        let queued: Vec<_> = (0..2).map(|_| UnixStream::connect(&path).unwrap()).collect();
        let waiting = spawn({
            let path = path.clone();
            move || UnixStream::connect(&path)
        });
        for _ in 0..10 {
            greenhub::yield_now();
        }
        assert!(!waiting.is_finished(), "the third connect waits for room in the backlog");
        let (first, _) = listener.accept().unwrap();
        let late = waiting.join().unwrap().expect("the connect completes once there is room");
        let (second, _) = listener.accept().unwrap();
        let (third, _) = listener.accept().unwrap();
        (&late).write_all(b"late").unwrap();
        let mut buf = [0u8; 4];
        (&third).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        drop((queued, first, second));
    });
    std::fs::remove_file(&path).unwrap();
}

/// A connect to a full backlog that its caller gives up on (a `timeout`) frees the helper thread
/// it waited on: with one helper thread, a later `spawn_blocking` runs, though the listener
/// stays full.
#[test]
fn a_unix_connect_given_up_on_frees_its_helper_thread() {
    let _serial = process_lock();
    let path = socket_path("given-up");
    let _ = std::fs::remove_file(&path);
    greenhub::Builder::new().blocking_threads(1).run(|| {
        let listener = UnixListener::bind_with_backlog(&path, 0).unwrap();
        let _queued = UnixStream::connect(&path).unwrap(); // a backlog of 0 holds one
        let gave_up = greenhub::timeout(Duration::from_millis(20), || UnixStream::connect(&path));
        assert!(gave_up.is_err(), "connected although the backlog was full");
        let later = greenhub::timeout(Duration::from_secs(10), || greenhub::spawn_blocking(|| 42));
        assert_eq!(later.ok(), Some(42), "the only helper thread is still in the given-up connect");
        drop(listener);
    });
    std::fs::remove_file(&path).unwrap();
}

/// Set in the child process that reruns the helper-thread refusal test.
const UNIX_REFUSAL_CHILD: &str = "GREENHUB_TEST_UNIX_CONNECT_REFUSAL_CHILD";

/// When the backlog is full and the OS refuses the helper thread that would wait for room, the
/// connect is an error naming both, not a panic or a hang.
#[test]
fn a_unix_connect_to_a_full_backlog_without_a_helper_thread_is_an_error_naming_it() {
    let name = "a_unix_connect_to_a_full_backlog_without_a_helper_thread_is_an_error_naming_it";
    if !greenhub_tests::run_in_child(name, UNIX_REFUSAL_CHILD) {
        return;
    }
    // SAFETY: alarm has no preconditions (a hang in the child fails the test).
    unsafe { libc::alarm(30) };
    let path = socket_path("no-helper");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::bind_with_backlog(&path, 0).unwrap();
        let _queued = UnixStream::connect(&path).unwrap(); // a backlog of 0 holds one
        let refused = greenhub_tests::with_no_room_for_a_thread(|| UnixStream::connect(&path));
        let err = refused.expect_err("connected although the backlog was full");
        let message = err.to_string();
        assert!(message.contains("backlog is full"), "{message}");
        assert!(message.contains("refused the helper thread"), "{message}");
        assert!(message.contains("os error"), "the OS error is not named: {message}");
        drop(listener);
    });
    std::fs::remove_file(&path).unwrap();
}

/// `local_addr` and `peer_addr` of Unix sockets name the path they are bound or connected to.
#[test]
fn unix_sockets_know_their_addresses() {
    let _serial = process_lock();
    let path = socket_path("addresses");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(listener.local_addr().unwrap().as_pathname(), Some(path.as_path()));
        let client = UnixStream::connect(&path).unwrap();
        let (server, from) = listener.accept().unwrap();
        assert_eq!(client.peer_addr().unwrap().as_pathname(), Some(path.as_path()));
        assert_eq!(server.local_addr().unwrap().as_pathname(), Some(path.as_path()));
        assert!(client.local_addr().unwrap().is_unnamed() && from.is_unnamed());
    });
    std::fs::remove_file(&path).unwrap();
}

/// A Unix listener bound with the default backlog holds far more than a few pending
/// connections (the kernel's maximum, as for TCP).
#[test]
fn a_unix_listener_has_the_kernels_maximum_backlog_by_default() {
    let _serial = process_lock();
    let path = socket_path("default-backlog");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::bind(&path).unwrap();
        let pending = greenhub::timeout(Duration::from_secs(20), || {
            (0..100).map(|_| UnixStream::connect(&path).unwrap()).collect::<Vec<_>>()
        })
        .expect("a default backlog holds 100 pending connections");
        for _ in 0..100 {
            listener.accept().unwrap();
        }
        drop(pending);
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unix_stream_pair_talks_both_ways() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = spawn(move || {
            let mut buf = [0u8; 4];
            (&b).read_exact(&mut buf).unwrap();
            (&b).write_all(b"pong").unwrap();
            buf
        });
        (&a).write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        (&a).read_exact(&mut buf).unwrap();
        assert_eq!((&buf, &peer.join().unwrap()), (b"pong", b"ping"));
    });
}

#[test]
fn connecting_to_a_closed_port_is_connection_refused() {
    let _serial = process_lock();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    }; // closed again: nothing listens there now
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let err = TcpStream::connect(addr).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        });
    });
}

#[test]
fn connecting_to_a_missing_unix_socket_is_an_error() {
    let _serial = process_lock();
    let path = socket_path("missing");
    let _ = std::fs::remove_file(&path);
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let err = UnixStream::connect(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        });
    });
}

#[test]
fn connecting_to_a_unix_socket_nobody_listens_on_is_refused() {
    let _serial = process_lock();
    let path = socket_path("stale");
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file behind
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let err = UnixStream::connect(&path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        });
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_peer_that_closes_gives_eof() {
    let _serial = process_lock();
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(move || drop(listener.accept().unwrap()));
            let mut client = TcpStream::connect(addr).unwrap();
            server.join().unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(client.read(&mut buf).unwrap(), 0, "EOF reads as Ok(0)");
            assert_eq!(client.read(&mut buf).unwrap(), 0, "and stays EOF");
        });
    });
}

#[test]
fn a_peer_reset_is_an_error_or_eof_never_a_panic() {
    let _serial = process_lock();
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(move || {
                let (conn, _) = listener.accept().unwrap();
                set_linger_zero(&conn); // close sends RST instead of FIN
            });
            let mut client = TcpStream::connect(addr).unwrap();
            server.join().unwrap();
            let mut buf = [0u8; 16];
            match client.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("read {n} bytes from a reset connection"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
            // Writing to the reset connection fails (and SIGPIPE does not kill the process).
            let mut failed = false;
            for _ in 0..100 {
                if client.write_all(&[0u8; 1024]).is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "writes to a reset connection kept succeeding");
        });
    });
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

#[test]
fn two_coroutines_accepting_on_one_listener_each_get_a_connection() {
    let _serial = process_lock();
    greenhub::run(|| {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let acceptors: Vec<_> = (0..2)
            .map(|_| {
                let listener = listener.clone();
                spawn(move || listener.accept().map(|(conn, _)| conn.peer_addr().unwrap()))
            })
            .collect();
        for _ in 0..3 {
            greenhub::yield_now(); // both wait on the listening socket
        }
        let clients: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut peers: Vec<_> = acceptors.into_iter().map(|a| a.join().unwrap().unwrap()).collect();
        let mut expected: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        peers.sort();
        expected.sort();
        assert_eq!(peers, expected);
    });
}

#[test]
fn a_read_cut_short_by_a_timeout_leaves_the_stream_usable() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        let mut buf = [0u8; 8];
        let r = greenhub::timeout(std::time::Duration::from_millis(5), || (&b).read(&mut buf));
        assert!(r.is_err(), "nothing was written, so the read must time out");
        (&a).write_all(b"late").unwrap();
        let n = (&b).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
    });
}

/// The server half of a TCP connection reads into a 64-byte buffer and reports each read;
/// after every read it either goes straight to the next read or first yields (so the loop polls,
/// and an edge may come before the read).
fn short_reads_round(yield_between: bool) {
    greenhub::run(|| {
        let (server, client) = tcp_pair();
        let (tx, rx) = greenhub::sync::channel::<Vec<u8>>();
        let reader = spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                let n = (&server).read(&mut buf).unwrap();
                tx.send(buf[..n].to_vec()).unwrap();
                if n == 0 {
                    return;
                }
                if yield_between {
                    greenhub::yield_now();
                }
            }
        });
        for word in [&b"one"[..], b"two", b"three", &[b'x'; 64], b"four"] {
            (&client).write_all(word).unwrap();
            // Every read is short but the 64-byte one: the next read waits for the next edge.
            assert_eq!(rx.recv().unwrap(), word);
        }
        drop(client);
        assert_eq!(rx.recv().unwrap(), b"", "EOF after short reads");
        reader.join().unwrap();
    });
}

#[test]
fn tcp_reads_after_a_short_read_get_the_next_bytes() {
    let _serial = process_lock();
    short_reads_round(false);
    short_reads_round(true);
}

#[test]
fn a_tcp_read_to_end_sees_eof_that_came_with_the_last_bytes() {
    // Regression: bytes and the peer's FIN reported by one edge; the short read that took the
    // bytes made the next read wait for an edge that never came (read_to_string hung).
    let _serial = process_lock();
    greenhub::run(|| {
        let (server, client) = tcp_pair();
        let reader = spawn(move || {
            let mut text = String::new();
            (&server).read_to_string(&mut text).map(|_| text)
        });
        greenhub::yield_now(); // the reader's first read waits: its fd is registered
        (&client).write_all(b"bye").unwrap();
        drop(client); // FIN right behind the bytes, before the loop polls
        let text = greenhub::timeout(Duration::from_secs(10), || reader.join().unwrap());
        assert_eq!(text.expect("read_to_string hung after the short read").unwrap(), "bye");
    });
}

/// A connected TCP pair on loopback: (accepted side, connecting side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener.accept().unwrap().0, client)
}

#[test]
fn a_tcp_read_timeout_after_a_short_read_still_times_out() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (server, client) = tcp_pair();
        let writer = spawn(move || {
            greenhub::yield_now(); // the server's first read waits: its fd is registered
            (&client).write_all(b"hi").unwrap();
            client
        });
        let mut buf = [0u8; 16];
        assert_eq!((&server).read(&mut buf).unwrap(), 2);
        server.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        let err = (&server).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let client = writer.join().unwrap();
        (&client).write_all(b"more").unwrap();
        assert_eq!((&server).read(&mut buf).unwrap(), 4, "the stream still reads after it");
    });
}

// ---------------------------------------------------------------------------------------------
// try_clone: two fds of one socket, each with its own registration

/// Yields enough times for every ready coroutine to reach its next suspension.
fn settle() {
    for _ in 0..3 {
        greenhub::yield_now();
    }
}

#[test]
fn readers_on_two_clones_of_one_stream_both_get_their_bytes() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let (a, b) = UnixStream::pair().unwrap();
            let b2 = b.try_clone().unwrap();
            assert_ne!(b.as_raw_fd(), b2.as_raw_fd(), "a clone is a separate fd");
            let read_one = |s: UnixStream| {
                spawn(move || {
                    let mut byte = [0u8; 1];
                    (&s).read_exact(&mut byte).unwrap();
                    byte[0]
                })
            };
            let (r1, r2) = (read_one(b), read_one(b2));
            settle(); // both suspended, each on its own fd's registration
            // One edge on the shared socket: it must not be used up by one clone's waiter only.
            (&a).write_all(b"xy").unwrap();
            let mut got = [r1.join().unwrap(), r2.join().unwrap()];
            got.sort();
            assert_eq!(&got, b"xy");
        });
    });
}

#[test]
fn acceptors_on_a_listener_and_its_clone_each_get_a_connection() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let clone = listener.try_clone().unwrap();
            let addr = listener.local_addr().unwrap();
            assert_eq!(clone.local_addr().unwrap(), addr);
            let accept = |l: TcpListener| spawn(move || l.accept().map(|(c, _)| c).unwrap());
            let (one, two) = (accept(listener), accept(clone));
            settle();
            let clients: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let (one, two) = (one.join().unwrap(), two.join().unwrap());
            assert_ne!(one.peer_addr().unwrap(), two.peer_addr().unwrap());
            drop(clients);
        });
    });
}

#[test]
fn a_stream_keeps_working_after_its_clone_is_dropped() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn(move || listener.accept().unwrap().0);
            let client = TcpStream::connect(addr).unwrap();
            let conn = server.join().unwrap();
            let clone = client.try_clone().unwrap();
            // Register the clone with the hub (a read that waits), then drop it.
            let reader = spawn(move || {
                let mut byte = [0u8; 1];
                (&clone).read_exact(&mut byte).unwrap();
                clone
            });
            settle();
            (&conn).write_all(b"1").unwrap();
            drop(reader.join().unwrap());
            // The original's own registration is untouched by the clone's deregistration.
            let echo = spawn(move || {
                let mut buf = [0u8; 2];
                (&client).read_exact(&mut buf).unwrap();
                buf
            });
            settle();
            (&conn).write_all(b"23").unwrap();
            assert_eq!(&echo.join().unwrap(), b"23");
        });
    });
}

#[test]
fn unix_listener_and_stream_clones_work() {
    let _serial = process_lock();
    let path = socket_path("clone");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::bind(&path).unwrap();
        let clone = listener.try_clone().unwrap();
        drop(listener);
        let server = spawn(move || clone.accept().unwrap().0);
        let client = UnixStream::connect(&path).unwrap();
        let conn = server.join().unwrap();
        let writer = client.try_clone().unwrap();
        (&writer).write_all(b"via clone").unwrap();
        let mut buf = [0u8; 9];
        (&conn).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"via clone");
    });
    std::fs::remove_file(&path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Conversions from and to std's sockets

#[test]
fn std_tcp_sockets_convert_both_ways() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let listener = TcpListener::from(std_listener);
            assert!(is_nonblocking(listener.as_raw_fd()));
            // The adopted listener suspends its accept: the connect below runs meanwhile.
            let server = spawn(move || (listener.accept().unwrap().0, listener));
            let std_client = std::net::TcpStream::connect(addr).unwrap();
            let (conn, listener) = server.join().unwrap();
            let client = TcpStream::from(std_client);
            assert!(is_nonblocking(client.as_raw_fd()));
            let reader = spawn(move || {
                let mut buf = [0u8; 2];
                (&client).read_exact(&mut buf).unwrap();
                (client, buf)
            });
            settle();
            (&conn).write_all(b"hi").unwrap();
            let (client, buf) = reader.join().unwrap();
            assert_eq!(&buf, b"hi");
            // Back to std: blocking again, and still connected.
            let mut std_client = client.into_std().unwrap();
            assert!(!is_nonblocking(std_client.as_raw_fd()));
            (&conn).write_all(b"!").unwrap();
            let mut byte = [0u8; 1];
            std_client.read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"!");
            let std_listener = listener.into_std().unwrap();
            assert!(!is_nonblocking(std_listener.as_raw_fd()));
            assert_eq!(std_listener.local_addr().unwrap(), addr);
        });
    });
}

#[test]
fn std_unix_sockets_convert_both_ways() {
    let _serial = process_lock();
    let path = socket_path("convert");
    let _ = std::fs::remove_file(&path);
    greenhub::run(|| {
        let listener = UnixListener::from(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(is_nonblocking(listener.as_raw_fd()));
        let server = spawn(move || (listener.accept().unwrap().0, listener));
        let client = UnixStream::from(std::os::unix::net::UnixStream::connect(&path).unwrap());
        let (conn, listener) = server.join().unwrap();
        assert!(is_nonblocking(client.as_raw_fd()));
        (&client).write_all(b"u").unwrap();
        let mut byte = [0u8; 1];
        (&conn).read_exact(&mut byte).unwrap();
        let mut std_conn = conn.into_std().unwrap();
        assert!(!is_nonblocking(std_conn.as_raw_fd()));
        (&client).write_all(b"v").unwrap();
        std_conn.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"v");
        assert!(!is_nonblocking(listener.into_std().unwrap().as_raw_fd()));
    });
    std::fs::remove_file(&path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Read and write timeouts

#[test]
fn a_read_timeout_ends_a_read_with_would_block_and_leaves_the_stream_usable() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = UnixStream::pair().unwrap();
        assert_eq!(b.read_timeout().unwrap(), None);
        b.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        assert_eq!(b.read_timeout().unwrap(), Some(Duration::from_millis(5)));
        let mut buf = [0u8; 4];
        let err = (&b).read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        (&a).write_all(b"late").unwrap();
        assert_eq!((&b).read(&mut buf).unwrap(), 4);
        b.set_read_timeout(None).unwrap();
        assert_eq!(b.read_timeout().unwrap(), None);
    });
}

#[test]
fn a_read_timeout_does_not_stop_other_coroutines_or_a_read_that_gets_data() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = TcpPair::new();
        b.set_read_timeout(Some(Duration::MAX)).unwrap(); // "never", without an overflow
        let reader = spawn(move || {
            let mut buf = [0u8; 3];
            (&b).read_exact(&mut buf).map(|()| buf)
        });
        settle();
        assert!(!reader.is_finished());
        (&a).write_all(b"abc").unwrap();
        assert_eq!(&reader.join().unwrap().unwrap(), b"abc");
    });
}

#[test]
fn a_write_timeout_ends_a_write_to_a_full_socket_with_would_block() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_write_timeout(Some(Duration::from_millis(5))).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let err = loop {
            // Nobody reads: the buffer fills and a write must time out.
            if let Err(e) = (&a).write(&chunk) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert_eq!(a.write_timeout().unwrap(), Some(Duration::from_millis(5)));
    });
}

#[test]
fn a_zero_timeout_is_refused_as_std_refuses_it() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, _b) = UnixStream::pair().unwrap();
        let err = a.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = a.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!((a.read_timeout().unwrap(), a.write_timeout().unwrap()), (None, None));
        let (t, _u) = TcpPair::new();
        assert_eq!(
            t.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    });
}

#[test]
fn timeouts_cross_the_std_conversions_and_clones() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, _b) = TcpPair::new();
        a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        a.set_write_timeout(Some(Duration::from_secs(4))).unwrap();
        let clone = a.try_clone().unwrap();
        assert_eq!(clone.read_timeout().unwrap(), Some(Duration::from_secs(3)));
        let std = a.into_std().unwrap();
        assert_eq!(std.read_timeout().unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(std.write_timeout().unwrap(), Some(Duration::from_secs(4)));
        let back = TcpStream::from(std);
        assert_eq!(back.write_timeout().unwrap(), Some(Duration::from_secs(4)));
        drop(clone);
    });
}

/// A connected pair of greenhub TCP streams.
struct TcpPair;

impl TcpPair {
    #[allow(clippy::new_ret_no_self)]
    fn new() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(move || listener.accept().unwrap().0);
        let client = TcpStream::connect(addr).unwrap();
        (client, server.join().unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// The listen backlog, the fd limit, names

/// More connections than std's fixed backlog of 128.
const BURST: usize = 300;

#[test]
fn a_burst_of_more_than_128_connects_is_all_accepted() {
    let _serial = process_lock();
    assert_no_fd_leak(1, || {
        greenhub::run(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // Every client connects before anything is accepted: each needs a place in the
            // backlog (with 128, the rest would have their SYNs dropped and never connect).
            let clients: Vec<_> =
                (0..BURST).map(|_| spawn(move || TcpStream::connect(addr))).collect();
            let connected = greenhub::timeout(Duration::from_secs(20), || {
                clients.into_iter().map(|c| c.join().unwrap().unwrap()).collect::<Vec<_>>()
            })
            .expect("not every client of the burst could connect: the backlog is too short");
            let accepted: std::collections::HashSet<_> =
                (0..BURST).map(|_| listener.accept().unwrap().1).collect();
            let mut expected: Vec<_> = connected.iter().map(|c| c.local_addr().unwrap()).collect();
            expected.sort();
            let mut accepted: Vec<_> = accepted.into_iter().collect();
            accepted.sort();
            assert_eq!(accepted, expected);
        });
    });
}

/// A small backlog is the one the kernel uses: with room for two pending connections (Linux
/// queues backlog + 1), a third client is not let in (its SYN is dropped and retried) until an
/// `accept` makes room.
#[test]
fn bind_with_backlog_sets_how_many_connections_wait_unaccepted() {
    let _serial = process_lock();
    greenhub::run(|| {
        let listener = TcpListener::bind_with_backlog("127.0.0.1:0", 1).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued: Vec<_> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let third = spawn(move || TcpStream::connect(addr));
        for _ in 0..10 {
            greenhub::yield_now();
        }
        assert!(!third.is_finished(), "a full accept queue keeps the third client waiting");
        let accepted: Vec<_> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        let third = greenhub::timeout(Duration::from_secs(20), || third.join().unwrap())
            .expect("the third client gets in once an accept made room")
            .unwrap();
        drop((queued, third, accepted));
    });
}

#[test]
fn bind_with_backlog_listens_with_the_backlog_asked_for() {
    let _serial = process_lock();
    greenhub::run(|| {
        let listener = TcpListener::bind_with_backlog("127.0.0.1:0", 512).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..BURST).map(|_| spawn(move || TcpStream::connect(addr))).collect();
        let connected = greenhub::timeout(Duration::from_secs(20), || {
            clients.into_iter().map(|c| c.join().unwrap().unwrap()).collect::<Vec<_>>()
        })
        .expect("a backlog of 512 holds a burst of 300");
        for _ in 0..BURST {
            listener.accept().unwrap();
        }
        drop(connected);
        assert!(greenhub::net::default_backlog() >= 128);
    });
}

/// Set in the child process that reruns the fd-limit test.
const FD_LIMIT_CHILD: &str = "GREENHUB_TEST_FD_LIMIT_CHILD";

#[test]
fn accept_at_the_fd_limit_returns_emfile_at_once_and_the_connection_stays_queued() {
    let name = "accept_at_the_fd_limit_returns_emfile_at_once_and_the_connection_stays_queued";
    if !greenhub_tests::run_in_child(name, FD_LIMIT_CHILD) {
        return;
    }
    // SAFETY: alarm has no preconditions; a spin or hang ends the child with SIGALRM.
    unsafe { libc::alarm(30) };
    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The lowest free fd number: a new fd gets it. With the limit there, none is free.
        let lowest_free = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `old` is a valid out-pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let capped = libc::rlimit { rlim_cur: lowest_free, rlim_max: old.rlim_max };
        // SAFETY: a valid rlimit, lowering the soft limit only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) }, 0);
        let refused = listener.accept().map(drop);
        // SAFETY: restores the soft limit read above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
        let err = refused.expect_err("accept found a free fd under the cap");
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
        let (conn, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        drop(conn);
    });
}

#[test]
fn connect_and_bind_accept_host_names() {
    let _serial = process_lock();
    greenhub::run(|| {
        let listener = TcpListener::bind("localhost:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = spawn(move || listener.accept().unwrap().1);
        let client = TcpStream::connect(("localhost", port)).unwrap();
        assert_eq!(server.join().unwrap(), client.local_addr().unwrap());
        let err = TcpStream::connect("localhost").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}

/// A connected pair: our `TcpStream` and the peer's std stream, after one read on ours that
/// had to wait (so that ours holds its registration and its readiness flag counts).
fn pair_after_one_wait() -> (TcpStream, std::net::TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut writer = peer.try_clone().unwrap();
    let wrote = spawn(move || writer.write_all(b"p").unwrap()); // runs once the read waits
    assert_eq!((&stream).read(&mut [0; 8]).unwrap(), 1);
    wrote.join().unwrap();
    (stream, peer)
}

/// Until `stream` has received `n` bytes in all (`TCP_INFO`; `FIONREAD` stops counting at an
/// urgent mark). Loopback delivers within a turn or two.
fn until_received(stream: &TcpStream, n: u64) {
    loop {
        // SAFETY: an all-zero tcp_info is a valid value of the plain-data struct.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which has that many.
        let got = unsafe {
            let info: *mut libc::tcp_info = &mut info;
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0, "{}", io::Error::last_os_error());
        if info.tcpi_bytes_received >= n {
            return;
        }
        greenhub::yield_now();
    }
}

/// Regression: a read shorter than its buffer was taken to mean the receive queue was empty,
/// so the next read waited for a new edge; but a TCP read also stops at the mark of urgent
/// (`MSG_OOB`) data, with the bytes behind it queued, and no edge ever came for them.
#[test]
fn a_read_that_stopped_at_urgent_data_leaves_no_bytes_waiting_behind_it() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (stream, mut peer) = pair_after_one_wait();
        peer.write_all(b"abc").unwrap();
        // SAFETY: send reads one byte from a valid buffer.
        let urgent =
            unsafe { libc::send(peer.as_raw_fd(), c"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(urgent, 1);
        peer.write_all(b"def").unwrap();
        until_received(&stream, 1 + 7); // the first read's byte, then "abc!def"
        let mut buf = [0; 100];
        let n = (&stream).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"abc", "up to the mark");
        let n = greenhub::timeout(Duration::from_secs(10), || (&stream).read(&mut buf))
            .expect("the read waited with \"def\" queued")
            .unwrap();
        assert_eq!(&buf[..n], b"def");
    });
}

/// Regression: the same with a vectored read into more buffers than one `readv` takes (std
/// passes 1,024): the read was short of the buffers' total with bytes still queued.
#[test]
fn a_vectored_read_into_more_buffers_than_readv_takes_leaves_no_bytes_waiting() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (stream, mut peer) = pair_after_one_wait();
        peer.write_all(&[7; 3000]).unwrap();
        until_received(&stream, 1 + 3000);
        let mut storage = vec![[0u8; 1]; 2000];
        let mut got = Vec::new();
        while got.iter().sum::<usize>() < 3000 {
            let mut bufs: Vec<_> = storage.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
            let n =
                greenhub::timeout(Duration::from_secs(10), || (&stream).read_vectored(&mut bufs))
                    .expect("the read waited with bytes queued")
                    .unwrap();
            got.push(n);
        }
        assert_eq!(got, [1024, 1024, 952]);
    });
}
