//! The one error type of greenhub-ipc: what went wrong with a pipe, a message or a child process.
//!
//! Guaranteed: every variant has a `Display` text that tells the user what happened and what to do;
//! an `Io` error names the operation that failed ("start_process could not fork: ...") unless it
//! is a read or write on a pipe, keeps the original error's `kind()` (except the OS refusing a
//! new process, `EAGAIN` from a fork: that names the limits that may have run out and has kind
//! `Other`, since `WouldBlock` would invite a retry), and keeps the original
//! `std::io::Error` reachable (its errno through [`Error::raw_os_error`], the error itself at the
//! end of the `source()` chain). Not guaranteed: the exact wording of those texts, and the variant
//! list (`#[non_exhaustive]`).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::process::ExitStatus;

/// Writes a report (a child's error or panic, a daemon that had to be killed) straight to fd 2.
/// (`eprintln!` goes through the test harness's output capture, which a forked child inherits
/// and whose buffer nobody ever reads there.)
pub(crate) fn write_stderr(text: &str) {
    let _ = io::stderr().write_all(text.as_bytes());
}

/// An error from a pipe, a codec or a child process.
///
/// Callers branch on the variant: `Eof` is the normal end of a stream, `Truncated` means the peer
/// died or closed in the middle of a message, `Timeout` leaves the handle usable, and `TooLarge`
/// names the limit to raise.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed the pipe exactly at a message boundary: no more messages will arrive.
    Eof,
    /// The peer closed the pipe after sending part of a message (possibly just its header).
    Truncated,
    /// No message completed before the deadline. The handle stays usable: a partial message stays
    /// buffered in it and the next call continues it.
    Timeout,
    /// The handle is not owned by this process: it was inherited through fork without being
    /// transferred (gipc's rule; pass it in `start_process`'s `handles` to transfer it).
    Closed,
    /// A message is larger than the limit: either a frame header announced `len` bytes above the
    /// reader's maximum (`Reader::set_max_message_size`), or a payload to send does not fit the 4-byte
    /// length of the wire format (`max` is then `u32::MAX`).
    TooLarge {
        /// The announced or attempted payload length, in bytes.
        len: u64,
        /// The limit it exceeds, in bytes.
        max: u64,
    },
    /// The codec could not encode or decode a message; the text is the codec's own explanation.
    Codec(String),
    /// A system call failed: on the pipe (e.g. `BrokenPipe` when every reader is gone), or the
    /// operation its text names (a `fork`, a `pidfd_open`, reaping a child, ...). Its `kind()` is
    /// the system call's; [`Error::raw_os_error`] gives the errno.
    Io(io::Error),
    /// A [`Pool`](crate::Pool) item's function panicked in the worker; the text is the panic's
    /// message. The worker goes on with other items.
    Panicked(String),
    /// The [`Pool`](crate::Pool) worker running this item died before answering (killed, or
    /// it exited in the middle); its exit status. The pool starts a replacement.
    WorkerDied(ExitStatus),
}

impl Error {
    /// An [`Error::Io`] that names the operation that failed: `op` is a sentence fragment such
    /// as "start_process could not fork". The kind stays `err`'s, and `err` stays reachable.
    pub(crate) fn io(op: impl Into<Cow<'static, str>>, err: io::Error) -> Error {
        Error::Io(io::Error::new(err.kind(), Failed { op: op.into(), err }))
    }

    /// An [`Error::Io`] for a new process the OS did not make (`fork`, `clone3`, or std's
    /// spawn of a program): as [`Error::io`], except that `EAGAIN`, the OS refusing a process
    /// because a limit on processes or threads ran out, says which limits those are and has
    /// kind `Other` instead of `WouldBlock` (which a caller would take for "try again when
    /// ready", and spin). The errno stays reachable ([`Error::raw_os_error`] is `EAGAIN`).
    pub(crate) fn refused_process(op: impl Into<Cow<'static, str>>, err: io::Error) -> Error {
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Error::io(op, err);
        }
        let op = format!("{}: {TOO_MANY_PROCESSES}", op.into());
        Error::Io(io::Error::other(Failed { op: op.into(), err }))
    }

    /// The OS error number (`errno`) behind an [`Error::Io`], whether or not it names its
    /// operation; `None` for the other variants and for I/O errors that have none.
    ///
    /// ```
    /// let err = greenhub_ipc::Error::from(std::io::Error::from_raw_os_error(libc::EMFILE));
    /// assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
    /// ```
    pub fn raw_os_error(&self) -> Option<i32> {
        let Error::Io(err) = self else { return None };
        err.raw_os_error().or_else(|| failed(err)?.err.raw_os_error())
    }
}

/// What a fork refused with `EAGAIN` says after its operation: the limits that may have run out
/// (the shape of greenhub's `refused_helper` for threads).
const TOO_MANY_PROCESSES: &str = "the OS refused a new process (EAGAIN); raise the limit that \
     ran out or end some processes: this user's process limit (RLIMIT_NPROC, `ulimit -u`), the \
     system's kernel.pid_max or kernel.threads-max, or the cgroup's pids.max";

/// The payload of an [`Error::Io`] made by [`Error::io`]: which operation failed, and how.
#[derive(Debug)]
struct Failed {
    op: Cow<'static, str>,
    err: io::Error,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.err)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.err)
    }
}

/// The operation an `io::Error` names, if [`Error::io`] made it.
fn failed(err: &io::Error) -> Option<&Failed> {
    err.get_ref()?.downcast_ref::<Failed>()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Eof => f.write_str(
                "the peer closed the pipe (at a message boundary): no more messages will arrive",
            ),
            Error::Truncated => f.write_str(
                "the peer closed the pipe in the middle of a message: \
                 the writer exited or closed its end before the whole message was sent",
            ),
            Error::Timeout => f.write_str(
                "the operation timed out; a partial message stays buffered in the handle \
                 and the next call continues it",
            ),
            Error::Closed => f.write_str(
                "this handle is not owned by this process: it was not transferred to it \
                 (pass it in start_process's handles)",
            ),
            Error::TooLarge { len, max } => write!(
                f,
                "a message of {len} bytes exceeds the limit of {max} bytes \
                 (a reader's limit is raised with set_max_message_size; \
                 no frame can carry more than {} bytes)",
                u32::MAX
            ),
            Error::Codec(msg) => write!(f, "could not encode or decode a message: {msg}"),
            Error::Io(err) if failed(err).is_some() => write!(f, "{err}"),
            Error::Io(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                write!(f, "the pipe has no reader left (every read end is closed): {err}")
            }
            Error::Io(err) => write!(f, "I/O error on the pipe: {err}"),
            Error::Panicked(msg) => write!(f, "the pool's function panicked on this item: {msg}"),
            Error::WorkerDied(status) => write!(
                f,
                "the pool worker running this item died before answering ({status}); \
                 the pool has started a replacement"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    /// Wraps any `io::Error` as [`Error::Io`], whatever its kind (a `TimedOut` stays an `Io`).
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn error_is_send_sync_and_static() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<Error>();
    }

    #[test]
    fn display_of_fieldless_variants_explains_the_situation() {
        assert!(Error::Eof.to_string().contains("message boundary"));
        assert!(Error::Truncated.to_string().contains("middle of a message"));
        assert!(Error::Timeout.to_string().contains("next call continues"));
        let closed = Error::Closed.to_string();
        assert!(closed.contains("not transferred"), "{closed}");
        assert!(closed.contains("start_process"), "{closed}");
    }

    #[test]
    fn display_of_too_large_names_both_numbers_and_the_setter() {
        let text = Error::TooLarge { len: 5000, max: 4096 }.to_string();
        assert!(text.contains("5000"), "{text}");
        assert!(text.contains("4096"), "{text}");
        assert!(text.contains("set_max_message_size"), "{text}");
    }

    #[test]
    fn display_of_codec_keeps_the_codec_message() {
        let text = Error::Codec("bad varint".into()).to_string();
        assert!(text.contains("bad varint"), "{text}");
    }

    #[test]
    fn io_errors_convert_unchanged_and_are_the_source() {
        let err = Error::from(io::Error::new(io::ErrorKind::TimedOut, "slow disk"));
        assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::TimedOut));
        assert!(err.to_string().contains("slow disk"));
        let source = err.source().expect("Io has a source");
        assert_eq!(source.to_string(), "slow disk");
    }

    #[test]
    fn an_io_error_names_the_operation_and_keeps_kind_errno_and_source() {
        let err = Error::io("Command::spawn could not start", io::Error::from_raw_os_error(2));
        let text = err.to_string();
        assert!(text.starts_with("Command::spawn could not start: "), "{text}");
        assert!(!text.contains("on the pipe"), "{text}");
        assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::NotFound));
        assert_eq!(err.raw_os_error(), Some(2));
        let mut source = err.source();
        let mut last = None;
        while let Some(s) = source {
            last = Some(s);
            source = s.source();
        }
        let original = last.unwrap().downcast_ref::<io::Error>().unwrap();
        assert_eq!(original.raw_os_error(), Some(2));
    }

    #[test]
    fn a_fork_refused_with_eagain_names_the_limits_and_is_not_would_block() {
        let eagain = io::Error::from_raw_os_error(libc::EAGAIN);
        let err = Error::refused_process("start_process could not fork", eagain);
        let text = err.to_string();
        assert!(text.starts_with("start_process could not fork: the OS refused"), "{text}");
        assert!(text.ends_with("(os error 11)"), "{text}");
        for limit in ["RLIMIT_NPROC", "ulimit -u", "pid_max", "threads-max", "pids.max"] {
            assert!(text.contains(limit), "{limit} missing: {text}");
        }
        assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::Other));
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        // Any other errno is an ordinary `Error::io`.
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        let err = Error::refused_process("start_process could not fork", enomem);
        assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::OutOfMemory));
        assert!(!err.to_string().contains("RLIMIT_NPROC"), "{err}");
    }

    #[test]
    fn broken_pipe_says_that_no_reader_is_left() {
        let err = Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(err.to_string().contains("no reader left"), "{err}");
    }

    #[test]
    fn pool_errors_name_the_panic_message_and_the_exit_status() {
        use std::os::unix::process::ExitStatusExt;
        let text = Error::Panicked("index out of bounds".into()).to_string();
        assert!(text.contains("panicked") && text.contains("index out of bounds"), "{text}");
        let text = Error::WorkerDied(ExitStatus::from_raw(9)).to_string();
        assert!(text.contains("died") && text.contains("signal: 9"), "{text}");
    }

    #[test]
    fn only_io_has_a_source() {
        let others = [
            Error::Eof,
            Error::Truncated,
            Error::Timeout,
            Error::Closed,
            Error::TooLarge { len: 1, max: 0 },
            Error::Codec(String::new()),
        ];
        for err in others {
            assert!(err.source().is_none(), "{err:?}");
        }
    }
}
