//! The `may` peer: the same runtime benchmarks on may's stackful coroutines, with ONE worker thread
//! (`may::config().set_workers(1)`, may's other settings left at their defaults, so its worker
//! is pinned to a CPU as may does by default). Every benchmark runs inside one root coroutine, so
//! the main thread takes no part until the end.

use crate::sys;
use crate::worker::{Params, Report, sleeper_offset_ns, sleeper_report};
use may::coroutine::{self, JoinHandle};
use may::go;
use std::io::{Read, Write};

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
