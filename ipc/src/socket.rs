//! The pipe protocol over a socket: [`Duplex::from_tcp`] and [`Duplex::from_unix`].
//!
//! A connected stream socket carries the same frames as a pair of pipes: a 4-byte big-endian
//! length, then the payload, in each direction. Guarantee: everything a pipe guarantees holds
//! (framing, codecs, limits, `get_timeout`, partial messages kept across timeouts and cancels,
//! `Eof` at a boundary and `Truncated` inside a message); a connection reset by the peer counts
//! as the peer closing (so a peer that dies looks the same as over a pipe), and a `put` to a peer
//! known to be gone is `BrokenPipe`. Not guaranteed: anything about the network between two hosts
//! (greenhub adds no heartbeat, reconnection or authentication); and, unlike a pipe, TCP learns
//! that the peer is gone only from its answer to the first bytes sent after it went (a reset),
//! so that first `put` still succeeds (its bytes are lost) and the next one is `BrokenPipe`. A
//! request/response protocol sees the loss at its `get` (`Eof` or `Truncated`).

use std::os::fd::{AsRawFd, RawFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Postcard;
use crate::transfer::socket_here;
use crate::{Duplex, Error, Reader, Writer, sys};

impl<Out, In> Duplex<Out, In>
where
    Out: Serialize + DeserializeOwned + 'static,
    In: Serialize + DeserializeOwned + 'static,
{
    /// Speaks the pipe protocol over a TCP connection: `put` sends `Out`, `get` receives `In`,
    /// exactly as over [`duplex`](crate::duplex), so two greenhub processes on two hosts talk as
    /// a parent and its child do. Sets `TCP_NODELAY` (every frame goes out at once).
    ///
    /// ```
    /// use greenhub::net::{TcpListener, TcpStream};
    /// use greenhub_ipc::Duplex;
    ///
    /// greenhub::run(|| {
    ///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ///     let addr = listener.local_addr().unwrap();
    ///     let server = greenhub::spawn(move || {
    ///         let link = Duplex::<u64, String>::from_tcp(listener.accept().unwrap().0).unwrap();
    ///         let word = link.get().unwrap();
    ///         link.put(&(word.len() as u64)).unwrap();
    ///     });
    ///     let link = Duplex::<String, u64>::from_tcp(TcpStream::connect(addr).unwrap()).unwrap();
    ///     link.put(&"hello".to_string()).unwrap();
    ///     assert_eq!(link.get().unwrap(), 5);
    ///     server.join().unwrap();
    /// });
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`] for a stream this process does not own (one inherited through fork
    /// into a child it was not given to, where its fd is closed); [`Error::Io`] if the socket
    /// cannot be duplicated (out of fds) or configured.
    #[track_caller]
    pub fn from_tcp(stream: greenhub::net::TcpStream) -> Result<Self, Error> {
        if !socket_here(stream.local_addr()) {
            return Err(Error::Closed);
        }
        stream.set_nodelay(true)?;
        Self::from_socket(stream.as_raw_fd())
    }

    /// Speaks the pipe protocol over a Unix-domain stream connection; see
    /// [`from_tcp`](Self::from_tcp).
    ///
    /// ```
    /// use greenhub::net::UnixStream;
    /// use greenhub_ipc::Duplex;
    ///
    /// greenhub::run(|| {
    ///     let (a, b) = UnixStream::pair().unwrap();
    ///     let (a, b) = (Duplex::<u8, u8>::from_unix(a).unwrap(), Duplex::<u8, u8>::from_unix(b).unwrap());
    ///     a.put(&7).unwrap();
    ///     assert_eq!(b.get().unwrap(), 7);
    /// });
    /// ```
    ///
    /// # Errors
    /// As [`from_tcp`](Self::from_tcp).
    #[track_caller]
    pub fn from_unix(stream: greenhub::net::UnixStream) -> Result<Self, Error> {
        if !socket_here(stream.local_addr()) {
            return Err(Error::Closed);
        }
        Self::from_socket(stream.as_raw_fd())
    }

    /// Two duplicates of the connected socket `fd` (checked to be this process's), one for each direction's handle (the caller
    /// drops the original: the socket closes when both handles have). Already non-blocking: the
    /// duplicates share the original's open file description.
    fn from_socket(fd: RawFd) -> Result<Self, Error> {
        sys::ignore_sigpipe();
        let writer = Writer::from_fd(sys::dup_cloexec(fd)?, Postcard)?;
        let reader = Reader::from_fd(sys::dup_cloexec(fd)?, Postcard)?;
        Ok(Duplex::from_parts(writer, reader))
    }
}
