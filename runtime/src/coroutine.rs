//! Coroutines: [`spawn`], [`Builder`] (a name, a stack size), [`yield_now`], [`current`].
//!
//! Guarantee: a coroutine starts later than its `spawn`, when the loop reaches it in the ready
//! queue (after its spawner has suspended; in the same turn of the loop if the fairness budget
//! allows), in spawn order; it gets its stack when it first runs (so an unstarted coroutine costs no stack) and gives it back
//! when it ends. Every coroutine is named the same way in every report:
//! `coroutine #17 "conn 7" (spawned at src/main.rs:42:9)`. Not guaranteed: which stack a
//! coroutine gets.
//!
//! Implementation: with `stack.rs`, the only file that names corosensei. Cancellation and
//! timeouts are resume values that the suspension point turns into an unwind with a private
//! payload. Invariant: only the loop, on a stack that is no coroutine's (the thread's own, or a forked
//! child's fresh one), calls `Hub::resume`, never a
//! coroutine, so at most one coroutine runs at a time and `Running` describes it (task.rs has
//! the states a task goes through).

use std::cell::{Cell, RefMut};
use std::fmt;
use std::mem;
use std::num::NonZeroU64;
use std::panic::{self, AssertUnwindSafe, Location};
use std::rc::Rc;
use std::time::Instant;

use corosensei::stack::Stack as _;
use corosensei::trap::CoroutineTrapHandler;
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::hub::{Hub, hub};
use crate::join::{JoinError, JoinHandle, JoinState, Joinable};
use crate::stack::CoStack;
use crate::sys;
use crate::task::{
    Body, CancelMark, FiredTimeout, Spawn, Table, Task, TaskRef, TaskState, WaitReason,
};
use crate::timer::{TimedOut, TimeoutId};

pub(crate) type Co = Coroutine<Wake, Suspend, (), CoStack>;

/// A coroutine on the heap, so that parking and resuming move a pointer; `None` only in the
/// moment between a pooled coroutine giving up its stack and the new one taking it.
pub(crate) type CoBox = Box<Option<Co>>;
pub(crate) type CoYielder = Yielder<Wake, Suspend>;

/// What the loop passes to a coroutine it resumes.
pub(crate) enum Wake {
    /// Carry on.
    Run,
    /// Unwind with the private cancellation payload.
    Cancel,
    /// Unwind to the `timeout` boundary with this id.
    Timeout(TimeoutId),
    /// The coroutine is inside a `timeout` and a timer is due that the loop has not fired yet
    /// (maybe that `timeout`'s): fire the expired timers, and unwind to the boundary if one of
    /// them interrupts this coroutine (see [`Hub::deliver_expired`]).
    Expired,
    /// Panic with the hub's deadlock report: nothing can ever wake the root again. (The report
    /// waits in the hub, so that this enum, moved on every switch, stays two words.)
    Deadlock,
}

/// What a coroutine passes to the loop when it suspends.
///
/// `repr(u64)`: the tag is a whole word. With the default layout it is four bytes, and the loop
/// copies the value out of the switch's buffer with eight-byte loads, so the load waits for the
/// four-byte store to leave the store buffer (a store-forwarding stall, ~2 ns a yield here).
#[repr(u64)]
pub(crate) enum Suspend {
    /// Park until something wakes it; the reason feeds the deadlock report.
    Wait(WaitReason),
    /// Go to the back of the ready queue.
    Yield,
}

impl Suspend {
    /// The public call that suspends this way, for the "called outside a coroutine" panic.
    fn api_name(&self) -> &'static str {
        match self {
            Suspend::Yield => "yield_now",
            Suspend::Wait(reason) => reason.api_name(),
        }
    }
}

/// The unwind payload of a cancelled coroutine.
struct Cancelled;

/// A coroutine's body and result slot, shared by the task table and the `JoinHandle`.
pub(crate) trait Start {
    /// Runs the body to its end on the coroutine's stack.
    fn run(&self);
    /// The coroutine never started: drop the body (its captures' destructors run) and end it as
    /// cancelled.
    fn cancel(&self);
    /// The coroutine could not start (no stack): end it with this error.
    fn fail(&self, error: JoinError);
    /// The coroutine overflowed its stack of `size` usable bytes and was made to return
    /// (`recover_stack_overflow`): end it as such. What its body held is leaked with its stack.
    fn overflowed(&self, size: usize);
}

/// The coroutine the loop is running now, as three cells so that the suspension path reads
/// each with one load.
pub(crate) struct Running {
    task: Cell<Option<TaskRef>>,
    /// Null until the body has started (and whenever no coroutine runs).
    yielder: Cell<*const CoYielder>,
    /// Whether its suspension points must unwind instead of suspending: a copy of the task's
    /// `doom`, kept in step by `Hub::cancel` and the timeout path.
    doom: Cell<Doom>,
}

/// Why every suspension point of a coroutine unwinds, until the unwind reaches its boundary:
/// [`Doom::SPARED`] (it may suspend), [`Doom::CANCELLED`] (unwind to the end of its body; a
/// `catch_unwind` cannot stop this), or [`Doom::timed_out`] (this `timeout`'s deadline fired and
/// its boundary has not been reached yet: a library that caught the unwind, or a patched call
/// that could not unwind, does not make the deadline disappear). One word, so the suspension
/// path checks it with one load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Doom(u64);

impl Doom {
    pub(crate) const SPARED: Doom = Doom(0);
    pub(crate) const CANCELLED: Doom = Doom(u64::MAX);

    /// Timeout ids start at 1 and never reach `u64::MAX`.
    pub(crate) fn timed_out(id: TimeoutId) -> Doom {
        Doom(id.get())
    }
}

impl Default for Running {
    fn default() -> Self {
        Running {
            task: Cell::new(None),
            yielder: Cell::new(std::ptr::null()),
            doom: Cell::new(Doom::SPARED),
        }
    }
}

impl Running {
    fn enter(&self, task: TaskRef, yielder: *const CoYielder, doom: Doom) {
        debug_assert!(self.task.get().is_none(), "only the loop resumes a coroutine");
        self.task.set(Some(task));
        self.yielder.set(yielder);
        self.doom.set(doom);
    }

    fn leave(&self) {
        self.task.set(None);
        self.yielder.set(std::ptr::null());
    }
}

/// A coroutine's id: unique among the coroutines this thread has run.
///
/// ```
/// greenhub::run(|| {
///     let h = greenhub::spawn(greenhub::current);
///     let id = h.id();
///     assert_eq!(h.join().unwrap(), id);
///     assert_ne!(id, greenhub::current());
/// });
/// ```
// Non-zero (ids count from 1), so that an `Option<TaskRef>` is two words, not three: the switch
// path sets and tests `Running::task` with a word less (callgrind, `bench worker greenhub
// switch`: 186.7 -> 182.7 instructions per switch; `channel`: 1,028 -> 1,018 per round trip).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CoroutineId(NonZeroU64);

thread_local! {
    static NEXT_COROUTINE_ID: Cell<u64> = const { Cell::new(1) };
}

impl CoroutineId {
    pub(crate) fn next() -> CoroutineId {
        NEXT_COROUTINE_ID.with(|n| {
            let id = n.get();
            n.set(id + 1);
            CoroutineId(NonZeroU64::new(id).expect("coroutine ids count from 1"))
        })
    }

    /// The number, for the fault handler's report (which cannot format).
    pub(crate) fn get(self) -> u64 {
        self.0.get()
    }
}

#[cfg(test)]
impl CoroutineId {
    pub(crate) fn for_test(n: u64) -> CoroutineId {
        CoroutineId(NonZeroU64::new(n).expect("coroutine ids count from 1"))
    }
}

impl fmt::Display for CoroutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning

/// Starts `f` as a new coroutine of the current hub and returns a handle to join or cancel it.
///
/// The coroutine starts later, never inside `spawn`: it joins the back of the ready queue and
/// runs once its spawner has suspended and the coroutines ahead of it have run (in the same turn
/// of the loop when the fairness budget allows); coroutines start in spawn order. Dropping the handle detaches the coroutine (it still runs). The hub remembers
/// where it was spawned (the caller of `spawn`) for its reports; [`Builder`] also gives it a
/// name or its own stack size.
///
/// ```
/// greenhub::run(|| {
///     let h = greenhub::spawn(|| "hello");
///     assert!(!h.is_finished()); // not started yet
///     assert_eq!(h.join().unwrap(), "hello");
/// });
/// ```
///
/// # Panics
/// Outside a hub.
#[track_caller]
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    spawn_on(hub("spawn"), Spawned::new(f), None, None, Location::caller())
}

/// Configures one coroutine before spawning it: a name for the reports and
/// [`JoinHandle::name`], and its own stack size.
///
/// ```
/// greenhub::run(|| {
///     let h = greenhub::coroutine::Builder::new()
///         .name("conn 7")
///         .stack_size(64 * 1024)
///         .spawn(|| 7);
///     assert_eq!(h.name(), Some("conn 7"));
///     assert_eq!(h.join().unwrap(), 7);
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
}

impl Builder {
    /// A builder with the defaults: no name, the hub's stack size.
    pub fn new() -> Self {
        Builder::default()
    }

    /// The coroutine's name, shown in the deadlock report, [`ext::dump`](crate::ext::dump),
    /// the overflow report and its panic message: `coroutine #17 "conn 7" (spawned at ...)`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Usable stack size of this coroutine, in bytes (rounded up to whole pages, at least
    /// 16 KiB: what unwinding it, on a cancel or a `timeout`, needs); the hub's
    /// [`Builder::stack_size`](crate::Builder::stack_size) is the default.
    ///
    /// # Panics
    /// If `bytes` is 0 or more than 1 TiB.
    #[track_caller]
    pub fn stack_size(mut self, bytes: usize) -> Self {
        crate::stack::check_stack_size(bytes, "coroutine::Builder::stack_size");
        self.stack_size = Some(bytes);
        self
    }

    /// Starts `f` as a new coroutine of the current hub, as [`spawn`] does.
    ///
    /// # Panics
    /// Outside a hub.
    #[track_caller]
    pub fn spawn<F, T>(self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + 'static,
        T: 'static,
    {
        let name = self.name.map(Rc::from);
        spawn_on(hub("spawn"), Spawned::new(f), self.stack_size, name, Location::caller())
    }
}

/// Spawns `f` as [`spawn`] does (spawned at `site`), with `guard` dropped when the coroutine
/// ends, however it ends (returns, panics, is cancelled before or after it started, cannot get
/// a stack, or overflows its stack with `recover_stack_overflow`). Group and pool memberships
/// live here rather than in the body's captures: what the body captured moves onto the
/// coroutine's stack, which an overflow abandons without dropping anything.
pub(crate) fn spawn_guarded<F, T, G>(
    f: F,
    guard: G,
    site: &'static Location<'static>,
) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
    G: 'static,
{
    spawn_on(hub("spawn"), Spawned::guarded(f, guard), None, None, site)
}

/// Spawns `spawned` on `hub`: the one way in for `spawn`, `Builder::spawn` and
/// `spawn_guarded`.
#[inline]
fn spawn_on<F, T, G>(
    hub: &Hub,
    spawned: Spawned<F, T, G>,
    stack_size: Option<usize>,
    name: Option<Rc<str>>,
    site: &'static Location<'static>,
) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
    G: 'static,
{
    let spawn = Spawn { stack_size: hub.stacks.usable_size(stack_size), site, name: name.clone() };
    sys::HubSection::enter_raw(); // the allocation: malloc's lock
    let spawned = Rc::new(spawned);
    sys::HubSection::leave();
    let task = hub.tasks.insert(Body::Start(spawned.clone()), spawn);
    JoinHandle::new(task, spawned, name)
}

/// Puts the calling coroutine at the back of the ready queue and runs the others.
///
/// # Panics
/// Outside a hub.
// Always inlined: as a function of its own it costs one more mispredicted return per yield
// (measured ~45 ns a yield with `#[inline]`, ~17 ns with this; docs: "The switch path").
#[inline(always)]
#[track_caller]
pub fn yield_now() {
    suspend(hub("yield_now"), Suspend::Yield);
}

/// The id of the calling coroutine.
///
/// # Panics
/// Outside a hub, or in a hub's exit hook (no coroutine runs there).
#[track_caller]
pub fn current() -> CoroutineId {
    hub("current").current_task("current").id
}

#[cold]
#[track_caller]
fn outside_coroutine(what: &str) -> ! {
    panic!(
        "greenhub::{what} called outside a coroutine (in an exit hook or the hub's own loop, \
         where nothing can suspend); call it from a coroutine: the closure given to \
         greenhub::run, or one spawned there"
    )
}

/// A body spawned by `spawn` or `run`: the closure, then its result, and what must go when the
/// coroutine ends (`G`, see [`spawn_guarded`]; nothing for a plain spawn). One allocation per
/// coroutine serves the task table (as `dyn Start`) and the handle (as `dyn Joinable`).
pub(crate) struct Spawned<F, T, G = ()> {
    body: Cell<Option<F>>,
    state: JoinState<T>,
    guard: Cell<Option<G>>,
}

impl<F, T> Spawned<F, T> {
    pub(crate) fn new(body: F) -> Self {
        Spawned::guarded(body, ())
    }
}

impl<F, T, G> Spawned<F, T, G> {
    pub(crate) fn guarded(body: F, guard: G) -> Self {
        Spawned {
            body: Cell::new(Some(body)),
            state: JoinState::new(),
            guard: Cell::new(Some(guard)),
        }
    }
}

impl<F: FnOnce() -> T, T, G> Start for Spawned<F, T, G> {
    fn run(&self) {
        let body = self.body.take().expect("a coroutine body runs once");
        let outcome = panic::catch_unwind(AssertUnwindSafe(body));
        if FORCE_DROPPING.with(Cell::get) {
            // The hub is being dropped with this coroutine suspended: corosensei's own unwind
            // payload must reach corosensei (and the hub must not be touched).
            drop(self.guard.take());
            if let Err(payload) = outcome {
                panic::resume_unwind(payload);
            }
        }
        let hub = hub("spawn");
        // Its `local!` values go now, inside the coroutine; a panicking destructor makes the
        // coroutine end as panicked (if nothing else ended it first).
        let teardown = crate::local::drop_all(hub, hub.current_task("spawn"));
        let outcome = match (outcome, teardown) {
            (Ok(_), Err(payload)) => Err(payload),
            (outcome, _) => outcome,
        };
        let cancelled = hub.is_cancelled_now();
        self.state.finish(match outcome {
            _ if cancelled => Err(JoinError::cancelled()),
            Ok(v) => Ok(v),
            Err(payload) if payload.is::<Cancelled>() => Err(JoinError::cancelled()),
            Err(payload) => Err(JoinError::panicked(payload)),
        });
        // Only now has it ended: its locals are dropped and its result is in. A group or pool
        // membership (a `Group::join`, a pool slot) ends here, not with the body.
        drop(self.guard.take());
    }

    fn cancel(&self) {
        self.end_unstarted(JoinError::cancelled());
    }

    fn fail(&self, error: JoinError) {
        self.end_unstarted(error);
    }

    fn overflowed(&self, size: usize) {
        // The body's captures are stranded on the dead stack; the guard is not.
        drop(self.guard.take());
        self.state.finish(Err(JoinError::stack_overflow(size)));
    }
}

impl<F, T, G> Spawned<F, T, G> {
    /// Ends a coroutine whose body never ran with `error`, dropping what the body captured. A
    /// capture whose destructor panics makes the coroutine end as panicked instead, as a
    /// panicking destructor inside a started coroutine does; the panic goes no further (not
    /// into whoever cancelled it, nor out of `run`'s shutdown).
    fn end_unstarted(&self, error: JoinError) {
        let body = self.body.take();
        let dropped = panic::catch_unwind(AssertUnwindSafe(|| drop(body)));
        self.state.finish(match dropped {
            Ok(()) => Err(error),
            Err(payload) => Err(JoinError::panicked(payload)),
        });
        drop(self.guard.take());
    }
}

impl<F, T, G> Joinable<T> for Spawned<F, T, G> {
    fn state(&self) -> &JoinState<T> {
        &self.state
    }
}

thread_local! {
    /// Set while a hub drops coroutines that are still suspended (only when its loop itself
    /// panicked): corosensei then unwinds them with its own payload, which must pass through.
    static FORCE_DROPPING: Cell<bool> = const { Cell::new(false) };
}

// ---------------------------------------------------------------------------------------------
// Suspension: the only place a coroutine gives control back to the loop

/// Suspends the running coroutine. Returns when the loop resumes it with `Wake::Run`; unwinds
/// when it was cancelled or its `timeout` fired; panics with the report on a deadlock.
///
/// Callers loop on their own condition: a resume is a hint, not a promise.
///
/// Inlined on purpose, like `Hub::resume`: after a stack switch the CPU's return-address
/// predictor is wrong for every frame returned through, so each call level on the switch path
/// costs a mispredicted return (see docs/coroutines-and-stacks.md).
#[inline(always)]
#[track_caller]
pub(crate) fn suspend(hub: &Hub, how: Suspend) {
    debug_assert!(!sys::HubSection::active(), "no switch inside greenhub's bookkeeping");
    let yielder = hub.running.yielder.get();
    if yielder.is_null() {
        outside_coroutine(how.api_name()); // the user's call, not this internal function
    }
    if hub.running.doom.get() != Doom::SPARED {
        unwind_doomed(hub, hub.running.doom.get());
    }
    // SAFETY: a non-null `yielder` is the `&Yielder` corosensei passed to the running coroutine's
    // body, recorded when the body started and cleared when the coroutine suspends or ends. It
    // lives on that coroutine's own stack, which is live because we are running on it.
    let wake = unsafe { &*yielder }.suspend(how);
    // The common case is one compare; the others are out of line. (With the whole `match`
    // here, the compiler dispatched every resume, `Run` included, through a jump table: four
    // more instructions and an indirect jump per switch, by callgrind.)
    if !matches!(wake, Wake::Run) {
        woken_otherwise(hub, wake);
    }
}

/// A resume other than `Wake::Run`: unwind (a cancel, a fired timeout), panic with the deadlock
/// report, or fire the timers that are due and carry on unless one of them was this
/// coroutine's `timeout` (`Wake::Expired`).
#[cold]
#[inline(never)]
#[track_caller]
fn woken_otherwise(hub: &Hub, wake: Wake) {
    match wake {
        Wake::Run => unreachable!("`suspend` returns on Wake::Run"),
        Wake::Cancel => unwind_from_suspension(hub, Box::new(Cancelled)),
        Wake::Timeout(id) => hub.timeout_fired(id),
        Wake::Expired => hub.deliver_expired(),
        Wake::Deadlock => {
            let report = hub.take_deadlock_report();
            warn_if_in_cleanup(hub);
            panic!("{report}")
        }
    }
}

/// Unwinds a coroutine that must not suspend again (see [`Doom`]).
#[cold]
fn unwind_doomed(hub: &Hub, doom: Doom) -> ! {
    if doom == Doom::CANCELLED {
        unwind_from_suspension(hub, Box::new(Cancelled))
    }
    unwind_from_suspension(hub, Box::new(TimedOut))
}

/// Unwinds the calling coroutine from its suspension point with `payload`.
#[cold]
fn unwind_from_suspension(hub: &Hub, payload: Box<dyn std::any::Any + Send>) -> ! {
    warn_if_in_cleanup(hub);
    panic::resume_unwind(payload)
}

/// A suspension inside a destructor that runs because of an unwind (a cancel, a timeout, the
/// shutdown): the unwind about to start makes Rust abort the process with "panic in a
/// destructor during cleanup". Say first who did it and which rule it broke.
fn warn_if_in_cleanup(hub: &Hub) {
    if std::thread::panicking() {
        let who = hub.running_identity().unwrap_or_else(|| "a coroutine".to_string());
        crate::stderr::line(format_args!(
            "greenhub: {who} suspended inside a destructor while unwinding (it was cancelled, \
             timed out, or the hub is shutting down); a Drop impl must never suspend (no sleep, \
             recv, lock, join or I/O in drop): Rust cannot unwind out of a destructor during \
             cleanup, so the process aborts."
        ));
    }
}

/// Why a wait run by [`without_unwinding`] ended early.
#[cfg(feature = "patch")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Interrupted {
    /// The coroutine was cancelled.
    Cancelled,
    /// A `timeout` around the coroutine's current code fired.
    TimedOut,
}

/// Runs `wait` (which suspends at ordinary suspension points) without letting a cancellation or
/// a timeout unwind out of it, for callers whose frames an unwind must not cross (the patch's
/// C-ABI hooks).
///
/// If the coroutine is cancelled or its `timeout` fires while `wait` is suspended, the unwind
/// stops here and `Err` says which; it is re-armed for the coroutine's next ordinary suspension
/// point (a cancelled coroutine stays cancelled; a fired timeout unwinds from there to its
/// boundary, or its boundary reports `Elapsed` if the closure returns first). While one is
/// pending, `without_unwinding` returns `Err` at once without running `wait`. Any other panic
/// propagates.
#[cfg(feature = "patch")]
pub(crate) fn without_unwinding<R>(hub: &Hub, wait: impl FnOnce() -> R) -> Result<R, Interrupted> {
    match hub.running.doom.get() {
        Doom::SPARED => {}
        Doom::CANCELLED => return Err(Interrupted::Cancelled),
        _ => return Err(Interrupted::TimedOut),
    }
    match panic::catch_unwind(AssertUnwindSafe(wait)) {
        Ok(value) => Ok(value),
        Err(payload) if payload.is::<Cancelled>() => Err(Interrupted::Cancelled),
        Err(payload) if payload.is::<TimedOut>() => {
            // The timeout stays sticky (`Hub::timeout_fired`): the next ordinary suspension
            // point unwinds again. Its caller saw an error, not an unwind: remember that for the
            // boundary.
            hub.timeout_delivered_as_error();
            Err(Interrupted::TimedOut)
        }
        Err(other) => panic::resume_unwind(other),
    }
}

/// Whether the caller runs inside a coroutine of this thread's hub (not in the loop itself, not
/// on a thread without a hub).
#[cfg(feature = "patch")]
pub(crate) fn in_coroutine() -> bool {
    crate::hub::try_hub().is_some_and(|hub| !hub.running.yielder.get().is_null())
}

impl Hub {
    /// Spawns the root coroutine, whose closure may borrow from `run`'s caller at `site`.
    pub(crate) fn spawn_root<'a, F: FnOnce() -> T + 'a, T: 'a>(
        &self,
        spawned: Rc<Spawned<F, T>>,
        site: &'static Location<'static>,
    ) -> TaskRef {
        let body: Rc<dyn Start + 'a> = spawned;
        // SAFETY: only the lifetime is erased. The root's body runs to its end inside `run`
        // (which returns only once the root task has left the table), or is dropped with the hub
        // while `run` unwinds, both before the borrowed data's scope ends. In a forked child the
        // hub is leaked instead, and the child never returns to that scope (it `_exit`s).
        let body: Rc<dyn Start + 'static> = unsafe { mem::transmute(body) };
        let spawn = Spawn { stack_size: self.stacks.usable_size(None), site, name: None };
        self.tasks.insert(Body::Start(body), spawn)
    }

    /// Resumes a task until it suspends or ends; true if it ended (or could not start). Stale
    /// refs (ended tasks) are ignored. `MONITORED`: the blocking monitor is on, and this resume
    /// tells it (one relaxed store); the loop picks the instance once per hub, so with the
    /// monitor off the switch path has no trace of it.
    ///
    /// The hot path of every switch: one borrow of the table to take the coroutine out
    /// ([`prepare`](Self::prepare)), the switch, one borrow to put it back ([`park`](Self::park)).
    #[inline(always)]
    pub(crate) fn resume<const MONITORED: bool>(&self, r: TaskRef) -> bool {
        let Some((mut co, wake)) = self.prepare(r) else {
            return !self.tasks.is_alive(r);
        };
        if MONITORED {
            self.monitor.resuming(r.id);
        }
        let result = Option::as_mut(&mut *co).expect("a parked coroutine").resume(wake);
        sys::unwatch_stack();
        self.running.leave();
        match result {
            CoroutineResult::Yield(how) => {
                self.park(r, co, how);
                false
            }
            CoroutineResult::Return(()) => {
                self.ended(r, co);
                true
            }
        }
    }

    /// Takes the coroutine out of the table for `resume` and records it as running (for the
    /// suspension path and the overflow reporter), creating it (with a stack) if new.
    ///
    /// Inlined into the loop, so that what it hands over stays in registers (returned through
    /// memory it cost a dozen loads and stores per switch); the first resume of a coroutine,
    /// which must create it, is out of line in [`first_resume`](Self::first_resume).
    #[inline(always)]
    fn prepare(&self, r: TaskRef) -> Option<(CoBox, Wake)> {
        let mut table = self.tasks.borrow_mut();
        let task =
            table.tasks.get_mut(r.key).filter(|t| t.id == r.id && t.state != TaskState::Running)?;
        let co = match mem::replace(&mut task.body, Body::Running) {
            Body::Parked(co) => co,
            Body::Start(start) => return self.first_resume(table, r, start),
            Body::Running => unreachable!("a coroutine is resumed while it runs"),
        };
        let wake = self.enter(r, task, &co);
        Some((co, wake))
    }

    /// [`prepare`](Self::prepare) for a coroutine that has not run yet: takes a stack for it
    /// and creates it on it, or ends it with the error if no stack can be had.
    #[inline(never)]
    fn first_resume(
        &self,
        mut table: RefMut<'_, Table>,
        r: TaskRef,
        start: Rc<dyn Start>,
    ) -> Option<(CoBox, Wake)> {
        let task = &mut table.tasks[r.key];
        match self.stacks.take(task.stack_size) {
            Ok((mut co, stack)) => {
                debug_assert!(task.state == TaskState::Ready && task.yielder.is_null());
                self.keep_body(r, &start);
                task.stack_limit = stack.limit().get();
                *co = Some(new_coroutine(stack, start));
                let wake = self.enter(r, task, &co);
                Some((co, wake))
            }
            Err(error) => {
                let task = table.tasks.remove(r.key);
                drop(table);
                start.fail(error);
                drop(task);
                None
            }
        }
    }

    /// Marks `task` running and records it for the suspension path (`Running`) and the
    /// overflow reporter; the value to resume it with.
    #[inline(always)]
    fn enter(&self, r: TaskRef, task: &mut Task, co: &CoBox) -> Wake {
        task.state = TaskState::Running;
        task.since = self.tasks.now();
        let wake = match task.pending.take() {
            _ if task.cancelled => Wake::Cancel,
            Some(wake) => wake,
            // Inside a `timeout` and a timer is due: the loop fires timers only after it has
            // run the ready coroutines, so this resume may come before the timeout's interrupt
            // (one load and a branch for a coroutine inside no `timeout`; a clock read for one
            // that is).
            None if task.in_timeout && self.timer_due() => Wake::Expired,
            None => Wake::Run,
        };
        self.running.enter(r, task.yielder, task.doom);
        // The trap handle is armed only when an overflow may end this coroutine alone; with
        // recovery off (the default) this is one load and a branch.
        let trap = match self.recover_overflow(r) {
            true if arm_trap(co) => sys::Trap::Armed,
            _ if self.recover_stack_overflow => sys::Trap::Root,
            _ => sys::Trap::Off,
        };
        sys::watch_stack(task.stack_limit, r.id.get(), task.stack_size, trap);
        wake
    }

    /// A coroutine returned: it leaves the table, its stack goes back to the pool (or, after an
    /// overflow, into quarantine).
    #[inline(never)]
    fn ended(&self, r: TaskRef, co: CoBox) {
        let task = self.tasks.borrow_mut().tasks.remove(r.key);
        if sys::take_overflowed() {
            return self.bury(r, co, task);
        }
        self.forget_body(r);
        self.stacks.put(co, task.stack_size);
        drop(task);
    }

    /// A coroutine that overflowed its stack and was made to return by the fault handler: its
    /// stack is quarantined (never reused: whatever pointed into it stays harmless), its
    /// frames are never unwound (their values leak), and its joiners get `is_stack_overflow`.
    #[cold]
    fn bury(&self, r: TaskRef, co: CoBox, mut task: Task) {
        // Its `local!` values are leaked with its stack: their destructors would run here, on
        // the loop's stack with no coroutine running, where one that suspends, uses a local or
        // asks `current()` panics out of `run` (a probe's did).
        task.leak_locals();
        if std::thread::panicking() {
            // It died mid-unwind: the thread's panic count can never come back down. The
            // fault handler already refuses that case (`Fatal::Unwinding`); this is a backstop.
            crate::stderr::line(format_args!(
                "greenhub: {} overflowed its stack while unwinding; the thread's panic state \
                 cannot be repaired. Aborting.",
                task.identity()
            ));
            std::process::abort();
        }
        self.stacks.quarantine(co, task.stack_limit);
        self.timers.forget_task(r);
        let start = self.overflow_bodies.borrow_mut().remove(&r.id);
        if let Some(start) = start {
            start.overflowed(task.stack_size);
        }
    }

    /// With `recover_stack_overflow`, keeps a second reference to a starting coroutine's body,
    /// so that an overflow (which strands the first on the dead stack) can still end it.
    fn keep_body(&self, r: TaskRef, start: &Rc<dyn Start>) {
        if self.recover_overflow(r) {
            self.overflow_bodies.borrow_mut().insert(r.id, start.clone());
        }
    }

    fn forget_body(&self, r: TaskRef) {
        if self.recover_overflow(r) {
            self.overflow_bodies.borrow_mut().remove(&r.id);
        }
    }

    /// Whether an overflow of this task's stack may end it alone: asked for, and not the root.
    #[inline]
    fn recover_overflow(&self, r: TaskRef) -> bool {
        self.recover_stack_overflow && self.root() != Some(r)
    }

    /// Puts a coroutine that suspended back in the table (and, if it yielded, at the back of
    /// the ready queue: same borrow).
    #[inline(always)] // on the switch path, in both copies of the loop (see `Hub::turn`)
    fn park(&self, r: TaskRef, co: CoBox, how: Suspend) {
        let mut table = self.tasks.borrow_mut();
        let table = &mut *table;
        let task = &mut table.tasks[r.key];
        debug_assert!(task.state == TaskState::Running);
        // The old body is `Body::Running`, which owns nothing: forgetting it spares the switch
        // path an out-of-line `drop_in_place::<Body>` call.
        let running = mem::replace(&mut task.body, Body::Parked(co));
        debug_assert!(matches!(running, Body::Running));
        mem::forget(running);
        task.since = self.tasks.now();
        match how {
            Suspend::Yield => {
                task.state = TaskState::Ready;
                table.ready.push_back(r);
            }
            Suspend::Wait(reason) => {
                task.state = TaskState::Suspended;
                task.waiting = reason;
            }
        }
    }

    /// Called by a body when it starts: records its yielder for later suspensions.
    fn started(&self, yielder: &CoYielder) {
        let me = self.running.task.get().expect("a coroutine starts only from the loop");
        self.running.yielder.set(yielder);
        self.tasks.borrow_mut().tasks[me.key].yielder = yielder;
    }

    /// Makes a suspended task ready. No effect on a task that is ready, running or ended.
    #[inline]
    pub(crate) fn wake(&self, r: TaskRef) {
        self.tasks.wake(r);
    }

    /// Delivers `wake` (timeout or deadlock) at the task's next resume, waking it if parked.
    pub(crate) fn interrupt(&self, r: TaskRef, wake: Wake) {
        self.tasks.interrupt(r, wake);
    }

    /// Cancels a task: an unstarted one is removed at once (its body never runs); a started one
    /// unwinds at its current or next suspension point.
    pub(crate) fn cancel(&self, r: TaskRef) {
        match self.tasks.mark_cancelled(r) {
            CancelMark::Gone => {}
            CancelMark::Unstarted(start) => start.cancel(), // joiners see `Cancelled`
            CancelMark::Started => {
                if self.running.task.get() == Some(r) {
                    self.running.doom.set(Doom::CANCELLED); // cancelling itself: its next suspension unwinds
                }
                self.tasks.wake(r);
            }
        }
    }

    /// Whether the running coroutine has been cancelled.
    fn is_cancelled_now(&self) -> bool {
        self.running.doom.get() == Doom::CANCELLED
    }

    /// The running coroutine's timeout `id` fired (the resume delivered it): from now on every
    /// suspension point unwinds to that boundary, however often a library catches the unwind,
    /// until the boundary takes it back with [`take_timed_out`](Self::take_timed_out). Of two
    /// fired timeouts the outer one (smaller id) wins, as in `TaskTable::interrupt`.
    #[cold]
    fn timeout_fired(&self, id: TimeoutId) -> ! {
        let me = self.current_task("timeout");
        let sticky = {
            let mut tasks = self.tasks.borrow_mut();
            let task = &mut tasks.tasks[me.key];
            let fired = match task.timed_out {
                Some(earlier) => earlier.outer(id),
                None => FiredTimeout::new(id),
            };
            task.timed_out = Some(fired);
            if task.doom != Doom::CANCELLED {
                task.doom = Doom::timed_out(fired.id());
            }
            task.doom
        };
        self.running.doom.set(sticky);
        unwind_from_suspension(self, Box::new(TimedOut))
    }

    /// Whether the earliest timer's deadline has passed.
    fn timer_due(&self) -> bool {
        self.timers.next_deadline().is_some_and(|at| at <= Instant::now())
    }

    /// The running coroutine, inside a `timeout`, was resumed while a timer was due: fire the
    /// expired timers now (the same `fire_expired` as the loop's, so of two nested deadlines
    /// that passed the outer one wins, as in `TaskTable::interrupt`); if one of them was a
    /// `timeout` of this coroutine, unwind to its boundary, else carry on.
    #[cold]
    fn deliver_expired(&self) {
        {
            // Reached from a coroutine's code (the timer queue's borrow): see `TaskTable::with`.
            let _section = sys::HubSection::enter();
            self.timers.fire_expired(self);
        }
        let me = self.current_task("timeout");
        if let Some(Wake::Timeout(id)) = self.tasks.take_pending(me) {
            self.timeout_fired(id);
        }
    }

    /// The running coroutine's fired timeout reached its code as an error (a patched call's
    /// `ETIMEDOUT`), not as an unwind: its boundary reports `Elapsed` even if that code then
    /// panicked on the error.
    #[cfg(feature = "patch")]
    fn timeout_delivered_as_error(&self) {
        let me = self.current_task("timeout");
        if let Some(fired) = &mut self.tasks.borrow_mut().tasks[me.key].timed_out {
            *fired = fired.seen_as_error();
        }
    }

    /// At the boundary of `timeout` `id`, in its coroutine: its deadline, if it fired (and was
    /// not overtaken by an outer one); then the coroutine may suspend again.
    pub(crate) fn take_timed_out(&self, id: TimeoutId) -> Option<FiredTimeout> {
        let me = self.current_task("timeout");
        let mut tasks = self.tasks.borrow_mut();
        let task = &mut tasks.tasks[me.key];
        let fired = task.timed_out.filter(|fired| fired.id() == id)?;
        task.timed_out = None;
        if task.doom == Doom::timed_out(id) {
            task.doom = Doom::SPARED;
            self.running.doom.set(Doom::SPARED);
        }
        Some(fired)
    }

    /// The running coroutine's ref, if a coroutine runs.
    pub(crate) fn running_task(&self) -> Option<TaskRef> {
        self.running.task.get()
    }

    /// The running coroutine's ref, or a panic naming `what`.
    #[inline]
    #[track_caller]
    pub(crate) fn current_task(&self, what: &str) -> TaskRef {
        match self.running.task.get() {
            Some(task) => task,
            None => outside_coroutine(what),
        }
    }

    /// How reports name the running coroutine, if one runs (and the table is not mid-update).
    pub(crate) fn running_identity(&self) -> Option<String> {
        let me = self.running.task.get()?;
        self.tasks.try_with(me, |t| t.identity().to_string())
    }

    /// Panics, naming the rule, when the running coroutine joins its own handle.
    #[track_caller]
    #[inline]
    pub(crate) fn assert_not_self_join(&self, target: TaskRef) {
        if self.running.task.get() == Some(target) {
            self.self_join(target);
        }
    }

    #[cold]
    #[track_caller]
    fn self_join(&self, target: TaskRef) -> ! {
        let who = self.running_identity().unwrap_or_else(|| format!("coroutine {}", target.id));
        panic!(
            "greenhub: JoinHandle::join called by {who} on its own handle; a coroutine \
             cannot wait for itself to end (it would wait forever)"
        );
    }
}

fn new_coroutine(stack: CoStack, start: Rc<dyn Start>) -> Co {
    Coroutine::with_stack(stack, move |yielder: &CoYielder, _first: Wake| {
        // A task is never interrupted before it starts: cancelling an unstarted task removes it.
        hub("spawn").started(yielder);
        start.run();
    })
}

/// Drops coroutines that may still be suspended (only when the loop itself failed): corosensei
/// force-unwinds them, and its payload must not be caught by the bodies.
pub(crate) fn force_drop(tasks: slab::Slab<Task>) {
    FORCE_DROPPING.with(|f| f.set(true));
    drop(tasks);
    FORCE_DROPPING.with(|f| f.set(false));
}

thread_local! {
    /// The trap handle of the running coroutine when an overflow may end it alone, for the
    /// fault handler (const-initialised: plain thread-local memory in a signal handler).
    static TRAP: Cell<Option<CoroutineTrapHandler<()>>> = const { Cell::new(None) };
}

/// Records the coroutine about to be resumed for the fault handler; true.
fn arm_trap(co: &CoBox) -> bool {
    let handler = Option::as_ref(&**co).map(Coroutine::trap_handler);
    TRAP.with(|t| t.set(handler));
    handler.is_some()
}

/// From the fault handler: makes the running coroutine return to the loop when the handler
/// returns, if its stack pointer `sp` is on its stack. The registers to set come back.
pub(crate) fn trap_running(sp: usize) -> Option<sys::TrapRegs> {
    let handler = TRAP.with(Cell::get)?;
    if !handler.stack_ptr_in_bounds(sp) {
        return None;
    }
    // SAFETY: corosensei's contract for `setup_trap_handler`. (1) It is called from a signal
    // handler for a fault of this very coroutine: `TRAP` was armed by `Hub::resume` for the
    // coroutine it is running now (cleared by the next resume's `arm_trap`), on this thread.
    // (2) The interrupted stack pointer is inside that coroutine's stack (checked just above).
    // (3) The caller sets the returned registers in the interrupted context before returning.
    // (4) "The coroutine must not write to memory outside itself except through volatile
    // operations": greenhub cannot promise that for the user's code, and says so: state that
    // code was updating outside its stack may be left half-written (docs/coroutines-and-stacks.md);
    // greenhub's own state is protected by refusing to recover inside a `HubSection`, and
    // shared libraries' (malloc's) by refusing outside the program's own code. The closure
    // runs on the reset stack and returns `()`, which `resume` receives as the coroutine's end.
    let regs = unsafe { handler.setup_trap_handler(|| ()) };
    Some(trap_regs(regs))
}

#[cfg(target_arch = "x86_64")]
fn trap_regs(regs: corosensei::trap::TrapHandlerRegs) -> sys::TrapRegs {
    let corosensei::trap::TrapHandlerRegs { rip, rsp, rbp, rdi, rsi } = regs;
    let u = |v: u64| v as usize;
    sys::TrapRegs { pc: u(rip), sp: u(rsp), frame: u(rbp), args: [u(rdi), u(rsi)] }
}

#[cfg(not(target_arch = "x86_64"))]
fn trap_regs(_: corosensei::trap::TrapHandlerRegs) -> sys::TrapRegs {
    sys::TrapRegs { pc: 0, sp: 0, frame: 0, args: [0; 2] }
}

/// From the fault handler: writes how reports name the running coroutine, without allocating
/// or taking a borrow; false when it cannot tell (no hub, or the task table mid-update).
pub(crate) fn write_running_identity(out: &mut sys::FaultText) -> bool {
    let Some(hub) = crate::hub::try_hub() else { return false };
    let Some(me) = hub.running.task.get() else { return false };
    // SAFETY: the handler runs on this thread, which is stopped at the faulting instruction, so
    // nothing mutates the table while `peek` is read; `peek` refuses a table that was mutably
    // borrowed when the fault hit (mid-update). The reference does not outlive this call.
    let Some(task) = (unsafe { hub.tasks.peek(me) }) else { return false };
    out.text("coroutine #");
    out.number(task.id.get());
    if let Some(name) = task.name() {
        out.text(" \"");
        write_escaped(out, name);
        out.text("\"");
    }
    out.text(" (spawned at ");
    out.text(task.site.file());
    out.text(":");
    out.number(u64::from(task.site.line()));
    out.text(":");
    out.number(u64::from(task.site.column()));
    out.text(")");
    true
}

/// Writes `name` escaped as `{:?}` writes a `str` between its quotes (`"` and `\\` escaped,
/// control and other unprintable characters as `\t`, `\u{..}`), so that the overflow report
/// names a coroutine exactly as every other report does, without allocating.
fn write_escaped(out: &mut sys::FaultText, name: &str) {
    for c in name.chars() {
        let mut utf8 = [0; 4];
        if c == '\'' {
            out.text(c.encode_utf8(&mut utf8)); // `str`'s Debug leaves single quotes alone
            continue;
        }
        for e in c.escape_debug() {
            out.text(e.encode_utf8(&mut utf8));
        }
    }
}

/// After fork, in the child: the running coroutine belongs to the parent's hub.
pub(crate) fn forget_running_after_fork() {
    sys::unwatch_stack();
}

#[cfg(test)]
mod tests {
    use crate::overflow_in_child::{aborts_inside_bookkeeping, recurse};

    /// An overflow while greenhub's bookkeeping is mid-update is never recovered: the
    /// coroutine overflows with a `HubSection` open, as if inside the task table's update.
    #[test]
    fn an_overflow_inside_greenhubs_bookkeeping_aborts_even_with_recovery_on() {
        let test = "coroutine::tests::an_overflow_inside_greenhubs_bookkeeping_aborts_even_with_recovery_on";
        aborts_inside_bookkeeping(test, || {
            let _section = crate::sys::HubSection::enter();
            recurse(0)
        });
    }
}
