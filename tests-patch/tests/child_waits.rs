//! `waitpid`, `wait4` and `waitid` under the patch return what libc returns: a wait for stops
//! blocks until the child stops, a wait for a process that is not a child fails with ECHILD at
//! once, a `waitid` without an info struct still waits. In a coroutine, each suspends only its
//! caller (a ticker runs meanwhile).
//!
//! Every child is reaped through the libc calls under test, which clippy's `zombie_processes`
//! cannot see; each test that starts children checks that none is left a zombie.

#![allow(clippy::zombie_processes)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use greenhub_patch_tests::{Ticker, errno};

/// A child that stops itself (SIGSTOP) after `seconds`, then would exit 0.
fn child_that_stops_after(seconds: &str) -> Child {
    let script = format!("sleep {seconds}; kill -STOP $$; exit 0");
    Command::new("sh").args(["-c", &script]).spawn().unwrap()
}

/// A child that exits with `code` after `seconds`.
fn child_that_exits_after(seconds: &str, code: i32) -> Child {
    let script = format!("sleep {seconds}; exit {code}");
    Command::new("sh").args(["-c", &script]).spawn().unwrap()
}

fn pid_of(child: &Child) -> libc::pid_t {
    child.id() as libc::pid_t
}

/// Kills and reaps a child, stopped or not (libc's calls: `kill` is not patched).
fn kill_and_reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: plain calls on our own child's pid, with a valid out-pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
    }
}

/// `waitid(P_PID, pid, &info, options)`: its return value and the info it filled in.
fn waitid_pid(pid: libc::pid_t, options: i32) -> (i32, libc::siginfo_t) {
    // SAFETY: an all-zero siginfo_t is a valid value of the plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer.
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options) };
    (rc, info)
}

/// The pid and `si_code` a waitid reported.
fn reported(info: &libc::siginfo_t) -> (libc::pid_t, i32) {
    // SAFETY: waitid filled in a SIGCHLD siginfo, whose si_pid field is the one read.
    (unsafe { info.si_pid() }, info.si_code)
}

#[test]
fn waitid_for_stops_returns_only_once_the_child_stopped() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    // Outside a hub: libc's call, blocking until the stop.
    let child = child_that_stops_after("0.2");
    let start = Instant::now();
    let (rc, info) = waitid_pid(pid_of(&child), libc::WSTOPPED);
    assert_eq!(rc, 0);
    assert_eq!(reported(&info), (pid_of(&child), libc::CLD_STOPPED), "returned before the stop");
    assert!(start.elapsed() >= Duration::from_millis(150), "returned after {:?}", start.elapsed());
    kill_and_reap(pid_of(&child));
    // In a coroutine: the same result, and only the caller waits.
    greenhub::run(|| {
        let child = child_that_stops_after("0.2");
        let ticker = Ticker::start();
        let (rc, info) = waitid_pid(pid_of(&child), libc::WSTOPPED);
        assert_eq!(rc, 0);
        assert_eq!(reported(&info), (pid_of(&child), libc::CLD_STOPPED), "returned before it");
        assert!(ticker.stop() > 0, "no other coroutine ran while waitid waited");
        kill_and_reap(pid_of(&child));
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

#[test]
fn waitpid_for_stops_in_a_coroutine_returns_the_stop() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let child = child_that_stops_after("0.1");
        let ticker = Ticker::start();
        let mut status = 0;
        // SAFETY: a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid_of(&child), &mut status, libc::WUNTRACED) };
        assert_eq!(rc, pid_of(&child));
        assert!(libc::WIFSTOPPED(status), "status {status:#x} is not a stop");
        assert_eq!(libc::WSTOPSIG(status), libc::SIGSTOP);
        assert!(ticker.stop() > 0, "no other coroutine ran while waitpid waited");
        kill_and_reap(pid_of(&child));
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

#[test]
fn a_wait_for_a_process_that_is_not_a_child_fails_with_echild_at_once() {
    greenhub::patch::install();
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, parent, 0) } as i32;
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let waits = move || {
        let mut status = 0;
        // SAFETY: an all-zero siginfo_t and rusage are valid values of the plain C structs.
        let (mut info, mut usage) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let (by_pid, by_pidfd) = (parent as libc::id_t, pidfd as libc::id_t);
        // SAFETY: valid out-pointers; `pidfd` is open.
        unsafe {
            [
                (libc::waitpid(parent, &mut status, 0), errno()),
                (libc::wait4(parent, &mut status, 0, &mut usage), errno()),
                (libc::waitid(libc::P_PID, by_pid, &mut info, libc::WEXITED), errno()),
                (libc::waitid(libc::P_PIDFD, by_pidfd, &mut info, libc::WEXITED), errno()),
            ]
        }
    };
    let echild = [(-1, libc::ECHILD); 4];
    assert_eq!(waits(), echild, "outside a hub");
    greenhub::run(move || {
        let start = Instant::now();
        let results = greenhub::timeout(Duration::from_secs(1), waits);
        assert_eq!(results.ok(), Some(echild), "in a coroutine, after {:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_millis(500), "took {:?}", start.elapsed());
    });
    // SAFETY: the pidfd was opened above and is closed once.
    unsafe { libc::close(pidfd) };
}

#[test]
fn wait4_suspends_only_its_caller_and_reports_the_exit_and_the_usage() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let child = child_that_exits_after("0.1", 5);
        let ticker = Ticker::start();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of the plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers.
        let rc = unsafe { libc::wait4(pid_of(&child), &mut status, 0, &mut usage) };
        assert_eq!(rc, pid_of(&child));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 5, "status {status:#x}");
        assert!(usage.ru_maxrss > 0, "wait4 did not fill in the child's usage");
        assert!(ticker.stop() > 0, "no other coroutine ran while wait4 waited");
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

#[test]
fn waitid_for_an_exit_suspends_only_its_caller_with_or_without_an_info_struct() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let child = child_that_exits_after("0.1", 4);
        let ticker = Ticker::start();
        let (rc, info) = waitid_pid(pid_of(&child), libc::WEXITED);
        assert_eq!(rc, 0);
        assert_eq!(reported(&info), (pid_of(&child), libc::CLD_EXITED));
        // SAFETY: as in `reported`.
        assert_eq!(unsafe { info.si_status() }, 4);
        assert!(ticker.stop() > 0, "no other coroutine ran while waitid waited");

        // No info struct (Linux allows a null one): by pid, and for any child.
        for idtype in [libc::P_PID, libc::P_ALL] {
            let child = child_that_exits_after("0.1", 0);
            let id = if idtype == libc::P_PID { pid_of(&child) as libc::id_t } else { 0 };
            let start = Instant::now();
            // SAFETY: a null info pointer is allowed.
            let rc = unsafe { libc::waitid(idtype, id, std::ptr::null_mut(), libc::WEXITED) };
            assert_eq!(rc, 0, "idtype {idtype}");
            assert!(
                start.elapsed() >= Duration::from_millis(50),
                "idtype {idtype}: returned after {:?}, before the child exited",
                start.elapsed()
            );
            let mut status = 0;
            // SAFETY: a valid out-pointer.
            let again = unsafe { libc::waitpid(pid_of(&child), &mut status, libc::WNOHANG) };
            assert_eq!((again, errno()), (-1, libc::ECHILD), "idtype {idtype}: not reaped");
        }
    });
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

/// Regression (F10): a `waitid(P_PIDFD, ..)` on a pidfd opened with `PIDFD_NONBLOCK` waited for
/// the child's exit; the kernel fails it with EAGAIN at once while the child runs.
#[test]
fn waitid_on_a_non_blocking_pidfd_fails_with_eagain_at_once() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    let child = Command::new("sleep").arg("30").spawn().unwrap();
    // SAFETY: pidfd_open takes a pid and flags (PIDFD_NONBLOCK is O_NONBLOCK).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_of(&child), libc::O_NONBLOCK) };
    let pidfd = pidfd as i32;
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    let wait = move || {
        // SAFETY: an all-zero siginfo_t is a valid value of the plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer; `pidfd` is open.
        let rc =
            unsafe { libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED) };
        (rc, errno())
    };
    assert_eq!(wait(), (-1, libc::EAGAIN), "outside a hub");
    greenhub::run(move || {
        // The timeout only detects a wait that should not happen.
        let result = greenhub::timeout(Duration::from_secs(2), wait);
        assert_eq!(result.ok(), Some((-1, libc::EAGAIN)), "in a coroutine");
    });
    kill_and_reap(pid_of(&child));
    // SAFETY: the pidfd was opened above and is closed once.
    unsafe { libc::close(pidfd) };
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}
