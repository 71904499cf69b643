//! hello_hub: the first steps with greenhub.
//!
//! Teaches: `run` starts a hub and runs a closure as its *root* coroutine; `spawn` starts more
//! coroutines (they start at a later hub turn, never inside `spawn`); `join` suspends the caller
//! until a coroutine ends and gives back its value; `sleep` suspends only the calling coroutine,
//! so many sleep at once; `yield_now` lets the others run; a channel carries values between
//! coroutines and `recv` fails once every sender is gone.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example hello_hub
//! ```
//!
//! Expected output:
//!
//! ```text
//! the root coroutine is #1
//! spawned #2; finished yet? false
//! hello from coroutine #2
//! taking turns: ping 1, pong 1, ping 2, pong 2, ping 3, pong 3
//! three workers sleep at once and report in the order they wake:
//!   fast woke after 30 ms
//!   medium woke after 60 ms
//!   slow woke after 90 ms
//! every sender is gone, so recv says: receiving on an empty channel whose senders are all gone
//! run returned 30 (the sum of the squares of 1..=4)
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use greenhub::sync::channel;

fn main() {
    let total = greenhub::run(|| {
        println!("the root coroutine is {}", greenhub::current());

        // spawn + join: the coroutine has not run yet when `spawn` returns.
        let greeter = greenhub::spawn(|| format!("hello from coroutine {}", greenhub::current()));
        println!("spawned {}; finished yet? {}", greeter.id(), greeter.is_finished());
        println!("{}", greeter.join().unwrap());

        // yield_now: two coroutines take turns (the hub runs ready coroutines in FIFO order).
        let log = Rc::new(RefCell::new(Vec::new()));
        let players: Vec<_> = ["ping", "pong"]
            .into_iter()
            .map(|name| {
                let log = log.clone();
                greenhub::spawn(move || {
                    for round in 1..=3 {
                        log.borrow_mut().push(format!("{name} {round}"));
                        greenhub::yield_now();
                    }
                })
            })
            .collect();
        players.into_iter().for_each(|p| p.join().unwrap());
        println!("taking turns: {}", log.borrow().join(", "));

        // sleep + channel: the workers sleep at the same time; each reports when it wakes.
        let (tx, rx) = channel();
        for (name, ms) in [("slow", 90), ("fast", 30), ("medium", 60)] {
            let tx = tx.clone();
            greenhub::spawn(move || {
                greenhub::sleep(Duration::from_millis(ms));
                tx.send(format!("{name} woke after {ms} ms")).unwrap();
            });
        }
        drop(tx); // only the workers hold senders now
        println!("three workers sleep at once and report in the order they wake:");
        loop {
            match rx.recv() {
                Ok(report) => println!("  {report}"),
                Err(e) => {
                    println!("every sender is gone, so recv says: {e}");
                    break;
                }
            }
        }

        // join values: the root's return value is what `run` returns.
        let squares: Vec<_> = (1..=4u64).map(|n| greenhub::spawn(move || n * n)).collect();
        squares.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    println!("run returned {total} (the sum of the squares of 1..=4)");
}
