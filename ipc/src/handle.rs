//! Handle ownership: which process may use which pipe end (gipc's transfer rule).
//!
//! Every fd greenhub-ipc hands out is a [`Handle`] (a pipe end, a child's pidfd, a program's stdio
//! pipe, a process pool's pipes): an fd registered with the hub on first wait, a process-unique
//! id, and the pid of the process that owns it. A handle is usable only in its owner process:
//! after `fork` the child owns just the handles transferred to it ([`Handle::adopt`]); every other
//! inherited handle gives `Error::Closed` there, and its fd is closed in the child (with every
//! other fd but stdio and the transferred ones: `sys::close_fds_except`; the registry then
//! forgets the rest, [`Registry::forget_all_but`]) so that, for instance, a reader in the parent
//! sees EOF when the last real writer closes. Guarantee: a handle never closes an fd it does not own (the number may
//! have been reused). Not guaranteed: anything for forks done outside greenhub-ipc other than the
//! pid refresh (`pthread_atfork`), e.g. that inherited fds are closed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

use greenhub::io::Source;

use crate::Error;
use crate::sys;

/// Ids of handles: process-unique, never reused (the counter is inherited through fork, so ids
/// stay unique in a child too).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// This process's pid, refreshed in every forked child (`pthread_atfork`), so the ownership check
/// is one atomic load instead of a `getpid` system call per message.
static PID: AtomicU32 = AtomicU32::new(0);

/// Every handle this process owns: id -> fd. Read in a forked child to close what it inherited
/// but was not given.
static REGISTRY: Mutex<BTreeMap<u64, RawFd>> = Mutex::new(BTreeMap::new());

/// The pid of this process.
pub(crate) fn current_pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => refresh_pid(),
        pid => pid,
    }
}

/// Reads the pid anew; installs the fork hook that keeps it right in children.
fn refresh_pid() -> u32 {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| sys::at_fork_in_child(on_fork_in_child));
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// Runs in every forked child before `fork` returns there: async-signal-safe work only.
extern "C" fn on_fork_in_child() {
    PID.store(std::process::id(), Ordering::Relaxed);
}

/// In a child made by `clone3`, where no `pthread_atfork` handler ran: what
/// [`on_fork_in_child`] does in a child of glibc's `fork`, with the pid already known.
pub(crate) fn set_pid_in_child(_: &sys::InChild, pid: u32) {
    PID.store(pid, Ordering::Relaxed);
}

/// One fd of greenhub-ipc's (a pipe end, a pidfd, a program's stdio pipe), owned by one process
/// at a time.
pub struct Handle {
    id: u64,
    owner: AtomicU32,
    /// Dropped (deregistered and closed) only by the owner: elsewhere the fd number is not ours,
    /// and the source is leaked instead. `None` only while `close` or `drop` runs.
    source: Option<Source<File>>,
    /// The fd number, for `Debug` and `AsRawFd` even where the handle is not owned.
    fd: RawFd,
}

impl Handle {
    /// Takes ownership of `fd` in this process and puts it in non-blocking mode.
    pub(crate) fn new(fd: OwnedFd) -> Result<Handle, Error> {
        let raw = fd.as_raw_fd();
        let handle =
            Handle {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                owner: AtomicU32::new(current_pid()),
                source: Some(Source::new(File::from(fd)).map_err(|e| {
                    Error::io("could not put the fd in non-blocking mode (fcntl)", e)
                })?),
                fd: raw,
            };
        Registry::lock().insert(handle.id, raw);
        Ok(handle)
    }

    /// The fd and its hub registration, if this process owns the handle.
    pub(crate) fn source(&self) -> Result<&Source<File>, Error> {
        match &self.source {
            Some(source) if self.is_owned_here() => Ok(source),
            _ => Err(Error::Closed),
        }
    }

    pub(crate) fn is_owned_here(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == current_pid()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// In a freshly forked child: this handle was transferred here, so the child owns it now.
    pub(crate) fn adopt(&self) {
        self.owner.store(current_pid(), Ordering::Relaxed);
    }

    /// Closes the fd now, reporting the error `close(2)` gives; `Closed` if not owned here.
    pub(crate) fn close(self) -> Result<(), Error> {
        sys::close(self.into_fd().ok_or(Error::Closed)?)
    }

    /// The fd itself, deregistered from the hub and no longer a handle; `None` if not owned
    /// here (the number is not ours to take).
    pub(crate) fn into_fd(mut self) -> Option<OwnedFd> {
        if !self.is_owned_here() {
            return None;
        }
        Registry::lock().remove(self.id);
        let source = self.source.take().expect("a handle's source is present until it closes");
        Some(source.into_inner().into())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let Some(source) = self.source.take() else { return };
        if self.is_owned_here() {
            Registry::lock().remove(self.id);
            drop(source); // deregisters from the hub, then closes the fd
        } else {
            // Not owned here: the fd number belongs to someone else now; leave it alone.
            std::mem::forget(source);
        }
    }
}

impl AsRawFd for Handle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_owned_here() { "open" } else { "not owned by this process" };
        write!(f, "fd {} ({state})", self.fd)
    }
}

/// The registry of owned handles, locked. `start_process` holds it across `fork`, so the child
/// never finds it locked by a thread that does not exist there.
pub(crate) struct Registry(MutexGuard<'static, BTreeMap<u64, RawFd>>);

impl Registry {
    #[track_caller]
    pub(crate) fn lock() -> Registry {
        Registry(REGISTRY.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn insert(&mut self, id: u64, fd: RawFd) {
        self.0.insert(id, fd);
    }

    fn remove(&mut self, id: u64) {
        self.0.remove(&id);
    }

    /// In a forked child, once every fd but stdio and the transferred ones is closed: forgets
    /// every inherited handle except those in `keep`, so only the transferred handles are owned
    /// (and usable) here. (The registry cannot close them itself: a handle another thread was
    /// creating or closing at the instant of `fork` may be missing from it, or still in it.)
    pub(crate) fn forget_all_but(&mut self, keep: &[u64]) {
        self.0.retain(|id, _| keep.contains(id));
    }

    /// How many handles this process owns (for tests of the transfer rule).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
