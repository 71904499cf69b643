//! Deadlock detection: a root coroutine that nothing can ever wake panics with "would block
//! forever" and a report of every live coroutine; anything that can still wake it (a timer, an
//! fd, a helper thread) is not a deadlock.

use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::{Event, Mutex, Semaphore, channel};
use greenhub::{CoroutineId, spawn, yield_now};
use greenhub_tests::{DropFlag, panic_message};

/// Runs `f` in a fresh hub and returns the message it panicked with.
fn deadlock_message(f: impl FnOnce()) -> String {
    let caught = panic::catch_unwind(AssertUnwindSafe(|| greenhub::run(f)));
    panic_message(&*caught.expect_err("the hub should have reported a deadlock"))
}

/// The report's line about coroutine `id`: `coroutine #N [name] (spawned at FILE:L:C)...`.
fn line_about(msg: &str, id: CoroutineId) -> &str {
    let prefix = format!("coroutine {id} ");
    msg.lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line about {id} in:\n{msg}"))
}

/// Checks that a report line names the coroutine's spawn site in this file, and its state.
fn assert_line(msg: &str, id: CoroutineId, state: &str) {
    let line = line_about(msg, id);
    assert!(line.contains("(spawned at tests/tests/deadlock.rs:"), "no spawn site: {line}");
    assert!(line.ends_with(state), "expected `{state}` at the end of: {line}");
}

#[test]
fn a_root_waiting_on_an_event_nobody_can_set_panics() {
    let root = Cell::new(None);
    let msg = deadlock_message(|| {
        root.set(Some(greenhub::current()));
        Event::new().wait();
    });
    let root = root.get().unwrap();
    assert!(msg.contains("would block forever"), "{msg}");
    assert_line(&msg, root, "[root]: waiting on an Event");
}

#[test]
fn the_report_lists_each_live_coroutine_and_what_it_waits_on() {
    let ids: Cell<Option<[CoroutineId; 6]>> = Cell::new(None);
    let (guard, dropped) = DropFlag::new();
    let msg = deadlock_message(|| {
        let event = Rc::new(Event::new());
        let (tx, rx) = channel::<u8>();
        let sem = Rc::new(Semaphore::new(1));
        let mutex = Rc::new(Mutex::new(()));
        let _permit = sem.acquire();
        let _locked = mutex.lock();
        let on_event = greenhub::coroutine::Builder::new().name("on event").spawn({
            let event = event.clone();
            move || {
                let _guard = guard;
                event.wait()
            }
        });
        let on_channel = spawn(move || rx.recv().ok());
        let on_semaphore = spawn({
            let sem = sem.clone();
            move || drop(sem.acquire())
        });
        let on_mutex = spawn({
            let mutex = mutex.clone();
            move || drop(mutex.lock())
        });
        let on_event_id = on_event.id();
        let on_join = spawn(move || on_event.join().is_ok());
        yield_now(); // every one of them starts and suspends
        ids.set(Some([
            greenhub::current(),
            on_event_id,
            on_channel.id(),
            on_semaphore.id(),
            on_mutex.id(),
            on_join.id(),
        ]));
        let _keep_sender = tx;
        on_join.join().unwrap();
    });
    let [root, on_event, on_channel, on_semaphore, on_mutex, on_join] = ids.get().unwrap();
    assert!(msg.contains("would block forever"), "{msg}");
    let expected = [
        (root, format!("[root]: waiting on join of coroutine {on_join}")),
        (on_event, "\"on event\"".to_string()),
        (on_event, ": waiting on an Event".to_string()),
        (on_channel, ": waiting on a channel recv".to_string()),
        (on_semaphore, ": waiting on a Semaphore permit".to_string()),
        (on_mutex, ": waiting on a Mutex lock".to_string()),
        (on_join, format!(": waiting on join of coroutine {on_event}")),
    ];
    for (id, state) in expected {
        if state.starts_with(':') || state.starts_with('[') {
            assert_line(&msg, id, &state);
        } else {
            assert!(line_about(&msg, id).contains(&state), "no {state} in:\n{msg}");
        }
    }
    assert!(dropped.get(), "the other coroutines were not unwound after the root's panic");
}

#[test]
fn the_root_may_catch_the_deadlock_panic_and_go_on() {
    let v = greenhub::run(|| {
        let caught = panic::catch_unwind(|| Event::new().wait());
        assert!(panic_message(&*caught.unwrap_err()).contains("would block forever"));
        spawn(|| 5).join().unwrap()
    });
    assert_eq!(v, 5);
}

#[test]
fn a_pending_timer_is_not_a_deadlock() {
    greenhub::run(|| {
        let event = Rc::new(Event::new());
        spawn({
            let event = event.clone();
            move || {
                greenhub::sleep(Duration::from_millis(5));
                event.set();
            }
        });
        event.wait();
    });
}

#[test]
fn a_wait_on_an_fd_is_not_a_deadlock() {
    let (mut writer, reader) = UnixStream::pair().unwrap();
    // Another thread writes, at a time the hub cannot know in advance.
    let thread = std::thread::spawn(move || writer.write_all(b"x").unwrap());
    greenhub::run(|| greenhub::io::wait_readable(reader.as_raw_fd()).unwrap());
    thread.join().unwrap();
}

#[test]
fn a_root_blocked_in_spawn_blocking_is_not_a_deadlock() {
    let outcome = greenhub::run(|| {
        // SAFETY: gettid has no preconditions.
        let hub_thread = unsafe { libc::gettid() };
        // The closure returns once the hub's thread sleeps in the kernel: the loop has found
        // nothing ready and no timer, i.e. it has passed its deadlock check, and waits in poll.
        greenhub::spawn_blocking(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if thread_state(hub_thread) == Some('S') {
                    return "the hub idled in poll";
                }
                std::thread::yield_now();
            }
            "the hub never idled"
        })
    });
    assert_eq!(outcome, "the hub idled in poll");
}

/// The scheduler state letter of a thread of this process (`R`, `S`, ...).
fn thread_state(tid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

#[test]
fn a_sleep_longer_than_time_can_represent_with_nothing_else_is_a_deadlock() {
    let msg = deadlock_message(|| greenhub::sleep(Duration::MAX));
    assert!(msg.contains("would block forever") && msg.contains("sleep (forever)"), "{msg}");
}
