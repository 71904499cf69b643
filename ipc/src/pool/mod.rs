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
//! Each worker has two pipes: tasks (the item, tagged with an id) and replies (the id and the
//! outcome), framed and postcard-encoded like any greenhub-ipc pipe. An item is *in flight* at a
//! worker from the moment it is handed to it until its reply arrives: up to `concurrency`
//! running there and up to `prefetch` more queued behind them, so a burst of tiny items travels
//! many per system call (a corked writer sends what gathered in one hub turn in one `write`, on
//! both sides). A free slot goes to the worker with the fewest items in flight.
//!
//! The parent side of a worker is in `link.rs`, the child's in `worker.rs`, the wire format in
//! `wire.rs`, the batching writer in `outgoing.rs`.

mod link;
mod outgoing;
mod wire;
mod worker;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::rc::{Rc, Weak};

use greenhub::sync::{Event, Receiver, Sender, channel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::link::{Link, Replies, Waiter};
use self::outgoing::{Outgoing, WriteEnd};
use self::wire::{ReplyCodec, TaskCodec};
use crate::handle::Handle;
use crate::{Error, Process, ProcessBuilder, Reader, sys};

/// Items queued at a worker beyond those it runs, by default: enough that tiny items travel
/// hundreds per system call (measured: 100k tiny items on 2 workers at 6.7M items/s with 256,
/// 7.8M with 1,024), few enough that a worker's death fails a bounded number of items that had
/// not started.
const DEFAULT_PREFETCH: usize = 256;

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
    max_tasks: Option<usize>,
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
            max_tasks: None,
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

    /// How many items may wait at a worker beyond the `concurrency` it runs (default 256). More
    /// means fewer system calls per tiny item; 0 hands a worker an item only when one of its
    /// slots is free, so a worker that dies fails only the items it was running.
    pub fn prefetch(mut self, n: usize) -> PoolBuilder {
        self.prefetch = n;
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
    /// [`Error::Io`] if a pipe or a worker cannot be made (too many processes or open files);
    /// the workers already started are then terminated.
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
        let concurrency = self.concurrency;
        let launch = move |name: String| launch_worker(name, f.clone(), concurrency);
        let shared = Rc::new(Shared {
            links: RefCell::default(),
            changed: Event::new(),
            next_id: Cell::new(0),
            launched: Cell::new(0),
            closing: Cell::new(false),
            config: self,
            launch: Box::new(launch),
            _items: PhantomData,
        });
        let pool = Pool { shared };
        for _ in 0..pool.shared.config.workers {
            pool.shared.launch_one()?;
        }
        Ok(pool)
    }
}

/// Makes the pipes of one worker and forks it.
fn launch_worker<I, O, F>(
    name: String,
    f: F,
    concurrency: usize,
) -> Result<(Process, Rc<Outgoing>, Replies<O>), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O + 'static,
{
    let (task_read, task_write) = sys::pipe()?;
    let (reply_read, reply_write) = sys::pipe()?;
    let tasks_in = Reader::from_fd(task_read, TaskCodec::<I>::new())?;
    let tasks_out = Outgoing::new(Handle::new(task_write)?);
    let replies_in = Reader::from_fd(reply_read, ReplyCodec::<O>::new())?;
    let replies_out = WriteEnd(Handle::new(reply_write)?);
    let process = ProcessBuilder::new()
        .name(name)
        .daemon(true)
        .start((tasks_in, replies_out), move |(tasks, replies)| {
            worker::serve(tasks, replies, f, concurrency)
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
/// parent's `run` ends, and if the parent dies.
pub struct Pool<I, O> {
    shared: Rc<Shared<I, O>>,
}

/// A launcher of one worker: the process, its task pipe, its reply pipe.
type Launch<O> = Box<dyn Fn(String) -> Result<(Process, Rc<Outgoing>, Replies<O>), Error>>;

/// What the pool's handle and its reply readers share.
struct Shared<I, O> {
    /// The workers not yet finished (including retiring ones).
    links: RefCell<Vec<Rc<Link<O>>>>,
    /// Set when a slot frees or a worker ends: dispatchers waiting for room look again.
    changed: Event,
    next_id: Cell<u64>,
    /// Workers started so far (for their names).
    launched: Cell<u64>,
    closing: Cell<bool>,
    config: PoolBuilder,
    launch: Launch<O>,
    _items: PhantomData<fn(I)>,
}

impl<I, O> Shared<I, O>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
{
    /// Starts one more worker and its reply reader.
    fn launch_one(self: &Rc<Self>) -> Result<(), Error> {
        let number = self.launched.get() + 1;
        self.launched.set(number);
        let (process, tasks, replies) = (self.launch)(format!("{}-{number}", self.config.name))?;
        let link = Link::new(process, tasks);
        drop(link.tasks.start());
        self.links.borrow_mut().push(Rc::clone(&link));
        let shared = Rc::downgrade(self);
        drop(greenhub::spawn(move || {
            link.read_replies(replies, || notify(&shared));
            if let Some(shared) = shared.upgrade() {
                shared.links.borrow_mut().retain(|l| !Rc::ptr_eq(l, &link));
                shared.changed.set();
            }
        }));
        Ok(())
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

    /// Hands `item` to a worker; its result will come through `results` with `index`. Waits
    /// for room if `wait`, else returns `Ok(false)` when every worker is full.
    fn submit(
        self: &Rc<Self>,
        item: &I,
        index: usize,
        results: &Sender<(usize, Result<O, Error>)>,
        wait: bool,
    ) -> Result<bool, Error> {
        loop {
            self.top_up()?;
            if let Some(link) = self.pick() {
                let id = self.next_id.get();
                self.next_id.set(id + 1);
                link.tasks.push(|out| wire::append_task(out, id, item))?;
                let waiter = Waiter { index, results: results.clone() };
                link.in_flight.borrow_mut().insert(id, waiter);
                link.assigned.set(link.assigned.get() + 1);
                if Some(link.assigned.get()) == self.config.max_tasks {
                    link.retire();
                }
                return Ok(true);
            }
            if !wait {
                return Ok(false);
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
type Results<O> = (Sender<(usize, Result<O, Error>)>, Receiver<(usize, Result<O, Error>)>);

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
        self.shared.submit(&item, 0, &sender, true)?;
        drop(sender);
        match receiver.recv() {
            Ok((_, result)) => result,
            Err(_) => unreachable!("a pool item's waiter was dropped without an answer"),
        }
    }

    /// Runs `f` on every item, in the workers, and returns the results in input order.
    ///
    /// # Errors
    /// The first failure to arrive (as [`apply`](Self::apply)'s errors); the items still in
    /// flight then run to their end, and their results are dropped.
    #[track_caller]
    pub fn map(&self, items: impl IntoIterator<Item = I>) -> Result<Vec<O>, Error> {
        let (sender, receiver): Results<O> = channel();
        let mut slots: Vec<Option<O>> = Vec::new();
        let mut arrived = 0;
        for item in items {
            // Place what has arrived as we go: a failure ends the call at once.
            while let Ok((index, result)) = receiver.try_recv() {
                slots[index] = Some(result?);
                arrived += 1;
            }
            slots.push(None);
            self.shared.submit(&item, slots.len() - 1, &sender, true)?;
        }
        drop(sender);
        while arrived < slots.len() {
            let (index, result) =
                receiver.recv().expect("a pool item's waiter was dropped without an answer");
            slots[index] = Some(result?);
            arrived += 1;
        }
        Ok(slots.into_iter().map(|slot| slot.expect("every item has arrived")).collect())
    }

    /// Runs `f` on every item, in the workers, and yields the results as they complete. Items
    /// are taken from `items` only as workers have room for them (lazily: an endless iterator
    /// works).
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
        Unordered {
            shared: &self.shared,
            items: items.into_iter(),
            held: None,
            sender,
            receiver,
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
        self.shared.closing.set(true);
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
        outcome
    }
}

impl<I, O> Drop for Pool<I, O> {
    /// Terminates the workers (SIGTERM); the hub reaps them. Nothing to do after `close`.
    fn drop(&mut self) {
        if self.shared.closing.replace(true) {
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
            .field("max_tasks_per_worker", &self.shared.config.max_tasks)
            .finish()
    }
}

/// [`Pool::imap_unordered`]'s iterator.
struct Unordered<'a, I, O, It> {
    shared: &'a Rc<Shared<I, O>>,
    items: It,
    /// An item taken from `items` that found no room yet.
    held: Option<I>,
    sender: Sender<(usize, Result<O, Error>)>,
    receiver: Receiver<(usize, Result<O, Error>)>,
    /// Items handed over whose results have not been yielded.
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
        // not yet yielded count as out, so the items pulled stay within one pool-wide window of
        // the results yielded.
        let config = &self.shared.config;
        let window = config.workers * (config.concurrency + config.prefetch);
        while self.out < window
            && let Some(item) = self.held.take().or_else(|| self.items.next())
        {
            match self.shared.submit(&item, 0, &self.sender, self.out == 0) {
                Ok(true) => self.out += 1,
                Ok(false) => {
                    self.held = Some(item);
                    break;
                }
                Err(err) => return Some(Err(err)),
            }
        }
        if self.out == 0 {
            return None;
        }
        self.out -= 1;
        let (_, result) =
            self.receiver.recv().expect("a pool item's waiter was dropped without an answer");
        Some(result)
    }
}
