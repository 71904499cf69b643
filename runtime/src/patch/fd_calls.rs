//! The fd table's bookkeeping calls: `close`, `dup`s, `fcntl`, `ioctl`: what they change in the
//! table (a retired number, the program's own O_NONBLOCK), and what `F_GETFL` shows.

use std::ffi::c_int;

use super::blocking_call::{WAITS, entry_or_twin, guard, share_nonblocking_wish};
use super::fdtable::{self, Entry, Mode};
use super::real;

/// `fcntl`: hides the O_NONBLOCK the patch set from F_GETFL, records the program's own
/// O_NONBLOCK from F_SETFL (on a shared fd it reaches the kernel unchanged, and the fd stays
/// shared), and copies the entry to a duplicate.
pub(super) fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: forwards the caller's arguments unchanged (the caller's contract).
    let real = |arg: usize| unsafe { real::fcntl(fd, cmd, arg) };
    guard(-1, || match cmd {
        libc::F_GETFL => {
            let flags = real(arg);
            if flags < 0 || flags & libc::O_NONBLOCK == 0 {
                return flags;
            }
            match entry_or_twin(fd) {
                Some(e) if e.mode == WAITS => {
                    if e.still_describes(fd) {
                        flags & !libc::O_NONBLOCK
                    } else {
                        fdtable::clear(fd);
                        flags
                    }
                }
                _ => flags,
            }
        }
        libc::F_SETFL => {
            let wants = arg as c_int & libc::O_NONBLOCK != 0;
            match entry_or_twin(fd) {
                Some(e @ Entry { mode: Mode::Managed { .. }, .. }) if e.still_describes(fd) => {
                    let rc = real(arg | libc::O_NONBLOCK as usize);
                    if rc == 0 {
                        let mode = Mode::Managed { user_nonblocking: wants };
                        fdtable::set(fd, Entry { mode, ..e });
                        share_nonblocking_wish(fd, e, wants);
                    }
                    rc
                }
                // Shared: the program's wish reaches the kernel, and the fd stays shared.
                Some(e @ Entry { mode: Mode::Polled { .. }, .. }) if e.still_describes(fd) => {
                    let rc = real(arg);
                    if rc == 0 {
                        let mode = Mode::Polled { user_nonblocking: wants };
                        fdtable::set(fd, Entry { mode, ..e });
                        share_nonblocking_wish(fd, e, wants);
                    }
                    rc
                }
                _ => {
                    fdtable::clear(fd); // made afresh from the new flags on next use
                    real(arg)
                }
            }
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let new = real(arg);
            if new >= 0 {
                fdtable::copy(fd, new);
            }
            new
        }
        _ => real(arg),
    })
}

/// `ioctl(FIONBIO)` is how std's `set_nonblocking` works: treat it as F_SETFL's O_NONBLOCK.
///
/// # Safety
/// As for libc's ioctl with this request and argument.
pub(super) unsafe fn ioctl(fd: c_int, request: libc::c_ulong, arg: usize) -> c_int {
    // SAFETY: forwards the caller's arguments (the caller's contract).
    let real = |arg: usize| unsafe { real::ioctl(fd, request, arg) };
    if request != libc::FIONBIO || arg == 0 {
        return real(arg);
    }
    // SAFETY: FIONBIO's argument points to an int (the caller's contract).
    let wants = || unsafe { *(arg as *const c_int) } != 0;
    guard(-1, || match entry_or_twin(fd) {
        Some(e @ Entry { mode: Mode::Managed { .. }, .. }) if e.still_describes(fd) => {
            let wants = wants();
            let on: c_int = 1;
            let rc = real(&raw const on as usize);
            if rc == 0 {
                fdtable::set(fd, Entry { mode: Mode::Managed { user_nonblocking: wants }, ..e });
                share_nonblocking_wish(fd, e, wants);
            }
            rc
        }
        // Shared: the program's wish reaches the kernel, and the fd stays shared.
        Some(e @ Entry { mode: Mode::Polled { .. }, .. }) if e.still_describes(fd) => {
            let wants = wants();
            let rc = real(arg);
            if rc == 0 {
                fdtable::set(fd, Entry { mode: Mode::Polled { user_nonblocking: wants }, ..e });
                share_nonblocking_wish(fd, e, wants);
            }
            rc
        }
        _ => {
            fdtable::clear(fd);
            real(arg)
        }
    })
}
