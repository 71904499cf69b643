//! TCP and Unix-domain sockets whose blocking calls suspend the calling coroutine.
//!
//! The shapes are std's (`bind`, `accept`, `connect`, `Read`/`Write` for the stream and for a
//! shared reference to it, `shutdown`, addresses). Guarantee: no call blocks the thread; errors
//! (refused connection, reset peer, closed socket) are `io::Error`s. Not guaranteed: that name
//! resolution in `bind`/`connect` does not block (it uses the system resolver; pass socket
//! addresses, or resolve in [`spawn_blocking`](crate::spawn_blocking), to keep the hub free).

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use crate::io::Source;

/// A TCP socket server, listening for connections.
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
    /// Binds to the first of `addr`'s addresses that works (with `SO_REUSEADDR`, as std does).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        Ok(TcpListener { inner: Source::new(mio::net::TcpListener::from_std(std))? })
    }

    /// Suspends the caller until a connection arrives.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = self.inner.read_with(|l| l.accept())?;
        Ok((TcpStream::from_mio(stream)?, addr))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }
}

/// A TCP connection. `Read` and `Write` (also on `&TcpStream`, so two coroutines can read and
/// write one stream) suspend the caller instead of blocking.
pub struct TcpStream {
    inner: Source<mio::net::TcpStream>,
}

impl TcpStream {
    /// Connects to the first of `addr`'s addresses that accepts; suspends the caller meanwhile.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        each_addr(addr, |a| {
            let stream = TcpStream::from_mio(mio::net::TcpStream::connect(a)?)?;
            finish_connect(&stream.inner, |s| s.take_error(), |s| s.peer_addr().map(drop))?;
            Ok(stream)
        })
    }

    fn from_mio(stream: mio::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream { inner: Source::new(stream)? })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Shuts down the read, write, or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.get_ref().nodelay()
    }
}

/// `Read` and `Write` for a socket type and for a shared reference to it, through its `Source`.
macro_rules! stream_io {
    ($ty:ty) => {
        impl Read for &$ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.inner.read_with(|mut s| s.read(buf))
            }
        }

        impl Write for &$ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.inner.write_with(|mut s| s.write(buf))
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.inner.write_with(|mut s| s.write_vectored(bufs))
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
        }

        impl Write for $ty {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }

            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        impl AsRawFd for $ty {
            fn as_raw_fd(&self) -> RawFd {
                self.inner.as_raw_fd()
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).field("fd", &self.as_raw_fd()).finish()
            }
        }
    };
}

stream_io!(TcpStream);
stream_io!(UnixStream);

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener").field("addr", &self.local_addr().ok()).finish()
    }
}

/// A Unix-domain socket server.
pub struct UnixListener {
    inner: Source<mio::net::UnixListener>,
}

impl UnixListener {
    /// Binds to the socket path `path` (which must not exist yet).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        Ok(UnixListener { inner: Source::new(mio::net::UnixListener::bind(path)?)? })
    }

    /// Suspends the caller until a connection arrives.
    pub fn accept(&self) -> io::Result<(UnixStream, std::os::unix::net::SocketAddr)> {
        let (stream, addr) = self.inner.read_with(|l| l.accept())?;
        Ok((UnixStream::from_mio(stream)?, addr))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.inner.get_ref().local_addr()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener").field("fd", &self.as_raw_fd()).finish()
    }
}

/// A Unix-domain stream connection; the same shape as [`TcpStream`].
pub struct UnixStream {
    inner: Source<mio::net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket at `path`; suspends the caller meanwhile.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let stream = UnixStream::from_mio(mio::net::UnixStream::connect(path)?)?;
        finish_connect(&stream.inner, |s| s.take_error(), |s| s.peer_addr().map(drop))?;
        Ok(stream)
    }

    /// A connected pair of streams.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream::from_mio(a)?, UnixStream::from_mio(b)?))
    }

    fn from_mio(stream: mio::net::UnixStream) -> io::Result<UnixStream> {
        Ok(UnixStream { inner: Source::new(stream)? })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<std::os::unix::net::SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Shuts down the read, write, or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }
}

/// Tries `connect` on each address in turn; the last error if none works.
fn each_addr<T>(
    addr: impl ToSocketAddrs,
    mut connect: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match connect(a) {
            Ok(done) => return Ok(done),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "could not resolve to any address")
    }))
}

/// Waits for a non-blocking connect to finish: until the socket is writable, then `SO_ERROR`
/// says how it went (a socket still connecting has no peer yet: wait again).
fn finish_connect<T: AsRawFd>(
    source: &Source<T>,
    take_error: impl Fn(&T) -> io::Result<Option<io::Error>>,
    peer: impl Fn(&T) -> io::Result<()>,
) -> io::Result<()> {
    source.write_with(|s| {
        if let Some(e) = take_error(s)? {
            return Err(e);
        }
        match peer(s) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
        }
    })
}
