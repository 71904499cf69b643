//! Pipe handles: [`Reader`], [`Writer`], [`Duplex`], and the functions that make them.
//!
//! Guarantee: frames from coroutines sharing one handle never interleave (a per-handle coroutine
//! lock is held for a whole frame); a `get` or `put` cut short by a timeout or cancellation leaves
//! its partial message in the handle, and the next call on that handle continues it, so nothing is
//! lost or corrupted; bytes from the peer are untrusted and give typed errors. Not guaranteed:
//! which of several coroutines waiting on one handle goes first (they queue FIFO on the lock, but
//! a timed-out waiter leaves the queue).

use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use greenhub::io::Source;
use greenhub::sync::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, DecodeLimits, Postcard, Raw};
use crate::frame::{self, DEFAULT_MAX_MESSAGE_SIZE, Decoder, HEADER_LEN, MAX_HEAD, Parts};
use crate::handle::Handle;
use crate::transfer::sealed::Sealed;
use crate::{Error, sigpipe, sys};

/// How many bytes one read asks for: large, so that many small messages cost one system call.
const READ_SIZE: usize = 256 * 1024;

/// Payloads at least this long (from a codec that sends the bytes a value holds, like `Raw`, or
/// `Postcard` for a `Vec<u8>`) are written straight from the caller's bytes rather than copied
/// into a frame first.
const WRITE_DIRECT: usize = 16 * 1024;

/// A writer keeps the buffer of its last frame for the next one up to this size; a bigger one
/// (a big message) is freed once sent.
const KEEP_OUTBOX: usize = 1024 * 1024;

/// A pipe carrying values of `T`, serialised with postcard (serde).
///
/// ```
/// greenhub::run(|| {
///     let (reader, writer) = greenhub_ipc::pipe::<(u32, String)>().unwrap();
///     writer.put(&(7, "seven".to_string())).unwrap();
///     assert_eq!(reader.get().unwrap(), (7, "seven".to_string()));
/// });
/// ```
#[track_caller]
pub fn pipe<T>() -> Result<(Reader<T>, Writer<T>), Error>
where
    T: Serialize + DeserializeOwned + 'static,
{
    pipe_with(Postcard)
}

/// A pipe carrying byte messages as put (gipc's `encoder=None`): the wire format any language
/// can speak, a 4-byte big-endian length and then the bytes.
#[allow(clippy::type_complexity)] // the signature is the API contract
#[track_caller]
pub fn raw_pipe() -> Result<(Reader<Vec<u8>, Raw>, Writer<Vec<u8>, Raw>), Error> {
    pipe_with(Raw)
}

/// A pipe carrying values of `T` encoded by `codec` (each end gets a clone).
#[allow(clippy::type_complexity)] // the signature is the API contract
#[track_caller]
pub fn pipe_with<T, C: Codec<T> + Clone>(codec: C) -> Result<(Reader<T, C>, Writer<T, C>), Error> {
    sys::ignore_sigpipe();
    let (read_end, write_end) =
        sys::pipe().map_err(|e| Error::io("could not create a pipe (pipe2)", e))?;
    let reader = Reader::from_handle(Handle::new(read_end)?, codec.clone());
    let writer = Writer::from_handle(Handle::new(write_end)?, codec);
    Ok((reader, writer))
}

/// Two pipes, one each way: the first end puts `A` and gets `B`, the second the reverse
/// (gipc's `pipe(duplex=True)`).
#[allow(clippy::type_complexity)] // the signature is the API contract
#[track_caller]
pub fn duplex<A, B>() -> Result<(Duplex<A, B>, Duplex<B, A>), Error>
where
    A: Serialize + DeserializeOwned + 'static,
    B: Serialize + DeserializeOwned + 'static,
{
    let (a_reader, a_writer) = pipe::<A>()?;
    let (b_reader, b_writer) = pipe::<B>()?;
    Ok((
        Duplex { writer: a_writer, reader: b_reader },
        Duplex { writer: b_writer, reader: a_reader },
    ))
}

/// The reading end of a pipe. Methods take `&self`: coroutines share a reader through `Rc`, and
/// each `get` returns one whole message.
pub struct Reader<T, C = Postcard> {
    handle: Handle,
    /// The per-handle lock, held for a whole message; it guards the bytes of a partial one.
    decoder: Mutex<Decoder>,
    codec: C,
    /// What a payload may cost to decode (depth, memory budget): `set_max_depth` and
    /// `set_max_expansion`.
    limits: DecodeLimits,
    _message: PhantomData<fn() -> T>,
}

impl<T, C: Codec<T>> Reader<T, C> {
    pub(crate) fn from_handle(handle: Handle, codec: C) -> Self {
        let decoder = Mutex::new(Decoder::new(DEFAULT_MAX_MESSAGE_SIZE));
        Reader { handle, decoder, codec, limits: DecodeLimits::default(), _message: PhantomData }
    }

    pub(crate) fn from_fd(fd: OwnedFd, codec: C) -> Result<Self, Error> {
        Ok(Self::from_handle(Handle::new(fd)?, codec))
    }

    /// Suspends the calling coroutine until a whole message is in, and returns it.
    ///
    /// Errors: [`Error::Eof`] when the writer closed at a message boundary,
    /// [`Error::Truncated`] when it closed in the middle of one, [`Error::TooLarge`] for a header
    /// announcing more than the maximum, [`Error::Codec`] for a payload the codec rejects (the
    /// stream stays usable: the next `get` reads the next message), [`Error::Closed`] in a process
    /// this handle was not transferred to.
    #[track_caller]
    pub fn get(&self) -> Result<T, Error> {
        let source = self.handle.source()?;
        let mut decoder = self.decoder.lock();
        loop {
            // A big payload's codec prefix is kept apart, so the rest arrives in its own buffer.
            if let Some(payload) = decoder.next_payload_with(|len| self.codec.head_len(len))? {
                return self.codec.decode_within(payload, &self.limits);
            }
            // A read either takes bytes in and is recorded below before anything can suspend,
            // or suspends having read nothing: a timeout or cancel never loses bytes.
            let n = if let Some((payload, limit)) = decoder.detached_spare() {
                // A big message: read straight into its own buffer, never zero-filled first.
                let n = reset_is_end(source.read_with(|file| append_up_to(file, payload, limit)))?;
                decoder.appended();
                n
            } else {
                let room = decoder.read_buf(READ_SIZE);
                let n = reset_is_end(source.read_with(|mut file| file.read(room)))?;
                decoder.filled(n);
                n
            };
            if n == 0 {
                return Err(decoder.on_eof());
            }
        }
    }

    /// Like [`get`](Self::get), giving up with [`Error::Timeout`] when no whole message is in
    /// within `d`. A message that had started to arrive stays buffered for the next call.
    #[track_caller]
    pub fn get_timeout(&self, d: Duration) -> Result<T, Error> {
        greenhub::timeout(d, || self.get()).unwrap_or(Err(Error::Timeout))
    }

    /// The largest message this reader accepts, in bytes (default 2^31 - 1, gipc's limit).
    /// Larger ones give [`Error::TooLarge`] before anything is allocated for them. The stream
    /// cannot step over such a frame (its bytes are not read): it stays first, and every later
    /// `get` gives `TooLarge` again, until the limit is raised above it. A caller that meets
    /// `TooLarge` raises the limit or gives the stream up; retrying as it is never suspends.
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.decoder.get_mut().set_max(bytes);
    }

    /// The deepest nesting a message may have (default
    /// [`DEFAULT_MAX_DEPTH`](crate::codec::DEFAULT_MAX_DEPTH), 128): each struct, tuple, sequence,
    /// map, enum, `Some` and newtype is a level. A deeper payload gives [`Error::Codec`] instead
    /// of overflowing the stack, and the stream goes on with the next message. Honoured by
    /// [`Postcard`] (and by any codec whose [`Codec::decode_within`] does).
    pub fn set_max_depth(&mut self, depth: usize) {
        self.limits = self.limits.with_max_depth(depth);
    }

    /// How many bytes of sequence elements, map entries and boxed values a message may decode to
    /// per payload byte (default [`DEFAULT_MAX_EXPANSION`](crate::codec::DEFAULT_MAX_EXPANSION),
    /// 16; every payload may also have [`BUDGET_FLOOR`](crate::codec::BUDGET_FLOOR), 1 MiB).
    /// A payload over its budget gives [`Error::Codec`] before the memory is taken, and the
    /// stream goes on; see [`codec::limits`](crate::codec::limits) for what is charged.
    pub fn set_max_expansion(&mut self, bytes_per_payload_byte: usize) {
        self.limits = self.limits.with_max_expansion(bytes_per_payload_byte);
    }

    /// Closes this end, reporting what `close(2)` says; [`Error::Closed`] if this process does
    /// not own it. Dropping the reader also closes it, silently.
    #[track_caller]
    pub fn close(self) -> Result<(), Error> {
        self.handle.close()
    }
}

/// A connection reset by the peer (a socket whose peer died or closed with data unread) is the
/// end of the stream, as the peer's death is over a pipe: `Eof` or `Truncated` follows.
fn reset_is_end(read: io::Result<usize>) -> io::Result<usize> {
    match read {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
        other => other,
    }
}

/// A write refused because the peer reset the connection is the "no reader left" of a pipe.
fn reset_is_broken_pipe(write: io::Result<usize>) -> io::Result<usize> {
    match write {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
        }
        other => other,
    }
}

/// Appends at most `limit` bytes from `file` to `payload`, reading into its uninitialised
/// capacity (std's `read_to_end`), and returns how many. 0 means end of stream. Progress wins
/// over an error: bytes that arrived are reported (an error, if any, recurs at the next read),
/// so an error never leaves bytes in the buffer that the decoder has not recorded.
fn append_up_to(file: &File, payload: &mut Vec<u8>, limit: usize) -> std::io::Result<usize> {
    let before = payload.len();
    let outcome = file.take(limit as u64).read_to_end(payload);
    match payload.len() - before {
        0 => outcome,
        n => Ok(n),
    }
}

/// The writing end of a pipe. Methods take `&self`: coroutines share a writer through `Rc`, and
/// their messages never interleave.
pub struct Writer<T, C = Postcard> {
    handle: Handle,
    /// The per-handle lock, held for a whole message; it guards a partly written frame.
    outbox: Mutex<Outbox>,
    codec: C,
    _message: PhantomData<fn(&T)>,
}

/// A frame being written, and how much of it is out.
#[derive(Default)]
struct Outbox {
    frame: Vec<u8>,
    sent: usize,
}

impl Outbox {
    /// Writes the rest of the frame, suspending while the pipe is full.
    ///
    /// On `BrokenPipe` the rest of the frame is dropped: no reader can ever take it (a pipe
    /// whose read ends are all closed never gets a reader again), so keeping it would only hold
    /// its memory until the writer is dropped.
    fn flush(&mut self, source: &Source<File>) -> Result<(), Error> {
        while self.sent < self.frame.len() {
            let rest = &self.frame[self.sent..];
            // `sent` is updated right after each write, before anything can suspend.
            let written = source.write_with(|mut file| sigpipe::write(|| file.write(rest)));
            match reset_is_broken_pipe(written) {
                Ok(n) => self.sent += n,
                Err(e) => {
                    if e.kind() == ErrorKind::BrokenPipe {
                        self.frame = Vec::new();
                        self.sent = 0;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// How many bytes of a partly written frame wait for the next `put`.
    fn unsent(&self) -> usize {
        if self.sent > 0 { self.frame.len() - self.sent } else { 0 }
    }

    /// Before a new frame: finish one that an earlier `put` started but was cut short of (it is
    /// delivered whole, before the new one); drop one that never got its first byte out (its
    /// `put` failed, so it was never sent).
    fn settle_earlier(&mut self, source: &Source<File>) -> Result<(), Error> {
        if self.sent > 0 {
            self.flush(source)?;
        }
        self.clear();
        Ok(())
    }

    /// Writes a frame whose payload is the codec's head and the caller's bytes, without copying
    /// the bytes first. If the write is cut short after its first byte (timeout, cancel,
    /// error), the rest of the frame is copied into the outbox, so that it is still delivered
    /// whole before any later frame.
    fn write_direct(&mut self, source: &Source<File>, parts: Parts<'_>) -> Result<(), Error> {
        let mut direct = Direct::new(self, parts)?;
        let (prefix, prefix_len, payload) = (direct.prefix, direct.prefix_len, parts.body());
        let prefix = &prefix[..prefix_len];
        let total = prefix.len() + payload.len();
        while direct.sent < total {
            let written = match direct.sent.checked_sub(prefix.len()) {
                None => {
                    let parts = [IoSlice::new(&prefix[direct.sent..]), IoSlice::new(payload)];
                    reset_is_broken_pipe(
                        source
                            .write_with(|mut file| sigpipe::write(|| file.write_vectored(&parts))),
                    )
                }
                Some(done) => reset_is_broken_pipe(
                    source.write_with(|mut file| sigpipe::write(|| file.write(&payload[done..]))),
                ),
            };
            match written {
                Ok(n) => direct.sent += n,
                Err(e) => {
                    if e.kind() == ErrorKind::BrokenPipe {
                        direct.sent = 0; // nobody can ever read the rest: do not keep it
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Forgets the sent frame, and its memory if it was a big one.
    fn clear(&mut self) {
        if self.frame.capacity() > KEEP_OUTBOX {
            self.frame = Vec::new();
        }
        self.frame.clear();
        self.sent = 0;
    }
}

/// The outbox during one `put`, after the earlier frame was settled: when the put ends with no
/// byte of its frame out (a codec error, `TooLarge`, a timeout or cancel while the pipe was
/// full), the frame is cleared, so the writer does not hold a message that was never sent (a
/// failed put of 64 MiB used to keep them until the next put). A frame that did start stays for
/// the next put to finish.
struct Unstarted<'a>(&'a mut Outbox);

impl Drop for Unstarted<'_> {
    fn drop(&mut self) {
        if self.0.sent == 0 {
            self.0.clear();
        }
    }
}

impl std::ops::Deref for Unstarted<'_> {
    type Target = Outbox;
    fn deref(&self) -> &Outbox {
        self.0
    }
}

impl std::ops::DerefMut for Unstarted<'_> {
    fn deref_mut(&mut self) -> &mut Outbox {
        self.0
    }
}

/// A frame being written straight from the caller's bytes (see `Outbox::write_direct`): the
/// frame header and the codec's head (`prefix`), then the body.
struct Direct<'a> {
    outbox: &'a mut Outbox,
    prefix: [u8; HEADER_LEN + MAX_HEAD],
    prefix_len: usize,
    payload: &'a [u8],
    sent: usize,
}

impl<'a> Direct<'a> {
    fn new(outbox: &'a mut Outbox, parts: Parts<'a>) -> Result<Self, Error> {
        let header = frame::encode_header(parts.len())?;
        let head = parts.head();
        let mut prefix = [0; HEADER_LEN + MAX_HEAD];
        prefix[..HEADER_LEN].copy_from_slice(&header);
        prefix[HEADER_LEN..HEADER_LEN + head.len()].copy_from_slice(head);
        let prefix_len = HEADER_LEN + head.len();
        Ok(Direct { outbox, prefix, prefix_len, payload: parts.body(), sent: 0 })
    }
}

impl Drop for Direct<'_> {
    fn drop(&mut self) {
        let total = self.prefix_len + self.payload.len();
        if self.sent > 0 && self.sent < total {
            // Cut short mid-frame: keep the frame so the next `put` finishes it.
            let frame = &mut self.outbox.frame;
            frame.clear();
            frame.reserve_exact(total);
            frame.extend_from_slice(&self.prefix[..self.prefix_len]);
            frame.extend_from_slice(self.payload);
            self.outbox.sent = self.sent;
        }
    }
}

impl<T, C: Codec<T>> Writer<T, C> {
    pub(crate) fn from_handle(handle: Handle, codec: C) -> Self {
        Writer { handle, outbox: Mutex::default(), codec, _message: PhantomData }
    }

    pub(crate) fn from_fd(fd: OwnedFd, codec: C) -> Result<Self, Error> {
        Ok(Self::from_handle(Handle::new(fd)?, codec))
    }

    /// Sends `value` as one message, suspending the calling coroutine until the whole frame is
    /// written. [`Error::Io`] with kind `BrokenPipe` once every reader is gone.
    #[track_caller]
    pub fn put(&self, value: &T) -> Result<(), Error> {
        let source = self.handle.source()?;
        let mut outbox = self.outbox.lock();
        outbox.settle_earlier(source)?;
        // However this put ends (done, an error, a timeout or cancel unwinding), a frame that
        // never got its first byte out is forgotten, memory and all.
        let mut unstarted = Unstarted(&mut outbox);
        let outbox = &mut *unstarted;
        if let Some(parts) = self.codec.as_payload(value).filter(|p| p.len() >= WRITE_DIRECT) {
            return outbox.write_direct(source, parts);
        }
        frame::append_frame_with(&mut outbox.frame, |payload| self.codec.encode(value, payload))?;
        outbox.flush(source)?;
        outbox.clear();
        Ok(())
    }

    /// Closes this end (the reader sees `Eof`, or `Truncated` if a message was cut short);
    /// [`Error::Closed`] if this process does not own it. Dropping the writer also closes it.
    #[track_caller]
    pub fn close(self) -> Result<(), Error> {
        self.handle.close()
    }
}

/// Both directions of a [`duplex`] pipe, or of a socket ([`Duplex::from_tcp`],
/// [`Duplex::from_unix`]): puts `Out`, gets `In`.
pub struct Duplex<Out, In> {
    writer: Writer<Out>,
    reader: Reader<In>,
}

impl<Out, In> Duplex<Out, In> {
    /// A duplex from its two directions (two pipes, or two duplicates of one socket).
    pub(crate) fn from_parts(writer: Writer<Out>, reader: Reader<In>) -> Self {
        Duplex { writer, reader }
    }
}

impl<Out, In> Duplex<Out, In>
where
    Out: Serialize + DeserializeOwned + 'static,
    In: Serialize + DeserializeOwned + 'static,
{
    /// Sends a message to the other end; see [`Writer::put`].
    #[track_caller]
    pub fn put(&self, value: &Out) -> Result<(), Error> {
        self.writer.put(value)
    }

    /// Receives a message from the other end; see [`Reader::get`].
    #[track_caller]
    pub fn get(&self) -> Result<In, Error> {
        self.reader.get()
    }

    /// See [`Reader::get_timeout`].
    #[track_caller]
    pub fn get_timeout(&self, d: Duration) -> Result<In, Error> {
        self.reader.get_timeout(d)
    }

    /// See [`Reader::set_max_message_size`].
    pub fn set_max_message_size(&mut self, bytes: u64) {
        self.reader.set_max_message_size(bytes);
    }

    /// See [`Reader::set_max_depth`].
    pub fn set_max_depth(&mut self, depth: usize) {
        self.reader.set_max_depth(depth);
    }

    /// See [`Reader::set_max_expansion`].
    pub fn set_max_expansion(&mut self, bytes_per_payload_byte: usize) {
        self.reader.set_max_expansion(bytes_per_payload_byte);
    }

    /// Closes both directions; the first error, if any.
    #[track_caller]
    pub fn close(self) -> Result<(), Error> {
        let written = self.writer.close();
        let read = self.reader.close();
        written.and(read)
    }
}

impl<T, C> AsRawFd for Reader<T, C> {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }
}

impl<T, C> AsRawFd for Writer<T, C> {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }
}

// `FromRawFd` is an unsafe trait: the one place outside `sys` where greenhub-ipc writes `unsafe`
// (an unsafe trait method by definition; the only unsafe operation inside is std's own
// `OwnedFd::from_raw_fd`, under the same contract).

#[allow(unsafe_code)]
impl<T, C: Codec<T> + Default> FromRawFd for Reader<T, C> {
    /// Adopts `fd` (the read end of a pipe, e.g. one passed by `Command::pass`) as a reader
    /// owned by this process, with the codec's default value.
    ///
    /// It puts the fd in non-blocking mode, a flag of the open file description, which every
    /// duplicate of the fd shares (fd 0 of a terminal is shared with the shell, say): adopt pipe
    /// ends that only this process uses.
    ///
    /// # Safety
    /// `fd` must be an open fd this process owns and nothing else will close.
    ///
    /// # Panics
    /// If `fd` cannot be put in non-blocking mode (it is not a valid fd).
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller hands us ownership of an open fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Reader::from_fd(fd, C::default()).expect("Reader::from_raw_fd: not a valid fd")
    }
}

#[allow(unsafe_code)]
impl<T, C: Codec<T> + Default> FromRawFd for Writer<T, C> {
    /// Adopts `fd` (the write end of a pipe) as a writer owned by this process. Like the
    /// reader's, it puts the fd's open file description in non-blocking mode.
    ///
    /// # Safety
    /// `fd` must be an open fd this process owns and nothing else will close.
    ///
    /// # Panics
    /// If `fd` cannot be put in non-blocking mode (it is not a valid fd).
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller hands us ownership of an open fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Writer::from_fd(fd, C::default()).expect("Writer::from_raw_fd: not a valid fd")
    }
}

impl<T, C> fmt::Debug for Reader<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = std::any::type_name::<T>();
        f.debug_struct("Reader").field("handle", &self.handle).field("message", &message).finish()
    }
}

impl<T, C> fmt::Debug for Writer<T, C> {
    /// The handle, the message type, and `unsent`: the bytes of a frame an interrupted `put`
    /// left for the next one (`None` while a `put` holds the writer).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = std::any::type_name::<T>();
        let unsent = self.outbox.try_lock().map(|outbox| outbox.unsent());
        f.debug_struct("Writer")
            .field("handle", &self.handle)
            .field("message", &message)
            .field("unsent", &unsent)
            .finish()
    }
}

impl<Out, In> fmt::Debug for Duplex<Out, In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Duplex")
            .field("writer", &self.writer)
            .field("reader", &self.reader)
            .finish()
    }
}

impl<T, C> Sealed for Reader<T, C> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        f(&self.handle);
    }

    fn held_bytes(&self) -> usize {
        // A `get` in progress holds the lock: it is reading, so it holds bytes or soon will.
        self.decoder.try_lock().map_or(1, |decoder| decoder.held_len())
    }
}

impl<T, C> Sealed for Writer<T, C> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        f(&self.handle);
    }

    fn held_bytes(&self) -> usize {
        self.outbox.try_lock().map_or(1, |outbox| outbox.unsent())
    }
}

impl<Out, In> Sealed for Duplex<Out, In> {
    fn each_handle(&self, f: &mut dyn FnMut(&Handle)) {
        f(&self.writer.handle);
        f(&self.reader.handle);
    }

    fn held_bytes(&self) -> usize {
        self.writer.held_bytes() + self.reader.held_bytes()
    }
}
