//! Stack overflow: a coroutine that runs off its stack is reported on stderr as such, then the
//! process aborts (not a bare SIGSEGV). Each test reruns itself in a child process, which
//! overflows, and checks how the child died.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use greenhub_tests::rerun_test_in_child;

/// Set in the child: the mode that overflows.
const CHILD: &str = "GREENHUB_TEST_OVERFLOW_CHILD";

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
