//! The raw OS limit, measured by this program: what a good implementation could reach.
//!
//! - switch: one corosensei `resume` + `suspend` (the two context switches of one cooperative yield);
//!   `raw-queue`: two coroutines taking turns through a `VecDeque` ready queue (what any
//!   scheduler adds: the pop, the push, and a different stack on every resume);
//! - spawn: a corosensei coroutine created on a pooled stack, run to its end, its stack taken back
//!   (in batches of `batch`, like greenhub's row: all created, then all run);
//!   `raw-queue`: each also queued in a `VecDeque` and given a heap result slot (an `Rc`
//!   it shares with its "handle"), which the join takes;
//! - channel: the smallest scheduler that can do greenhub's round trip: a FIFO ready queue, two
//!   coroutines (pinger and ponger) and two `VecDeque` channels; a receiver that finds its channel
//!   empty parks, the sender makes it ready;
//! - pipes: a forked writer writes each frame (4-byte length + payload) with one `writev`; the reader
//!   reads in large chunks and splits frames in user space; both ends are non-blocking and sleep in
//!   epoll as soon as the pipe is full / empty; `pipe_size` grows the pipe with `F_SETPIPE_SZ`;
//! - ping-pong: parent and forked child over two such pipes, 1-byte frames;
//! - process: `fork` + `_exit(0)` + `waitpid`.

use crate::spec::Impl;
use crate::sys::{self, Epoll, FrameReader};
use crate::worker::{Params, Report};
use std::hint::black_box;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Runs one raw measurement of `variant` (`Raw`, `RawBigPipe` or `RawReadyQueue`).
pub fn run(variant: Impl, bench: &str, p: &Params) -> io::Result<Report> {
    let queued = variant == Impl::RawReadyQueue;
    match bench {
        "switch" if queued => Ok(switch_through_ready_queue(p.get("n"))),
        "switch" => Ok(switch(p.get("n"))),
        "spawn" if queued => Ok(spawn_join_through_ready_queue(p.get("n"), p.get("batch"))),
        "spawn" => Ok(spawn_join(p.get("n"), p.get("batch"))),
        "channel" => Ok(channel(p.get("n"))),
        "stream1" => stream(p.get("n"), 1, p.opt("pipe_size")),
        "stream64k" => stream(p.get("n"), p.get("size") as usize, p.opt("pipe_size")),
        "big_raw" | "big_ser" => big(p.get("size") as usize, p.opt("pipe_size")),
        "pingpong" => pingpong(p.get("n"), p.get("pinned") != 0),
        "process" => process(p.get("n")),
        "patch_read" => {
            Ok(Report::new().with("ns_per_read", crate::ready_read::ns_per_read(p.get("n"))?))
        }
        other => Err(io::Error::other(format!("raw has no benchmark {other}"))),
    }
}

/// Resume + suspend of a corosensei coroutine, per pair.
fn switch(n: u64) -> Report {
    use corosensei::{Coroutine, Yielder};
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        for _ in 0..n {
            y.suspend(());
        }
    });
    let t0 = sys::mono_ns();
    for _ in 0..n {
        black_box(co.resume(()));
    }
    let dt = sys::mono_ns() - t0;
    black_box(co.resume(()));
    Report::new().with("ns_per_switch", dt as f64 / n as f64)
}

/// Two corosensei coroutines that suspend N times each, resumed in turn from a FIFO ready queue
/// (pop the front, resume, push it back while it has not returned), per switch: greenhub's loop
/// and `yield_now` with none of the hub's bookkeeping.
fn switch_through_ready_queue(n: u64) -> Report {
    use corosensei::{Coroutine, CoroutineResult, Yielder};
    use std::collections::VecDeque;
    let yielder = move |y: &Yielder<(), ()>, ()| {
        for _ in 0..n {
            y.suspend(());
        }
    };
    let mut cos = [Coroutine::new(yielder), Coroutine::new(yielder)];
    let mut ready: VecDeque<usize> = VecDeque::from([0, 1]);
    let t0 = sys::mono_ns();
    while let Some(i) = ready.pop_front() {
        if let CoroutineResult::Yield(()) = cos[i].resume(()) {
            ready.push_back(i);
        }
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_switch", dt as f64 / (2 * n) as f64)
}

/// Create + run to the end + stack back to the pool, per coroutine.
fn spawn_join(n: u64, batch: u64) -> Report {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, CoroutineResult, Yielder};
    let run_batch = |pool: &mut Vec<DefaultStack>| {
        let cos: Vec<_> = (0..batch)
            .map(|_| {
                let stack = pool.pop().expect("a pooled stack");
                Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| black_box(()))
            })
            .collect();
        for mut co in cos {
            match co.resume(()) {
                CoroutineResult::Return(()) => pool.push(co.into_stack()),
                CoroutineResult::Yield(()) => unreachable!("the body does not yield"),
            }
        }
    };
    // Pooled and touched once before the clock starts (a limit, not a cold start): the first
    // batch's page faults would otherwise dominate a short run.
    let mut pool: Vec<DefaultStack> =
        (0..batch).map(|_| DefaultStack::new(1 << 20).expect("a stack")).collect();
    run_batch(&mut pool);
    let t0 = sys::mono_ns();
    for _ in 0..n / batch {
        run_batch(&mut pool);
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_spawn", dt as f64 / n as f64)
}

/// [`spawn_join`] with what a join needs from any scheduler: each coroutine waits in a FIFO
/// ready queue until it runs, and writes its result into a slot on the heap that it shares with
/// its handle (an `Rc`: one allocation and one free per coroutine); the join takes the result.
fn spawn_join_through_ready_queue(n: u64, batch: u64) -> Report {
    use corosensei::stack::DefaultStack;
    use corosensei::{Coroutine, CoroutineResult, Yielder};
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    type Co = Coroutine<(), (), (), DefaultStack>;
    let mut ready: VecDeque<Co> = VecDeque::with_capacity(batch as usize);
    let run_batch = |pool: &mut Vec<DefaultStack>, ready: &mut VecDeque<Co>| {
        let handles: Vec<Rc<Cell<Option<u64>>>> = (0..batch)
            .map(|i| {
                let slot = Rc::new(Cell::new(None));
                let result = slot.clone();
                let stack = pool.pop().expect("a pooled stack");
                ready.push_back(Coroutine::with_stack(stack, move |_: &Yielder<(), ()>, ()| {
                    result.set(Some(black_box(i)))
                }));
                slot
            })
            .collect();
        while let Some(mut co) = ready.pop_front() {
            match co.resume(()) {
                CoroutineResult::Return(()) => pool.push(co.into_stack()),
                CoroutineResult::Yield(()) => unreachable!("the body does not yield"),
            }
        }
        for slot in handles {
            black_box(slot.take().expect("the coroutine has run"));
        }
    };
    let mut pool: Vec<DefaultStack> =
        (0..batch).map(|_| DefaultStack::new(1 << 20).expect("a stack")).collect();
    run_batch(&mut pool, &mut ready);
    let t0 = sys::mono_ns();
    for _ in 0..n / batch {
        run_batch(&mut pool, &mut ready);
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_spawn", dt as f64 / n as f64)
}

/// Ping-pong of a number over two channels between two coroutines, per round trip.
fn channel(n: u64) -> Report {
    use corosensei::{Coroutine, CoroutineResult, Yielder};
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    type Queue = Rc<RefCell<VecDeque<u64>>>;
    /// Takes an item, suspending (parked: `false`) until the other side has sent one.
    fn recv(y: &Yielder<(), bool>, q: &Queue) -> u64 {
        loop {
            if let Some(v) = q.borrow_mut().pop_front() {
                return v;
            }
            y.suspend(false);
        }
    }
    let (ping, pong): (Queue, Queue) = Default::default();
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let ponger = Coroutine::new(move |y: &Yielder<(), bool>, ()| {
        for _ in 0..n {
            let v = recv(y, &ping2);
            pong2.borrow_mut().push_back(v);
        }
    });
    let pinger = Coroutine::new(move |y: &Yielder<(), bool>, ()| {
        for i in 0..n {
            ping.borrow_mut().push_back(i);
            black_box(recv(y, &pong));
        }
    });
    // The scheduler: a coroutine whose channel got an item is ready. Here each side parks only
    // on an empty channel that the other side fills before it parks, so the ready queue holds
    // the other one whenever one parks: round-robin is exactly what the wake-ups would do.
    let mut cos = [pinger, ponger];
    let mut ready: VecDeque<usize> = VecDeque::from([0, 1]);
    let mut live = 2;
    let t0 = sys::mono_ns();
    while let Some(i) = ready.pop_front() {
        match cos[i].resume(()) {
            CoroutineResult::Yield(_) => ready.push_back(i),
            CoroutineResult::Return(()) => live -= 1,
        }
        if live == 0 {
            break;
        }
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_round_trip", dt as f64 / n as f64)
}

/// A pipe from a forked child to the parent, optionally resized.
fn child_to_parent_pipe(pipe_size: Option<u64>) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = sys::pipe_nonblocking()?;
    if let Some(size) = pipe_size {
        sys::set_pipe_size(w.as_raw_fd(), size as usize)?;
    }
    Ok((r, w))
}

/// Forks a child that writes frames to `w` through `write`, and gives the parent the read end.
fn fork_writer(
    r: OwnedFd,
    w: OwnedFd,
    write: impl FnOnce(&OwnedFd, &Epoll) -> io::Result<()>,
) -> io::Result<(libc::pid_t, OwnedFd)> {
    let pid = sys::fork_with(|| {
        sys::close_in_child(&r);
        let ep = Epoll::new(w.as_raw_fd(), libc::EPOLLOUT).expect("epoll in the writer");
        write(&w, &ep).expect("raw writer");
    })?;
    drop(w);
    Ok((pid, r))
}

/// `n` messages of `size` bytes; rate measured from the first message received to the last.
fn stream(n: u64, size: usize, pipe_size: Option<u64>) -> io::Result<Report> {
    let (r, w) = child_to_parent_pipe(pipe_size)?;
    let (pid, r) = fork_writer(r, w, |w, ep| {
        let msg = vec![b'x'; size];
        (0..n).try_for_each(|_| sys::write_frame(w.as_raw_fd(), ep, &msg))
    })?;
    let mut reader = FrameReader::new(r.as_raw_fd(), 1 << 20)?;
    let first = reader.next()?.expect("first message");
    assert_eq!(first.len(), size);
    let t0 = sys::mono_ns();
    for _ in 1..n {
        black_box(reader.next()?.expect("message"));
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e9;
    sys::wait_pid(pid)?;
    let rate = (n - 1) as f64 / dt;
    Ok(Report::new().with("msgs_per_s", rate).with("gb_per_s", rate * size as f64 / 1e9))
}

/// One message of `size` bytes: from just before the child writes it (its clock, sent ahead in a
/// small message) until the parent holds all of it.
fn big(size: usize, pipe_size: Option<u64>) -> io::Result<Report> {
    let (r, w) = child_to_parent_pipe(pipe_size)?;
    let (pid, r) = fork_writer(r, w, |w, ep| {
        let msg = vec![b'x'; size];
        sys::write_frame(w.as_raw_fd(), ep, &sys::mono_ns().to_le_bytes())?;
        sys::write_frame(w.as_raw_fd(), ep, &msg)
    })?;
    let mut reader = FrameReader::new(r.as_raw_fd(), 1 << 20)?;
    let stamp = reader.next()?.expect("time stamp");
    let msg = reader.next()?.expect("big message");
    let t1 = sys::mono_ns();
    assert_eq!(msg.len(), size);
    let t0 = u64::from_le_bytes(stamp.try_into().expect("8-byte stamp"));
    sys::wait_pid(pid)?;
    Ok(Report::new().with("ms", (t1 - t0) as f64 / 1e6))
}

/// `n` round trips of a 1-byte frame between the parent and a forked child, after one warm-up.
fn pingpong(n: u64, pinned: bool) -> io::Result<Report> {
    if pinned {
        sys::pin_to_cpu(0)?; // the child inherits the mask
    }
    let (down_r, down_w) = sys::pipe_nonblocking()?;
    let (up_r, up_w) = sys::pipe_nonblocking()?;
    let pid = sys::fork_with(|| {
        sys::close_in_child(&down_w);
        sys::close_in_child(&up_r);
        echo(&down_r, &up_w).expect("raw echo child");
    })?;
    drop((down_r, up_w));
    let ep = Epoll::new(down_w.as_raw_fd(), libc::EPOLLOUT)?;
    let mut reader = FrameReader::new(up_r.as_raw_fd(), 64 << 10)?;
    let mut round_trip = || -> io::Result<()> {
        sys::write_frame(down_w.as_raw_fd(), &ep, b"x")?;
        reader.next()?.expect("echo");
        Ok(())
    };
    round_trip()?;
    let t0 = sys::mono_ns();
    for _ in 0..n {
        round_trip()?;
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e9;
    drop(down_w);
    sys::wait_pid(pid)?;
    Ok(Report::new().with("round_trips_per_s", n as f64 / dt))
}

/// The child of `pingpong`: sends every frame back until the parent closes.
fn echo(down: &OwnedFd, up: &OwnedFd) -> io::Result<()> {
    let ep = Epoll::new(up.as_raw_fd(), libc::EPOLLOUT)?;
    let mut reader = FrameReader::new(down.as_raw_fd(), 64 << 10)?;
    while let Some(msg) = reader.next()? {
        sys::write_frame(up.as_raw_fd(), &ep, &msg)?;
    }
    Ok(())
}

/// `fork` + `_exit(0)` + `waitpid`, `n` times in a row.
fn process(n: u64) -> io::Result<Report> {
    let t0 = sys::mono_ns();
    for _ in 0..n {
        // SAFETY: the raw worker is single-threaded; the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: _exit is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        sys::wait_pid(pid)?;
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e3;
    Ok(Report::new().with("us_per_process", dt / n as f64))
}
