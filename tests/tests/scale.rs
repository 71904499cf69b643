//! Scale: far more live coroutines than `vm.max_map_count` would allow with a mapping per guard
//! page (about 32,700): 100,000 with the default stack size and 300,000 with 64 KiB stacks, all
//! alive at once, all finishing. Each parked coroutine touches a page or two of its stack, so
//! these need about 1 GB and 2.5 GB of memory; they run one at a time (one lock) and are
//! skipped on a kernel without lightweight guard pages. Timings are measured by the
//! benchmarks, not here.

use std::rc::Rc;
use std::sync::Mutex;

use greenhub::coroutine::Builder;
use greenhub::sync::Event;

/// One scale test at a time: two would need their memory at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Spawns `n` coroutines (with `stack_size`, or the default) that all park on one event, checks
/// that every one started and is parked, then releases and joins them.
fn all_alive_at_once(n: usize, stack_size: Option<usize>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !greenhub::ext::lightweight_stack_guards() {
        eprintln!("skipped: without MADV_GUARD_INSTALL, vm.max_map_count caps live stacks");
        return;
    }
    let finished = greenhub::run(|| {
        let gate = Rc::new(Event::new());
        let parked = Rc::new(std::cell::Cell::new(0usize));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (gate, parked) = (gate.clone(), parked.clone());
                let builder = match stack_size {
                    Some(size) => Builder::new().stack_size(size),
                    None => Builder::new(),
                };
                builder.spawn(move || {
                    parked.set(parked.get() + 1);
                    gate.wait();
                    i
                })
            })
            .collect();
        greenhub::yield_now(); // every one runs (before the root) and parks
        assert_eq!(parked.get(), n, "not every coroutine got a stack and parked");
        gate.set();
        let mut finished = 0;
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i);
            finished += 1;
        }
        finished
    });
    assert_eq!(finished, n);
}

#[test]
fn a_hundred_thousand_default_stack_coroutines_alive_at_once_all_finish() {
    all_alive_at_once(100_000, None);
}

#[test]
fn three_hundred_thousand_64_kib_stack_coroutines_alive_at_once_all_finish() {
    all_alive_at_once(300_000, Some(64 * 1024));
}
