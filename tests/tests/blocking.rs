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
use greenhub_tests::{panic_message, with_no_room_for_a_thread};

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
    greenhub::run(two_closures_that_need_each_other);
}

#[test]
fn two_closures_run_at_the_same_time_when_one_helper_thread_is_idle() {
    greenhub::run(|| {
        // One helper thread, idle (asleep in its condition variable's futex): both jobs below
        // are submitted before it wakes for the first, and the second must get a thread of its
        // own, not wait behind the first.
        // SAFETY: gettid has no preconditions.
        let helper = spawn_blocking(|| unsafe { libc::gettid() });
        greenhub_tests::wait_until_thread_sleeps_in(std::process::id(), helper, "futex");
        two_closures_that_need_each_other();
    });
}

/// Two `spawn_blocking` closures, each waiting for the other's message.
fn two_closures_that_need_each_other() {
    {
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
    }
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

/// Set in the child process that reruns the thread-refusal test.
const REFUSAL_CHILD: &str = "GREENHUB_TEST_THREAD_REFUSAL_CHILD";

#[test]
fn spawn_blocking_panics_naming_the_os_error_when_no_helper_thread_can_start() {
    // In a child process: the address-space cap must not touch the other tests' threads.
    let name = "spawn_blocking_panics_naming_the_os_error_when_no_helper_thread_can_start";
    if !greenhub_tests::run_in_child(name, REFUSAL_CHILD) {
        return;
    }
    // A hang in the child must fail the test rather than block it: SIGALRM ends the child.
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(30) };
    let caught = panic::catch_unwind(|| {
        greenhub::run(|| {
            let refused = with_no_room_for_a_thread(|| {
                panic::catch_unwind(|| spawn_blocking(|| 1)).map_err(|p| panic_message(&*p))
            });
            let msg = refused.expect_err("a helper thread started despite the cap");
            assert!(msg.contains("refused to start a helper thread"), "{msg}");
            assert!(msg.contains("os error"), "the message does not name the OS error: {msg}");
            // The pool recovers once threads can start again.
            assert_eq!(spawn_blocking(|| 2), 2);
            // Nothing is left counted as pending: the deadlock check still works.
            greenhub::sync::Event::new().wait();
        })
    });
    let msg = panic_message(&*caught.expect_err("the root should have reported a deadlock"));
    assert!(msg.contains("would block forever"), "{msg}");
}

#[test]
fn blocking_threads_caps_how_many_helper_threads_run_jobs() {
    let threads = greenhub::Builder::new().blocking_threads(2).run(|| {
        let jobs: Vec<_> =
            (0..32).map(|_| spawn(|| spawn_blocking(|| std::thread::current().id()))).collect();
        let ids: std::collections::HashSet<_> =
            jobs.into_iter().map(|j| j.join().unwrap()).collect();
        ids.len()
    });
    assert!((1..=2).contains(&threads), "{threads} helper threads ran jobs with a pool of 2");
}

#[test]
fn jobs_beyond_the_pool_size_run_in_fifo_order() {
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    greenhub::Builder::new().blocking_threads(1).run(|| {
        let jobs: Vec<_> = (0..16)
            .map(|i| {
                let order = order.clone();
                spawn(move || spawn_blocking(move || order.lock().unwrap().push(i)))
            })
            .collect();
        jobs.into_iter().for_each(|j| j.join().unwrap());
    });
    assert_eq!(*order.lock().unwrap(), (0..16).collect::<Vec<_>>());
}

#[test]
fn a_pool_of_zero_helper_threads_is_refused_naming_the_rule() {
    let caught = panic::catch_unwind(|| greenhub::Builder::new().blocking_threads(0));
    let msg = panic_message(&*caught.unwrap_err());
    assert!(msg.contains("blocking_threads(0)") && msg.contains("n >= 1"), "{msg}");
}

/// The loop skips its poll while coroutines are ready and nothing waits outside them; a caller
/// waiting on a helper thread must still be woken while others keep yielding.
#[test]
fn coroutines_that_keep_yielding_do_not_starve_a_spawn_blocking_caller() {
    greenhub::run(|| {
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let spinner = spawn({
            let done = done.clone();
            move || {
                while !done.get() {
                    yield_now(); // always ready: the hub must still poll for the helper thread
                }
            }
        });
        assert_eq!(spawn_blocking(|| 6 * 7), 42);
        done.set(true);
        spinner.join().unwrap();
    });
}

#[test]
fn a_cancelled_callers_job_does_not_hold_off_the_deadlock_report() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let outcome = panic::catch_unwind(panic::AssertUnwindSafe(|| {
        greenhub::run(|| {
            let caller = spawn(move || {
                spawn_blocking(move || {
                    let _ = release_rx.recv_timeout(SAFETY_NET);
                    done_tx.send(()).unwrap();
                })
            });
            yield_now(); // the caller submits the job and waits
            caller.cancel();
            assert!(caller.join().unwrap_err().is_cancelled());
            // Nothing can wake this wait: the job's end would wake nobody.
            greenhub::sync::Event::new().wait();
        })
    }));
    let finished_first = done_rx.try_recv().is_ok();
    release_tx.send(()).unwrap_or(());
    assert!(!finished_first, "the deadlock report waited for the cancelled caller's job");
    assert!(panic_message(&*outcome.unwrap_err()).contains("would block forever"));
    done_rx.recv_timeout(SAFETY_NET).expect("the job still ran to its end");
}
