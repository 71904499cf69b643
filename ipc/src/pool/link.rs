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
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenhub::sync::{Event, Sender};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::collect::{Collect, Placing};
use super::outgoing::Outgoing;
use super::wire;
use crate::{Error, Process, Raw, Reader};

/// Results as they travel to an `apply` or `imap_unordered` caller: (the caller's index for the
/// item, its outcome), one batch per reply frame, so a chunk of tiny items costs the caller one
/// wake-up.
pub(super) type Batch<O> = Vec<(usize, Result<O, Error>)>;

/// Where the results of a chunk go.
pub(super) enum Sink<O> {
    /// A caller's channel (`apply`, `imap_unordered`), a batch per reply frame.
    Channel(Sender<Batch<O>>),
    /// A `map`'s output, each result placed as it is decoded.
    Map(Rc<Collect<O>>),
}

impl<O> Clone for Sink<O> {
    fn clone(&self) -> Self {
        match self {
            Sink::Channel(sender) => Sink::Channel(sender.clone()),
            Sink::Map(collect) => Sink::Map(Rc::clone(collect)),
        }
    }
}

/// Where the results of one chunk go: item `k` of the chunk has the caller's index `first + k`.
pub(super) struct Waiter<O> {
    pub(super) first: usize,
    /// One flag per item of the chunk: whether its reply has come.
    pub(super) answered: Vec<bool>,
    /// Items not yet answered.
    pub(super) left: usize,
    pub(super) sink: Sink<O>,
}

impl<O> Waiter<O> {
    pub(super) fn new(first: usize, len: usize, sink: Sink<O>) -> Waiter<O> {
        Waiter { first, answered: vec![false; len], left: len, sink }
    }
}

/// Hands the outcomes `fill` gives for a chunk to its sink: a `map`'s output directly, a channel
/// in one batch. Returns what stopped `fill` early (a reply whose framing does not read), after
/// delivering the outcomes before it.
fn deliver_to<O>(
    waiter: &mut Waiter<O>,
    fill: impl FnOnce(&mut Answers<'_, '_, O>) -> Result<(), Error>,
) -> Result<(), Error> {
    let Waiter { first, answered, left, sink } = waiter;
    match sink {
        Sink::Map(collect) => {
            let mut stopped = Ok(());
            collect.deliver(|placing| {
                let mut answers = Answers { first: *first, answered, left, to: To::Map(placing) };
                stopped = fill(&mut answers);
            });
            stopped
        }
        Sink::Channel(results) => {
            let mut batch = Vec::new();
            let mut answers = Answers { first: *first, answered, left, to: To::Batch(&mut batch) };
            let stopped = fill(&mut answers);
            if !batch.is_empty() {
                // A caller that gave up (cancelled, timed out) dropped its receiver.
                let _ = results.send(batch);
            }
            stopped
        }
    }
}

/// Where [`Answers::put`] puts an outcome.
enum To<'a, 's, O> {
    Map(&'a mut Placing<'s, O>),
    Batch(&'a mut Batch<O>),
}

/// The outcomes of one reply frame for one chunk, checked against what is still unanswered.
pub(super) struct Answers<'a, 's, O> {
    first: usize,
    answered: &'a mut [bool],
    left: &'a mut usize,
    to: To<'a, 's, O>,
}

impl<O> Answers<'_, '_, O> {
    /// Takes the outcome of item `offset` of the chunk unless it was answered already or is out
    /// of range (a confused worker cannot answer an item twice).
    pub(super) fn put(&mut self, offset: usize, outcome: Result<O, Error>) {
        match outcome {
            Ok(value) => self.put_value(offset, value),
            Err(failure) => self.put_failure(offset, failure),
        }
    }

    /// [`put`](Self::put) of a result. Inlined into the decoding loop: as a call of its own it
    /// was a twelfth of the parent's time (perf, 100k tiny items).
    #[inline(always)]
    fn put_value(&mut self, offset: usize, value: O) {
        let Some(index) = self.answer(offset) else { return };
        match &mut self.to {
            To::Map(placing) => placing.put_value(index, value),
            To::Batch(batch) => batch.push((index, Ok(value))),
        }
    }

    /// [`put`](Self::put) of a failure.
    fn put_failure(&mut self, offset: usize, failure: Error) {
        let Some(index) = self.answer(offset) else { return };
        match &mut self.to {
            To::Map(placing) => placing.put_failure(failure),
            To::Batch(batch) => batch.push((index, Err(failure))),
        }
    }

    /// Places the results at the front of `rest` (a reply frame's outcomes, the first of them
    /// item `offset`'s) straight where a `map`'s output takes them ([`Placing::tail_at`]), and
    /// returns the offset and the outcomes left for the item-by-item path (a failure, and what
    /// follows it). A `map`'s frames go this way whole unless an item fails: a worker answers
    /// its chunk in order, in frames of consecutive items. It saves, per result, the answered
    /// flag's check and update, the count's update and the output's checks: once per frame.
    #[inline(always)]
    fn take_in_order<'r>(&mut self, offset: usize, rest: &'r [u8]) -> (usize, &'r [u8])
    where
        O: Serialize + DeserializeOwned + 'static,
    {
        let To::Map(placing) = &mut self.to else { return (offset, rest) };
        let Some(unanswered) = self.answered.get(offset..) else { return (offset, rest) };
        let tail = placing.tail_at(self.first + offset);
        let (taken, rest_after) = wire::take_values(rest, unanswered.len(), tail);
        let flags = &mut self.answered[offset..offset + taken];
        // Not `contains`, which stops at the first `true` and so goes byte by byte: an `or`
        // of them all is vectorized (an `any` loop was 7% of the reply reader's samples).
        if flags.iter().fold(false, |seen, &flag| seen | flag) {
            // A confused worker answered some of them already: the item-by-item path drops
            // the second answers.
            tail.truncate(tail.len() - taken);
            return (offset, rest);
        }
        flags.fill(true);
        *self.left -= taken;
        (offset + taken, rest_after)
    }

    /// Marks item `offset` answered: the caller's index for it, or `None` if it was answered
    /// already or is out of range.
    #[inline(always)]
    fn answer(&mut self, offset: usize) -> Option<usize> {
        let flag @ false = self.answered.get_mut(offset)? else {
            return None;
        };
        *flag = true;
        *self.left -= 1;
        Some(self.first + offset)
    }
}

/// The outcomes of a reply frame, item after item from its first offset.
struct Consecutive<'x, 'a, 's, O> {
    answers: &'x mut Answers<'a, 's, O>,
    /// The next item's offset in the chunk (past `usize` it stays at `usize::MAX`, which `put`
    /// refuses).
    offset: usize,
}

impl<O> wire::Outcomes<O> for Consecutive<'_, '_, '_, O> {
    #[inline(always)]
    fn value(&mut self, value: O) {
        self.answers.put_value(self.offset, value);
        self.offset = self.offset.saturating_add(1);
    }

    fn failure(&mut self, failure: Error) {
        self.answers.put_failure(self.offset, failure);
        self.offset = self.offset.saturating_add(1);
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

/// The worker's replies, as the parent reads them: each frame's payload, parsed by
/// [`Link::deliver`] straight into the callers' results.
pub(super) type RepliesIn = Reader<Vec<u8>, Raw>;

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

    /// Hands the outcomes of one reply frame to the chunk's caller as they are decoded. A frame
    /// whose framing does not read is an error, after the outcomes before the fault.
    fn deliver(&self, payload: &[u8]) -> Result<(), Error> {
        let (chunk, first, rest) = wire::take_replies_head(payload)?;
        let mut in_flight = self.in_flight.borrow_mut();
        let Some(waiter) = in_flight.get_mut(&chunk) else {
            return Ok(());
        };
        let before = waiter.left;
        // An offset past the chunk (or past usize) is refused by `put`, item by item.
        let offset = usize::try_from(first).unwrap_or(usize::MAX);
        let outcome = deliver_to(waiter, |answers| {
            let (offset, rest) = answers.take_in_order(offset, rest);
            wire::each_outcome::<O>(rest, &mut Consecutive { answers, offset })
        });
        self.items_in_flight.set(self.items_in_flight.get() - (before - waiter.left));
        if waiter.left == 0 {
            in_flight.remove(&chunk);
        }
        outcome
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
    pub(super) fn read_replies(&self, replies: RepliesIn, changed: impl Fn()) {
        // Why the items left in flight fail, if not because the worker died: a result whose
        // `Deserialize` panicked here.
        let mut decode_panicked = None;
        // Eof, Truncated, Io end the loop: the worker has exited or died.
        while let Ok(payload) = replies.get() {
            // A panic in a result's `Deserialize` (the caller's code) must not end this
            // coroutine unnoticed: the link would stay open with nobody reading its replies,
            // and every later item sent to it would wait forever (a probe's did).
            let delivered = panic::catch_unwind(AssertUnwindSafe(|| self.deliver(&payload)));
            changed();
            match delivered {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {} // a reply whose framing does not read: the stream is not trusted
                Err(payload) => decode_panicked = Some(super::worker::panic_message(payload)),
            }
            let _ = self.process.kill(); // the items left in flight fail below; it is replaced
            break;
        }
        self.gone.set(true);
        drop(replies);
        // Its task pipe's flusher would otherwise wait for more tasks forever, holding the
        // pipe's write end: one fd and one coroutine per dead worker, until `run` ends. Closed,
        // it writes what is pending (to a reader that is gone: EPIPE) and closes the pipe.
        self.tasks.close();
        let status = self.process.join();
        for (_, mut waiter) in self.in_flight.take() {
            let _ = deliver_to(&mut waiter, |answers| {
                for offset in 0..answers.answered.len() {
                    let died = match (&decode_panicked, &status) {
                        (Some(message), _) => Error::Codec(format!(
                            "a result's Deserialize panicked in the parent ({message}); the \
                             worker's items in flight fail with it, and the worker is replaced"
                        )),
                        (None, Ok(status)) => Error::WorkerDied(*status),
                        (None, Err(err)) => Error::Io(io::Error::other(err.to_string())),
                    };
                    answers.put(offset, Err(died));
                }
                Ok(())
            });
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
