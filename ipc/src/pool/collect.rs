//! Where a [`map`](super::Pool::map)'s results go: straight into the vector the call returns,
//! in input order, as the reply readers decode each reply record.
//!
//! Results mostly arrive in order: a worker answers its chunks in order, item after item, and
//! the chunks go out in order. So a result whose index is the next one missing is pushed onto
//! the output at once; the answers of a reply frame that arrives early (a later chunk answered
//! by the other worker first) are kept as one *run* of consecutive results until the results
//! before it have come, and then moved onto the output whole; the chunk's next frame goes on
//! with the same run. The reply reader pushes a frame's results onto the end of the output or
//! of its run ([`Placing::tail_at`]) in one loop. The output is written once,
//! 8 bytes a `u64`, where a vector of `Option` slots (16 bytes each, every one written twice
//! and then copied into the output) cost a fifth of the parent's time, half of it page faults
//! (perf, 100k items of `x + 1` on 2 workers). Guarantee: the first failure to arrive is kept
//! (later ones are dropped), and [`Collect::finish`] returns every result in input order or
//! that failure.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::mem::size_of;

use greenhub::sync::Event;

use crate::Error;

/// An output this large (64 KiB) is faulted in at once; a smaller one is not worth the call.
const POPULATE_FROM: usize = 64 << 10;

/// The results of one `map` call, shared by the caller and the reply readers.
pub(super) struct Collect<O> {
    results: RefCell<InOrder<O>>,
    /// The first failure to arrive.
    failure: Cell<Option<Error>>,
    /// Set when outcomes arrive: the caller waiting in [`Collect::finish`] looks again.
    wake: Event,
}

/// The results so far: those of items `0..done.len()` in order, and the runs that arrived ahead
/// of a gap, by the index of their first item.
struct InOrder<O> {
    done: Vec<O>,
    ahead: BTreeMap<usize, Vec<O>>,
    /// Results in `ahead`.
    ahead_len: usize,
    /// The emptied buffer of the last run moved onto `done`, for the next run: a run is about
    /// a reply frame's worth of results, so it grows once rather than from nothing each time.
    spare: Vec<O>,
}

impl<O> Collect<O> {
    /// For a call of about `capacity` items.
    pub(super) fn new(capacity: usize) -> Collect<O> {
        let done = Vec::with_capacity(capacity);
        Collect {
            results: RefCell::new(InOrder {
                done,
                ahead: BTreeMap::new(),
                ahead_len: 0,
                spare: Vec::new(),
            }),
            failure: Cell::new(None),
            wake: Event::new(),
        }
    }

    /// Faults in the output's pages not yet written, if it is large: with one call, not one
    /// fault per page as results arrive (a fresh 800 KB output of 100k `u64`s is 200 faults,
    /// each costly in a virtual machine). A single 100k map of tiny items: 2 to 9% more items/s
    /// (four A/Bs, medians of 16 alternated runs each). [`Pool::map`](super::Pool::map) calls
    /// it once every worker has its first chunk.
    pub(super) fn populate(&self) {
        let mut results = self.results.borrow_mut();
        if results.done.capacity() * size_of::<O>() >= POPULATE_FROM {
            crate::sys::populate_for_writing(results.done.spare_capacity_mut());
        }
    }

    /// The first failure so far, if any (taken: the call ends with it).
    pub(super) fn failed(&self) -> Result<(), Error> {
        match self.failure.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Runs `fill` to place the outcomes of one reply frame with [`Placing::put`], then wakes the
    /// caller.
    pub(super) fn deliver(&self, fill: impl FnOnce(&mut Placing<'_, O>)) {
        let mut results = self.results.borrow_mut();
        let mut placing = Placing { results: &mut results, run: None, failure: &self.failure };
        fill(&mut placing);
        placing.end_run();
        // Results pushed in order may have reached a run that arrived ahead of them.
        results.close_gaps();
        self.wake.set();
    }

    /// Waits until `total` items have arrived or one failed; then the results in input order,
    /// or the first failure.
    pub(super) fn finish(&self, total: usize) -> Result<Vec<O>, Error> {
        loop {
            self.failed()?;
            let results = self.results.borrow();
            if results.done.len() + results.ahead_len >= total {
                break;
            }
            drop(results);
            // Nothing suspends between the look above and this wait: no wake-up is lost.
            self.wake.clear();
            self.wake.wait();
        }
        let results = self.results.replace(InOrder::new());
        assert!(results.ahead.is_empty(), "every item has arrived, so no run waits for a gap");
        Ok(results.done)
    }
}

impl<O> InOrder<O> {
    fn new() -> InOrder<O> {
        InOrder { done: Vec::new(), ahead: BTreeMap::new(), ahead_len: 0, spare: Vec::new() }
    }

    /// Moves the runs that now follow `done` onto it.
    fn close_gaps(&mut self) {
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.done.len() {
                break;
            }
            let mut run = entry.remove();
            self.ahead_len -= run.len();
            self.done.append(&mut run);
            if run.capacity() > self.spare.capacity() {
                self.spare = run;
            }
        }
    }
}

/// The results of a [`Collect`], borrowed while one reply frame is placed.
pub(super) struct Placing<'a, O> {
    results: &'a mut InOrder<O>,
    /// The run being gathered ahead of a gap: (the index of its first item, its results).
    run: Option<(usize, Vec<O>)>,
    failure: &'a Cell<Option<Error>>,
}

impl<O> Placing<'_, O> {
    /// Places item `index`'s result. Each index comes at most once (the reply reader drops a
    /// second answer).
    #[inline(always)]
    pub(super) fn put_value(&mut self, index: usize, value: O) {
        if self.run.is_none() && index == self.results.done.len() {
            self.results.done.push(value);
            return;
        }
        self.tail_at(index).push(value);
    }

    /// The results that item `index`'s goes after, for consecutive results from `index` on to
    /// be pushed onto, placed as [`put_value`](Self::put_value) would place them: the output,
    /// if every item before `index` has its result there; else the run being gathered, if it
    /// ends just before `index`; else a run filed ahead that does (the previous reply frame of
    /// the same chunk, taken back to go on), or a new run.
    #[inline(always)]
    pub(super) fn tail_at(&mut self, index: usize) -> &mut Vec<O> {
        let continues = matches!(&self.run, Some((first, run)) if first + run.len() == index);
        if !continues {
            if self.run.is_none() && index == self.results.done.len() {
                return &mut self.results.done;
            }
            self.start_run_at(index);
        }
        &mut self.run.as_mut().expect("a run is being gathered").1
    }

    /// Files the run being gathered, then gathers the run filed ahead that ends just before
    /// `index`, or a new one from `index`.
    fn start_run_at(&mut self, index: usize) {
        self.end_run();
        let ahead = &mut self.results.ahead;
        let before = ahead.range(..index).next_back().map(|(&first, run)| (first, run.len()));
        let run = match before {
            Some((first, len)) if first + len == index => {
                let run = ahead.remove(&first).expect("the run just found");
                self.results.ahead_len -= run.len();
                (first, run)
            }
            _ => (index, std::mem::take(&mut self.results.spare)),
        };
        self.run = Some(run);
    }

    /// Keeps `failure` if it is the first.
    pub(super) fn put_failure(&mut self, failure: Error) {
        let first = self.failure.take().unwrap_or(failure);
        self.failure.set(Some(first));
    }

    /// Files the run being gathered (if any) ahead of its gap. An empty one ([`tail_at`]
    /// starts one before its first result is decoded) gives its buffer back instead: filed, it
    /// would wait for a gap that results pushed in order could pass.
    ///
    /// [`tail_at`]: Self::tail_at
    fn end_run(&mut self) {
        match self.run.take() {
            Some((_, run)) if run.is_empty() => self.results.spare = run,
            Some((first, run)) => {
                self.results.ahead_len += run.len();
                self.results.ahead.insert(first, run);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers one reply frame: consecutive results from `first` (what a worker sends).
    fn frame(collect: &Collect<u64>, first: usize, values: &[u64]) {
        collect.deliver(|placing| {
            for (k, &v) in values.iter().enumerate() {
                placing.put_value(first + k, v);
            }
        });
    }

    fn values(range: std::ops::Range<u64>) -> Vec<u64> {
        range.map(|i| i * 10).collect()
    }

    #[test]
    fn results_in_order_go_straight_to_the_output() {
        greenhub::run(|| {
            let collect = Collect::new(6);
            frame(&collect, 0, &values(0..3));
            frame(&collect, 3, &values(3..6));
            assert!(collect.results.borrow().ahead.is_empty());
            assert_eq!(collect.finish(6).unwrap(), values(0..6));
        });
    }

    #[test]
    fn frames_that_arrive_early_wait_for_the_gap_before_them() {
        greenhub::run(|| {
            let collect = Collect::new(0);
            frame(&collect, 6, &values(6..9));
            frame(&collect, 3, &values(3..6));
            assert_eq!(collect.results.borrow().ahead_len, 6);
            frame(&collect, 0, &values(0..3));
            let results = collect.results.borrow();
            assert!(results.ahead.is_empty() && results.ahead_len == 0);
            drop(results);
            assert_eq!(collect.finish(9).unwrap(), values(0..9));
        });
    }

    #[test]
    fn a_second_run_ahead_reuses_the_first_ones_buffer_empty() {
        greenhub::run(|| {
            let collect = Collect::new(12);
            frame(&collect, 3, &values(3..6));
            frame(&collect, 0, &values(0..3));
            assert!(collect.results.borrow().spare.capacity() >= 3);
            frame(&collect, 9, &values(9..12));
            assert_eq!(collect.results.borrow().spare.capacity(), 0, "the run took it");
            frame(&collect, 6, &values(6..9));
            assert_eq!(collect.finish(12).unwrap(), values(0..12));
        });
    }

    #[test]
    fn the_next_frame_of_a_run_filed_ahead_joins_it_and_an_empty_run_is_not_filed() {
        greenhub::run(|| {
            let collect = Collect::new(9);
            frame(&collect, 3, &values(3..6));
            frame(&collect, 6, &values(6..9));
            assert_eq!(collect.results.borrow().ahead.len(), 1, "one run, 3..9");
            // A place asked for and left empty (the frame's first record was a failure).
            collect.deliver(|placing| {
                let _ = placing.tail_at(1);
            });
            assert_eq!(collect.results.borrow().ahead.len(), 1);
            frame(&collect, 0, &values(0..3));
            assert_eq!(collect.finish(9).unwrap(), values(0..9));
        });
    }

    #[test]
    fn single_items_in_any_order_come_out_in_input_order() {
        greenhub::run(|| {
            let collect = Collect::new(8);
            for i in [5, 1, 7, 0, 6, 2, 4, 3] {
                frame(&collect, i, &[i as u64 * 10]);
            }
            assert_eq!(collect.finish(8).unwrap(), values(0..8));
        });
    }

    #[test]
    fn a_frame_with_a_hole_files_each_part_where_it_belongs() {
        greenhub::run(|| {
            let collect = Collect::new(6);
            // Items 2, 4 and 5 in one frame, 3 answered later (as a worker running items
            // concurrently answers them).
            collect.deliver(|placing| {
                placing.put_value(2, 20);
                placing.put_value(4, 40);
                placing.put_value(5, 50);
            });
            frame(&collect, 3, &[30]);
            frame(&collect, 0, &[0, 10]);
            assert_eq!(collect.finish(6).unwrap(), values(0..6));
        });
    }

    #[test]
    fn the_first_failure_is_kept() {
        greenhub::run(|| {
            let collect = Collect::new(3);
            frame(&collect, 2, &[20]);
            collect.deliver(|placing| {
                placing.put_failure(Error::Panicked("first".into()));
                placing.put_failure(Error::Panicked("second".into()));
            });
            assert!(matches!(collect.finish(3), Err(Error::Panicked(m)) if m == "first"));
        });
    }
}
