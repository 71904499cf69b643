//! Programs: [`Command`] runs an executable (`fork` + `exec`, through `std::process::Command`)
//! as a [`Process`] with cooperative `join` and cooperative stdin/stdout/stderr pipes
//! ([`ChildStdin`], [`ChildStdout`], [`ChildStderr`]), like `gevent.subprocess`.
//!
//! Guarantee: nothing here blocks the hub except `spawn` itself, which waits (as std does) until
//! the program has been `exec`'d or failed to; the program's reads and writes on its piped stdio
//! suspend only the calling coroutine. A handle given with [`Command::pass`] is open in the
//! program as a plain blocking fd under the number `pass` returns, and closed in the parent once
//! the program runs. Not guaranteed: that a passed fd survives when its number is 0, 1 or 2 and
//! that stdio stream is redirected too (std sets up stdio first).
//!
//! Programs follow std's rule at the end of [`greenhub::run`]: neither waited for nor killed.
//! A program that ends while its hub runs is reaped by the hub at once. One still running when
//! its hub ends is reaped, as std's `Child` is, only through its [`Process`]: when that is
//! joined or checked (`join`, `join_timeout`, `exit_status`, `is_alive`) or dropped (a
//! short-lived helper thread then waits for a program still running). Until then a program that
//! has exited stays a zombie; a `Process` dropped before its hub ends leaves nothing behind.
//!
//! The wire format a passed pipe end carries, with a Python peer, is on [`Command`].

use std::cell::Cell;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::{Output, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};

use greenhub::JoinHandle;

use crate::Error;
use crate::process::{self, Process};
#[cfg(doc)]
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};
use crate::sys;
use crate::transfer::{self, Transfer};

/// A program to run, shaped like [`std::process::Command`]; [`spawn`](Self::spawn) gives a
/// [`Process`] whose `join` and stdio pipes are cooperative.
///
/// ```
/// use std::process::Stdio;
/// greenhub::run(|| {
///     let output = greenhub_ipc::Command::new("echo").arg("hello").output().unwrap();
///     assert!(output.status.success());
///     assert_eq!(output.stdout, b"hello\n");
///
///     let status = greenhub_ipc::Command::new("false").stdout(Stdio::null()).spawn()
///         .unwrap().join().unwrap();
///     assert_eq!(status.code(), Some(1));
/// });
/// ```
///
/// # Passing a pipe end to a program in any language
/// A [`raw_pipe`](crate::raw_pipe) end passed to a program carries gipc's framing: each message
/// is a 4-byte big-endian length, then that many bytes. A Python peer writing to a passed
/// [`Writer`](crate::Writer) (its fd number given on the command line):
///
/// ```python
/// import os, struct, sys
///
/// fd = int(sys.argv[1])
///
/// def put(payload: bytes) -> None:
///     frame = struct.pack(">I", len(payload)) + payload
///     while frame:
///         frame = frame[os.write(fd, frame):]
///
/// def get(fd: int) -> bytes:
///     def exactly(n):
///         data = b""
///         while len(data) < n:
///             chunk = os.read(fd, n - len(data))
///             if not chunk:
///                 raise EOFError
///             data += chunk
///         return data
///     return exactly(struct.unpack(">I", exactly(4))[0])
///
/// put(b"hello from python")
/// ```
/// and the Rust side:
/// ```no_run
/// greenhub::run(|| {
///     let (reader, writer) = greenhub_ipc::raw_pipe().unwrap();
///     let mut cmd = greenhub_ipc::Command::new("python3");
///     let fd = cmd.pass(writer);
///     let program = cmd.arg("peer.py").arg(fd.to_string()).spawn().unwrap();
///     assert_eq!(reader.get().unwrap(), b"hello from python");
///     program.join().unwrap();
/// });
/// ```
pub struct Command {
    inner: std::process::Command,
    /// Handles given with `pass`, closed here once the next program runs.
    passed: Vec<Box<dyn Transfer>>,
    /// Their fd numbers during `spawn`, for the child's pre-exec hook (empty otherwise).
    pass_fds: Arc<Mutex<Vec<RawFd>>>,
    hook_installed: bool,
    /// Whether stdin, stdout, stderr were configured (`output` pipes the unconfigured ones).
    stdio_set: [bool; 3],
}

impl Command {
    /// A command for `program` (looked up in `PATH` if it has no `/`), with std's defaults:
    /// no arguments, the parent's environment and directory, stdio inherited.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            inner: std::process::Command::new(program),
            passed: Vec::new(),
            pass_fds: Arc::new(Mutex::new(Vec::new())),
            hook_installed: false,
            stdio_set: [false; 3],
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env(key, value);
        self
    }

    /// Sets environment variables for the program.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    /// Removes an environment variable for the program.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env_remove(key);
        self
    }

    /// Starts the program with an empty environment (plus what `env` adds).
    pub fn env_clear(&mut self) -> &mut Command {
        self.inner.env_clear();
        self
    }

    /// The program's working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.inner.current_dir(dir);
        self
    }

    /// The program's stdin; `Stdio::piped()` makes [`Process::take_stdin`] give a
    /// [`ChildStdin`].
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdin(cfg);
        self.stdio_set[0] = true;
        self
    }

    /// The program's stdout; `Stdio::piped()` makes [`Process::take_stdout`] give a
    /// [`ChildStdout`].
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdout(cfg);
        self.stdio_set[1] = true;
        self
    }

    /// The program's stderr; `Stdio::piped()` makes [`Process::take_stderr`] give a
    /// [`ChildStderr`].
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stderr(cfg);
        self.stdio_set[2] = true;
        self
    }

    /// Gives `handle` to the next program this command starts: its fd stays open there, in
    /// blocking mode, under the number returned (tell the program that number, e.g. as an
    /// argument); the handle is closed here once the program runs, or when `spawn` fails. (The
    /// transfer rule of [`start_process`](crate::start_process).)
    ///
    /// A Rust program adopts the fd with `unsafe { Reader::from_raw_fd(fd) }`; any other
    /// language reads or writes the framing described on [`Command`].
    ///
    /// Blocking mode belongs to the open file, not to one fd: a handle made with `try_clone`
    /// (a socket's or a listener's) and kept here shares it, so once the program runs, that
    /// copy's reads, writes and accepts block the hub's thread instead of suspending. Pass the
    /// handle itself, or keep no clone of it here (a forked child from
    /// [`start_process`](crate::start_process) gets a copy that stays non-blocking).
    #[track_caller]
    pub fn pass<H: Transfer + AsRawFd + 'static>(&mut self, handle: H) -> RawFd {
        if !self.hook_installed {
            sys::keep_open_on_exec(&mut self.inner, self.pass_fds.clone());
            self.hook_installed = true;
        }
        let fd = handle.as_raw_fd();
        self.passed.push(Box::new(handle));
        fd
    }

    /// Starts the program.
    ///
    /// # Errors
    /// [`Error::Io`] (kind `InvalidInput`), before anything starts, if a passed handle holds
    /// bytes of its stream in this process: a [`Reader`](crate::Reader) that read ahead of the
    /// messages it returned, or a [`Writer`](crate::Writer) whose `put` was cut short before its
    /// frame was written. The program gets only the fd and would never see them: its stream
    /// would start mid-frame or miss a message. (A [`start_process`](crate::start_process)
    /// child gets them: it is a copy of this process.) The passed handles are closed.
    ///
    /// [`Error::Io`] if it cannot be started (not found, not executable, ...; when the OS refuses
    /// a new process, `EAGAIN`, its text names the limits that may have run out and its kind is
    /// `Other`, not `WouldBlock`, as for [`start_process`](crate::start_process));
    /// [`Error::Closed`] if a passed handle is not owned by this process.
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn spawn(&mut self) -> Result<Process, Error> {
        let hub = process::current_hub("Command::spawn");
        sys::ignore_sigpipe(); // a write to the program's stdin after it exits is EPIPE, not death
        let passed = std::mem::take(&mut self.passed);
        if !passed.iter().all(|handle| transfer::owned_here(&**handle)) {
            return Err(Error::Closed);
        }
        let held: usize = passed.iter().map(|handle| transfer::held_bytes(&**handle)).sum();
        if held > 0 {
            return Err(held_bytes_error(held));
        }
        let mut fds = Vec::new();
        for handle in &passed {
            handle.each_fd(&mut |fd| fds.push(fd));
        }
        *lock(&self.pass_fds) = fds;
        let spawned = self.inner.spawn();
        lock(&self.pass_fds).clear();
        drop(passed); // the program has them now (or it failed to start)
        let name = self.inner.get_program().to_string_lossy().into_owned();
        let spawned = spawned.map_err(|e| {
            Error::refused_process(format!("Command::spawn could not start {name:?}"), e)
        })?;
        Process::from_program(hub, name, spawned)
    }

    /// Runs the program to its end and collects its output, suspending only the calling
    /// coroutine: stdout and stderr are read concurrently (in coroutines) while it runs.
    ///
    /// As with std, stdout and stderr are piped and stdin is `Stdio::null()` unless configured;
    /// unlike std, those settings stay on this `Command` for later `spawn`s. A stdin configured
    /// as `Stdio::piped()` is closed at once, before the wait, as std does: the program reads
    /// end of file there.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), and [`Error::Io`] if reading the output fails, or if the OS
    /// refuses the stack of a coroutine that reads it (the error names what ran out).
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn output(&mut self) -> Result<Output, Error> {
        if !self.stdio_set[0] {
            self.inner.stdin(Stdio::null());
        }
        if !self.stdio_set[1] {
            self.inner.stdout(Stdio::piped());
        }
        if !self.stdio_set[2] {
            self.inner.stderr(Stdio::piped());
        }
        let mut program = self.spawn()?;
        drop(program.take_stdin()); // as std: a piped stdin is closed, so the program sees EOF
        let stdout = ReadToEnd::start(program.take_stdout());
        let stderr = ReadToEnd::start(program.take_stderr());
        let status = program.join()?;
        Ok(Output { status, stdout: stdout.finish()?, stderr: stderr.finish()? })
    }
}

fn lock(fds: &Mutex<Vec<RawFd>>) -> std::sync::MutexGuard<'_, Vec<RawFd>> {
    fds.lock().unwrap_or_else(PoisonError::into_inner)
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut passed = Vec::new();
        for handle in &self.passed {
            handle.each_fd(&mut |fd| passed.push(fd));
        }
        f.debug_struct("Command").field("command", &self.inner).field("pass", &passed).finish()
    }
}

/// What `output` says when reading the program's output fails.
const READ_OUTPUT: &str = "Command::output could not read the program's output";

/// A coroutine reading a pipe to its end, cancelled if dropped before it is finished (when
/// `output`'s caller is cancelled), and whether it has started (the OS may refuse its stack).
struct ReadToEnd(Option<(JoinHandle<io::Result<Vec<u8>>>, Started)>);

/// Set by a coroutine when its body starts.
type Started = Rc<Cell<bool>>;

impl ReadToEnd {
    fn start(pipe: Option<impl Read + 'static>) -> ReadToEnd {
        ReadToEnd(pipe.map(|mut pipe| {
            let started = Rc::new(Cell::new(false));
            let reader = greenhub::spawn({
                let started = started.clone();
                move || {
                    started.set(true);
                    let mut bytes = Vec::new();
                    pipe.read_to_end(&mut bytes).map(|_| bytes)
                }
            });
            (reader, started)
        }))
    }

    fn finish(mut self) -> Result<Vec<u8>, Error> {
        let Some((reader, started)) = self.0.take() else { return Ok(Vec::new()) };
        match reader.join() {
            Ok(read) => read.map_err(|e| Error::io(READ_OUTPUT, e)),
            // A "panic" before its body started: the OS refused its stack, which `e` names.
            Err(e) if e.is_panic() && !started.get() => {
                Err(Error::io(READ_OUTPUT, io::Error::other(e.to_string())))
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::io(READ_OUTPUT, io::Error::other("its reader was cancelled"))),
        }
    }
}

impl Drop for ReadToEnd {
    fn drop(&mut self) {
        if let Some((reader, _)) = &self.0 {
            reader.cancel();
        }
    }
}

/// The error of a `spawn` whose passed handles hold `held` bytes that the program would never
/// see (see [`Command::spawn`]).
fn held_bytes_error(held: usize) -> Error {
    Error::io(
        format!(
            "Command::spawn: a passed handle holds {held} bytes of its stream in this process \
             (a Reader's bytes read ahead of the messages it returned, or a Writer's rest of a \
             frame a cut-short put has not written), which the program would never see; pass \
             a handle before reading or writing through it here, or give it to a start_process \
             child instead"
        ),
        io::Error::from(io::ErrorKind::InvalidInput),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_returns_the_handle_fd_and_debug_lists_it() {
        greenhub::run(|| {
            let (reader, writer) = crate::raw_pipe().unwrap();
            let expected = writer.as_raw_fd();
            let mut cmd = Command::new("true");
            assert_eq!(cmd.pass(writer), expected);
            let text = format!("{cmd:?}");
            assert!(text.contains(&format!("pass: [{expected}]")), "{text}");
            assert!(cmd.spawn().unwrap().join().unwrap().success());
            // The writer was closed here once `true` ran, and `true` exited: end of stream.
            assert!(matches!(reader.get(), Err(Error::Eof)));
            assert!(format!("{cmd:?}").contains("pass: []"));
        });
    }

    #[test]
    fn a_missing_program_is_an_io_error() {
        greenhub::run(|| {
            let err = Command::new("/nonexistent/greenhub-no-such-program").spawn().unwrap_err();
            assert!(matches!(err, Error::Io(e) if e.kind() == io::ErrorKind::NotFound));
        });
    }

    #[test]
    fn env_and_current_dir_reach_the_program() {
        greenhub::run(|| {
            let output = Command::new("/bin/sh")
                .args(["-c", "echo $GREENHUB_TEST_VAR; pwd"])
                .env_clear()
                .env("GREENHUB_TEST_VAR", "forty-two")
                .current_dir("/")
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), "forty-two\n/\n");
        });
    }
}
