//! The task table: every live coroutine of one hub, its state, and the ready queue.
//!
//! Guarantee: a task is in the table from its `spawn` until it ends; a [`TaskRef`] names one
//! task for its whole life and never another (a reused slab slot has a new id). Not guaranteed:
//! which slot a task gets.
//!
//! # Invariants (checked with `debug_assert!` where cheap)
//! - **Ready**: the task is in the ready queue. Outside the shutdown pass it is there exactly
//!   once; the queue may also hold stale refs (a task cancelled before it started, or ended
//!   while shutdown resumed it directly), which every consumer skips by checking the id.
//! - **Running**: exactly the task in `Running::task` (coroutine.rs); its body is
//!   [`Body::Running`] (taken out by the loop) and it is not in the ready queue.
//! - **Suspended**: its body is [`Body::Parked`]; it is not in the ready queue; only
//!   [`TaskTable::wake`] (directly, or through an interrupt or a cancel) makes it ready.
//! - [`Body::Start`] (never ran) implies Ready, no pending interrupt and a null yielder; except
//!   for a `spawn_later` task before its delay, which is Suspended (waiting on
//!   [`WaitReason::Start`]) until its timer wakes it.
//! - Who touches what: this file owns the transitions that need no stack switch (insert, wake,
//!   interrupt, the cancel mark); `coroutine.rs` owns those around a switch (`prepare`, `park`,
//!   the removal of an ended task) and is the only other file that reads a [`Task`]'s fields.
//!   Every borrow of the table is short and never held across a switch.

use std::cell::{Cell, OnceCell, RefCell, RefMut};
use std::fmt;
use std::num::NonZeroU64;
use std::os::fd::RawFd;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::coroutine::{CoBox, CoYielder, CoroutineId, Doom, Start, Wake};
use crate::local::Locals;
use crate::monitor::Names;
use crate::sys::HubSection;
use crate::timer::TimeoutId;

/// A coroutine's key in the hub's table, with its id to detect a reused slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskRef {
    pub(crate) key: usize,
    pub(crate) id: CoroutineId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// In the ready queue.
    Ready,
    /// Being resumed by the loop.
    Running,
    /// Parked; only a wake or an interrupt puts it back in the ready queue.
    Suspended,
}

/// What a suspended coroutine waits on, for the deadlock report. Sixteen bytes (see [`Task`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum WaitReason {
    Nothing,
    Sleep(Deadline),
    Event,
    ChannelRecv,
    ChannelSend,
    Semaphore,
    Mutex,
    Join(CoroutineId),
    /// A `select!` over this many operations.
    Select(usize),
    Group,
    PoolSlot,
    ThreadChannelRecv,
    Readable(RawFd),
    Writable(RawFd),
    Blocking,
    /// A `spawn_later` coroutine waiting for its start time.
    Start(Deadline),
}

/// When a wait ends, on the turn clock (nanoseconds since the task table was made, as
/// [`Stamp`]), or never: one word, where an `Option<Instant>` takes two and made
/// [`WaitReason`] 24 bytes. Only the reports read it ([`TaskTable::deadline`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(u64);

impl Deadline {
    const NEVER: Deadline = Deadline(u64::MAX);
}

impl WaitReason {
    /// The public function that waits this way, for the "called outside a hub" and "called
    /// outside a coroutine" panics.
    pub(crate) fn api_name(&self) -> &'static str {
        match self {
            WaitReason::Sleep(_) => "sleep",
            WaitReason::Event => "Event::wait",
            WaitReason::ChannelRecv => "Receiver::recv",
            WaitReason::ChannelSend => "Sender::send",
            WaitReason::Semaphore => "Semaphore::acquire",
            WaitReason::Mutex => "Mutex::lock",
            WaitReason::Join(_) => "JoinHandle::join",
            WaitReason::Select(_) => "select!",
            WaitReason::Group => "Group::join",
            WaitReason::PoolSlot => "Pool::spawn",
            WaitReason::ThreadChannelRecv => "ThreadReceiver::recv",
            WaitReason::Readable(_) => "io::wait_readable (or a socket or pipe read)",
            WaitReason::Writable(_) => "io::wait_writable (or a socket or pipe write)",
            WaitReason::Blocking => "spawn_blocking",
            WaitReason::Start(_) => "spawn_later",
            WaitReason::Nothing => "wait",
        }
    }
}

/// How reports say what a task waits on: `sleep (3s left)`, `a channel recv`.
pub(crate) struct Waiting<'a> {
    reason: WaitReason,
    tasks: &'a TaskTable,
}

impl fmt::Display for Waiting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = |at: Deadline| self.tasks.left(at);
        match self.reason {
            WaitReason::Nothing => f.write_str("nothing"),
            WaitReason::Sleep(Deadline::NEVER) => f.write_str("sleep (forever)"),
            WaitReason::Sleep(at) => write!(f, "sleep ({:?} left)", left(at)),
            WaitReason::Event => f.write_str("an Event"),
            WaitReason::ChannelRecv => f.write_str("a channel recv"),
            WaitReason::ChannelSend => f.write_str("a channel send"),
            WaitReason::Semaphore => f.write_str("a Semaphore permit"),
            WaitReason::Mutex => f.write_str("a Mutex lock"),
            WaitReason::Join(id) => write!(f, "join of coroutine {id}"),
            WaitReason::Select(n) => write!(f, "a select! over {n} operations"),
            WaitReason::Group => f.write_str("a Group's members to end"),
            WaitReason::PoolSlot => f.write_str("a free slot in a Pool"),
            WaitReason::ThreadChannelRecv => f.write_str("a thread channel recv"),
            WaitReason::Readable(fd) => write!(f, "fd {fd} to be readable"),
            WaitReason::Writable(fd) => write!(f, "fd {fd} to be writable"),
            WaitReason::Blocking => f.write_str("a spawn_blocking job"),
            WaitReason::Start(Deadline::NEVER) => f.write_str("its start (spawn_later, never)"),
            WaitReason::Start(at) => write!(f, "its start (spawn_later, {:?} left)", left(at)),
        }
    }
}

/// A coroutine in the hub's table.
///
/// At most 128 bytes (a compile-time assertion below checks it): a `Task` is moved five times per spawn and end (made,
/// inserted, put in its slab slot, taken out, dropped), and up to 128 bytes the compiler moves
/// it with eight inline vector copies; at 168 bytes each move was a `memcpy` call (callgrind,
/// `bench worker greenhub spawn batch=1000`: ~29 instructions each, 145 per spawn+join). Hence
/// the one-word [`Pending`] and [`Deadline`], and the rarely set fields behind one pointer
/// ([`Rare`]).
pub(crate) struct Task {
    pub(crate) id: CoroutineId,
    pub(crate) state: TaskState,
    /// What it waits on while suspended (for the deadlock report).
    pub(crate) waiting: WaitReason,
    pub(crate) body: Body,
    /// A timeout or deadlock interrupt to deliver at the next resume.
    pub(crate) pending: Pending,
    /// Set by `cancel`; every later resume or suspension point unwinds.
    pub(crate) cancelled: bool,
    /// A `timeout` whose deadline fired and whose boundary the unwind has not reached yet:
    /// every suspension point unwinds again (set and cleared by coroutine.rs, in the task).
    pub(crate) timed_out: Option<FiredTimeout>,
    /// `cancelled` and `timed_out` as the one word the switch path copies into `Running`
    /// ([`Doom::CANCELLED`] once cancelled, whatever times out later).
    pub(crate) doom: Doom,
    /// Whether its code is inside a `timeout`: a resume after a deadline has passed then fires
    /// the expired timers first, so that the timeout is delivered even when the loop has not
    /// fired its timer yet (timer.rs). A flag, not the deadline: it fits in `Task`'s padding.
    pub(crate) in_timeout: bool,
    /// Null until the body has started.
    pub(crate) yielder: *const CoYielder,
    /// Its name, `local!` values and monitor registration: allocated on the first of them.
    rare: Option<Box<Rare>>,
    /// Lowest address of its stack (the guard page), for the overflow reporter; 0 until it
    /// has a stack.
    pub(crate) stack_limit: usize,
    /// Usable bytes of its stack (whole pages).
    pub(crate) stack_size: usize,
    /// Where it was spawned.
    pub(crate) site: &'static Location<'static>,
    /// When it entered its current state (see [`TaskTable::tick`]).
    pub(crate) since: Stamp,
}

// A larger `Task` is moved with `memcpy` calls on every spawn (see its docs).
const _: () = assert!(std::mem::size_of::<Task>() <= 128, "Task must stay within 128 bytes");

/// What few tasks have, kept out of [`Task`] to keep it small.
#[derive(Default)]
struct Rare {
    /// Its name, if it was given one.
    name: Option<Rc<str>>,
    /// Its `local!` values, allocated on the first one (local.rs).
    locals: Option<Box<Locals>>,
    /// The blocking monitor's names, which hold this task's while it lives (monitor on only).
    named: Option<Names>,
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(names) = self.rare.as_ref().and_then(|rare| rare.named.as_ref()) {
            names.remove(self.id);
        }
    }
}

/// A timeout or deadlock interrupt waiting for a task's next resume, in one word (an
/// `Option<Wake>` takes two): 0 for none, `u64::MAX` for the deadlock, else the id of the
/// fired timeout (ids count from 1 and never get to `u64::MAX`, as in `Doom`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Pending(u64);

impl Pending {
    pub(crate) const NONE: Pending = Pending(0);
    const DEADLOCK: u64 = u64::MAX;

    /// Takes the interrupt out, leaving none. On the switch path: the usual case, none, is a
    /// load and a branch (decoding inline cost three more instructions per switch).
    #[inline(always)]
    pub(crate) fn take(&mut self) -> Option<Wake> {
        if *self == Pending::NONE {
            return None;
        }
        self.take_some()
    }

    #[cold]
    #[inline(never)]
    fn take_some(&mut self) -> Option<Wake> {
        match std::mem::replace(self, Pending::NONE).0 {
            Self::DEADLOCK => Some(Wake::Deadlock),
            id => Some(Wake::Timeout(TimeoutId::from_raw(id))),
        }
    }

    /// Adds `wake` (a timeout or the deadlock) to what is pending: the deadlock wins over
    /// everything; of two timeouts fired in one turn, the smaller id. They are nested (a
    /// coroutine is inside both), and the outer one, created first, has the smaller id. It must
    /// win, or the inner boundary would catch it and the outer deadline would be lost.
    fn add(&mut self, wake: Wake) {
        let new = match wake {
            Wake::Deadlock => Self::DEADLOCK,
            Wake::Timeout(id) => id.get(),
            Wake::Run | Wake::Cancel | Wake::Expired => unreachable!("only an interrupt is kept"),
        };
        // The deadlock, `u64::MAX`, would lose a `min`: it is kept apart.
        if self.0 != Self::DEADLOCK && (self.0 == 0 || new == Self::DEADLOCK || new < self.0) {
            self.0 = new;
        }
    }
}

/// A `timeout` whose deadline fired inside a task and whose boundary has not been reached yet:
/// its id, and whether the task's code saw it as an error (a patched call's `ETIMEDOUT`), not
/// only as an unwind (then a panic on that error still ends in `Elapsed` at the boundary). One
/// word (the flag in the top bit: ids count from 1 and never get there), to keep the task small.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FiredTimeout(NonZeroU64);

impl FiredTimeout {
    const AS_ERROR: u64 = 1 << 63;

    pub(crate) fn new(id: TimeoutId) -> FiredTimeout {
        FiredTimeout(NonZeroU64::new(id.get()).expect("timeout ids count from 1"))
    }

    pub(crate) fn id(self) -> TimeoutId {
        TimeoutId::from_raw(self.0.get() & !Self::AS_ERROR)
    }

    pub(crate) fn as_error(self) -> bool {
        self.0.get() & Self::AS_ERROR != 0
    }

    /// The same, seen as an error.
    pub(crate) fn seen_as_error(self) -> FiredTimeout {
        FiredTimeout(self.0 | Self::AS_ERROR)
    }

    /// The same flag, for the outer (smaller) of this id and `id`.
    pub(crate) fn outer(self, id: TimeoutId) -> FiredTimeout {
        let fired = FiredTimeout::new(self.id().min(id));
        if self.as_error() { fired.seen_as_error() } else { fired }
    }
}

/// What a new task is, besides its body.
pub(crate) struct Spawn {
    /// Usable bytes of its stack.
    pub(crate) stack_size: usize,
    pub(crate) site: &'static Location<'static>,
    pub(crate) name: Option<Rc<str>>,
}

/// A point in time, as nanoseconds since the task table was made: the turn clock. Eight
/// bytes, where an `Instant` is sixteen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

/// How every report names a coroutine: `coroutine #17 "conn 7" (spawned at src/main.rs:42:9)`,
/// or without a name `coroutine #17 (spawned at src/main.rs:42:9)`.
pub(crate) struct Identity<'a> {
    pub(crate) id: CoroutineId,
    pub(crate) name: Option<&'a str>,
    pub(crate) site: &'static Location<'static>,
}

impl fmt::Display for Identity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coroutine {}", self.id)?;
        if let Some(name) = self.name {
            write!(f, " {name:?}")?;
        }
        let site = self.site;
        write!(f, " (spawned at {}:{}:{})", site.file(), site.line(), site.column())
    }
}

/// Where a task's code is: not started, parked, or on the CPU.
pub(crate) enum Body {
    Start(Rc<dyn Start>),
    /// Boxed so that parking and resuming move a pointer, not the coroutine.
    Parked(CoBox),
    /// Taken out by the loop while it runs.
    Running,
}

impl Task {
    fn new(body: Body, spawn: Spawn, now: Stamp) -> Task {
        Task {
            id: CoroutineId::next(),
            state: TaskState::Ready,
            waiting: WaitReason::Nothing,
            body,
            pending: Pending::NONE,
            cancelled: false,
            timed_out: None,
            doom: Doom::SPARED,
            in_timeout: false,
            yielder: std::ptr::null(),
            rare: spawn.name.map(|name| Box::new(Rare { name: Some(name), ..Rare::default() })),
            stack_limit: 0,
            stack_size: spawn.stack_size,
            site: spawn.site,
            since: now,
        }
    }

    /// Its name, if it was given one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.rare.as_ref()?.name.as_deref()
    }

    /// Forgets its `local!` values without dropping them (a coroutine whose stack overflowed:
    /// see `Hub::bury`).
    pub(crate) fn leak_locals(&mut self) {
        if let Some(rare) = &mut self.rare {
            std::mem::forget(rare.locals.take());
        }
    }

    /// How reports name it.
    pub(crate) fn identity(&self) -> Identity<'_> {
        Identity { id: self.id, name: self.name(), site: self.site }
    }

    /// What it waits on, in the reports' words (`tasks`: its table, for the time left).
    pub(crate) fn waiting<'a>(&self, tasks: &'a TaskTable) -> Waiting<'a> {
        Waiting { reason: self.waiting, tasks }
    }

    /// Its state in the deadlock report's words: "ready", "running", "waiting on ...".
    pub(crate) fn describe_state(&self, tasks: &TaskTable) -> String {
        match self.state {
            TaskState::Suspended => format!("waiting on {}", self.waiting(tasks)),
            TaskState::Ready => "ready".to_string(),
            TaskState::Running => "running".to_string(),
        }
    }
}

/// Registers `task`'s name with the blocking monitor, which then holds it while it lives.
#[cold]
fn name_for_monitor(task: &mut Task, names: &Names) {
    names.add(task.id, task.identity().to_string());
    task.rare.get_or_insert_with(Box::default).named = Some(names.clone());
}

/// What [`TaskTable::mark_cancelled`] found.
pub(crate) enum CancelMark {
    /// No such task (it has ended).
    Gone,
    /// It had not started: it is out of the table, and its body must be dropped.
    Unstarted(Rc<dyn Start>),
    /// It has started: it unwinds at its next resume.
    Started,
}

/// The tasks of one hub and the queue of those that are ready.
pub(crate) struct TaskTable {
    /// Both behind one `RefCell`: the switch path parks a task and queues it (or takes the
    /// next one and marks it running) under a single borrow check instead of two.
    inner: RefCell<Table>,
    /// The turn clock: read from the OS once per hub turn ([`tick`](Self::tick)), stamped on
    /// every state change. A state change costs a load and a store, not a clock read.
    epoch: Instant,
    now: Cell<Stamp>,
    /// The blocking monitor's names, when it is on: each new task registers its own.
    names: OnceCell<Names>,
    /// Whether any task of this hub has ever had `local!` values: until then an ending
    /// coroutine's teardown needs no table lookup ([`has_locals`](Self::has_locals)).
    locals_used: Cell<bool>,
}

/// What [`TaskTable`] guards: the tasks, and the refs of the ready ones in FIFO order.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) tasks: Slab<Task>,
    pub(crate) ready: ReadyQueue,
}

/// The ready queue: a FIFO ring of task refs whose capacity is a power of two, indexed by two
/// free-running counters. A push or a pop is a compare, a mask, one copy and an increment;
/// `VecDeque`'s general wrap-around arithmetic cost about a dozen more instructions on each of
/// the two that every switch does.
///
/// In front of the ring, one slot (`first`) for a woken task that finds nothing queued
/// ([`push_woken`](Self::push_woken)): the usual case when coroutines hand work to each other
/// (a send wakes the receiver, then the sender waits). Its push is a test and a store, its pop
/// a test and a load, instead of the ring's arithmetic and bounds checks. FIFO order holds
/// because `first` is filled only while the ring is empty, so everything in the ring came
/// after it, and a pop takes it first; a plain [`push_back`](Self::push_back) (a yield, a
/// spawn) goes to the ring, behind it, without testing it.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    /// The oldest ready ref, if it came (through `push_woken`) while the ring was empty.
    first: Option<TaskRef>,
    /// `slots.len()` is 0 or a power of two; the live refs are `head..tail` (mod the length).
    slots: Vec<TaskRef>,
    /// How many refs were ever popped from the ring, and pushed to it (wrapping).
    head: usize,
    tail: usize,
}

impl ReadyQueue {
    #[inline]
    pub(crate) fn push_back(&mut self, r: TaskRef) {
        if self.ring_len() == self.slots.len() {
            self.grow(r);
        }
        let mask = self.slots.len() - 1;
        self.slots[self.tail & mask] = r;
        self.tail = self.tail.wrapping_add(1);
    }

    /// [`push_back`](Self::push_back) for a woken task: into `first` if nothing is queued.
    #[inline]
    pub(crate) fn push_woken(&mut self, r: TaskRef) {
        if self.is_empty() {
            self.first = Some(r);
        } else {
            self.push_back(r);
        }
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<TaskRef> {
        if let Some(r) = self.first.take() {
            return Some(r);
        }
        if self.head == self.tail {
            return None;
        }
        let r = self.slots[self.head & (self.slots.len() - 1)];
        self.head = self.head.wrapping_add(1);
        Some(r)
    }

    /// How many refs are in the ring (not counting `first`).
    #[inline]
    fn ring_len(&self) -> usize {
        self.tail.wrapping_sub(self.head)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && self.head == self.tail
    }

    pub(crate) fn clear(&mut self) {
        self.first = None;
        self.head = self.tail;
    }

    /// Doubles the ring (at least 16 slots), keeping the FIFO order; `filler` pads the slots
    /// not yet used.
    #[cold]
    fn grow(&mut self, filler: TaskRef) {
        let (len, mask) = (self.ring_len(), self.slots.len().wrapping_sub(1));
        let capacity = (self.slots.len() * 2).max(16);
        let mut slots = Vec::with_capacity(capacity);
        slots.extend((0..len).map(|i| self.slots[self.head.wrapping_add(i) & mask]));
        slots.resize(capacity, filler);
        (self.slots, self.head, self.tail) = (slots, 0, len);
    }
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable {
            inner: RefCell::default(),
            epoch: Instant::now(),
            now: Cell::new(Stamp(0)),
            names: OnceCell::new(),
            locals_used: Cell::new(false),
        }
    }
}

impl TaskTable {
    /// Makes every task from now on register its name with the blocking monitor.
    pub(crate) fn name_tasks_for(&self, names: Names) {
        let _ = self.names.set(names);
    }

    /// A new task, registered with the monitor if it is on.
    ///
    /// Inlined, so that the task is built where `insert` moves it from (as a call it was
    /// built in the return slot and copied: callgrind, `bench worker greenhub spawn
    /// batch=1000`, 1,499 -> 1,482 instructions per spawn+join).
    #[inline(always)]
    fn new_task(&self, body: Body, spawn: Spawn) -> Task {
        let mut task = Task::new(body, spawn, self.now());
        if let Some(names) = self.names.get() {
            name_for_monitor(&mut task, names);
        }
        task
    }

    /// Advances the turn clock (the loop calls it at the start of every turn).
    pub(crate) fn tick(&self) {
        self.now.set(Stamp(self.epoch.elapsed().as_nanos() as u64));
    }

    /// The turn clock's reading, for a state change.
    #[inline]
    pub(crate) fn now(&self) -> Stamp {
        self.now.get()
    }

    /// How long ago `since` was, by the OS clock.
    pub(crate) fn age(&self, since: Stamp) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_nanos(since.0))
    }

    /// `at` (`None`: never) as a [`Deadline`] for a [`WaitReason`].
    pub(crate) fn deadline(&self, at: Option<Instant>) -> Deadline {
        let since_epoch = |at: Instant| at.saturating_duration_since(self.epoch).as_nanos();
        at.map_or(Deadline::NEVER, |at| Deadline(since_epoch(at).min(u64::MAX as u128 - 1) as u64))
    }

    /// How long until `at`, by the OS clock (zero once it has passed).
    fn left(&self, at: Deadline) -> Duration {
        Duration::from_nanos(at.0).saturating_sub(self.epoch.elapsed())
    }

    /// Adds a task that has not started to the table and to the back of the ready queue.
    pub(crate) fn insert(&self, body: Body, spawn: Spawn) -> TaskRef {
        let task = self.new_task(body, spawn);
        let id = task.id;
        HubSection::enter_raw();
        let mut table = self.inner.borrow_mut();
        let key = table.tasks.insert(task);
        let r = TaskRef { key, id };
        table.ready.push_back(r);
        drop(table);
        HubSection::leave();
        r
    }

    /// Adds a task that has not started to the table, parked (waiting on `reason`) until a
    /// wake makes it ready: `spawn_later`'s tasks, woken by their start timer.
    pub(crate) fn insert_parked(&self, body: Body, spawn: Spawn, reason: WaitReason) -> TaskRef {
        let mut task = self.new_task(body, spawn);
        task.state = TaskState::Suspended;
        task.waiting = reason;
        let id = task.id;
        let _section = HubSection::enter();
        let key = self.inner.borrow_mut().tasks.insert(task);
        TaskRef { key, id }
    }

    /// Whether the task behind `r` is still in the table (not yet ended).
    pub(crate) fn is_alive(&self, r: TaskRef) -> bool {
        let _section = HubSection::enter(); // see `with`
        self.inner.borrow().tasks.get(r.key).is_some_and(|t| t.id == r.id)
    }

    /// Whether the task behind `r` is parked (not ready, running or ended): for `select!`'s
    /// entries, which a notification skips while their coroutine is awake.
    pub(crate) fn is_suspended(&self, r: TaskRef) -> bool {
        let _section = HubSection::enter(); // see `with`
        let table = self.inner.borrow();
        table.tasks.get(r.key).is_some_and(|t| t.id == r.id && t.state == TaskState::Suspended)
    }

    /// Marks the task as inside a `timeout`; returns whether it already was, for
    /// [`leave_timeout`](Self::leave_timeout) when that `timeout` ends (they nest, so the flag
    /// of the one outside is one value per frame).
    pub(crate) fn enter_timeout(&self, r: TaskRef) -> bool {
        let _section = HubSection::enter(); // see `with`
        let mut table = self.inner.borrow_mut();
        let task = table.tasks.get_mut(r.key).filter(|t| t.id == r.id);
        task.is_some_and(|task| std::mem::replace(&mut task.in_timeout, true))
    }

    /// Puts back the flag the task had before the `timeout` that ends (`outer`: it is still
    /// inside another one).
    pub(crate) fn leave_timeout(&self, r: TaskRef, outer: bool) {
        let _section = HubSection::enter(); // see `with`
        if let Some(task) = self.inner.borrow_mut().tasks.get_mut(r.key).filter(|t| t.id == r.id) {
            task.in_timeout = outer;
        }
    }

    /// Takes the running task's pending interrupt (one that `Timers::fire_expired`, called
    /// from the task itself, has just stored).
    pub(crate) fn take_pending(&self, r: TaskRef) -> Option<Wake> {
        let _section = HubSection::enter(); // see `with`
        let mut table = self.inner.borrow_mut();
        table.tasks.get_mut(r.key).filter(|t| t.id == r.id)?.pending.take()
    }

    /// The table itself, for the switch path in coroutine.rs (a short borrow, never held
    /// across a switch).
    #[inline]
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, Table> {
        self.inner.borrow_mut()
    }

    /// The next ref in the ready queue (possibly stale).
    #[inline]
    pub(crate) fn pop_ready(&self) -> Option<TaskRef> {
        self.inner.borrow_mut().ready.pop_front()
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.inner.borrow().ready.is_empty()
    }

    /// Forgets every queued ref (at the end of shutdown, when only stale ones remain).
    pub(crate) fn clear_ready(&self) {
        self.inner.borrow_mut().ready.clear();
    }

    /// Makes a suspended task ready. No effect on a task that is ready, running or ended.
    #[inline]
    pub(crate) fn wake(&self, r: TaskRef) {
        HubSection::enter_raw();
        self.wake_in_section(r);
        HubSection::leave();
    }

    /// [`wake`](Self::wake) for a caller inside a `HubSection` already (a wait list's
    /// notification: one section instead of two nested ones).
    #[inline]
    pub(crate) fn wake_in_section(&self, r: TaskRef) {
        let mut table = self.inner.borrow_mut();
        let parked = |t: &&mut Task| t.id == r.id && t.state == TaskState::Suspended;
        if let Some(task) = table.tasks.get_mut(r.key).filter(parked) {
            task.state = TaskState::Ready;
            task.since = self.now.get();
            table.ready.push_woken(r);
        }
    }

    /// Delivers `wake` (timeout or deadlock) at the task's next resume, waking it if parked.
    pub(crate) fn interrupt(&self, r: TaskRef, wake: Wake) {
        let _section = HubSection::enter();
        {
            let mut table = self.inner.borrow_mut();
            let Some(task) = table.tasks.get_mut(r.key).filter(|t| t.id == r.id) else { return };
            debug_assert!(!matches!(task.body, Body::Start(_)), "only a started task waits");
            task.pending.add(wake);
        }
        self.wake(r);
    }

    /// Marks a task cancelled: an unstarted one leaves the table at once.
    pub(crate) fn mark_cancelled(&self, r: TaskRef) -> CancelMark {
        let _section = HubSection::enter();
        let mut table = self.inner.borrow_mut();
        let Some(task) = table.tasks.get_mut(r.key).filter(|t| t.id == r.id) else {
            return CancelMark::Gone;
        };
        if let Body::Start(start) = &task.body {
            let start = start.clone();
            let task = table.tasks.remove(r.key);
            drop(table);
            drop(task);
            return CancelMark::Unstarted(start);
        }
        task.cancelled = true;
        task.doom = Doom::CANCELLED;
        CancelMark::Started
    }

    /// Takes a task out of the table, if it is alive.
    pub(crate) fn remove(&self, r: TaskRef) -> Option<Task> {
        let mut table = self.inner.borrow_mut();
        table.tasks.get(r.key).filter(|t| t.id == r.id)?;
        Some(table.tasks.remove(r.key))
    }

    /// Every task in the table, oldest first.
    pub(crate) fn live(&self) -> Vec<TaskRef> {
        let table = self.inner.borrow();
        let mut live: Vec<TaskRef> =
            table.tasks.iter().map(|(key, t)| TaskRef { key, id: t.id }).collect();
        live.sort_by_key(|r| r.id);
        live
    }

    /// Runs `f` on every task, oldest first (for reports).
    pub(crate) fn for_each_oldest_first(&self, mut f: impl FnMut(&Task)) {
        let _section = HubSection::enter(); // see `with`
        let table = self.inner.borrow();
        let mut live: Vec<&Task> = table.tasks.iter().map(|(_, t)| t).collect();
        live.sort_by_key(|t| t.id);
        live.into_iter().for_each(&mut f);
    }

    /// Runs `f` on one task, if it is alive.
    ///
    /// Every borrow of the table that a coroutine's code can reach is inside a `HubSection`: a
    /// stack overflow while it is held is never recovered (the borrow, left on the dead stack,
    /// would make every later use of the table panic), it aborts with the report.
    pub(crate) fn with<R>(&self, r: TaskRef, f: impl FnOnce(&Task) -> R) -> Option<R> {
        let _section = HubSection::enter();
        self.inner.borrow().tasks.get(r.key).filter(|t| t.id == r.id).map(f)
    }

    /// Runs `f` on one task, if it is alive and the table is not borrowed for an update.
    pub(crate) fn try_with<R>(&self, r: TaskRef, f: impl FnOnce(&Task) -> R) -> Option<R> {
        let _section = HubSection::enter(); // see `with`
        self.inner.try_borrow().ok()?.tasks.get(r.key).filter(|t| t.id == r.id).map(f)
    }

    /// One task, read without a borrow, for the fault handler; `None` if it is gone or the
    /// table is mutably borrowed.
    ///
    /// # Safety
    /// Nothing may mutate the table while the reference lives (the fault handler: the thread
    /// it interrupted is stopped, and the hub belongs to that thread).
    pub(crate) unsafe fn peek(&self, r: TaskRef) -> Option<&Task> {
        // SAFETY: the caller guarantees no mutation while the reference lives; a table that is
        // mutably borrowed right now is refused by `try_borrow_unguarded`.
        let table = unsafe { self.inner.try_borrow_unguarded() }.ok()?;
        table.tasks.get(r.key).filter(|t| t.id == r.id)
    }

    /// Runs `f` on the locals of task `r` (the running one), allocating them on first use.
    pub(crate) fn with_locals<R>(&self, r: TaskRef, f: impl FnOnce(&mut Locals) -> R) -> R {
        let _section = HubSection::enter(); // see `with`
        let mut table = self.inner.borrow_mut();
        let task = table.tasks.get_mut(r.key).filter(|t| t.id == r.id).expect("a running task");
        self.locals_used.set(true);
        f(task.rare.get_or_insert_with(Box::default).locals.get_or_insert_with(Box::default))
    }

    /// Whether task `r` has ever used a `local!`.
    ///
    /// In a hub where no task ever used one, a load and a branch: no lookup (callgrind, `bench
    /// worker greenhub spawn batch=1000`: 1,482 -> 1,449 instructions per spawn+join).
    pub(crate) fn has_locals(&self, r: TaskRef) -> bool {
        let used = |t: &Task| t.rare.as_ref().is_some_and(|rare| rare.locals.is_some());
        self.locals_used.get() && self.with(r, used).unwrap_or(false)
    }

    /// Takes every task out (when the hub is dropped after its loop failed).
    pub(crate) fn take_all(&mut self) -> Slab<Task> {
        std::mem::take(&mut self.inner.get_mut().tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::{Pending, ReadyQueue, TaskRef};
    use crate::coroutine::{CoroutineId, Wake};
    use crate::timer::TimeoutId;

    fn taken(mut p: Pending) -> Option<u64> {
        match p.take() {
            None => None,
            Some(Wake::Timeout(id)) => Some(id.get()),
            Some(Wake::Deadlock) => Some(u64::MAX),
            Some(_) => unreachable!("only interrupts are pending"),
        }
    }

    #[test]
    fn a_pending_interrupt_keeps_the_deadlock_or_the_outer_timeout() {
        let timeout = |n| Wake::Timeout(TimeoutId::from_raw(n));
        let mut p = Pending::NONE;
        assert_eq!(taken(p), None);
        p.add(timeout(5));
        assert_eq!(taken(p), Some(5));
        p.add(timeout(7)); // inner: the outer (smaller) one stays
        assert_eq!(taken(p), Some(5));
        p.add(timeout(3));
        assert_eq!(taken(p), Some(3));
        p.add(Wake::Deadlock);
        assert_eq!(taken(p), Some(u64::MAX));
        p.add(timeout(1)); // nothing overrides the deadlock
        assert_eq!(taken(p), Some(u64::MAX));
        assert_eq!(p.take().map(|_| ()), Some(()));
        assert_eq!(taken(p), None);
    }

    fn r(n: u64) -> TaskRef {
        TaskRef { key: n as usize, id: CoroutineId::for_test(n + 1) }
    }

    #[test]
    fn the_ready_queue_is_fifo_across_growth_and_wrap_around() {
        let mut q = ReadyQueue::default();
        assert_eq!(q.pop_front(), None);
        let (mut pushed, mut popped) = (0, 0);
        // Interleave pushes and pops so that the ring wraps at every capacity it grows to; one
        // push in three is a woken task's, which takes the `first` slot whenever the queue is
        // empty (every round that popped everything).
        for round in 1..200u64 {
            for _ in 0..round % 37 {
                if pushed % 3 == 0 {
                    q.push_woken(r(pushed));
                } else {
                    q.push_back(r(pushed));
                }
                pushed += 1;
            }
            for _ in 0..round % 23 {
                if let Some(got) = q.pop_front() {
                    assert_eq!(got, r(popped));
                    popped += 1;
                }
            }
            let queued = q.ring_len() + usize::from(q.first.is_some());
            assert_eq!(queued as u64, pushed - popped);
        }
        while let Some(got) = q.pop_front() {
            assert_eq!(got, r(popped));
            popped += 1;
        }
        assert_eq!(popped, pushed);
        assert!(q.is_empty());
        q.push_back(r(1));
        q.clear();
        assert_eq!(q.pop_front(), None);
        q.push_woken(r(1));
        assert!(!q.is_empty());
        q.clear();
        assert_eq!(q.pop_front(), None);
    }

    #[test]
    fn a_woken_task_in_the_first_slot_runs_before_later_pushes() {
        let mut q = ReadyQueue::default();
        q.push_woken(r(0)); // the queue is empty: the slot
        q.push_back(r(1)); // a yield: the ring, behind it
        q.push_woken(r(2)); // not empty: the ring too
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front()).collect();
        assert_eq!(order, [r(0), r(1), r(2)]);
    }
}
