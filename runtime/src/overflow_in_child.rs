//! Test support (unit tests only): an overflow that must abort, even with recovery on, provoked
//! in a child run of the same test binary (the abort would end the test runner otherwise).

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// Set in the child run: the test there provokes the overflow instead of checking for it.
const CHILD: &str = "GREENHUB_UNIT_OVERFLOW_CHILD";

/// Recurses with 512-byte frames until the stack overflows.
pub(crate) fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(std::hint::black_box(frame)[7])
}

/// The body of unit test `test` (its full path): in the child run, runs `provoke` as a coroutine
/// of a hub with `recover_stack_overflow(true)`, which must overflow inside greenhub's own
/// bookkeeping; in the parent, checks that the child aborted with the report saying so.
pub(crate) fn aborts_inside_bookkeeping(test: &str, provoke: impl FnOnce() -> u64 + 'static) {
    if std::env::var_os(CHILD).is_some() {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads a live rlimit (no core file for the expected abort).
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        crate::Builder::new().recover_stack_overflow(true).run(|| {
            let _ = crate::spawn(provoke).join();
        });
        unreachable!("the overflow must abort");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", out.status);
    assert!(stderr.contains("inside greenhub's own bookkeeping"), "{stderr}");
}
