//! Time: `sleep` order and never-early, `sleep(ZERO)` as a yield, `timeout` (Ok, Err, nested,
//! destructors), and `JoinHandle::wait_timeout`. Timing is only ever checked as "not early".

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::sync::Event;
use greenhub::{sleep, spawn, timeout, yield_now};
use greenhub_tests::DropFlag;

const FOREVER: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn sleepers_wake_in_deadline_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let sleepers: Vec<_> = [30, 10, 0, 20, 5]
            .into_iter()
            .map(|n| {
                let log = log.clone();
                spawn(move || {
                    sleep(ms(n));
                    log.borrow_mut().push(n);
                })
            })
            .collect();
        sleepers.into_iter().for_each(|s| s.join().unwrap());
    });
    assert_eq!(*log.borrow(), [0, 5, 10, 20, 30]);
}

#[test]
fn sleep_never_returns_early() {
    greenhub::run(|| {
        for n in [1, 2, 7, 15] {
            let start = Instant::now();
            sleep(ms(n));
            assert!(start.elapsed() >= ms(n), "sleep({n}ms) took {:?}", start.elapsed());
        }
        // Many at once, each measured from its own start.
        let sleepers: Vec<_> = (0..200u64)
            .map(|i| {
                spawn(move || {
                    let d = Duration::from_micros(500 * (i % 20));
                    let start = Instant::now();
                    sleep(d);
                    start.elapsed() >= d
                })
            })
            .collect();
        assert!(sleepers.into_iter().all(|s| s.join().unwrap()), "a sleeper woke early");
    });
}

#[test]
fn sleep_zero_is_a_yield() {
    let log = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let other = spawn({
            let log = log.clone();
            move || {
                log.borrow_mut().push("other");
                sleep(Duration::ZERO);
                log.borrow_mut().push("other again");
            }
        });
        log.borrow_mut().push("root");
        sleep(Duration::ZERO); // lets `other` run up to its own zero sleep
        log.borrow_mut().push("root again");
        other.join().unwrap();
    });
    assert_eq!(*log.borrow(), ["root", "other", "root again", "other again"]);
}

#[test]
fn timeout_gives_ok_when_the_closure_finishes_in_time() {
    greenhub::run(|| {
        assert_eq!(timeout(FOREVER, || 5), Ok(5));
        assert_eq!(
            timeout(FOREVER, || {
                sleep(ms(1));
                7
            }),
            Ok(7)
        );
        // The timer is gone once `timeout` returns: a later suspension is not interrupted.
        assert_eq!(timeout(ms(1), || 8), Ok(8));
        sleep(ms(5));
    });
}

#[test]
fn timeout_gives_ok_when_the_closure_never_suspends_past_the_deadline() {
    greenhub::run(|| {
        let r = timeout(ms(1), || {
            // Busy for longer than the deadline, but never suspended.
            let start = Instant::now();
            while start.elapsed() < ms(5) {
                std::hint::spin_loop();
            }
            9
        });
        assert_eq!(r, Ok(9));
    });
}

#[test]
fn timeout_gives_err_when_the_deadline_passes_and_is_never_early() {
    greenhub::run(|| {
        let after = Rc::new(Cell::new(false));
        let start = Instant::now();
        let r = timeout(ms(10), || {
            sleep(FOREVER);
            after.set(true);
        });
        assert!(r.is_err(), "the deadline passed while the closure slept");
        assert!(start.elapsed() >= ms(10), "timeout fired early: {:?}", start.elapsed());
        assert!(!after.get(), "the closure ran on past its suspension point");
        // The coroutine goes on normally afterwards.
        let start = Instant::now();
        sleep(ms(2));
        assert!(start.elapsed() >= ms(2));
    });
}

#[test]
fn elapsed_is_a_std_error_with_a_message() {
    greenhub::run(|| {
        let e = timeout(ms(1), || sleep(FOREVER)).unwrap_err();
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(!boxed.to_string().is_empty());
        assert_eq!(format!("{e:?}"), "Elapsed");
    });
}

#[test]
fn nested_timeout_the_inner_one_fires() {
    greenhub::run(|| {
        let outer = timeout(FOREVER, || {
            let inner = timeout(ms(5), || sleep(FOREVER));
            assert!(inner.is_err());
            sleep(ms(1)); // the outer closure goes on and is not interrupted
            "outer finished"
        });
        assert_eq!(outer, Ok("outer finished"));
    });
}

#[test]
fn nested_timeout_the_outer_one_fires_while_the_inner_is_pending() {
    greenhub::run(|| {
        let inner_returned = Rc::new(Cell::new(false));
        let start = Instant::now();
        let outer = timeout(ms(10), || {
            let inner = timeout(FOREVER, || sleep(FOREVER));
            inner_returned.set(true);
            inner
        });
        assert!(outer.is_err(), "the outer timeout fired, so the outer one returns Err");
        assert!(!inner_returned.get(), "the inner timeout must not swallow the outer's unwind");
        assert!(start.elapsed() >= ms(10));
    });
}

#[test]
fn nested_timeouts_with_the_inner_deadline_later_the_outer_fires() {
    greenhub::run(|| {
        let outer = timeout(ms(5), || timeout(ms(50), || sleep(FOREVER)));
        assert!(outer.is_err());
    });
}

#[test]
fn timeout_unwinds_and_runs_destructors() {
    greenhub::run(|| {
        let (guard, dropped) = DropFlag::new();
        let event = Event::new();
        let r = timeout(ms(5), move || {
            let _guard = guard;
            event.wait();
        });
        assert!(r.is_err());
        assert!(dropped.get(), "the closure's locals were not dropped");
    });
}

#[test]
fn timeouts_in_different_coroutines_fire_independently() {
    greenhub::run(|| {
        let quick = spawn(|| timeout(ms(5), || sleep(FOREVER)).is_err());
        let slow = spawn(|| {
            timeout(FOREVER, || {
                sleep(ms(15));
                "done"
            })
        });
        assert!(quick.join().unwrap());
        assert_eq!(slow.join().unwrap(), Ok("done"));
    });
}

#[test]
fn wait_timeout_on_a_join_handle() {
    greenhub::run(|| {
        let sleeper = spawn(|| sleep(FOREVER));
        let start = Instant::now();
        assert!(!sleeper.wait_timeout(ms(10)), "a sleeping coroutine has not ended");
        assert!(start.elapsed() >= ms(10));
        assert!(!sleeper.is_finished());

        let quick = spawn(|| {
            yield_now();
            3
        });
        assert!(quick.wait_timeout(FOREVER));
        assert!(quick.is_finished());
        assert_eq!(quick.join().unwrap(), 3);

        sleeper.cancel();
        assert!(sleeper.wait_timeout(FOREVER));
        assert!(sleeper.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn coroutines_that_keep_yielding_do_not_starve_timers() {
    greenhub::run(|| {
        let fired = Rc::new(Cell::new(false));
        let spinners: Vec<_> = (0..3)
            .map(|_| {
                let fired = fired.clone();
                spawn(move || {
                    let mut spins = 0u64;
                    while !fired.get() {
                        yield_now(); // always ready: the hub must still fire timers
                        spins += 1;
                    }
                    spins
                })
            })
            .collect();
        sleep(ms(5));
        fired.set(true);
        assert!(spinners.into_iter().all(|s| s.join().unwrap() > 0));
    });
}

#[test]
fn cancelling_a_coroutine_inside_timeout_ends_it_cancelled() {
    greenhub::run(|| {
        let (guard, dropped) = DropFlag::new();
        let h = spawn(move || {
            let _guard = guard;
            timeout(FOREVER, || sleep(FOREVER))
        });
        yield_now();
        h.cancel();
        let err = h.join().unwrap_err();
        assert!(err.is_cancelled(), "timeout must not swallow a cancellation: {err}");
        assert!(dropped.get());
    });
}

#[test]
fn a_timeout_around_a_join_leaves_the_joined_coroutine_running() {
    greenhub::run(|| {
        let event = Rc::new(Event::new());
        let worker = spawn({
            let event = event.clone();
            move || {
                event.wait();
                "worked"
            }
        });
        assert!(timeout(ms(5), || worker.wait_timeout(FOREVER)).is_err());
        assert!(!worker.is_finished(), "the joined coroutine was hurt by the joiner's timeout");
        event.set();
        assert_eq!(worker.join().unwrap(), "worked");
    });
}

#[test]
fn a_sleep_far_in_the_future_is_cancellable_and_leaves_short_timers_alone() {
    greenhub::run(|| {
        let far = spawn(|| sleep(Duration::from_secs(1 << 40)));
        yield_now();
        let start = Instant::now();
        sleep(ms(3));
        assert!(start.elapsed() >= ms(3));
        far.cancel();
        assert!(far.join().unwrap_err().is_cancelled());
        // With the far timer gone, the next short one still fires.
        sleep(ms(1));
    });
}

#[test]
fn regression_outer_timeout_firing_in_the_same_turn_as_the_inner_one_wins() {
    // When the hub was busy past both deadlines, the inner interrupt was delivered and the outer
    // one, fired in the same turn, was dropped: the outer timeout returned Ok much later.
    greenhub::run(|| {
        let outer = greenhub::timeout(Duration::from_millis(10), || {
            greenhub::timeout(Duration::from_millis(5), || {
                let hog_until = Instant::now() + Duration::from_millis(30);
                while Instant::now() < hog_until {} // holds the hub past both deadlines
                greenhub::sleep(Duration::from_secs(10)); // the first suspension point
            })
        });
        assert!(outer.is_err(), "the outer deadline passed too, and it is the outer one's");
    });
}

/// Holds the hub for `d` without suspending.
fn hog(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn regression_a_deadline_that_passes_while_the_closure_is_suspended_gives_err_even_before_its_timer_fires()
 {
    // The loop fires timers only after running the ready coroutines. A closure whose deadline
    // passed while it was suspended, and that was made ready again in the same turn (woken by
    // a coroutine that held the hub past the deadline, or just yielded), was resumed before
    // its timer fired, carried on and returned: `timeout` gave Ok.
    greenhub::run(|| {
        let event = Rc::new(Event::new());
        let setter = spawn({
            let event = event.clone();
            move || {
                hog(ms(5)); // past the deadline, while the closure waits
                event.set();
            }
        });
        let r = timeout(ms(1), || event.wait());
        assert!(r.is_err(), "the deadline passed while the closure waited on the event");
        setter.join().unwrap();

        let busy = spawn(|| hog(ms(5)));
        assert!(timeout(ms(1), yield_now).is_err(), "the deadline passed while it yielded");
        busy.join().unwrap();

        assert!(timeout(Duration::ZERO, yield_now).is_err(), "suspended past a zero deadline");

        // Nested, both deadlines passed before the first suspension: the outer one's.
        let outer = timeout(ms(1), || {
            timeout(ms(2), || {
                hog(ms(5));
                yield_now();
            })
        });
        assert!(outer.is_err(), "the outer deadline passed first, and it is the outer one's");

        // Not suspended past the deadline: still Ok, and the coroutine suspends normally after.
        assert_eq!(timeout(ms(1), || hog(ms(3))), Ok(()));
        yield_now();
        let start = Instant::now();
        sleep(ms(2));
        assert!(start.elapsed() >= ms(2));
    });
}

#[test]
fn every_runtime_call_taking_a_duration_accepts_duration_max() {
    // A deadline past what `Instant` can hold means "never", not an overflow panic.
    greenhub::run(|| {
        assert_eq!(timeout(Duration::MAX, || 5), Ok(5));
        assert_eq!(
            timeout(Duration::MAX, || {
                sleep(ms(1));
                6
            }),
            Ok(6)
        );
        let quick = spawn(yield_now);
        assert!(quick.wait_timeout(Duration::MAX));
        let event = Rc::new(Event::new());
        let setter = spawn({
            let event = event.clone();
            move || event.set()
        });
        assert!(event.wait_timeout(Duration::MAX));
        setter.join().unwrap();
        let (tx, rx) = greenhub::sync::channel();
        let sender = spawn(move || tx.send(7).unwrap());
        assert_eq!(rx.recv_timeout(Duration::MAX), Ok(7));
        sender.join().unwrap();
        let sleeper = spawn(|| sleep(Duration::MAX));
        yield_now();
        sleeper.cancel();
        assert!(sleeper.join().unwrap_err().is_cancelled());
    });
}

// ---------------------------------------------------------------------------------------------
// A timeout whose unwind a library catches

/// What a library that "handles every error" does: catch the unwind and carry on.
fn swallow<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

#[test]
fn regression_timeout_survives_catch_unwind_inside_f_and_fires_again_at_the_next_suspension_point()
{
    greenhub::run(|| {
        let resumed_after_catch = Rc::new(Cell::new(0));
        let r = timeout(ms(2), {
            let resumed_after_catch = resumed_after_catch.clone();
            move || {
                assert!(swallow(|| sleep(FOREVER)).is_none(), "the deadline unwound the sleep");
                resumed_after_catch.set(1);
                // The unwind was swallowed, but the deadline has passed: the next suspension
                // point unwinds again, at once (no second deadline, no waiting).
                assert!(swallow(|| sleep(FOREVER)).is_none());
                resumed_after_catch.set(2);
                sleep(FOREVER); // not swallowed: reaches the boundary
                unreachable!("sleep(FOREVER) returned");
            }
        });
        assert!(r.is_err(), "a caught timeout was lost");
        assert_eq!(resumed_after_catch.get(), 2);
        // The coroutine may suspend again after the boundary.
        sleep(ms(1));
        yield_now();
    });
}

#[test]
fn regression_timeout_returns_elapsed_when_f_returns_after_its_deadline_fired_and_was_caught() {
    greenhub::run(|| {
        let r = timeout(ms(2), || {
            let _ = swallow(|| sleep(FOREVER));
            "a value computed past the deadline"
        });
        assert!(r.is_err(), "a caught timeout was lost: {r:?}");
        // And the same coroutine carries on normally afterwards.
        assert_eq!(timeout(FOREVER, || 3), Ok(3));
        sleep(ms(1));
    });
}

#[test]
fn a_caught_outer_timeout_still_reaches_the_outer_boundary_through_an_inner_one() {
    greenhub::run(|| {
        let inner_result = Rc::new(Cell::new(None));
        let outer = timeout(ms(2), {
            let inner_result = inner_result.clone();
            move || {
                let inner = timeout(FOREVER, || {
                    let _ = swallow(|| sleep(FOREVER)); // the outer deadline, caught
                    sleep(FOREVER); // unwinds again: to the outer boundary, not the inner
                });
                inner_result.set(Some(inner.is_ok()));
            }
        });
        assert!(outer.is_err());
        assert_eq!(inner_result.get(), None, "the inner timeout swallowed the outer's unwind");
    });
}

#[test]
fn a_panic_after_a_caught_timeout_propagates_as_the_panic() {
    greenhub::run(|| {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            timeout(ms(2), || {
                let _ = swallow(|| sleep(FOREVER));
                panic!("library gave up");
            })
        }));
        let message = greenhub_tests::panic_message(&*caught.unwrap_err());
        assert_eq!(message, "library gave up");
        sleep(ms(1)); // nothing sticky is left behind
    });
}

#[test]
fn cancel_wins_over_a_caught_timeout() {
    greenhub::run(|| {
        let h = spawn(|| {
            timeout(ms(2), || {
                let _ = swallow(|| sleep(FOREVER));
                let _ = swallow(|| sleep(FOREVER));
            })
        });
        yield_now();
        h.cancel();
        assert!(h.join().unwrap_err().is_cancelled());
    });
}
