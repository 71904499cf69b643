//! Coroutine locals: `greenhub::local!` gives each coroutine its own value, created on first use
//! in that coroutine and dropped when it ends (returning, panicking, cancelled, the root at the
//! end of `run`); several locals of different types; destructors that use other locals; misuse.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

use greenhub::{spawn, yield_now};
use greenhub_tests::panic_message;

thread_local! {
    /// What the test locals' destructors and initialisers did, per test thread.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static INITS: Cell<u32> = const { Cell::new(0) };
}

fn log(entry: impl Into<String>) {
    LOG.with(|l| l.borrow_mut().push(entry.into()));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// Logs `"drop <name>"` when dropped.
struct Noisy(&'static str);

impl Drop for Noisy {
    fn drop(&mut self) {
        log(format!("drop {}", self.0));
    }
}

greenhub::local! {
    static REQUEST_ID: Cell<u64> = Cell::new(0);
    static COUNTED: u32 = {
        INITS.with(|n| n.set(n.get() + 1));
        INITS.with(Cell::get)
    };
    static NAME: RefCell<String> = RefCell::new(String::from("anonymous"));
    static TRACE: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    static GUARD: RefCell<Option<Noisy>> = const { RefCell::new(None) };
}

#[test]
fn each_coroutine_has_its_own_value_across_suspensions() {
    greenhub::run(|| {
        let workers: Vec<_> = (1..=3u64)
            .map(|i| {
                spawn(move || {
                    REQUEST_ID.with(|id| id.set(i));
                    for _ in 0..3 {
                        yield_now(); // the others set theirs meanwhile
                        assert_eq!(REQUEST_ID.with(Cell::get), i);
                    }
                    REQUEST_ID.with(Cell::get)
                })
            })
            .collect();
        REQUEST_ID.with(|id| id.set(100));
        let got: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(REQUEST_ID.with(Cell::get), 100, "the root's value is its own");
    });
}

#[test]
fn a_value_is_created_on_its_first_use_in_each_coroutine_only() {
    INITS.with(|n| n.set(0));
    greenhub::run(|| {
        let user = spawn(|| {
            let first = COUNTED.with(|v| *v);
            assert_eq!(COUNTED.with(|v| *v), first, "a second use made a new value");
            first
        });
        let idle = spawn(|| ());
        assert_eq!(user.join().unwrap(), 1);
        idle.join().unwrap();
        assert_eq!(INITS.with(Cell::get), 1, "the init ran for a coroutine that never used it");
        assert_eq!(COUNTED.with(|v| *v), 2, "the root gets a fresh value of its own");
    });
}

#[test]
fn several_locals_of_different_types_in_one_coroutine() {
    greenhub::run(|| {
        spawn(|| {
            REQUEST_ID.with(|id| id.set(42));
            NAME.with(|n| n.borrow_mut().push_str(" worker"));
            TRACE.with(|t| t.borrow_mut().extend_from_slice(b"abc"));
            // Nested use: one local's closure reads another.
            let summary = NAME.with(|n| {
                let id = REQUEST_ID.with(Cell::get);
                TRACE.with(|t| format!("{} {id} {}", n.borrow(), t.borrow().len()))
            });
            assert_eq!(summary, "anonymous worker 42 3");
        })
        .join()
        .unwrap();
    });
}

fn set_guard(name: &'static str) {
    GUARD.with(|g| *g.borrow_mut() = Some(Noisy(name)));
}

#[test]
fn values_are_dropped_when_the_coroutine_returns_panics_or_is_cancelled() {
    take_log();
    greenhub::run(|| {
        spawn(|| set_guard("returned")).join().unwrap();
        assert_eq!(take_log(), ["drop returned"]);

        let panicked = spawn(|| {
            set_guard("panicked");
            panic!("boom");
        });
        assert!(panicked.join().unwrap_err().is_panic());
        assert_eq!(take_log(), ["drop panicked"]);

        let cancelled = spawn(|| {
            set_guard("cancelled");
            greenhub::sleep(Duration::from_secs(3600));
        });
        yield_now(); // it has set its guard and sleeps
        cancelled.cancel();
        assert!(cancelled.join().unwrap_err().is_cancelled());
        assert_eq!(take_log(), ["drop cancelled"]);

        let unstarted = spawn(|| set_guard("never"));
        unstarted.cancel();
        assert!(unstarted.join().unwrap_err().is_cancelled());
        assert!(take_log().is_empty());

        spawn(|| {
            set_guard("left running");
            greenhub::sleep(Duration::from_secs(3600));
        });
        yield_now();
        set_guard("root");
    });
    // The root's values go when its body ends, before `run` unwinds the coroutines left.
    assert_eq!(take_log(), ["drop root", "drop left running"]);
}

greenhub::local! {
    static FIRST: RefCell<Option<Noisy>> = const { RefCell::new(None) };
    static SECOND: Reporter = Reporter;
}

/// Its destructor uses an older local (FIRST, still alive) and a dropped one (itself).
struct Reporter;

impl Drop for Reporter {
    fn drop(&mut self) {
        let first = FIRST.with(|f| f.borrow().as_ref().map(|n| n.0));
        log(format!("second sees first = {first:?}"));
        let again = SECOND.try_with(|_| ());
        log(format!("second sees itself: {}", again.is_ok()));
    }
}

#[test]
fn locals_drop_newest_first_and_a_destructor_may_use_older_ones() {
    take_log();
    greenhub::run(|| {
        spawn(|| {
            FIRST.with(|f| *f.borrow_mut() = Some(Noisy("first")));
            SECOND.with(|_| ());
        })
        .join()
        .unwrap();
    });
    assert_eq!(
        take_log(),
        ["second sees first = Some(\"first\")", "second sees itself: false", "drop first"]
    );
}

greenhub::local! {
    static OLDER: UsesNewer = UsesNewer;
    static NEWER: Cell<u8> = const { Cell::new(0) };
}

/// Its destructor uses a local created after it, which is already dropped by then.
struct UsesNewer;

impl Drop for UsesNewer {
    fn drop(&mut self) {
        let err = NEWER.try_with(|_| ()).unwrap_err();
        log(err.to_string());
        NEWER.with(|n| n.set(1)); // panics: the coroutine ends as panicked
    }
}

#[test]
fn a_destructor_using_an_already_dropped_local_gets_an_access_error_or_a_panic() {
    take_log();
    greenhub::run(|| {
        let h = spawn(|| {
            OLDER.with(|_| ());
            NEWER.with(|n| n.set(5));
        });
        let err = h.join().unwrap_err();
        assert!(err.is_panic());
        assert!(err.to_string().contains("`NEWER` used while the coroutine's locals"), "{err}");
    });
    let log = take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("`NEWER` used while the coroutine's locals are being dropped"));
}

greenhub::local! {
    static RECURSIVE: u8 = RECURSIVE.with(|v| *v);
}

#[test]
fn a_recursive_initialisation_panics_naming_it() {
    greenhub::run(|| {
        let err = spawn(|| RECURSIVE.with(|v| *v)).join().unwrap_err();
        assert!(err.to_string().contains("`RECURSIVE` is used by its own initialiser"), "{err}");
    });
}

#[test]
fn use_outside_a_hub_or_a_coroutine_panics_naming_the_rule() {
    let caught = panic::catch_unwind(|| REQUEST_ID.with(Cell::get)).unwrap_err();
    let message = panic_message(&*caught);
    assert!(message.contains("greenhub::local! `REQUEST_ID` used outside a hub"), "{message}");
    assert!(message.contains("thread_local!"), "{message}");

    let message = Rc::new(RefCell::new(String::new()));
    greenhub::run(|| {
        let message = message.clone();
        greenhub::ext::at_exit(move || {
            let caught = panic::catch_unwind(AssertUnwindSafe(|| REQUEST_ID.with(Cell::get)));
            *message.borrow_mut() = panic_message(&*caught.unwrap_err());
        });
    });
    let message = message.borrow();
    assert!(message.contains("`REQUEST_ID` used outside a coroutine"), "{message}");
}

#[test]
fn local_key_debug_names_the_static() {
    assert_eq!(format!("{REQUEST_ID:?}"), "LocalKey { name: \"REQUEST_ID\", .. }");
}

greenhub::local! {
    static FLAKY: u8 = {
        let attempt = INITS.with(|n| n.replace(n.get() + 1));
        assert!(attempt > 0, "first attempt fails");
        attempt as u8
    };
}

#[test]
fn an_initialiser_that_panics_leaves_no_value_and_the_next_use_tries_again() {
    INITS.with(|n| n.set(0));
    greenhub::run(|| {
        let caught = panic::catch_unwind(|| FLAKY.with(|v| *v)).unwrap_err();
        assert_eq!(panic_message(&*caught), "first attempt fails");
        assert_eq!(FLAKY.with(|v| *v), 1);
    });
}
