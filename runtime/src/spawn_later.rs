//! `spawn_later`: a coroutine that starts once a delay has passed (gevent's `spawn_later`).
//!
//! Guarantee: the body starts no earlier than the delay (timers never fire early); a coroutine
//! cancelled before then never runs its body; until it starts, its timer is pending, so a hub
//! waiting for it is not deadlocked. Not guaranteed: how late it starts (as for any timer).
//!
//! The task sits in the table from the call, parked and not yet started ([`Body::Start`] while
//! `Suspended`), with no stack; its timer wakes it like any sleeper, and it starts as a freshly
//! spawned coroutine does. Cancelling it removes the task and its timer.

use std::cell::Cell;
use std::panic::Location;
use std::rc::Rc;
use std::time::Duration;

use crate::coroutine::{Spawned, Start};
use crate::hub::{hub, try_hub};
use crate::join::{JoinError, JoinHandle};
use crate::task::{Body, Spawn, WaitReason};
use crate::timer::{TimerAction, TimerKey, deadline_after};

/// Starts `f` as a new coroutine once `d` has passed, and returns its handle at once.
///
/// `f` starts no earlier than `d` from now. Cancelling the handle before then means `f` never
/// runs (its `join` gives a cancelled `JoinError`). Until it starts it counts as a pending timer,
/// so the hub is not deadlocked while the root waits for it. `d` may be `Duration::MAX`: then it
/// never starts (a root that joins it is reported as blocked forever), and is cancelled at the
/// end of `run` like every other coroutine.
///
/// ```
/// use std::time::{Duration, Instant};
/// greenhub::run(|| {
///     let start = Instant::now();
///     let later = greenhub::spawn_later(Duration::from_millis(5), move || start.elapsed());
///     assert!(later.join().unwrap() >= Duration::from_millis(5));
/// });
/// ```
///
/// # Panics
/// Outside a hub.
#[track_caller]
pub fn spawn_later<F, T>(d: Duration, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    let hub = hub("spawn_later");
    let spawned = Rc::new(Spawned::new(f));
    let at = deadline_after(d);
    let delayed = Rc::new(Delayed { body: spawned.clone(), timer: Cell::new(None) });
    let spawn =
        Spawn { stack_size: hub.stacks.usable_size(None), site: Location::caller(), name: None };
    let reason = WaitReason::Start(hub.tasks.deadline(at));
    let task = hub.tasks.insert_parked(Body::Start(delayed.clone()), spawn, reason);
    if let Some(at) = at {
        delayed.timer.set(Some(hub.timers.insert(at, TimerAction::Wake(task))));
    }
    JoinHandle::new(task, spawned, None)
}

/// A spawned body behind a start timer.
struct Delayed {
    body: Rc<dyn Start>,
    /// The timer that wakes the task; `None` for a delay too long to represent.
    timer: Cell<Option<TimerKey>>,
}

impl Start for Delayed {
    fn run(&self) {
        self.body.run(); // the timer has fired: it is what woke the task
    }

    fn cancel(&self) {
        if let (Some(key), Some(hub)) = (self.timer.take(), try_hub()) {
            hub.timers.remove(key); // no timer left pending for a body that will never run
        }
        self.body.cancel();
    }

    fn fail(&self, error: JoinError) {
        self.body.fail(error);
    }

    fn overflowed(&self, size: usize) {
        self.body.overflowed(size);
    }
}
