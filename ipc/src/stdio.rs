//! The pipes to a program's stdio: [`ChildStdin`], [`ChildStdout`] and [`ChildStderr`], from
//! [`Process::take_stdin`](crate::Process::take_stdin) and its siblings when the
//! [`Command`](crate::Command) asked for `Stdio::piped()`.
//!
//! Guarantee: `Read` and `Write` suspend only the calling coroutine, never the hub; like the
//! message pipes they are handles, usable only in the process that owns them and closed in
//! children they are not transferred to. Not guaranteed: anything about the program's buffering.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::Error;
use crate::handle::Handle;
use crate::transfer::sealed::Sealed;
#[cfg(doc)]
use crate::{Process, Transfer};

/// The error a pipe not owned by this process gives through `Read`/`Write`.
fn closed() -> io::Error {
    io::Error::other(Error::Closed)
}

macro_rules! stdio_pipe {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            handle: Handle,
        }

        impl $name {
            pub(crate) fn new(fd: OwnedFd) -> Result<$name, Error> {
                Ok($name { handle: Handle::new(fd)? })
            }

            /// Closes the pipe now, reporting what `close(2)` says; dropping it also closes it.
            pub fn close(self) -> Result<(), Error> {
                self.handle.close()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.handle.as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.handle).finish()
            }
        }

        impl Sealed for $name {
            fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
                f(&self.handle);
            }
        }
    };
}

stdio_pipe!(
    /// The program's stdin (from [`Process::take_stdin`]): `Write` suspends the calling
    /// coroutine while the pipe is full, never blocking the hub. Drop it (or `close` it) to give
    /// the program end of file. Like the pipe handles, it is closed in child processes it is not
    /// transferred to ([`Transfer`]).
    ChildStdin
);
stdio_pipe!(
    /// The program's stdout (from [`Process::take_stdout`]): `Read` suspends the calling
    /// coroutine until output arrives, never blocking the hub; `Ok(0)` is end of file. Like the
    /// pipe handles, it is closed in child processes it is not transferred to ([`Transfer`]).
    ChildStdout
);
stdio_pipe!(
    /// The program's stderr (from [`Process::take_stderr`]); see [`ChildStdout`].
    ChildStderr
);

impl Write for &ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let source = self.handle.source().map_err(|_| closed())?;
        source.write_with(|mut file| crate::sigpipe::write(|| file.write(buf)))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered here
    }
}

impl Write for ChildStdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

macro_rules! read_impls {
    ($name:ident) => {
        impl Read for &$name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let source = self.handle.source().map_err(|_| closed())?;
                source.read_with(|mut file| file.read(buf))
            }
        }

        impl Read for $name {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
        }
    };
}

read_impls!(ChildStdout);
read_impls!(ChildStderr);
