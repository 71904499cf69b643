//! The `may` peer: the same runtime benchmarks on may's stackful coroutines, with ONE worker thread
//! (`may::config().set_workers(1)`, may's other settings left at their defaults, so its worker
//! is pinned to a CPU as may does by default). Every benchmark runs inside one root coroutine, so
//! the main thread takes no part until the end.

use crate::sys;
use crate::worker::{
    Params, Report, parked_deadline, parked_report, sleeper_offset_ns, sleeper_report,
};
use may::coroutine::{self, JoinHandle};
use may::go;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs one may measurement.
pub fn run(bench: &str, p: &Params) -> Result<Report, String> {
    may::config().set_workers(1);
    let job: Box<dyn FnOnce() -> Result<Report, String> + Send> = match bench {
        "switch" => Box::new({
            let n = p.get("n");
            move || Ok(switch(n))
        }),
        "spawn" => Box::new({
            let (n, batch) = (p.get("n"), p.get("batch"));
            move || Ok(spawn(n, batch))
        }),
        "channel" => Box::new({
            let n = p.get("n");
            move || Ok(channel(n))
        }),
        "select" => Box::new({
            let n = p.get("n");
            move || Ok(select(n))
        }),
        "sleepers" => Box::new({
            let (n, start, spread) = (p.get("n"), p.get("start_ms"), p.get("spread_ms"));
            move || Ok(sleepers(n, start, spread))
        }),
        "tcp" => Box::new({
            let (clients, n, size) = (p.get("clients"), p.get("n"), p.get("size") as usize);
            move || tcp(clients, n, size).map_err(|e| e.to_string())
        }),
        "parked" => {
            let (n, stack) = (p.get("n"), p.get("stack"));
            let (slack, min_sleep_ms) = (p.get("slack"), p.get("min_sleep_ms"));
            if stack > 0 {
                may::config().set_stack_size(stack as usize / std::mem::size_of::<usize>());
            }
            Box::new(move || parked(n, slack, min_sleep_ms))
        }
        other => return Err(format!("may has no benchmark {other}")),
    };
    go!(job).join().map_err(|_| "the may root coroutine panicked".to_string())?
}

fn join<T>(h: JoinHandle<T>) -> T {
    h.join().expect("may coroutine panicked")
}

fn switch(n: u64) -> Report {
    let t0 = sys::mono_ns();
    let yielder = move || {
        for _ in 0..n {
            coroutine::yield_now();
        }
    };
    let (a, b) = (go!(yielder), go!(yielder));
    join(a);
    join(b);
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_switch", dt as f64 / (2 * n) as f64)
}

fn spawn(n: u64, batch: u64) -> Report {
    let t0 = sys::mono_ns();
    for _ in 0..n / batch {
        let handles: Vec<_> = (0..batch).map(|_| go!(|| ())).collect();
        handles.into_iter().for_each(join);
    }
    let dt = sys::mono_ns() - t0;
    Report::new().with("ns_per_spawn", dt as f64 / n as f64)
}

fn channel(n: u64) -> Report {
    let (ping_tx, ping_rx) = may::sync::mpsc::channel::<u64>();
    let (pong_tx, pong_rx) = may::sync::mpsc::channel::<u64>();
    let t0 = sys::mono_ns();
    let ponger = go!(move || {
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

/// As greenhub's: the consumer selects (may's `select!`) over two channels, then acks.
fn select(n: u64) -> Report {
    let (a_tx, a_rx) = may::sync::mpsc::channel::<u64>();
    let (b_tx, b_rx) = may::sync::mpsc::channel::<u64>();
    let (ack_tx, ack_rx) = may::sync::mpsc::channel::<u64>();
    let t0 = sys::mono_ns();
    let consumer = go!(move || {
        for _ in 0..n {
            let mut got = 0;
            may::select!(
                v = a_rx.recv() => got = v.unwrap(),
                v = b_rx.recv() => got = v.unwrap()
            );
            ack_tx.send(got).unwrap();
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

fn sleepers(n: u64, start_ms: u64, spread_ms: u64) -> Report {
    let t0 = sys::mono_ns();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let deadline = t0 + sleeper_offset_ns(i, n, start_ms, spread_ms);
            go!(move || {
                coroutine::sleep(std::time::Duration::from_nanos(
                    deadline.saturating_sub(sys::mono_ns()),
                ));
                sys::mono_ns().saturating_sub(deadline)
            })
        })
        .collect();
    let lateness: Vec<u64> = handles.into_iter().map(join).collect();
    sleeper_report(lateness, sys::mono_ns() - t0)
}

fn tcp(clients: u64, n: u64, size: usize) -> std::io::Result<Report> {
    let listener = may::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    go!(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            go!(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(k) = conn.read(&mut buf) {
                    if k == 0 || conn.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let t0 = sys::mono_ns();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            go!(move || -> std::io::Result<()> {
                let mut conn = may::net::TcpStream::connect(addr)?;
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

/// may coroutines spawned so far by `parked`, for the failure message.
static SPAWNED: AtomicU64 = AtomicU64::new(0);

/// The deadline of `parked`'s sleepers (`mono_ns`), set once all are spawned.
static DEADLINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// `n` coroutines asleep until one deadline, as greenhub's `parked`. may maps each stack with a
/// guard page of its own (two mappings), so past about `vm.max_map_count / 2` live coroutines
/// its allocation fails; the panic hook says after how many, with what error, and how many
/// mappings the process had then (counted in `/proc/self/maps`, next to `vm.max_map_count`).
fn parked(n: u64, slack: u64, min_sleep_ms: u64) -> Result<Report, String> {
    std::panic::set_hook(Box::new(|info| {
        let spawned = SPAWNED.load(Ordering::Relaxed);
        let (maps, max) = (mapping_count(), max_map_count());
        let what = info.to_string();
        let errno = what.split("code: ").nth(1).and_then(|r| r.split(',').next());
        let errno = errno.and_then(|e| e.parse::<i32>().ok()).map(errno_name);
        let cause = errno.map_or_else(|| "a panic".to_string(), |e| format!("stack mmap {e}"));
        eprintln!(
            "fails at {spawned} live coroutines: {cause} at {maps} mappings \
             (vm.max_map_count {max}); may said: {info}"
        );
    }));
    let before = sys::rss_pte_mb();
    let t0 = sys::mono_ns();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let h = go!(move || {
                coroutine::yield_now(); // back in the queue behind the root
                let left = DEADLINE.load(Ordering::Relaxed).saturating_sub(sys::mono_ns());
                coroutine::sleep(std::time::Duration::from_nanos(left));
                left == 0
            });
            SPAWNED.fetch_add(1, Ordering::Relaxed);
            h
        })
        .collect();
    let spawned = sys::mono_ns();
    coroutine::yield_now(); // every one starts (on this one worker) and yields
    let deadline = parked_deadline(spawned, sys::mono_ns(), slack, min_sleep_ms);
    DEADLINE.store(deadline, Ordering::Relaxed);
    coroutine::yield_now(); // every one reads the deadline and goes to sleep
    let asleep = sys::mono_ns() - t0;
    let mem = sys::rss_pte_mb();
    let late = handles.into_iter().map(join).filter(|&late| late).count();
    let end = sys::mono_ns() - t0;
    match late {
        0 => Ok(parked_report(n, asleep, deadline - t0, end, [before, mem])),
        l => Err(format!("{l} coroutines went to sleep after the deadline: raise slack")),
    }
}

/// How many memory mappings this process has now.
fn mapping_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

fn max_map_count() -> String {
    std::fs::read_to_string("/proc/sys/vm/max_map_count").map_or("?".into(), |s| s.trim().into())
}

/// The symbolic name of the errno values a stack allocation can fail with.
fn errno_name(code: i32) -> String {
    match code {
        libc::ENOMEM => "ENOMEM".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EINVAL => "EINVAL".into(),
        other => format!("errno {other}"),
    }
}
