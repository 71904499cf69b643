//! A pool of worker processes, each running its own hub: the parent feeds them work over pipes
//! and collects results, with one coroutine per worker, so every worker is kept busy and the
//! parent never blocks.
//!
//! It teaches the shape of a multi-process greenhub program: `start_process` per worker with
//! its two pipe ends transferred, coroutines in the parent that talk to each worker, and a
//! shared `Rc` queue of work between those coroutines.
//!
//! Run: `cargo run --release -p examples --example worker_processes`
//!
//! Expected output (how many jobs each worker did varies with scheduling, so it is `{n}`; the
//! counts add up to 40):
//! ```text
//! 4 workers, 40 jobs: count the primes below 2,000,000 in slices of 50,000
//! worker 0 did {n} jobs
//! worker 1 did {n} jobs
//! worker 2 did {n} jobs
//! worker 3 did {n} jobs
//! 148933 primes below 2000000 (expected 148933)
//! all workers exited with 0
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;

use greenhub_ipc::{duplex, start_process};

const WORKERS: usize = 4;
const LIMIT: u64 = 2_000_000;
const SLICE: u64 = 50_000;

/// The work: how many primes lie in `range` (trial division: CPU-bound, no I/O).
fn count_primes(range: Range<u64>) -> u64 {
    let is_prime =
        |n: u64| n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d));
    range.filter(|&n| is_prime(n)).count() as u64
}

fn main() -> Result<(), greenhub_ipc::Error> {
    let jobs: VecDeque<Range<u64>> =
        (0..LIMIT).step_by(SLICE as usize).map(|s| s..s + SLICE).collect();
    println!(
        "{WORKERS} workers, {} jobs: count the primes below 2,000,000 in slices of 50,000",
        jobs.len()
    );
    greenhub::run(|| {
        let jobs = Rc::new(RefCell::new(jobs));
        let mut feeders = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            // One duplex pipe per worker: the parent puts ranges and gets counts.
            let (parent_end, child_end) = duplex::<Option<Range<u64>>, u64>()?;
            let worker = start_process(child_end, |pipe| {
                while let Some(range) = pipe.get()? {
                    pipe.put(&count_primes(range))?;
                }
                Ok::<(), greenhub_ipc::Error>(())
            })?;
            workers.push(worker);
            let jobs = jobs.clone();
            feeders.push(greenhub::spawn(move || -> Result<(u64, usize), greenhub_ipc::Error> {
                let (mut primes, mut done) = (0, 0);
                loop {
                    let job = jobs.borrow_mut().pop_front();
                    parent_end.put(&job)?;
                    if job.is_none() {
                        return Ok((primes, done)); // told the worker to stop
                    }
                    primes += parent_end.get()?; // suspends this coroutine only
                    done += 1;
                }
            }));
        }
        let mut total = 0;
        for (id, feeder) in feeders.into_iter().enumerate() {
            let (primes, done) = feeder.join().expect("feeder coroutine")?;
            println!("worker {id} did {done} jobs");
            total += primes;
        }
        println!("{total} primes below {LIMIT} (expected 148933)");
        let codes: Vec<_> =
            workers.iter().map(|w| w.join().map(|s| s.code())).collect::<Result<_, _>>()?;
        if codes.iter().all(|&c| c == Some(0)) {
            println!("all workers exited with 0");
        } else {
            println!("exit codes: {codes:?}");
        }
        Ok(())
    })
}
