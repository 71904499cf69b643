//! UDP: [`UdpSocket`] (gevent's `socket.socket(AF_INET, SOCK_DGRAM)`).

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::resolve::each_addr;
use super::{Timeouts, ToSocketAddrs, blocking_again, dup_fd, fd_traits, timeouts_api};
use crate::io::Source;

/// A UDP socket: `recv` and `recv_from` suspend the caller until a datagram arrives, `send` and
/// `send_to` until the socket buffer has room. Shared by reference: several coroutines may send
/// and receive on one socket (each datagram goes to one receiver). Read and write timeouts work
/// as [`TcpStream`](super::TcpStream)'s (`WouldBlock` when one passes).
///
/// ```
/// use greenhub::net::UdpSocket;
///
/// greenhub::run(|| {
///     let server = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let addr = server.local_addr().unwrap();
///     let echo = greenhub::spawn(move || {
///         let mut buf = [0u8; 64];
///         let (n, from) = server.recv_from(&mut buf).unwrap(); // suspends until one arrives
///         server.send_to(&buf[..n], from).unwrap();
///     });
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.connect(addr).unwrap();
///     client.send(b"ping").unwrap();
///     let mut buf = [0u8; 64];
///     let n = client.recv(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
///     echo.join().unwrap();
/// });
/// ```
pub struct UdpSocket {
    inner: Source<std::net::UdpSocket>,
    timeouts: Timeouts,
}

impl UdpSocket {
    /// Binds to the first of `addr`'s addresses that works. A host name is resolved off the hub.
    #[track_caller]
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr(addr, |a| Ok(UdpSocket::from(std::net::UdpSocket::bind(a)?)))
    }

    /// Sets the default peer for [`send`](Self::send) and the only one [`recv`](Self::recv)
    /// accepts datagrams from (the first of `addr`'s addresses that works).
    #[track_caller]
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        each_addr(addr, |a| self.inner.io()?.connect(a))
    }

    /// Sends `buf` to the connected peer; the number of bytes sent.
    #[track_caller]
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_until(self.timeouts.write_deadline(), |s| s.send(buf))
    }

    /// Receives one datagram from the connected peer, suspending until one arrives; its length
    /// (a datagram longer than `buf` is cut to fit, as std).
    #[track_caller]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_until(self.timeouts.read_deadline(), |s| s.recv(buf))
    }

    /// Sends `buf` to the first of `addr`'s addresses (a host name is resolved off the hub).
    #[track_caller]
    pub fn send_to(&self, buf: &[u8], addr: impl ToSocketAddrs) -> io::Result<usize> {
        let to = addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.inner.write_until(self.timeouts.write_deadline(), |s| s.send_to(buf, to))
    }

    /// Receives one datagram, suspending until one arrives; its length and sender.
    #[track_caller]
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.read_until(self.timeouts.read_deadline(), |s| s.recv_from(buf))
    }

    /// Receives one datagram without removing it from the queue, suspending until one arrives.
    #[track_caller]
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.read_until(self.timeouts.read_deadline(), |s| s.peek_from(buf))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.local_addr()
    }

    /// The connected peer's address (`NotConnected` before [`connect`](Self::connect)).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.peer_addr()
    }

    /// Sets `SO_BROADCAST`: whether datagrams may go to a broadcast address.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.inner.io()?.set_broadcast(on)
    }

    /// Whether `SO_BROADCAST` is set.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.inner.io()?.broadcast()
    }

    /// Sets the IP time-to-live of outgoing datagrams.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.inner.io()?.set_ttl(ttl)
    }

    /// The IP time-to-live of outgoing datagrams.
    pub fn ttl(&self) -> io::Result<u32> {
        self.inner.io()?.ttl()
    }

    /// A second handle to the same socket (a new fd, `dup`): datagrams go to whichever handle's
    /// receiver asks first, and readiness wakes waiters on both.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let fd = dup_fd(self.inner.io()?)?;
        let inner = Source::new(std::net::UdpSocket::from(fd))?;
        Ok(UdpSocket { inner, timeouts: self.timeouts.copy() })
    }

    /// The std socket, deregistered from the hub, in blocking mode again (shared with every
    /// `try_clone`), with this socket's timeouts set on it.
    pub fn into_std(self) -> io::Result<std::net::UdpSocket> {
        let UdpSocket { inner, timeouts } = self;
        let std = inner.into_inner();
        blocking_again(&std)?;
        std.set_read_timeout(timeouts.read.get())?;
        std.set_write_timeout(timeouts.write.get())?;
        Ok(std)
    }
}

impl From<std::net::UdpSocket> for UdpSocket {
    /// Adopts a std socket (put in non-blocking mode), keeping its timeouts as the cooperative
    /// ones.
    fn from(std: std::net::UdpSocket) -> UdpSocket {
        let timeouts =
            Timeouts::new(std.read_timeout().ok().flatten(), std.write_timeout().ok().flatten());
        UdpSocket { inner: Source::new(std).expect(super::ADOPT), timeouts }
    }
}

fd_traits!(UdpSocket);
timeouts_api!(UdpSocket);

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket").field("addr", &self.local_addr().ok()).finish()
    }
}
