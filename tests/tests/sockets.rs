//! Sockets across processes: the pipe protocol over a socket (`Duplex::from_unix`,
//! `Duplex::from_tcp`) with every guarantee of a pipe, and the sockets of `greenhub::net` handed
//! to child processes (`Transfer`).
//!
//! Each protocol test runs twice, over a Unix socket pair and over TCP loopback (the `both!`
//! macro makes a `unix` and a `tcp` test of one body). The raw peer is a plain greenhub socket
//! that writes wire bytes by hand, the way a foreign or broken peer would. Every test holds
//! [`process_lock`] (they open fds, and some count them or fork). No test sleeps to synchronise:
//! "the reader has taken what was sent" is observed with FIONREAD.

use std::fmt::Debug;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use greenhub::{spawn, yield_now};
use greenhub_ipc::{Duplex, Error, start_process};
use greenhub_tests::{assert_no_fd_leak, pattern, process_lock, yield_until, zombie_children};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A timeout that a test lets expire on purpose.
const SHORT: Duration = Duration::from_millis(20);

/// A deadline no passing test comes near: reaching it means the test hung.
const LONG: Duration = Duration::from_secs(30);

/// More than any loopback socket buffers hold (send plus receive side), so a put of it with
/// nobody reading is cut short mid-frame.
const OVER_SOCKET_BUFFERS: usize = 48 << 20;

/// Runs `body` in a fresh hub, holding [`process_lock`], failing the test on a hang.
fn hub_test<T>(body: impl FnOnce() -> T) -> T {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, body).expect("the test hung: still suspended after LONG")
    })
}

/// Which socket carries the protocol.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Unix,
    Tcp,
}

/// A connected socket of either kind, used raw.
trait RawStream: Read + Write + AsRawFd {}
impl<T: Read + Write + AsRawFd> RawStream for T {}

/// A duplex over a fresh connection of `kind`, and the raw socket at the other end.
fn duplex_and_peer<Out, In>(kind: Kind) -> (Duplex<Out, In>, Box<dyn RawStream>)
where
    Out: Serialize + DeserializeOwned + 'static,
    In: Serialize + DeserializeOwned + 'static,
{
    match kind {
        Kind::Unix => {
            let (a, b) = UnixStream::pair().unwrap();
            (Duplex::from_unix(a).unwrap(), Box::new(b))
        }
        Kind::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            (Duplex::from_tcp(client).unwrap(), Box::new(server))
        }
    }
}

/// Two duplexes over a fresh connection of `kind`, facing each other.
fn duplex_pair<A, B>(kind: Kind) -> (Duplex<A, B>, Duplex<B, A>)
where
    A: Serialize + DeserializeOwned + 'static,
    B: Serialize + DeserializeOwned + 'static,
{
    match kind {
        Kind::Unix => {
            let (a, b) = UnixStream::pair().unwrap();
            (Duplex::from_unix(a).unwrap(), Duplex::from_unix(b).unwrap())
        }
        Kind::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            (Duplex::from_tcp(client).unwrap(), Duplex::from_tcp(server).unwrap())
        }
    }
}

/// Makes a `unix` and a `tcp` test of one body taking the [`Kind`].
macro_rules! both {
    ($(#[$meta:meta])* fn $name:ident($kind:ident) $body:block) => {
        mod $name {
            use super::*;

            fn body($kind: Kind) $body

            #[test]
            fn unix() {
                body(Kind::Unix);
            }

            #[test]
            fn tcp() {
                body(Kind::Tcp);
            }
        }
    };
}

/// The wire bytes of one frame, built by hand: a 4-byte big-endian length, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// The postcard payload of `value`.
fn postcard_payload<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

/// Bytes received on `fd` and not read yet (FIONREAD).
fn unread_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD failed");
    usize::try_from(n).unwrap()
}

/// Closes `peer` abortively: `SO_LINGER` of zero, so TCP sends a reset instead of a FIN.
fn reset(peer: Box<dyn RawStream>) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads one linger struct through a valid pointer of the given size.
    let rc = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(peer);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Request {
    id: u32,
    path: String,
    tags: Vec<Option<i64>>,
}

// ---------------------------------------------------------------------------------------------
// Messages, framing, sharing

both! {
    fn messages_of_several_types_arrive_in_order_then_eof(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<Request, String>(kind);
            let requests: Vec<Request> = (0..100)
                .map(|id| Request { id, path: format!("/item/{id}"), tags: vec![Some(-1), None] })
                .collect();
            let echo = spawn(move || {
                for _ in 0..100 {
                    let request = b.get().unwrap();
                    b.put(&format!("{}:{}", request.id, request.path)).unwrap();
                }
                b.close().unwrap();
            });
            for request in &requests {
                a.put(request).unwrap();
                assert_eq!(a.get().unwrap(), format!("{}:{}", request.id, request.path));
            }
            assert!(matches!(a.get(), Err(Error::Eof)));
            echo.join().unwrap();
        });
    }
}

both! {
    fn big_messages_cross_both_ways_at_once(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<Vec<u8>, Vec<u8>>(kind);
            let (to_b, to_a) = (pattern(1, 10 << 20), pattern(2, 7 << 20));
            let (a, b) = (Rc::new(a), Rc::new(b));
            // Each side reads in a coroutine of its own while it writes: nobody waits on a full
            // socket with nobody reading.
            let b_reads = spawn({
                let b = Rc::clone(&b);
                move || b.get().unwrap()
            });
            let a_reads = spawn({
                let a = Rc::clone(&a);
                move || a.get().unwrap()
            });
            let b_writes = spawn({
                let to_a = to_a.clone();
                move || b.put(&to_a).unwrap()
            });
            a.put(&to_b).unwrap();
            b_writes.join().unwrap();
            assert!(a_reads.join().unwrap() == to_a, "the 7 MiB message came out corrupted");
            assert!(b_reads.join().unwrap() == to_b, "the 10 MiB message came out corrupted");
        });
    }
}

both! {
    fn two_coroutines_sharing_one_duplex_never_interleave_frames(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<Vec<u8>, ()>(kind);
            let a = Rc::new(a);
            let writers: Vec<_> = (0..2u8)
                .map(|id| {
                    let a = Rc::clone(&a);
                    spawn(move || {
                        for seq in 0..200u32 {
                            let mut msg = vec![id];
                            msg.extend_from_slice(&seq.to_le_bytes());
                            msg.extend(pattern(u64::from(seq), (seq as usize * 997) % 70_000));
                            a.put(&msg).unwrap();
                        }
                    })
                })
                .collect();
            let mut next = [0u32; 2];
            for _ in 0..400 {
                let msg = b.get().unwrap();
                let (id, seq) = (msg[0] as usize, u32::from_le_bytes(msg[1..5].try_into().unwrap()));
                assert_eq!(seq, next[id], "writer {id}'s messages out of order");
                assert!(msg[5..] == pattern(u64::from(seq), (seq as usize * 997) % 70_000));
                next[id] += 1;
            }
            writers.into_iter().for_each(|w| w.join().unwrap());
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Eof, Truncated, resets, broken pipe

both! {
    fn eof_when_the_peer_closes_at_a_message_boundary(kind) {
        hub_test(|| {
            let (a, mut peer) = duplex_and_peer::<(), String>(kind);
            peer.write_all(&frame(&postcard_payload(&"last".to_string()))).unwrap();
            drop(peer);
            assert_eq!(a.get().unwrap(), "last");
            assert!(matches!(a.get(), Err(Error::Eof)));
        });
    }
}

both! {
    fn truncated_when_the_peer_closes_inside_a_header_or_a_payload(kind) {
        hub_test(|| {
            let wire = frame(&postcard_payload(&"cut short".to_string()));
            for cut in [2, 4, 7] {
                let (a, mut peer) = duplex_and_peer::<(), String>(kind);
                peer.write_all(&wire[..cut]).unwrap();
                drop(peer);
                assert!(matches!(a.get(), Err(Error::Truncated)), "cut at {cut}");
            }
        });
    }
}

both! {
    fn a_peer_that_resets_the_connection_is_a_close(kind) {
        hub_test(|| {
            // The peer leaves data of ours unread, so its close is a reset (TCP: SO_LINGER 0 too).
            let wire = frame(&postcard_payload(&"whole".to_string()));
            for (cut, boundary) in [(wire.len(), true), (5, false)] {
                let (a, mut peer) = duplex_and_peer::<String, String>(kind);
                a.put(&"never read".to_string()).unwrap();
                peer.write_all(&wire[..cut]).unwrap();
                yield_until("our end to hold the peer's bytes", || unread_bytes(&a_fd(&a)) == cut);
                reset(peer);
                if boundary {
                    assert_eq!(a.get().unwrap(), "whole");
                    assert!(matches!(a.get(), Err(Error::Eof)));
                } else {
                    assert!(matches!(a.get(), Err(Error::Truncated)));
                }
            }
        });
    }
}

/// The fd of a duplex's socket (both of its handles share it), through its Debug text.
fn a_fd<Out, In>(duplex: &Duplex<Out, In>) -> impl AsRawFd {
    struct Fd(i32);
    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> i32 {
            self.0
        }
    }
    let text = format!("{duplex:?}");
    let reader = &text[text.find("reader").unwrap()..];
    let digits: String = reader[reader.find("fd ").unwrap() + 3..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Fd(digits.parse().unwrap())
}

both! {
    fn put_to_a_peer_that_is_gone_is_broken_pipe_and_the_process_survives(kind) {
        hub_test(|| {
            let (a, peer) = duplex_and_peer::<Vec<u8>, ()>(kind);
            drop(peer);
            // TCP: the first write may still be accepted, until the peer's reset comes back.
            let mut outcome = Ok(());
            for _ in 0..1000 {
                outcome = a.put(&vec![7; 100]);
                if outcome.is_err() {
                    break;
                }
                yield_now();
            }
            match outcome {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => panic!("expected BrokenPipe, got {other:?}"),
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts and cancels keep partial messages

both! {
    fn get_timeout_expires_and_the_duplex_stays_usable(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<u32, u32>(kind);
            assert!(matches!(a.get_timeout(SHORT), Err(Error::Timeout)));
            b.put(&5).unwrap();
            assert_eq!(a.get_timeout(LONG).unwrap(), 5);
        });
    }
}

both! {
    fn get_timeout_mid_message_keeps_the_partial_message_for_the_next_get(kind) {
        hub_test(|| {
            let (a, mut peer) = duplex_and_peer::<(), Vec<u8>>(kind);
            let msg = pattern(11, 50_000);
            let wire = frame(&postcard_payload(&msg));
            for piece in [&wire[..2], &wire[2..25_000]] {
                peer.write_all(piece).unwrap();
                yield_until("the bytes to arrive", || unread_bytes(&a_fd(&a)) == piece.len());
                assert!(matches!(a.get_timeout(SHORT), Err(Error::Timeout)));
                assert_eq!(unread_bytes(&a_fd(&a)), 0, "the reader took the bytes in");
            }
            peer.write_all(&wire[25_000..]).unwrap();
            peer.write_all(&frame(&postcard_payload(&b"next".to_vec()))).unwrap();
            assert!(a.get().unwrap() == msg, "the message came out corrupted");
            assert_eq!(a.get().unwrap(), b"next");
        });
    }
}

both! {
    fn cancel_of_a_get_blocked_mid_message_keeps_the_partial_message(kind) {
        hub_test(|| {
            let (a, mut peer) = duplex_and_peer::<(), Vec<u8>>(kind);
            let a = Rc::new(a);
            let msg = pattern(12, 3 << 20);
            let wire = frame(&postcard_payload(&msg));
            let blocked = spawn({
                let a = Rc::clone(&a);
                move || a.get()
            });
            peer.write_all(&wire[..100_000]).unwrap();
            yield_until("the reader to take the first part", || unread_bytes(&a_fd(&*a)) == 0);
            assert!(!blocked.is_finished());
            blocked.cancel();
            assert!(blocked.join().unwrap_err().is_cancelled());
            let sending = spawn(move || peer.write_all(&wire[100_000..]).unwrap());
            assert!(a.get_timeout(LONG).unwrap() == msg, "the message came out corrupted");
            sending.join().unwrap();
        });
    }
}

both! {
    fn put_cut_short_by_a_timeout_mid_frame_is_delivered_whole_before_the_next(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<Vec<u8>, Vec<u8>>(kind);
            let big = pattern(13, OVER_SOCKET_BUFFERS);
            let cut = greenhub::timeout(SHORT, || a.put(&big));
            assert!(cut.is_err(), "the put finished with nobody reading: {cut:?}");
            let reading = spawn(move || {
                let first = b.get();
                (first, b.get())
            });
            a.put(&b"later".to_vec()).unwrap();
            let (first, second) = reading.join().unwrap();
            assert!(first.unwrap() == big, "the interrupted message arrived corrupted");
            assert_eq!(second.unwrap(), b"later");
        });
    }
}

both! {
    fn put_cut_short_mid_frame_then_closed_gives_truncated(kind) {
        hub_test(|| {
            let (a, b) = duplex_pair::<Vec<u8>, Vec<u8>>(kind);
            a.put(&b"before".to_vec()).unwrap();
            let cut = greenhub::timeout(SHORT, || a.put(&vec![1; OVER_SOCKET_BUFFERS]));
            assert!(cut.is_err());
            a.close().unwrap();
            assert_eq!(b.get().unwrap(), b"before");
            assert!(matches!(b.get(), Err(Error::Truncated)));
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Untrusted bytes: limits and garbage

both! {
    fn a_lying_2_gib_header_is_too_large_at_once(kind) {
        hub_test(|| {
            let (a, mut peer) = duplex_and_peer::<(), Vec<u8>>(kind);
            peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
            match a.get() {
                Err(Error::TooLarge { len, max }) => {
                    assert_eq!(len, u64::from(u32::MAX));
                    assert_eq!(max, (1 << 31) - 1);
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
        });
    }
}

both! {
    fn set_max_message_size_limits_the_reading_side(kind) {
        hub_test(|| {
            let (mut a, b) = duplex_pair::<(), Vec<u8>>(kind);
            a.set_max_message_size(1000);
            b.put(&vec![0; 5000]).unwrap();
            assert!(matches!(a.get(), Err(Error::TooLarge { max: 1000, .. })));
        });
    }
}

both! {
    fn garbage_payload_is_a_codec_error_and_the_next_message_arrives_intact(kind) {
        hub_test(|| {
            let (a, mut peer) = duplex_and_peer::<(), Request>(kind);
            peer.write_all(&frame(&[0xff; 12])).unwrap();
            let good = Request { id: 1, path: "/ok".into(), tags: vec![] };
            peer.write_all(&frame(&postcard_payload(&good))).unwrap();
            assert!(matches!(a.get(), Err(Error::Codec(_))));
            assert_eq!(a.get().unwrap(), good);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Sockets handed to child processes

#[test]
fn a_socket_duplex_transferred_to_a_child_talks_like_a_pipe_duplex() {
    hub_test(|| {
        let (ours, theirs) = duplex_pair::<u64, u64>(Kind::Unix);
        let child = start_process(theirs, |link| {
            while let Ok(n) = link.get() {
                link.put(&(n * 2))?;
            }
            Ok::<(), Error>(())
        })
        .unwrap();
        for n in 0..50 {
            ours.put(&n).unwrap();
            assert_eq!(ours.get().unwrap(), n * 2);
        }
        drop(ours);
        assert!(child.join().unwrap().success());
    });
}

#[test]
fn a_tcp_listener_transferred_to_a_child_accepts_there_and_is_closed_here() {
    hub_test(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let keep = listener.as_raw_fd();
        let child = start_process(listener, |listener| {
            for _ in 0..3 {
                let (mut conn, _) = listener.accept()?;
                conn.write_all(format!("{}", std::process::id()).as_bytes())?;
            }
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        // The parent's copy is closed: its number is no longer a listening socket here.
        assert!(!is_listening_socket(keep), "the parent kept the transferred listener open");
        for _ in 0..3 {
            let mut reply = String::new();
            TcpStream::connect(addr).unwrap().read_to_string(&mut reply).unwrap();
            assert_eq!(reply, child.pid().to_string());
        }
        assert!(child.join().unwrap().success());
    });
}

/// Whether `fd` is open here and a listening socket (SO_ACCEPTCONN).
fn is_listening_socket(fd: i32) -> bool {
    let mut on: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int and its length through valid pointers.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&raw mut on).cast(), &mut len)
    };
    rc == 0 && on == 1
}

#[test]
fn every_socket_type_crosses_fork_in_one_transfer_including_udp() {
    hub_test(|| {
        let dir = std::env::temp_dir().join(format!("greenhub-sockets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("listener.sock");
        let tcp_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = tcp_listener.local_addr().unwrap();
        let unix_listener = UnixListener::bind(&path).unwrap();
        let (tcp_here, tcp_there) = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (client, l.accept().unwrap().0)
        };
        let (unix_here, unix_there) = UnixStream::pair().unwrap();
        let udp_here = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_there = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp_there.connect(udp_here.local_addr().unwrap()).unwrap();
        let udp_there_addr = udp_there.local_addr().unwrap();
        let handles = (tcp_listener, unix_listener, tcp_there, unix_there, udp_there);
        let child = start_process(handles, |(tcp_l, unix_l, mut tcp_s, mut unix_s, udp)| {
            let mut datagram = [0u8; 16];
            let n = udp.recv(&mut datagram)?; // waits in the child's hub
            udp.send(&datagram[..n])?;
            tcp_s.write_all(b"tcp stream")?;
            unix_s.write_all(b"unix stream")?;
            drop((tcp_s, unix_s)); // the parent reads them to the end first
            tcp_l.accept()?.0.write_all(b"tcp listener")?;
            unix_l.accept()?.0.write_all(b"unix listener")?;
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
        let read_all = |mut s: Box<dyn RawStream>| {
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        let mut datagram = [0u8; 16];
        udp_here.send_to(b"udp socket", udp_there_addr).unwrap();
        let (n, from) = udp_here.recv_from(&mut datagram).unwrap();
        assert_eq!((&datagram[..n], from), (&b"udp socket"[..], udp_there_addr));
        assert_eq!(read_all(Box::new(tcp_here)), "tcp stream");
        assert_eq!(read_all(Box::new(unix_here)), "unix stream");
        assert_eq!(read_all(Box::new(TcpStream::connect(tcp_addr).unwrap())), "tcp listener");
        assert_eq!(read_all(Box::new(UnixStream::connect(&path).unwrap())), "unix listener");
        assert!(child.join().unwrap().success());
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn no_fd_leak_or_zombie_over_socket_duplexes_and_transfers() {
    let _serial = process_lock();
    assert_no_fd_leak(20, || {
        greenhub::run(|| {
            for kind in [Kind::Unix, Kind::Tcp] {
                let (a, b) = duplex_pair::<u8, u8>(kind);
                a.put(&1).unwrap();
                assert_eq!(b.get().unwrap(), 1);
                let child = start_process(b, |b| b.put(&2)).unwrap();
                assert_eq!(a.get().unwrap(), 2);
                assert!(child.join().unwrap().success());
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let child = start_process(listener, |l| l.accept().map(drop)).unwrap();
                drop(TcpStream::connect(addr).unwrap());
                assert!(child.join().unwrap().success());
            }
        });
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}
