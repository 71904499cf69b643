//! Where a [`map`](super::Pool::map)'s results go: one slot per item, in input order, filled by
//! the reply readers as they decode each reply record.
//!
//! A `map` of tiny items used to get its results as batches on a channel, one `(index, result)`
//! entry of 48 bytes per item, moved into a batch, through the channel, then into the slots: the
//! reply reader now writes each decoded result straight into its slot, and the caller wakes once
//! per reply frame. Guarantee: the first failure to arrive is kept (later ones are dropped), and
//! [`Collect::finish`] returns every result in input order or that failure.

use std::cell::{Cell, RefCell};

use greenhub::sync::Event;

use crate::Error;

/// The results of one `map` call, shared by the caller and the reply readers.
pub(super) struct Collect<O> {
    /// One per item taken from the caller's iterator so far; `Some` once its result arrived.
    slots: RefCell<Vec<Option<O>>>,
    /// Items answered (a result or a failure).
    arrived: Cell<usize>,
    /// The first failure to arrive.
    failure: Cell<Option<Error>>,
    /// Set when outcomes arrive: the caller waiting in [`Collect::finish`] looks again.
    wake: Event,
}

impl<O> Collect<O> {
    pub(super) fn new(capacity: usize) -> Collect<O> {
        Collect {
            slots: RefCell::new(Vec::with_capacity(capacity)),
            arrived: Cell::new(0),
            failure: Cell::new(None),
            wake: Event::new(),
        }
    }

    /// Adds `n` empty slots, for items about to be handed over.
    pub(super) fn grow(&self, n: usize) {
        let mut slots = self.slots.borrow_mut();
        let len = slots.len();
        slots.resize_with(len + n, || None);
    }

    /// The first failure so far, if any (taken: the call ends with it).
    pub(super) fn failed(&self) -> Result<(), Error> {
        match self.failure.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Runs `fill` with the slots, to place the outcomes of one reply frame with
    /// [`Collect::put`]; then counts them (`fill` returns how many) and wakes the caller.
    pub(super) fn deliver(&self, fill: impl FnOnce(&mut Slots<'_, O>) -> usize) {
        let mut slots = Slots { slots: &mut self.slots.borrow_mut(), failure: &self.failure };
        let placed = fill(&mut slots);
        self.arrived.set(self.arrived.get() + placed);
        self.wake.set();
    }

    /// Waits until `total` items have arrived or one failed; then the results in input order,
    /// or the first failure.
    pub(super) fn finish(&self, total: usize) -> Result<Vec<O>, Error> {
        loop {
            self.failed()?;
            if self.arrived.get() >= total {
                break;
            }
            // Nothing suspends between the look above and this wait: no wake-up is lost.
            self.wake.clear();
            self.wake.wait();
        }
        let slots = self.slots.take();
        Ok(slots.into_iter().map(|slot| slot.expect("every item has arrived")).collect())
    }
}

/// The slots of a [`Collect`], borrowed while one reply frame is placed.
pub(super) struct Slots<'a, O> {
    slots: &'a mut Vec<Option<O>>,
    failure: &'a Cell<Option<Error>>,
}

impl<O> Slots<'_, O> {
    /// Places item `index`'s outcome: its result in its slot, or its failure if it is the first.
    /// An index past the slots (which the pool's own bookkeeping never produces) is ignored.
    pub(super) fn put(&mut self, index: usize, outcome: Result<O, Error>) {
        match outcome {
            Ok(value) => {
                if let Some(slot) = self.slots.get_mut(index) {
                    *slot = Some(value);
                }
            }
            Err(err) => {
                let first = self.failure.take().unwrap_or(err);
                self.failure.set(Some(first));
            }
        }
    }
}
