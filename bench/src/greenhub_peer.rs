//! greenhub's side of the runtime benchmarks, written against the public contract
//! (`shared/API.md`) and nothing else: what a user of the crate would write. Each measurement runs
//! inside its own `greenhub::run`, in a fresh worker process. (The ipc side: `greenhub_ipc_peer.rs`.)

use crate::sys;
use crate::worker::{
    Params, Report, parked_deadline, parked_report, sleeper_offset_ns, sleeper_report,
};
use greenhub::{JoinHandle, spawn, yield_now};
use std::io::{Read, Write};
use std::time::Duration;

/// Runs one greenhub measurement.
pub fn run(bench: &str, p: &Params) -> Result<Report, String> {
    match bench {
        "switch" => Ok(greenhub::run(|| switch(p.get("n")))),
        // The same yield row with the blocking monitor on: its cost is one relaxed store per switch.
        "switch_monitor" => {
            let monitored = greenhub::Builder::new().monitor(Duration::from_millis(100));
            Ok(monitored.run(|| switch(p.get("n"))))
        }
        "spawn" => Ok(greenhub::run(|| spawn_join(p.get("n"), p.get("batch")))),
        "channel" => Ok(greenhub::run(|| channel(p.get("n")))),
        "select" => Ok(greenhub::run(|| select(p.get("n")))),
        "pool_map" => Ok(greenhub::run(|| pool_map(p.get("n"), p.get("size") as usize))),
        "sleepers" => {
            Ok(greenhub::run(|| sleepers(p.get("n"), p.get("start_ms"), p.get("spread_ms"))))
        }
        "tcp" => greenhub::run(|| tcp(p.get("clients"), p.get("n"), p.get("size") as usize))
            .map_err(|e| e.to_string()),
        "parked" => greenhub::run(|| {
            parked(p.get("n"), p.get("stack"), p.get("slack"), p.get("min_sleep_ms"))
        }),
        other => Err(format!("greenhub has no benchmark {other}")),
    }
}

fn join<T>(h: JoinHandle<T>) -> T {
    h.join().expect("greenhub coroutine failed")
}

fn switch(n: u64) -> Report {
    let t0 = sys::mono_ns();
    let yielder = move || {
        for _ in 0..n {
            yield_now();
        }
    };
    let (a, b) = (spawn(yielder), spawn(yielder));
    join(a);
    join(b);
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_switch", dt as f64 / (2 * n) as f64)
}

fn spawn_join(n: u64, batch: u64) -> Report {
    let t0 = sys::mono_ns();
    for _ in 0..n / batch {
        let handles: Vec<_> = (0..batch).map(|_| spawn(|| ())).collect();
        handles.into_iter().for_each(join);
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_spawn", dt as f64 / n as f64)
}

fn channel(n: u64) -> Report {
    let (ping_tx, ping_rx) = greenhub::sync::channel::<u64>();
    let (pong_tx, pong_rx) = greenhub::sync::channel::<u64>();
    let t0 = sys::mono_ns();
    let ponger = spawn(move || {
        for _ in 0..n {
            pong_tx.send(ping_rx.recv().unwrap()).unwrap();
        }
    });
    for i in 0..n {
        ping_tx.send(i).unwrap();
        pong_rx.recv().unwrap();
    }
    let dt = sys::mono_ns() - t0;
    join(ponger);
    Report::new().with("ns_per_round_trip", dt as f64 / n as f64)
}

/// The producer sends on channel A or B in turn and waits for an ack; the consumer selects
/// over A and B, then acks. One figure per round trip (one select, one ack).
fn select(n: u64) -> Report {
    let (a_tx, a_rx) = greenhub::sync::channel::<u64>();
    let (b_tx, b_rx) = greenhub::sync::channel::<u64>();
    let (ack_tx, ack_rx) = greenhub::sync::channel::<u64>();
    let t0 = sys::mono_ns();
    let consumer = spawn(move || {
        for _ in 0..n {
            let v = greenhub::select! {
                recv(a_rx) -> v => v.unwrap(),
                recv(b_rx) -> v => v.unwrap(),
            };
            ack_tx.send(v).unwrap();
        }
    });
    for i in 0..n {
        if i % 2 == 0 {
            a_tx.send(i).unwrap()
        } else {
            b_tx.send(i).unwrap()
        }
        ack_rx.recv().unwrap();
    }
    let dt = sys::mono_ns() - t0;
    join(consumer);
    Report::new().with("ns_per_select", dt as f64 / n as f64)
}

fn pool_map(n: u64, size: usize) -> Report {
    let pool = greenhub::sync::Pool::new(size);
    let t0 = sys::mono_ns();
    let out = pool.map(0..n, |i| i).expect("no item fails");
    let dt = sys::mono_ns() - t0;
    assert_eq!(out.len() as u64, n);
    Report::new().with("ns_per_item", dt as f64 / n as f64)
}

fn sleepers(n: u64, start_ms: u64, spread_ms: u64) -> Report {
    let t0 = sys::mono_ns();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let deadline = t0 + sleeper_offset_ns(i, n, start_ms, spread_ms);
            spawn(move || {
                greenhub::sleep(Duration::from_nanos(deadline.saturating_sub(sys::mono_ns())));
                sys::mono_ns().saturating_sub(deadline)
            })
        })
        .collect();
    let lateness: Vec<u64> = handles.into_iter().map(join).collect();
    sleeper_report(lateness, sys::mono_ns() - t0)
}

/// `n` coroutines (with `stack` bytes of stack, 0: the default) that all sleep until one
/// deadline: spawned, all asleep at once, woken and joined. Each yields once when it starts, so
/// that the root runs again once all have started (the costly part: the first touch of each
/// stack) and sets the deadline from how long that took (see [`parked_deadline`]); then each
/// reads it and sleeps.
fn parked(n: u64, stack: u64, slack: u64, min_sleep_ms: u64) -> Result<Report, String> {
    let before = sys::rss_pte_mb();
    let t0 = sys::mono_ns();
    let deadline = std::rc::Rc::new(std::cell::Cell::new(u64::MAX));
    let late = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (late, deadline) = (late.clone(), deadline.clone());
            let builder = match stack {
                0 => greenhub::coroutine::Builder::new(),
                size => greenhub::coroutine::Builder::new().stack_size(size as usize),
            };
            builder.spawn(move || {
                yield_now(); // back in the queue behind the root
                let left = deadline.get().saturating_sub(sys::mono_ns());
                late.set(late.get() + u64::from(left == 0));
                greenhub::sleep(Duration::from_nanos(left));
            })
        })
        .collect();
    let spawned = sys::mono_ns();
    yield_now(); // every one starts (they were queued before the root) and yields
    deadline.set(parked_deadline(spawned, sys::mono_ns(), slack, min_sleep_ms));
    yield_now(); // every one reads the deadline and goes to sleep
    let asleep = sys::mono_ns() - t0;
    let mem = sys::rss_pte_mb();
    for h in handles {
        h.join().map_err(|e| format!("a sleeper failed: {e}"))?;
    }
    let end = sys::mono_ns() - t0;
    match late.get() {
        0 => Ok(parked_report(n, asleep, deadline.get() - t0, end, [before, mem])),
        l => Err(format!("{l} coroutines went to sleep after the deadline: raise slack")),
    }
}

fn tcp(clients: u64, n: u64, size: usize) -> std::io::Result<Report> {
    let listener = greenhub::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Detached; cancelled (unwound) when the root returns.
    drop(spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            drop(spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(k) = conn.read(&mut buf) {
                    if k == 0 || conn.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            }));
        }
    }));
    let t0 = sys::mono_ns();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            spawn(move || -> std::io::Result<()> {
                let mut conn = greenhub::net::TcpStream::connect(addr)?;
                let msg = vec![b'x'; size];
                let mut back = vec![0u8; size];
                for _ in 0..n {
                    conn.write_all(&msg)?;
                    conn.read_exact(&mut back)?;
                }
                Ok(())
            })
        })
        .collect();
    handles.into_iter().try_for_each(join)?;
    let dt = (sys::mono_ns() - t0) as f64 / 1e9;
    Ok(Report::new().with("round_trips_per_s", (clients * n) as f64 / dt))
}
