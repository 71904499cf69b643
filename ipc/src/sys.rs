//! The Linux calls greenhub-ipc makes: the only module of the crate with `unsafe`.
//!
//! Each function is a thin, checked wrapper; every `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Once;

use crate::{Codec, Error, Reader, Writer};

/// Turns a `-1` return into the `errno` error.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The pipe capacity asked for: with a pipe this large, a writer of big messages and its reader
/// sleep in epoll far less often than with the default 64 KiB (Linux's default `pipe-max-size`
/// for unprivileged processes is 1 MiB; a refusal keeps the default size).
const PIPE_CAPACITY: libc::c_int = 1024 * 1024;

/// A pipe: (read end, write end), both close-on-exec, grown to [`PIPE_CAPACITY`] if allowed.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both fds are new and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a valid fd; failure (EPERM past the user's pipe quota) is harmless.
    unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY) };
    Ok((read_end, write_end))
}

/// Closes `fd`, reporting what `close(2)` says (dropping an `OwnedFd` ignores it).
pub(crate) fn close(fd: OwnedFd) -> Result<(), Error> {
    let raw = fd.into_raw_fd();
    // SAFETY: we own `raw` (taken out of the OwnedFd) and never use it again.
    check(unsafe { libc::close(raw) }).map(drop).map_err(Error::Io)
}

/// Closes an fd number this process owns without an `OwnedFd` (inherited handles after fork).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns the number in this process and forgets it right after.
    unsafe { libc::close(fd) };
}

/// Registers `hook` to run in every child right after `fork`.
pub(crate) fn at_fork_in_child(hook: extern "C" fn()) {
    // SAFETY: `hook` is a plain function that stays valid for the life of the process.
    unsafe { libc::pthread_atfork(None, None, Some(hook)) };
}

/// Makes sure a write to a pipe without readers fails with `EPIPE` instead of killing the
/// process: SIGPIPE is ignored if its disposition is still the default. (Rust programs already
/// ignore it; a handler a program installed itself is left alone.)
pub(crate) fn ignore_sigpipe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: querying and setting a signal disposition with valid sigaction pointers.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
    });
}

// `FromRawFd` is an unsafe trait method, so its impls live here with the crate's other unsafe.

impl<T, C: Codec<T> + Default> FromRawFd for Reader<T, C> {
    /// Adopts `fd` (the read end of a pipe, e.g. one passed by `Command::pass`) as a reader
    /// owned by this process, with the codec's default value.
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

impl<T, C: Codec<T> + Default> FromRawFd for Writer<T, C> {
    /// Adopts `fd` (the write end of a pipe) as a writer owned by this process.
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
