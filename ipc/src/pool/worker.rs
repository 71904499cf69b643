//! A pool worker: the child's side. It reads chunks of tasks from the task pipe, runs the pool's
//! function on each item, and pushes the replies, which leave batched.
//!
//! With `concurrency` 1 the worker runs a chunk's items one after another, decoding each just
//! before it runs, and answers them in reply frames of up to [`REPLY_FRAME`] bytes, each sent
//! as soon as it fills (the parent decodes one while the worker computes the next); integer
//! items with integer results (`raw.rs`) run so in batches, one `catch_unwind` per batch; with more, a
//! reader coroutine queues the items of each chunk it reads, that many runner coroutines take
//! them from the queue, and each item is answered in a frame of its own as soon as it is done,
//! so a slow item holds back no other's answer.
//!
//! Guarantee: every item read gets exactly one reply: the result, `Panicked` (the function
//! panicked; the runner goes on) or `Codec` (the item did not decode, or the result did not
//! encode). The worker ends when the parent closes the task pipe (`Eof`), after answering
//! everything it took.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use greenhub::sync::{Receiver, channel};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::outgoing::{Outgoing, WriteEnd};
use super::raw;
use super::wire::{self, Failure, Task, TaskCodec, Tasks};
use crate::{Error, Reader, frame};

/// A reply frame is sent once it holds this many bytes, even if its chunk is not done, and the
/// worker yields so that it leaves at once: the parent decodes these answers while the worker
/// computes the next ones, and big results do not pile up in the worker. (Measured, 100k items
/// of `x + 1` on 2 workers: 16 KiB frames, about 4,000 tiny answers, gave ~25% more items/s
/// than 1 MiB ones, which came only at the end of each chunk; 4 KiB frames were no better.)
const REPLY_FRAME: usize = 16 << 10;

/// The worker's tasks, as its runners share them.
pub(super) type TasksIn<I> = Reader<Tasks<I>, TaskCodec<I>>;

/// The child's root: runs the runners until the task pipe ends, then flushes the replies, none
/// of which is larger than `max` bytes (the pool's `max_message_size`).
pub(super) fn serve<I, O, F>(
    tasks: TasksIn<I>,
    replies: WriteEnd,
    f: F,
    concurrency: usize,
    max: u64,
) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O + 'static,
{
    let replies = Outgoing::new(replies.0);
    let flusher = replies.start();
    let outcome = if concurrency == 1 {
        run_chunks(&tasks, &replies, &f, max)
    } else {
        run_concurrently(tasks, &replies, f, concurrency, max)
    };
    replies.close();
    let _ = flusher.join();
    outcome
}

/// One item after another, a chunk answered in frames of up to [`REPLY_FRAME`] bytes.
fn run_chunks<I, O, F>(tasks: &TasksIn<I>, replies: &Outgoing, f: &F, max: u64) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O,
{
    // Answers gather here, not in `replies`' buffer: `f` may suspend, and the flusher runs then.
    let mut answers = Vec::new();
    loop {
        let tasks = match tasks.get() {
            Ok(tasks) => tasks,
            Err(Error::Eof) => return Ok(()),
            Err(err) => return Err(err),
        };
        let mut frame = Replying::begin(replies, &mut answers, tasks.chunk, max);
        match tasks.raw_items() {
            Some(items) if raw::width::<O>().is_some() => frame.run_raw(f, items)?,
            _ => {
                for (offset, item) in tasks.items().enumerate() {
                    // A frame whose framing breaks off ends the worker: the parent fails what
                    // it holds.
                    let outcome = run_one(f, item?);
                    frame.answer(offset, &outcome)?;
                    frame.send_if_full()?;
                }
            }
        }
        frame.finish()?;
        answers.clear();
    }
}

/// The reply frame being filled for one chunk, in the worker's `answers`.
struct Replying<'a> {
    replies: &'a Outgoing,
    answers: &'a mut Vec<u8>,
    chunk: u64,
    /// The pool's `max_message_size`.
    max: u64,
    /// Where the frame begins in `answers`.
    start: usize,
    /// The offset in the chunk of the first item the frame answers.
    first: usize,
    /// The offset of the next item to answer.
    next: usize,
}

impl<'a> Replying<'a> {
    fn begin(replies: &'a Outgoing, answers: &'a mut Vec<u8>, chunk: u64, max: u64) -> Self {
        let start = wire::begin_replies(answers, chunk, 0);
        Replying { replies, answers, chunk, max, start, first: 0, next: 0 }
    }

    /// Records item `offset`'s outcome (the next one): in this frame if it fits under the
    /// pool's limit, else in one of its own after sending this one, else as too large.
    fn answer<O>(&mut self, offset: usize, outcome: &Result<O, Failure>) -> Result<(), Error>
    where
        O: Serialize + DeserializeOwned + 'static,
    {
        let (chunk, max) = (self.chunk, self.max);
        self.next = offset + 1;
        let Err(len) = wire::append_outcome(self.answers, self.start, max, outcome) else {
            return Ok(());
        };
        if offset > self.first {
            // The answers before it are in the way: send them, then try it alone.
            self.send(offset)?;
        }
        let alone = len + wire::reply_head_len(chunk, offset) <= max;
        if !alone || wire::append_outcome(self.answers, self.start, max, outcome).is_err() {
            wire::append_too_large(self.answers, len, max);
        }
        Ok(())
    }

    /// Sends the frame once it holds [`REPLY_FRAME`] bytes, and lets the flusher write it now
    /// (as at the chunk's end, [`finish`](Self::finish)).
    fn send_if_full(&mut self) -> Result<(), Error> {
        if self.answers.len() >= REPLY_FRAME {
            self.send(self.next)?;
            greenhub::yield_now();
        }
        Ok(())
    }

    /// Sends the frame if it answers any item. Then lets the flusher write the answers now:
    /// the next chunk is often already buffered, so `tasks.get()` would not suspend, and the
    /// parent would wait for this chunk's answers until the worker ran out of chunks
    /// (measured: parent and workers then took turns, 1.0 CPU busy of 2).
    fn finish(&mut self) -> Result<(), Error> {
        if self.next > self.first {
            send_answers(self.replies, self.answers, self.start)?;
            greenhub::yield_now();
        }
        Ok(())
    }

    /// Sends the frame and begins the next, whose first item is `next`.
    fn send(&mut self, next: usize) -> Result<(), Error> {
        send_answers(self.replies, self.answers, self.start)?;
        self.start = wire::begin_replies(self.answers, self.chunk, next);
        self.first = next;
        Ok(())
    }

    /// Runs a chunk of raw items whose results travel raw too (`raw.rs`) in batches: each
    /// batch runs under one `catch_unwind` and writes its records into room grown once
    /// ([`run_raw_batch`]), and ends where the frame reaches [`REPLY_FRAME`] bytes or the
    /// pool's limit. One `catch_unwind` and one record appended per item kept the loop's
    /// state in memory (perf annotate: reloads of the item pointer and of the answers'
    /// length were the worker's hottest spots).
    fn run_raw<I, O, F>(&mut self, f: &F, mut items: &[u8]) -> Result<(), Error>
    where
        I: Serialize + DeserializeOwned + 'static,
        O: Serialize + DeserializeOwned + 'static,
        F: Fn(I) -> O,
    {
        let width = raw::width::<I>().expect("raw items");
        let record = 1 + raw::width::<O>().expect("raw results");
        while !items.is_empty() {
            let to_full = REPLY_FRAME.saturating_sub(self.answers.len()).div_ceil(record);
            let room = wire::records_room(self.answers, self.start, self.max, record);
            let batch = to_full.max(1).min(room).min(items.len() / width);
            if batch == 0 {
                // Not one more record fits under the limit: the item-by-item path sends the
                // frame, or records a result too large for any.
                let item = raw::read(&items[..width]).expect("a raw item of its width");
                items = &items[width..];
                self.answer(self.next, &run_one(f, Ok(item)))?;
                continue;
            }
            let (ran, panicked) = run_raw_batch(f, &items[..batch * width], self.answers);
            items = &items[ran * width..];
            self.next += ran;
            if let Some(failure) = panicked {
                items = &items[width..];
                self.answer::<O>(self.next, &Err(failure))?;
            }
            self.send_if_full()?;
        }
        Ok(())
    }
}

/// Runs the raw items `items` (whole ones), appending their results' records to `answers` (room
/// for all grown at once), under one `catch_unwind`: how many results it appended, and, if the
/// item after them panicked, its failure (its record is not appended; the items after it do
/// not run).
fn run_raw_batch<I, O, F>(f: &F, items: &[u8], answers: &mut Vec<u8>) -> (usize, Option<Failure>)
where
    I: 'static,
    O: 'static,
    F: Fn(I) -> O,
{
    let width = raw::width::<I>().expect("raw items");
    let record = 1 + raw::width::<O>().expect("raw results");
    let base = answers.len();
    answers.resize(base + items.len() / width * record, 0);
    let mut ran = 0;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        for (item, slot) in items.chunks_exact(width).zip(answers[base..].chunks_exact_mut(record))
        {
            let item = raw::read(item).expect("a raw item of its width");
            wire::put_raw_result(slot, &f(item));
            ran += 1;
        }
    }));
    answers.truncate(base + ran * record);
    let panicked = outcome.err().map(|payload| Failure::Panicked(panic_message(payload)));
    (ran, panicked)
}

/// Ends the reply frame that began at `start` in `answers` and queues it, leaving `answers`
/// empty.
fn send_answers(replies: &Outgoing, answers: &mut Vec<u8>, start: usize) -> Result<(), Error> {
    frame::finish_frame(answers, start)?;
    replies.push(|out| {
        out.extend_from_slice(answers);
        Ok(())
    })?;
    answers.clear();
    Ok(())
}

/// An item read from the task pipe and not yet run: (its chunk, its offset there, the item).
type Queued<I> = (u64, usize, Task<I>);

/// `concurrency` runners taking the items that one reader coroutine reads, chunk by chunk: a
/// runner waits for the next item, never for the next chunk while items of this one are queued.
fn run_concurrently<I, O, F>(
    tasks: TasksIn<I>,
    replies: &Rc<Outgoing>,
    f: F,
    concurrency: usize,
    max: u64,
) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O + 'static,
{
    let (queue, queued) = channel::<Queued<I>>();
    let reader = greenhub::spawn(move || {
        loop {
            match tasks.get() {
                Ok(tasks) => {
                    for (offset, item) in tasks.items().enumerate() {
                        // The runners hold the receiver until the queue ends.
                        let _ = queue.send((tasks.chunk, offset, item?));
                    }
                }
                Err(Error::Eof) => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    });
    let f = Rc::new(f);
    let runners: Vec<_> = (0..concurrency)
        .map(|_| {
            let (queued, replies, f) = (queued.clone(), Rc::clone(replies), Rc::clone(&f));
            greenhub::spawn(move || run_items(&queued, &replies, &*f, max))
        })
        .collect();
    drop(queued);
    let mut outcome = match reader.join() {
        Ok(read) => read,
        Err(_) => Err(Error::Closed),
    };
    for runner in runners {
        if let Ok(Err(err)) = runner.join() {
            outcome = outcome.and(Err(err));
        }
    }
    outcome
}

/// One runner: item after item until the reader has ended and the queue is empty.
fn run_items<I, O, F>(
    queued: &Receiver<Queued<I>>,
    replies: &Outgoing,
    f: &F,
    max: u64,
) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O,
{
    while let Ok((chunk, offset, item)) = queued.recv() {
        let outcome = run_one(f, item);
        replies.push(|out| {
            let start = wire::begin_replies(out, chunk, offset);
            if let Err(len) = wire::append_outcome(out, start, max, &outcome) {
                wire::append_too_large(out, len, max);
            }
            frame::finish_frame(out, start)
        })?;
    }
    Ok(())
}

/// Runs `f` on one item, containing a panic.
fn run_one<I, O, F: Fn(I) -> O>(f: &F, item: Task<I>) -> Result<O, Failure> {
    match item {
        Ok(item) => catch_unwind(AssertUnwindSafe(|| f(item)))
            .map_err(|payload| Failure::Panicked(panic_message(payload))),
        Err(message) => Err(Failure::Codec(message)),
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(super) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = match payload.downcast_ref::<&str>() {
        Some(text) => text.to_string(),
        None => match payload.downcast_ref::<String>() {
            Some(text) => text.clone(),
            None => "a panic whose payload is not a string".to_string(),
        },
    };
    // Dropping a payload runs its destructor, which could panic in turn: contain that too.
    let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
    text
}
