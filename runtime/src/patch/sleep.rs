//! `nanosleep` and `clock_nanosleep`: a greenhub sleep inside a coroutine, libc's outside.

use std::ffi::c_int;
use std::time::Duration;

use super::active;
use super::blocking_call::{Dir, guard, wait};
use super::real;
use crate::coroutine;
use crate::hub::try_hub;

/// `nanosleep` / `clock_nanosleep` for `d` from now: a greenhub sleep inside a coroutine.
/// Returns `None` when the call must go to libc (outside a coroutine). A sleep cut short by a
/// timeout or cancel returns early with success: failing it would make `std::thread::sleep`
/// panic (it accepts only EINTR), and an EINTR would make a retry loop spin.
pub(super) fn sleep(d: Duration) -> Option<()> {
    if !active() {
        return None;
    }
    guard(Some(()), || {
        let hub = try_hub()?;
        let _ = coroutine::without_unwinding(hub, || crate::sleep(d));
        Some(())
    })
}

/// `clock_nanosleep(clock, flags, req)` on a clock whose time greenhub's timers do not keep
/// (`CLOCK_BOOTTIME`, which goes on while the machine is suspended, and the `_ALARM` clocks,
/// which also wake it): a timerfd on that very clock, armed as the call asks (relative, or
/// absolute with `TIMER_ABSTIME`), waited on through the hub, so the sleep ends when the
/// kernel's would. First the real call for no time at all, which answers at once what libc
/// answers at once (`EPERM` without `CAP_WAKE_ALARM`, `EOPNOTSUPP` without an RTC, `EINVAL`):
/// then the same error. `None` when the call must go to libc: outside a coroutine, a request
/// of no time (a timerfd armed for 0 is disarmed), or no timerfd to be had. A sleep cut short
/// by a timeout or cancel returns early with success, as [`sleep`] does.
pub(super) fn sleep_on_clock(
    clock: libc::clockid_t,
    flags: c_int,
    req: &libc::timespec,
) -> Option<c_int> {
    if !active() || duration_of(req).is_none_or(|d| d.is_zero()) {
        return None;
    }
    guard(None, || {
        let none = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a live timespec; no remainder wanted. A relative sleep of 0 returns at once.
        let refused = unsafe { real::clock_nanosleep(clock, 0, &none, std::ptr::null_mut()) };
        if refused != 0 {
            return Some(refused);
        }
        // SAFETY: timerfd_create takes a clock and flags; the result is checked.
        let fd = unsafe { real::timerfd_create(clock, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let spec = libc::itimerspec { it_interval: none, it_value: *req };
        let abs = if flags & libc::TIMER_ABSTIME != 0 { libc::TFD_TIMER_ABSTIME } else { 0 };
        // SAFETY: `spec` is a live itimerspec; no old value wanted.
        let armed = unsafe { libc::timerfd_settime(fd, abs, &spec, std::ptr::null_mut()) } == 0;
        if armed {
            let _ = wait(fd, Dir::Read, None); // expired, or cut short by a timeout or cancel
        }
        // SAFETY: the timerfd was made above and belongs to this call only.
        unsafe { real::close(fd) };
        armed.then_some(0)
    })
}

/// A timespec as a duration; `None` when libc would reject it (EINVAL).
pub(super) fn duration_of(ts: &libc::timespec) -> Option<Duration> {
    let nanos = u32::try_from(ts.tv_nsec).ok().filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(u64::try_from(ts.tv_sec).ok()?, nanos))
}
