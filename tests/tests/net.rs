//! Sockets: TCP echo with 50 concurrent clients in one hub, Unix-domain echo, refused
//! connections, peer close and reset as results (never panics), and no fd leaks.
//!
//! Every test holds `process_lock`: they open and count fds, which are process-wide.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;

use greenhub::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use greenhub::spawn;
use greenhub_tests::{assert_no_fd_leak, process_lock};

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
