//! `spawn_blocking`: run a blocking closure on a helper thread while the hub runs the others
//! (gevent's threadpool).
//!
//! Guarantee: the hub never blocks while the closure runs; the calling coroutine is woken through
//! an eventfd the loop polls. A panic in the closure is rethrown in the calling coroutine.
//! Not guaranteed: which helper thread runs it, or that a cancelled caller stops the closure (it
//! runs to its end; its result is dropped). A cancelled caller's job no longer counts as
//! something that can wake a coroutine: the deadlock check does not wait for it.
//!
//! The pool: at most [`Builder::blocking_threads`](crate::Builder::blocking_threads) helper
//! threads per hub (default [`DEFAULT_BLOCKING_THREADS`], gevent's threadpool size), started on
//! demand and exiting after [`IDLE_EXIT`] without work. When every thread is busy, jobs wait in
//! one FIFO queue. When the OS refuses a new thread and no helper thread is left to take the job,
//! the job is withdrawn and the caller panics with the OS error (running it inline instead would
//! block the whole hub, which `spawn_blocking` promises never to do).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::coroutine::{self, Suspend};
use crate::hub::{Hub, hub};
use crate::sys;
use crate::task::{TaskRef, WaitReason};

/// Helper threads per hub unless [`Builder::blocking_threads`](crate::Builder::blocking_threads)
/// says otherwise: gevent's default threadpool size.
pub const DEFAULT_BLOCKING_THREADS: usize = 10;

/// A helper thread with nothing to do for this long exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);

/// Runs `f` on a helper thread and returns its value; the calling coroutine waits
/// cooperatively while the hub runs the others.
///
/// Use it for calls that would block the whole hub: file I/O, DNS resolution, CPU-heavy work,
/// C libraries that block.
///
/// ```
/// greenhub::run(|| {
///     let len = greenhub::spawn_blocking(|| std::fs::read("/proc/self/status").unwrap().len());
///     assert!(len > 0);
/// });
/// ```
///
/// Jobs beyond the pool's size ([`Builder::blocking_threads`](crate::Builder::blocking_threads),
/// default [`DEFAULT_BLOCKING_THREADS`]) wait in a FIFO queue for a free helper thread.
///
/// # Panics
/// Outside a coroutine; when `f` panics (the panic is rethrown here); and when the OS refuses
/// to start a helper thread while none is running to take the job (the message names the OS
/// error; nothing is left pending, so the hub's deadlock check still works).
#[track_caller]
pub fn spawn_blocking<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    try_spawn_blocking(f).unwrap_or_else(|refused| {
        panic!(
            "greenhub::spawn_blocking: the OS refused to start a helper thread ({refused}) and \
             no helper thread is running to take the job; raise the limit that ran out \
             (threads or address space: RLIMIT_NPROC, RLIMIT_AS, kernel.threads-max) or free \
             some threads"
        )
    })
}

/// The error of a blocking-style call (`what` says which, and what it waited for) whose helper
/// thread the OS refused: kind `Other`, not the `WouldBlock` that `EAGAIN` maps to (a retry loop
/// written for a blocking call would spin on that), naming the limits that may have run out.
pub(crate) fn refused_helper(what: &str, refused: &io::Error) -> io::Error {
    io::Error::other(format!(
        "{what}, and the OS refused the helper thread that waits for it ({refused}); raise the \
         limit that ran out (threads or address space: RLIMIT_NPROC, RLIMIT_AS, \
         kernel.threads-max) or free some threads"
    ))
}

/// [`spawn_blocking`], with the OS's refusal of a helper thread as an error (then `f` never
/// runs, and nothing is left pending).
#[track_caller]
pub(crate) fn try_spawn_blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let hub = hub("spawn_blocking");
    let me = hub.current_task("spawn_blocking");
    let slot: Arc<Mutex<JobSlot<T>>> = Arc::new(Mutex::new(JobSlot::Pending));
    let remote = hub.remote.clone();
    remote.in_flight.fetch_add(1, Ordering::Relaxed);
    let job = {
        let slot = slot.clone();
        move || {
            let result = panic::catch_unwind(AssertUnwindSafe(f));
            let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if matches!(*slot, JobSlot::Abandoned) {
                return; // nobody waits: no wake, and the caller already stopped counting it
            }
            *slot = JobSlot::Done(result);
            drop(slot);
            remote.complete(me);
        }
    };
    let submitted = {
        let _section = sys::HubSection::enter(); // the pool's lock is held in there
        hub.pool.submit(Box::new(job))
    };
    if let Err(refused) = submitted {
        hub.remote.in_flight.fetch_sub(1, Ordering::Relaxed);
        return Err(refused);
    }
    let waiting = Waiting { slot: &slot, remote: &hub.remote };
    loop {
        let done = {
            let mut slot = waiting.lock();
            match *slot {
                JobSlot::Done(_) => std::mem::replace(&mut *slot, JobSlot::Taken),
                _ => JobSlot::Pending,
            }
        };
        match done {
            JobSlot::Done(Ok(value)) => return Ok(value),
            JobSlot::Done(Err(payload)) => panic::resume_unwind(payload),
            _ => coroutine::suspend(hub, Suspend::Wait(WaitReason::Blocking)),
        }
    }
}

/// Where a `spawn_blocking` job leaves its result for the caller.
enum JobSlot<T> {
    /// The job has not finished; the caller waits for it.
    Pending,
    /// The job's result (or panic), not yet taken by the caller.
    Done(thread::Result<T>),
    /// The caller took the result.
    Taken,
    /// The caller stopped waiting (cancelled, or unwound by a timeout) before the job finished:
    /// the job drops its result and sends no wake.
    Abandoned,
}

/// The caller's wait for its job. Dropped while the job is still pending (the caller unwinds):
/// the job is abandoned, and stops counting as a pending wake from another thread at once,
/// so the deadlock check does not wait for a job whose end can wake nobody.
struct Waiting<'a, T> {
    slot: &'a Mutex<JobSlot<T>>,
    remote: &'a Remote,
}

impl<T> Waiting<'_, T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobSlot<T>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let mut slot = self.lock();
        if matches!(*slot, JobSlot::Pending) {
            *slot = JobSlot::Abandoned;
            self.remote.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Wake-ups from other threads: what to wake, and the eventfd that wakes the loop.
pub(crate) struct Remote {
    completed: Mutex<Vec<RemoteWake>>,
    eventfd: OwnedFd,
    /// Jobs submitted and not yet delivered back to the hub, plus coroutines waiting on a
    /// thread channel (for the deadlock check: a wake from another thread may still come).
    in_flight: AtomicUsize,
}

/// One wake-up sent from another thread.
#[derive(Clone, Copy, Debug)]
enum RemoteWake {
    /// A `spawn_blocking` job of this task is done.
    Job(TaskRef),
    /// The thread channel registered under this key has news for its receivers.
    Channel(usize),
}

impl Remote {
    pub(crate) fn new(eventfd: OwnedFd) -> Self {
        Remote { completed: Mutex::new(Vec::new()), eventfd, in_flight: AtomicUsize::new(0) }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one more pending wake from another thread (a coroutine waits on a thread
    /// channel whose senders live): the hub is not deadlocked while it lasts.
    pub(crate) fn hold(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a [`hold`](Self::hold).
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// From a helper thread: `task`'s job is done.
    fn complete(&self, task: TaskRef) {
        self.send(RemoteWake::Job(task));
    }

    /// From any thread: the thread channel registered under `key` has an item or lost its
    /// last sender.
    pub(crate) fn signal_channel(&self, key: usize) {
        self.send(RemoteWake::Channel(key));
    }

    fn send(&self, wake: RemoteWake) {
        self.completed.lock().unwrap_or_else(PoisonError::into_inner).push(wake);
        sys::eventfd_signal(&self.eventfd);
    }

    /// In the loop, when the eventfd is readable: wake the coroutines whose jobs are done, and
    /// the receivers of the thread channels that were signalled.
    pub(crate) fn deliver(&self, hub: &Hub, eventfd: RawFd) {
        sys::eventfd_drain(eventfd);
        let done =
            std::mem::take(&mut *self.completed.lock().unwrap_or_else(PoisonError::into_inner));
        for wake in done {
            match wake {
                RemoteWake::Job(task) => {
                    self.in_flight.fetch_sub(1, Ordering::Relaxed);
                    hub.wake(task);
                }
                RemoteWake::Channel(key) => crate::sync::thread_channel::deliver(key),
            }
        }
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({} in flight)", self.in_flight())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A hub's helper threads, started on demand. Dropping the pool (with the hub) lets them exit.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    max_threads: usize,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Pool {
    /// A pool of at most `max_threads` (>= 1) helper threads; none is started yet.
    pub(crate) fn new(max_threads: usize) -> Self {
        Pool {
            shared: Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new() }),
            max_threads,
        }
    }

    /// Queues `job`, starting a helper thread if none is idle and the pool is not full. The OS
    /// error if it refuses the thread and no thread is left to run the job (which is dropped).
    fn submit(&self, job: Job) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.jobs.push_back(job);
        if state.idle > 0 {
            self.shared.work.notify_one();
        }
        // Each idle thread takes one queued job, but counts as idle until it has the lock again:
        // jobs submitted in one hub turn all see the same idle thread. Start a thread for every
        // job beyond the idle ones (up to the limit), or they would run one after another.
        if state.jobs.len() > state.idle && state.threads < self.max_threads {
            state.threads += 1;
            let shared = self.shared.clone();
            let spawned = thread::Builder::new()
                .name("greenhub-blocking".into())
                .spawn(move || shared.work_loop());
            if let Err(refused) = spawned {
                state.threads -= 1;
                if state.threads == 0 {
                    state.jobs.pop_back(); // nobody would ever run it
                    return Err(refused);
                }
                // A running thread takes it when its current job is done.
            }
        }
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn work_loop(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let (next, timeout) =
                self.work.wait_timeout(state, IDLE_EXIT).unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.jobs.clear();
        self.shared.work.notify_all();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        write!(f, "Pool({} threads, {} queued)", state.threads, state.jobs.len())
    }
}
