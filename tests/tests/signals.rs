//! Signals: `greenhub::signal::Signals` receives Unix signals in coroutines. Every watcher gets
//! every delivery (coalesced, never lost), the default action is suppressed while watched and
//! the previous disposition restored after, fault signals and SIGKILL/SIGSTOP are refused, a
//! child inherits none of it, and a signal wakes a hub asleep in epoll_wait.
//!
//! Signal dispositions belong to the whole process, so every test holds the process lock, and
//! each uses its own signal numbers.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use greenhub::signal::Signals;
use greenhub_tests::{assert_no_fd_leak, panic_message, process_lock};

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// Sends `signal` to the calling thread.
fn raise(signal: i32) {
    // SAFETY: raise(3) has no preconditions.
    assert_eq!(unsafe { libc::raise(signal) }, 0);
}

/// Sends `signal` to the process (any thread that does not block it may run the handler).
fn kill_self(signal: i32) {
    // SAFETY: kill(2) on our own pid has no memory preconditions.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signal) }, 0);
}

/// The handler address (or SIG_DFL / SIG_IGN) of `signal` now.
fn disposition(signal: i32) -> libc::sighandler_t {
    // SAFETY: a null new action only queries; `current` is a valid out-pointer.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, std::ptr::null(), &mut current), 0);
        current.sa_sigaction
    }
}

fn set_disposition(signal: i32, handler: libc::sighandler_t) {
    // SAFETY: SIG_DFL / SIG_IGN install no code; the pointers are valid for the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
    }
}

#[test]
fn recv_returns_the_signal_and_its_default_action_does_not_happen() {
    let _serial = process_lock();
    greenhub::run(|| {
        let signals = Signals::new(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        raise(libc::SIGUSR1); // default action: terminate the test binary
        assert_eq!(signals.recv().unwrap(), libc::SIGUSR1);
        raise(libc::SIGUSR2);
        assert_eq!(signals.recv().unwrap(), libc::SIGUSR2);
    });
}

#[test]
fn every_watcher_gets_every_delivery_in_one_hub_and_across_hubs() {
    let _serial = process_lock();
    let signal = rt(1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<()>();
    let other_hub = std::thread::spawn(move || {
        greenhub::run(|| {
            let signals = Signals::new(&[signal]).unwrap();
            ready_tx.send(()).unwrap();
            let first = signals.recv().unwrap();
            got_tx.send(()).unwrap(); // only now the second delivery: no coalescing with the first
            let second = signals.recv().unwrap();
            (first, second)
        })
    });
    ready_rx.recv().unwrap();
    greenhub::run(|| {
        let a = Signals::new(&[signal]).unwrap();
        let b = Signals::new(&[signal, rt(2)]).unwrap();
        kill_self(signal);
        assert_eq!(a.recv().unwrap(), signal);
        assert_eq!(b.recv().unwrap(), signal);
        got_rx.recv().unwrap(); // blocks this hub, which has nothing else to do
        raise(signal);
        assert_eq!(a.recv().unwrap(), signal);
        assert_eq!(b.recv().unwrap(), signal);
    });
    assert_eq!(other_hub.join().unwrap(), (signal, signal));
}

#[test]
fn deliveries_while_nobody_receives_may_coalesce_but_are_never_lost() {
    let _serial = process_lock();
    greenhub::run(|| {
        let signals = Signals::new(&[rt(3), rt(4)]).unwrap();
        for _ in 0..3 {
            raise(rt(3));
        }
        raise(rt(4));
        let mut got = Vec::new();
        while let Some(signal) = signals.recv_timeout(Duration::ZERO).unwrap() {
            got.push(signal);
        }
        assert!(got.contains(&rt(3)) && got.contains(&rt(4)), "lost a delivery: {got:?}");
        assert!(got.len() <= 4, "more deliveries than signals sent: {got:?}");
    });
}

#[test]
fn a_signals_created_after_a_delivery_does_not_see_it() {
    let _serial = process_lock();
    greenhub::run(|| {
        let early = Signals::new(&[rt(5)]).unwrap();
        raise(rt(5));
        let late = Signals::new(&[rt(5)]).unwrap();
        assert_eq!(late.recv_timeout(Duration::ZERO).unwrap(), None);
        assert_eq!(early.recv().unwrap(), rt(5));
    });
}

#[test]
fn fault_signals_sigkill_sigstop_bad_numbers_and_an_empty_list_are_invalid_input() {
    let _serial = process_lock();
    let refused =
        [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL];
    for signal in refused {
        let err = Signals::new(&[libc::SIGUSR1, signal]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{signal}: {err}");
        assert!(err.to_string().contains("cannot watch"), "{err}");
    }
    for bad in [0, -1, 65, i32::MAX] {
        let err = Signals::new(&[bad]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}: {err}");
        assert!(err.to_string().contains("not a signal number"), "{err}");
    }
    let err = Signals::new(&[]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at least one signal"), "{err}");
    // A refused list changed nothing: SIGUSR1 (listed first) still has its default action.
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
}

#[test]
fn the_previous_disposition_is_back_when_the_last_watcher_drops() {
    let _serial = process_lock();
    let signal = rt(6);
    set_disposition(signal, libc::SIG_IGN);
    let a = Signals::new(&[signal]).unwrap();
    let b = Signals::new(&[signal, signal]).unwrap(); // duplicates count once
    assert_eq!(b.signals(), &[signal]);
    assert_ne!(disposition(signal), libc::SIG_IGN);
    drop(a);
    assert_ne!(disposition(signal), libc::SIG_IGN, "restored while a watcher is left");
    drop(b);
    assert_eq!(disposition(signal), libc::SIG_IGN);
    set_disposition(signal, libc::SIG_DFL);
    drop(Signals::new(&[signal]).unwrap());
    assert_eq!(disposition(signal), libc::SIG_DFL);
}

#[test]
fn sigterm_is_received_while_watched_and_kills_again_after_the_last_watcher_drops() {
    let _serial = process_lock();
    greenhub::run(|| {
        let watched = greenhub_ipc::start_process((), |()| {
            let signals = Signals::new(&[libc::SIGTERM]).unwrap();
            raise(libc::SIGTERM);
            assert_eq!(signals.recv().unwrap(), libc::SIGTERM);
        })
        .unwrap();
        assert_eq!(watched.join().unwrap().code(), Some(0));
        let unwatched = greenhub_ipc::start_process((), |()| {
            drop(Signals::new(&[libc::SIGTERM]).unwrap());
            raise(libc::SIGTERM);
            greenhub::sleep(Duration::MAX); // SIGTERM ends it
        })
        .unwrap();
        assert_eq!(unwatched.join().unwrap().signal(), Some(libc::SIGTERM));
    });
}

#[test]
fn a_child_inherits_no_watcher_and_can_watch_the_same_signal_itself() {
    let _serial = process_lock();
    let signal = rt(7);
    greenhub::run(|| {
        let parent = Signals::new(&[signal]).unwrap();
        // The parent's watcher is not inherited: the signal has its default action (terminate).
        let child = greenhub_ipc::start_process((), move |()| {
            raise(signal);
            greenhub::sleep(Duration::MAX);
        })
        .unwrap();
        assert_eq!(child.join().unwrap().signal(), Some(signal));
        // Nor does a delivery in the child reach the parent's watcher.
        assert_eq!(parent.recv_timeout(Duration::ZERO).unwrap(), None);
        // The child starts with a clean registry: its own Signals installs the handler again.
        let child = greenhub_ipc::start_process((), move |()| {
            let signals = Signals::new(&[signal]).unwrap();
            raise(signal);
            assert_eq!(signals.recv().unwrap(), signal);
        })
        .unwrap();
        assert_eq!(child.join().unwrap().code(), Some(0));
        assert_eq!(parent.recv_timeout(Duration::ZERO).unwrap(), None);
        assert!(greenhub_tests::zombie_children().is_empty());
    });
}

/// The syscall the main thread of this process is in (`/proc/<pid>/task/<tid>/syscall`).
fn current_syscall(tid: libc::pid_t) -> Option<i64> {
    let path = format!("/proc/self/task/{tid}/syscall");
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_watched_signal_wakes_a_hub_sleeping_in_epoll_wait() {
    let _serial = process_lock();
    let signal = rt(8);
    // SAFETY: gettid has no preconditions.
    let hub_thread = unsafe { libc::gettid() };
    let sender = std::thread::spawn(move || {
        // Wait until the hub's thread sleeps in epoll_wait / epoll_pwait / epoll_pwait2.
        while !matches!(current_syscall(hub_thread), Some(232 | 281 | 441)) {
            std::thread::yield_now();
        }
        kill_self(signal);
    });
    let got = greenhub::run(|| {
        let signals = Signals::new(&[signal]).unwrap();
        signals.recv().unwrap() // nothing else can wake the hub: no timer, no other coroutine
    });
    assert_eq!(got, signal);
    sender.join().unwrap();
}

#[test]
fn recv_timeout_gives_none_in_time_and_accepts_duration_max() {
    let _serial = process_lock();
    greenhub::run(|| {
        let signals = Signals::new(&[rt(9)]).unwrap();
        assert_eq!(signals.recv_timeout(Duration::from_millis(5)).unwrap(), None);
        raise(rt(9));
        assert_eq!(signals.recv_timeout(Duration::MAX).unwrap(), Some(rt(9)));
        let waiter = greenhub::spawn(move || signals.recv_timeout(Duration::MAX).unwrap());
        greenhub::yield_now(); // the waiter suspends in recv
        raise(rt(9));
        assert_eq!(waiter.join().unwrap(), Some(rt(9)));
    });
}

#[test]
fn cancel_and_timeout_unwind_a_coroutine_in_recv_and_lose_nothing() {
    let _serial = process_lock();
    greenhub::run(|| {
        let signals = std::rc::Rc::new(Signals::new(&[rt(10)]).unwrap());
        let waiter = greenhub::spawn({
            let signals = signals.clone();
            move || signals.recv()
        });
        greenhub::yield_now();
        waiter.cancel();
        assert!(waiter.join().unwrap_err().is_cancelled());
        assert!(greenhub::timeout(Duration::from_millis(1), || signals.recv()).is_err());
        raise(rt(10));
        assert_eq!(signals.recv().unwrap(), rt(10));
    });
}

#[test]
fn recv_outside_a_hub_panics_naming_the_rule() {
    let _serial = process_lock();
    let signals = Signals::new(&[rt(11)]).unwrap();
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| signals.recv())).unwrap_err();
    let message = panic_message(&*payload);
    assert!(message.contains("greenhub::signal::Signals::recv called outside a hub"), "{message}");
}

#[test]
fn signals_leak_no_fd_and_debug_names_the_signals() {
    assert_no_fd_leak(3, || {
        greenhub::run(|| {
            let signals = Signals::new(&[rt(12)]).unwrap();
            raise(rt(12));
            assert_eq!(signals.recv().unwrap(), rt(12));
        });
    });
    let signals = Signals::new(&[libc::SIGUSR2, libc::SIGHUP]).unwrap();
    assert_eq!(format!("{signals:?}"), format!("Signals {{ signals: [1, {}] }}", libc::SIGUSR2));
}

#[test]
fn more_signals_values_than_the_handler_table_holds_is_an_error_naming_the_limit() {
    let _serial = process_lock();
    let mut alive = Vec::new();
    let err = loop {
        match Signals::new(&[rt(13)]) {
            Ok(s) => alive.push(s),
            Err(e) => break e,
        }
        assert!(alive.len() <= 256, "no limit reached");
    };
    assert_eq!(alive.len(), 256);
    assert!(err.to_string().contains("256 Signals values are alive"), "{err}");
    drop(alive);
    drop(Signals::new(&[rt(13)]).unwrap()); // rows are given back
    assert_eq!(disposition(rt(13)), libc::SIG_DFL);
}
