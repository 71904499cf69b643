//! The child's side of `fork`: what is held across it, and what a new child does before it runs
//! its closure (the fd sweep, the start handshake, the signal reset, the fresh hub) and after.
//!
//! Guarantee: a child holds exactly its stdio, the handles it was given and its own hub's fds;
//! it never starts its closure unless the parent holds its pidfd; it never resumes or unwinds
//! anything of the parent's hub. Not guaranteed: anything about locks that other threads hold at
//! the instant of `fork` other than stdout, stderr and greenhub-ipc's own (see "Fork in a
//! threaded process").
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
//! [`Command`]: crate::Command

use std::any::Any;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{MutexGuard, PoisonError};

use crate::Error;
use crate::error::write_stderr;
use crate::handle::{Handle, Registry};
use crate::sys::{self, Forked, InChild};
use crate::transfer::{self, Transfer};

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

/// The default name of the next child: "Process-N" at the top, "P:N" in a child named P.
pub(crate) fn default_name() -> String {
    let mut names = names();
    let number = names.next;
    names.next += 1;
    match &names.prefix {
        Some(prefix) => format!("{prefix}{number}"),
        None => format!("Process-{number}"),
    }
}

/// A child that exists and is watched: its pid, and its pidfd, opened before the child may run
/// any of its closure.
pub(crate) struct Started {
    pub(crate) pid: u32,
    pub(crate) pidfd: Handle,
}

/// Forks a child that runs `f(handles)` as the root of a fresh hub (see the module docs). In the
/// parent it returns once the child exists and its pidfd is held; `handles` are closed here then
/// (the transfer). On an error `handles` are closed all the same, and a child whose pidfd could
/// not be opened is killed and reaped before it has run any of `f`.
pub(crate) fn fork_child<H, F, R>(
    handles: H,
    name: &str,
    daemon: bool,
    f: F,
) -> Result<Started, Error>
where
    H: Transfer,
    F: FnOnce(H) -> R,
    R: ChildResult,
{
    let start = ChildStart {
        keep: transfer::handle_ids(&handles),
        keep_fds: transfer::fds(&handles),
        parent: std::process::id(),
        daemon,
        name,
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
            let pidfd = match watch(pid) {
                Ok(pidfd) => pidfd,
                Err(e) => {
                    sys::kill_and_reap(pid);
                    return Err(e);
                }
            };
            drop(handles); // the transfer: the child has them now
            drop(go_read);
            sys::send_go_ahead(go_write);
            Ok(Started { pid, pidfd })
        }
    }
}

/// The pidfd of our unreaped child `pid` (its pid still names it even if it has exited), as a
/// handle the hub can wait on.
fn watch(pid: u32) -> Result<Handle, Error> {
    let pidfd = sys::pidfd_open(pid).map_err(|e| {
        Error::io("could not open a pidfd for the new child (pidfd_open), so it was killed", e)
    })?;
    Handle::new(pidfd)
}

/// What the child's start needs to know, decided before `fork`.
struct ChildStart<'a> {
    /// The ids of the transferred handles.
    keep: Vec<u64>,
    /// Every fd the child keeps besides stdio: the transferred handles' and plain fds.
    keep_fds: Vec<RawFd>,
    parent: u32,
    daemon: bool,
    name: &'a str,
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
    start: &ChildStart<'_>,
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
            report_panic(start.name, &*payload);
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
    fn a_child_gets_its_transferred_handles_and_only_those() {
        greenhub::run(|| {
            let (reader, writer) = crate::pipe::<usize>().unwrap();
            let (_other_reader, _other_writer) = crate::pipe::<u8>().unwrap();
            let child = crate::start_process(writer, |writer| {
                writer.put(&Registry::lock().len()).map_err(|e| e.to_string())
            })
            .unwrap();
            assert_eq!(reader.get().unwrap(), 1);
            assert_eq!(child.join().unwrap().code(), Some(0));
        });
    }
}
