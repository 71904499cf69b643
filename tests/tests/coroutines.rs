//! Coroutines: spawn and join, start order, yielding, ids, detaching, panics, the root
//! coroutine, misuse outside a hub, clean-up when the root returns, and cancellation.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{Event, channel};
use greenhub::{CoroutineId, JoinError, spawn, yield_now};
use greenhub_tests::{DropFlag, panic_message};

/// Long enough that a test waiting for it would visibly hang: only cancellation ends it.
const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn join_returns_each_value_and_coroutines_start_in_spawn_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let values: Vec<u32> = greenhub::run(|| {
        let handles: Vec<_> = (0..10u32)
            .map(|i| {
                let log = log.clone();
                spawn(move || {
                    log.borrow_mut().push(i);
                    i * i
                })
            })
            .collect();
        // Join in reverse: the values still match their coroutines.
        handles.into_iter().rev().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(values, (0..10u32).rev().map(|i| i * i).collect::<Vec<_>>());
    assert_eq!(*log.borrow(), (0..10).collect::<Vec<_>>());
}

#[test]
fn spawn_never_runs_the_coroutine_inside_spawn() {
    greenhub::run(|| {
        let ran = Rc::new(Cell::new(false));
        let h = spawn({
            let ran = ran.clone();
            move || ran.set(true)
        });
        assert!(!ran.get(), "the body ran inside spawn");
        assert!(!h.is_finished());
        yield_now();
        assert!(ran.get(), "the body did not run at the next turn");
        assert!(h.is_finished());
        h.join().unwrap();
    });
}

#[test]
fn yield_now_interleaves_coroutines_round_robin() {
    let log = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let workers: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                spawn(move || {
                    for i in 0..3 {
                        log.borrow_mut().push(format!("{name}{i}"));
                        yield_now();
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
    });
    assert_eq!(*log.borrow(), ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]);
}

#[test]
fn current_is_the_running_coroutines_id() {
    greenhub::run(|| {
        let root = greenhub::current();
        assert_eq!(greenhub::current(), root, "the id is stable");
        let a = spawn(greenhub::current);
        let b = spawn(greenhub::current);
        let (a_id, b_id) = (a.id(), b.id());
        assert_eq!(a.join().unwrap(), a_id);
        assert_eq!(b.join().unwrap(), b_id);
        assert_ne!(a_id, b_id);
        assert_ne!(a_id, root);
        assert!(a_id.to_string().starts_with('#'), "Display is `#N`: {a_id}");
    });
}

#[test]
fn dropping_the_join_handle_detaches_the_coroutine() {
    greenhub::run(|| {
        let done = Rc::new(Event::new());
        drop(spawn({
            let done = done.clone();
            move || {
                yield_now(); // still alive after its handle is gone
                done.set();
            }
        }));
        done.wait();
        assert!(done.is_set());
    });
}

#[test]
fn a_panicking_coroutine_is_isolated() {
    greenhub::run(|| {
        let n = std::hint::black_box(7);
        let bad = spawn(move || -> u32 { panic!("boom {n}") });
        let good = spawn(|| {
            yield_now();
            5
        });
        let err = bad.join().unwrap_err();
        assert!(err.is_panic());
        assert!(!err.is_cancelled());
        assert!(err.to_string().contains("boom 7"), "Display names the panic: {err}");
        assert!(format!("{err:?}").contains("boom 7"), "Debug names the panic: {err:?}");
        let payload = err.into_panic();
        assert_eq!(panic_message(&*payload), "boom 7");
        // The hub and the other coroutines go on.
        assert_eq!(good.join().unwrap(), 5);
        assert_eq!(spawn(|| 6).join().unwrap(), 6);
    });
}

/// Set in the child process of the broken-stderr test.
const BROKEN_STDERR_CHILD: &str = "GREENHUB_TEST_BROKEN_STDERR_CHILD";

/// A caught panic of a coroutine does not abort the process when stderr is a pipe whose reader
/// is gone: the hub's "which coroutine panicked" line is dropped (std's own hook ignores the
/// error too), the joiner gets the panic, and the program goes on.
#[test]
fn a_caught_coroutine_panic_with_stderr_gone_does_not_abort() {
    if std::env::var_os(BROKEN_STDERR_CHILD).is_some() {
        let joined = greenhub::run(|| spawn(|| -> u32 { panic!("boom") }).join());
        assert!(joined.unwrap_err().is_panic());
        return;
    }
    let name = "a_caught_coroutine_panic_with_stderr_gone_does_not_abort";
    let (reader, broken) = std::io::pipe().unwrap();
    drop(reader); // every write to `broken` now fails with EPIPE
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(BROKEN_STDERR_CHILD, "1")
        .stderr(broken)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child died: {:?}\n{stdout}", out.status);
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
}

#[test]
fn a_static_str_panic_payload_is_kept() {
    greenhub::run(|| {
        let err = spawn(|| panic!("static boom")).join().unwrap_err();
        let payload = err.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"static boom"));
    });
}

#[test]
fn join_error_is_a_std_error_and_into_panic_on_a_cancelled_one_panics() {
    greenhub::run(|| {
        let h = spawn(|| ());
        h.cancel();
        let err = h.join().unwrap_err();
        assert!(err.is_cancelled() && !err.is_panic());
        let as_error: Box<dyn std::error::Error> = Box::new(err);
        assert!(as_error.to_string().contains("cancelled"), "{as_error}");

        let h = spawn(|| ());
        h.cancel();
        let err = h.join().unwrap_err();
        let caught = panic::catch_unwind(AssertUnwindSafe(move || err.into_panic()));
        assert!(caught.is_err(), "into_panic on a cancelled coroutine must panic");
    });
}

#[test]
fn run_returns_the_root_value_and_may_borrow() {
    assert_eq!(greenhub::run(|| 42), 42);
    let numbers = [1, 2, 3];
    let mut seen = 0;
    let sum: i32 = greenhub::run(|| {
        seen += 1;
        numbers.iter().sum()
    });
    assert_eq!((sum, seen), (6, 1));
}

#[test]
fn a_root_panic_propagates_out_of_run_and_the_thread_can_run_again() {
    let caught = panic::catch_unwind(|| greenhub::run(|| panic!("root boom")));
    assert_eq!(panic_message(&*caught.unwrap_err()), "root boom");
    assert_eq!(greenhub::run(|| spawn(|| 1).join().unwrap()), 1);
}

#[test]
fn run_inside_run_panics_naming_the_rule() {
    greenhub::run(|| {
        let caught = panic::catch_unwind(|| greenhub::run(|| ()));
        let msg = panic_message(&*caught.unwrap_err());
        assert!(msg.contains("greenhub::run") && msg.contains("inside a running hub"), "{msg}");
        // The outer hub is intact.
        assert_eq!(spawn(|| 3).join().unwrap(), 3);
    });
}

/// Set in the copy of this test binary that
/// [`run_with_no_fd_for_the_hub_panics_naming_the_fd_and_the_limit`] starts.
const NO_FD_CHILD: &str = "GREENHUB_COROUTINES_NO_FD_CHILD";

/// Regression: `run` with no fd to spare for the hub's own panicked with a Debug dump
/// ("greenhub::run: cannot create the hub: Os { code: 24, kind: Uncategorized, .. }"), not
/// saying which fd, and its docs did not say it panics there.
#[test]
fn run_with_no_fd_for_the_hub_panics_naming_the_fd_and_the_limit() {
    let test = "run_with_no_fd_for_the_hub_panics_naming_the_fd_and_the_limit";
    if !greenhub_tests::run_in_child(test, NO_FD_CHILD) {
        return;
    }
    // The lowest free fd number (closed again at once): with the limit there, none is free.
    let lowest_free = std::os::fd::AsRawFd::as_raw_fd(&std::fs::File::open("/dev/null").unwrap());
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `old` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
    let capped = libc::rlimit { rlim_cur: lowest_free as libc::rlim_t, rlim_max: old.rlim_max };
    // SAFETY: a valid rlimit, lowering the soft limit only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) }, 0);
    let caught = panic::catch_unwind(|| greenhub::run(|| ()));
    // SAFETY: restores the soft limit read above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
    let msg = panic_message(&*caught.expect_err("a hub without fds"));
    let refused = "greenhub::run could not create the hub: the OS refused its wake-up eventfd";
    assert!(msg.starts_with(refused), "{msg}");
    assert!(msg.contains("Too many open files") && msg.contains("RLIMIT_NOFILE"), "{msg}");
    assert!(!msg.contains("Os {"), "{msg}");
    assert_eq!(greenhub::run(|| spawn(|| 4).join().unwrap()), 4, "the thread can run a hub now");
}

#[test]
fn hub_calls_outside_a_hub_panic_naming_greenhub() {
    let cases: [(&str, fn()); 4] = [
        ("spawn", || drop(spawn(|| ()))),
        ("yield_now", yield_now),
        ("current", || _ = greenhub::current()),
        ("sleep", || greenhub::sleep(Duration::from_millis(1))),
    ];
    for (name, call) in cases {
        let msg = panic_message(&*panic::catch_unwind(AssertUnwindSafe(call)).unwrap_err());
        assert!(msg.contains("greenhub") && msg.contains(name), "{name}: {msg}");
        assert!(msg.contains("outside a hub"), "{name}: {msg}");
    }
}

#[test]
fn coroutines_alive_when_the_root_returns_are_unwound() {
    let (sleeper_guard, sleeper_dropped) = DropFlag::new();
    let (waiter_guard, waiter_dropped) = DropFlag::new();
    let (ready_guard, ready_dropped) = DropFlag::new();
    let (unstarted_guard, unstarted_dropped) = DropFlag::new();
    let went_on = Rc::new(Cell::new(0));
    let handles = greenhub::run(|| {
        let event = Rc::new(Event::new());
        let sleeper = spawn({
            let went_on = went_on.clone();
            move || {
                let _guard = sleeper_guard;
                greenhub::sleep(FOREVER);
                went_on.set(went_on.get() + 1);
            }
        });
        let waiter = spawn({
            let (event, went_on) = (event.clone(), went_on.clone());
            move || {
                let _guard = waiter_guard;
                event.wait();
                went_on.set(went_on.get() + 1);
            }
        });
        let busy = spawn({
            let went_on = went_on.clone();
            move || {
                let _guard = ready_guard;
                loop {
                    yield_now(); // always ready, never done
                    went_on.set(went_on.get() + 1);
                    if went_on.get() > 1_000_000 {
                        break;
                    }
                }
            }
        });
        yield_now(); // all three are now suspended or ready
        let unstarted = spawn(move || drop(unstarted_guard));
        (sleeper, waiter, busy, unstarted)
    });
    assert!(sleeper_dropped.get(), "a sleeping coroutine was not unwound");
    assert!(waiter_dropped.get(), "a waiting coroutine was not unwound");
    assert!(ready_dropped.get(), "a ready coroutine was not unwound");
    assert!(unstarted_dropped.get(), "an unstarted coroutine's captures were not dropped");
    assert_eq!(went_on.get(), 0, "a coroutine ran on past its suspension point");
    let (sleeper, waiter, busy, unstarted) = handles;
    for h in [&sleeper, &waiter, &busy] {
        assert!(h.is_finished());
    }
    assert!(unstarted.is_finished());
    assert!(sleeper.join().unwrap_err().is_cancelled());
}

#[test]
fn cancel_a_sleeping_coroutine() {
    greenhub::run(|| {
        let (guard, dropped) = DropFlag::new();
        let woke = Rc::new(Cell::new(false));
        let h = spawn({
            let woke = woke.clone();
            move || {
                let _guard = guard;
                greenhub::sleep(FOREVER);
                woke.set(true);
            }
        });
        yield_now(); // it starts and sleeps
        assert!(!h.is_finished());
        h.cancel();
        assert!(h.join().unwrap_err().is_cancelled());
        assert!(dropped.get(), "destructors did not run");
        assert!(!woke.get(), "the body ran past its suspension point");
    });
}

#[test]
fn cancel_a_coroutine_waiting_on_a_channel() {
    greenhub::run(|| {
        let (tx, rx) = channel::<u32>();
        let (guard, dropped) = DropFlag::new();
        let h = spawn(move || {
            let _guard = guard;
            rx.recv()
        });
        yield_now();
        h.cancel();
        assert!(h.join().unwrap_err().is_cancelled());
        assert!(dropped.get());
        // The receiver (a capture) was dropped by the unwind: the channel is disconnected.
        assert!(tx.is_closed());
        assert_eq!(tx.send(9).unwrap_err().0, 9);
    });
}

#[test]
fn cancel_a_coroutine_waiting_on_an_event() {
    greenhub::run(|| {
        let event = Rc::new(Event::new());
        let (guard, dropped) = DropFlag::new();
        let h = spawn({
            let event = event.clone();
            move || {
                let _guard = guard;
                event.wait();
                "woken"
            }
        });
        yield_now();
        h.cancel();
        let err = h.join().unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        assert!(dropped.get());
        assert_eq!(Rc::strong_count(&event), 1, "the coroutine's Rc was not dropped");
        event.set(); // nobody left to wake; must not misbehave
    });
}

#[test]
fn cancel_an_unstarted_coroutine_never_runs_its_body() {
    greenhub::run(|| {
        let ran = Rc::new(Cell::new(false));
        let (guard, dropped) = DropFlag::new();
        let h = spawn({
            let ran = ran.clone();
            move || {
                let _guard = guard;
                ran.set(true);
            }
        });
        h.cancel();
        yield_now();
        yield_now();
        assert!(h.is_finished());
        assert!(h.join().unwrap_err().is_cancelled());
        assert!(!ran.get(), "the body of a coroutine cancelled before it started ran");
        assert!(dropped.get(), "the captures were not dropped");
    });
}

#[test]
fn cancel_after_the_end_does_nothing() {
    greenhub::run(|| {
        let h = spawn(|| 4);
        yield_now();
        assert!(h.is_finished());
        h.cancel();
        assert_eq!(h.join().unwrap(), 4);
    });
}

#[test]
fn a_coroutine_that_catches_every_unwind_still_ends_cancelled() {
    greenhub::run(|| {
        let caught = Rc::new(Cell::new(0));
        let event = Rc::new(Event::new());
        let h = spawn({
            let (caught, event) = (caught.clone(), event.clone());
            move || {
                // Swallows the cancellation at every suspension point it reaches, then returns
                // a value as if nothing happened.
                for _ in 0..3 {
                    let r = panic::catch_unwind(AssertUnwindSafe(|| event.wait()));
                    if r.is_err() {
                        caught.set(caught.get() + 1);
                    }
                }
                "pretends to succeed"
            }
        });
        yield_now();
        h.cancel();
        let err = h.join().unwrap_err();
        assert!(err.is_cancelled(), "{err}");
        assert_eq!(caught.get(), 3, "every later suspension point unwinds again");
    });
}

#[test]
fn thirty_thousand_sleeping_coroutines_all_finish() {
    const N: usize = 30_000;
    let finished = greenhub::run(|| {
        let done = Rc::new(Cell::new(0usize));
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let done = done.clone();
                spawn(move || {
                    greenhub::sleep(Duration::from_millis(5 + (i % 7) as u64));
                    done.set(done.get() + 1);
                    i
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i);
        }
        done.get()
    });
    assert_eq!(finished, N);
}

#[test]
fn a_stack_size_no_os_could_reserve_is_a_panic_naming_the_rule() {
    // No OS maps 2^47 bytes of stack: refused where it is asked for, not at the first resume.
    let caught = panic::catch_unwind(|| greenhub::Builder::new().stack_size(1 << 47));
    let msg = panic_message(&*caught.unwrap_err());
    assert!(msg.contains("a coroutine stack must be between 1 byte and 1 TiB"), "{msg}");
}

#[test]
fn join_error_display_distinguishes_panic_and_cancel() {
    greenhub::run(|| {
        let cancelled = {
            let h = spawn(|| ());
            h.cancel();
            h.join().unwrap_err()
        };
        let panicked: JoinError = spawn(|| panic!("kaput")).join().unwrap_err();
        assert_ne!(cancelled.to_string(), panicked.to_string());
        assert!(panicked.to_string().contains("panicked"), "{panicked}");
    });
}

#[test]
fn a_coroutine_may_cancel_itself() {
    greenhub::run(|| {
        let me: Rc<RefCell<Option<greenhub::JoinHandle<&str>>>> = Rc::new(RefCell::new(None));
        let reached = Rc::new(Cell::new(0));
        let h = spawn({
            let (me, reached) = (me.clone(), reached.clone());
            move || {
                me.borrow().as_ref().expect("the handle is stored before it runs").cancel();
                reached.set(1); // cancel does not unwind on the spot...
                yield_now(); // ...but the next suspension point does
                reached.set(2);
                "not cancelled"
            }
        });
        let id = h.id();
        *me.borrow_mut() = Some(h);
        let h = loop {
            yield_now();
            if reached.get() > 0 {
                break me.borrow_mut().take().unwrap();
            }
        };
        assert_eq!(h.id(), id);
        assert!(h.join().unwrap_err().is_cancelled());
        assert_eq!(reached.get(), 1);
    });
}

#[test]
fn a_finished_coroutines_captures_are_dropped_before_its_handle() {
    greenhub::run(|| {
        let (guard, dropped) = DropFlag::new();
        let h = spawn(move || {
            let _guard = guard;
            7
        });
        yield_now();
        assert!(h.is_finished());
        assert!(dropped.get(), "the closure's captures outlived the coroutine");
        assert_eq!(h.join().unwrap(), 7);
    });
}

#[test]
fn exit_hooks_run_in_order_after_every_coroutine_is_unwound() {
    let log = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let (guard, dropped) = DropFlag::new();
        spawn(move || {
            let _guard = guard;
            greenhub::sleep(FOREVER);
        });
        yield_now();
        for name in ["first", "second"] {
            let (log, dropped) = (log.clone(), dropped.clone());
            greenhub::ext::at_exit(move || log.borrow_mut().push((name, dropped.get())));
        }
    });
    assert_eq!(*log.borrow(), [("first", true), ("second", true)]);
}

// ---------------------------------------------------------------------------------------------
// spawn_later

#[test]
fn spawn_later_starts_no_earlier_than_its_delay_and_never_inside_the_call() {
    greenhub::run(|| {
        let start = std::time::Instant::now();
        let delays = [30u64, 10, 20];
        let handles: Vec<_> = delays
            .iter()
            .map(|&ms| greenhub::spawn_later(Duration::from_millis(ms), move || start.elapsed()))
            .collect();
        let zero = greenhub::spawn_later(Duration::ZERO, || 7);
        assert!(!zero.is_finished(), "a zero delay ran inside spawn_later");
        assert_eq!(zero.join().unwrap(), 7);
        for (handle, ms) in handles.into_iter().zip(delays) {
            let started = handle.join().unwrap();
            assert!(started >= Duration::from_millis(ms), "started after {started:?} < {ms} ms");
        }
    });
}

#[test]
fn spawn_later_with_equal_delays_starts_in_call_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    greenhub::run(|| {
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let log = log.clone();
                greenhub::spawn_later(Duration::from_millis(2), move || log.borrow_mut().push(i))
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });
    assert_eq!(*log.borrow(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn spawn_later_cancelled_before_its_delay_never_runs_and_leaves_no_timer() {
    let (guard, dropped) = DropFlag::new();
    let ran = Rc::new(Cell::new(false));
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        greenhub::run(|| {
            let h = greenhub::spawn_later(FOREVER, {
                let ran = ran.clone();
                move || {
                    let _guard = guard;
                    ran.set(true);
                }
            });
            h.cancel();
            assert!(dropped.get(), "the body's captures were not dropped by cancel");
            assert!(h.join().unwrap_err().is_cancelled());
            // Its hour-long timer is gone: blocking forever now is reported at once.
            Event::new().wait();
        })
    }));
    assert!(!ran.get(), "a cancelled spawn_later body ran");
    let message = panic_message(&*caught.unwrap_err());
    assert!(message.contains("would block forever"), "{message}");
}

#[test]
fn a_pending_spawn_later_is_a_timer_not_a_deadlock() {
    let v = greenhub::run(|| {
        let h = greenhub::spawn_later(Duration::from_millis(5), || 42);
        h.join().unwrap() // the root blocks; only the start timer can wake anything
    });
    assert_eq!(v, 42);
}

#[test]
fn spawn_later_duration_max_never_starts_and_is_cancelled_at_the_end_of_run() {
    let (guard, dropped) = DropFlag::new();
    let ran = Rc::new(Cell::new(false));
    greenhub::run(|| {
        let ran = ran.clone();
        let h = greenhub::spawn_later(Duration::MAX, move || {
            let _guard = guard;
            ran.set(true);
        });
        greenhub::sleep(Duration::from_millis(1));
        assert!(!h.is_finished());
    });
    assert!(!ran.get());
    assert!(dropped.get());
    let caught = panic::catch_unwind(|| {
        greenhub::run(|| greenhub::spawn_later(Duration::MAX, || ()).join().unwrap())
    });
    let message = panic_message(&*caught.unwrap_err());
    assert!(message.contains("would block forever"), "{message}");
    assert!(message.contains("its start (spawn_later, never)"), "{message}");
}

#[test]
fn spawn_later_coroutines_can_be_cancelled_after_they_start() {
    greenhub::run(|| {
        let h = greenhub::spawn_later(Duration::from_millis(1), || greenhub::sleep(FOREVER));
        greenhub::sleep(Duration::from_millis(5)); // it has started and sleeps now
        h.cancel();
        assert!(h.join().unwrap_err().is_cancelled());
    });
}

/// What a suspending call made in an exit hook (the hub runs, no coroutine does) panics with.
fn panic_of_suspending_in_an_exit_hook(call: fn()) -> String {
    let payload = panic::catch_unwind(|| greenhub::run(|| greenhub::ext::at_exit(call)))
        .expect_err("suspending in an exit hook must panic");
    panic_message(&*payload)
}

#[test]
fn yield_now_in_an_exit_hook_names_yield_now_not_an_internal_function() {
    let msg = panic_of_suspending_in_an_exit_hook(yield_now);
    assert!(msg.starts_with("greenhub::yield_now called outside a coroutine"), "{msg}");
    assert!(!msg.contains("suspend called"), "{msg}");
}

#[test]
fn sleep_zero_in_an_exit_hook_names_sleep() {
    let msg = panic_of_suspending_in_an_exit_hook(|| greenhub::sleep(Duration::ZERO));
    assert!(msg.starts_with("greenhub::sleep called outside a coroutine"), "{msg}");
}

#[test]
fn a_socket_read_in_an_exit_hook_names_the_read() {
    let msg = panic_of_suspending_in_an_exit_hook(|| {
        let (a, _b) = greenhub::net::UnixStream::pair().unwrap();
        let _ = std::io::Read::read(&mut &a, &mut [0u8; 1]); // nothing to read: it would wait
    });
    assert!(msg.contains("a socket or pipe read) called outside a coroutine"), "{msg}");
}

#[test]
fn coroutine_ids_are_hash_keys_that_match_each_coroutines_own_current() {
    greenhub::run(|| {
        let handles: Vec<_> = (0..100).map(|_| spawn(greenhub::current)).collect();
        let mut ids: HashSet<CoroutineId> = handles.iter().map(|h| h.id()).collect();
        assert!(ids.insert(greenhub::current()), "the root's id is one of its children's");
        assert_eq!(ids.len(), 101, "ids of live coroutines collide");
        for h in handles {
            let id = h.id();
            assert!(!ids.insert(id), "an equal id hashed differently");
            let own = h.join().unwrap();
            assert!(ids.remove(&own), "current() inside {id} is not found under its handle's id");
        }
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), [greenhub::current()]);
    });
}

/// A value whose destructor panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a capture panicked on drop");
    }
}

/// Regression: cancelling a coroutine that had not started dropped its captures first and
/// recorded its end after; a capture that panicked on drop skipped the record, so its handle
/// never finished (a `join` waited forever) and the panic went into whoever cancelled it. At
/// the end of `run` the same panic cut the shutdown short: the exit hooks never ran.
#[test]
fn an_unstarted_coroutine_whose_capture_panics_on_drop_still_ends() {
    greenhub::run(|| {
        let capture = PanicsOnDrop;
        let h = greenhub::spawn(move || drop(capture));
        h.cancel(); // its capture's panic stays inside it
        assert!(h.is_finished());
        let err = h.join().unwrap_err();
        assert!(err.is_panic() && !err.is_cancelled(), "{err}");
        assert_eq!(panic_message(&*err.into_panic()), "a capture panicked on drop");
    });
    let hook_ran = Rc::new(Cell::new(false));
    let ran = Rc::clone(&hook_ran);
    let value = greenhub::run(move || {
        greenhub::ext::at_exit(move || ran.set(true));
        let capture = PanicsOnDrop;
        drop(greenhub::spawn(move || drop(capture))); // never starts: cancelled at the end
        7
    });
    assert_eq!(value, 7);
    assert!(hook_ran.get(), "the exit hooks ran");
}
