//! The parent's side of one pool worker: its process, its corked task pipe, the table of its
//! items in flight, and the coroutine that reads its replies.
//!
//! Who touches what: the dispatcher (in the caller's coroutine) adds to `in_flight` right after
//! pushing a task; the reply reader removes an entry when its reply comes and, once the reply
//! pipe ends (the worker exited or died), fails every entry left with `WorkerDied`. Nothing
//! suspends between a check of this state and its update.

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
use super::wire::{Reply, ReplyCodec};
use crate::{Error, Process, Reader};

/// Where a result goes: the caller's channel, with the caller's index for the item.
pub(super) struct Waiter<O> {
    pub(super) index: usize,
    pub(super) results: Sender<(usize, Result<O, Error>)>,
}

/// Item ids are handed out in sequence and never reused, so they hash as themselves: the table
/// costs no SipHash round per item.
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

/// The items in flight at one worker, by id.
pub(super) type InFlight<O> = HashMap<u64, Waiter<O>, BuildHasherDefault<IdHasher>>;

/// The worker's replies, as the parent reads them.
pub(super) type Replies<O> = Reader<Reply<O>, ReplyCodec<O>>;

/// One worker, seen from the parent.
pub(super) struct Link<O> {
    pub(super) process: Process,
    pub(super) tasks: Rc<Outgoing>,
    pub(super) in_flight: RefCell<InFlight<O>>,
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
            assigned: Cell::new(0),
            retiring: Cell::new(false),
            gone: Cell::new(false),
            finished: Event::new(),
        })
    }

    /// Whether it may take another item now, with at most `window` in flight.
    pub(super) fn has_room(&self, window: usize) -> bool {
        !self.retiring.get()
            && !self.gone.get()
            && !self.tasks.is_broken()
            && self.in_flight.borrow().len() < window
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
    pub(super) fn read_replies(&self, replies: Replies<O>, changed: impl Fn()) {
        loop {
            match replies.get() {
                Ok(Reply { id, outcome }) => {
                    if let Some(waiter) = self.in_flight.borrow_mut().remove(&id) {
                        // A caller that gave up (cancelled, timed out) dropped its receiver.
                        let _ = waiter.results.send((waiter.index, outcome.map_err(Error::from)));
                    }
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
        for (_, waiter) in self.in_flight.take() {
            let died = match &status {
                Ok(status) => Error::WorkerDied(*status),
                Err(err) => Error::Io(io::Error::other(err.to_string())),
            };
            let _ = waiter.results.send((waiter.index, Err(died)));
        }
        self.finished.set();
        changed();
    }
}

impl<O> fmt::Debug for Link<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("process", &self.process)
            .field("in_flight", &self.in_flight.borrow().len())
            .field("retiring", &self.retiring.get())
            .finish()
    }
}
