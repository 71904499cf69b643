//! `std::thread::sleep` and `std::process::Command::output` in many coroutines at once: each
//! suspends only its coroutine, so all of them are inside the call at the same time.
//!
//! No timing assertion: every coroutine is started in the hub's first turn, and a call that
//! blocked the thread would finish before the next coroutine could enter it (peak 1).

use std::cell::Cell;
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

/// Counts the coroutines inside a call right now, and the most at once.
#[derive(Default)]
struct Inside {
    now: Cell<usize>,
    peak: Cell<usize>,
}

impl Inside {
    fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        self.now.set(self.now.get() + 1);
        self.peak.set(self.peak.get().max(self.now.get()));
        let value = f();
        self.now.set(self.now.get() - 1);
        value
    }
}

#[test]
fn std_thread_sleep_in_many_coroutines_overlaps() {
    greenhub::patch::install();
    const SLEEPERS: usize = 200;
    let peak = greenhub::run(|| {
        let inside = Rc::new(Inside::default());
        let sleepers: Vec<_> = (0..SLEEPERS)
            .map(|_| {
                let inside = inside.clone();
                greenhub::spawn(move || {
                    inside.during(|| std::thread::sleep(Duration::from_millis(50)))
                })
            })
            .collect();
        sleepers.into_iter().for_each(|s| s.join().unwrap());
        inside.peak.get()
    });
    assert_eq!(peak, SLEEPERS);
}

#[test]
fn a_patched_sleep_never_ends_early() {
    greenhub::patch::install();
    greenhub::run(|| {
        let start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    });
}

#[test]
fn command_output_in_many_coroutines_overlaps_and_reaps_every_child() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    const COMMANDS: usize = 10;
    let peak = greenhub::run(|| {
        let inside = Rc::new(Inside::default());
        let commands: Vec<_> = (0..COMMANDS)
            .map(|i| {
                let inside = inside.clone();
                greenhub::spawn(move || {
                    inside.during(|| {
                        Command::new("sh").args(["-c", &format!("sleep 0.2; echo {i}")]).output()
                    })
                })
            })
            .collect();
        for (i, command) in commands.into_iter().enumerate() {
            let output = command.join().unwrap().unwrap();
            assert!(output.status.success());
            assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{i}\n"));
        }
        inside.peak.get()
    });
    assert_eq!(peak, COMMANDS);
    assert_eq!(greenhub_tests::zombie_children(), Vec::<u32>::new());
}

#[test]
fn child_wait_suspends_only_the_waiting_coroutine() {
    let _serial = greenhub_tests::process_lock();
    greenhub::patch::install();
    greenhub::run(|| {
        let mut child = Command::new("sh").args(["-c", "sleep 0.1; exit 3"]).spawn().unwrap();
        let ran = Rc::new(Cell::new(false));
        let other = {
            let ran = ran.clone();
            greenhub::spawn(move || ran.set(true))
        };
        let status = child.wait().unwrap(); // waitpid through the child's pidfd
        assert_eq!(status.code(), Some(3));
        assert!(ran.get(), "the other coroutine did not run while the child was awaited");
        other.join().unwrap();
    });
}
