//! Child processes: [`start_process`] and [`ProcessBuilder`] start a child that runs a closure
//! as the root of its own, fresh hub (the child's side is in `fork.rs`); [`Process`] joins and
//! signals it, or a program [`Command`] started (the reaping is in `reap.rs`).
//!
//! Guarantee: the hub reaps every child itself, through a pidfd, whether or not anyone joins
//! (no zombies, no SIGCHLD handler, no race with other `waitpid` users over pid numbers); a
//! `Process` never signals a process other than its own child; at the end of the parent's
//! [`greenhub::run`] non-daemon children are waited for and daemon children are terminated
//! (SIGTERM, then SIGKILL and a line on stderr if one still runs after its
//! [`ProcessBuilder::terminate_grace`], 5 s by default), then waited for; a child holds exactly
//! its stdio, the handles it was given and its own hub's fds. Not guaranteed: anything about
//! locks that other threads hold at the instant of `fork` other than stdout, stderr and
//! greenhub-ipc's own (see "Fork in a threaded process" in `fork.rs`).
//!
//! [`Command`]: crate::Command

use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::time::Duration;

use crate::Error;
use crate::fork::{self, ChildResult};
use crate::reap::{self, Kind, Outcome, State};
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};
use crate::transfer::{self, Transfer};

/// Starts a child process that runs `f(handles)` as the root of its own hub; see
/// [`ProcessBuilder`] for a name or a daemon child.
///
/// The handles in `handles` are moved to the child: they are closed here once the child exists,
/// and they are the only greenhub-ipc handles open in the child. More: **a child holds exactly
/// its stdio, the handles (and plain fds, see [`Transfer`]) it was given, and its own hub's
/// fds**; every other fd of the parent's (other pipes, files, sockets, other threads' hubs) is
/// closed there, whatever other threads were doing at the instant of `fork`. `f` need not be
/// `'static`: the child has a copy of everything `f` borrows (but of no fd it was not given).
/// It may be called from any coroutine, whatever its stack size: the child leaves that stack
/// at once for one of its own (8 MiB, like a main thread's), and `f` runs as the root coroutine
/// of the child's hub.
///
/// ```
/// greenhub::run(|| {
///     let (reader, writer) = greenhub_ipc::pipe::<String>().unwrap();
///     let child = greenhub_ipc::start_process(writer, |writer| {
///         writer.put(&format!("hello from {}", std::process::id()))
///     })
///     .unwrap();
///     assert!(reader.get().unwrap().starts_with("hello from"));
///     assert!(child.join().unwrap().success());
/// });
/// ```
///
/// # Errors
/// [`Error::Closed`] if a handle in `handles` is not owned by this process; [`Error::Io`] if
/// mapping the child's stack, `fork` or `pidfd_open` fails (for instance, too many processes
/// or open files, or no address space left), its text naming which. A fork the OS refuses with `EAGAIN` names the limits that may have run out
/// (RLIMIT_NPROC, `ulimit -u`; kernel.pid_max, kernel.threads-max; the cgroup's pids.max) and
/// has kind `Other`, not `WouldBlock`: waiting for readiness would not help. On any error `handles` is consumed all the same: the handles this process owns
/// are closed; a child whose pidfd could not be opened is killed before it runs any of `f`.
///
/// # Panics
/// Outside a hub (call it from inside [`greenhub::run`]).
#[track_caller]
pub fn start_process<H, F, R>(handles: H, f: F) -> Result<Process, Error>
where
    H: Transfer,
    F: FnOnce(H) -> R,
    R: ChildResult,
{
    ProcessBuilder::new().start(handles, f)
}

/// Configures a child process before starting it: `ProcessBuilder::new().name("worker")
/// .daemon(true).start(handles, f)`.
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use greenhub_ipc::ProcessBuilder;
///
/// let (worker, _writer) = greenhub::run(|| {
///     let (reader, writer) = greenhub_ipc::pipe::<u8>().unwrap();
///     let worker = ProcessBuilder::new()
///         .name("waiter")
///         .daemon(true)
///         .start(reader, |reader| reader.get().map(drop)) // waits for a message forever
///         .unwrap();
///     assert_eq!(worker.name(), "waiter");
///     (worker, writer)
/// }); // a daemon is terminated when `run` ends
/// assert_eq!(worker.exit_status().unwrap().signal(), Some(libc::SIGTERM));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: bool,
    terminate_grace: Option<Duration>,
}

/// How long a daemon child has, by default, between the SIGTERM at the end of its parent's
/// `run` and the SIGKILL that follows if it is still running (5 s).
const DEFAULT_TERMINATE_GRACE: Duration = Duration::from_secs(5);

impl ProcessBuilder {
    /// A non-daemon child with a default name ("Process-N" at the top; "P:N" in a child named
    /// "P", like `multiprocessing`'s "Process-2:1").
    pub fn new() -> Self {
        Self::default()
    }

    /// The name [`Process::name`] reports (only the parent sees it; the OS process name is the
    /// parent's).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is terminated (SIGTERM, then waited for, SIGKILL after its
    /// [`terminate_grace`](Self::terminate_grace)) when the parent's `run` ends,
    /// and also gets SIGTERM if the parent dies abruptly. A non-daemon child (the default) is
    /// waited for when the parent's `run` ends.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// How long a daemon child has to end after the SIGTERM at the end of the parent's `run`
    /// (default 5 s). One still running then is killed with SIGKILL, and a line on stderr says
    /// so, so `run` always returns. No effect on a non-daemon child, which is waited for.
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::time::Duration;
    /// fn run_forever() {
    ///     loop { std::thread::park() }
    /// }
    ///
    /// let stubborn = greenhub::run(|| {
    ///     let (ready, ready_writer) = greenhub_ipc::pipe::<()>().unwrap();
    ///     let child = greenhub_ipc::ProcessBuilder::new()
    ///         .daemon(true)
    ///         .terminate_grace(Duration::from_millis(10))
    ///         .start(ready_writer, |ready| {
    ///             // SAFETY: ignoring a signal installs no handler.
    ///             unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    ///             ready.put(&()).unwrap();
    ///             run_forever()
    ///         })
    ///         .unwrap();
    ///     ready.get().unwrap();
    ///     child
    /// }); // SIGTERM is ignored: SIGKILL 10 ms later
    /// assert_eq!(stubborn.exit_status().unwrap().signal(), Some(libc::SIGKILL));
    /// ```
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = Some(grace);
        self
    }

    /// Starts the child; see [`start_process`].
    ///
    /// # Errors
    /// As [`start_process`].
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn start<H, F, R>(self, handles: H, f: F) -> Result<Process, Error>
    where
        H: Transfer,
        F: FnOnce(H) -> R,
        R: ChildResult,
    {
        let hub = current_hub("start_process");
        if !transfer::owned_here(&handles) {
            return Err(Error::Closed);
        }
        let name = self.name.unwrap_or_else(fork::default_name);
        let started = fork::fork_child(handles, &name, self.daemon, f)?;
        let grace = self.terminate_grace.unwrap_or(DEFAULT_TERMINATE_GRACE);
        let kind = Kind::Fork { daemon: self.daemon, grace };
        let state = State::new(started.pid, started.pidfd, name, kind);
        reap::remember_child(hub, &state);
        state.ensure_reaper(hub);
        Ok(Process::new(state))
    }
}

/// The current hub's id, or a panic naming the rule.
#[track_caller]
pub(crate) fn current_hub(what: &str) -> u64 {
    match greenhub::ext::hub_id() {
        Some(hub) => hub,
        None => panic!(
            "greenhub_ipc::{what} called outside a hub; call it from inside greenhub::run \
             or a coroutine spawned there"
        ),
    }
}

/// A child process (started by [`start_process`] or [`Command::spawn`](crate::Command::spawn)).
///
/// Dropping a `Process` detaches it: the hub still reaps the child, and a [`start_process`]
/// child is still waited for (or terminated, if a daemon) at the end of `run`. A `Process` may
/// outlive its hub: then `join` blocks the thread (there is no hub to suspend to), and a
/// program from [`Command`](crate::Command) whose hub has ended is reaped only when its
/// `Process` is joined, checked (`exit_status`, `is_alive`) or dropped: kept unpolled, a program
/// that has exited stays a zombie, as with std's `Child`. (A [`start_process`] child cannot
/// outlive its hub's `run`, which waits for it or terminates it.)
///
/// `Debug` shows the name, pid and state (in a process that inherited the `Process` through
/// fork, the state says so: the child is not that process's):
/// ```
/// greenhub::run(|| {
///     let child = greenhub_ipc::ProcessBuilder::new().name("quick").start((), |()| ()).unwrap();
///     child.join().unwrap();
///     let text = format!("{child:?}");
///     assert!(text.starts_with(r#"Process { name: "quick", pid: "#), "{text}");
///     assert!(text.ends_with("state: exited with code 0 }"), "{text}");
/// });
/// ```
pub struct Process {
    state: Rc<State>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Process {
    fn new(state: Rc<State>) -> Process {
        Process { state, stdin: None, stdout: None, stderr: None }
    }

    /// A `Process` for a program `std` just spawned: pidfd, reaper, and the piped stdio.
    pub(crate) fn from_program(
        hub: u64,
        name: String,
        mut child: std::process::Child,
    ) -> Result<Process, Error> {
        let state = match State::open(child.id(), name, Kind::Program) {
            Ok(state) => state,
            Err(e) => {
                // Without a pidfd we could never reap it: do not leave it behind.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        state.ensure_reaper(hub);
        let mut process = Process::new(state);
        process.stdin = child.stdin.take().map(|p| ChildStdin::new(p.into())).transpose()?;
        process.stdout = child.stdout.take().map(|p| ChildStdout::new(p.into())).transpose()?;
        process.stderr = child.stderr.take().map(|p| ChildStderr::new(p.into())).transpose()?;
        Ok(process)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    /// The name given to [`ProcessBuilder::name`], "Process-N" by default ("P:N" in a child
    /// named "P"), or the program of a
    /// [`Command`](crate::Command).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Waits for the child to end and returns its exit status, suspending only the calling
    /// coroutine (outside a hub, blocking the thread). Returns at once once it has ended; any
    /// number of coroutines may join.
    ///
    /// # Errors
    /// [`Error::Closed`] in a process this `Process` was not started by (one that inherited it
    /// through fork), whether or not the child has ended (a status its parent had recorded
    /// before the fork is not the inheritor's); [`Error::Io`] with `ECHILD` if something else reaped the child (a
    /// `waitpid(-1)` elsewhere in the program, or SIGCHLD set to `SIG_IGN`).
    pub fn join(&self) -> Result<ExitStatus, Error> {
        match self.wait(None)? {
            Some(status) => Ok(status),
            None => unreachable!("a wait without a timeout ended without a status"),
        }
    }

    /// Like [`join`](Self::join), giving up after `d`: `Ok(None)` if the child is still running.
    ///
    /// ```
    /// use std::time::Duration;
    /// greenhub::run(|| {
    ///     let (reader, writer) = greenhub_ipc::pipe::<u8>().unwrap();
    ///     let child = greenhub_ipc::start_process(reader, |r| r.get().map(drop)).unwrap();
    ///     assert!(child.join_timeout(Duration::from_millis(20)).unwrap().is_none());
    ///     writer.put(&1).unwrap(); // now it can finish
    ///     let status = child.join_timeout(Duration::from_secs(60)).unwrap();
    ///     assert!(status.unwrap().success());
    /// });
    /// ```
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub fn join_timeout(&self, d: Duration) -> Result<Option<ExitStatus>, Error> {
        self.wait(Some(d))
    }

    /// The exit status if the child has ended: the hub records it as soon as the child ends,
    /// whether or not anyone joins (and this call checks too). `None` while it runs, and `None`
    /// in a process that did not start it (one that inherited this `Process` through fork:
    /// there it is not a child, whatever its parent had recorded before the fork).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self.state.outcome() {
            Ok(Some(Outcome::Exited(status))) => Some(status),
            Ok(Some(Outcome::Lost(_))) | Err(_) => None,
            Ok(None) => self.state.poll_exit().ok().flatten(),
        }
    }

    /// Whether the child is still running: false once it has ended (this call reaps it then,
    /// if the hub's reaper has not yet), and false in a process that did not start it (one that
    /// inherited this `Process` through fork, whether the child runs or not).
    pub fn is_alive(&self) -> bool {
        matches!(self.state.poll_exit(), Ok(None))
    }

    /// Sends SIGTERM (`multiprocessing`'s `terminate`). Nothing happens once the child has
    /// ended; never signals another process that reused the pid (the signal goes through the
    /// pidfd).
    ///
    /// # Errors
    /// [`Error::Closed`] in a process that did not start the child (one that inherited this
    /// `Process` through fork), whether or not the child has ended; [`Error::Io`] if the kernel
    /// refuses.
    pub fn terminate(&self) -> Result<(), Error> {
        self.state.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL; otherwise as [`terminate`](Self::terminate).
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt;
    /// greenhub::run(|| {
    ///     let (reader, writer) = greenhub_ipc::pipe::<u8>().unwrap();
    ///     let child = greenhub_ipc::start_process(reader, |r| r.get().map(drop)).unwrap();
    ///     child.kill().unwrap();
    ///     assert_eq!(child.join().unwrap().signal(), Some(9));
    ///     drop(writer);
    /// });
    /// ```
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn kill(&self) -> Result<(), Error> {
        self.state.signal(libc::SIGKILL)
    }

    /// The program's stdin, when its [`Command`](crate::Command) asked for `Stdio::piped()`
    /// (once: later calls give `None`). Dropping it closes it, so the program sees end of file.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The program's stdout, when its [`Command`](crate::Command) asked for `Stdio::piped()`
    /// (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The program's stderr, when its [`Command`](crate::Command) asked for `Stdio::piped()`
    /// (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// `join` and `join_timeout`: inside a hub, wait on the pidfd (suspending the caller); outside
    /// one, block the thread.
    ///
    /// The wait does not depend on the reaper coroutine: a reaper that never ran (the OS refused
    /// its stack) cannot make a join hang, since the joiner watches the pidfd itself.
    fn wait(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>, Error> {
        if let Some(status) = self.state.poll_exit()? {
            return Ok(Some(status));
        }
        let Some(hub) = greenhub::ext::hub_id() else {
            return self.state.wait_blocking(timeout);
        };
        self.state.ensure_reaper(hub);
        match timeout {
            None => self.state.wait_cooperatively().map(Some),
            Some(d) => match greenhub::timeout(d, || self.state.wait_cooperatively()) {
                Ok(ended) => ended.map(Some),
                Err(_elapsed) => Ok(None),
            },
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Process");
        debug.field("name", &self.state.name).field("pid", &self.state.pid);
        match self.state.outcome() {
            Ok(outcome) => debug.field("state", &format_args!("{}", Describe(outcome))),
            Err(_) => debug.field("state", &format_args!("{INHERITED}")),
        };
        debug.finish()
    }
}

/// The state part of `Process`'s `Debug` in a process that did not start the child.
const INHERITED: &str = "inherited through fork, not a child of this process";

/// The state part of `Process`'s `Debug`: what the hub has recorded (no system call).
struct Describe(Option<Outcome>);

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("running"),
            Some(Outcome::Exited(status)) => match (status.code(), status.signal()) {
                (Some(code), _) => write!(f, "exited with code {code}"),
                (None, Some(signal)) => write!(f, "killed by signal {signal}"),
                (None, None) => write!(f, "ended ({status})"),
            },
            Some(Outcome::Lost(errno)) => {
                write!(f, "reaped elsewhere ({})", io::Error::from_raw_os_error(errno))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_code_signal_and_running() {
        assert_eq!(Describe(None).to_string(), "running");
        let exited = Outcome::Exited(ExitStatus::from_raw(3 << 8));
        assert_eq!(Describe(Some(exited)).to_string(), "exited with code 3");
        let killed = Outcome::Exited(ExitStatus::from_raw(9));
        assert_eq!(Describe(Some(killed)).to_string(), "killed by signal 9");
        let lost = Describe(Some(Outcome::Lost(libc::ECHILD))).to_string();
        assert!(lost.starts_with("reaped elsewhere"), "{lost}");
    }

    #[test]
    #[should_panic(expected = "start_process called outside a hub")]
    fn start_process_outside_a_hub_names_the_rule() {
        let _ = start_process((), |()| ());
    }
}
