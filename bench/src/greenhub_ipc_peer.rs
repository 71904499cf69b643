//! greenhub-ipc's side of the ipc benchmarks, written against the public contract
//! (`shared/API.md`) and nothing else: what a user of the crates would write. The parent runs inside
//! `greenhub::run` in a fresh worker process; every child is started with `start_process`.

use crate::sys;
use crate::worker::{Params, Report};
use greenhub_ipc::{Error, start_process};

/// Errors of the parent side: greenhub-ipc's, or a child that did not end well.
type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Runs one greenhub ipc measurement.
pub fn run(bench: &str, p: &Params) -> Result<Report, String> {
    let result = match bench {
        "stream1" => greenhub::run(|| stream(p.get("n"), 1)),
        "stream64k" => greenhub::run(|| stream(p.get("n"), p.get("size") as usize)),
        "big_raw" => greenhub::run(|| big_raw(p.get("size") as usize)),
        "big_ser" => greenhub::run(|| big_serialised(p.get("size") as usize)),
        "pingpong" => greenhub::run(|| pingpong(p.get("n"), p.get("pinned") != 0)),
        "process" => greenhub::run(|| process(p.get("n"))),
        "pool" | "pool_chunked" => greenhub::run(|| {
            pool(p.get("n"), p.get("workers") as usize, p.opt("maps").unwrap_or(1))
        }),
        "http" => return crate::http::run(p.get("secs"), p.get("connections")),
        other => return Err(format!("greenhub-ipc has no benchmark {other}")),
    };
    result.map_err(|e| e.to_string())
}

/// Joins a child and turns a non-zero exit into an error.
fn join_ok(child: greenhub_ipc::Process) -> Result<()> {
    let status = child.join()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("benchmark child ended with {status}").into())
    }
}

/// `n` raw messages of `size` bytes from a child; rate from the first message received to the last.
fn stream(n: u64, size: usize) -> Result<Report> {
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
/// ahead in a small message) until the parent's `get` returns it. The same code for both codecs:
/// `$make` turns bytes into the message type.
macro_rules! big_message {
    ($pipe:expr, $size:expr, $make:expr) => {{
        let size = $size;
        let (reader, writer) = $pipe?;
        let child = start_process(writer, move |w| -> Result<(), Error> {
            let msg = $make(vec![b'x'; size]);
            w.put(&$make(sys::mono_ns().to_le_bytes().to_vec()))?;
            w.put(&msg)
        })?;
        let stamp = reader.get()?;
        let msg = reader.get()?;
        let t1 = sys::mono_ns();
        assert_eq!(msg.len(), size);
        let t0 = u64::from_le_bytes(stamp[..].try_into().expect("8-byte stamp"));
        join_ok(child)?;
        Ok(Report::new().with("ms", (t1 - t0) as f64 / 1e6))
    }};
}

fn big_raw(size: usize) -> Result<Report> {
    big_message!(greenhub_ipc::raw_pipe(), size, |bytes: Vec<u8>| bytes)
}

/// Serialised with the default codec (postcard) as a plain `Vec<u8>`: `pipe::<Vec<u8>>()`, what
/// a user writes first (the counterpart of pickling a `bytes` object).
fn big_serialised(size: usize) -> Result<Report> {
    big_message!(greenhub_ipc::pipe::<Vec<u8>>(), size, |bytes: Vec<u8>| bytes)
}

/// `n` round trips of a u64 over a duplex pipe with a child, after one warm-up.
fn pingpong(n: u64, pinned: bool) -> Result<Report> {
    if pinned {
        sys::pin_to_cpu(0)?; // the child inherits the mask
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
fn process(n: u64) -> Result<Report> {
    let t0 = sys::mono_ns();
    for _ in 0..n {
        join_ok(start_process((), |()| {})?)?;
    }
    let dt = (sys::mono_ns() - t0) as f64 / 1e3;
    Ok(Report::new().with("us_per_process", dt / n as f64))
}

/// `Pool::map` of `n` tiny items (`x + 1` on a u64) over `workers` workers, after a warm-up map
/// (the workers are started and have run once); the pool's default chunks, nothing to tune.
/// `maps` maps of `n` items follow one another in the same pool, each timed, and the best rate
/// is reported: the multiprocessing peer's best-chunksize row reports its best of six maps in
/// one pool, so `pool_chunked` gives greenhub six too (the first map after the fork pays the
/// parent's first-touch page faults on its output: see docs/child-processes.md, "What a tiny
/// item costs"). Besides the rate, the CPU time per item of the parent (during the best map)
/// and of the workers together (their whole lives, warm-up included, over the items of every
/// map: read once they are reaped), which vary less than the rate on a shared machine.
fn pool(n: u64, workers: usize, maps: u64) -> Result<Report> {
    struct Timed {
        seconds: f64,
        parent_cpu_s: f64,
        parent_faults: i64,
    }
    let pool = greenhub_ipc::Pool::new(workers, |x: u64| x + 1)?;
    pool.map(0..1_000)?;
    let mut best: Option<Timed> = None;
    for _ in 0..maps.max(1) {
        let (parent0, _) = sys::cpu_s();
        let faults0 = sys::minor_faults();
        let t0 = sys::mono_ns();
        let results = pool.map(0..n)?;
        let seconds = (sys::mono_ns() - t0) as f64 / 1e9;
        let (parent1, _) = sys::cpu_s();
        let faults1 = sys::minor_faults();
        assert_eq!(results.len() as u64, n);
        assert_eq!(results.last().copied(), Some(n));
        drop(results);
        let timed =
            Timed { seconds, parent_cpu_s: parent1 - parent0, parent_faults: faults1 - faults0 };
        if best.as_ref().is_none_or(|b| timed.seconds < b.seconds) {
            best = Some(timed);
        }
    }
    let best = best.expect("at least one map");
    pool.close()?;
    let (_, children) = sys::cpu_s();
    let per_item = |s: f64, items: u64| s * 1e9 / items as f64;
    Ok(Report::new()
        .with("items_per_s", n as f64 / best.seconds)
        .with("parent_cpu_ns_per_item", per_item(best.parent_cpu_s, n))
        .with("parent_page_faults", best.parent_faults as f64)
        // Their whole lives (start, warm-up, every map) over the items of every map.
        .with("workers_cpu_ns_per_item", per_item(children, n * maps.max(1))))
}
