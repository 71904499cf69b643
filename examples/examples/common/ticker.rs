//! The measurement shared by `bad_actor` and `patched_bad_actor`: a ticker coroutine around one
//! culprit, and what the ticker saw, in coarse categories (so the output does not depend on the
//! machine's speed).

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long each culprit keeps the thread (or, fixed, takes in all).
pub const CULPRIT: Duration = Duration::from_millis(200);
/// The ticker's period.
pub const TICK: Duration = Duration::from_millis(10);

/// Arithmetic until `CULPRIT` has passed, calling `between` every 1,000 steps.
pub fn compute(between: impl Fn()) -> u64 {
    let (start, mut x) = (Instant::now(), 1u64);
    while start.elapsed() < CULPRIT {
        for _ in 0..1_000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407));
        }
        between();
    }
    x
}

/// What the ticker saw while the culprit ran.
pub struct Seen {
    ticks_during: usize,
    longest_wait: Duration,
}

/// Runs a ticker, lets it tick a few times, runs `culprit` in a coroutine of its own, lets the
/// ticker tick again, and says what the ticker saw. Returns the culprit's coroutine id too.
pub fn scenario(culprit: impl FnOnce() + 'static) -> (Seen, greenhub::CoroutineId) {
    greenhub::run(|| {
        let ticks = Rc::new(RefCell::new(Vec::new()));
        let ticker = greenhub::spawn({
            let ticks = ticks.clone();
            move || {
                loop {
                    greenhub::sleep(TICK);
                    ticks.borrow_mut().push(Instant::now());
                }
            }
        });
        greenhub::sleep(3 * TICK);
        let culprit = greenhub::spawn(move || {
            let start = Instant::now();
            culprit();
            (greenhub::current(), start, Instant::now())
        });
        let (id, start, end) = culprit.join().expect("the culprit");
        greenhub::sleep(3 * TICK);
        ticker.cancel();
        let ticks = ticks.borrow();
        let ticks_during = ticks.iter().filter(|&&t| start < t && t < end).count();
        let longest_wait = ticks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        (Seen { ticks_during, longest_wait }, id)
    })
}

pub fn say(what: &str, seen: Seen) {
    let during = if seen.ticks_during == 0 { "none" } else { "some" };
    let longest = if seen.longest_wait >= CULPRIT { "at least" } else { "less than" };
    println!(
        "{what}: ticks while it ran: {during}; longest wait between two ticks: {longest} {} ms",
        CULPRIT.as_millis()
    );
}

pub fn hog() {
    black_box(compute(|| {}));
}

pub fn blocking_sleep() {
    std::thread::sleep(CULPRIT);
}
