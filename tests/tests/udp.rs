//! UDP: datagrams between sockets of one hub, `recv`/`recv_from` suspending until a datagram
//! arrives, connected sockets, `try_clone`, broadcast, std conversions, names, and no fd leaks.
//!
//! Every test holds `process_lock`: they open and count fds, which are process-wide.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use greenhub::net::UdpSocket;
use greenhub::{spawn, yield_now};
use greenhub_tests::{assert_no_fd_leak, is_nonblocking, process_lock};

/// Yields enough times for every ready coroutine to reach its next suspension.
fn settle() {
    for _ in 0..3 {
        yield_now();
    }
}

fn bound() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[test]
fn recv_from_suspends_until_a_datagram_arrives() {
    let _serial = process_lock();
    greenhub::run(|| {
        let server = bound();
        let addr = server.local_addr().unwrap();
        let receiver = spawn(move || {
            let mut buf = [0u8; 16];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), from)
        });
        settle();
        assert!(!receiver.is_finished(), "recv_from returned before anything was sent");
        let client = bound();
        assert_eq!(client.send_to(b"hello", addr).unwrap(), 5);
        let (data, from) = receiver.join().unwrap();
        assert_eq!((data.as_slice(), from), (&b"hello"[..], client.local_addr().unwrap()));
    });
}

#[test]
fn an_echo_server_serves_fifty_clients_at_once() {
    let _serial = process_lock();
    assert_no_fd_leak(2, || {
        greenhub::run(|| {
            let server = Rc::new(bound());
            let addr = server.local_addr().unwrap();
            let echo = spawn({
                let server = server.clone();
                move || {
                    let mut buf = [0u8; 64];
                    for _ in 0..50 {
                        let (n, from) = server.recv_from(&mut buf).unwrap();
                        server.send_to(&buf[..n], from).unwrap();
                    }
                }
            });
            let clients: Vec<_> = (0..50u32)
                .map(|i| {
                    spawn(move || {
                        let client = bound();
                        client.connect(addr).unwrap();
                        assert_eq!(client.peer_addr().unwrap(), addr);
                        client.send(&i.to_le_bytes()).unwrap();
                        let mut buf = [0u8; 64];
                        let n = client.recv(&mut buf).unwrap();
                        u32::from_le_bytes(buf[..n].try_into().unwrap())
                    })
                })
                .collect();
            for (i, c) in clients.into_iter().enumerate() {
                assert_eq!(c.join().unwrap(), i as u32);
            }
            echo.join().unwrap();
        });
    });
}

#[test]
fn a_connected_socket_receives_only_from_its_peer() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b, stranger) = (bound(), bound(), bound());
        a.connect(b.local_addr().unwrap()).unwrap();
        stranger.send_to(b"not for you", a.local_addr().unwrap()).unwrap();
        b.send_to(b"peer", a.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"peer");
    });
}

#[test]
fn a_datagram_longer_than_the_buffer_is_cut_to_fit_as_std() {
    let _serial = process_lock();
    greenhub::run(|| {
        let (a, b) = (bound(), bound());
        a.send_to(b"0123456789", b.local_addr().unwrap()).unwrap();
        let mut small = [0u8; 4];
        let (n, _) = b.peek_from(&mut small).unwrap();
        assert_eq!(&small[..n], b"0123", "peek leaves the datagram queued");
        let (n, _) = b.recv_from(&mut small).unwrap();
        assert_eq!(&small[..n], b"0123");
    });
}

#[test]
fn peer_addr_before_connect_is_not_connected() {
    let _serial = process_lock();
    greenhub::run(|| {
        let err = bound().peer_addr().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    });
}

#[test]
fn set_broadcast_toggles_so_broadcast_and_ttl_is_settable() {
    let _serial = process_lock();
    greenhub::run(|| {
        let s = bound();
        assert!(!s.broadcast().unwrap());
        s.set_broadcast(true).unwrap();
        assert!(s.broadcast().unwrap());
        s.set_ttl(7).unwrap();
        assert_eq!(s.ttl().unwrap(), 7);
    });
}

#[test]
fn receivers_on_a_socket_and_its_clone_each_get_a_datagram() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let server = bound();
            let clone = server.try_clone().unwrap();
            assert_ne!(server.as_raw_fd(), clone.as_raw_fd());
            let addr = server.local_addr().unwrap();
            assert_eq!(clone.local_addr().unwrap(), addr);
            let receive = |s: UdpSocket| {
                spawn(move || {
                    let mut buf = [0u8; 1];
                    s.recv_from(&mut buf).unwrap();
                    buf[0]
                })
            };
            let (one, two) = (receive(server), receive(clone));
            settle();
            let client = bound();
            client.send_to(b"a", addr).unwrap();
            client.send_to(b"b", addr).unwrap();
            let mut got = [one.join().unwrap(), two.join().unwrap()];
            got.sort();
            assert_eq!(&got, b"ab");
        });
    });
}

#[test]
fn a_cancelled_receiver_leaves_the_socket_usable() {
    let _serial = process_lock();
    greenhub::run(|| {
        let s = Rc::new(bound());
        let addr = s.local_addr().unwrap();
        let first = spawn({
            let s = s.clone();
            move || s.recv_from(&mut [0u8; 8]).map(|(n, _)| n)
        });
        settle();
        first.cancel();
        assert!(first.join().unwrap_err().is_cancelled());
        bound().send_to(b"xyz", addr).unwrap();
        assert_eq!(s.recv_from(&mut [0u8; 8]).unwrap().0, 3);
    });
}

#[test]
fn std_udp_sockets_convert_both_ways() {
    let _serial = process_lock();
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = std_socket.local_addr().unwrap();
            let socket = UdpSocket::from(std_socket);
            let receiver = spawn(move || {
                let mut buf = [0u8; 4];
                let n = socket.recv(&mut buf).unwrap();
                (socket, buf[..n].to_vec())
            });
            settle();
            assert!(!receiver.is_finished(), "the adopted socket must suspend, not block");
            let sender = bound();
            sender.send_to(b"std", addr).unwrap();
            let (socket, data) = receiver.join().unwrap();
            assert_eq!(data, b"std");
            let std_socket = socket.into_std().unwrap();
            assert!(
                !is_nonblocking(std_socket.as_raw_fd()),
                "into_std must give a blocking socket"
            );
            sender.send_to(b"!", addr).unwrap();
            let mut buf = [0u8; 1];
            assert_eq!(std_socket.recv(&mut buf).unwrap(), 1);
        });
    });
}

#[test]
fn bind_and_send_to_accept_host_names() {
    let _serial = process_lock();
    greenhub::run(|| {
        let server = UdpSocket::bind("localhost:0").unwrap();
        let port = server.local_addr().unwrap().port();
        // The first address of "localhost" both times: the client uses the server's family.
        let client = UdpSocket::bind((server.local_addr().unwrap().ip(), 0)).unwrap();
        client.send_to(b"named", ("localhost", port)).unwrap();
        let mut buf = [0u8; 8];
        let (n, from): (usize, SocketAddr) = server.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"named"[..], client.local_addr().unwrap()));
        let empty: &[SocketAddr] = &[];
        let err = client.send_to(b"x", empty).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
}

#[test]
fn a_read_timeout_ends_a_recv_with_would_block_and_the_socket_goes_on() {
    let _serial = process_lock();
    greenhub::run(|| {
        let s = bound();
        s.set_read_timeout(Some(std::time::Duration::from_millis(5))).unwrap();
        let err = s.recv_from(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        bound().send_to(b"ok", s.local_addr().unwrap()).unwrap();
        assert_eq!(s.recv_from(&mut [0u8; 4]).unwrap().0, 2);
        let zero = s.set_write_timeout(Some(std::time::Duration::ZERO)).unwrap_err();
        assert_eq!(zero.kind(), io::ErrorKind::InvalidInput);
        let clone = s.try_clone().unwrap();
        assert_eq!(clone.read_timeout().unwrap(), Some(std::time::Duration::from_millis(5)));
        // Whole seconds: the kernel keeps SO_RCVTIMEO in clock ticks.
        s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let std = s.into_std().unwrap();
        assert_eq!(std.read_timeout().unwrap(), Some(std::time::Duration::from_secs(2)));
    });
}
