//! greenhub's side of every benchmark, written against the public contract (`shared/API.md`) and
//! nothing else: what a user of the crates would write. Each measurement runs inside its own
//! `greenhub::run`, in a fresh worker process.

use crate::sys;
use crate::worker::{Params, Report, sleeper_offset_ns, sleeper_report};
use greenhub::{JoinHandle, spawn, yield_now};
use greenhub_ipc::{Error, start_process};
use std::io::{Read, Write};
use std::time::Duration;

/// Runs one greenhub measurement.
pub fn run(bench: &str, p: &Params) -> Result<Report, String> {
    match bench {
        "switch" => Ok(greenhub::run(|| switch(p.get("n")))),
        "spawn" => Ok(greenhub::run(|| spawn_join(p.get("n"), p.get("batch")))),
        "channel" => Ok(greenhub::run(|| channel(p.get("n")))),
        "sleepers" => Ok(greenhub::run(|| sleepers(p.get("n"), p.get("start_ms"), p.get("spread_ms")))),
        "tcp" => greenhub::run(|| tcp(p.get("clients"), p.get("n"), p.get("size") as usize))
            .map_err(|e| e.to_string()),
        "stream1" => ipc(|| stream(p.get("n"), 1)),
        "stream64k" => ipc(|| stream(p.get("n"), p.get("size") as usize)),
        "big_raw" => ipc(|| big_raw(p.get("size") as usize)),
        "big_ser" => ipc(|| big_serialised(p.get("size") as usize)),
        "pingpong" => ipc(|| pingpong(p.get("n"), p.get("pinned") != 0)),
        "process" => ipc(|| process(p.get("n"))),
        other => Err(format!("greenhub has no benchmark {other}")),
    }
}

fn ipc(f: impl FnOnce() -> Result<Report, Error>) -> Result<Report, String> {
    greenhub::run(f).map_err(|e| e.to_string())
}

fn join<T>(h: JoinHandle<T>) -> T {
    h.join().expect("greenhub coroutine failed")
}

// ---- runtime ------------------------------------------------------------------------------------

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

// ---- ipc ----------------------------------------------------------------------------------------

/// Joins a child and turns a non-zero exit into an error.
fn join_ok(child: greenhub_ipc::Process) -> Result<(), Error> {
    let status = child.join()?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Codec(format!("benchmark child ended with {status}")))
    }
}

/// `n` raw messages of `size` bytes from a child; rate from the first message received to the last.
fn stream(n: u64, size: usize) -> Result<Report, Error> {
    let (reader, writer) = greenhub_ipc::raw_pipe()?;
    let child = start_process(writer, move |w| -> Result<(), Error> {
        let msg = vec![b'x'; size];
        (0..n).try_for_each(|_| w.put(&msg))
    })?;
    assert_eq!(reader.get()?.len(), size);
    let t0 = sys::mono_ns();
    for _ in 1..n {
        std::hint::black_box(reader.get()?);
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e9;
    join_ok(child)?;
    let rate = (n - 1) as f64 / dt;
    Ok(Report::new().with("msgs_per_s", rate).with("gb_per_s", rate * size as f64 / 1e9))
}

/// One message of `size` bytes from a child, from just before the child puts it (its clock, sent
/// ahead in a small message) until the parent's `get` returns it. The same code for both codecs.
macro_rules! big_message {
    ($pipe:expr, $size:expr) => {{
        let size = $size;
        let (reader, writer) = $pipe?;
        let child = start_process(writer, move |w| -> Result<(), Error> {
            let msg = vec![b'x'; size];
            w.put(&sys::mono_ns().to_le_bytes().to_vec())?;
            w.put(&msg)
        })?;
        let stamp = reader.get()?;
        let msg = reader.get()?;
        let t1 = sys::mono_ns();
        assert_eq!(msg.len(), size);
        let t0 = u64::from_le_bytes(stamp.try_into().expect("8-byte stamp"));
        join_ok(child)?;
        Ok(Report::new().with("ms", (t1 - t0) as f64 / 1e6))
    }};
}

fn big_raw(size: usize) -> Result<Report, Error> {
    big_message!(greenhub_ipc::raw_pipe(), size)
}

fn big_serialised(size: usize) -> Result<Report, Error> {
    big_message!(greenhub_ipc::pipe::<Vec<u8>>(), size)
}

/// `n` round trips of a u64 over a duplex pipe with a child, after one warm-up.
fn pingpong(n: u64, pinned: bool) -> Result<Report, Error> {
    if pinned {
        sys::pin_to_cpu(0).map_err(Error::Io)?; // the child inherits the mask
    }
    let (here, there) = greenhub_ipc::duplex::<u64, u64>()?;
    let child = start_process(there, move |d| -> Result<(), Error> {
        for _ in 0..=n {
            let v = d.get()?;
            d.put(&v)?;
        }
        Ok(())
    })?;
    here.put(&0)?;
    here.get()?;
    let t0 = sys::mono_ns();
    for i in 0..n {
        here.put(&i)?;
        std::hint::black_box(here.get()?);
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e9;
    join_ok(child)?;
    Ok(Report::new().with("round_trips_per_s", n as f64 / dt))
}

/// `start_process` + `join` of a child that returns at once, `n` times in a row.
fn process(n: u64) -> Result<Report, Error> {
    let t0 = sys::mono_ns();
    for _ in 0..n {
        join_ok(start_process((), |()| {})?)?;
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e3;
    Ok(Report::new().with("us_per_process", dt / n as f64))
}
