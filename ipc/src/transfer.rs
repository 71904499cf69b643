//! `Transfer`: the values whose handles can be given to a child process.
//!
//! A transfer is a move: [`start_process`](crate::start_process) takes the handles, the child
//! gets them (and owns them), and the parent's copies are closed once the child exists. Every
//! other pipe handle the child inherits through fork is closed there (`Error::Closed` if used),
//! and so is every other fd: a child holds exactly its stdio, what it was given, and its own
//! hub's fds. A plain fd ([`OwnedFd`], [`File`], std's pipes and sockets) is transferred the
//! same way.
//!
//! Sockets (`greenhub::net`) transfer by the same move: the parent's copy is dropped (deregistered
//! from its hub, then closed) once the child exists, and the child's copy registers with the
//! child's fresh hub on its first wait (a [`greenhub::io::Source`] registers with whichever hub
//! is current). A socket the child inherits without being given it is closed there, like every
//! other fd it was not given, and knows it, as a pipe handle does: its reads, writes, accepts
//! and address queries fail with an error saying so, handing it on (to a grandchild, to a
//! program with `Command::pass`) or to `Duplex::from_tcp` / `from_unix` is `Error::Closed`, and
//! dropping it there leaves its fd number alone (the child may have reused the number for a
//! file of its own).
//! ([`greenhub::ext::closed_inherited_fds_except`] tells the runtime which fds were kept.)

use std::fs::File;
use std::io::{PipeReader, PipeWriter};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::handle::Handle;

/// Values made of pipe handles that can be moved into a child process: [`Reader`](crate::Reader),
/// [`Writer`](crate::Writer), [`Duplex`](crate::Duplex), a program's
/// [`ChildStdin`](crate::ChildStdin), [`ChildStdout`](crate::ChildStdout) and
/// [`ChildStderr`](crate::ChildStderr), the sockets of [`greenhub::net`] ([`TcpListener`],
/// [`TcpStream`], [`UnixListener`], [`UnixStream`], [`UdpSocket`]), `()`, tuples of up to 8,
/// `Vec<T>`, `Option<T>`, `[T; N]`, `Box<T>`; and plain fds: [`OwnedFd`], [`File`],
/// [`PipeReader`], [`PipeWriter`], std's `UnixStream`, `UnixListener`, `TcpStream`,
/// `TcpListener`, `UdpSocket` (every other fd is closed in a child, so an fd the child needs must
/// be given to it).
///
/// A socket handed to [`start_process`](crate::start_process) is closed in the parent once the
/// child exists and registered with the child's hub there; to keep serving in the parent too,
/// transfer a duplicate (`try_clone`) instead, as a pre-fork server does with its listeners:
///
/// ```
/// use std::io::{Read, Write};
/// use greenhub::net::{TcpListener, TcpStream};
///
/// greenhub::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = listener.local_addr().unwrap();
///     let worker = greenhub_ipc::start_process(listener, |listener| {
///         let (mut conn, _) = listener.accept()?;
///         conn.write_all(b"served by the child")
///     })
///     .unwrap();
///     let mut reply = String::new();
///     TcpStream::connect(addr).unwrap().read_to_string(&mut reply).unwrap();
///     assert_eq!(reply, "served by the child");
///     assert!(worker.join().unwrap().success());
/// });
/// ```
///
/// A std pipe end is transferred the same way:
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
/// [`TcpListener`]: greenhub::net::TcpListener
/// [`TcpStream`]: greenhub::net::TcpStream
/// [`UnixListener`]: greenhub::net::UnixListener
/// [`UnixStream`]: greenhub::net::UnixStream
/// [`UdpSocket`]: greenhub::net::UdpSocket
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

        /// Bytes the value holds in this process for its fds and no other process can see: a
        /// reader's bytes read ahead of its messages, a writer's part of a frame a cut-short
        /// `put` has not written yet. A forked child has them (a copy of the memory); a program
        /// started by `Command` gets only the fds. Containers add them up.
        fn held_bytes(&self) -> usize {
            0
        }

        /// Whether every socket of `greenhub::net` in the value is this process's: false for
        /// one inherited through fork into a child that closed its fd (its number may name
        /// another file there now). Containers ask each element.
        fn sockets_here(&self) -> bool {
            true
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

/// Whether this process owns every handle and socket in `value` (only those can be given away).
pub(crate) fn owned_here(value: &(impl Transfer + ?Sized)) -> bool {
    let mut all = true;
    value.each_handle(&mut |h| all &= h.is_owned_here());
    all && value.sockets_here()
}

/// Whether `socket`, a socket of `greenhub::net`, is this process's: its address query goes
/// through greenhub's inherited-socket check, which fails in a child that closed its fd (the
/// `getsockname` behind it cannot fail on an open socket this process owns).
pub(crate) fn socket_here<A>(local_addr: std::io::Result<A>) -> bool {
    local_addr.is_ok()
}

/// The bytes `value` holds for its fds in this process (see `Sealed::held_bytes`).
pub(crate) fn held_bytes(value: &(impl Transfer + ?Sized)) -> usize {
    value.held_bytes()
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

    fn held_bytes(&self) -> usize {
        self.as_ref().map_or(0, |inner| inner.held_bytes())
    }

    fn sockets_here(&self) -> bool {
        self.as_ref().is_none_or(|inner| inner.sockets_here())
    }
}

impl<T: sealed::Sealed> sealed::Sealed for Vec<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        self.iter().for_each(|inner| inner.each_fd(f));
    }

    fn held_bytes(&self) -> usize {
        self.iter().map(|inner| inner.held_bytes()).sum()
    }

    fn sockets_here(&self) -> bool {
        self.iter().all(|inner| inner.sockets_here())
    }
}

impl<T: sealed::Sealed, const N: usize> sealed::Sealed for [T; N] {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        self.iter().for_each(|inner| inner.each_handle(f));
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        self.iter().for_each(|inner| inner.each_fd(f));
    }

    fn held_bytes(&self) -> usize {
        self.iter().map(|inner| inner.held_bytes()).sum()
    }

    fn sockets_here(&self) -> bool {
        self.iter().all(|inner| inner.sockets_here())
    }
}

impl<T: sealed::Sealed + ?Sized> sealed::Sealed for Box<T> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        (**self).each_handle(f);
    }

    fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
        (**self).each_fd(f);
    }

    fn held_bytes(&self) -> usize {
        (**self).held_bytes()
    }

    fn sockets_here(&self) -> bool {
        (**self).sockets_here()
    }
}

// A greenhub socket holds no pipe handle either: moving it into the child is the whole transfer
// (the parent drops its copy once the child exists; the child keeps its fd and the child's copy
// registers with the child's hub when it first waits). One inherited into a child that closed
// its fd is not that child's to give away: its number may name another file there by now.
macro_rules! socket_transfer {
    ($($ty:ty)*) => {$(
        impl sealed::Sealed for $ty {
            fn each_handle(&self, _: &mut dyn FnMut(&Handle)) {}

            fn each_fd(&self, f: &mut dyn FnMut(RawFd)) {
                f(self.as_raw_fd());
            }

            fn sockets_here(&self) -> bool {
                socket_here(self.local_addr())
            }
        }
    )*};
}

socket_transfer! {
    greenhub::net::TcpListener greenhub::net::TcpStream greenhub::net::UnixListener
    greenhub::net::UnixStream greenhub::net::UdpSocket
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

            #[allow(non_snake_case)]
            fn held_bytes(&self) -> usize {
                let ($($name,)+) = self;
                0 $(+ $name.held_bytes())+
            }

            #[allow(non_snake_case)]
            fn sockets_here(&self) -> bool {
                let ($($name,)+) = self;
                true $(&& $name.sockets_here())+
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
