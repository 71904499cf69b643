//! Unix-domain streams: [`UnixListener`] and [`UnixStream`].

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{
    Timeouts, blocking_again, default_backlog, dup_fd, fd_traits, finish_connect, stream_io,
};
use crate::blocking::{refused_helper, try_spawn_blocking};
use crate::io::Source;
use crate::sys;

/// A Unix-domain socket server; its backlog is the kernel's maximum by default, as
/// [`TcpListener`](super::TcpListener)'s.
pub struct UnixListener {
    inner: Source<mio::net::UnixListener>,
}

impl UnixListener {
    /// Binds to the socket path `path` (which must not exist yet).
    #[track_caller]
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::bind_with_backlog(path, default_backlog())
    }

    /// [`bind`](Self::bind) with a backlog of `backlog` connections (capped by the kernel).
    #[track_caller]
    pub fn bind_with_backlog(path: impl AsRef<Path>, backlog: u32) -> io::Result<UnixListener> {
        let std = std::os::unix::net::UnixListener::bind(path)?;
        sys::listen(std.as_raw_fd(), backlog)?;
        Ok(UnixListener::from(std))
    }

    /// Suspends the caller until a connection arrives (`EMFILE`/`ENFILE` at the fd limit are
    /// returned at once, as for [`TcpListener::accept`](super::TcpListener::accept)).
    #[track_caller]
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, addr) = self.inner.read_with(|l| l.accept())?;
        Ok((UnixStream::from_mio(stream, Timeouts::default())?, addr))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.io()?.local_addr()
    }

    /// A second listener on the same socket (a new fd, `dup`).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        let fd = dup_fd(self.inner.io()?)?;
        Ok(UnixListener { inner: Source::new(mio::net::UnixListener::from(fd))? })
    }

    /// The std listener, deregistered from the hub and in blocking mode again (shared with
    /// every `try_clone`).
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixListener> {
        let std = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(
            self.inner.into_inner(),
        ));
        blocking_again(&std)?;
        Ok(std)
    }
}

impl From<std::os::unix::net::UnixListener> for UnixListener {
    /// Adopts a std listener (put in non-blocking mode; its backlog is kept).
    fn from(std: std::os::unix::net::UnixListener) -> UnixListener {
        UnixListener {
            inner: Source::new(mio::net::UnixListener::from_std(std)).expect(super::ADOPT),
        }
    }
}

fd_traits!(UnixListener);

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener").field("fd", &self.as_raw_fd()).finish()
    }
}

/// How long the helper thread's connect waits for room at a time before it looks whether its
/// caller has given up.
const ROOM_WAIT_SLICE: Duration = Duration::from_millis(100);

/// A connect to a full backlog: a non-blocking Unix connect fails with EAGAIN and, unlike TCP,
/// leaves nothing in progress to wait for (the socket even polls writable), so the wait for room
/// in the backlog is a blocking connect on a `spawn_blocking` helper thread. It waits in slices
/// of [`ROOM_WAIT_SLICE`] (the socket's send timeout bounds a Unix connect's wait), so that a
/// caller that gives up (a `timeout`, a cancel) frees the helper thread within a slice instead
/// of leaving it in `connect` for as long as the listener stays full.
fn connect_once_there_is_room(path: &Path) -> io::Result<mio::net::UnixStream> {
    /// Tells the helper thread, when dropped (the caller returned or unwound), to stop waiting.
    struct GiveUp(Arc<AtomicBool>);
    impl Drop for GiveUp {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let path = path.to_path_buf();
    let given_up = GiveUp(Arc::new(AtomicBool::new(false)));
    let stop = Arc::clone(&given_up.0);
    let wait_for_room = move || loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("the caller gave up")); // nobody reads it
        }
        if let Some(socket) = sys::unix_connect_within(&path, ROOM_WAIT_SLICE)? {
            return Ok(socket);
        }
    };
    let socket = try_spawn_blocking(wait_for_room).map_err(|refused| {
        refused_helper("UnixStream::connect: the listener's backlog is full", &refused)
    })??;
    drop(given_up);
    let std = std::os::unix::net::UnixStream::from(socket);
    std.set_nonblocking(true)?;
    Ok(mio::net::UnixStream::from_std(std))
}

/// A Unix-domain stream connection; the same shape as [`TcpStream`](super::TcpStream).
pub struct UnixStream {
    inner: Source<mio::net::UnixStream>,
    timeouts: Timeouts,
}

impl UnixStream {
    /// Connects to the socket at `path`; suspends the caller meanwhile, also while the
    /// listener's backlog is full (as std's blocking `connect` waits).
    #[track_caller]
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let mio = match mio::net::UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => connect_once_there_is_room(path)?,
            other => other?,
        };
        let stream = UnixStream::from_mio(mio, Timeouts::default())?;
        finish_connect(&stream.inner, |s| s.take_error(), |s| s.peer_addr().map(drop))?;
        Ok(stream)
    }

    /// A connected pair of streams.
    #[track_caller]
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((
            UnixStream::from_mio(a, Timeouts::default())?,
            UnixStream::from_mio(b, Timeouts::default())?,
        ))
    }

    fn from_mio(stream: mio::net::UnixStream, timeouts: Timeouts) -> io::Result<UnixStream> {
        Ok(UnixStream { inner: Source::new(stream)?, timeouts })
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

    /// A second handle to the same connection (a new fd, `dup`), with a copy of this one's
    /// timeouts.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        let fd = dup_fd(self.inner.io()?)?;
        UnixStream::from_mio(mio::net::UnixStream::from(fd), self.timeouts.copy())
    }

    /// The std stream, deregistered from the hub, in blocking mode again (shared with every
    /// `try_clone`), with this stream's timeouts set on it.
    pub fn into_std(self) -> io::Result<std::os::unix::net::UnixStream> {
        let UnixStream { inner, timeouts } = self;
        let std = std::os::unix::net::UnixStream::from(inner.into_inner());
        blocking_again(&std)?;
        std.set_read_timeout(timeouts.read.get())?;
        std.set_write_timeout(timeouts.write.get())?;
        Ok(std)
    }
}

impl From<std::os::unix::net::UnixStream> for UnixStream {
    /// Adopts a std stream (put in non-blocking mode), keeping its timeouts as the cooperative
    /// ones.
    fn from(std: std::os::unix::net::UnixStream) -> UnixStream {
        let timeouts =
            Timeouts::new(std.read_timeout().ok().flatten(), std.write_timeout().ok().flatten());
        UnixStream::from_mio(mio::net::UnixStream::from_std(std), timeouts).expect(super::ADOPT)
    }
}

stream_io!(UnixStream, short_read_drains = false);
