//! pipeline_shutdown: a producer/consumer pipeline that shuts down gracefully on SIGTERM, as a
//! gevent service does with `gevent.signal_handler(signal.SIGTERM, ...)` and a `Group`.
//!
//! Teaches: `greenhub::signal::Signals` delivers a Unix signal to a coroutine (`recv` suspends
//! only that coroutine, and the signal's default action, ending the process, does not happen
//! while it is watched); `greenhub::sync::Group` keeps track of a set of coroutines, and
//! `cancel_all` unwinds them all (destructors run) and returns once every one has ended. On
//! SIGTERM the producer is cancelled, which drops its `Sender`; the consumers drain what is left
//! in the channel, see it closed, and end by themselves: nothing produced is lost. The example
//! sends itself the SIGTERM (after the 20th item), so it runs unattended; `kill -TERM <pid>` from
//! a shell does the same.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example pipeline_shutdown
//! ```
//!
//! Expected output (how many items were in flight at the signal varies):
//!
//! ```text
//! pipeline running: 1 producer, 2 consumers, a channel of 4 items
//! consumer sends SIGTERM to process {pid} after item 20
//! received SIGTERM: stopping the producer
//! producer unwound by cancel_all after {n} items; its Sender is dropped
//! producer group empty after cancel_all: true
//! consumers drained the channel and ended by themselves: true
//! consumer 0 handled {n} items, consumer 1 handled {n} items
//! produced {n} items, consumed {n}: every item consumed exactly once: true
//! ```

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use greenhub::signal::Signals;
use greenhub::sync::{Group, Receiver, Sender, bounded};

const CONSUMERS: usize = 2;
const CAPACITY: usize = 4;
/// The item after which a consumer sends the process SIGTERM.
const STOP_AFTER: u64 = 20;

fn main() -> io::Result<()> {
    greenhub::run(|| {
        // Watch SIGTERM before anything can send it.
        let signals = Signals::new(&[libc::SIGTERM])?;
        let (tx, rx) = bounded::<u64>(CAPACITY);
        let produced = Rc::new(Cell::new(0u64));
        let consumed = Rc::new(RefCell::new(vec![Vec::new(); CONSUMERS]));

        let producers = Group::new();
        let consumers = Group::new();
        producers.spawn({
            let produced = produced.clone();
            move || produce(tx, &produced)
        });
        for c in 0..CONSUMERS {
            let (rx, consumed) = (rx.clone(), consumed.clone());
            consumers.spawn(move || consume(rx, |item| consumed.borrow_mut()[c].push(item)));
        }
        drop(rx);
        println!(
            "pipeline running: 1 producer, {CONSUMERS} consumers, a channel of {CAPACITY} items"
        );

        let signal = signals.recv()?;
        assert_eq!(signal, libc::SIGTERM);
        println!("received SIGTERM: stopping the producer");
        producers.cancel_all(); // returns once the producer has unwound
        println!("producer group empty after cancel_all: {}", producers.is_empty());
        let drained = consumers.join_timeout(Duration::from_secs(10));
        println!("consumers drained the channel and ended by themselves: {drained}");

        let consumed = consumed.borrow();
        let counts: Vec<String> = consumed
            .iter()
            .enumerate()
            .map(|(c, items)| format!("consumer {c} handled {} items", items.len()))
            .collect();
        println!("{}", counts.join(", "));
        let mut all: Vec<u64> = consumed.iter().flatten().copied().collect();
        all.sort_unstable();
        let exactly_once = all == (1..=produced.get()).collect::<Vec<_>>();
        println!(
            "produced {} items, consumed {}: every item consumed exactly once: {exactly_once}",
            produced.get(),
            all.len()
        );
        Ok(())
    })
}

/// Sends 1, 2, 3, ... until it is cancelled (a full channel suspends it in `send`).
fn produce(tx: Sender<u64>, produced: &Cell<u64>) {
    /// Runs when `cancel_all` unwinds the producer: destructors run, the `Sender` with them.
    struct OnUnwind<'a>(&'a Cell<u64>);
    impl Drop for OnUnwind<'_> {
        fn drop(&mut self) {
            let n = self.0.get();
            println!("producer unwound by cancel_all after {n} items; its Sender is dropped");
        }
    }
    let _on_unwind = OnUnwind(produced);
    for item in 1.. {
        if tx.send(item).is_err() {
            return; // every consumer is gone
        }
        produced.set(item);
        greenhub::sleep(Duration::from_millis(2));
    }
}

/// Handles items until the channel is closed and empty.
fn consume(rx: Receiver<u64>, mut done: impl FnMut(u64)) {
    while let Ok(item) = rx.recv() {
        greenhub::sleep(Duration::from_millis(3)); // the work
        done(item);
        if item == STOP_AFTER {
            let pid = std::process::id();
            println!("consumer sends SIGTERM to process {pid} after item {item}");
            // SAFETY: kill with this process's own pid and a valid signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
}
