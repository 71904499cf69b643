//! The hub: one event loop per thread, and the thread-local pointer that finds it.
//!
//! Guarantee: one turn of the loop ([`Hub::turn`]) runs ready coroutines (taking at most
//! [`FAIRNESS_BUDGET`] entries off the ready queue), fires expired timers, polls the OS, and marks
//! ready whatever the OS answered. Only the loop (on the thread's own stack, or a forked child's
//! fresh one: never a coroutine's) resumes coroutines; a coroutine only ever suspends back to the
//! loop. Not guaranteed: the order in which coroutines woken in the same turn by *different*
//! sources run (each primitive's own waiters are FIFO).
//!
//! # Invariants of [`Hub`]
//! - One hub per thread, found through `CURRENT_HUB`, which is non-null exactly while [`run`]
//!   runs on that thread (or, in a forked child, until `forget_inherited` clears it).
//! - Every field uses interior mutability, and every borrow is short: none is held across a
//!   switch into or out of a coroutine, so code running in a coroutine may take any of them.
//! - Who touches what: `tasks` belongs to task.rs (the table and ready queue) and coroutine.rs
//!   (the switch path); `running` and `stacks` to coroutine.rs and stack.rs; `timers` to
//!   timer.rs; `reactor` to io.rs; `remote` and `pool` to blocking.rs; `monitor` to monitor.rs
//!   (its hook runs on the switch path in coroutine.rs). The loop itself
//!   ([`Hub::turn`], shutdown, the deadlock report) reads them all, on the loop's stack.
//! - The root ends last but for shutdown: `run_until_done` returns once the root has left the
//!   table; `shutdown` then unwinds every other task before `run` returns.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::panic::{self, Location};
use std::ptr;
use std::rc::Rc;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::blocking::{DEFAULT_BLOCKING_THREADS, Pool, Remote};
use crate::coroutine::{self, CoroutineId, Running, Spawned, Start, Wake};
use crate::io::{Reactor, Wait};
use crate::join::Joinable as _;
use crate::monitor::Monitor;
use crate::stack::StackPool;
use crate::task::{Task, TaskRef, TaskTable};
use crate::timer::Timers;

/// How many entries one turn takes off the ready queue before the hub fires timers and polls the
/// OS again (with a zero timeout while coroutines are still ready). Each entry is one resume (a
/// coroutine that yields again is counted again), or a stale ref skipped, or a coroutine that
/// could not get a stack. Large enough that the poll syscall is amortised over many switches,
/// small enough that a busy set of coroutines cannot starve fds and timers; it bounds nothing
/// about time: one resume lasts until that coroutine suspends.
pub(crate) const FAIRNESS_BUDGET: usize = 256;

/// How many times shutdown cancels the coroutines spawned while it unwinds the previous ones
/// (by destructors or exit hooks) before it leaks the rest.
const SHUTDOWN_ROUNDS: usize = 16;

/// Default usable stack size of a coroutine, plus one guard page.
pub(crate) const DEFAULT_STACK_SIZE: usize = 1024 * 1024;

thread_local! {
    /// The hub running on this thread, or null. Set by [`run`] for its whole duration.
    static CURRENT_HUB: Cell<*const Hub> = const { Cell::new(ptr::null()) };
}

/// Every hub of this process gets a distinct id, so a registration made by one hub (or inherited
/// from the parent's hub through fork) is never mistaken for one of the current hub's.
static NEXT_HUB_ID: AtomicU64 = AtomicU64::new(1);

/// A hub's id: distinct among the hubs of this process (and of its fork ancestors, whose
/// counter a child inherits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct HubId(u64);

impl HubId {
    fn next() -> HubId {
        HubId(NEXT_HUB_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The number, for `ext::hub_id`.
    pub(crate) fn get(self) -> u64 {
        self.0
    }
}

/// The state of one hub (see the module docs for who touches which field).
pub(crate) struct Hub {
    id: HubId,
    pub(crate) tasks: TaskTable,
    /// The coroutine running now, if any (set only while the loop is inside `resume`).
    pub(crate) running: Running,
    pub(crate) stacks: StackPool,
    pub(crate) timers: Timers,
    pub(crate) reactor: Reactor,
    pub(crate) remote: std::sync::Arc<Remote>,
    pub(crate) pool: Pool,
    /// The blocking monitor's hook, on the switch path (monitor.rs).
    pub(crate) monitor: Monitor,
    exit_hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// The report for the root's `Wake::Deadlock`, taken by its suspension point.
    deadlock: Cell<Option<String>>,
    /// The root coroutine (set by `run` right after spawning it).
    root: Cell<Option<TaskRef>>,
    /// `Builder::recover_stack_overflow`, and (only when it is on) a second reference to every
    /// started coroutine's body, to end it after an overflow.
    pub(crate) recover_stack_overflow: bool,
    pub(crate) overflow_bodies: RefCell<HashMap<CoroutineId, Rc<dyn Start>>>,
    _not_send: PhantomData<*mut ()>,
}

/// The hub of this thread, or a panic with a sentence naming the rule.
///
/// `what` names the public function the user called ("sleep", "spawn", ...).
///
/// Inlined (one thread-local load and a null check on every suspension point); the panic is
/// out of line.
#[inline(always)]
#[track_caller]
pub(crate) fn hub(what: &str) -> &'static Hub {
    match try_hub() {
        Some(hub) => hub,
        None => outside_hub(what),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn outside_hub(what: &str) -> ! {
    panic!(
        "greenhub::{what} called outside a hub; call it from inside greenhub::run or a \
         coroutine spawned there"
    )
}

/// The hub of this thread, if one is running.
#[inline(always)]
pub(crate) fn try_hub() -> Option<&'static Hub> {
    let ptr = CURRENT_HUB.with(Cell::get);
    // SAFETY: a non-null pointer was set by `run`, which owns the boxed hub and clears the pointer
    // before freeing it. Every caller runs inside that `run` call (in the loop or in a coroutine
    // it resumes, all of which have ended before `run` frees the hub) and none stores the
    // reference. After fork, `forget_inherited` clears the pointer and the box is never freed.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// Runs `f` as the root coroutine of a fresh hub on this thread, and returns its value.
///
/// The loop runs until `f` returns. Coroutines still alive then are cancelled (unwound, their
/// destructors run) before `run` returns. A panic in `f` propagates out of `run` after that
/// clean-up. `f` may borrow from the caller.
///
/// ```
/// let v = greenhub::run(|| {
///     let h = greenhub::spawn(|| 20);
///     h.join().unwrap() + 1
/// });
/// assert_eq!(v, 21);
/// ```
///
/// # Panics
/// Inside a running hub (a hub per thread: use [`spawn`](crate::spawn) instead); and when the
/// OS refuses the hub its own fds (an epoll instance, an eventfd, a timerfd: for instance at
/// the open-file limit, RLIMIT_NOFILE) or the root coroutine its stack: the message names
/// what was refused and the OS's error.
#[track_caller]
pub fn run<T>(f: impl FnOnce() -> T) -> T {
    Builder::new().run(f)
}

/// Configures a hub before running it: `Builder::new().stack_size(bytes).run(f)`.
///
/// ```
/// let v = greenhub::Builder::new().stack_size(256 * 1024).run(|| 7);
/// assert_eq!(v, 7);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    stack_size: usize,
    blocking_threads: usize,
    recover_stack_overflow: bool,
    monitor: Option<Duration>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with the defaults: 1 MiB of usable stack per coroutine (plus a guard page),
    /// [`DEFAULT_BLOCKING_THREADS`](crate::DEFAULT_BLOCKING_THREADS) helper threads.
    pub fn new() -> Self {
        Builder {
            stack_size: DEFAULT_STACK_SIZE,
            blocking_threads: DEFAULT_BLOCKING_THREADS,
            recover_stack_overflow: false,
            monitor: None,
        }
    }

    /// The most helper threads [`spawn_blocking`](crate::spawn_blocking) runs at once for this
    /// hub (default [`DEFAULT_BLOCKING_THREADS`](crate::DEFAULT_BLOCKING_THREADS), gevent's
    /// threadpool size). Threads start on demand and exit after a few idle seconds; when all
    /// `n` are busy, further jobs wait in a FIFO queue (name resolution in [`net`](crate::net)
    /// uses the same pool).
    ///
    /// ```
    /// let v = greenhub::Builder::new().blocking_threads(2).run(|| greenhub::spawn_blocking(|| 5));
    /// assert_eq!(v, 5);
    /// ```
    ///
    /// # Panics
    /// If `n` is 0: the pool needs at least one thread.
    #[track_caller]
    pub fn blocking_threads(mut self, n: usize) -> Self {
        assert!(
            n >= 1,
            "greenhub::Builder::blocking_threads(0): spawn_blocking's pool needs at least one \
             helper thread (n >= 1)"
        );
        self.blocking_threads = n;
        self
    }

    /// Usable stack size of every coroutine of this hub, root included, in bytes (rounded up to
    /// whole pages, at least 16 KiB: what unwinding a coroutine, on a cancel or a `timeout`,
    /// needs). Memory is reserved, not touched: resident memory grows only with the depth a
    /// coroutine actually reaches.
    ///
    /// # Panics
    /// If `bytes` is 0 or more than 1 TiB.
    #[track_caller]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        crate::stack::check_stack_size(bytes, "Builder::stack_size");
        self.stack_size = bytes;
        self
    }

    /// Turns on the blocking monitor (gevent's monitor thread): a watchdog thread that reports
    /// on stderr when one coroutine runs longer than `max_blocking` without suspending, naming
    /// it and how long it has run so far, and again, with the total, when it finally suspends.
    /// One report per episode. Off by default; the environment variable `GREENHUB_MONITOR`
    /// (`GREENHUB_MONITOR=100ms`; units `s`, `ms`, `us`) turns it on for every hub without a
    /// code change, and this setting overrides it. `max_blocking` below 1 ms counts as 1 ms.
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// greenhub::Builder::new().monitor(Duration::from_millis(100)).run(|| {
    ///     let start = Instant::now();
    ///     while start.elapsed() < Duration::from_millis(300) {} // a CPU hog: reported
    /// });
    /// // stderr: greenhub monitor: coroutine #1 (spawned at src/main.rs:2:52) [root] has run
    /// //         for 100ms without suspending ...
    /// //         greenhub monitor: coroutine #1 (spawned at src/main.rs:2:52) [root] suspended
    /// //         after running about 300ms ...
    /// ```
    ///
    /// The coroutine is named as every report names it (id, name, spawn site). Cost: one
    /// relaxed atomic store per switch while on, a lock per spawn and per end for the names,
    /// and the watchdog thread (it ends with the hub); nothing on the switch path while off. See `docs/cooperative-code.md`.
    pub fn monitor(mut self, max_blocking: Duration) -> Self {
        self.monitor = Some(max_blocking);
        self
    }

    /// Whether a stack overflow in a spawned coroutine ends that coroutine only (default:
    /// false, the overflow is reported and the process aborts).
    ///
    /// With `true`, a coroutine that runs off its stack in its own code is made to return to
    /// the hub from the fault handler: its [`join`](crate::JoinHandle::join) gives a
    /// [`JoinError`](crate::JoinError) with `is_stack_overflow()`, the report still goes to
    /// stderr, and the hub and every other coroutine go on. Nothing on the dead stack is
    /// dropped or unwound (unwinding needs the stack that just ran out): its values are leaked,
    /// a lock or permit it held stays held, a `Sender` it held keeps its channel open, and data
    /// its code was updating outside its stack at that instant may be left half-written. The
    /// stack is never reused. An overflow in the root coroutine, inside greenhub's own
    /// bookkeeping, inside a shared library (libc: malloc's locks), or while the coroutine is
    /// already unwinding (a destructor run by a cancel, a timeout or a panic) still aborts
    /// with the report, as does one on a platform other than x86_64 Linux. See
    /// docs/coroutines-and-stacks.md.
    pub fn recover_stack_overflow(mut self, on: bool) -> Self {
        self.recover_stack_overflow = on;
        self
    }

    /// Runs `f` as the root coroutine of a fresh hub; see [`run`]. The root's spawn site in
    /// reports is the caller of `run`.
    #[track_caller]
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        self.run_then(f, End::Free)
    }

    /// `run`, ending with `end`: the hub is freed, or left to the process's exit
    /// ([`ext::run_before_exit`](crate::ext::run_before_exit)).
    #[track_caller]
    pub(crate) fn run_then<T>(self, f: impl FnOnce() -> T, end: End) -> T {
        assert!(
            try_hub().is_none(),
            "greenhub::run called inside a running hub; a thread has one hub: \
             use greenhub::spawn to start more coroutines"
        );
        crate::sys::install_overflow_reporter();
        install_panic_hook();
        let hub = Box::new(Hub::new(&self).unwrap_or_else(|(what, e)| refused_hub(what, &e)));
        let _installed = Installed::new(&hub);
        if let Some(names) = hub.monitor.names() {
            hub.tasks.name_tasks_for(names);
        }
        let root_body = Rc::new(Spawned::new(f));
        let root = hub.spawn_root(root_body.clone(), Location::caller());
        hub.root.set(Some(root));
        hub.monitor.set_root(root.id);
        hub.run_until_done(root);
        hub.shutdown();
        if end == End::Leak {
            hub.leak();
        }
        match root_body.state().take() {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic::resume_unwind(e.into_panic()),
            None => unreachable!("the root coroutine ended without a result"),
        }
    }
}

/// What `run` does with a hub once it has shut down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum End {
    /// Free it: its stack reservations unmapped, its fds closed, its tables freed.
    Free,
    /// Leave it to the process's exit, which is about to come (see `Hub::leak`).
    Leak,
}

/// `run`'s panic when the OS refuses one of the hub's own fds: which one, the OS's error, and
/// for a full fd table the limit to raise.
#[cold]
#[inline(never)]
#[track_caller]
fn refused_hub(what: &str, e: &std::io::Error) -> ! {
    let hint = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            "; raise the open-file limit (RLIMIT_NOFILE, ulimit -n) or close some fds"
        }
        Some(libc::ENFILE) => "; the system-wide limit (fs.file-max) is reached",
        _ => "",
    };
    panic!("greenhub::run could not create the hub: the OS refused its {what}: {e}{hint}")
}

/// Makes a panic in a coroutine say which one, before the panic's own message: `greenhub:
/// coroutine #17 "conn 7" (spawned at src/main.rs:42:9) panicked:`. Installed once per process,
/// in front of whatever hook was there (std's, or the program's own).
fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if let Some(who) = try_hub().and_then(Hub::running_identity) {
                crate::stderr::line(format_args!("greenhub: {who} panicked:"));
            }
            previous(info);
        }));
    });
}

/// Sets the thread's hub pointer for the lifetime of `run`, and clears it even on unwind.
struct Installed;

impl Installed {
    fn new(hub: &Hub) -> Self {
        CURRENT_HUB.with(|c| c.set(hub));
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT_HUB.with(|c| c.set(ptr::null()));
    }
}

impl Hub {
    /// A new hub, or what the OS refused it (named, for [`refused_hub`]) and its error.
    fn new(config: &Builder) -> Result<Hub, (&'static str, std::io::Error)> {
        let waker = crate::sys::eventfd().map_err(|e| ("wake-up eventfd (eventfd)", e))?;
        let reactor = Reactor::new(waker.as_raw_fd())?;
        let remote = std::sync::Arc::new(Remote::new(waker));
        Ok(Hub {
            id: HubId::next(),
            tasks: TaskTable::default(),
            running: Running::default(),
            timers: Timers::default(),
            reactor,
            remote,
            pool: Pool::new(config.blocking_threads),
            monitor: Monitor::start(config.monitor),
            stacks: StackPool::new(config.stack_size),
            recover_stack_overflow: config.recover_stack_overflow,
            overflow_bodies: RefCell::new(HashMap::new()),
            exit_hooks: RefCell::new(Vec::new()),
            deadlock: Cell::new(None),
            root: Cell::new(None),
            _not_send: PhantomData,
        })
    }

    /// The root coroutine, once `run` has spawned it.
    #[inline]
    pub(crate) fn root(&self) -> Option<TaskRef> {
        self.root.get()
    }

    /// This hub's id.
    pub(crate) fn id(&self) -> HubId {
        self.id
    }

    /// Drives the loop until the root coroutine has ended. Whether the blocking monitor is on
    /// is decided here, once: each setting has its own copy of the loop (`turn::<true>` tells
    /// the monitor about every resume; `turn::<false>` has no monitor code at all).
    fn run_until_done(&self, root: TaskRef) {
        if self.monitor.is_on() {
            while self.tasks.is_alive(root) {
                self.turn::<true>(root);
            }
            self.monitor.idle();
        } else {
            while self.tasks.is_alive(root) {
                self.turn::<false>(root);
            }
        }
    }

    /// Resumes `r` as the loop would (shutdown's resumes, which are not on the hot path).
    fn resume_any(&self, r: TaskRef) -> bool {
        if self.monitor.is_on() { self.resume::<true>(r) } else { self.resume::<false>(r) }
    }

    /// One turn of the loop.
    fn turn<const MONITORED: bool>(&self, root: TaskRef) {
        self.tasks.tick(); // the clock every state change of this turn is stamped with
        // 1. Run what is ready, up to the fairness budget.
        for _ in 0..FAIRNESS_BUDGET {
            let Some(next) = self.tasks.pop_ready() else { break };
            if self.resume::<MONITORED>(next) && next == root {
                return; // the root ended: `run` is done
            }
        }
        // 2. Fire expired timers: their coroutines join the ready queue.
        self.timers.fire_expired(self);
        // 3. Poll: without blocking while coroutines are ready, else until the next timer.
        let wait = match self.timers.next_deadline() {
            _ if self.tasks.has_ready() => Wait::Poll,
            Some(at) => Wait::Until(at),
            None if self.anything_can_wake() => Wait::Forever,
            None => return self.report_deadlock(root),
        };
        if MONITORED && !matches!(wait, Wait::Poll) {
            self.monitor.idle(); // no coroutine runs while the hub sleeps in poll
        }
        // 4. Wake the coroutines whose fds, timers or helper threads answered.
        if matches!(wait, Wait::Poll) && !self.outside_can_answer() {
            // Coroutines are ready and none waits on an fd or another thread: `epoll_wait(0)`
            // could wake nobody. Skipping it saves a syscall (the cost of dozens of switches)
            // per budget of busy coroutines; what the OS queued meanwhile stays queued for the
            // next poll.
            return self.reactor.skip_poll();
        }
        self.reactor.poll(self, wait);
    }

    /// Whether a poll could wake a coroutine: one waits on an fd, or on a helper thread or
    /// another thread (`Remote::in_flight`). Timers do not count: step 2 fires them by the clock.
    fn outside_can_answer(&self) -> bool {
        self.reactor.has_waiters() || self.remote.in_flight() > 0
    }

    /// Whether any source outside the coroutines could ever make one ready again.
    fn anything_can_wake(&self) -> bool {
        self.tasks.has_ready() || !self.timers.is_empty() || self.outside_can_answer()
    }

    /// The root is blocked and nothing can wake anything: make its blocking call panic.
    fn report_deadlock(&self, root: TaskRef) {
        let report = self.deadlock_report(root);
        self.deadlock.set(Some(report));
        self.interrupt(root, Wake::Deadlock);
    }

    /// Takes the report made for the root's `Wake::Deadlock`.
    pub(crate) fn take_deadlock_report(&self) -> String {
        self.deadlock.take().unwrap_or_default()
    }

    fn deadlock_report(&self, root: TaskRef) -> String {
        let waits_on =
            self.tasks.with(root, |t| t.waiting(&self.tasks).to_string()).unwrap_or_default();
        let mut report = format!(
            "greenhub: the root coroutine would block forever: it waits on {waits_on}, and \
             nothing can wake any coroutine again (no coroutine is ready; no timer, fd, child \
             process or helper thread is pending).\nlive coroutines:"
        );
        self.tasks.for_each_oldest_first(|t| {
            let _ = write!(report, "\n  {}", self.describe(t, false));
        });
        report
    }

    /// One line about a task: who it is and what it does (`with_age`: and for how long).
    fn describe(&self, t: &Task, with_age: bool) -> String {
        let root = if Some(t.id) == self.root.get().map(|r| r.id) { " [root]" } else { "" };
        let state = t.describe_state(&self.tasks);
        if with_age {
            format!("{}{root}: {state} for {:?}", t.identity(), self.tasks.age(t.since))
        } else {
            format!("{}{root}: {state}", t.identity())
        }
    }

    /// [`ext::dump`](crate::ext::dump): every live coroutine, oldest first, one line each.
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        self.tasks.for_each_oldest_first(|t| {
            out.push_str(&self.describe(t, true));
            out.push('\n');
        });
        out
    }

    /// Cancels every coroutine still alive (in id order, including those spawned while others
    /// unwind), then runs the exit hooks. Called once the root has ended. Destructors and hooks
    /// that keep spawning get [`SHUTDOWN_ROUNDS`] rounds; then what is left is leaked.
    fn shutdown(&self) {
        for round in 1.. {
            self.monitor.idle(); // the hooks and the cancels that follow are the hub's own work
            let live = self.tasks.live();
            if live.is_empty() {
                let hooks = std::mem::take(&mut *self.exit_hooks.borrow_mut());
                if hooks.is_empty() {
                    break;
                }
                hooks.into_iter().for_each(|hook| hook());
                continue; // a hook may have spawned coroutines
            }
            if round > SHUTDOWN_ROUNDS {
                self.leak_unstarted(live);
                continue; // the exit hooks still run
            }
            for task in live {
                self.cancel(task); // one may already have ended, unwound by another's cancel
                while !self.resume_any(task) {}
            }
        }
        self.tasks.clear_ready();
    }

    /// Shutdown's last resort: the coroutines left after its rounds were spawned by the
    /// previous round's destructors and never started. Say which, and leak them (their bodies
    /// are never run nor dropped: dropping them is what keeps spawning).
    #[cold]
    fn leak_unstarted(&self, live: Vec<TaskRef>) {
        let mut report = format!(
            "greenhub: the hub's shutdown gave up after {SHUTDOWN_ROUNDS} rounds: destructors \
             (or exit hooks) keep spawning coroutines while it cancels them. Leaking {} \
             coroutine(s) that never ran:",
            live.len()
        );
        for &r in live.iter().take(5) {
            if let Some(line) = self.tasks.with(r, |t| t.identity().to_string()) {
                let _ = write!(report, "\n  {line}");
            }
        }
        crate::stderr::line(format_args!("{report}"));
        for r in live {
            std::mem::forget(self.tasks.remove(r));
        }
    }

    /// After shutdown, for a process that ends right after `run`: stops the blocking monitor's
    /// watchdog (no thread outlives its hub) and leaks the rest, so that the process's exit
    /// frees in one go what dropping the hub frees piece by piece (a `munmap` per stack
    /// reservation, a `close` per fd, the tables). The box is never freed, so nothing that
    /// still points at it (helper threads of `spawn_blocking`, through `remote`) can dangle.
    fn leak(self: Box<Self>) {
        let mut hub = self;
        hub.monitor.stop();
        std::mem::forget(hub);
    }

    /// Registers `hook` to run when this hub's `run` is about to return, after every coroutine
    /// has been unwound.
    pub(crate) fn at_exit(&self, hook: Box<dyn FnOnce()>) {
        self.exit_hooks.borrow_mut().push(hook);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Empty after a normal `run`; coroutines remain only if the loop itself panicked.
        coroutine::force_drop(self.tasks.take_all());
    }
}

/// After `fork`, in the child: forget this thread's hub without touching it.
///
/// The epoll instance and every registration are shared with the parent, so the child must not
/// poll, register or deregister on it; the parent's coroutines must never be resumed or unwound.
/// The hub (with its coroutines and their stacks) is leaked, its three fds (epoll, the wake-up
/// eventfd and the timer's timerfd) are closed, and the thread is left with no hub so that
/// [`run`] can start a fresh one.
///
/// # Safety
/// Call only in a process that has just been created by `fork` from a thread running a hub, and
/// never return into the coroutine this is called from (end the process with `_exit`), since the
/// hub that would resume it is gone.
pub(crate) unsafe fn forget_inherited() {
    if let Some(hub) = try_hub() {
        hub.reactor.close_fds_after_fork();
    }
    CURRENT_HUB.with(|c| c.set(ptr::null()));
    coroutine::forget_running_after_fork();
}
