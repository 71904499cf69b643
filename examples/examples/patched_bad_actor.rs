//! patched_bad_actor: the third fix of `bad_actor`, the `patch` feature, and where it stops.
//!
//! Teaches: after `greenhub::patch::install()`, the unmodified blocking call
//! `std::thread::sleep(200 ms)` (libc's `nanosleep`) suspends only the calling coroutine, as
//! gevent's `monkey.patch_all()` makes `time.sleep` cooperative: the ticker (a `sleep(10 ms)`
//! loop) keeps ticking while it runs. A CPU hog makes no call that could be intercepted, so the
//! patch cannot help it: the ticker still starves. The same measurement as `bad_actor`
//! (`common/ticker.rs`), in coarse categories.
//!
//! It is built by the `tests-patch` crate, which enables greenhub's `patch` feature (the
//! `examples` crate does not). Run it:
//!
//! ```text
//! cargo run --release --manifest-path tests-patch/Cargo.toml --example patched_bad_actor
//! ```
//!
//! Expected output:
//!
//! ```text
//! patch installed: true
//! std::thread::sleep, patched: ticks while it ran: some; longest wait between two ticks: less than 200 ms
//! a CPU hog, patched (no call to intercept): ticks while it ran: none; longest wait between two ticks: at least 200 ms
//! ```

mod common {
    pub mod ticker;
}
use common::ticker::{blocking_sleep, hog, say, scenario};

fn main() {
    greenhub::patch::install();
    println!("patch installed: {}", greenhub::patch::is_installed());
    say("std::thread::sleep, patched", scenario(blocking_sleep).0);
    say("a CPU hog, patched (no call to intercept)", scenario(hog).0);
}
