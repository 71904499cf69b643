//! Fork: the documented way for a forked child to discard the hub it inherited
//! (`greenhub::ext::forget_inherited_hub`) and run a fresh one, while the parent's hub, whose
//! epoll instance the child shares, keeps working. The child never resumes or unwinds the
//! parent's coroutines.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhub::io::wait_readable;
use greenhub::sync::Event;
use greenhub::{sleep, spawn, timeout, yield_now};
use greenhub_tests::{process_lock, zombie_children};

/// The child's exit code when every check in it passed.
const CHILD_OK: i32 = 42;

/// Turns a hang (a lost fd event) into a failed assertion; never reached when all is well.
const SAFETY_NET: Duration = Duration::from_secs(10);

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2(2) to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2(2) just created both fds; nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_byte(fd: RawFd, byte: u8) -> bool {
    // SAFETY: writes one byte from a live local.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) == 1 }
}

/// One byte, or `None` at EOF or on an error.
fn read_byte(fd: RawFd) -> Option<u8> {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a live local.
    let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
    (n == 1).then_some(byte)
}

/// Writes `b'H'` to a pipe if it is dropped in any process but the one that made it: proof
/// that a forked child unwound (haunted) one of the parent's coroutines.
struct Haunt {
    owner: u32,
    fd: RawFd,
}

impl Drop for Haunt {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            write_byte(self.fd, b'H');
        }
    }
}

/// The child, after fork: discard the inherited hub, run a fresh one, exit with a code that
/// says which check failed. Never returns.
fn child(to_child: RawFd, to_parent: RawFd) -> ! {
    let code = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: this process was just forked from a thread running a hub, and this function
        // ends the process with `_exit` instead of returning into the parent's coroutine.
        unsafe { greenhub::ext::forget_inherited_hub() };
        greenhub::run(|| {
            let sleepers: Vec<_> = (1..=3u64)
                .map(|i| {
                    spawn(move || {
                        sleep(Duration::from_millis(i));
                        i
                    })
                })
                .collect();
            if sleepers.into_iter().map(|s| s.join().unwrap()).sum::<u64>() != 6 {
                return 1;
            }
            if greenhub::spawn_blocking(|| 5) != 5 {
                return 2;
            }
            // The parent says when it has checked its own hub.
            if wait_readable(to_child).is_err() || read_byte(to_child) != Some(b'g') {
                return 3;
            }
            if !write_byte(to_parent, b'k') {
                return 4;
            }
            CHILD_OK
        })
    }))
    .unwrap_or(101);
    // SAFETY: ends the child at once, without running the parent's atexit handlers or
    // destructors, or flushing the buffers it inherited.
    unsafe { libc::_exit(code) }
}

#[test]
fn a_forked_child_runs_a_fresh_hub_and_the_parents_hub_goes_on() {
    let _serial = process_lock();
    let parent = std::process::id();
    let (to_child_r, to_child_w) = pipe();
    let (to_parent_r, to_parent_w) = pipe();
    let (parent_only_r, parent_only_w) = pipe();
    let (haunt_r, haunt_w) = pipe();

    greenhub::run(|| {
        // Registered with the parent's epoll before the fork: an fd waiter, a timer, and a
        // coroutine parked on an Event that must never be unwound in the child.
        let fd_waiter = spawn({
            let fd = parent_only_r.as_raw_fd();
            move || wait_readable(fd).is_ok()
        });
        let timer_fired = Rc::new(Cell::new(false));
        let sleeper = spawn({
            let timer_fired = timer_fired.clone();
            move || {
                sleep(Duration::from_millis(10));
                timer_fired.set(true);
            }
        });
        let never = Rc::new(Event::new());
        let haunted = spawn({
            let (never, fd) = (never.clone(), haunt_w.as_raw_fd());
            move || {
                let _haunt = Haunt { owner: parent, fd };
                never.wait();
            }
        });
        yield_now(); // all three are suspended now

        // SAFETY: fork has no memory preconditions; the child only runs `child`, which ends
        // with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            child(to_child_r.as_raw_fd(), to_parent_w.as_raw_fd());
        }
        // The parent: the child's ends are the child's alone (so its death reads as EOF), and
        // only the child may write to the haunt pipe from now on.
        drop((to_child_r, to_parent_w, haunt_w));

        // The parent's hub still gets its fd events and timers while the child runs its own.
        write_byte(parent_only_w.as_raw_fd(), b'p');
        let woke = timeout(SAFETY_NET, || fd_waiter.join().unwrap());
        assert_eq!(woke, Ok(true), "the parent's fd waiter was not woken");
        sleeper.join().unwrap();
        assert!(timer_fired.get());

        // Let the child finish, and hear from it through this hub.
        assert!(write_byte(to_child_w.as_raw_fd(), b'g'));
        let heard = timeout(SAFETY_NET, || wait_readable(to_parent_r.as_raw_fd()).is_ok());
        assert_eq!(heard, Ok(true), "the parent's hub did not see the child's answer");
        assert_eq!(read_byte(to_parent_r.as_raw_fd()), Some(b'k'), "the child's hub failed");

        // Wait for it to exit without reaping it (it is a zombie then), then reap it.
        let exited = greenhub::spawn_blocking(move || wait_exit_no_reap(pid));
        assert!(exited, "waitid: {}", io::Error::last_os_error());
        assert!(zombie_children().contains(&(pid as u32)), "an exited child is a zombie");
        let status = greenhub::spawn_blocking(move || waitpid(pid));
        assert!(libc::WIFEXITED(status), "the child died abnormally: status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_OK, "a check in the child failed");
        assert!(!zombie_children().contains(&(pid as u32)), "the reaped child is still a zombie");

        // Every writer of the haunt pipe is closed: EOF means the child never unwound the
        // parent's coroutine.
        assert_eq!(read_byte(haunt_r.as_raw_fd()), None, "the child unwound a parent coroutine");
        never.set();
        haunted.join().unwrap();
    });
}

/// Blocks until `pid` has exited, leaving it unreaped (`WNOWAIT`).
fn wait_exit_no_reap(pid: libc::pid_t) -> bool {
    // SAFETY: an all-zero siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a live siginfo_t for waitid to fill.
    unsafe {
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) == 0
    }
}

/// Reaps `pid`, returning its wait status.
fn waitpid(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int for waitpid to fill.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return status;
        }
        let err = io::Error::last_os_error();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "waitpid: {err}");
    }
}
