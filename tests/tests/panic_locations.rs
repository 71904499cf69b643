//! Misuse panics name the user's line (`#[track_caller]` on every public function that panics
//! on misuse), not a line inside greenhub.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

thread_local! {
    static CAUGHT: RefCell<Option<(String, u32)>> = const { RefCell::new(None) };
}

/// Runs `f`, which must panic, and returns the file and line the panic names, and its message.
fn caught(f: impl FnOnce()) -> (String, u32, String) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // greenhub installs its own hook, once per process, at the first `run`. Let it do so
        // first: were it to take the hook before ours is set and set its own after, ours would
        // be lost (another test of this file runs a hub on another thread meanwhile). On a
        // thread of its own: `caught` may be called inside a hub.
        std::thread::spawn(|| greenhub::run(|| ())).join().unwrap();
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| (l.file().to_string(), l.line()));
            CAUGHT.with(|c| *c.borrow_mut() = at);
            previous(info);
        }));
    });
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("the call must panic");
    let (file, line) = CAUGHT.with(|c| c.borrow_mut().take()).expect("a location");
    (file, line, greenhub_tests::panic_message(&*payload))
}

/// Asserts that the panic names this file at `line` and that its message contains `rule`.
#[track_caller]
fn assert_names_the_callers_line(
    (file, at, message): (String, u32, String),
    line: u32,
    rule: &str,
) {
    assert!(file.ends_with("panic_locations.rs"), "panic located in {file}:{at}: {message}");
    assert_eq!(at, line, "{message}");
    assert!(message.contains(rule), "{message}");
}

#[test]
fn hub_calls_outside_a_hub_name_the_callers_line() {
    let p = caught(|| greenhub::sleep(Duration::ZERO));
    assert_names_the_callers_line(p, line!() - 1, "greenhub::sleep called outside a hub");
    let p = caught(|| drop(greenhub::spawn(|| ())));
    assert_names_the_callers_line(p, line!() - 1, "greenhub::spawn called outside a hub");
    let p = caught(|| greenhub::yield_now());
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
    let p = caught(|| {
        greenhub::current();
    });
    assert_names_the_callers_line(p, line!() - 2, "outside a hub");
    let p = caught(|| greenhub::timeout(Duration::from_secs(1), || ()).unwrap());
    assert_names_the_callers_line(p, line!() - 1, "greenhub::timeout called outside a hub");
    let p = caught(|| drop(greenhub::spawn_later(Duration::ZERO, || ())));
    assert_names_the_callers_line(p, line!() - 1, "greenhub::spawn_later called outside a hub");
    let p = caught(|| greenhub::spawn_blocking(|| ()));
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
}

#[test]
fn sync_misuse_names_the_callers_line() {
    let (_tx, rx) = greenhub::sync::channel::<u8>();
    let p = caught(|| assert!(rx.recv().is_ok()));
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
    let event = greenhub::sync::Event::new();
    let p = caught(|| event.wait());
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
    let p = caught(|| drop(greenhub::sync::Pool::new(0)));
    assert_names_the_callers_line(p, line!() - 1, "Pool");
}

greenhub::local! { static COUNTER: Cell<u32> = const { Cell::new(0) }; }

#[test]
fn local_outside_a_hub_names_the_callers_line() {
    let p = caught(|| COUNTER.with(|c| c.set(1)));
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
}

#[test]
fn a_run_inside_a_hub_and_a_zero_stack_name_the_callers_line() {
    greenhub::run(|| {
        let p = caught(|| greenhub::run(|| ()));
        assert_names_the_callers_line(p, line!() - 1, "inside a running hub");
    });
    let p = caught(|| drop(greenhub::coroutine::Builder::new().stack_size(0)));
    assert_names_the_callers_line(p, line!() - 1, "stack_size");
}

#[test]
fn ipc_misuse_names_the_callers_line() {
    let p = caught(|| drop(greenhub_ipc::PoolBuilder::new(0)));
    assert_names_the_callers_line(p, line!() - 1, "at least one worker");
    let p = caught(|| drop(greenhub_ipc::start_process((), |()| ())));
    assert_names_the_callers_line(p, line!() - 1, "start_process called outside a hub");
    let p = caught(|| drop(greenhub_ipc::Command::new("true").spawn()));
    assert_names_the_callers_line(p, line!() - 1, "Command::spawn called outside a hub");
    let (rx, _tx) = greenhub_ipc::pipe::<u8>().unwrap();
    let p = caught(|| drop(rx.get()));
    assert_names_the_callers_line(p, line!() - 1, "outside a hub");
}
