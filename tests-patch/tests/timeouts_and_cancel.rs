//! A `timeout` or cancel that fires while a coroutine is inside a patched libc call: the call
//! fails with ETIMEDOUT / ECANCELED (an unwind cannot cross the C frames of its caller), the
//! coroutine unwinds at its next greenhub suspension point, and `timeout` returns `Elapsed`.

use std::cell::Cell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;
use std::time::Duration;

use greenhub::{Elapsed, timeout};
use greenhub_tests::DropFlag;

#[test]
fn a_timeout_around_a_blocking_std_read_gives_elapsed_and_the_read_saw_etimedout() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, mut b) = UnixStream::pair().unwrap();
        let seen = Rc::new(Cell::new(None));
        let result = {
            let seen = seen.clone();
            timeout(Duration::from_millis(20), move || {
                let err = b.read(&mut [0u8; 1]).unwrap_err();
                seen.set(err.raw_os_error());
                "the closure went on after the error"
            })
        };
        assert!(matches!(result, Err(Elapsed { .. })), "{result:?}");
        assert_eq!(seen.get(), Some(libc::ETIMEDOUT));
        // The coroutine is fine afterwards: it suspends and resumes as usual.
        greenhub::sleep(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(1));
    });
}

#[test]
fn the_deferred_unwind_happens_at_the_next_suspension_point() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, mut b) = UnixStream::pair().unwrap();
        let reached = Rc::new(Cell::new(false));
        let r = reached.clone();
        let result = timeout(Duration::from_millis(20), move || {
            let _ = b.read(&mut [0u8; 1]); // fails with ETIMEDOUT; ignored
            greenhub::yield_now(); // the timeout unwinds from here
            r.set(true);
        });
        assert!(result.is_err());
        assert!(!reached.get(), "the code after the suspension point ran");
    });
}

#[test]
fn a_timeout_around_std_thread_sleep_gives_elapsed() {
    greenhub::patch::install();
    greenhub::run(|| {
        let result = timeout(Duration::from_millis(10), || {
            std::thread::sleep(Duration::from_secs(30));
        });
        assert!(result.is_err());
    });
}

#[test]
fn code_that_unwraps_the_etimedout_still_gives_elapsed() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, mut b) = UnixStream::pair().unwrap();
        let result = timeout(Duration::from_millis(10), move || {
            b.read(&mut [0u8; 1]).unwrap() // panics on ETIMEDOUT
        });
        assert!(result.is_err());
    });
}

#[test]
fn an_outer_timeout_firing_inside_an_inner_one_is_the_one_that_returns_err() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, mut b) = UnixStream::pair().unwrap();
        let inner_saw = Rc::new(Cell::new(None));
        let seen = inner_saw.clone();
        let outer = timeout(Duration::from_millis(10), move || {
            let inner = timeout(Duration::from_secs(30), || b.read(&mut [0u8; 1]));
            // The inner boundary does not claim the outer deadline: its closure returned.
            seen.set(Some(inner.map(|read| read.map_err(|e| e.raw_os_error()))));
        });
        assert!(outer.is_err(), "the outer timeout was lost");
        assert_eq!(inner_saw.get(), Some(Ok(Err(Some(libc::ETIMEDOUT)))));
    });
}

#[test]
fn cancelling_a_coroutine_blocked_in_a_std_read_unwinds_it() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, mut b) = UnixStream::pair().unwrap();
        let errno = Rc::new(Cell::new(None));
        let (guard, dropped) = DropFlag::new();
        let e = errno.clone();
        let reader = greenhub::spawn(move || {
            let _guard = guard;
            let err = b.read(&mut [0u8; 1]).unwrap_err();
            e.set(err.raw_os_error());
            greenhub::yield_now(); // the cancellation unwinds from here
            unreachable!("a cancelled coroutine ran past a suspension point");
        });
        greenhub::yield_now(); // let it block in read
        reader.cancel();
        assert!(reader.join().unwrap_err().is_cancelled());
        assert_eq!(errno.get(), Some(libc::ECANCELED));
        assert!(dropped.get(), "the cancelled coroutine's destructors did not run");
    });
}

#[test]
fn a_timeout_inside_a_blocking_poll_makes_it_fail_with_etimedout() {
    greenhub::patch::install();
    greenhub::run(|| {
        let (_silent, b) = UnixStream::pair().unwrap();
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        let result = timeout(Duration::from_millis(20), move || {
            let mut fds = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            // SAFETY: `fds` is a live array of one pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
            s.set(Some((rc, std::io::Error::last_os_error().raw_os_error())));
        });
        assert!(matches!(result, Err(Elapsed { .. })), "{result:?}");
        assert_eq!(seen.get(), Some((-1, Some(libc::ETIMEDOUT))));
    });
}

#[test]
fn a_timeout_inside_waitpid_makes_it_fail_with_etimedout_and_the_child_is_still_reaped() {
    greenhub::patch::install();
    greenhub::run(|| {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        let result = timeout(Duration::from_millis(20), move || {
            let mut status = 0;
            // SAFETY: `status` is a live out-parameter.
            let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
            s.set(Some((rc, std::io::Error::last_os_error().raw_os_error())));
        });
        assert!(matches!(result, Err(Elapsed { .. })), "{result:?}");
        assert_eq!(seen.get(), Some((-1, Some(libc::ETIMEDOUT))));
        // The interrupted wait reaped nothing: the child is still there to kill and reap.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    });
}

#[test]
fn a_timeout_or_cancel_inside_nanosleep_ends_the_sleep_early_with_success() {
    // The one exception to ETIMEDOUT / ECANCELED (docs/patching.md, "Timeouts and cancels"):
    // std::thread::sleep panics on any nanosleep error but EINTR.
    greenhub::patch::install();
    greenhub::run(|| {
        let rc = Rc::new(Cell::new(None));
        let r = rc.clone();
        let result = timeout(Duration::from_millis(10), move || {
            let long = libc::timespec { tv_sec: 30, tv_nsec: 0 };
            // SAFETY: `long` is a live timespec; `rem` may be null.
            r.set(Some(unsafe { libc::nanosleep(&long, std::ptr::null_mut()) }));
        });
        assert!(matches!(result, Err(Elapsed { .. })), "{result:?}");
        assert_eq!(rc.get(), Some(0));

        let rc = Rc::new(Cell::new(None));
        let r = rc.clone();
        let sleeper = greenhub::spawn(move || {
            let long = libc::timespec { tv_sec: 30, tv_nsec: 0 };
            // SAFETY: as above.
            r.set(Some(unsafe { libc::nanosleep(&long, std::ptr::null_mut()) }));
            greenhub::yield_now(); // the cancellation unwinds from here
        });
        greenhub::yield_now(); // let it fall asleep
        sleeper.cancel();
        assert!(sleeper.join().unwrap_err().is_cancelled());
        assert_eq!(rc.get(), Some(0));
    });
}
