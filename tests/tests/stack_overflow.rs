//! Stack overflow: a coroutine that runs off its stack is reported on stderr as such, then the
//! process aborts (not a bare SIGSEGV); with `Builder::recover_stack_overflow(true)` only that
//! coroutine ends (`JoinError::is_stack_overflow`), nothing on its stack is dropped, its stack
//! is never reused, and the hub goes on, except in the root. Each test reruns itself in a child
//! process, which overflows, and checks how the child ended.

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::Event;
use greenhub::{JoinHandle, spawn};
use greenhub_tests::{DropFlag, rerun_test_in_child};

/// Set in the child: the mode that overflows.
const CHILD: &str = "GREENHUB_TEST_OVERFLOW_CHILD";

/// Forces the mprotect guard pages in a child (read when its first hub starts).
const FORCE_FALLBACK: &str = "GREENHUB_STACK_GUARDS";

/// Recurses until the stack runs out (the frame holds a buffer the optimiser cannot drop).
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(std::hint::black_box(frame)[7])
}

/// In the child: no core file for the expected abort.
fn no_core_dump() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads a live rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

fn assert_reported_overflow(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "not aborted: {}\n{stderr}", out.status);
    assert!(stderr.contains("overflowed its stack"), "no overflow report:\n{stderr}");
    assert!(stderr.contains(expected), "expected `{expected}` in:\n{stderr}");
}

#[test]
fn a_spawned_coroutine_overflowing_is_reported_and_aborts() {
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        greenhub::run(|| {
            let h = greenhub::spawn(|| recurse(0));
            eprintln!("overflowing coroutine: {}", h.id());
            let _ = h.join();
        });
        unreachable!("the overflow must abort the process");
    }
    let out =
        rerun_test_in_child("a_spawned_coroutine_overflowing_is_reported_and_aborts", CHILD, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("overflowing coroutine: "))
        .unwrap_or_else(|| panic!("the child did not reach the overflow:\n{stderr}"));
    let named = format!("coroutine {id} (spawned at tests/tests/stack_overflow.rs:");
    assert_reported_overflow(&out, &named);
}

#[test]
fn the_root_coroutine_overflowing_a_small_stack_is_reported_with_its_size() {
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        greenhub::Builder::new().stack_size(64 * 1024).run(|| recurse(0));
        unreachable!("the overflow must abort the process");
    }
    let out = rerun_test_in_child(
        "the_root_coroutine_overflowing_a_small_stack_is_reported_with_its_size",
        CHILD,
        "1",
    );
    assert_reported_overflow(&out, "(size 65536 bytes)");
}

#[test]
fn a_segfault_that_is_not_an_overflow_is_not_reported_as_one() {
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        greenhub::run(|| {
            let h = greenhub::spawn(|| {
                // SAFETY: deliberately not safe: a write through a null pointer, to fault.
                unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
            });
            let _ = h.join();
        });
        unreachable!("the fault must kill the process");
    }
    let out = rerun_test_in_child(
        "a_segfault_that_is_not_an_overflow_is_not_reported_as_one",
        CHILD,
        "1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{}\n{stderr}", out.status);
    assert!(!stderr.contains("overflowed its stack"), "misreported:\n{stderr}");
}

/// A hub that ends overflowing coroutines instead of aborting.
fn recovering() -> greenhub::Builder {
    greenhub::Builder::new().recover_stack_overflow(true)
}

/// Reruns `test` in a child (with `var=value`), expects it to exit 0 and to have printed
/// `survived`; returns its stderr.
fn child_survives(test: &str, var: &str, value: &str) -> String {
    let out = rerun_test_in_child(test, var, value);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child: {}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("survived"), "the child did not get through:\n{stdout}\n{stderr}");
    stderr
}

/// Spawns a coroutine that overflows with a guard and an `Rc` clone on its stack.
fn overflowing(flag: DropFlag, held: Rc<()>) -> JoinHandle<u64> {
    greenhub::coroutine::Builder::new().name("deep").stack_size(64 * 1024).spawn(move || {
        let _flag = flag;
        let _held = held;
        recurse(0)
    })
}

#[test]
fn with_recovery_an_overflow_ends_that_coroutine_only_and_drops_nothing_on_its_stack() {
    if std::env::var_os(CHILD).is_some() {
        recovering().run(|| {
            let others: Vec<_> = (0..5u64)
                .map(|i| {
                    spawn(move || {
                        greenhub::sleep(Duration::from_millis(1));
                        i
                    })
                })
                .collect();
            let (flag, dropped) = DropFlag::new();
            let held = Rc::new(());
            let err = overflowing(flag, held.clone()).join().unwrap_err();
            assert!(err.is_stack_overflow() && !err.is_panic() && !err.is_cancelled(), "{err}");
            assert!(err.to_string().contains("overflowed its stack (65536 bytes)"), "{err}");
            assert!(!dropped.get(), "a value on the dead stack was dropped");
            assert_eq!(Rc::strong_count(&held), 2, "the clone on the dead stack is leaked");
            let sum: u64 = others.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, 10, "the other coroutines went on");
        });
        println!("survived");
        return;
    }
    let stderr = child_survives(
        "with_recovery_an_overflow_ends_that_coroutine_only_and_drops_nothing_on_its_stack",
        CHILD,
        "1",
    );
    assert!(stderr.contains("\"deep\" (spawned at tests/tests/stack_overflow.rs:"), "{stderr}");
    assert!(stderr.contains("overflowed its stack (size 65536 bytes); it ends with a JoinError"));
}

/// The timers of a coroutine that overflowed go with it (their guards were on the dead stack and
/// are never dropped): a `timeout` it was inside does not keep the hub waiting, so a root that
/// then waits for nothing gets its deadlock report at once, not an hour later.
#[test]
fn with_recovery_an_overflowed_coroutines_timers_go_with_it() {
    if std::env::var_os(CHILD).is_some() {
        // SAFETY: alarm has no preconditions (a hang fails the test).
        unsafe { libc::alarm(30) };
        let deadlock = std::panic::catch_unwind(|| {
            recovering().run(|| {
                let deep = greenhub::coroutine::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(|| greenhub::timeout(Duration::from_secs(3600), || recurse(0)));
                assert!(deep.join().unwrap_err().is_stack_overflow());
                greenhub::sync::Event::new().wait(); // nothing can wake it
            })
        });
        let message = greenhub_tests::panic_message(&*deadlock.expect_err("the wait returned"));
        assert!(message.contains("would block forever"), "{message}");
        println!("survived");
        return;
    }
    child_survives("with_recovery_an_overflowed_coroutines_timers_go_with_it", CHILD, "1");
}

/// A member of a `Group` or `sync::Pool` that overflows still leaves them: its membership and
/// its pool slot go with the task, not with what its body held on the dead stack. A lock it
/// held stays held (nothing on the dead stack is dropped).
#[test]
fn with_recovery_an_overflowing_member_leaves_its_group_and_pool_and_its_lock_stays_held() {
    if std::env::var_os(CHILD).is_some() {
        recovering().run(|| {
            let group = greenhub::sync::Group::new();
            let overflowed = group.spawn(|| recurse(0));
            assert!(group.join_timeout(Duration::from_secs(10)), "the group emptied");
            assert!(overflowed.join().unwrap_err().is_stack_overflow());
            assert_eq!(group.len(), 0);

            let pool = greenhub::sync::Pool::new(1);
            let overflowed = pool.spawn(|| recurse(0));
            assert!(overflowed.join().unwrap_err().is_stack_overflow());
            assert_eq!(pool.spawn(|| 7).join().unwrap(), 7, "the only slot was given back");

            let err = greenhub::timeout(Duration::from_secs(10), || {
                pool.map([1u64, 2], |n| if n == 2 { recurse(0) } else { n })
            })
            .expect("map returns the overflow instead of waiting forever")
            .unwrap_err();
            assert!(err.is_stack_overflow(), "{err}");
            assert_eq!(pool.len(), 0);

            let lock = Rc::new(greenhub::sync::Mutex::new(0u32));
            let holder = {
                let lock = lock.clone();
                spawn(move || {
                    let _guard = lock.lock();
                    recurse(0)
                })
            };
            assert!(holder.join().unwrap_err().is_stack_overflow());
            assert!(lock.try_lock().is_none(), "the guard on the dead stack still holds the lock");
        });
        println!("survived");
        return;
    }
    child_survives(
        "with_recovery_an_overflowing_member_leaves_its_group_and_pool_and_its_lock_stays_held",
        CHILD,
        "1",
    );
}

#[test]
fn with_recovery_many_overflows_in_a_row_are_survived_and_no_dead_stack_is_reused() {
    if std::env::var_os(CHILD).is_some() {
        recovering().stack_size(64 * 1024).run(|| {
            let mut dead = Vec::new();
            for round in 0..20 {
                let top = Rc::new(Cell::new(0usize));
                let h = spawn({
                    let top = top.clone();
                    move || {
                        let here = 0u8;
                        top.set(std::hint::black_box(&here) as *const u8 as usize);
                        recurse(0)
                    }
                });
                let bystander = spawn(move || round * 2);
                assert!(h.join().unwrap_err().is_stack_overflow(), "round {round}");
                assert_eq!(bystander.join().unwrap(), round * 2);
                dead.push(top.get());
            }
            // Fresh coroutines never land on a quarantined stack.
            let tops: Vec<_> = (0..2000)
                .map(|_| {
                    spawn(|| {
                        let here = 0u8;
                        std::hint::black_box(&here) as *const u8 as usize
                    })
                })
                .collect();
            for h in tops {
                let top = h.join().unwrap();
                for &d in &dead {
                    assert!(top.abs_diff(d) >= 64 * 1024, "{top:#x} is on dead stack {d:#x}");
                }
            }
        });
        println!("survived");
        return;
    }
    let stderr = child_survives(
        "with_recovery_many_overflows_in_a_row_are_survived_and_no_dead_stack_is_reused",
        CHILD,
        "1",
    );
    assert_eq!(stderr.matches("overflowed its stack").count(), 20, "{stderr}");
}

#[test]
fn with_recovery_an_overflow_in_the_root_still_aborts_with_the_report() {
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        recovering().stack_size(64 * 1024).run(|| recurse(0));
        unreachable!("the root's overflow must abort the process");
    }
    let out = rerun_test_in_child(
        "with_recovery_an_overflow_in_the_root_still_aborts_with_the_report",
        CHILD,
        "1",
    );
    assert_reported_overflow(&out, "in the root coroutine, whose end is the end of run");
}

/// Recurses until the stack runs out when dropped: a destructor that overflows.
struct DeepDrop;

impl Drop for DeepDrop {
    fn drop(&mut self) {
        recurse(0);
    }
}

#[test]
fn with_recovery_an_overflow_while_unwinding_aborts_with_one_report_that_says_so() {
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        recovering().run(|| {
            let h = spawn(|| {
                let _deep = DeepDrop;
                greenhub::sleep(Duration::from_secs(3600));
            });
            greenhub::yield_now();
            h.cancel();
            let _ = h.join();
        });
        unreachable!("an overflow while unwinding must abort the process");
    }
    let out = rerun_test_in_child(
        "with_recovery_an_overflow_while_unwinding_aborts_with_one_report_that_says_so",
        CHILD,
        "1",
    );
    assert_reported_overflow(&out, "while it was unwinding");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("the hub goes on"), "a recovery announced, then an abort:\n{stderr}");
    assert_eq!(stderr.matches("overflowed its stack").count(), 1, "{stderr}");
}

#[test]
fn with_recovery_and_mprotect_guards_an_overflow_is_survived_too() {
    if std::env::var_os(FORCE_FALLBACK).is_some() {
        assert!(!greenhub::ext::lightweight_stack_guards());
        recovering().run(|| {
            let (flag, dropped) = DropFlag::new();
            assert!(overflowing(flag, Rc::new(())).join().unwrap_err().is_stack_overflow());
            assert!(!dropped.get());
            assert!(
                overflowing(DropFlag::new().0, Rc::new(())).join().unwrap_err().is_stack_overflow()
            );
        });
        println!("survived");
        return;
    }
    child_survives(
        "with_recovery_and_mprotect_guards_an_overflow_is_survived_too",
        FORCE_FALLBACK,
        "mprotect",
    );
}

#[test]
fn with_mprotect_guards_an_overflow_is_reported_and_aborts() {
    if std::env::var_os(FORCE_FALLBACK).is_some() {
        no_core_dump();
        greenhub::run(|| {
            let _ = spawn(|| recurse(0)).join();
        });
        unreachable!("the overflow must abort the process");
    }
    let out = rerun_test_in_child(
        "with_mprotect_guards_an_overflow_is_reported_and_aborts",
        FORCE_FALLBACK,
        "mprotect",
    );
    assert_reported_overflow(&out, "raise Builder::stack_size");
}

#[test]
fn a_guard_still_catches_an_overflow_on_a_stack_whose_pages_were_given_back() {
    if std::env::var_os(CHILD).is_some() {
        recovering().stack_size(64 * 1024).run(|| {
            // 5,000 finished coroutines: the pool gives the oldest stacks' pages back
            // (MADV_DONTNEED), and those cold stacks are handed out again below.
            let gate = Rc::new(Event::new());
            let all: Vec<_> = (0..5000)
                .map(|_| {
                    let gate = gate.clone();
                    spawn(move || gate.wait())
                })
                .collect();
            greenhub::yield_now();
            gate.set();
            all.into_iter().for_each(|h| h.join().unwrap());
            let again: Vec<_> = (0..3000).map(|_| spawn(|| recurse(0))).collect();
            for h in again {
                assert!(h.join().unwrap_err().is_stack_overflow());
            }
        });
        println!("survived");
        return;
    }
    child_survives(
        "a_guard_still_catches_an_overflow_on_a_stack_whose_pages_were_given_back",
        CHILD,
        "1",
    );
}

/// Regression: the overflow report wrote a coroutine's name raw, while every other report
/// writes it as `{:?}` does (quotes and control characters escaped).
#[test]
fn the_overflow_report_names_a_coroutine_as_every_other_report_does() {
    const NAME: &str = "say \"hi\"\tit's \\ me";
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        greenhub::run(|| {
            let h = greenhub::coroutine::Builder::new().name(NAME).spawn(|| recurse(0));
            let _ = h.join();
        });
        unreachable!("the overflow must abort the process");
    }
    let test = "the_overflow_report_names_a_coroutine_as_every_other_report_does";
    let out = rerun_test_in_child(test, CHILD, "1");
    assert_reported_overflow(&out, &format!("{NAME:?} (spawned at tests/tests/stack_overflow.rs:"));
}

greenhub::local! { static DEPTH: Cell<u64> = const { Cell::new(0) }; }

/// Recurses until the stack runs out, using a `local!` in every frame (greenhub borrows its
/// task table inside each use).
#[inline(never)]
fn recurse_through_a_local(depth: u64) -> u64 {
    let seen = std::hint::black_box(DEPTH.with(Cell::get));
    if depth == u64::MAX {
        return seen;
    }
    recurse_through_a_local(depth + 1) + std::hint::black_box(depth)
}

/// Shifts where the stack runs out by `k` small frames, so that over several `k` the overflow
/// lands both inside and outside greenhub's borrow.
#[inline(never)]
fn shifted(k: u32) -> u64 {
    if k == 0 { recurse_through_a_local(0) } else { shifted(k - 1) + std::hint::black_box(1) }
}

/// Regression: an overflow inside a `local!` access, while greenhub held its task table
/// borrowed, was recovered with the borrow left on the dead stack: the hub then panicked
/// ("already borrowed") instead of going on or aborting with the report. Now every borrow a
/// coroutine's code can reach is greenhub's bookkeeping: an overflow there aborts with the
/// report, one elsewhere ends the coroutine alone.
#[test]
fn with_recovery_an_overflow_inside_greenhubs_borrow_aborts_with_the_report_never_a_panic() {
    let test =
        "with_recovery_an_overflow_inside_greenhubs_borrow_aborts_with_the_report_never_a_panic";
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        recovering().run(|| {
            for k in 0..32 {
                let overflowed = spawn(move || shifted(k)).join().unwrap_err();
                assert!(overflowed.is_stack_overflow(), "{overflowed}");
                assert_eq!(spawn(|| 42).join().unwrap(), 42, "the hub goes on");
            }
        });
        println!("survived");
        return;
    }
    let out = rerun_test_in_child(test, CHILD, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        assert!(stdout.contains("survived"), "{stdout}\n{stderr}");
    } else {
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", out.status);
        assert!(stderr.contains("bookkeeping"), "not the bookkeeping report:\n{stderr}");
    }
    assert!(!stderr.contains("already borrowed"), "{stderr}");
}

/// Regression: after a recovered overflow, the dead coroutine's `local!` values were dropped
/// on the loop's stack, outside any coroutine: a destructor that asked `current()` (or
/// suspended, or used a local) panicked out of `run`. They are leaked with the stack now.
#[test]
fn with_recovery_an_overflowed_coroutines_locals_are_leaked_not_dropped_outside_it() {
    /// Holds a flag that a drop would set; its destructor asks who runs it first.
    struct AsksWhoItIs {
        _flag: DropFlag,
    }
    impl Drop for AsksWhoItIs {
        fn drop(&mut self) {
            let _ = greenhub::current(); // panics outside a coroutine
        }
    }
    greenhub::local! {
        static HELD: std::cell::RefCell<Option<AsksWhoItIs>> = const { std::cell::RefCell::new(None) };
    }
    let test = "with_recovery_an_overflowed_coroutines_locals_are_leaked_not_dropped_outside_it";
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        recovering().run(|| {
            let (guard, dropped) = DropFlag::new();
            let h = spawn(move || {
                HELD.with(|held| *held.borrow_mut() = Some(AsksWhoItIs { _flag: guard }));
                recurse(0)
            });
            assert!(h.join().unwrap_err().is_stack_overflow());
            assert!(!dropped.get(), "leaked, like everything of the dead coroutine");
            assert_eq!(spawn(|| 42).join().unwrap(), 42);
        });
        println!("survived");
        return;
    }
    child_survives(test, CHILD, "1");
}

/// Regression: the smallest stack a coroutine could ask for (one page) could not be unwound:
/// a cancel, a `timeout` or the shutdown aborted with an overflow report. A stack is at least
/// 16 KiB now. (Not a panic: with `RUST_BACKTRACE` set, the panic hook's backtrace needs more
/// than that; the overflow is then reported as one, and the process aborts.)
#[test]
fn the_smallest_stack_a_coroutine_can_ask_for_can_be_cancelled_and_shut_down() {
    let test = "the_smallest_stack_a_coroutine_can_ask_for_can_be_cancelled_and_shut_down";
    if std::env::var_os(CHILD).is_some() {
        no_core_dump();
        greenhub::run(|| {
            let tiny = || greenhub::coroutine::Builder::new().stack_size(1);
            let h = tiny().spawn(|| greenhub::sleep(Duration::from_secs(3600)));
            greenhub::yield_now(); // it sleeps
            h.cancel();
            assert!(h.join().unwrap_err().is_cancelled());
            let timed = tiny().spawn(|| greenhub::timeout(Duration::ZERO, greenhub::yield_now));
            assert!(timed.join().is_ok());
            drop(tiny().spawn(|| greenhub::sleep(Duration::from_secs(3600)))); // for the shutdown
        });
        println!("survived");
        return;
    }
    child_survives(test, CHILD, "1");
}
