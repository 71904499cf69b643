//! Coroutines: the task table entries, `spawn`, `JoinHandle`, suspension, and pooled stacks.
//!
//! This is the only file that names corosensei. Guarantee: a coroutine starts at a later hub turn
//! than its `spawn`, in spawn order; it gets its stack when it first runs (so unstarted coroutines
//! cost no memory mapping) and gives it back to the pool when it ends. Cancellation and timeouts
//! are resume values that the suspension point turns into an unwind with a private payload.
//! Not guaranteed: which pooled stack a coroutine gets, or that stack memory is returned to the OS.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corosensei::stack::{DefaultStack, Stack};
use corosensei::{Coroutine, CoroutineResult, Yielder};

use crate::hub::{Hub, hub, try_hub};
use crate::sync::waitlist::{WaitList, WaitReason};
use crate::sys;
use crate::timer::TimedOut;

type Co = Coroutine<Wake, Suspend, (), DefaultStack>;

/// A coroutine on the heap, so that parking and resuming move a pointer; `None` only in the
/// moment between a pooled coroutine giving up its stack and the new one taking it.
type CoBox = Box<Option<Co>>;
type CoYielder = Yielder<Wake, Suspend>;

/// What the loop passes to a coroutine it resumes.
pub(crate) enum Wake {
    /// Carry on.
    Run,
    /// Unwind with the private cancellation payload.
    Cancel,
    /// Unwind to the `timeout` boundary with this id.
    Timeout(u64),
    /// Panic with the hub's deadlock report: nothing can ever wake the root again. (The report
    /// waits in `Hub::deadlock`, so that this enum, moved on every switch, stays two words.)
    Deadlock,
}

/// What a coroutine passes to the loop when it suspends.
pub(crate) enum Suspend {
    /// Park until something wakes it; the reason feeds the deadlock report.
    Wait(WaitReason),
    /// Go to the back of the ready queue.
    Yield,
}

/// The unwind payload of a cancelled coroutine.
struct Cancelled;

/// A coroutine's key in the hub's table, with its id to detect a reused slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskRef {
    pub(crate) key: usize,
    pub(crate) id: CoroutineId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// In the ready queue exactly once.
    Ready,
    /// Being resumed by the loop.
    Running,
    /// Parked; only a wake or an interrupt puts it back in the ready queue.
    Suspended,
}

/// A coroutine's body and result slot, shared by the task table and the `JoinHandle`.
pub(crate) trait Start {
    /// Runs the body to its end on the coroutine's stack.
    fn run(&self);
    /// The coroutine never started: drop the body (its captures' destructors run) and end it as
    /// cancelled.
    fn cancel(&self);
    /// The coroutine could not start (no stack): end it with this error.
    fn fail(&self, error: JoinError);
}

/// A coroutine in the hub's table.
pub(crate) struct Task {
    pub(crate) id: CoroutineId,
    pub(crate) state: TaskState,
    /// What it waits on while suspended (for the deadlock report).
    pub(crate) waiting: WaitReason,
    body: Body,
    /// A timeout or deadlock interrupt to deliver at the next resume.
    pending: Option<Wake>,
    /// Set by `cancel`; every later resume or suspension point unwinds.
    cancelled: bool,
    yielder: *const CoYielder,
    /// Lowest address of its stack mapping (the guard page), for the overflow reporter.
    stack_limit: usize,
}

pub(crate) enum Body {
    Start(Rc<dyn Start>),
    /// Boxed so that parking and resuming move a pointer, not the coroutine.
    Parked(CoBox),
    /// Taken out by the loop while it runs.
    Running,
}

impl Task {
    pub(crate) fn new(body: Body) -> Task {
        Task {
            id: CoroutineId::next(),
            state: TaskState::Ready,
            waiting: WaitReason::Nothing,
            body,
            pending: None,
            cancelled: false,
            yielder: std::ptr::null(),
            stack_limit: 0,
        }
    }
}

/// The coroutine the loop is running now, as three cells so that the suspension path reads
/// each with one load.
pub(crate) struct Running {
    task: Cell<Option<TaskRef>>,
    /// Null until the body has started (and whenever no coroutine runs).
    yielder: Cell<*const CoYielder>,
    /// A copy of the task's `cancelled` flag, kept in step by `Hub::cancel`.
    cancelled: Cell<bool>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            task: Cell::new(None),
            yielder: Cell::new(std::ptr::null()),
            cancelled: Cell::new(false),
        }
    }
}

impl Running {
    fn enter(&self, task: TaskRef, yielder: *const CoYielder, cancelled: bool) {
        self.task.set(Some(task));
        self.yielder.set(yielder);
        self.cancelled.set(cancelled);
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct CoroutineId(u64);

thread_local! {
    static NEXT_COROUTINE_ID: Cell<u64> = const { Cell::new(1) };
}

impl CoroutineId {
    fn next() -> CoroutineId {
        NEXT_COROUTINE_ID.with(|n| {
            let id = n.get();
            n.set(id + 1);
            CoroutineId(id)
        })
    }
}

#[cfg(test)]
impl CoroutineId {
    pub(crate) fn for_test(n: u64) -> CoroutineId {
        CoroutineId(n)
    }
}

impl fmt::Display for CoroutineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning and joining

/// Starts `f` as a new coroutine of the current hub and returns a handle to join or cancel it.
///
/// The coroutine starts at a later turn of the hub, never inside `spawn`; coroutines start in
/// spawn order. Dropping the handle detaches the coroutine (it still runs).
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
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let hub = hub("spawn");
    let spawned = Rc::new(Spawned::new(f));
    let task = hub.insert_task(Body::Start(spawned.clone()));
    JoinHandle { task, spawned }
}

/// Puts the calling coroutine at the back of the ready queue and runs the others.
///
/// # Panics
/// Outside a hub.
#[inline]
pub fn yield_now() {
    suspend(hub("yield_now"), Suspend::Yield);
}

/// The id of the calling coroutine.
///
/// # Panics
/// Outside a hub, or in a hub's exit hook (no coroutine runs there).
pub fn current() -> CoroutineId {
    hub("current").current_task("current").id
}

#[cold]
fn outside_coroutine(what: &str) -> ! {
    panic!("greenhub::{what} called outside a coroutine; call it from inside greenhub::run")
}

/// A body spawned by `spawn` or `run`: the closure, then its result. One allocation per
/// coroutine serves the task table (as `dyn Start`) and the handle (as `dyn Joinable`).
pub(crate) struct Spawned<F, T> {
    body: Cell<Option<F>>,
    state: JoinState<T>,
}

impl<F, T> Spawned<F, T> {
    pub(crate) fn new(body: F) -> Self {
        Spawned { body: Cell::new(Some(body)), state: JoinState::new() }
    }
}

impl<F: FnOnce() -> T, T> Start for Spawned<F, T> {
    fn run(&self) {
        let body = self.body.take().expect("a coroutine body runs once");
        let outcome = panic::catch_unwind(AssertUnwindSafe(body));
        if FORCE_DROPPING.with(Cell::get) {
            // The hub is being dropped with this coroutine suspended: corosensei's own unwind
            // payload must reach corosensei (and the hub must not be touched).
            if let Err(payload) = outcome {
                panic::resume_unwind(payload);
            }
        }
        let cancelled = hub("spawn").is_cancelled_now();
        self.state.finish(match outcome {
            _ if cancelled => Err(JoinError::cancelled()),
            Ok(v) => Ok(v),
            Err(payload) if payload.is::<Cancelled>() => Err(JoinError::cancelled()),
            Err(payload) => Err(JoinError::panicked(payload)),
        });
    }

    fn cancel(&self) {
        drop(self.body.take());
        self.state.finish(Err(JoinError::cancelled()));
    }

    fn fail(&self, error: JoinError) {
        drop(self.body.take());
        self.state.finish(Err(error));
    }
}

/// The result side of a `Spawned`, with the closure type erased.
pub(crate) trait Joinable<T> {
    fn state(&self) -> &JoinState<T>;
}

impl<F, T> Joinable<T> for Spawned<F, T> {
    fn state(&self) -> &JoinState<T> {
        &self.state
    }
}

thread_local! {
    /// Set while a hub drops coroutines that are still suspended (only when its loop itself
    /// panicked): corosensei then unwinds them with its own payload, which must pass through.
    static FORCE_DROPPING: Cell<bool> = const { Cell::new(false) };
}

/// The result slot shared by a coroutine and its handle.
pub(crate) struct JoinState<T> {
    result: RefCell<Option<Result<T, JoinError>>>,
    finished: Cell<bool>,
    waiters: WaitList,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Self {
        JoinState {
            result: RefCell::new(None),
            finished: Cell::new(false),
            waiters: WaitList::new(),
        }
    }

    fn finish(&self, result: Result<T, JoinError>) {
        *self.result.borrow_mut() = Some(result);
        self.finished.set(true);
        self.waiters.notify_all();
    }

    pub(crate) fn take(&self) -> Option<Result<T, JoinError>> {
        self.result.borrow_mut().take()
    }
}

/// A handle to a spawned coroutine: join it, wait for it with a timeout, or cancel it.
///
/// Dropping the handle detaches the coroutine; it runs on. Like every type bound to a hub, it
/// cannot leave its thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>(_: &T) {}
/// greenhub::run(|| assert_send(&greenhub::spawn(|| ())));
/// ```
pub struct JoinHandle<T> {
    task: TaskRef,
    spawned: Rc<dyn Joinable<T>>,
}

impl<T> JoinHandle<T> {
    /// Suspends the caller until the coroutine ends; returns its value, or why it has none.
    ///
    /// ```
    /// greenhub::run(|| {
    ///     let h = greenhub::spawn(|| -> u8 { panic!("boom") });
    ///     assert!(h.join().unwrap_err().is_panic());
    /// });
    /// ```
    pub fn join(self) -> Result<T, JoinError> {
        let state = self.spawned.state();
        let result =
            state.waiters.wait_until(WaitReason::Join(self.task.id), None, || state.take());
        result.expect("a join without deadline returns only with the result")
    }

    /// Suspends the caller until the coroutine ends or `d` passes; true when it has ended.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = Instant::now().checked_add(d);
        let state = self.spawned.state();
        let reason = WaitReason::Join(self.task.id);
        state.waiters.wait_until(reason, deadline, || state.finished.get().then_some(())).is_some()
    }

    /// Whether the coroutine has ended (returned, panicked or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.spawned.state().finished.get()
    }

    /// Cancels the coroutine (gevent's `kill`): it unwinds from its current or next suspension
    /// point, running destructors, and ends as cancelled. A coroutine that has not started never
    /// runs its body. Does nothing once it has ended. Does not wait: `join` for that.
    pub fn cancel(&self) {
        if let Some(hub) = try_hub() {
            hub.cancel(self.task);
        }
    }

    /// The coroutine's id.
    pub fn id(&self) -> CoroutineId {
        self.task.id
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.task.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a coroutine has no value: it panicked, or it was cancelled.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panic(Box<dyn Any + Send>),
}

impl JoinError {
    pub(crate) fn cancelled() -> Self {
        JoinError { repr: Repr::Cancelled }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send>) -> Self {
        JoinError { repr: Repr::Panic(payload) }
    }

    /// True when the coroutine panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// True when the coroutine was cancelled (before it started or while it ran).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The panic payload, to rethrow with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the coroutine was cancelled rather than panicked.
    pub fn into_panic(self) -> Box<dyn Any + Send> {
        match self.repr {
            Repr::Panic(payload) => payload,
            Repr::Cancelled => panic!("JoinError::into_panic on a cancelled coroutine"),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        let Repr::Panic(payload) = &self.repr else { return None };
        payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Panic(_) => write!(f, "JoinError::Panic({:?})", self.panic_message()),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("the coroutine was cancelled"),
            (Repr::Panic(_), Some(msg)) => write!(f, "the coroutine panicked: {msg}"),
            (Repr::Panic(_), None) => f.write_str("the coroutine panicked"),
        }
    }
}

impl std::error::Error for JoinError {}

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
pub(crate) fn suspend(hub: &Hub, how: Suspend) {
    let yielder = hub.running.yielder.get();
    if yielder.is_null() {
        outside_coroutine("suspend");
    }
    if hub.running.cancelled.get() {
        panic::resume_unwind(Box::new(Cancelled));
    }
    // SAFETY: a non-null `yielder` is the `&Yielder` corosensei passed to the running coroutine's
    // body, recorded when the body started and cleared when the coroutine suspends or ends. It
    // lives on that coroutine's own stack, which is live because we are running on it.
    let wake = unsafe { &*yielder }.suspend(how);
    match wake {
        Wake::Run => {}
        Wake::Cancel => panic::resume_unwind(Box::new(Cancelled)),
        Wake::Timeout(id) => panic::resume_unwind(Box::new(TimedOut(id))),
        Wake::Deadlock => {
            let report = hub.deadlock.take().unwrap_or_default();
            panic!("{report}")
        }
    }
}

impl Hub {
    /// Spawns the root coroutine, whose closure may borrow from `run`'s caller.
    pub(crate) fn spawn_root<'a, F: FnOnce() -> T + 'a, T: 'a>(
        &self,
        spawned: Rc<Spawned<F, T>>,
    ) -> TaskRef {
        let body: Rc<dyn Start + 'a> = spawned;
        // SAFETY: only the lifetime is erased. The root's body runs to its end inside `run`
        // (which returns only once the root task has left the table), or is dropped with the hub
        // while `run` unwinds, both before the borrowed data's scope ends. In a forked child the
        // hub is leaked instead, and the child never returns to that scope (it `_exit`s).
        let body: Rc<dyn Start + 'static> = unsafe { mem::transmute(body) };
        self.insert_task(Body::Start(body))
    }

    /// Resumes a task until it suspends or ends; true if it ended (or could not start). Stale
    /// refs (ended tasks) are ignored.
    #[inline(always)]
    pub(crate) fn resume(&self, r: TaskRef) -> bool {
        let Some((mut co, wake, yielder, stack_limit)) = self.prepare(r) else {
            return !self.is_alive(r);
        };
        self.running.enter(r, yielder, matches!(wake, Wake::Cancel));
        sys::watch_stack(stack_limit, r.id.0, self.stacks.size);
        let result = Option::as_mut(&mut *co).expect("a parked coroutine").resume(wake);
        sys::unwatch_stack();
        self.running.leave();
        match result {
            CoroutineResult::Yield(how) => {
                self.park(r, co, how);
                false
            }
            CoroutineResult::Return(()) => {
                let task = self.tasks.borrow_mut().remove(r.key);
                self.stacks.put(co);
                drop(task);
                true
            }
        }
    }

    /// Takes the coroutine out of the table for `resume`, creating it (with a stack) if new.
    fn prepare(&self, r: TaskRef) -> Option<(CoBox, Wake, *const CoYielder, usize)> {
        let mut tasks = self.tasks.borrow_mut();
        let task =
            tasks.get_mut(r.key).filter(|t| t.id == r.id && t.state != TaskState::Running)?;
        let wake = match task.pending.take() {
            _ if task.cancelled => Wake::Cancel,
            Some(wake) => wake,
            None => Wake::Run,
        };
        let co = match mem::replace(&mut task.body, Body::Running) {
            Body::Parked(co) => co,
            Body::Start(start) => match self.stacks.take(r.id) {
                Ok((mut co, stack)) => {
                    task.stack_limit = stack.limit().get();
                    *co = Some(new_coroutine(stack, start));
                    co
                }
                Err(error) => {
                    let task = tasks.remove(r.key);
                    drop(tasks);
                    start.fail(error);
                    drop(task);
                    return None;
                }
            },
            Body::Running => unreachable!("a coroutine is resumed while it runs"),
        };
        task.state = TaskState::Running;
        Some((co, wake, task.yielder, task.stack_limit))
    }

    /// Puts a coroutine that suspended back in the table.
    fn park(&self, r: TaskRef, co: CoBox, how: Suspend) {
        let mut tasks = self.tasks.borrow_mut();
        let task = &mut tasks[r.key];
        task.body = Body::Parked(co);
        match how {
            Suspend::Yield => {
                task.state = TaskState::Ready;
                self.ready.borrow_mut().push_back(r);
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
        self.tasks.borrow_mut()[me.key].yielder = yielder;
    }

    /// Makes a suspended task ready. No effect on a task that is ready, running or ended.
    #[inline]
    pub(crate) fn wake(&self, r: TaskRef) {
        let mut tasks = self.tasks.borrow_mut();
        let parked = |t: &&mut Task| t.id == r.id && t.state == TaskState::Suspended;
        if let Some(task) = tasks.get_mut(r.key).filter(parked) {
            task.state = TaskState::Ready;
            self.ready.borrow_mut().push_back(r);
        }
    }

    /// Delivers `wake` (timeout or deadlock) at the task's next resume, waking it if parked.
    pub(crate) fn interrupt(&self, r: TaskRef, wake: Wake) {
        {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(r.key).filter(|t| t.id == r.id) else { return };
            task.pending = match (task.pending.take(), wake) {
                (_, Wake::Deadlock) => Some(Wake::Deadlock),
                // Two timeouts fired in one turn: they are nested (a coroutine is inside both),
                // and the outer one, created first, has the smaller id. It must win, or the
                // inner boundary would catch it and the outer deadline would be lost.
                (Some(Wake::Timeout(a)), Wake::Timeout(b)) => Some(Wake::Timeout(a.min(b))),
                (None, wake) => Some(wake),
                (pending, _) => pending,
            };
        }
        self.wake(r);
    }

    /// Cancels a task: an unstarted one is removed at once (its body never runs); a started one
    /// unwinds at its current or next suspension point.
    pub(crate) fn cancel(&self, r: TaskRef) {
        let mut tasks = self.tasks.borrow_mut();
        let Some(task) = tasks.get_mut(r.key).filter(|t| t.id == r.id) else { return };
        if let Body::Start(start) = &task.body {
            let start = start.clone();
            drop(tasks.remove(r.key));
            drop(tasks);
            start.cancel(); // its body never runs; joiners see `Cancelled`
            return;
        }
        task.cancelled = true;
        drop(tasks);
        if self.running.task.get() == Some(r) {
            self.running.cancelled.set(true); // cancelling itself: its next suspension unwinds
        }
        self.wake(r);
    }

    /// Whether the running coroutine has been cancelled.
    fn is_cancelled_now(&self) -> bool {
        self.running.cancelled.get()
    }

    /// The running coroutine's ref, or a panic naming `what`.
    #[inline]
    pub(crate) fn current_task(&self, what: &str) -> TaskRef {
        self.running.task.get().unwrap_or_else(|| outside_coroutine(what))
    }
}

fn new_coroutine(stack: DefaultStack, start: Rc<dyn Start>) -> Co {
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

/// After fork, in the child: the running coroutine belongs to the parent's hub.
pub(crate) fn forget_running_after_fork() {
    sys::unwatch_stack();
}

// ---------------------------------------------------------------------------------------------
// Stacks

/// How many free stacks a hub keeps for reuse. Beyond that, finished coroutines' stacks are
/// unmapped (a stack's touched pages stay resident while pooled).
const STACK_POOL_MAX: usize = 1024;

/// Guard-paged stacks for reuse: a fresh mapping costs microseconds, a reused one nanoseconds.
/// The pool keeps each stack inside the box of the finished coroutine that last ran on it, so a
/// new coroutine reuses the box's allocation too.
pub(crate) struct StackPool {
    /// Boxes holding finished coroutines, each with its stack.
    free: RefCell<Vec<CoBox>>,
    pub(crate) size: usize,
    refusal_reported: Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl StackPool {
    pub(crate) fn new(size: usize) -> Self {
        StackPool {
            free: RefCell::new(Vec::new()),
            size,
            refusal_reported: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// An empty box and a stack for coroutine `id`: pooled ones, or new ones.
    fn take(&self, id: CoroutineId) -> Result<(CoBox, DefaultStack), JoinError> {
        if let Some(mut finished) = self.free.borrow_mut().pop() {
            let stack = finished.take().expect("pooled boxes hold a coroutine").into_stack();
            return Ok((finished, stack));
        }
        match DefaultStack::new(self.size) {
            Ok(stack) => Ok((Box::new(None), stack)),
            Err(e) => {
                let message = stack_refused_message(id, self.size, &e);
                if !self.refusal_reported.replace(true) {
                    // Once per hub on stderr (thousands of refusals would drown it); every
                    // refused coroutine still carries the message in its JoinError.
                    eprintln!("{message}");
                }
                Err(JoinError::panicked(Box::new(message)))
            }
        }
    }

    /// Keeps a finished coroutine (its box and stack) for reuse, up to the pool's size.
    fn put(&self, finished: CoBox) {
        let mut free = self.free.borrow_mut();
        if free.len() < STACK_POOL_MAX {
            free.push(finished);
        }
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StackPool({} free of {} bytes)", self.free.borrow().len(), self.size)
    }
}

fn stack_refused_message(id: CoroutineId, size: usize, e: &std::io::Error) -> String {
    let limit = sys::max_map_count()
        .map(|n| format!("vm.max_map_count is {n}, about {} live stacks", n / 2))
        .unwrap_or_else(|| "see vm.max_map_count".to_string());
    format!(
        "greenhub: the OS refused a stack for coroutine {id} ({size} bytes + guard page): {e}. \
         Each live coroutine stack is two memory mappings and the sysctl vm.max_map_count caps \
         the mappings of a process ({limit}); raise it (sysctl -w vm.max_map_count=N) or keep \
         fewer coroutines alive at once."
    )
}
