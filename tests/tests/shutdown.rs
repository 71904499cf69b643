//! The end of `run`: coroutines still alive are cancelled; one spawned from a destructor during
//! that shutdown is cancelled before it starts; destructors that keep spawning get a bounded
//! number of rounds, then the rest is leaked with a report; and a destructor that suspends while
//! its coroutine unwinds gets greenhub's message before Rust aborts.

use std::cell::Cell;
use std::os::unix::process::ExitStatusExt;
use std::rc::Rc;

use greenhub::sync::Event;
use greenhub::{JoinHandle, spawn};
use greenhub_tests::rerun_test_in_child;

const CHILD: &str = "GREENHUB_TEST_SHUTDOWN_CHILD";

/// Spawns a coroutine from its destructor, which holds another `Respawn`: every unwind spawns
/// one more.
struct Respawn(Rc<Cell<usize>>);

impl Drop for Respawn {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
        let next = Respawn(self.0.clone());
        drop(spawn(move || {
            let _next = next;
            Event::new().wait();
        }));
    }
}

#[test]
fn a_destructor_that_keeps_spawning_ends_shutdown_after_bounded_rounds() {
    if std::env::var_os(CHILD).is_some() {
        let drops = Rc::new(Cell::new(0));
        greenhub::run(|| {
            let first = Respawn(drops.clone());
            drop(spawn(move || {
                let _first = first;
                Event::new().wait();
            }));
            greenhub::yield_now();
        });
        assert!(drops.get() < 100, "{} rounds", drops.get());
        println!("shutdown ended after {} drops", drops.get());
        return;
    }
    let out = rerun_test_in_child(
        "a_destructor_that_keeps_spawning_ends_shutdown_after_bounded_rounds",
        CHILD,
        "1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("shutdown ended after"), "{stdout}");
    assert!(stderr.contains("shutdown gave up after 16 rounds"), "{stderr}");
    assert!(stderr.contains("(spawned at tests/tests/shutdown.rs:"), "no spawn site:\n{stderr}");
}

#[test]
fn a_coroutine_spawned_from_a_drop_during_shutdown_is_cancelled_before_it_starts() {
    struct SpawnOnDrop(Rc<Cell<Option<JoinHandle<()>>>>, Rc<Cell<bool>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let ran = self.1.clone();
            self.0.set(Some(spawn(move || ran.set(true))));
        }
    }
    let late = Rc::new(Cell::new(None));
    let ran = Rc::new(Cell::new(false));
    greenhub::run(|| {
        let guard = SpawnOnDrop(late.clone(), ran.clone());
        drop(spawn(move || {
            let _guard = guard;
            Event::new().wait();
        }));
        greenhub::yield_now();
    });
    let late = late.take().expect("the destructor ran at shutdown");
    assert!(late.is_finished());
    assert!(!ran.get(), "a coroutine spawned during shutdown never runs its body");
    drop(late);
}

#[test]
fn suspending_in_a_drop_while_cancelled_names_the_coroutine_before_the_abort() {
    struct SleepOnDrop;
    impl Drop for SleepOnDrop {
        fn drop(&mut self) {
            greenhub::sleep(std::time::Duration::from_millis(1));
        }
    }
    if std::env::var_os(CHILD).is_some() {
        let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads a live rlimit (no core file for the expected abort).
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        greenhub::run(|| {
            let h = greenhub::coroutine::Builder::new().name("sleeper").spawn(|| {
                let _bad = SleepOnDrop;
                Event::new().wait();
            });
            greenhub::yield_now();
            h.cancel();
            let _ = h.join();
        });
        unreachable!("suspending in a destructor during an unwind aborts");
    }
    let out = rerun_test_in_child(
        "suspending_in_a_drop_while_cancelled_names_the_coroutine_before_the_abort",
        CHILD,
        "1",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", out.status);
    let ours = stderr
        .find("\"sleeper\" (spawned at tests/tests/shutdown.rs:")
        .unwrap_or_else(|| panic!("greenhub's message is missing:\n{stderr}"));
    assert!(stderr.contains("a Drop impl must never suspend"), "{stderr}");
    let std_message = stderr.find("panic in a destructor during cleanup").unwrap_or(usize::MAX);
    assert!(ours < std_message, "greenhub's message comes first:\n{stderr}");
}
