//! TCP, UDP and Unix-domain sockets whose blocking calls suspend the calling coroutine, and name
//! resolution off the hub.
//!
//! The shapes are std's (`bind`, `accept`, `connect`, `Read`/`Write` for the stream and for a
//! shared reference to it, `shutdown`, addresses, `try_clone`, read and write timeouts,
//! conversions from and to std's sockets). Guarantee: no call blocks the hub's thread: socket
//! calls suspend the caller, and a host name given to `bind`, `connect` or `send_to` (see
//! [`ToSocketAddrs`]) or to [`lookup_host`] is resolved on a helper thread, the pool of
//! [`spawn_blocking`](crate::spawn_blocking) (gevent's `resolver_thread`). Errors (refused
//! connection, reset peer, closed socket, fd limit) are `io::Error`s. Not guaranteed: that a
//! listener's backlog is the one asked for (the kernel caps it at `net.core.somaxconn`).
//!
//! Files: `tcp.rs`, `unix.rs`, `udp.rs`, `resolve.rs` (names and [`ToSocketAddrs`]); this one
//! holds what the stream types share (`Read`/`Write` through the retry loop, timeouts).

mod resolve;
mod server;
mod tcp;
mod udp;
mod unix;

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

pub use resolve::{ToSocketAddrs, lookup_host};
pub use server::{Server, StopHandle};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use crate::io::Source;
use crate::sys;
use crate::timer::deadline_after;

/// The backlog a listener gets unless told otherwise: the kernel's maximum,
/// `/proc/sys/net/core/somaxconn` (or `SOMAXCONN` where that cannot be read), as gevent's
/// `StreamServer` and Go do. std's fixed 128 leaves clients of a burst "connected" in their own
/// eyes but never accepted.
pub fn default_backlog() -> u32 {
    sys::max_listen_backlog()
}

/// A stream's read and write timeouts (std's `set_read_timeout` / `set_write_timeout`), kept
/// per greenhub value: every cooperative read or write waits at most this long for readiness.
#[derive(Debug, Default)]
struct Timeouts {
    read: Cell<Option<Duration>>,
    write: Cell<Option<Duration>>,
}

impl Timeouts {
    fn new(read: Option<Duration>, write: Option<Duration>) -> Timeouts {
        Timeouts { read: Cell::new(read), write: Cell::new(write) }
    }

    /// Sets `cell` to `d`; a zero duration is refused as std refuses it.
    fn set(cell: &Cell<Option<Duration>>, d: Option<Duration>) -> io::Result<()> {
        if d == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        cell.set(d);
        Ok(())
    }

    fn read_deadline(&self) -> Option<Instant> {
        self.read.get().and_then(deadline_after)
    }

    fn write_deadline(&self) -> Option<Instant> {
        self.write.get().and_then(deadline_after)
    }

    fn copy(&self) -> Timeouts {
        Timeouts::new(self.read.get(), self.write.get())
    }
}

/// A new fd for the same socket (`F_DUPFD_CLOEXEC`): what `try_clone` wraps.
fn dup_fd(io: &impl AsFd) -> io::Result<std::os::fd::OwnedFd> {
    io.as_fd().try_clone_to_owned()
}

/// Puts a socket leaving greenhub back in blocking mode, as std's sockets are by default.
fn blocking_again(io: &impl AsRawFd) -> io::Result<()> {
    sys::set_nonblocking(io.as_raw_fd(), false)
}

/// Why the `From` conversions from std's sockets may `expect`: `From` cannot fail, and
/// `Source::new` fails only if `fcntl(O_NONBLOCK)` does, which it does not on an open socket.
const ADOPT: &str = "greenhub::net: fcntl(O_NONBLOCK) failed on an open socket";

/// `AsRawFd` and `AsFd` for a type with `inner: Source<_>`.
macro_rules! fd_traits {
    ($ty:ty) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.inner.as_raw_fd()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.inner.as_fd()
            }
        }
    };
}

/// `set_read_timeout`, `set_write_timeout` and their getters for a type with
/// `timeouts: Timeouts`.
macro_rules! timeouts_api {
    ($ty:ty) => {
        impl $ty {
            /// Sets how long each read waits at most (`None`: no limit, the default). A read
            /// that times out fails with [`std::io::ErrorKind::WouldBlock`], as std's does on
            /// Linux (`EAGAIN` from `SO_RCVTIMEO`). The timeout belongs to this value: a
            /// [`try_clone`](Self::try_clone) starts with a copy. `Duration::MAX` means no limit.
            ///
            /// # Errors
            /// `InvalidInput` for `Some(Duration::ZERO)`, as std.
            #[track_caller]
            pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> std::io::Result<()> {
                super::Timeouts::set(&self.timeouts.read, d)
            }

            /// Sets how long each write waits at most for buffer space (`None`: no limit, the
            /// default); the same rules as [`set_read_timeout`](Self::set_read_timeout). A write
            /// that times out has written nothing.
            ///
            /// # Errors
            /// `InvalidInput` for `Some(Duration::ZERO)`, as std.
            #[track_caller]
            pub fn set_write_timeout(&self, d: Option<std::time::Duration>) -> std::io::Result<()> {
                super::Timeouts::set(&self.timeouts.write, d)
            }

            /// The read timeout ([`set_read_timeout`](Self::set_read_timeout)).
            #[track_caller]
            pub fn read_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.timeouts.read.get())
            }

            /// The write timeout ([`set_write_timeout`](Self::set_write_timeout)).
            #[track_caller]
            pub fn write_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.timeouts.write.get())
            }
        }
    };
}

/// `Read`, `Write`, timeouts and the fd traits for a stream type with `inner: Source<_>` and
/// `timeouts: Timeouts`, through the retry loop.
/// `short_read_drains`: a short read proves the receive queue empty (see
/// `Source::read_stream_until`).
macro_rules! stream_io {
    ($ty:ty, short_read_drains = $drains:expr) => {
        impl std::io::Read for &$ty {
            #[track_caller]
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let deadline = self.timeouts.read_deadline();
                let len = buf.len();
                self.inner.read_stream_until(deadline, len, $drains, |mut s| {
                    std::io::Read::read(&mut s, buf)
                })
            }

            #[track_caller]
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                let deadline = self.timeouts.read_deadline();
                // What one `readv` can take: std passes only the first buffers.
                let len = bufs.iter().take($crate::sys::MAX_READ_BUFFERS).map(|b| b.len()).sum();
                self.inner.read_stream_until(deadline, len, $drains, |mut s| {
                    std::io::Read::read_vectored(&mut s, bufs)
                })
            }
        }

        impl std::io::Write for &$ty {
            #[track_caller]
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let deadline = self.timeouts.write_deadline();
                self.inner.write_until(deadline, |mut s| std::io::Write::write(&mut s, buf))
            }

            #[track_caller]
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                let deadline = self.timeouts.write_deadline();
                self.inner
                    .write_until(deadline, |mut s| std::io::Write::write_vectored(&mut s, bufs))
            }

            #[track_caller]
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl std::io::Read for $ty {
            #[track_caller]
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                (&*self).read(buf)
            }

            #[track_caller]
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }

        impl std::io::Write for $ty {
            #[track_caller]
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                (&*self).write(buf)
            }

            #[track_caller]
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                (&*self).write_vectored(bufs)
            }

            #[track_caller]
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        super::timeouts_api!($ty);

        super::fd_traits!($ty);

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                use std::os::fd::AsRawFd;
                f.debug_struct(stringify!($ty)).field("fd", &self.as_raw_fd()).finish()
            }
        }
    };
}

use fd_traits;
use stream_io;
use timeouts_api;

/// Waits for a non-blocking connect to finish: until the socket is writable, then `SO_ERROR`
/// says how it went (a socket still connecting has no peer yet: wait again).
#[track_caller]
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
