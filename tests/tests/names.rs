//! Names and spawn sites: `coroutine::Builder` (name, stack size), `JoinHandle::name`, and the
//! one way every report names a coroutine, `coroutine #17 "conn 7" (spawned at FILE:L:C)`: in
//! `ext::dump`, in a coroutine's panic message, and when a coroutine joins itself.

use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use greenhub::coroutine::Builder;
use greenhub::sync::Event;
use greenhub::{spawn, yield_now};
use greenhub_tests::{panic_message, rerun_test_in_child};

const CHILD: &str = "GREENHUB_TEST_NAMES_CHILD";

/// Recurses `depth` times with a 1 KiB frame.
fn recurse(depth: u32) -> u32 {
    let frame = std::hint::black_box([depth as u8; 1024]);
    if depth == 0 {
        return 0;
    }
    recurse(depth - 1) + u32::from(std::hint::black_box(frame)[3])
}

#[test]
fn a_builder_names_a_coroutine_and_its_handle_says_so() {
    greenhub::run(|| {
        let named = Builder::new().name("conn 7").spawn(|| 7);
        let unnamed = spawn(|| 8);
        assert_eq!(named.name(), Some("conn 7"));
        assert_eq!(unnamed.name(), None);
        assert!(format!("{named:?}").contains("conn 7"));
        assert_eq!(named.join().unwrap() + unnamed.join().unwrap(), 15);
    });
}

#[test]
fn a_builder_stack_size_is_that_coroutines_own() {
    // The hub's default is 64 KiB: 1 MiB of frames would overflow it, not a 4 MiB stack.
    greenhub::Builder::new().stack_size(64 * 1024).run(|| {
        let deep = Builder::new().stack_size(4 << 20).spawn(|| recurse(1000));
        deep.join().unwrap();
    });
}

#[test]
fn a_builder_stack_size_of_zero_panics_naming_the_rule() {
    let caught = panic::catch_unwind(|| Builder::new().stack_size(0));
    let msg = panic_message(&*caught.unwrap_err());
    assert!(msg.contains("coroutine::Builder::stack_size(0)"), "{msg}");
    assert!(msg.contains("between 1 byte and 1 TiB"), "{msg}");
}

#[test]
fn dump_lists_every_live_coroutine_oldest_first_with_its_state_and_for_how_long() {
    greenhub::run(|| {
        let event = Rc::new(Event::new());
        let waiter = Builder::new().name("waiter").spawn({
            let event = event.clone();
            move || event.wait()
        });
        yield_now(); // the waiter suspends on the event
        let fresh = spawn(|| ());
        let dump = greenhub::ext::dump();
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 3, "{dump}");
        let me = greenhub::current();
        assert!(lines[0].starts_with(&format!("coroutine {me} (spawned at tests/tests/names.rs:")));
        assert!(lines[0].contains("[root]: running for "), "{dump}");
        let waiter_line =
            format!("coroutine {} \"waiter\" (spawned at tests/tests/names.rs:", waiter.id());
        assert!(lines[1].starts_with(&waiter_line), "{dump}");
        assert!(lines[1].contains(": waiting on an Event for "), "{dump}");
        assert!(lines[2].starts_with(&format!("coroutine {} (spawned at", fresh.id())), "{dump}");
        assert!(lines[2].contains(": ready for "), "{dump}");
        event.set();
        waiter.join().unwrap();
    });
}

#[test]
fn dump_outside_a_hub_panics_naming_the_rule() {
    let caught = panic::catch_unwind(greenhub::ext::dump);
    let msg = panic_message(&*caught.unwrap_err());
    assert!(msg.contains("greenhub::ext::dump called outside a hub"), "{msg}");
}

#[test]
fn a_coroutine_joining_its_own_handle_panics_naming_the_rule() {
    greenhub::run(|| {
        let slot: Rc<std::cell::RefCell<Option<greenhub::JoinHandle<()>>>> = Rc::default();
        let h = Builder::new().name("narcissus").spawn({
            let slot = slot.clone();
            move || {
                yield_now(); // until the handle is in the slot
                let me = slot.borrow_mut().take().unwrap();
                let caught = panic::catch_unwind(AssertUnwindSafe(|| me.join()));
                let msg = panic_message(&*caught.unwrap_err());
                assert!(msg.contains("JoinHandle::join called by coroutine #"), "{msg}");
                assert!(msg.contains("\"narcissus\" (spawned at tests/tests/names.rs:"), "{msg}");
                assert!(msg.contains("cannot wait for itself"), "{msg}");
            }
        });
        let id = h.id();
        *slot.borrow_mut() = Some(h);
        while greenhub::ext::dump().contains(&format!("coroutine {id} ")) {
            yield_now();
        }
    });
}

#[test]
fn a_panicking_coroutine_is_named_in_its_panic_message() {
    if std::env::var_os(CHILD).is_some() {
        greenhub::run(|| {
            let h = Builder::new().name("doomed").spawn(|| panic!("boom"));
            assert!(h.join().unwrap_err().is_panic());
        });
        return;
    }
    let out =
        rerun_test_in_child("a_panicking_coroutine_is_named_in_its_panic_message", CHILD, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let named = "greenhub: coroutine #2 \"doomed\" (spawned at tests/tests/names.rs:";
    let at = stderr.find(named).unwrap_or_else(|| panic!("not named:\n{stderr}"));
    let boom = stderr.find("boom").unwrap_or_else(|| panic!("no message:\n{stderr}"));
    assert!(at < boom, "the name comes first:\n{stderr}");
    assert!(stderr[at..].lines().next().unwrap().ends_with("panicked:"), "{stderr}");
}

#[test]
fn dump_called_from_a_spawned_named_coroutine_shows_that_coroutine_running() {
    greenhub::run(|| {
        let reporter =
            Builder::new().name("reporter").spawn(|| (greenhub::current(), greenhub::ext::dump()));
        let (id, dump) = reporter.join().unwrap();
        let own = format!("coroutine {id} \"reporter\" (spawned at tests/tests/names.rs:");
        let line = dump.lines().find(|l| l.starts_with(&own));
        let line = line.unwrap_or_else(|| panic!("no line for the caller:\n{dump}"));
        assert!(line.contains(": running for "), "{dump}");
        let root = format!("coroutine {} ", greenhub::current());
        let root_line = dump.lines().find(|l| l.starts_with(&root)).unwrap();
        assert!(
            root_line.contains(&format!("[root]: waiting on join of coroutine {id} for ")),
            "{dump}"
        );
        assert_eq!(dump.matches(": running for ").count(), 1, "one coroutine runs:\n{dump}");
    });
}
