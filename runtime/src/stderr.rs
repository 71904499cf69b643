//! greenhub's own lines on stderr: the panic hook's "which coroutine" line, the blocking
//! monitor's reports, warnings before an abort, the deadlock report.
//!
//! Guarantee: a line is not written when stderr cannot take it (a pipe or socket whose reader
//! is gone, a terminal that hung up): `eprintln!` panics on that error, and a panic inside the
//! panic hook aborts the process, so a program whose log collector had died was killed by the
//! first caught panic of a coroutine. Otherwise the line goes through `eprintln!`, so a test
//! harness that captures a test's output captures it too. Not guaranteed: a reader that goes
//! away between the look and the write (then `eprintln!` fails as before).

use std::fmt;

/// Writes `args` and a newline to stderr, unless stderr cannot take it.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    if crate::sys::write_would_fail(2) {
        return;
    }
    eprintln!("{args}");
}
