//! The parent's side of one pool worker: its process, its corked task pipe, the table of its
//! items in flight, and the coroutine that reads its replies.
//!
//! Who touches what: the dispatcher (in the caller's coroutine) adds a chunk to `in_flight` right
//! after pushing its tasks; the reply reader marks items answered as their replies come, removes
//! a chunk once all its items are, and once the reply pipe ends (the worker exited or died) fails
//! every item left with `WorkerDied`. Nothing suspends between a check of this state and its
//! update.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::rc::Rc;

use greenhub::sync::{Event, Sender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::outgoing::Outgoing;
use super::wire::{Replies, ReplyCodec};
use crate::{Error, Process, Reader};

/// Results as they travel to a caller: (the caller's index for the item, its outcome), one
/// batch per reply frame, so a chunk of tiny items costs the caller one wake-up.
pub(super) type Batch<O> = Vec<(usize, Result<O, Error>)>;

/// Where the results of one chunk go: the caller's channel; item `k` of the chunk has the
/// caller's index `first + k`.
pub(super) struct Waiter<O> {
    pub(super) first: usize,
    /// One flag per item of the chunk: whether its reply has come.
    pub(super) answered: Vec<bool>,
    /// Items not yet answered.
    pub(super) left: usize,
    pub(super) results: Sender<Batch<O>>,
}

impl<O> Waiter<O> {
    pub(super) fn new(first: usize, len: usize, results: Sender<Batch<O>>) -> Waiter<O> {
        Waiter { first, answered: vec![false; len], left: len, results }
    }

    /// Takes `offset`'s outcome into `batch` unless it was answered already or is out of range
    /// (a confused worker cannot answer an item twice).
    fn answer(&mut self, offset: usize, outcome: Result<O, Error>, batch: &mut Batch<O>) {
        if let Some(answered @ false) = self.answered.get_mut(offset) {
            *answered = true;
            self.left -= 1;
            batch.push((self.first + offset, outcome));
        }
    }
}

/// Chunk ids are handed out in sequence and never reused, so they hash as themselves: the table
/// costs no SipHash round per chunk.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id;
    }
}

/// The chunks in flight at one worker, by id.
pub(super) type InFlight<O> = HashMap<u64, Waiter<O>, BuildHasherDefault<IdHasher>>;

/// The worker's replies, as the parent reads them.
pub(super) type RepliesIn<O> = Reader<Replies<O>, ReplyCodec<O>>;

/// One worker, seen from the parent.
pub(super) struct Link<O> {
    pub(super) process: Process,
    pub(super) tasks: Rc<Outgoing>,
    pub(super) in_flight: RefCell<InFlight<O>>,
    /// Items handed to it and not yet answered (the chunks' items in `in_flight`).
    pub(super) items_in_flight: Cell<usize>,
    /// Items ever handed to it (for `max_tasks_per_worker`).
    pub(super) assigned: Cell<usize>,
    /// Takes no more items: its task pipe is closed, it finishes and exits.
    pub(super) retiring: Cell<bool>,
    /// Its reply pipe has ended: it has exited or died (or is about to).
    pub(super) gone: Cell<bool>,
    /// Set once it is gone, reaped, and its items are failed.
    pub(super) finished: Event,
}

impl<O> Link<O>
where
    O: Serialize + DeserializeOwned + 'static,
{
    pub(super) fn new(process: Process, tasks: Rc<Outgoing>) -> Rc<Link<O>> {
        Rc::new(Link {
            process,
            tasks,
            in_flight: RefCell::default(),
            items_in_flight: Cell::new(0),
            assigned: Cell::new(0),
            retiring: Cell::new(false),
            gone: Cell::new(false),
            finished: Event::new(),
        })
    }

    /// Whether it may take another chunk now: fewer than `window` items in flight.
    pub(super) fn has_room(&self, window: usize) -> bool {
        !self.retiring.get()
            && !self.gone.get()
            && !self.tasks.is_broken()
            && self.items_in_flight.get() < window
    }

    /// Records chunk `id`, just pushed, as in flight.
    pub(super) fn track(&self, id: u64, waiter: Waiter<O>) {
        self.items_in_flight.set(self.items_in_flight.get() + waiter.left);
        self.assigned.set(self.assigned.get() + waiter.left);
        self.in_flight.borrow_mut().insert(id, waiter);
    }

    /// Hands the outcomes of one reply frame to the chunk's caller, in one batch.
    fn deliver(&self, replies: Replies<O>) {
        let mut in_flight = self.in_flight.borrow_mut();
        let Some(waiter) = in_flight.get_mut(&replies.chunk) else {
            return;
        };
        let mut batch = Vec::with_capacity(replies.outcomes.len());
        for (offset, outcome) in replies.outcomes {
            waiter.answer(offset, outcome.map_err(Error::from), &mut batch);
        }
        self.items_in_flight.set(self.items_in_flight.get() - batch.len());
        let results = if waiter.left == 0 {
            in_flight.remove(&replies.chunk).map(|w| w.results)
        } else {
            Some(waiter.results.clone())
        };
        drop(in_flight);
        if let Some(results) = results
            && !batch.is_empty()
        {
            // A caller that gave up (cancelled, timed out) dropped its receiver.
            let _ = results.send(batch);
        }
    }

    /// Takes no more items: the task pipe closes after what is queued, and the worker exits
    /// once it has answered them.
    pub(super) fn retire(&self) {
        self.retiring.set(true);
        self.tasks.close();
    }

    /// The reply reader (a coroutine of its own): delivers each reply to its caller and calls
    /// `changed` (a slot is free); when the pipe ends, fails what is left with the worker's
    /// exit status, and calls `changed` once more.
    pub(super) fn read_replies(&self, replies: RepliesIn<O>, changed: impl Fn()) {
        loop {
            match replies.get() {
                Ok(batch) => {
                    self.deliver(batch);
                    changed();
                }
                Err(Error::Codec(_)) => {
                    // A reply without an id: the stream cannot be trusted any more.
                    let _ = self.process.kill();
                    break;
                }
                Err(_) => break, // Eof, Truncated, Io: the worker has exited or died
            }
        }
        self.gone.set(true);
        drop(replies);
        let status = self.process.join();
        for (_, mut waiter) in self.in_flight.take() {
            let mut batch = Vec::with_capacity(waiter.left);
            for offset in 0..waiter.answered.len() {
                let died = match &status {
                    Ok(status) => Error::WorkerDied(*status),
                    Err(err) => Error::Io(io::Error::other(err.to_string())),
                };
                waiter.answer(offset, Err(died), &mut batch);
            }
            let _ = waiter.results.send(batch);
        }
        self.items_in_flight.set(0);
        self.finished.set();
        changed();
    }
}

impl<O> fmt::Debug for Link<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("process", &self.process)
            .field("in_flight", &self.items_in_flight.get())
            .field("retiring", &self.retiring.get())
            .finish()
    }
}
