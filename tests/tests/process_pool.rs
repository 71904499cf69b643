//! `Pool`: worker processes applying one function: results in input order (`map`) and in
//! completion order (`imap_unordered`, lazily pulling items), many applying coroutines, per-item
//! failures (a panic, a result or item that does not encode), a worker that dies, replacement
//! after `max_tasks_per_worker`, the `concurrency` bound (and its default, 1), `close` and drop
//! (mid-run too), and no fd leak or zombie whatever happens; then each of those guarantees again
//! with items travelling in chunks of several.
//!
//! Every test holds [`process_lock`] (they fork and open fds). No test sleeps to synchronise:
//! items that must overlap meet at a Unix socket (one binds and waits, the other connects), or
//! yield to each other inside one worker.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{UnixListener, UnixStream};
use greenhub_ipc::{Error, Pool, PoolBuilder};
use greenhub_tests::{assert_no_fd_leak, panic_message, process_lock, zombie_children};
use serde::{Deserialize, Serialize};

/// A deadline no passing test comes near: reaching it means the test hung.
const LONG: Duration = Duration::from_secs(60);

/// Runs `body` in a fresh hub, holding [`process_lock`], failing the test on a hang, and checks
/// that no child is left a zombie afterwards.
fn hub_test<T>(body: impl FnOnce() -> T) -> T {
    let _serial = process_lock();
    let value = greenhub::run(|| {
        greenhub::timeout(LONG, body).expect("the test hung: still suspended after LONG")
    });
    assert_eq!(zombie_children(), Vec::<u32>::new(), "zombies left behind");
    value
}

/// What a test item asks the worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Job {
    /// Answer with `n` and the worker's pid.
    Echo(u64),
    /// Panic with this message.
    Panic(String),
    /// Die at once (SIGKILL to itself).
    Die,
    /// Answer with a value whose encoding fails.
    Unencodable,
    /// Bind a Unix socket here and wait for a connection.
    Wait(PathBuf),
    /// Connect to a waiting item's socket.
    Signal(PathBuf),
    /// Answer with this many bytes.
    Big(usize),
}

/// A job's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Answer {
    Echo { n: u64, pid: u32 },
    Refuses(Refuses),
    Done(String),
}

/// A value whose `Serialize` fails.
#[derive(Debug, PartialEq)]
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to be encoded"))
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Refuses)
    }
}

/// The pool's function in every test.
fn run_job(job: Job) -> Answer {
    match job {
        Job::Echo(n) => Answer::Echo { n, pid: std::process::id() },
        Job::Panic(message) => panic!("{message}"),
        Job::Die => {
            // SAFETY: kill with our own pid and a signal number touches no memory.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!("SIGKILL is not survived")
        }
        Job::Unencodable => Answer::Refuses(Refuses),
        Job::Wait(path) => {
            let listener = UnixListener::bind(&path).unwrap();
            drop(listener.accept().unwrap());
            Answer::Done("waited".into())
        }
        Job::Signal(path) => {
            drop(UnixStream::connect(&path).unwrap());
            Answer::Done("signalled".into())
        }
        Job::Big(n) => Answer::Done("x".repeat(n)),
    }
}

fn echo_pid(answer: &Answer) -> u32 {
    match answer {
        Answer::Echo { pid, .. } => *pid,
        other => panic!("expected an echo, got {other:?}"),
    }
}

/// A fresh socket path in a directory of this test's own.
fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("greenhub-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn apply_map_and_imap_unordered_give_every_result() {
    hub_test(|| {
        let pool = Pool::new(2, |n: u64| n * 3).unwrap();
        assert_eq!(pool.workers(), 2);
        assert_eq!(pool.apply(14).unwrap(), 42);
        let expected: Vec<u64> = (0..1000).map(|n| n * 3).collect();
        assert_eq!(pool.map(0..1000).unwrap(), expected);
        let mut unordered: Vec<u64> = pool.imap_unordered(0..1000).map(Result::unwrap).collect();
        unordered.sort_unstable();
        assert_eq!(unordered, expected);
        assert_eq!(pool.map(Vec::new()).unwrap(), Vec::<u64>::new());
        pool.close().unwrap();
    });
}

#[test]
fn map_spreads_items_over_every_worker() {
    hub_test(|| {
        let pool = PoolBuilder::new(3).prefetch(0).start(run_job).unwrap();
        let answers = pool.map((0..60).map(Job::Echo)).unwrap();
        let pids: BTreeSet<u32> = answers.iter().map(echo_pid).collect();
        assert_eq!(pids.len(), 3, "items went to {pids:?} only");
        pool.close().unwrap();
    });
}

#[test]
fn imap_unordered_yields_in_completion_order_and_items_overlap_in_one_worker() {
    hub_test(|| two_items_overlap(PoolBuilder::new(1), "overlap.sock"));
}

/// One worker running two items at once (`concurrency(2)` on `builder`): the first can only
/// finish after the second, so the second's answer comes first.
fn two_items_overlap(builder: PoolBuilder, socket: &str) {
    let pool = builder.concurrency(2).start(run_job).unwrap();
    let path = socket_path(socket);
    let jobs = [Job::Wait(path.clone()), Job::Signal(path)];
    let order: Vec<Answer> = pool.imap_unordered(jobs).map(Result::unwrap).collect();
    assert_eq!(order, [Answer::Done("signalled".into()), Answer::Done("waited".into())]);
    pool.close().unwrap();
}

#[test]
fn imap_unordered_pulls_items_lazily_from_an_endless_iterator() {
    let pulled = hub_test(|| pulled_for_ten_results(PoolBuilder::new(2).prefetch(3)));
    // At most what the workers have room for (2 x (1 + 3)), plus one held, beyond those used.
    assert!(pulled <= 10 + 2 * 4 + 1, "pulled {pulled} items for 10 results");
}

/// How many items `imap_unordered` on a pool built from `builder` pulls from an endless
/// iterator to yield 10 results.
fn pulled_for_ten_results(builder: PoolBuilder) -> u64 {
    let pool = builder.start(|n: u64| n).unwrap();
    let pulled = Rc::new(Cell::new(0u64));
    let counted = {
        let pulled = Rc::clone(&pulled);
        (0..).inspect(move |_| pulled.set(pulled.get() + 1))
    };
    let first: Vec<u64> = pool.imap_unordered(counted).take(10).map(Result::unwrap).collect();
    assert_eq!(first.len(), 10);
    drop(pool);
    pulled.get()
}

#[test]
fn many_coroutines_apply_at_once() {
    hub_test(|| {
        let pool = Rc::new(Pool::new(2, |(a, b): (u32, u32)| a * 1000 + b).unwrap());
        let callers: Vec<_> = (0..20u32)
            .map(|a| {
                let pool = Rc::clone(&pool);
                greenhub::spawn(move || {
                    (0..50u32).all(|b| pool.apply((a, b)).unwrap() == a * 1000 + b)
                })
            })
            .collect();
        assert!(callers.into_iter().all(|c| c.join().unwrap()), "a caller got a wrong result");
        Rc::try_unwrap(pool).unwrap().close().unwrap();
    });
}

#[test]
fn a_panicking_item_gives_panicked_with_its_message_and_the_worker_goes_on() {
    hub_test(|| {
        let pool = PoolBuilder::new(1).start(run_job).unwrap();
        let before = echo_pid(&pool.apply(Job::Echo(1)).unwrap());
        match pool.apply(Job::Panic("item 7 is cursed".into())) {
            Err(Error::Panicked(message)) => assert_eq!(message, "item 7 is cursed"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        let after = echo_pid(&pool.apply(Job::Echo(2)).unwrap());
        assert_eq!(before, after, "the worker was replaced after a panic");
        pool.close().unwrap();
    });
}

#[test]
fn a_result_that_cannot_be_encoded_fails_that_item_only() {
    hub_test(|| {
        let pool = PoolBuilder::new(1).start(run_job).unwrap();
        let before = echo_pid(&pool.apply(Job::Echo(1)).unwrap());
        let jobs = [Job::Echo(1), Job::Unencodable, Job::Echo(3)];
        let results: Vec<_> = jobs.into_iter().map(|job| pool.apply(job)).collect();
        assert!(matches!(&results[1], Err(Error::Codec(m)) if m.contains("encode")), "{results:?}");
        assert_eq!(echo_pid(results[2].as_ref().unwrap()), before);
        match pool.map([Job::Echo(4), Job::Unencodable]) {
            Err(Error::Codec(_)) => {}
            other => panic!("expected map to fail with Codec, got {other:?}"),
        }
        assert_eq!(echo_pid(&pool.apply(Job::Echo(5)).unwrap()), before);
        pool.close().unwrap();
    });
}

/// Regression: a result larger than the reader's limit made a reply frame the parent refused,
/// which ended the worker's link and failed every item in flight there; an item larger than
/// the worker's limit did the same from the other side.
#[test]
fn a_message_over_max_message_size_fails_its_item_alone_and_the_worker_goes_on() {
    hub_test(|| {
        let one_by_one = PoolBuilder::new(1).chunksize(6);
        for builder in [one_by_one.clone(), one_by_one.concurrency(3)] {
            let pool = builder.max_message_size(1024).start(run_job).unwrap();
            let before = echo_pid(&pool.apply(Job::Echo(0)).unwrap());
            // One chunk: answers that fit a reply alone but not two to one, a result too large
            // for any, and small ones after it.
            let jobs = [Job::Big(600), Job::Big(600), Job::Big(5000), Job::Echo(3), Job::Big(990)];
            let mut sizes: Vec<_> = pool
                .imap_unordered(jobs)
                .map(|result| match result {
                    Ok(Answer::Done(text)) => Ok(text.len()),
                    Ok(Answer::Echo { n, .. }) => Ok(n as usize),
                    Err(Error::TooLarge { len, max: 1024 }) if len > 5000 => Err("too large"),
                    other => panic!("unexpected: {other:?}"),
                })
                .collect();
            sizes.sort();
            assert_eq!(sizes, [Ok(3), Ok(600), Ok(600), Ok(990), Err("too large")]);
            // An item too large for a chunk of its own never leaves the parent.
            let huge = || Job::Panic("y".repeat(2000));
            assert!(matches!(pool.apply(huge()), Err(Error::TooLarge { max: 1024, .. })));
            let map = pool.map([Job::Echo(1), huge(), Job::Echo(2)]);
            assert!(matches!(map, Err(Error::TooLarge { max: 1024, .. })), "{map:?}");
            assert_eq!(echo_pid(&pool.apply(Job::Echo(4)).unwrap()), before, "same worker");
            pool.close().unwrap();
        }
    });
}

#[test]
fn an_item_that_cannot_be_encoded_or_decoded_fails_alone() {
    hub_test(|| {
        /// Encodes fine, but a worker cannot decode an odd one.
        #[derive(Debug, Clone, Copy, Serialize)]
        struct Picky(u8);
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match u8::deserialize(d)? {
                    n if n % 2 == 0 => Ok(Picky(n)),
                    n => Err(serde::de::Error::custom(format!("odd value {n}"))),
                }
            }
        }
        let pool = Pool::new(1, |p: Picky| p.0).unwrap();
        assert_eq!(pool.apply(Picky(4)).unwrap(), 4);
        match pool.apply(Picky(5)) {
            Err(Error::Codec(message)) => assert!(message.contains("Picky"), "{message}"),
            other => panic!("expected Codec, got {other:?}"),
        }
        assert_eq!(pool.apply(Picky(6)).unwrap(), 6);
        pool.close().unwrap();
        // An item that cannot even be encoded never leaves the parent.
        let pool = Pool::new(1, |_: Refuses| 0u8).unwrap();
        assert!(matches!(pool.apply(Refuses), Err(Error::Codec(_))));
        pool.close().unwrap();
    });
}

#[test]
fn a_worker_that_dies_fails_exactly_its_item_and_is_replaced() {
    hub_test(|| {
        let pool = Rc::new(PoolBuilder::new(2).prefetch(0).start(run_job).unwrap());
        // Other coroutines keep both workers busy with echoes meanwhile.
        let echoes: Vec<_> = (0..4u64)
            .map(|c| {
                let pool = Rc::clone(&pool);
                greenhub::spawn(move || {
                    (0..50)
                        .map(|n| pool.apply(Job::Echo(c * 100 + n)).map(|a| echo_pid(&a)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        match pool.apply(Job::Die) {
            Err(Error::WorkerDied(status)) => assert_eq!(status.signal(), Some(libc::SIGKILL)),
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        for echo in echoes {
            for result in echo.join().unwrap() {
                result.expect("an item of a worker that did not die failed");
            }
        }
        // Two workers again, neither of them the dead one.
        let answers = pool.map((0..40).map(Job::Echo)).unwrap();
        let pids: BTreeSet<u32> = answers.iter().map(echo_pid).collect();
        assert_eq!(pids.len(), 2, "expected two live workers, items went to {pids:?}");
        Rc::try_unwrap(pool).unwrap().close().unwrap();
    });
}

#[test]
fn a_dead_worker_fails_every_item_in_flight_at_it_and_only_those() {
    hub_test(|| {
        // One worker, its queue full of echoes behind the item that kills it.
        let pool = PoolBuilder::new(1).prefetch(16).start(run_job).unwrap();
        let jobs = std::iter::once(Job::Die).chain((0..10).map(Job::Echo));
        let results: Vec<_> = pool.imap_unordered(jobs).collect();
        assert_eq!(results.len(), 11);
        assert!(results.iter().all(|r| matches!(r, Err(Error::WorkerDied(_)))), "{results:?}");
        // The replacement answers.
        assert!(matches!(pool.apply(Job::Echo(1)), Ok(Answer::Echo { n: 1, .. })));
        pool.close().unwrap();
    });
}

#[test]
fn max_tasks_per_worker_replaces_each_worker_after_that_many_items() {
    hub_test(|| three_items_per_worker(PoolBuilder::new(2)));
}

/// Maps 20 items on a pool built from `builder` with `max_tasks_per_worker(3)` and checks that
/// no worker ran more than 3 of them.
fn three_items_per_worker(builder: PoolBuilder) {
    let pool = builder.max_tasks_per_worker(3).start(run_job).unwrap();
    let answers = pool.map((0..20).map(Job::Echo)).unwrap();
    let mut per_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for answer in &answers {
        *per_pid.entry(echo_pid(answer)).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 3), "a worker ran more than 3 items: {per_pid:?}");
    assert!(per_pid.len() >= 7, "20 items at 3 per worker need 7 workers: {per_pid:?}");
    pool.close().unwrap();
}

#[test]
fn workers_are_named_after_the_pool() {
    hub_test(|| {
        let pool = PoolBuilder::new(2).name("cruncher").start(|n: u8| n).unwrap();
        let text = format!("{pool:?}");
        assert!(text.contains("\"cruncher-1\"") && text.contains("\"cruncher-2\""), "{text}");
        pool.close().unwrap();
    });
}

#[test]
fn dropping_a_pool_terminates_workers_stuck_in_an_item() {
    hub_test(|| {
        let pool = Rc::new(PoolBuilder::new(2).start(run_job).unwrap());
        let path = socket_path("stuck.sock");
        let stuck = greenhub::spawn({
            let pool = Rc::clone(&pool);
            move || pool.apply(Job::Wait(path))
        });
        greenhub::yield_now();
        stuck.cancel(); // the caller gives up; its item still blocks a worker
        assert!(stuck.join().unwrap_err().is_cancelled());
        drop(Rc::try_unwrap(pool).unwrap()); // terminates both workers; the hub reaps them
    });
}

/// A pool item that connects to the Unix socket at `path`, sends its worker's pid, and waits
/// until the other end closes: a worker running it is stuck until it is terminated, and the
/// test sees its death as the end of that connection.
fn report_pid_and_wait(path: PathBuf) -> u8 {
    let mut conn = UnixStream::connect(&path).unwrap();
    conn.write_all(&std::process::id().to_le_bytes()).unwrap();
    conn.read(&mut [0; 1]).unwrap() as u8
}

#[test]
fn dropping_a_pool_mid_run_terminates_and_reaps_its_workers_before_run_ends() {
    hub_test(|| {
        let path = socket_path("report.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pool = Rc::new(PoolBuilder::new(2).prefetch(0).start(report_pid_and_wait).unwrap());
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (pool, path) = (Rc::clone(&pool), path.clone());
                greenhub::spawn(move || pool.apply(path))
            })
            .collect();
        let conns: Vec<UnixStream> = (0..2).map(|_| listener.accept().unwrap().0).collect();
        let pids: BTreeSet<u32> = conns
            .iter()
            .map(|mut conn| {
                let mut pid = [0; 4];
                conn.read_exact(&mut pid).unwrap();
                u32::from_le_bytes(pid)
            })
            .collect();
        assert_eq!(pids.len(), 2, "each worker is stuck in one item: {pids:?}");
        for caller in callers {
            caller.cancel(); // the callers give up; their items still block both workers
            assert!(caller.join().unwrap_err().is_cancelled());
        }
        drop(Rc::try_unwrap(pool).unwrap());
        for mut conn in &conns {
            assert_eq!(conn.read(&mut [0; 1]).unwrap(), 0, "a worker outlived its pool");
        }
        greenhub_tests::yield_until("the hub reaps both workers", || {
            pids.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        });
    });
}

thread_local! {
    /// In a worker: how many items of [`count_overlap`] run now, and the most ever at once.
    static RUNNING: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// A pool item that stays in its worker for a few hub turns (letting the worker's other items
/// run) and answers with the most items its worker has run at once so far.
fn count_overlap(_: u32) -> usize {
    let (now, peak) = RUNNING.get();
    RUNNING.set((now + 1, peak.max(now + 1)));
    for _ in 0..20 {
        greenhub::yield_now();
    }
    let (now, peak) = RUNNING.get();
    RUNNING.set((now - 1, peak));
    peak
}

/// The most items one worker of a pool built from `builder` ran at once over a map of 40.
fn peak_overlap(builder: PoolBuilder) -> usize {
    let pool = builder.start(count_overlap).unwrap();
    let peak = pool.map(0..40).unwrap().into_iter().max().unwrap();
    pool.close().unwrap();
    peak
}

#[test]
fn a_worker_runs_up_to_concurrency_items_at_once_and_never_more() {
    hub_test(|| {
        assert_eq!(peak_overlap(PoolBuilder::new(1).concurrency(3)), 3);
        // A chunk of 10 is queued at the worker at once: still 3 at a time.
        assert_eq!(peak_overlap(PoolBuilder::new(1).concurrency(3).chunksize(10)), 3);
    });
}

#[test]
fn a_worker_runs_one_item_at_a_time_by_default() {
    hub_test(|| {
        assert_eq!(peak_overlap(PoolBuilder::new(1)), 1);
        assert_eq!(peak_overlap(PoolBuilder::new(1).chunksize(10)), 1);
    });
}

/// What a dead worker could leave behind in the parent: its task pipe's write end (a pipe fd)
/// and that pipe's flusher coroutine. (Its pidfd closes once its reaper runs, which under load
/// may be a few turns after the `join` that reported the death: not counted.)
fn pipes_and_flushers() -> (usize, usize) {
    let pipes = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count();
    let dump = greenhub::ext::dump();
    let flushers = dump.lines().filter(|l| l.contains("pool/outgoing.rs")).count();
    (pipes, flushers)
}

#[test]
fn a_dead_worker_leaves_no_pipe_or_coroutine_behind_while_the_pool_lives() {
    hub_test(|| {
        let pool = PoolBuilder::new(1).start(run_job).unwrap();
        let deaths_then_an_echo = |deaths: usize| {
            for _ in 0..deaths {
                assert!(matches!(pool.apply(Job::Die), Err(Error::WorkerDied(_))));
            }
            pool.apply(Job::Echo(1)).unwrap(); // a live replacement, with its pipes, again
            pipes_and_flushers()
        };
        let (pipes, flushers) = deaths_then_an_echo(1);
        let (pipes_later, flushers_later) = deaths_then_an_echo(10);
        assert_eq!(pipes_later, pipes, "each dead worker left a pipe open in the parent");
        assert_eq!(flushers_later, flushers, "each dead worker left its flusher behind");
        pool.close().unwrap();
    });
}

#[test]
fn no_fd_leak_or_zombie_whatever_the_workers_do() {
    let _serial = process_lock();
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let pool = PoolBuilder::new(2).max_tasks_per_worker(5).start(run_job).unwrap();
            assert!(pool.apply(Job::Die).is_err());
            assert!(pool.apply(Job::Panic("p".into())).is_err());
            assert!(pool.apply(Job::Unencodable).is_err());
            assert_eq!(pool.map((0..12).map(Job::Echo)).unwrap().len(), 12);
            pool.close().unwrap();
            let dropped = Pool::new(2, |n: u32| n).unwrap();
            assert_eq!(dropped.apply(1).unwrap(), 1);
            drop(dropped);
        });
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

#[test]
fn chunked_map_keeps_input_order_over_every_worker() {
    hub_test(|| {
        let pool = PoolBuilder::new(2).chunksize(7).start(run_job).unwrap();
        let answers = pool.map((0..1000).map(Job::Echo)).unwrap();
        let order: Vec<u64> = answers
            .iter()
            .map(|a| match a {
                Answer::Echo { n, .. } => *n,
                other => panic!("expected an echo, got {other:?}"),
            })
            .collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
        let pids: BTreeSet<u32> = answers.iter().map(echo_pid).collect();
        assert_eq!(pids.len(), 2, "chunks went to {pids:?} only");
        let mut unordered: Vec<u64> = pool
            .imap_unordered((0..1000).map(Job::Echo))
            .map(|a| match a.unwrap() {
                Answer::Echo { n, .. } => n,
                other => panic!("expected an echo, got {other:?}"),
            })
            .collect();
        unordered.sort_unstable();
        assert_eq!(unordered, (0..1000).collect::<Vec<_>>());
        pool.close().unwrap();
    });
}

#[test]
fn the_default_chunks_of_a_long_map_give_every_result_in_order() {
    hub_test(|| {
        let pool = Pool::new(2, |n: u64| n + 1).unwrap();
        let expected: Vec<u64> = (1..=100_000).collect();
        assert_eq!(pool.map(0..100_000).unwrap(), expected);
        assert_eq!(pool.map(expected.clone()).unwrap()[99_999], 100_001);
        pool.close().unwrap();
    });
}

/// Runs `jobs` in one worker as a single chunk and returns the outcomes in input order, and
/// whether the worker that answered is the one that answers afterwards.
fn in_one_chunk(jobs: Vec<Job>) -> (Vec<Result<Answer, Error>>, bool) {
    let pool = PoolBuilder::new(1).chunksize(jobs.len()).start(run_job).unwrap();
    let before = echo_pid(&pool.apply(Job::Echo(0)).unwrap());
    let mut results: Vec<_> = pool.imap_unordered(jobs).collect();
    // One worker, concurrency 1: the chunk runs in order and its answers come in order.
    let same = echo_pid(&pool.apply(Job::Echo(0)).unwrap()) == before;
    results.shrink_to_fit();
    pool.close().unwrap();
    (results, same)
}

#[test]
fn a_panicking_item_in_a_chunk_fails_only_itself() {
    hub_test(|| {
        let jobs = vec![Job::Echo(1), Job::Panic("cursed".into()), Job::Echo(3)];
        let (results, same_worker) = in_one_chunk(jobs);
        assert!(matches!(&results[0], Ok(Answer::Echo { n: 1, .. })), "{results:?}");
        assert!(matches!(&results[1], Err(Error::Panicked(m)) if m == "cursed"), "{results:?}");
        assert!(matches!(&results[2], Ok(Answer::Echo { n: 3, .. })), "{results:?}");
        assert!(same_worker, "the worker was replaced after a panic");
    });
}

#[test]
fn integer_results_and_a_panic_share_a_chunk() {
    // An integer result travels as its raw bytes, a panic as a tagged message: both kinds of
    // record in one reply frame, each item with its own outcome.
    hub_test(|| {
        let pool = PoolBuilder::new(1)
            .chunksize(8)
            .start(|x: i32| if x == 3 { panic!("three") } else { -x })
            .unwrap();
        let (mut values, mut failures) = (Vec::new(), Vec::new());
        for outcome in pool.imap_unordered(0..8) {
            match outcome {
                Ok(value) => values.push(value),
                Err(err) => failures.push(err),
            }
        }
        values.sort_unstable();
        assert_eq!(values, [-7, -6, -5, -4, -2, -1, 0]);
        assert!(matches!(&failures[..], [Error::Panicked(m)] if m == "three"), "{failures:?}");
        pool.close().unwrap();
    });
}

#[test]
fn integer_items_and_results_keep_under_the_smallest_message_limit() {
    // 64 bytes hold 7 raw `u64` items of a chunk and 6 raw results of a reply frame: chunks and
    // reply frames end early, and every result still comes, in order.
    hub_test(|| {
        let pool =
            PoolBuilder::new(2).max_message_size(64).chunksize(100).start(|x: u64| x * 2).unwrap();
        assert_eq!(
            pool.map(0..1_000u64).unwrap(),
            (0..1_000u64).map(|x| x * 2).collect::<Vec<_>>()
        );
        pool.close().unwrap();
    });
}

#[test]
fn an_unencodable_result_in_a_chunk_fails_only_itself() {
    hub_test(|| {
        let jobs = vec![Job::Echo(1), Job::Unencodable, Job::Echo(3)];
        let (results, same_worker) = in_one_chunk(jobs);
        assert!(matches!(&results[0], Ok(Answer::Echo { n: 1, .. })), "{results:?}");
        assert!(matches!(&results[1], Err(Error::Codec(m)) if m.contains("encode")), "{results:?}");
        assert!(matches!(&results[2], Ok(Answer::Echo { n: 3, .. })), "{results:?}");
        assert!(same_worker, "the worker was replaced after a result that did not encode");
    });
}

#[test]
fn failures_in_the_middle_of_a_big_chunk_fail_only_their_items() {
    hub_test(|| {
        // 20,000 answers of ~10 bytes leave in several reply frames (16 KiB each): a failure
        // on either side of a frame boundary, or inside a frame, fails only its own item.
        let bad = [(4_000, "panic"), (9_999, "unencodable"), (10_000, "panic"), (19_999, "panic")];
        let jobs = (0..20_000)
            .map(|n| match bad.iter().find(|(i, _)| *i == n) {
                Some((_, "panic")) => Job::Panic(format!("item {n}")),
                Some(_) => Job::Unencodable,
                None => Job::Echo(n),
            })
            .collect();
        let (results, same_worker) = in_one_chunk(jobs);
        assert_eq!(results.len(), 20_000);
        for (n, result) in (0u64..).zip(&results) {
            match bad.iter().find(|(i, _)| *i == n) {
                Some((_, "panic")) => {
                    let expected = format!("item {n}");
                    assert!(
                        matches!(result, Err(Error::Panicked(m)) if *m == expected),
                        "{n}: {result:?}"
                    );
                }
                Some(_) => assert!(matches!(result, Err(Error::Codec(_))), "{n}: {result:?}"),
                None => assert!(
                    matches!(result, Ok(Answer::Echo { n: m, .. }) if *m == n),
                    "{n}: {result:?}"
                ),
            }
        }
        assert!(same_worker, "the worker was replaced after per-item failures");
    });
}

#[test]
fn a_map_that_fails_midway_leaves_the_pool_serving_the_next_one() {
    hub_test(|| {
        let pool = PoolBuilder::new(2).chunksize(10_000).start(run_job).unwrap();
        let jobs = (0..40_000)
            .map(|n| if n == 25_000 { Job::Panic("midway".into()) } else { Job::Echo(n) });
        assert!(matches!(pool.map(jobs), Err(Error::Panicked(m)) if m == "midway"));
        // The failed call's late results go nowhere: this call sees only its own, in order.
        let answers = pool.map((0..30_000).map(Job::Echo)).unwrap();
        assert!(
            answers.iter().zip(0..).all(|(a, i)| matches!(a, Answer::Echo { n, .. } if *n == i))
        );
        pool.close().unwrap();
    });
}

#[test]
fn a_dead_worker_fails_every_item_of_its_chunk_and_only_those() {
    hub_test(|| {
        // Two workers, each taking one chunk of 5 at a time: items 0-4 go to one, 5-9 (with the
        // fatal item 7) to the other; later chunks go to the survivor and the replacement.
        let pool = PoolBuilder::new(2).chunksize(5).prefetch(0).start(run_job).unwrap();
        let jobs = (0..20).map(|n| if n == 7 { Job::Die } else { Job::Echo(n) });
        let results: Vec<_> = pool.imap_unordered(jobs).collect();
        let died = results.iter().filter(
            |r| matches!(r, Err(Error::WorkerDied(s)) if s.signal() == Some(libc::SIGKILL)),
        );
        assert_eq!(died.count(), 5, "{results:?}");
        let mut answered: Vec<u64> = results
            .iter()
            .filter_map(|r| match r {
                Ok(Answer::Echo { n, .. }) => Some(*n),
                _ => None,
            })
            .collect();
        answered.sort_unstable();
        assert_eq!(answered, (0..5).chain(10..20).collect::<Vec<_>>());
        pool.close().unwrap();
    });
}

#[test]
fn max_tasks_per_worker_counts_items_not_chunks() {
    hub_test(|| three_items_per_worker(PoolBuilder::new(2).chunksize(10)));
}

#[test]
fn concurrency_overlaps_the_items_of_one_chunk() {
    // Both items in one chunk: the waiter only finishes because the signaller runs beside it.
    hub_test(|| two_items_overlap(PoolBuilder::new(1).chunksize(2), "chunk-overlap.sock"));
}

#[test]
fn chunked_imap_unordered_pulls_items_lazily_from_an_endless_iterator() {
    let builder = PoolBuilder::new(2).prefetch(3).chunksize(4);
    let pulled = hub_test(|| pulled_for_ten_results(builder));
    // At most the pool-wide window (2 x max(1 + 3, 4)) beyond the results used.
    assert!(pulled <= 10 + 2 * 4, "pulled {pulled} items for 10 results");
}

#[test]
fn no_fd_leak_or_zombie_whatever_the_workers_do_in_chunks() {
    let _serial = process_lock();
    assert_no_fd_leak(5, || {
        greenhub::run(|| {
            let pool = PoolBuilder::new(2).chunksize(4).max_tasks_per_worker(6).start(run_job);
            let pool = pool.unwrap();
            let jobs = [Job::Echo(1), Job::Die, Job::Panic("p".into()), Job::Unencodable];
            assert_eq!(pool.imap_unordered(jobs).filter(Result::is_err).count(), 4);
            let jobs = [Job::Echo(1), Job::Panic("p".into()), Job::Unencodable, Job::Echo(2)];
            assert_eq!(pool.imap_unordered(jobs).filter(Result::is_err).count(), 2);
            assert_eq!(pool.map((0..30).map(Job::Echo)).unwrap().len(), 30);
            pool.close().unwrap();
        });
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

#[test]
fn a_chunksize_of_zero_is_refused_naming_the_rule() {
    let _serial = process_lock();
    let caught = std::panic::catch_unwind(|| PoolBuilder::new(1).chunksize(0)).unwrap_err();
    let message = panic_message(&*caught);
    assert!(message.contains("at least one item"), "{message}");
}

#[test]
fn a_pool_of_no_workers_is_refused_naming_the_rule() {
    // Holds the lock like every test here: a panic reported on another thread while a test
    // forks would leave the panic machinery's lock held in that test's workers.
    let _serial = process_lock();
    let caught = std::panic::catch_unwind(|| PoolBuilder::new(0)).unwrap_err();
    let message = panic_message(&*caught);
    assert!(message.contains("at least one worker"), "{message}");
}

/// Regression: a `close` cut short (by a timeout here) marked the pool as closing, so dropping
/// it then did not terminate its workers: one stuck in an item outlived its pool.
#[test]
fn a_close_cut_short_still_leaves_no_worker_behind_when_the_pool_drops() {
    hub_test(|| {
        let path = socket_path("close-cut.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let pool = Rc::new(PoolBuilder::new(1).prefetch(0).start(report_pid_and_wait).unwrap());
        let item = greenhub::spawn({
            let pool = Rc::clone(&pool);
            move || pool.apply(path)
        });
        let mut conn = listener.accept().unwrap().0;
        conn.read_exact(&mut [0; 4]).unwrap(); // the worker is stuck in the item
        item.cancel();
        assert!(item.join().unwrap_err().is_cancelled());
        let pool = Rc::try_unwrap(pool).unwrap();
        let cut = greenhub::timeout(Duration::from_millis(20), move || pool.close());
        assert!(cut.is_err(), "close waits for the stuck worker");
        assert_eq!(conn.read(&mut [0; 1]).unwrap(), 0, "the worker outlived its pool");
    });
}

/// Regression: a pool used outside the hub that started it (a later `run`, where its workers
/// and reply readers are gone) waited forever; it is `Closed` there.
#[test]
fn a_pool_used_in_a_later_run_is_closed_there() {
    let _serial = process_lock();
    let pool = greenhub::run(|| {
        let pool = Pool::new(1, |x: u64| x + 1).unwrap();
        assert_eq!(pool.apply(1).unwrap(), 2);
        pool
    });
    greenhub::run(move || {
        greenhub::timeout(LONG, || {
            assert!(matches!(pool.apply(2), Err(Error::Closed)));
            assert!(matches!(pool.map(0..3u64), Err(Error::Closed)));
            assert!(matches!(pool.imap_unordered(0..3u64).next(), Some(Err(Error::Closed))));
            assert!(matches!(pool.close(), Err(Error::Closed)));
        })
        .expect("the pool's calls returned");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Regression: the same for a pool that a worker of another pool inherited through fork
/// (captured by the other pool's function): its workers are the parent's.
#[test]
fn a_pool_inherited_by_a_forked_worker_is_closed_there() {
    hub_test(|| {
        let inner = Rc::new(Pool::new(1, |x: u64| x * 100).unwrap());
        let captured = Rc::clone(&inner);
        let outer =
            Pool::new(1, move |x: u64| matches!(captured.apply(x), Err(Error::Closed))).unwrap();
        assert!(outer.apply(3).unwrap(), "the inherited pool is Closed in the worker");
        assert_eq!(inner.apply(3).unwrap(), 300, "and works in its own hub");
        outer.close().unwrap();
        Rc::try_unwrap(inner).unwrap().close().unwrap();
    });
}

/// A result type whose `Deserialize` panics for one value.
#[derive(Debug, Serialize)]
struct Bomb(u64);

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            13 => panic!("Bomb 13"),
            n => Ok(Bomb(n)),
        }
    }
}

/// Regression: a panic in a result's `Deserialize`, in the parent's reply reader, ended that
/// coroutine unnoticed: every later item sent to that worker waited forever. Now the items in
/// flight there fail (`Codec`, naming the panic) and the worker is replaced.
#[test]
fn a_result_whose_deserialize_panics_fails_its_item_and_the_pool_goes_on() {
    hub_test(|| {
        let pool: Pool<u64, Bomb> = Pool::new(1, Bomb).unwrap();
        assert_eq!(pool.apply(1).unwrap().0, 1);
        match pool.apply(13) {
            Err(Error::Codec(message)) => assert!(message.contains("Bomb 13"), "{message}"),
            other => panic!("expected Codec, got {other:?}"),
        }
        assert_eq!(pool.apply(2).unwrap().0, 2);
        let results = pool.map(0..4u64).unwrap();
        assert_eq!(results.iter().map(|b| b.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        pool.close().unwrap();
    });
}

/// Set in the copy of this test binary that
/// [`a_pool_with_no_fd_for_its_pipes_names_the_operation`] starts.
const NO_FD_CHILD: &str = "GREENHUB_POOL_NO_FD_CHILD";

/// Regression: a worker's pipes refused at the open-file limit gave a bare "I/O error on the
/// pipe: Too many open files": every other `Error::Io` of greenhub-ipc names the operation
/// that failed (docs/reliability.md, "error texts").
#[test]
fn a_pool_with_no_fd_for_its_pipes_names_the_operation() {
    let test = "a_pool_with_no_fd_for_its_pipes_names_the_operation";
    if !greenhub_tests::run_in_child(test, NO_FD_CHILD) {
        return;
    }
    let (text, errno) = greenhub::run(|| {
        // The lowest free fd number (closed again at once): with the limit there, none is free.
        let lowest_free =
            std::os::fd::AsRawFd::as_raw_fd(&std::fs::File::open("/dev/null").unwrap());
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `old` is a valid out-pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);
        let capped = libc::rlimit { rlim_cur: lowest_free as libc::rlim_t, rlim_max: old.rlim_max };
        // SAFETY: a valid rlimit, lowering the soft limit only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) }, 0);
        let refused = Pool::<u32, u32>::new(1, |x| x).map(drop);
        // SAFETY: restores the soft limit read above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) }, 0);
        let err = refused.expect_err("a pool without fds");
        (err.to_string(), err.raw_os_error())
    });
    assert!(text.starts_with("Pool could not create a worker's task pipe (pipe2)"), "{text}");
    assert!(text.contains("Too many open files"), "{text}");
    assert_eq!(errno, Some(libc::EMFILE), "{text}");
    assert!(zombie_children().is_empty());
}

/// Set in the copy of this test binary that
/// [`a_pool_whose_coroutines_get_no_stack_is_an_error_not_a_hang`] starts.
const NO_STACK_CHILD: &str = "GREENHUB_POOL_NO_STACK_CHILD";

/// Regression: when the OS refused the stacks of a worker's task flusher and reply reader,
/// `Pool::new` still succeeded, and every `apply` (and `close`) waited forever: nothing ever
/// sent its item or read the answer, even after the limit was raised.
#[test]
fn a_pool_whose_coroutines_get_no_stack_is_an_error_not_a_hang() {
    let test = "a_pool_whose_coroutines_get_no_stack_is_an_error_not_a_hang";
    if !greenhub_tests::run_in_child(test, NO_STACK_CHILD) {
        return;
    }
    // SAFETY: alarm has no preconditions; a hang fails the test instead of stalling it.
    unsafe { libc::alarm(60) };
    // Stacks of 512 MiB, and an address space with room for a fork but not for such a stack.
    let (refused, later) = greenhub::Builder::new().stack_size(512 << 20).run(|| {
        let old = greenhub_tests::limit_address_space(32 << 20);
        let refused = Pool::<u32, u32>::new(1, |x| x + 1).map(drop);
        greenhub_tests::restore_address_space(old);
        greenhub::sleep(Duration::from_millis(20)); // the hub asks the OS for stacks again
        let pool = Pool::<u32, u32>::new(1, |x| x + 1).unwrap();
        let later = pool.apply(1).unwrap();
        pool.close().unwrap();
        (refused.expect_err("a pool without coroutines").to_string(), later)
    });
    assert!(refused.starts_with("Pool could not start the coroutines"), "{refused}");
    assert!(refused.contains("refused a coroutine stack"), "{refused}");
    assert_eq!(later, 2);
    assert!(zombie_children().is_empty());
}
