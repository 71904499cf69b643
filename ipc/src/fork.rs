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
//! The child is a copy of the parent made from the coroutine that called `start_process`: by
//! `clone3` with `CLONE_PIDFD` in a single-threaded process (the kernel makes the parent's pidfd
//! in the same system call), else by glibc's `fork(2)` and then `pidfd_open` (see "Two ways to
//! fork"). Before it runs `f` it:
//! - forgets the parent's hub without touching it (the epoll instance is shared with the parent;
//!   the parent's coroutines are never resumed or unwound in the child), and at once leaves the
//!   stack of the coroutine that forked, whatever room it had left, for a stack of its own (8
//!   MiB and a guard page, mapped by the parent before the fork, so that the OS refusing it is
//!   `start_process`'s error), on which the rest of its life runs, its hub's loop included;
//! - closes every fd except stdio (0, 1, 2) and the fds in `handles` (`close_range` over the
//!   gaps): other threads' pipes and hubs, pidfds of the parent's other children, files and
//!   sockets alike, whatever other threads were doing at the instant of `fork`. So **a child
//!   holds exactly its stdio, the handles it was given and, once `f` runs, its own hub's fds**
//!   (epoll, eventfd, timerfd). An fd the child needs must be in `handles` ([`Transfer`] takes
//!   plain fds too: `OwnedFd`, `File`, std's pipes and sockets). An inherited greenhub-ipc handle
//!   that was not transferred gives [`Error::Closed`] there; the transferred ones it owns;
//! - after glibc's `fork` only, waits until the parent holds its pidfd (a one-byte handshake on
//!   a pipe): a child the parent cannot watch (`pidfd_open` failed) is killed before it has run
//!   any of `f`. A `clone3` child needs no handshake: it exists only if its pidfd does;
//! - resets every signal's disposition to the default, except SIGPIPE (ignored) and greenhub's
//!   SIGSEGV/SIGBUS stack-overflow reporter; unblocks every signal;
//! - if it is a daemon, asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`; strictly,
//!   when the parent's thread that forked it ends, which cannot happen before that thread's
//!   `run` has returned and terminated its daemons anyway). Non-daemon children outlive a parent
//!   that dies abruptly, like Python's `multiprocessing`.
//!
//! Then it runs `f(handles)` as the root coroutine of a fresh hub ([`greenhub::run`]'s loop and
//! shutdown, by [`greenhub::ext::run_before_exit`], which leaves the hub's memory and fds to the
//! exit), and exits with `_exit`: 0 when `f` returns (or what its [`ChildResult`] says), 101 when
//! it panics (the message goes to stderr). Destructors of what the child inherited never run,
//! atexit handlers neither (unless `f` calls `std::process::exit`).
//!
//! # Fork in a threaded process
//! Test harnesses and `spawn_blocking` make most processes multithreaded, and a child forked while
//! another thread holds a lock finds that lock held forever. (Fds are no such problem: the child
//! closes all it was not given, so a pipe another thread was creating or closing at that instant
//! never stays open in it. Programs started by [`Command`] get the same result from `O_CLOEXEC`,
//! which every fd of greenhub's has from its creation: `exec` closes them.) Before glibc's
//! `fork`, `start_process` flushes and holds the four locks the child's start needs across it:
//! stdout's, stderr's, greenhub-ipc's handle registry and the default names, so the child can
//! print, close handles and name its own children; glibc's `fork` takes the allocator's and
//! stdio's locks. (Before a `clone3`, in a process with no other thread, it only flushes stdout
//! and stderr: nobody else can hold a lock, and the child takes the two it uses itself.) Other
//! process-wide locks (the environment lock of `std::env::set_var`, a backtrace being printed by
//! another thread, locks of C libraries) are not held: a child that needs one that happened to
//! be held deadlocks.
//!
//! # Two ways to fork
//! A raw `clone3` bypasses glibc's `fork`, which in a multithreaded process takes the
//! allocator's and stdio's locks across the system call (a child would otherwise find one
//! held by a thread that does not exist there), and in every process runs the `pthread_atfork`
//! handlers, writes the child's thread id into glibc's thread descriptor and registers its
//! robust-mutex list. So `clone3` is used only where nothing of that is lost (`sys::Clone3::
//! clone_with_pidfd` has the list): in a process that has only ever had one thread (no other
//! thread can hold a lock), with the thread id and the robust list fixed up as glibc would, and
//! greenhub-ipc's own atfork handler run by hand. What remains is other libraries' atfork
//! handlers, which a `clone3` child does not run: a program linking a C library that needs them
//! in a forked child sets `GREENHUB_IPC_FORK=fork`, and every start uses glibc's `fork`.
//!
//! [`Command`]: crate::Command

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{MutexGuard, PoisonError};

use greenhub::ext::FreshStack;

use crate::Error;
use crate::error::write_stderr;
use crate::handle::{self, Handle, Registry};
use crate::sys::{self, Forked, InChild};
use crate::transfer::{self, Transfer};

/// The default names of this process's children: a prefix and a counter. At the top the
/// children are "Process-1", "Process-2", ...; a child named N names its own children "N:1",
/// "N:2", ... (like `multiprocessing`'s "Process-2:1"), so names stay distinct across a tree of
/// processes. Held across `fork` with the other locks, and reset by the child.
static NAMES: std::sync::Mutex<Names> = std::sync::Mutex::new(Names { prefix: None, next: 1 });

struct Names {
    /// `None` until this process is a child: then its own name (leaked: it lives as long as the
    /// child, which ends with `_exit`).
    prefix: Option<&'static str>,
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
        Some(prefix) => format!("{prefix}:{number}"),
        None => format!("Process-{number}"),
    }
}

/// The stack a child runs its whole life on, its hub's loop included (`sys::in_child`): as much
/// as a main thread gets by default (`ulimit -s`), whatever stack the coroutine that forked it
/// had left. Its pages cost nothing until the child touches them.
const CHILD_STACK_SIZE: usize = 8 << 20;

thread_local! {
    /// The child stack of this thread's starts, mapped by the first and kept: this process
    /// never touches its pages, so every fork copies none of them, and each child takes its
    /// own copy of the mapping (a start that mapped one per child paid an `mmap`, an `mprotect`
    /// and a `munmap` every time).
    static CHILD_STACK: RefCell<Option<FreshStack>> = const { RefCell::new(None) };
}

/// Makes sure this thread has its child stack (see [`CHILD_STACK`]).
fn ensure_child_stack() -> Result<(), Error> {
    CHILD_STACK.with(|slot| {
        if slot.borrow().is_none() {
            let stack = FreshStack::new(CHILD_STACK_SIZE).map_err(|e| {
                Error::io(
                    "start_process could not map the child's stack (8 MiB and a guard page, \
                     mmap): the address space (RLIMIT_AS, `ulimit -v`), the memory or the map \
                     count (vm.max_map_count) ran out",
                    e,
                )
            })?;
            *slot.borrow_mut() = Some(stack);
        }
        Ok(())
    })
}

/// In a new child: its copy of the forking thread's child stack, taken for good (a grandchild
/// started from this child maps one of its own).
fn take_child_stack(_: &InChild) -> FreshStack {
    CHILD_STACK.with(|slot| slot.borrow_mut().take()).expect("mapped before the fork")
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
    // Mapped here rather than in the child, so that the OS refusing it is this call's error.
    ensure_child_stack()?;
    let start = ChildStart {
        keep: transfer::handle_ids(&handles),
        keep_fds: transfer::fds(&handles),
        parent: handle::current_pid(),
        daemon,
        name: name.to_owned(),
        signals: sys::SignalRange::here(),
    };
    let (forked, held, go_ahead) = match sys::Clone3::here() {
        // Only this thread exists, so no other can hold a lock the child needs: none is held
        // across the clone (releasing them after it would copy their pages in both processes).
        // The kernel makes the pidfd with the child: the parent can watch it from its first
        // instruction, so it may run `f` at once.
        Some(clone3) => {
            flush_stdio();
            match clone3.clone_with_pidfd() {
                Ok(Some(forked)) => (Ok(forked), None, None),
                Ok(None) => fork_holding_locks()?, // clone3 is missing or forbidden
                Err(e) => (Err(e), None, None),
            }
        }
        None => fork_holding_locks()?,
    };
    match forked {
        Err(e) => Err(Error::refused_process("start_process could not fork", e)),
        Ok(Forked::Child(token, cloned)) => {
            if let Some(pid) = cloned {
                handle::set_pid_in_child(&token, pid); // what the atfork handler does after a fork
            }
            let go_ahead = go_ahead.map(|(read_end, write_end)| {
                std::mem::forget(write_end); // closed by the fd sweep, with every other fd
                read_end
            });
            let locks = match held {
                Some(held) => held.into_childs_locks(),
                None => ChildsLocks::take(),
            };
            let main = |token: &InChild| child_main(token, locks, start, go_ahead, handles, f);
            let stack = take_child_stack(&token);
            sys::in_child(token, stack, main)
        }
        Ok(Forked::Parent(pid, pidfd)) => {
            drop(held);
            let pidfd = match watch(pid, pidfd) {
                Ok(pidfd) => pidfd,
                Err(e) => {
                    sys::kill_and_reap(pid);
                    return Err(e);
                }
            };
            drop(handles); // the transfer: the child has them now
            if let Some((read_end, write_end)) = go_ahead {
                drop(read_end);
                sys::send_go_ahead(write_end);
            }
            Ok(Started { pid, pidfd })
        }
    }
}

/// What a fork leaves the caller: which side this is, the locks held across it (glibc's `fork`
/// only), and the start handshake's pipe (glibc's `fork` only).
type ForkedHolding = (io::Result<Forked>, Option<HeldForFork>, Option<(OwnedFd, OwnedFd)>);

/// A fork by glibc's `fork`, holding the locks the child's start needs across it (other threads
/// may exist), and the pipe on which the child waits for the parent's go-ahead: once the parent
/// holds its pidfd (`pidfd_open`), so a child the parent cannot watch is killed before it has
/// run any of `f`.
fn fork_holding_locks() -> Result<ForkedHolding, Error> {
    let held = HeldForFork::lock();
    let pipe = sys::small_pipe()
        .map_err(|e| Error::io("start_process could not create its start pipe (pipe2)", e))?;
    Ok((sys::fork(), Some(held), Some(pipe)))
}

/// Flushes stdout and stderr, so that nothing buffered is printed by both processes.
fn flush_stdio() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

/// The pidfd of our unreaped child `pid` (its pid still names it even if it has exited), as a
/// handle the hub can wait on: the one `clone3` made, or a new one.
fn watch(pid: u32, made: Option<OwnedFd>) -> Result<Handle, Error> {
    let pidfd = match made {
        Some(pidfd) => pidfd,
        None => sys::pidfd_open(pid).map_err(|e| {
            Error::io("could not open a pidfd for the new child (pidfd_open), so it was killed", e)
        })?,
    };
    Handle::new(pidfd)
}

/// What the child's start needs to know, decided before `fork`.
struct ChildStart {
    /// The ids of the transferred handles.
    keep: Vec<u64>,
    /// Every fd the child keeps besides stdio: the transferred handles' and plain fds.
    keep_fds: Vec<RawFd>,
    parent: u32,
    daemon: bool,
    /// The child's name, copied before `fork` (so the child does not copy it).
    name: String,
    /// What the child's signal reset needs from libc.
    signals: sys::SignalRange,
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

    /// In the child: the two locks its start goes on using; stdout and stderr are released.
    fn into_childs_locks(self) -> ChildsLocks {
        let HeldForFork { names, registry, .. } = self;
        ChildsLocks { registry, names }
    }
}

/// The locks a new child holds while it takes over its handles and its name: inherited held
/// from a `fork`, or taken afresh after a `clone3` (the process had no other thread to hold
/// them).
struct ChildsLocks {
    registry: Registry,
    names: MutexGuard<'static, Names>,
}

impl ChildsLocks {
    fn take() -> Self {
        ChildsLocks { registry: Registry::lock(), names: names() }
    }
}

/// The child's side of `start_process`, after `sys::in_child` has forgotten the parent's hub:
/// returns the exit code.
fn child_main<H, F, R>(
    token: &InChild,
    mut locks: ChildsLocks,
    start: ChildStart,
    go_ahead: Option<OwnedFd>,
    handles: H,
    f: F,
) -> i32
where
    H: Transfer,
    F: FnOnce(H) -> R,
    R: ChildResult,
{
    match &go_ahead {
        Some(read_end) => {
            // Exactly stdio, the transferred fds and (until it is read) the handshake pipe stay
            // open: whatever other threads were doing with their pipes and hubs at the instant
            // of `fork`.
            let mut keep_fds = start.keep_fds.clone();
            keep_fds.push(read_end.as_raw_fd());
            sys::close_fds_except(token, &keep_fds);
        }
        None => sys::close_fds_except(token, &start.keep_fds),
    }
    locks.registry.forget_all_but(&start.keep);
    greenhub::ext::closed_inherited_fds_except(&start.keep_fds);
    if let Some(read_end) = go_ahead
        && !sys::wait_for_go_ahead(token, read_end)
    {
        return 1; // the parent could not take this child on (or died): never start `f`
    }
    transfer::adopt(&handles);
    let name: &'static str = start.name.leak(); // the child ends with `_exit`: never freed
    *locks.names = Names { prefix: Some(name), next: 1 };
    sys::reset_signals(token, &start.signals);
    if start.daemon {
        match sys::die_with_parent(token, start.parent) {
            Ok(true) => {}
            Ok(false) => return 128 + libc::SIGTERM, // the parent is gone: as if its SIGTERM came
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "greenhub-ipc: daemon {} cannot ask to die with its parent \
                     (PR_SET_PDEATHSIG: {e}); it is still terminated at the end of run",
                    name
                );
            }
        }
    }
    drop(locks);
    // The hub is left to `_exit` (a stack reservation's `munmap` and three `close`s saved).
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        greenhub::ext::run_before_exit(move || f(handles))
    }));
    let code = match run {
        Ok(result) => result.exit_code(),
        Err(payload) => {
            report_panic(name, &*payload);
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
