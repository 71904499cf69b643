//! [`Pool`]: `multiprocessing.Pool` on greenhub: worker processes, each running its own hub, that
//! apply one function to the items callers hand in.
//!
//! Guarantee: many coroutines may [`apply`](Pool::apply) at once, each suspended alone until its
//! result comes; [`map`](Pool::map) keeps input order, [`imap_unordered`](Pool::imap_unordered)
//! gives results as they complete and pulls items lazily. A worker that dies fails exactly the
//! items in flight at it with [`Error::WorkerDied`] and is replaced; an item whose function
//! panics gives [`Error::Panicked`] and the worker goes on; a result that does not encode gives
//! [`Error::Codec`] for that item only. No zombie and no leaked fd, whatever the workers do. Not
//! guaranteed: which worker runs which item, or the order items start in.
//!
//! # How items travel
//! Each worker has two pipes: tasks and replies, framed and postcard-encoded like any
//! greenhub-ipc pipe, except that an item or result whose type is a primitive integer travels
//! as its little-endian bytes (both ends are the same program). Items travel in *chunks* (`multiprocessing`'s `chunksize`): one frame
//! carries a chunk's items, tagged with the chunk's id, and one reply frame carries the outcomes
//! of many of its items, so a tiny item costs no frame, no wake-up and no table entry of its
//! own. An item is *in flight* at a worker from the moment its chunk is handed to it until its
//! reply arrives; a worker takes another chunk while it has fewer than `concurrency + prefetch`
//! items in flight, and a corked writer sends what gathered in one hub turn in one `write`, on
//! both sides. A chunk goes to the worker with room and the fewest items in flight. The reply
//! readers decode each result straight into where its caller takes it: a `map`'s slot in input
//! order, or a batch on an `apply`'s or `imap_unordered`'s channel.
//!
//! The parent side of a worker is in `link.rs`, the child's in `worker.rs`, the wire format in
//! `wire.rs` (integers' raw bytes in `raw.rs`), the batching writer in `outgoing.rs`, a `map`'s
//! results in `collect.rs`.

mod collect;
mod link;
mod outgoing;
mod raw;
mod wire;
mod worker;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};

use greenhub::sync::{Event, Receiver, Sender, channel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::collect::Collect;
use self::link::{Batch, Link, RepliesIn, Sink, Waiter};
use self::outgoing::{Outgoing, WriteEnd};
use self::wire::{TaskChunk, TaskCodec};
use crate::handle::Handle;
use crate::{Error, Process, ProcessBuilder, Raw, Reader, frame, sys};

/// Items queued at a worker beyond those it runs, by default: enough that the default chunks of
/// a long map hold 8,192 tiny items, two or three in flight per worker, so that a worker seldom
/// runs dry while its parent waits for a CPU or a wake-up. Measured at `c0adfa0` (2M items of
/// `x + 1` on 2 workers, 10 alternated runs of each, medians): 21.5 M items/s with 1,024 (the
/// default before), 21.0 with 4,096, 25.6 with 16,384 and 24.4 with 65,536 (chunks of 32k
/// items no longer fit the caches); the workers' CPU per item 36.8, 32.1, 31.3 and 31.9 ns (fewer
/// system calls and wake-ups per item), the parent's ~31 ns in all four. The cost is the bound
/// on what a worker's death fails and on how unevenly slow items can end up spread: as with
/// `multiprocessing`'s default chunks, set `prefetch` lower for long-running items.
const DEFAULT_PREFETCH: usize = 16 * 1024;

/// Configures a [`Pool`]: `PoolBuilder::new(workers).concurrency(k).max_tasks_per_worker(n)
/// .name("w").start(f)`.
///
/// ```
/// use std::time::Duration;
/// use greenhub_ipc::{Pool, PoolBuilder};
///
/// greenhub::run(|| {
///     // Each worker overlaps up to 8 items that wait (here: sleep) instead of computing.
///     let pool: Pool<u64, u64> = PoolBuilder::new(2)
///         .concurrency(8)
///         .name("sleeper")
///         .start(|ms| {
///             greenhub::sleep(Duration::from_millis(ms));
///             ms
///         })
///         .unwrap();
///     assert_eq!(pool.map([5, 1, 3]).unwrap(), [5, 1, 3]);
///     pool.close().unwrap();
/// });
/// ```
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    workers: usize,
    concurrency: usize,
    prefetch: usize,
    /// `None`: chosen per call (see [`PoolBuilder::chunksize`]).
    chunksize: Option<usize>,
    max_tasks: Option<usize>,
    max_message: u64,
    name: String,
}

impl PoolBuilder {
    /// A pool of `workers` processes, each running one item at a time.
    ///
    /// # Panics
    /// If `workers` is 0 (a pool needs at least one worker).
    #[track_caller]
    pub fn new(workers: usize) -> PoolBuilder {
        assert!(workers > 0, "greenhub_ipc::PoolBuilder::new(0): a pool needs at least one worker");
        PoolBuilder {
            workers,
            concurrency: 1,
            prefetch: DEFAULT_PREFETCH,
            chunksize: None,
            max_tasks: None,
            max_message: frame::DEFAULT_MAX_MESSAGE_SIZE,
            name: "PoolWorker".to_string(),
        }
    }

    /// How many items each worker runs at once, each in a coroutine of its own (default 1): an
    /// item that waits (a socket, a sleep, a subprocess) lets the worker's other items run.
    ///
    /// # Panics
    /// If `k` is 0.
    #[track_caller]
    pub fn concurrency(mut self, k: usize) -> PoolBuilder {
        assert!(
            k > 0,
            "greenhub_ipc::PoolBuilder::concurrency(0): a worker runs at least one item"
        );
        self.concurrency = k;
        self
    }

    /// How many items may wait at a worker beyond the `concurrency` it runs (default 16,384): a
    /// worker takes another chunk while it has fewer than `concurrency + prefetch` items in
    /// flight. More means fewer system calls per tiny item; 0 (with
    /// [`chunksize`](Self::chunksize) 1) hands a worker an item only when one of its slots is
    /// free, so a worker that dies fails only the items it was running.
    pub fn prefetch(mut self, n: usize) -> PoolBuilder {
        self.prefetch = n;
        self
    }

    /// How many items travel to a worker in one message, and come back in one
    /// (`multiprocessing`'s `chunksize`). Default: for a call whose length is known
    /// (`map(0..n)`, a `Vec`, anything whose `size_hint` is exact) `len / (4 * workers)`
    /// rounded up, as `multiprocessing` does, but at most half of `concurrency + prefetch` so
    /// that several chunks are in flight at each worker; for an iterator of unknown length, 1.
    /// [`apply`](Pool::apply) always sends its item alone.
    ///
    /// A chunk is the unit of loss: a worker that dies fails every item of the chunks in flight
    /// at it that it has not answered yet. With `concurrency` 1 a chunk's answers come back in
    /// frames of up to 16 KiB, each as soon as it fills (and the last at the chunk's end); with
    /// more, each item's answer comes as soon as it is done. A chunk may take a worker past
    /// `concurrency + prefetch` items in flight, by less than one chunk.
    ///
    /// # Panics
    /// If `n` is 0.
    #[track_caller]
    pub fn chunksize(mut self, n: usize) -> PoolBuilder {
        assert!(n > 0, "greenhub_ipc::PoolBuilder::chunksize(0): a chunk holds at least one item");
        self.chunksize = Some(n);
        self
    }

    /// Replaces a worker after it has been handed `n` items (`maxtasksperchild`): it answers
    /// them, exits, and a fresh worker takes its place. Default: never.
    ///
    /// # Panics
    /// If `n` is 0.
    #[track_caller]
    pub fn max_tasks_per_worker(mut self, n: usize) -> PoolBuilder {
        assert!(
            n > 0,
            "greenhub_ipc::PoolBuilder::max_tasks_per_worker(0): a worker takes at least one item"
        );
        self.max_tasks = Some(n);
        self
    }

    /// The largest message the pool's pipes carry, each way, in bytes (default 2^31 - 1, a
    /// pipe's [`DEFAULT_MAX_MESSAGE_SIZE`](frame::DEFAULT_MAX_MESSAGE_SIZE)). No frame either
    /// side writes is larger, so neither reader ever refuses one (which would end that worker's
    /// link and fail every item in flight there): a chunk of items ends before an item that
    /// would take it past the limit; an item too large for a chunk of its own fails its call
    /// with [`Error::TooLarge`]; a result too large for a reply of its own fails its item alone
    /// with `TooLarge`, and the worker goes on.
    ///
    /// # Panics
    /// If `bytes` is under 64: a reply saying that a result was too large must fit.
    #[track_caller]
    pub fn max_message_size(mut self, bytes: u64) -> PoolBuilder {
        assert!(
            bytes >= self::wire::MIN_MESSAGE_SIZE,
            "greenhub_ipc::PoolBuilder::max_message_size({bytes}): at least {} bytes, room for \
             a reply saying that a result was too large",
            self::wire::MIN_MESSAGE_SIZE
        );
        self.max_message = bytes;
        self
    }

    /// The workers' names as [`Process::name`] shows them: `name-1`, `name-2`, ... (default
    /// "PoolWorker").
    pub fn name(mut self, name: impl Into<String>) -> PoolBuilder {
        self.name = name.into();
        self
    }

    /// Starts the workers; each runs `f` on the items it is handed. `f` reaches the workers
    /// through fork (a copy in each), so it need not be `Send`.
    ///
    /// # Errors
    /// [`Error::Io`] if a pipe, a worker, or a stack for a coroutine that serves one cannot be
    /// made (too many processes or open files, no address space left); the text names what the
    /// OS refused, and the workers already started are then terminated.
    ///
    /// # Panics
    /// Outside a hub (call it from inside [`greenhub::run`]).
    #[track_caller]
    pub fn start<I, O, F>(self, f: F) -> Result<Pool<I, O>, Error>
    where
        I: Serialize + DeserializeOwned + 'static,
        O: Serialize + DeserializeOwned + 'static,
        F: Fn(I) -> O + Clone + 'static,
    {
        crate::process::current_hub("Pool::start");
        sys::ignore_sigpipe();
        let (concurrency, max) = (self.concurrency, self.max_message);
        let launch = move |name: String| launch_worker(name, f.clone(), concurrency, max);
        let shared = Rc::new(Shared {
            links: RefCell::default(),
            changed: Event::new(),
            next_id: Cell::new(0),
            launched: Cell::new(0),
            closed: Cell::new(false),
            hub: greenhub::ext::hub_id(),
            config: self,
            launch: Box::new(launch),
            _items: PhantomData,
        });
        let pool = Pool { shared };
        pool.shared.launch_all()?;
        Ok(pool)
    }
}

/// Makes the pipes of one worker and forks it.
fn launch_worker<I, O, F>(
    name: String,
    f: F,
    concurrency: usize,
    max: u64,
) -> Result<(Process, Rc<Outgoing>, RepliesIn), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O + 'static,
{
    let (task_read, task_write) = sys::pipe()
        .map_err(|e| Error::io("Pool could not create a worker's task pipe (pipe2)", e))?;
    let (reply_read, reply_write) = sys::pipe()
        .map_err(|e| Error::io("Pool could not create a worker's reply pipe (pipe2)", e))?;
    let mut tasks_in = Reader::from_fd(task_read, TaskCodec::<I>::new())?;
    tasks_in.set_max_message_size(max);
    let tasks_out = Outgoing::new(Handle::new(task_write)?);
    let mut replies_in = Reader::from_fd(reply_read, Raw)?;
    replies_in.set_max_message_size(max);
    let replies_out = WriteEnd(Handle::new(reply_write)?);
    let process = ProcessBuilder::new()
        .name(name)
        .daemon(true)
        .start((tasks_in, replies_out), move |(tasks, replies)| {
            worker::serve(tasks, replies, f, concurrency, max)
        })?;
    Ok((process, tasks_out, replies_in))
}

/// A pool of worker processes applying one function to items (`multiprocessing.Pool`).
///
/// ```
/// greenhub::run(|| {
///     let pool = greenhub_ipc::Pool::new(2, |n: u64| n * n).unwrap();
///     assert_eq!(pool.apply(7).unwrap(), 49);
///     assert_eq!(pool.map(1..=4).unwrap(), [1, 4, 9, 16]);
///     let mut unordered: Vec<u64> = pool.imap_unordered(1..=4).map(Result::unwrap).collect();
///     unordered.sort();
///     assert_eq!(unordered, [1, 4, 9, 16]);
///     pool.close().unwrap();
/// });
/// ```
///
/// Dropping a pool terminates its workers (SIGTERM; the hub reaps them); [`close`](Pool::close)
/// ends them cleanly. The workers are daemon children: they are also terminated when the
/// parent's `run` ends, and if the parent dies. A pool belongs to the hub that started it: in
/// another (a later `run`, a child that inherited it through fork) every call gives
/// [`Error::Closed`].
pub struct Pool<I, O> {
    shared: Rc<Shared<I, O>>,
}

/// A launcher of one worker: the process, its task pipe, its reply pipe.
type Launch = Box<dyn Fn(String) -> Result<(Process, Rc<Outgoing>, RepliesIn), Error>>;

/// What the pool's handle and its reply readers share.
struct Shared<I, O> {
    /// The workers not yet finished (including retiring ones).
    links: RefCell<Vec<Rc<Link<O>>>>,
    /// Set when a slot frees or a worker ends: dispatchers waiting for room look again.
    changed: Event,
    next_id: Cell<u64>,
    /// Workers started so far (for their names).
    launched: Cell<u64>,
    /// Set once `close` has ended the workers and reaped them (a `close` cut short by a timeout
    /// or a cancel leaves it unset, so that dropping the pool still terminates them).
    closed: Cell<bool>,
    /// The hub the pool was started in: its workers are that hub's daemon children, its reply
    /// readers that hub's coroutines. In another hub (a later `run`, or a child that inherited
    /// the pool through fork) they are gone, and the pool is `Closed` there.
    hub: Option<u64>,
    config: PoolBuilder,
    launch: Launch,
    _items: PhantomData<fn(I)>,
}

impl<I, O> Shared<I, O> {
    /// `Ok` in the hub that started the pool; [`Error::Closed`] in any other (a later `run`,
    /// or a child that inherited the pool through fork), where its workers and reply readers
    /// do not exist: before this check, a call there waited forever for answers nobody read.
    fn usable_here(&self) -> Result<(), Error> {
        match greenhub::ext::hub_id() {
            hub if hub == self.hub => Ok(()),
            _ => Err(Error::Closed),
        }
    }
}

impl<I, O> Shared<I, O>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
{
    /// Starts the configured number of workers: forks them all, then starts the coroutines
    /// that serve them. In that order because a reply reader zero-fills its 256 KiB read buffer
    /// when it first runs: a worker forked after that shared those pages copy-on-write, and the
    /// parent's first big map paid a page copy for each as replies came in (31 alternated
    /// pairs of single 100k maps, medians: 334 → 307 faults in the map, 25.3 → 27.2 M
    /// items/s). On an error the workers already forked are killed and reaped (those already
    /// served, by the pool's drop).
    fn launch_all(self: &Rc<Self>) -> Result<(), Error> {
        let mut forked = Vec::with_capacity(self.config.workers);
        let mut outcome = Ok(());
        for _ in 0..self.config.workers {
            match self.fork_one() {
                Ok(worker) => forked.push(worker),
                Err(err) => {
                    outcome = Err(err);
                    break;
                }
            }
        }
        for (process, tasks, replies) in forked {
            if outcome.is_ok() {
                outcome = self.serve(process, tasks, replies);
            } else {
                let _ = process.kill();
                let _ = process.join();
            }
        }
        outcome
    }

    /// Starts one more worker, its task flusher and its reply reader; see [`Shared::serve`].
    fn launch_one(self: &Rc<Self>) -> Result<(), Error> {
        let (process, tasks, replies) = self.fork_one()?;
        self.serve(process, tasks, replies)
    }

    /// Makes the pipes of the next worker and forks it (named `name-N`).
    fn fork_one(&self) -> Result<(Process, Rc<Outgoing>, RepliesIn), Error> {
        let number = self.launched.get() + 1;
        self.launched.set(number);
        (self.launch)(format!("{}-{number}", self.config.name))
    }

    /// Starts the task flusher and the reply reader of a forked worker; an error if the OS
    /// refuses either coroutine its stack (the worker is then killed and reaped).
    fn serve(
        self: &Rc<Self>,
        process: Process,
        tasks: Rc<Outgoing>,
        replies: RepliesIn,
    ) -> Result<(), Error> {
        let link = Link::new(process, tasks);
        let flusher = link.tasks.start();
        self.links.borrow_mut().push(Rc::clone(&link));
        let shared = Rc::downgrade(self);
        let reading = Rc::new(Cell::new(false));
        let reader = greenhub::spawn({
            let (link, reading) = (Rc::clone(&link), Rc::clone(&reading));
            move || {
                reading.set(true);
                link.read_replies(replies, || notify(&shared));
                if let Some(shared) = shared.upgrade() {
                    shared.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
                    shared.changed.set();
                }
            }
        });
        // A coroutine gets its stack when it first runs, which both do before this one resumes.
        // One the OS refused has ended by then without running (the flusher, which runs
        // first, never ends before the pipe is closed); left alone it would leave a worker
        // whose items are never sent or never answered.
        greenhub::yield_now();
        let refused = if flusher.is_finished() {
            flusher.join().err()
        } else if !reading.get() && reader.is_finished() {
            reader.join().err()
        } else {
            None
        };
        let Some(refused) = refused else { return Ok(()) };
        self.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
        link.tasks.close();
        let _ = link.process.kill();
        let _ = link.process.join();
        let refused = io::Error::other(refused.to_string());
        Err(Error::io("Pool could not start the coroutines that serve a worker", refused))
    }

    /// Starts workers until as many are taking items as configured. An error only if none is.
    fn top_up(self: &Rc<Self>) -> Result<(), Error> {
        let taking = |links: &[Rc<Link<O>>]| {
            links.iter().filter(|l| !l.retiring.get() && !l.gone.get()).count()
        };
        while taking(&self.links.borrow()) < self.config.workers {
            if let Err(err) = self.launch_one() {
                return if taking(&self.links.borrow()) == 0 { Err(err) } else { Ok(()) };
            }
        }
        Ok(())
    }

    /// The worker with room and the fewest items in flight.
    fn pick(&self) -> Option<Rc<Link<O>>> {
        let window = self.config.concurrency + self.config.prefetch;
        let links = self.links.borrow();
        let open = links.iter().filter(|l| l.has_room(window));
        open.min_by_key(|l| l.in_flight.borrow().len()).cloned()
    }

    /// How many items one chunk of a call holds, given its iterator's `size_hint`.
    fn chunk_len(&self, (low, high): (usize, Option<usize>)) -> usize {
        let config = &self.config;
        match (config.chunksize, high) {
            (Some(n), _) => n,
            (None, Some(len)) if len == low => {
                let cap = ((config.concurrency + config.prefetch) / 2).max(1);
                len.div_ceil(4 * config.workers).clamp(1, cap)
            }
            (None, _) => 1,
        }
    }

    /// Hands the first items of `held` (at least one, as many as the chosen worker may still
    /// take) to a worker as one chunk, removing them; their results will come through
    /// `results`, item `k` with index `first + k`. Waits for room if `wait`, else returns
    /// `Ok(0)` when every worker is full. An item that does not encode, or would take the chunk
    /// past `max_message_size`, ends the chunk before it; at the front of `held` it is removed
    /// and its error returned.
    fn submit(
        self: &Rc<Self>,
        held: &mut VecDeque<I>,
        first: usize,
        results: &Sink<O>,
        wait: bool,
    ) -> Result<usize, Error> {
        self.usable_here()?;
        loop {
            self.top_up()?;
            if let Some(link) = self.pick() {
                let id = self.next_id.get();
                self.next_id.set(id + 1);
                let allowed = match self.config.max_tasks {
                    Some(max) => max - link.assigned.get(),
                    None => usize::MAX,
                };
                let mut refused = None;
                let mut taken = 0;
                link.tasks.push(|out| {
                    // A local: read in the loop through `self`, it was three dependent loads
                    // per item (the compiler cannot tell that the bytes written leave it be),
                    // the hottest spot of the parent's encoding (perf annotate, 30 maps of 100k
                    // tiny items; 4 A/Bs of 101 alternated pairs: parent CPU per item 2 to 11%
                    // lower).
                    let max = self.config.max_message;
                    let mut chunk = TaskChunk::begin(out, id);
                    if chunk.push_raw(out, held.as_slices(), allowed, max).is_none() {
                        for item in held.iter().take(allowed) {
                            if let Err(err) = chunk.push(out, item, max) {
                                refused = Some(err);
                                break;
                            }
                        }
                    }
                    taken = chunk.len();
                    chunk.finish(out)
                })?;
                if taken == 0 {
                    held.pop_front();
                    return Err(refused.expect("an empty chunk is one whose first item refused"));
                }
                held.drain(..taken);
                link.track(id, Waiter::new(first, taken, results.clone()));
                if Some(link.assigned.get()) == self.config.max_tasks {
                    link.retire();
                }
                return Ok(taken);
            }
            if !wait {
                return Ok(0);
            }
            // Nothing suspends between the look above and this wait: no wake-up is lost.
            self.changed.clear();
            self.changed.wait();
        }
    }
}

/// Tells the pool (if it still exists) that a slot is free or a worker ended.
fn notify<I, O>(shared: &Weak<Shared<I, O>>) {
    if let Some(shared) = shared.upgrade() {
        shared.changed.set();
    }
}

/// The results of one call, as they come.
type Results<O> = (Sender<Batch<O>>, Receiver<Batch<O>>);

impl<I, O> Pool<I, O>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
{
    /// A pool of `workers` processes, each running `f` on one item at a time; see
    /// [`PoolBuilder`] for the other settings.
    ///
    /// # Errors
    /// As [`PoolBuilder::start`].
    ///
    /// # Panics
    /// If `workers` is 0, or outside a hub.
    #[track_caller]
    pub fn new<F>(workers: usize, f: F) -> Result<Pool<I, O>, Error>
    where
        F: Fn(I) -> O + Clone + 'static,
    {
        PoolBuilder::new(workers).start(f)
    }

    /// Runs `f(item)` in a worker and returns its result, suspending only the calling
    /// coroutine (while every worker is full too).
    ///
    /// # Errors
    /// [`Error::Panicked`] if `f` panicked on it, [`Error::WorkerDied`] if the worker died first,
    /// [`Error::Codec`] if the item or the result does not encode or decode, [`Error::Io`] if
    /// no worker can be started.
    #[track_caller]
    pub fn apply(&self, item: I) -> Result<O, Error> {
        let (sender, receiver): Results<O> = channel();
        self.shared.submit(&mut VecDeque::from([item]), 0, &Sink::Channel(sender), true)?;
        match receiver.recv().map(|batch| batch.into_iter().next()) {
            Ok(Some((_, result))) => result,
            _ => unreachable!("a pool item's waiter was dropped without an answer"),
        }
    }

    /// Runs `f` on every item, in the workers, and returns the results in input order.
    ///
    /// # Errors
    /// The first failure to arrive (as [`apply`](Self::apply)'s errors); the items still in
    /// flight then run to their end, and their results are dropped.
    #[track_caller]
    pub fn map(&self, items: impl IntoIterator<Item = I>) -> Result<Vec<O>, Error> {
        let mut items = items.into_iter();
        let chunk = self.shared.chunk_len(items.size_hint());
        // The reply readers place each result straight into the output (`collect.rs`).
        let collect = Rc::new(Collect::new(items.size_hint().0));
        let sink = Sink::Map(Rc::clone(&collect));
        let mut held = VecDeque::with_capacity(chunk);
        let mut sent = 0;
        let mut chunks = 0;
        // The chunks after which the output is faulted in: one per worker, or all of them.
        let populate_after =
            items.size_hint().0.div_ceil(chunk).clamp(1, self.shared.config.workers);
        loop {
            // A failure that has arrived ends the call at once.
            collect.failed()?;
            if held.is_empty() {
                held.extend(items.by_ref().take(chunk));
                if held.is_empty() {
                    break;
                }
            }
            sent += self.shared.submit(&mut held, sent, &sink, true)?;
            chunks += 1;
            if chunks == populate_after {
                // Fault the output in once a chunk per worker is encoded (or all, if fewer),
                // just before the last of them leaves at the yield below, not when the call
                // starts: the workers that have theirs compute while the parent takes the
                // faults, where before every worker idled through them. Three A/Bs of 31 to 41
                // alternated pairs of single 100k maps, medians: 38.7 → 41.8, 39.2 → 40.9 and
                // 35.8 → 41.6 M items/s. Just after that yield gave 38.8 → 39.3 (41 pairs);
                // later still, once every worker's window was full, did not pay.
                collect.populate();
            }
            // Let the task pipe's flusher write this chunk now: otherwise it leaves only once
            // every worker's window is full and this loop waits, and with the default chunks
            // (8,192 tiny items, ~100 us to encode) the first worker then idled through the
            // encoding of all six (a timeline of one 100k map, timestamps in both processes).
            greenhub::yield_now();
        }
        collect.finish(sent)
    }

    /// Runs `f` on every item, in the workers, and yields the results as they complete. Items
    /// are taken from `items` only as workers have room for them (lazily: an endless iterator
    /// works): at most `workers * max(concurrency + prefetch, chunksize)` beyond the results
    /// yielded.
    #[track_caller]
    pub fn imap_unordered<'a, It>(
        &'a self,
        items: It,
    ) -> impl Iterator<Item = Result<O, Error>> + 'a
    where
        It: IntoIterator<Item = I>,
        It::IntoIter: 'a,
    {
        let (sender, receiver) = channel();
        let items = items.into_iter();
        Unordered {
            shared: &self.shared,
            chunk: self.shared.chunk_len(items.size_hint()),
            items,
            held: VecDeque::new(),
            sink: Sink::Channel(sender),
            receiver,
            ready: VecDeque::new(),
            out: 0,
        }
    }

    /// How many workers the pool keeps running.
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// Finishes what is in flight, ends the workers (they see the end of their task pipe and
    /// exit) and reaps them.
    ///
    /// # Errors
    /// [`Error::WorkerDied`] if a worker did not exit cleanly (0); [`Error::Io`] if reaping
    /// failed.
    #[track_caller]
    pub fn close(self) -> Result<(), Error> {
        self.shared.usable_here()?;
        let links: Vec<_> = self.shared.links.borrow().clone();
        links.iter().for_each(|link| link.retire());
        let mut outcome = Ok(());
        for link in &links {
            link.finished.wait();
            let status = link.process.join()?;
            if !status.success() {
                outcome = outcome.and(Err(Error::WorkerDied(status)));
            }
        }
        self.shared.closed.set(true);
        outcome
    }
}

impl<I, O> Drop for Pool<I, O> {
    /// Terminates the workers (SIGTERM); the hub reaps them. Nothing to do after `close`, nor
    /// in a hub the pool does not belong to (its workers are not there).
    fn drop(&mut self) {
        if self.shared.closed.replace(true) || self.shared.usable_here().is_err() {
            return;
        }
        for link in self.shared.links.borrow().iter() {
            let _ = link.process.terminate();
            link.tasks.close();
        }
    }
}

impl<I, O> fmt::Debug for Pool<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.shared.links.borrow())
            .field("concurrency", &self.shared.config.concurrency)
            .field("prefetch", &self.shared.config.prefetch)
            .field("chunksize", &self.shared.config.chunksize)
            .field("max_tasks_per_worker", &self.shared.config.max_tasks)
            .finish()
    }
}

/// [`Pool::imap_unordered`]'s iterator.
struct Unordered<'a, I, O, It> {
    shared: &'a Rc<Shared<I, O>>,
    items: It,
    /// Items per chunk.
    chunk: usize,
    /// Items taken from `items` that found no room yet.
    held: VecDeque<I>,
    sink: Sink<O>,
    receiver: Receiver<Batch<O>>,
    /// Results arrived and not yet yielded.
    ready: VecDeque<Result<O, Error>>,
    /// Items handed over whose results have not been yielded (`ready` included).
    out: usize,
}

impl<I, O, It> Iterator for Unordered<'_, I, O, It>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    It: Iterator<Item = I>,
{
    type Item = Result<O, Error>;

    fn next(&mut self) -> Option<Result<O, Error>> {
        // Hand over what there is room for now; wait for room only when nothing is out. Results
        // not yet yielded count as out, and items are pulled only while out and held fit in one
        // pool-wide window (a worker's room, or one chunk if that is more, per worker), so the
        // items pulled stay within that window of the results yielded.
        let config = &self.shared.config;
        let window = config.workers * (config.concurrency + config.prefetch).max(self.chunk);
        while self.out < window {
            if self.held.is_empty() {
                let room = self.chunk.min(window - self.out);
                self.held.extend(self.items.by_ref().take(room));
                if self.held.is_empty() {
                    break;
                }
            }
            match self.shared.submit(&mut self.held, 0, &self.sink, self.out == 0) {
                Ok(0) => break,
                Ok(taken) => self.out += taken,
                Err(err) => return Some(Err(err)),
            }
        }
        if self.ready.is_empty() && self.out > 0 {
            let batch =
                self.receiver.recv().expect("a pool item's waiter was dropped without an answer");
            self.ready.extend(batch.into_iter().map(|(_, result)| result));
        }
        let result = self.ready.pop_front()?;
        self.out -= 1;
        Some(result)
    }
}
