//! `Transfer`: the values whose handles can be given to a child process.
//!
//! A transfer is a move: [`start_process`](crate::start_process) takes the handles, the child
//! gets them (and owns them), and the parent's copies are closed once the child exists. Every
//! other pipe handle the child inherits through fork is closed there (`Error::Closed` if used),
//! and so is every other fd: a child holds exactly its stdio, what it was given, and its own
//! hub's fds. A plain fd ([`OwnedFd`], [`File`], std's pipes and sockets) is transferred the
//! same way.

use std::fs::File;
use std::io::{PipeReader, PipeWriter};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::handle::Handle;

/// Values made of pipe handles that can be moved into a child process: [`Reader`](crate::Reader),
/// [`Writer`](crate::Writer), [`Duplex`](crate::Duplex), a program's
/// [`ChildStdin`](crate::ChildStdin), [`ChildStdout`](crate::ChildStdout) and
/// [`ChildStderr`](crate::ChildStderr), `()`, tuples of up to 8, `Vec<T>`, `Option<T>`, `[T; N]`,
/// `Box<T>`; and plain fds: [`OwnedFd`], [`File`], [`PipeReader`], [`PipeWriter`], std's
/// `UnixStream`, `UnixListener`, `TcpStream`, `TcpListener`, `UdpSocket` (every other fd is closed
/// in a child, so an fd the child needs must be given to it).
///
/// ```
/// use std::io::{Read, Write};
/// greenhub::run(|| {
///     let (mut reader, writer) = std::io::pipe().unwrap();
///     let child = greenhub_ipc::start_process(writer, |mut writer| {
///         writer.write_all(b"through a std pipe")
///     })
///     .unwrap();
///     child.join().unwrap();
///     let mut text = String::new();
///     reader.read_to_string(&mut text).unwrap(); // the parent's copy was closed: EOF
///     assert_eq!(text, "through a std pipe");
/// });
/// ```
///
/// The trait is sealed: its one method is an implementation detail.
pub trait Transfer: sealed::Sealed {}

pub(crate) mod sealed {
    use super::{Handle, RawFd};

    /// Visits every handle a transferable value holds.
    pub trait Sealed {
        /// Calls `f` on each greenhub-ipc handle.
        fn each_handle(&self, f: &mut dyn FnMut(&Handle));

        /// Calls `f` on each fd: those of the handles, and plain fds. Containers forward it.
        fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
            self.each_handle(&mut |h| f(std::os::fd::AsRawFd::as_raw_fd(h)));
        }
    }
}

impl<T: sealed::Sealed> Transfer for T {}

/// The ids of every handle in `value`.
pub(crate) fn handle_ids(value: &impl Transfer) -> Vec<u64> {
    let mut ids = Vec::new();
    value.each_handle(&mut |h| ids.push(h.id()));
    ids
}

/// Every fd in `value` (the child keeps exactly these, and its stdio).
pub(crate) fn fds(value: &(impl Transfer + ?Sized)) -> Vec<RawFd> {
    let mut fds = Vec::new();
    value.each_fd(&mut |fd| fds.push(fd));
    fds
}

/// In a freshly forked child: the child owns every handle in `value` now.
pub(crate) fn adopt(value: &impl Transfer) {
    value.each_handle(&mut |h| h.adopt());
}

impl sealed::Sealed for () {
    fn each_handle(&self, _: &mut dyn FnMut(&Handle)) {}
}

/// A plain fd: no greenhub handle, just the number to keep open in the child.
macro_rules! fd_transfer {
    ($($ty:ty)*) => {$(
        impl sealed::Sealed for $ty {
            fn each_handle(&self, _: &mut dyn FnMut(&Handle)) {}

            fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
                f(self.as_raw_fd());
            }
        }
    )*};
}

fd_transfer! {
    OwnedFd File PipeReader PipeWriter std::os::unix::net::UnixStream
    std::os::unix::net::UnixListener std::net::TcpStream std::net::TcpListener std::net::UdpSocket
}

impl<T: sealed::Sealed> sealed::Sealed for Option<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        if let Some(inner) = self {
            inner.each_handle(f);
        }
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        if let Some(inner) = self {
            inner.each_fd(f);
        }
    }
}

impl<T: sealed::Sealed> sealed::Sealed for Vec<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        self.iter().for_each(|inner| inner.each_fd(f));
    }
}

impl<T: sealed::Sealed, const N: usize> sealed::Sealed for [T; N] {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        self.iter().for_each(|inner| inner.each_fd(f));
    }
}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for Box<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        (**self).each_handle(f);
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        (**self).each_fd(f);
    }
}

macro_rules! tuple_transfer {
    ($($name:ident)+) => {
        impl<$($name: sealed::Sealed),+> sealed::Sealed for ($($name,)+) {
            #[allow(non_snake_case)]
            fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
                let ($($name,)+) = self;
                $($name.each_handle(f);)+
            }

            #[allow(non_snake_case)]
            fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
                let ($($name,)+) = self;
                $($name.each_fd(f);)+
            }
        }
    };
}

tuple_transfer!(A);
tuple_transfer!(A B);
tuple_transfer!(A B C);
tuple_transfer!(A B C D);
tuple_transfer!(A B C D E);
tuple_transfer!(A B C D E F);
tuple_transfer!(A B C D E F G);
tuple_transfer!(A B C D E F G H);
