//! bad_actor: gevent's "bad actor", demonstrated, detected and fixed.
//!
//! Teaches: a hub switches coroutines only where one suspends, so a coroutine that computes for
//! 200 ms without suspending (a CPU hog), or that calls a blocking std function
//! (`std::thread::sleep(200 ms)`), stalls every other coroutine of its thread: here a ticker
//! that wants to tick every 10 ms does not tick at all while the culprit runs. Nothing in the
//! hub can take control back (there is no timer interrupt for coroutines: see
//! `docs/bad-actor.md`). The blocking monitor detects such episodes: the example starts itself
//! again with `GREENHUB_MONITOR=50ms` and prints what the monitor wrote to stderr about each
//! culprit. Then the fixes: the hog calls `yield_now()` every 1,000 steps, or the culprit runs
//! on a helper thread with `spawn_blocking`; either way the ticker keeps ticking. The third fix,
//! the `patch` feature (which makes `std::thread::sleep` itself a suspension point), is built
//! only in the `tests-patch` workspace: `patched_bad_actor`.
//!
//! Each scenario runs a ticker (a `sleep(10 ms)` loop) around one culprit and counts the ticks
//! in coarse categories, so the output does not depend on the machine's speed.
//!
//! Run it: `cargo run --release -p examples --example bad_actor`
//!
//! Expected output (`{n}`: how long the culprit had run when the monitor looked, which varies
//! by a sample of 12 ms or so):
//! ```text
//! -- the bad actors: the ticker (every 10 ms) while one coroutine does not suspend for 200 ms
//! a CPU hog: ticks while it ran: none; longest wait between two ticks: at least 200 ms
//! std::thread::sleep: ticks while it ran: none; longest wait between two ticks: at least 200 ms
//! -- detected: the same two under GREENHUB_MONITOR=50ms (the monitor's lines on stderr)
//! the hog is coroutine #3, the sleeper coroutine #6
//! greenhub monitor: coroutine #3 (spawned at examples/examples/common/ticker.rs:{n}:{n}) has run for {n}ms without suspending (max_blocking 50ms); the hub and every other coroutine on its thread are stalled until it suspends
//! greenhub monitor: coroutine #3 (spawned at examples/examples/common/ticker.rs:{n}:{n}) suspended after running about {n}ms without suspending
//! greenhub monitor: coroutine #6 (spawned at examples/examples/common/ticker.rs:{n}:{n}) has run for {n}ms without suspending (max_blocking 50ms); the hub and every other coroutine on its thread are stalled until it suspends
//! greenhub monitor: coroutine #6 (spawned at examples/examples/common/ticker.rs:{n}:{n}) suspended after running about {n}ms without suspending
//! -- fixed: the same culprits, made cooperative
//! the hog, with yield_now() every 1,000 steps: ticks while it ran: some; longest wait between two ticks: less than 200 ms
//! the hog, in spawn_blocking: ticks while it ran: some; longest wait between two ticks: less than 200 ms
//! std::thread::sleep, in spawn_blocking: ticks while it ran: some; longest wait between two ticks: less than 200 ms
//! ```

use std::hint::black_box;
use std::process::{Command, Stdio};

mod common {
    pub mod ticker;
}
use common::ticker::{blocking_sleep, compute, hog, say, scenario};

/// The monitor's threshold in the "detected" part.
const MONITOR: &str = "50ms";

fn main() {
    if std::env::args().nth(1).as_deref() == Some("monitored") {
        return monitored();
    }
    println!(
        "-- the bad actors: the ticker (every 10 ms) while one coroutine does not suspend for 200 ms"
    );
    say("a CPU hog", scenario(hog).0);
    say("std::thread::sleep", scenario(blocking_sleep).0);

    println!(
        "-- detected: the same two under GREENHUB_MONITOR={MONITOR} (the monitor's lines on stderr)"
    );
    detected();

    println!("-- fixed: the same culprits, made cooperative");
    let polite_hog = || _ = black_box(compute(greenhub::yield_now));
    say("the hog, with yield_now() every 1,000 steps", scenario(polite_hog).0);
    say("the hog, in spawn_blocking", scenario(|| greenhub::spawn_blocking(hog)).0);
    let sleep_aside = || greenhub::spawn_blocking(blocking_sleep);
    say("std::thread::sleep, in spawn_blocking", scenario(sleep_aside).0);
}

/// The child's part of "detected": both culprits, with the monitor on through the environment.
fn monitored() {
    let (_, hog_id) = scenario(hog);
    let (_, sleeper_id) = scenario(blocking_sleep);
    println!("the hog is coroutine {hog_id}, the sleeper coroutine {sleeper_id}");
}

/// Runs this program again as `monitored` with `GREENHUB_MONITOR` set (outside any hub, so
/// std's blocking `output` is fine), and prints what the monitor said about the two culprits.
fn detected() {
    let exe = std::env::current_exe().expect("the example's own path");
    let child = Command::new(exe)
        .arg("monitored")
        .env("GREENHUB_MONITOR", MONITOR)
        .stdin(Stdio::null())
        .output()
        .expect("run the example again");
    assert!(child.status.success(), "the monitored run failed: {}", child.status);
    let ids = String::from_utf8_lossy(&child.stdout);
    print!("{ids}");
    // The culprits' ids, to leave out reports about any other coroutine (a ticker the OS
    // descheduled for 50 ms would be one, on a machine under heavy load).
    let culprits: Vec<&str> = ids
        .split_whitespace()
        .filter(|w| w.starts_with('#'))
        .map(|w| w.trim_end_matches(','))
        .collect();
    for line in String::from_utf8_lossy(&child.stderr).lines() {
        let about_a_culprit = culprits.iter().any(|id| line.contains(&format!("coroutine {id} ")));
        if line.starts_with("greenhub monitor:") && about_a_culprit {
            println!("{line}");
        }
    }
}
