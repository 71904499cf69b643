//! Child processes: [`start_process`] forks a child that runs a closure as the root of its own,
//! fresh hub; [`Process`] joins, signals and reaps it (and the programs [`Command`] starts).
//!
//! Guarantee: the hub reaps every child itself, through a pidfd, whether or not anyone joins
//! (no zombies, no SIGCHLD handler, no race with other `waitpid` users over pid numbers); a
//! `Process` never signals a process other than its own child; at the end of the parent's
//! [`greenhub::run`] non-daemon children are waited for and daemon children are terminated
//! (SIGTERM, then SIGKILL and a line on stderr if one still runs after its
//! [`ProcessBuilder::terminate_grace`], 5 s by default), then waited for; a child holds exactly
//! its stdio, the handles it was given and its own hub's fds. Not guaranteed: anything about locks that other threads hold at the instant of
//! `fork` other than stdout, stderr and greenhub-ipc's own (see "Fork in a threaded process").
//!
//! # What the child gets
//! The child is a copy of the parent made by `fork(2)` from the coroutine that called
//! `start_process`. Before it runs `f` it:
//! - forgets the parent's hub without touching it (the epoll instance is shared with the parent;
//!   the parent's coroutines are never resumed or unwound in the child);
//! - closes every fd except stdio (0, 1, 2) and the fds in `handles` (`close_range` over the
//!   gaps): other threads' pipes and hubs, pidfds of the parent's other children, files and
//!   sockets alike, whatever other threads were doing at the instant of `fork`. So **a child
//!   holds exactly its stdio, the handles it was given and, once `f` runs, its own hub's fds**
//!   (epoll, eventfd, timerfd). An fd the child needs must be in `handles` ([`Transfer`] takes
//!   plain fds too: `OwnedFd`, `File`, std's pipes and sockets). An inherited greenhub-ipc handle
//!   that was not transferred gives [`Error::Closed`] there; the transferred ones it owns;
//! - waits until the parent holds its pidfd (a one-byte handshake on a pipe): a child the parent
//!   cannot watch (`pidfd_open` failed) is killed before it has run any of `f`;
//! - resets every signal's disposition to the default, except SIGPIPE (ignored) and greenhub's
//!   SIGSEGV/SIGBUS stack-overflow reporter; unblocks every signal;
//! - if it is a daemon, asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`; strictly,
//!   when the parent's thread that forked it ends, which cannot happen before that thread's
//!   `run` has returned and terminated its daemons anyway). Non-daemon children outlive a parent
//!   that dies abruptly, like Python's `multiprocessing`.
//!
//! Then it runs `f(handles)` as the root coroutine of a fresh hub ([`greenhub::run`]), and exits
//! with `_exit`: 0 when `f` returns (or what its [`ChildResult`] says), 101 when it panics (the
//! message goes to stderr). Destructors of what the child inherited never run, atexit handlers
//! neither (unless `f` calls `std::process::exit`).
//!
//! # Fork in a threaded process
//! Test harnesses and `spawn_blocking` make most processes multithreaded, and a child forked while
//! another thread holds a lock finds that lock held forever. (Fds are no such problem: the child
//! closes all it was not given, so a pipe another thread was creating or closing at that instant
//! never stays open in it. Programs started by [`Command`] get the same result from `O_CLOEXEC`,
//! which every fd of greenhub's has from its creation: `exec` closes them.) `start_process` flushes and holds
//! the stdout and stderr locks and greenhub-ipc's handle registry across `fork`, so the child can
//! print and close handles; glibc's allocator is fork-safe. Other process-wide locks (the
//! environment lock of `std::env::set_var`, a backtrace being printed by another thread, locks
//! of C libraries) are not held: a child that needs one that happened to be held deadlocks.
//!
//! # Reaping
//! Each child has a pidfd (`pidfd_open`) registered with the hub, and a detached *reaper*
//! coroutine waits for it to become readable, reaps the child with `waitid(P_PIDFD)`, records the
//! status and closes the pidfd. [`Process::join`] does not wait for the reaper: it watches the
//! pidfd itself, like the reaper, so a reaper that never ran (the OS refused its stack) cannot
//! make a join hang; whichever wakes first reaps. When `run` ends, an exit hook (one per hub) waits for the children of that hub that are still
//! running, blocking in `poll(2)` on each pidfd and then reaping with `waitid`. A program started by [`Command`] that is still running when both
//! its hub and its `Process` are gone is reaped by a short-lived helper thread.
//!
//! [`Command`]: crate::Command

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitStatus;
use std::rc::Rc;
use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use greenhub::sync::Mutex;

use crate::Error;
use crate::command::{ChildStderr, ChildStdin, ChildStdout};
use crate::handle::{Handle, Registry};
use crate::sys::{self, Forked, InChild};
use crate::transfer::{self, Transfer};

/// How often a reaper checks its child when the hub cannot watch the pidfd (never seen in
/// practice: epoll refuses a pidfd only when out of memory or past `max_user_watches`).
const FALLBACK_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The default names of this process's children: a prefix and a counter. At the top the
/// children are "Process-1", "Process-2", ...; a child named N names its own children "N:1",
/// "N:2", ... (like `multiprocessing`'s "Process-2:1"), so names stay distinct across a tree of
/// processes. Held across `fork` with the other locks, and reset by the child.
static NAMES: std::sync::Mutex<Names> = std::sync::Mutex::new(Names { prefix: None, next: 1 });

struct Names {
    /// `None` until this process is a child: then "its own name:".
    prefix: Option<String>,
    next: u64,
}

fn names() -> MutexGuard<'static, Names> {
    NAMES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The exit code a child's closure stands for: `()` is 0; `Result<(), E>` is 0 for `Ok` and 1
/// for `Err`, after printing the error with `{:?}` to stderr (like a `main` returning `Err`).
///
/// ```
/// use greenhub_ipc::ChildResult;
/// assert_eq!(().exit_code(), 0);
/// assert_eq!(Ok::<(), String>(()).exit_code(), 0);
/// ```
///
/// A closure whose body ends in an expression that never returns (`std::process::exit(n)`,
/// `loop {}`) has the type `!`, which is not a `ChildResult` (the never type cannot be named on
/// stable Rust): end the body with `()` or `Ok(())`, or call a function declared to return `()`.
/// The exit code of `std::process::exit(n)` is `n`.
pub trait ChildResult {
    /// Reports (on stderr) what needs reporting, and gives the child's exit code.
    fn exit_code(self) -> i32;
}

impl ChildResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<E: fmt::Debug> ChildResult for Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                write_stderr(&format!("Error: {e:?}\n"));
                1
            }
        }
    }
}

/// Writes straight to fd 2. (`eprintln!` goes through the test harness's output capture, which a
/// forked child inherits and whose buffer nobody ever reads there.)
fn write_stderr(text: &str) {
    let _ = io::stderr().write_all(text.as_bytes());
}

/// Starts a child process that runs `f(handles)` as the root of its own hub; see
/// [`ProcessBuilder`] for a name or a daemon child.
///
/// The handles in `handles` are moved to the child: they are closed here once the child exists,
/// and they are the only greenhub-ipc handles open in the child. More: **a child holds exactly
/// its stdio, the handles (and plain fds, see [`Transfer`]) it was given, and its own hub's
/// fds**; every other fd of the parent's (other pipes, files, sockets, other threads' hubs) is
/// closed there, whatever other threads were doing at the instant of `fork`. `f` need not be
/// `'static`: the child has a copy of everything `f` borrows (but of no fd it was not given).
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
/// `fork` or `pidfd_open` fails (for instance, too many processes or open files), its text
/// naming which. On any error `handles` is consumed all the same: the handles this process owns
/// are closed; a child whose pidfd could not be opened is killed before it runs any of `f`.
///
/// # Panics
/// Outside a hub (call it from inside [`greenhub::run`]).
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
    /// A non-daemon child with a default name ("Process-N").
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
    pub fn start<H, F, R>(self, handles: H, f: F) -> Result<Process, Error>
    where
        H: Transfer,
        F: FnOnce(H) -> R,
        R: ChildResult,
    {
        let hub = current_hub("start_process");
        if !owned_here(&handles) {
            return Err(Error::Closed);
        }
        let start = ChildStart {
            keep: transfer::handle_ids(&handles),
            keep_fds: transfer::fds(&handles),
            parent: std::process::id(),
            daemon: self.daemon,
            grace: self.terminate_grace.unwrap_or(DEFAULT_TERMINATE_GRACE),
            name: self.name.unwrap_or_else(default_name),
        };
        // The child waits on this pipe until the parent holds its pidfd: a child the parent
        // cannot watch is killed before it has run any of `f`.
        let (go_read, go_write) = sys::small_pipe()
            .map_err(|e| Error::io("start_process could not create its start pipe (pipe2)", e))?;
        let held = HeldForFork::lock();
        match sys::fork() {
            Err(e) => Err(Error::io("start_process could not fork", e)),
            Ok(Forked::Child(token)) => {
                sys::in_child(token, |token| child_main(token, held, &start, go_read, handles, f))
            }
            Ok(Forked::Parent(pid)) => {
                drop(held);
                let kind = Kind::Fork { daemon: start.daemon, grace: start.grace };
                let state = State::open(pid, start.name, kind)?;
                drop(handles); // the transfer: the child has them now
                drop(go_read);
                sys::send_go_ahead(go_write);
                remember_child(hub, &state);
                state.ensure_reaper(hub);
                Ok(Process::new(state))
            }
        }
    }
}

/// What the child's start needs to know, decided before `fork`.
struct ChildStart {
    /// The ids of the transferred handles.
    keep: Vec<u64>,
    /// Every fd the child keeps besides stdio: the transferred handles' and plain fds.
    keep_fds: Vec<RawFd>,
    parent: u32,
    daemon: bool,
    grace: Duration,
    name: String,
}

fn default_name() -> String {
    let mut names = names();
    let number = names.next;
    names.next += 1;
    match &names.prefix {
        Some(prefix) => format!("{prefix}{number}"),
        None => format!("Process-{number}"),
    }
}

/// The current hub's id, or a panic naming the rule.
pub(crate) fn current_hub(what: &str) -> u64 {
    greenhub::ext::hub_id().unwrap_or_else(|| {
        panic!(
            "greenhub_ipc::{what} called outside a hub; call it from inside greenhub::run \
             or a coroutine spawned there"
        )
    })
}

/// Whether this process owns every handle in `value` (only those can be given away).
pub(crate) fn owned_here(value: &(impl Transfer + ?Sized)) -> bool {
    let mut all = true;
    value.each_handle(&mut |h| all &= h.is_owned_here());
    all
}

/// The locks the child's start needs, held across `fork` so that no other thread can hold them
/// at that instant (the child would find them locked forever). Released in reverse order.
struct HeldForFork {
    names: MutexGuard<'static, Names>,
    registry: Registry,
    _stderr: io::StderrLock<'static>,
    _stdout: io::StdoutLock<'static>,
}

impl HeldForFork {
    /// Takes stdout, stderr (flushing both, so nothing buffered prints twice), the handle
    /// registry and the default names, in that order (the order every other user of more than
    /// one of them follows).
    fn lock() -> Self {
        let mut stdout = io::stdout().lock();
        let _ = stdout.flush();
        let mut stderr = io::stderr().lock();
        let _ = stderr.flush();
        let registry = Registry::lock();
        HeldForFork { names: names(), registry, _stderr: stderr, _stdout: stdout }
    }
}

/// The child's side of `start_process`, after `sys::in_child` has forgotten the parent's hub:
/// returns the exit code.
fn child_main<H, F, R>(
    token: &InChild,
    mut held: HeldForFork,
    start: &ChildStart,
    go_ahead: OwnedFd,
    handles: H,
    f: F,
) -> i32
where
    H: Transfer,
    F: FnOnce(H) -> R,
    R: ChildResult,
{
    // Exactly stdio, the transferred fds and (until it is read) the handshake pipe stay open:
    // whatever other threads were doing with their pipes and hubs at the instant of `fork`.
    let mut keep_fds = start.keep_fds.clone();
    keep_fds.push(go_ahead.as_raw_fd());
    sys::close_fds_except(token, &keep_fds);
    held.registry.forget_all_but(&start.keep);
    if !sys::wait_for_go_ahead(token, go_ahead) {
        return 1; // the parent could not take this child on (or died): never start `f`
    }
    transfer::adopt(&handles);
    *held.names = Names { prefix: Some(format!("{}:", start.name)), next: 1 };
    sys::reset_signals(token);
    if start.daemon {
        match sys::die_with_parent(token, start.parent) {
            Ok(true) => {}
            Ok(false) => return 128 + libc::SIGTERM, // the parent is gone: as if its SIGTERM came
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "greenhub-ipc: daemon {} cannot ask to die with its parent \
                     (PR_SET_PDEATHSIG: {e}); it is still terminated at the end of run",
                    start.name
                );
            }
        }
    }
    drop(held);
    let run = panic::catch_unwind(AssertUnwindSafe(|| greenhub::run(move || f(handles))));
    let code = match run {
        Ok(result) => result.exit_code(),
        Err(payload) => {
            report_panic(&start.name, &*payload);
            std::mem::forget(payload); // dropping it could panic again; we are leaving anyway
            101
        }
    };
    let _ = io::stdout().flush();
    code
}

/// The child's panic message, on fd 2 (the panic hook's own report may be captured by the test
/// harness in the child).
fn report_panic(name: &str, payload: &(dyn Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    let pid = std::process::id();
    write_stderr(&format!("greenhub-ipc: child process {name} (pid {pid}) panicked: {message}\n"));
}

/// A child process (started by [`start_process`] or [`Command::spawn`](crate::Command::spawn)).
///
/// Dropping a `Process` detaches it: the hub still reaps the child, and a [`start_process`]
/// child is still waited for (or terminated, if a daemon) at the end of `run`. A `Process` may
/// outlive its hub: then `join` blocks the thread (there is no hub to suspend to).
///
/// `Debug` shows the name, pid and state:
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

    /// The name given to [`ProcessBuilder::name`], "Process-N" by default, or the program of a
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
    /// through fork); [`Error::Io`] with `ECHILD` if something else reaped the child (a
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
    /// whether or not anyone joins (and this call checks too). `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self.state.outcome.get() {
            Some(Outcome::Exited(status)) => Some(status),
            Some(Outcome::Lost(_)) => None,
            None => self.state.poll_exit().ok().flatten(),
        }
    }

    /// Whether the child is still running: false once it has ended (this call reaps it then,
    /// if the hub's reaper has not yet), and false in a process that did not start it.
    pub fn is_alive(&self) -> bool {
        matches!(self.state.poll_exit(), Ok(None))
    }

    /// Sends SIGTERM (`multiprocessing`'s `terminate`). Nothing happens once the child has
    /// ended; never signals another process that reused the pid (the signal goes through the
    /// pidfd).
    ///
    /// # Errors
    /// [`Error::Closed`] in a process that did not start the child; [`Error::Io`] if the kernel
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
        f.debug_struct("Process")
            .field("name", &self.state.name)
            .field("pid", &self.state.pid)
            .field("state", &format_args!("{}", Describe(self.state.outcome.get())))
            .finish()
    }
}

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

/// How a child ended, once known.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Exited(ExitStatus),
    /// `waitid` failed (errno), typically `ECHILD`: something else reaped the child.
    Lost(i32),
}

impl Outcome {
    fn result(self) -> Result<ExitStatus, Error> {
        match self {
            Outcome::Exited(status) => Ok(status),
            Outcome::Lost(errno) => Err(lost(errno)),
        }
    }
}

/// The error of a child that could not be reaped: `ECHILD` means something else reaped it.
fn lost(errno: i32) -> Error {
    let err = io::Error::from_raw_os_error(errno);
    if errno == libc::ECHILD {
        Error::io(
            "could not reap the child (waitid): something else reaped it, a waitpid(-1) \
             elsewhere in the program or SIGCHLD set to SIG_IGN",
            err,
        )
    } else {
        Error::io("could not wait for the child (waitid or poll on its pidfd)", err)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// From `start_process`: waited for (or, a daemon, terminated) at the end of `run`.
    Fork {
        daemon: bool,
        /// Between SIGTERM and SIGKILL at the end of `run`, for a daemon.
        grace: Duration,
    },
    /// From `Command`: std's rule, neither waited for nor killed at the end of `run`.
    Program,
}

/// One child, shared by its `Process`, its reaper coroutine and the hub's list of children.
///
/// Who touches what: `outcome` is written once, by whichever of the reaper, a `join` or a
/// status check reaps the child first (`settle`), and then the pidfd is closed. The reaper and
/// every cooperative `join` take turns at watching the pidfd (`watch`; each can do it, so none
/// depends on another having run), and the watcher borrows `pidfd` across its wait; everyone
/// else borrows it briefly, and the closing skips while it is borrowed (the watcher closes it
/// when it wakes).
struct State {
    pid: u32,
    name: String,
    kind: Kind,
    /// `None` once the child is reaped and the pidfd closed.
    pidfd: RefCell<Option<Handle>>,
    outcome: Cell<Option<Outcome>>,
    /// Held by the one coroutine watching the pidfd (the reaper or a `join`).
    watch: Mutex<()>,
    /// The hub whose reaper coroutine watches this child, if any.
    reaper_hub: Cell<Option<u64>>,
}

impl State {
    /// Opens the child's pidfd. (The child cannot have been reaped yet, so its pid still names it
    /// even if it has already exited.)
    fn open(pid: u32, name: String, kind: Kind) -> Result<Rc<State>, Error> {
        let pidfd: OwnedFd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                if kind != Kind::Program {
                    sys::kill_and_reap(pid);
                }
                return Err(Error::io(
                    "could not open a pidfd for the new child (pidfd_open), so it was killed",
                    e,
                ));
            }
        };
        Ok(Rc::new(State {
            pid,
            name,
            kind,
            pidfd: RefCell::new(Some(Handle::new(pidfd)?)),
            outcome: Cell::new(None),
            watch: Mutex::new(()),
            reaper_hub: Cell::new(None),
        }))
    }

    /// Runs `f` on the pidfd if this process owns it (`Closed` otherwise, and once it is closed).
    fn with_pidfd<R>(&self, f: impl FnOnce(RawFd) -> R) -> Result<R, Error> {
        match self.pidfd.borrow().as_ref() {
            Some(handle) if handle.is_owned_here() => Ok(f(handle.as_raw_fd())),
            _ => Err(Error::Closed),
        }
    }

    /// The exit status if the child has ended (reaping it now if nobody has yet), without
    /// waiting.
    fn poll_exit(&self) -> Result<Option<ExitStatus>, Error> {
        if let Some(outcome) = self.outcome.get() {
            return outcome.result().map(Some);
        }
        let polled = self.with_pidfd(sys::try_wait_pidfd)?;
        self.settle(polled)
    }

    /// Blocks the thread until the child ends (or `timeout` passes: `Ok(None)`).
    fn wait_blocking(&self, timeout: Option<Duration>) -> Result<Option<ExitStatus>, Error> {
        if let Some(outcome) = self.outcome.get() {
            return outcome.result().map(Some);
        }
        let polled = self.with_pidfd(|fd| sys::wait_pidfd_blocking(fd, timeout))?;
        self.settle(polled)
    }

    /// Records what a `waitid` said, if it says the child has ended.
    fn settle(&self, polled: io::Result<Option<i32>>) -> Result<Option<ExitStatus>, Error> {
        let outcome = match polled {
            Ok(None) => return Ok(None),
            Ok(Some(raw)) => Outcome::Exited(ExitStatus::from_raw(raw)),
            Err(e) => Outcome::Lost(e.raw_os_error().unwrap_or(libc::ECHILD)),
        };
        self.outcome.set(Some(outcome));
        self.close_pidfd();
        outcome.result().map(Some)
    }

    /// Closes the pidfd of a reaped child, unless the reaper is waiting on it right now (it
    /// closes it itself when it wakes, which it does: the child's exit made the pidfd readable).
    fn close_pidfd(&self) {
        if let Ok(mut slot) = self.pidfd.try_borrow_mut()
            && let Some(handle) = slot.take()
        {
            let _ = handle.close();
        }
    }

    /// Makes sure a reaper coroutine of hub `hub` watches this child.
    fn ensure_reaper(self: &Rc<Self>, hub: u64) {
        if self.reaper_hub.get() == Some(hub) || self.outcome.get().is_some() {
            return;
        }
        self.reaper_hub.set(Some(hub));
        let state = self.clone();
        drop(greenhub::spawn(move || state.reap_cooperatively()));
    }

    /// The reaper coroutine: waits for the child to end, which reaps it and closes the pidfd.
    fn reap_cooperatively(&self) {
        let _ = self.wait_cooperatively();
    }

    /// Suspends the calling coroutine until the child has ended, reaps it (if nobody has yet) and
    /// closes the pidfd: what the reaper and every `join` inside a hub do, any number at once,
    /// none depending on another having run.
    fn wait_cooperatively(&self) -> Result<ExitStatus, Error> {
        // One waiter watches the pidfd at a time; the others queue here and find the outcome
        // when their turn comes (so the pidfd is closed as soon as it is reaped, with no other
        // coroutine still registered on it). One that gives up (a timeout) hands the watch on.
        let _watching = self.watch.lock();
        if let Some(outcome) = self.outcome.get() {
            return outcome.result();
        }
        {
            let slot = self.pidfd.borrow();
            if let Some(source) = slot.as_ref().and_then(|handle| handle.source().ok()) {
                // The retry loop: "reap; while the child runs, wait for the pidfd to be readable".
                let watched = source.read_with(|_| match self.poll_exit() {
                    Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(Some(_)) | Err(_) => Ok(()),
                });
                if watched.is_err() {
                    // The hub could not watch the pidfd (epoll refused it): poll on a timer.
                    while let Ok(None) = self.poll_exit() {
                        greenhub::sleep(FALLBACK_POLL_INTERVAL);
                    }
                }
            }
        }
        self.close_pidfd(); // skipped by `settle` while the pidfd was borrowed above
        match self.poll_exit()? {
            Some(status) => Ok(status),
            None => unreachable!("a child was found running after its wait ended"),
        }
    }

    /// Sends `signal` through the pidfd; nothing once the child has ended.
    fn signal(&self, signal: libc::c_int) -> Result<(), Error> {
        if self.outcome.get().is_some() {
            return Ok(());
        }
        match self.with_pidfd(|fd| sys::pidfd_send_signal(fd, signal))? {
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                Err(Error::io("could not signal the child (pidfd_send_signal)", e))
            }
            _ => Ok(()), // ESRCH: it has just exited
        }
    }
}

impl Drop for State {
    /// The last owner is gone while the child may still run (a program whose hub has ended):
    /// reap it now if it has exited, else leave a helper thread to reap it.
    fn drop(&mut self) {
        if self.outcome.get().is_some() {
            return;
        }
        let Some(handle) = self.pidfd.get_mut().take() else { return };
        if !handle.is_owned_here() {
            return; // inherited through fork: not our child, and the fd number is not ours
        }
        if let Ok(None) = sys::try_wait_pidfd(handle.as_raw_fd()) {
            reap_in_background(&handle);
        }
    }
}

/// Reaps the child behind `pidfd` on a helper thread, which ends as soon as the child does.
fn reap_in_background(pidfd: &Handle) {
    let Ok(fd) = sys::dup_cloexec(pidfd.as_raw_fd()) else { return };
    let _ = std::thread::Builder::new().name("greenhub-ipc-reaper".into()).spawn(move || {
        let _ = sys::wait_pidfd_blocking(fd.as_raw_fd(), None);
        drop(fd);
    });
}

thread_local! {
    /// The `start_process` children of each hub of this thread not yet known to have ended, for
    /// the end of that hub's `run`. (A forked child inherits its parent's entries and leaves them
    /// alone: its own hub has a new id.)
    static CHILDREN: RefCell<HashMap<u64, Vec<Rc<State>>>> = RefCell::new(HashMap::new());
}

/// Adds a child to hub `hub`'s list; the first one registers the hub's exit hook.
fn remember_child(hub: u64, state: &Rc<State>) {
    let first = CHILDREN.with(|children| {
        let mut children = children.borrow_mut();
        let first = !children.contains_key(&hub);
        let list = children.entry(hub).or_default();
        list.retain(|child| child.outcome.get().is_none());
        list.push(state.clone());
        first
    });
    if first {
        greenhub::ext::at_exit(move || wait_for_children(hub));
    }
}

/// The end of hub `hub`'s `run` (no coroutine left, so the waits block): wait for the
/// non-daemon children, then terminate the daemon children and wait for them.
fn wait_for_children(hub: u64) {
    let children = CHILDREN.with(|c| c.borrow_mut().remove(&hub)).unwrap_or_default();
    let (daemons, others): (Vec<_>, Vec<_>) = children
        .into_iter()
        .partition(|child| matches!(child.kind, Kind::Fork { daemon: true, .. }));
    for child in &others {
        let _ = child.wait_blocking(None);
    }
    let terminated = std::time::Instant::now();
    for child in &daemons {
        let _ = child.signal(libc::SIGTERM);
    }
    for child in &daemons {
        let Kind::Fork { grace, .. } = child.kind else { continue };
        let left = grace.saturating_sub(terminated.elapsed());
        if let Ok(None) = child.wait_blocking(Some(left)) {
            write_stderr(&format!(
                "greenhub-ipc: daemon child {} (pid {}) was still running {grace:?} after the \
                 SIGTERM at the end of run; killing it with SIGKILL (the grace period is \
                 ProcessBuilder::terminate_grace)\n",
                child.name, child.pid
            ));
            let _ = child.signal(libc::SIGKILL);
            let _ = child.wait_blocking(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_ok_exit_with_zero() {
        assert_eq!(().exit_code(), 0);
        assert_eq!(Ok::<(), Error>(()).exit_code(), 0);
    }

    #[test]
    fn default_names_count_up() {
        let (a, b) = (default_name(), default_name());
        let number = |name: &str| name.strip_prefix("Process-").unwrap().parse::<u64>().unwrap();
        assert!(number(&b) > number(&a), "{a} then {b}");
    }

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
    fn lost_outcome_is_an_io_error() {
        let err = Outcome::Lost(libc::ECHILD).result().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
        let text = err.to_string();
        assert!(text.contains("could not reap the child"), "{text}");
        assert!(text.contains("waitpid(-1)"), "{text}");
        assert!(!text.contains("on the pipe"), "{text}");
    }

    #[test]
    fn a_child_gets_its_transferred_handles_and_only_those() {
        greenhub::run(|| {
            let (reader, writer) = crate::pipe::<usize>().unwrap();
            let (_other_reader, _other_writer) = crate::pipe::<u8>().unwrap();
            let child = start_process(writer, |writer| {
                writer.put(&Registry::lock().len()).map_err(|e| e.to_string())
            })
            .unwrap();
            assert_eq!(reader.get().unwrap(), 1);
            assert_eq!(child.join().unwrap().code(), Some(0));
        });
    }

    #[test]
    #[should_panic(expected = "start_process called outside a hub")]
    fn start_process_outside_a_hub_names_the_rule() {
        let _ = start_process((), |()| ());
    }
}
