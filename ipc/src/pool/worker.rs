//! A pool worker: the child's side. `concurrency` runner coroutines take tasks from the task
//! pipe, run the pool's function on each, and push the replies, which leave batched.
//!
//! Guarantee: every task read gets exactly one reply: the result, `Panicked` (the function
//! panicked; the runner goes on) or `Codec` (the item did not decode, or the result did not
//! encode). The worker ends when the parent closes the task pipe (`Eof`), after answering
//! everything it took.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::outgoing::{Outgoing, WriteEnd};
use super::wire::{self, Failure, Task, TaskCodec};
use crate::{Error, Reader};

/// The worker's tasks, as its runners share them.
pub(super) type Tasks<I> = Reader<Task<I>, TaskCodec<I>>;

/// The child's root: runs the runners until the task pipe ends, then flushes the replies.
pub(super) fn serve<I, O, F>(
    tasks: Tasks<I>,
    replies: WriteEnd,
    f: F,
    concurrency: usize,
) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O + 'static,
{
    let (tasks, f) = (Rc::new(tasks), Rc::new(f));
    let replies = Outgoing::new(replies.0);
    let flusher = replies.start();
    let runners: Vec<_> = (0..concurrency)
        .map(|_| {
            let (tasks, replies, f) = (Rc::clone(&tasks), Rc::clone(&replies), Rc::clone(&f));
            greenhub::spawn(move || run_tasks(&tasks, &replies, &*f))
        })
        .collect();
    let mut outcome = Ok(());
    for runner in runners {
        if let Ok(Err(err)) = runner.join() {
            outcome = outcome.and(Err(err));
        }
    }
    replies.close();
    let _ = flusher.join();
    outcome
}

/// One runner: task after task until the parent closes the pipe.
fn run_tasks<I, O, F>(tasks: &Tasks<I>, replies: &Outgoing, f: &F) -> Result<(), Error>
where
    I: Serialize + DeserializeOwned + 'static,
    O: Serialize + DeserializeOwned + 'static,
    F: Fn(I) -> O,
{
    loop {
        let Task { id, item } = match tasks.get() {
            Ok(task) => task,
            Err(Error::Eof) => return Ok(()),
            Err(err) => return Err(err),
        };
        let outcome = match item {
            Ok(item) => catch_unwind(AssertUnwindSafe(|| f(item)))
                .map_err(|payload| Failure::Panicked(panic_message(payload))),
            Err(message) => Err(Failure::Codec(message)),
        };
        replies.push(|out| wire::append_reply(out, id, &outcome)).or_else(|err| {
            // The result does not encode: that item fails, the worker goes on.
            let message = match err {
                Error::Codec(message) => message,
                other => other.to_string(),
            };
            replies.push(|out| wire::append_reply::<O>(out, id, &Err(Failure::Codec(message))))
        })?;
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
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
