//! sleep_and_timeout: time in greenhub, and how a coroutine is stopped from outside.
//!
//! Teaches: sleepers wake in deadline order and never early; `sleep(Duration::ZERO)` is a yield;
//! `timeout(d, f)` is gevent's `Timeout`: when `f` is still suspended at the deadline, its
//! suspension point unwinds (destructors run) to the `timeout` boundary, which returns
//! `Err(Elapsed)`; an `f` that never suspends past the deadline gives `Ok`; nested timeouts each
//! catch only their own expiry; per-call deadlines (`recv_timeout`, `wait_timeout`) return
//! instead of unwinding; `JoinHandle::cancel` (gevent's `kill`) unwinds a coroutine, and a
//! coroutine cancelled before it started never runs at all.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example sleep_and_timeout
//! ```
//!
//! Expected output:
//!
//! ```text
//! -- sleep
//! woke in deadline order: [10, 20, 30, 40, 50] ms
//! every sleeper slept at least as long as it asked: true
//! sleep(ZERO) is a yield: [root before, other, root after]
//! -- timeout
//! fast enough: Ok("done")
//! too slow: Err(Elapsed): deadline has elapsed
//!   the guard inside the closure was dropped during the unwind: true
//! never suspended past the deadline: Ok("finished without suspending")
//! nested, the inner one fires: inner Err(Elapsed), then the outer body returned Ok("outer body done")
//! nested, the outer one fires: Err(Elapsed) (the inner timeout never saw it)
//! recv_timeout returns instead of unwinding: Err(Timeout)
//! -- cancel
//! cancelled while asleep: is_cancelled = true, guard dropped = true
//! cancelled before it started: is_cancelled = true, body ran = false
//! wait_timeout(1 s) on a coroutine that sleeps 1 ms: true
//! ```

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::sync::{RecvTimeoutError, channel};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Sets its flag when dropped: shows that an unwind runs destructors.
struct Guard(Rc<Cell<bool>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn main() {
    greenhub::run(|| {
        println!("-- sleep");
        sleep_order();
        sleep_zero();
        println!("-- timeout");
        timeouts();
        nested_timeouts();
        per_call_deadline();
        println!("-- cancel");
        cancel();
    });
}

/// Five sleepers, spawned out of order, wake in deadline order.
fn sleep_order() {
    let woke = Rc::new(RefCell::new(Vec::new()));
    let never_early = Rc::new(Cell::new(true));
    let sleepers: Vec<_> = [50u64, 10, 30, 20, 40]
        .into_iter()
        .map(|n| {
            let (woke, never_early) = (woke.clone(), never_early.clone());
            greenhub::spawn(move || {
                let start = Instant::now();
                greenhub::sleep(ms(n));
                never_early.set(never_early.get() && start.elapsed() >= ms(n));
                woke.borrow_mut().push(n);
            })
        })
        .collect();
    sleepers.into_iter().for_each(|s| s.join().unwrap());
    println!("woke in deadline order: {:?} ms", woke.borrow());
    println!("every sleeper slept at least as long as it asked: {}", never_early.get());
}

/// `sleep(Duration::ZERO)` puts the caller at the back of the ready queue.
fn sleep_zero() {
    let log = Rc::new(RefCell::new(vec!["root before"]));
    let other = {
        let log = log.clone();
        greenhub::spawn(move || log.borrow_mut().push("other"))
    };
    greenhub::sleep(Duration::ZERO);
    log.borrow_mut().push("root after");
    other.join().unwrap();
    println!("sleep(ZERO) is a yield: [{}]", log.borrow().join(", "));
}

fn timeouts() {
    let ok = greenhub::timeout(ms(100), || {
        greenhub::sleep(ms(5));
        "done"
    });
    println!("fast enough: {ok:?}");

    let dropped = Rc::new(Cell::new(false));
    let slow = greenhub::timeout(ms(20), || {
        let _guard = Guard(dropped.clone());
        greenhub::sleep(Duration::from_secs(10)); // unwinds from here after 20 ms
    });
    let err = slow.unwrap_err();
    println!("too slow: Err({err:?}): {err}");
    println!("  the guard inside the closure was dropped during the unwind: {}", dropped.get());

    // The deadline passes while `f` runs without suspending: nothing can interrupt it, and since
    // it never suspends past the deadline, the result is Ok. (std::thread::sleep blocks the whole
    // hub: it stands in for a CPU-bound stretch here; never do this in real code.)
    let busy = greenhub::timeout(ms(1), || {
        std::thread::sleep(ms(5));
        "finished without suspending"
    });
    println!("never suspended past the deadline: {busy:?}");
}

fn nested_timeouts() {
    // The inner deadline comes first: the inner timeout returns Err, the outer body goes on.
    let mut inner_result = None;
    let outer = greenhub::timeout(ms(200), || {
        inner_result = Some(greenhub::timeout(ms(10), || greenhub::sleep(Duration::from_secs(10))));
        greenhub::sleep(ms(5));
        "outer body done"
    });
    let inner = inner_result.expect("the outer body ran to its end");
    println!(
        "nested, the inner one fires: inner {inner:?}, then the outer body returned {outer:?}"
    );

    // The outer deadline comes first: the unwind passes through the inner boundary untouched.
    let mut inner_returned = false;
    let outer = greenhub::timeout(ms(10), || {
        let _ =
            greenhub::timeout(Duration::from_secs(5), || greenhub::sleep(Duration::from_secs(10)));
        inner_returned = true;
    });
    let seen = if inner_returned { "saw it" } else { "never saw it" };
    println!("nested, the outer one fires: {outer:?} (the inner timeout {seen})");
}

fn per_call_deadline() {
    let (_tx, rx) = channel::<u32>();
    let got = rx.recv_timeout(ms(10));
    assert_eq!(got, Err(RecvTimeoutError::Timeout));
    println!("recv_timeout returns instead of unwinding: {got:?}");
}

fn cancel() {
    // A started coroutine unwinds from its current suspension point; destructors run.
    let dropped = Rc::new(Cell::new(false));
    let sleeper = {
        let dropped = dropped.clone();
        greenhub::spawn(move || {
            let _guard = Guard(dropped);
            greenhub::sleep(Duration::from_secs(3600));
        })
    };
    greenhub::yield_now(); // let it start and suspend in sleep
    sleeper.cancel();
    let err = sleeper.join().unwrap_err();
    println!(
        "cancelled while asleep: is_cancelled = {}, guard dropped = {}",
        err.is_cancelled(),
        dropped.get()
    );

    // A coroutine cancelled before its first turn never runs its body (gevent: an unstarted
    // greenlet that is killed never runs).
    let ran = Rc::new(Cell::new(false));
    let unstarted = {
        let ran = ran.clone();
        greenhub::spawn(move || ran.set(true))
    };
    unstarted.cancel();
    let err = unstarted.join().unwrap_err();
    println!(
        "cancelled before it started: is_cancelled = {}, body ran = {}",
        err.is_cancelled(),
        ran.get()
    );

    let quick = greenhub::spawn(|| greenhub::sleep(ms(1)));
    let ended = quick.wait_timeout(Duration::from_secs(1));
    println!("wait_timeout(1 s) on a coroutine that sleeps 1 ms: {ended}");
}
