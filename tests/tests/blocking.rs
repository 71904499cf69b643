//! `spawn_blocking`: the value comes back, the hub keeps running other coroutines while the
//! closure blocks, closures run in parallel, a panic in the closure is rethrown, and a cancelled
//! caller does not stop the closure.
//!
//! The std channels' `recv_timeout`s below are safety nets that turn a bug into a failed
//! assertion instead of a hung test; no test relies on timing.

use std::panic;
use std::sync::mpsc;
use std::time::Duration;

use greenhub::sync::channel;
use greenhub::{spawn, spawn_blocking, yield_now};
use greenhub_tests::panic_message;

/// Long enough to never matter when the code under test is right.
const SAFETY_NET: Duration = Duration::from_secs(10);

#[test]
fn spawn_blocking_returns_the_value_computed_on_another_thread() {
    greenhub::run(|| {
        let hub_thread = std::thread::current().id();
        let (value, thread) = spawn_blocking(|| (6 * 7, std::thread::current().id()));
        assert_eq!(value, 42);
        assert_ne!(thread, hub_thread, "the closure ran on the hub's thread");
    });
}

#[test]
fn other_coroutines_run_while_the_closure_blocks() {
    const TICKS: u32 = 100;
    greenhub::run(|| {
        // The closure blocks until the ticker has ticked TICKS times, which it can only do if
        // the hub keeps running coroutines meanwhile.
        let (to_closure, from_ticker) = mpsc::channel::<u32>();
        let (tick_tx, tick_rx) = channel::<u32>();
        let ticker = spawn(move || {
            for i in 1..=TICKS {
                tick_tx.send(i).unwrap();
                yield_now();
            }
            to_closure.send(TICKS).unwrap();
        });
        let counter = spawn(move || std::iter::from_fn(|| tick_rx.recv().ok()).count());
        let seen = spawn_blocking(move || from_ticker.recv_timeout(SAFETY_NET).ok());
        assert_eq!(seen, Some(TICKS), "the hub was blocked while the closure waited");
        ticker.join().unwrap();
        assert_eq!(counter.join().unwrap(), TICKS as usize);
    });
}

#[test]
fn two_closures_run_at_the_same_time() {
    greenhub::run(|| {
        // Each closure waits for the other's message: only parallel helper threads finish.
        let (a_tx, a_rx) = mpsc::channel::<&str>();
        let (b_tx, b_rx) = mpsc::channel::<&str>();
        let a = spawn(move || {
            spawn_blocking(move || {
                a_tx.send("from a").unwrap();
                b_rx.recv_timeout(SAFETY_NET).ok()
            })
        });
        let b = spawn(move || {
            spawn_blocking(move || {
                b_tx.send("from b").unwrap();
                a_rx.recv_timeout(SAFETY_NET).ok()
            })
        });
        assert_eq!(a.join().unwrap(), Some("from b"));
        assert_eq!(b.join().unwrap(), Some("from a"));
    });
}

#[test]
fn many_more_jobs_than_helper_threads_all_complete() {
    greenhub::run(|| {
        let jobs: Vec<_> =
            (0..64u64).map(|i| spawn(move || spawn_blocking(move || i * 2))).collect();
        let sum: u64 = jobs.into_iter().map(|j| j.join().unwrap()).sum();
        assert_eq!(sum, (0..64).map(|i| i * 2).sum());
    });
}

#[test]
fn a_panic_in_the_closure_is_rethrown_in_the_caller() {
    greenhub::run(|| {
        let caught = panic::catch_unwind(|| spawn_blocking(|| -> u8 { panic!("blocking boom") }));
        assert_eq!(panic_message(&*caught.unwrap_err()), "blocking boom");
        // The pool and the hub go on.
        assert_eq!(spawn_blocking(|| 1), 1);
        let joined = spawn(|| spawn_blocking(|| panic!("in a coroutine"))).join();
        assert!(joined.unwrap_err().is_panic());
    });
}

#[test]
fn a_cancelled_caller_does_not_stop_the_closure() {
    greenhub::run(|| {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<&str>();
        let caller = spawn(move || {
            spawn_blocking(move || {
                let released = release_rx.recv_timeout(SAFETY_NET).is_ok();
                done_tx.send(if released { "ran to its end" } else { "never released" }).unwrap();
            })
        });
        yield_now(); // the caller submits the job and waits
        caller.cancel();
        assert!(caller.join().unwrap_err().is_cancelled(), "cancel did not wait for the job");
        release_tx.send(()).unwrap();
        let done = spawn_blocking(move || done_rx.recv_timeout(SAFETY_NET));
        assert_eq!(done, Ok("ran to its end"));
    });
}
