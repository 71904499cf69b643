//! What one parked coroutine costs greenhub beyond its stack pages: the bookkeeping a sleeping
//! coroutine holds, measured with `size_of` (tests only; the figures are quoted in
//! docs/coroutines-and-stacks.md, and the tests keep them from growing unnoticed).

use std::mem::size_of;
use std::rc::Rc;

use crate::coroutine::{Co, CoBox, Spawned};
use crate::join::JoinHandle;
use crate::task::{Task, WaitReason};
use crate::timer::{TimerAction, TimerKey};

/// The heap bytes glibc's malloc takes for a request of `n` bytes (8 bytes of header, 16-byte
/// granules, 32 at least).
fn malloc_chunk(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

/// A sleeper's bookkeeping, by part: (what, bytes).
fn parts() -> Vec<(&'static str, usize)> {
    // The body of a typical sleeper: a closure holding two `Rc`s, returning nothing.
    type Body = Spawned<[Rc<()>; 2], ()>;
    vec![
        // The slab stores `Task` in an enum with its vacant-slot link (at least `Option<Task>`).
        ("task table slot", size_of::<Option<Task>>()),
        ("body and result (one Rc allocation)", malloc_chunk(2 * 8 + size_of::<Body>())),
        ("coroutine (CoBox)", size_of::<CoBox>() + malloc_chunk(size_of::<Option<Co>>())),
        // A BTreeMap leaf holds 11 entries; B-trees run about 70% full.
        ("timer entry", (size_of::<TimerKey>() + size_of::<TimerAction>()) * 10 / 7),
        ("JoinHandle (the caller's)", size_of::<JoinHandle<()>>()),
    ]
}

#[test]
fn a_parked_coroutines_bookkeeping_stays_small() {
    let parts = parts();
    for (what, bytes) in &parts {
        eprintln!("{what}: {bytes} bytes");
    }
    eprintln!("of the task: WaitReason {} bytes", size_of::<WaitReason>());
    let total: usize = parts.iter().map(|(_, b)| b).sum();
    eprintln!("total: {total} bytes");
    assert!(total <= 512, "a parked coroutine's bookkeeping grew to {total} bytes");
}
