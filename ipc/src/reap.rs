//! Reaping: the hub reaps every child itself, through its pidfd, whether or not anyone joins;
//! the one `State` of a child that its [`Process`](crate::Process), its reaper coroutine and the
//! hub's end-of-`run` list share.
//!
//! Guarantee: no zombies, no SIGCHLD handler, no race with other `waitpid` users over pid
//! numbers; a signal goes to the child itself, never to a process that reused its pid; at the
//! end of the parent's [`greenhub::run`] non-daemon children are waited for and daemon children
//! are terminated (SIGTERM, then SIGKILL and a line on stderr if one still runs after its
//! [`ProcessBuilder::terminate_grace`](crate::ProcessBuilder::terminate_grace)), then waited for.
//! Not guaranteed: an outcome for a child something else reaped (a `waitpid(-1)` elsewhere).
//!
//! Each child has a pidfd (`pidfd_open`) registered with the hub, and a detached *reaper*
//! coroutine waits for it to become readable, reaps the child with `waitid(P_PIDFD)`, records the
//! status and closes the pidfd. [`Process::join`] does not wait for the reaper: it watches the
//! pidfd itself, like the reaper, so a reaper that never ran (the OS refused its stack) cannot
//! make a join hang; whichever wakes first reaps. When `run` ends, an exit hook (one per hub) waits for the children of that hub that are still
//! running, blocking in `poll(2)` on each pidfd and then reaping with `waitid`. A program started by [`Command`] that is still running when its
//! hub ends has no reaper after that: it is reaped when its `Process` is joined or checked, or
//! when the last owner of its `State` is dropped (at once if it has exited, else by a
//! short-lived helper thread, or, if the OS refuses the thread, by a later drop once it has
//! exited); a `Process` kept unpolled leaves an exited program a zombie until then, as std's
//! `Child` does.
//!
//! [`Command`]: crate::Command

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::rc::Rc;
use std::sync::{PoisonError, mpsc};
use std::time::Duration;

use greenhub::sync::Mutex;

use crate::Error;
use crate::error::write_stderr;
use crate::handle::{self, Handle};
use crate::sys;

/// How often a reaper checks its child when the hub cannot watch the pidfd (never seen in
/// practice: epoll refuses a pidfd only when out of memory or past `max_user_watches`).
const FALLBACK_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How a child ended, once known.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Exited(ExitStatus),
    /// `waitid` failed (errno), typically `ECHILD`: something else reaped the child.
    Lost(i32),
}

impl Outcome {
    pub(crate) fn result(self) -> Result<ExitStatus, Error> {
        match self {
            Outcome::Exited(status) => Ok(status),
            Outcome::Lost(errno) => Err(lost(errno)),
        }
    }
}

/// The error of a child that could not be reaped: `ECHILD` means something else reaped it.
pub(crate) fn lost(errno: i32) -> Error {
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
pub(crate) enum Kind {
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
/// Who touches what: only the process that started the child (`owner`) reads or writes anything
/// but the name and pid: a forked child inherits a copy of this state, outcome included, but the
/// child is not its child (`Closed`). `outcome` is written once, by whichever of the reaper, a `join` or a
/// status check reaps the child first (`settle`), and then the pidfd is closed. The reaper and
/// every cooperative `join` take turns at watching the pidfd (`watch`; each can do it, so none
/// depends on another having run), and the watcher borrows `pidfd` across its wait; everyone
/// else borrows it briefly, and the closing skips while it is borrowed (the watcher closes it
/// when it wakes).
pub(crate) struct State {
    pub(crate) pid: u32,
    pub(crate) name: String,
    pub(crate) kind: Kind,
    /// The pid of the process that started the child: the only one that may wait for it or
    /// signal it (a fork copies this state into processes that may not).
    owner: u32,
    /// `None` once the child is reaped and the pidfd closed.
    pidfd: RefCell<Option<Handle>>,
    pub(crate) outcome: Cell<Option<Outcome>>,
    /// Held by the one coroutine watching the pidfd (the reaper or a `join`).
    watch: Mutex<()>,
    /// The hub whose reaper coroutine watches this child, if any.
    reaper_hub: Cell<Option<u64>>,
}

impl State {
    /// The state of a child whose pidfd is `pidfd`.
    pub(crate) fn new(pid: u32, pidfd: Handle, name: String, kind: Kind) -> Rc<State> {
        Rc::new(State {
            pid,
            name,
            kind,
            owner: handle::current_pid(),
            pidfd: RefCell::new(Some(pidfd)),
            outcome: Cell::new(None),
            watch: Mutex::new(()),
            reaper_hub: Cell::new(None),
        })
    }

    /// Opens the pidfd of our unreaped child `pid` (its pid still names it even if it has
    /// already exited) and makes its state.
    pub(crate) fn open(pid: u32, name: String, kind: Kind) -> Result<Rc<State>, Error> {
        let pidfd = sys::pidfd_open(pid).map_err(|e| {
            Error::io(
                "could not open a pidfd for the new program (pidfd_open), so it was killed",
                e,
            )
        })?;
        Ok(State::new(pid, Handle::new(pidfd)?, name, kind))
    }

    /// Whether this process started the child (and so may wait for it and signal it).
    pub(crate) fn owned_here(&self) -> bool {
        self.owner == handle::current_pid()
    }

    /// How the child ended, if known: `Closed` in a process that did not start it, whatever
    /// outcome a fork copied into it. Every public path reads the outcome through this.
    pub(crate) fn outcome(&self) -> Result<Option<Outcome>, Error> {
        if !self.owned_here() {
            return Err(Error::Closed);
        }
        Ok(self.outcome.get())
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
    pub(crate) fn poll_exit(&self) -> Result<Option<ExitStatus>, Error> {
        if let Some(outcome) = self.outcome()? {
            return outcome.result().map(Some);
        }
        let polled = self.with_pidfd(sys::try_wait_pidfd)?;
        self.settle(polled)
    }

    /// Blocks the thread until the child ends (or `timeout` passes: `Ok(None)`).
    pub(crate) fn wait_blocking(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>, Error> {
        if let Some(outcome) = self.outcome()? {
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
    pub(crate) fn ensure_reaper(self: &Rc<Self>, hub: u64) {
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
    pub(crate) fn wait_cooperatively(&self) -> Result<ExitStatus, Error> {
        // One waiter watches the pidfd at a time; the others queue here and find the outcome
        // when their turn comes (so the pidfd is closed as soon as it is reaped, with no other
        // coroutine still registered on it). One that gives up (a timeout) hands the watch on.
        let _watching = self.watch.lock();
        if let Some(outcome) = self.outcome()? {
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

    /// Sends `signal` through the pidfd; nothing once the child has ended; `Closed` in a process
    /// that did not start it.
    pub(crate) fn signal(&self, signal: libc::c_int) -> Result<(), Error> {
        if self.outcome()?.is_some() {
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
        sweep_unreaped();
        if self.outcome.get().is_some() {
            return;
        }
        let Some(handle) = self.pidfd.get_mut().take() else { return };
        // `None`: inherited through fork, so not our child, and the fd number is not ours.
        let Some(pidfd) = handle.into_fd() else { return };
        if let Ok(None) = sys::try_wait_pidfd(pidfd.as_raw_fd()) {
            reap_in_background(pidfd, self.pid);
        }
    }
}

/// Programs whose reaper thread the OS refused (see [`reap_in_background`]): each later drop of
/// a child's last owner reaps those that have exited since.
static UNREAPED: std::sync::Mutex<Vec<OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Reaps the child behind `pidfd` (process `pid`) on a helper thread, which ends as soon as the
/// child does. The thread takes the pidfd itself: a duplicate would need a free fd number, and
/// with none to spare (EMFILE) nobody would ever reap the child. The pidfd goes to the thread
/// only once it runs (a refused spawn drops its closure), so if the OS refuses the thread,
/// stderr says so and the pidfd waits in [`UNREAPED`] for a later drop to reap the child once
/// it has exited (never a zombie for longer than that, never a blocked drop).
fn reap_in_background(pidfd: OwnedFd, pid: u32) {
    let (handover, received) = mpsc::channel::<OwnedFd>();
    let started = std::thread::Builder::new().name("greenhub-ipc-reaper".into()).spawn(move || {
        if let Ok(pidfd) = received.recv() {
            let _ = sys::wait_pidfd_blocking(pidfd.as_raw_fd(), None);
        }
    });
    match started {
        // The thread holds the receiver until it has the pidfd: the send cannot fail.
        Ok(_) => drop(handover.send(pidfd)),
        Err(e) => {
            write_stderr(&format!(
                "greenhub-ipc: the OS refused the thread that reaps program {pid} (dropped after \
                 its hub ended): {e}; it is reaped by a later drop of a program's Process once it \
                 has exited (raise the thread limit, RLIMIT_NPROC, or join programs before their \
                 hub ends)\n"
            ));
            UNREAPED.lock().unwrap_or_else(PoisonError::into_inner).push(pidfd);
        }
    }
}

/// Reaps the programs in [`UNREAPED`] that have exited. Skipped while another thread holds the
/// list (the next drop sweeps): every drop of a child's state passes here, and a fork child
/// whose parent held the lock at the fork must not wait for a holder that does not exist there.
fn sweep_unreaped() {
    let Ok(mut unreaped) = UNREAPED.try_lock() else { return };
    unreaped.retain(|pidfd| matches!(sys::try_wait_pidfd(pidfd.as_raw_fd()), Ok(None)));
}

thread_local! {
    /// The `start_process` children of each hub of this thread not yet known to have ended, for
    /// the end of that hub's `run`. (A forked child inherits its parent's entries and leaves them
    /// alone: its own hub has a new id.)
    static CHILDREN: RefCell<HashMap<u64, Vec<Rc<State>>>> = RefCell::new(HashMap::new());
}

/// Adds a child to hub `hub`'s list; the first one registers the hub's exit hook.
pub(crate) fn remember_child(hub: u64, state: &Rc<State>) {
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
pub(crate) fn wait_for_children(hub: u64) {
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
    fn lost_outcome_is_an_io_error() {
        let err = Outcome::Lost(libc::ECHILD).result().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
        let text = err.to_string();
        assert!(text.contains("could not reap the child"), "{text}");
        assert!(text.contains("waitpid(-1)"), "{text}");
        assert!(!text.contains("on the pipe"), "{text}");
    }
}
