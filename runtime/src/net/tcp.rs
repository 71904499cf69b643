//! TCP: [`TcpListener`] and [`TcpStream`].

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;

use super::resolve::each_addr;
use super::{
    Timeouts, ToSocketAddrs, blocking_again, default_backlog, dup_fd, fd_traits, finish_connect,
    stream_io,
};
use crate::io::Source;
use crate::sys;

/// A TCP socket server, listening for connections.
///
/// Its backlog (connections the kernel completes before `accept` takes them) is the kernel's
/// maximum by default ([`default_backlog`](super::default_backlog)); set it with
/// [`bind_with_backlog`](Self::bind_with_backlog).
///
/// ```
/// use std::io::{Read, Write};
/// use greenhub::net::{TcpListener, TcpStream};
///
/// greenhub::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let server = greenhub::spawn(move || {
///         let (mut conn, _) = listener.accept().unwrap();
///         let mut buf = [0u8; 4];
///         conn.read_exact(&mut buf).unwrap();
///         conn.write_all(&buf).unwrap();
///     });
///     let mut client = TcpStream::connect(addr).unwrap();
///     client.write_all(b"ping").unwrap();
///     let mut echo = [0u8; 4];
///     client.read_exact(&mut echo).unwrap();
///     assert_eq!(&echo, b"ping");
///     server.join().unwrap();
/// });
/// ```
pub struct TcpListener {
    inner: Source<mio::net::TcpListener>,
}

impl TcpListener {
    /// Binds to the first of `addr`'s addresses that works (with `SO_REUSEADDR`, as std does),
    /// with the kernel's maximum backlog. A host name is resolved off the hub.
    #[track_caller]
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        TcpListener::bind_with_backlog(addr, default_backlog())
    }

    /// [`bind`](Self::bind) with a backlog of `backlog` connections (the kernel caps it at
    /// `net.core.somaxconn`).
    ///
    /// ```
    /// greenhub::run(|| {
    ///     let listener = greenhub::net::TcpListener::bind_with_backlog("127.0.0.1:0", 16).unwrap();
    ///     assert!(listener.local_addr().unwrap().port() > 0);
    /// });
    /// ```
    #[track_caller]
    pub fn bind_with_backlog(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
        each_addr(addr, |a| {
            let std = std::net::TcpListener::bind(a)?;
            sys::listen(std.as_raw_fd(), backlog)?;
            Ok(TcpListener::from(std))
        })
    }

    /// Suspends the caller until a connection arrives. At the fd limit this is an `io::Error`
    /// (`EMFILE`/`ENFILE`), returned at once: the connection stays queued for a later `accept`.
    #[track_caller]
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.inner.read_with(|l| l.accept())?;
        Ok((TcpStream::from_mio(stream, Timeouts::default())?, addr))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.local_addr()
    }

    /// A second listener on the same socket (a new fd, `dup`): both accept from one queue, and
    /// a connection wakes a waiter on either.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        let fd = dup_fd(self.inner.io()?)?;
        Ok(TcpListener { inner: Source::new(mio::net::TcpListener::from(fd))? })
    }

    /// The std listener, deregistered from the hub and in blocking mode again. (The mode is
    /// shared by every `try_clone` of the socket: convert the last clone still in use.)
    pub fn into_std(self) -> io::Result<std::net::TcpListener> {
        let std = std::net::TcpListener::from(self.inner.into_inner());
        blocking_again(&std)?;
        Ok(std)
    }
}

impl From<std::net::TcpListener> for TcpListener {
    /// Adopts a std listener (put in non-blocking mode; its backlog is kept).
    fn from(std: std::net::TcpListener) -> TcpListener {
        TcpListener {
            inner: Source::new(mio::net::TcpListener::from_std(std)).expect(super::ADOPT),
        }
    }
}

fd_traits!(TcpListener);

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener").field("addr", &self.local_addr().ok()).finish()
    }
}

/// A TCP connection. `Read` and `Write` (also on `&TcpStream`, so two coroutines can read and
/// write one stream) suspend the caller instead of blocking, each for at most the stream's
/// [read](Self::set_read_timeout) or [write](Self::set_write_timeout) timeout.
pub struct TcpStream {
    inner: Source<mio::net::TcpStream>,
    timeouts: Timeouts,
}

impl TcpStream {
    /// Connects to the first of `addr`'s addresses that accepts; suspends the caller meanwhile.
    /// A host name is resolved off the hub.
    #[track_caller]
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| {
            let stream =
                TcpStream::from_mio(mio::net::TcpStream::connect(a)?, Timeouts::default())?;
            finish_connect(&stream.inner, |s| s.take_error(), |s| s.peer_addr().map(drop))?;
            Ok(stream)
        })
    }

    fn from_mio(stream: mio::net::TcpStream, timeouts: Timeouts) -> io::Result<TcpStream> {
        Ok(TcpStream { inner: Source::new(stream)?, timeouts })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.local_addr()
    }

    /// Shuts down the read, write, or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.io()?.shutdown(how)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.io()?.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.io()?.nodelay()
    }

    /// A second handle to the same connection (a new fd, `dup`), with a copy of this one's
    /// timeouts. Each has its own registration with the hub; readiness wakes waiters on both.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        let fd = dup_fd(self.inner.io()?)?;
        TcpStream::from_mio(mio::net::TcpStream::from(fd), self.timeouts.copy())
    }

    /// The std stream, deregistered from the hub, in blocking mode again, with this stream's
    /// timeouts set on it. (The mode is shared by every `try_clone` of the socket: convert the
    /// last clone still in use.)
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        let TcpStream { inner, timeouts } = self;
        let std = std::net::TcpStream::from(inner.into_inner());
        blocking_again(&std)?;
        std.set_read_timeout(timeouts.read.get())?;
        std.set_write_timeout(timeouts.write.get())?;
        Ok(std)
    }
}

impl From<std::net::TcpStream> for TcpStream {
    /// Adopts a std stream (put in non-blocking mode), keeping its read and write timeouts as
    /// the cooperative ones.
    fn from(std: std::net::TcpStream) -> TcpStream {
        let timeouts =
            Timeouts::new(std.read_timeout().ok().flatten(), std.write_timeout().ok().flatten());
        TcpStream::from_mio(mio::net::TcpStream::from_std(std), timeouts).expect(super::ADOPT)
    }
}

stream_io!(TcpStream, short_read_drains = true);
