//! The worker side: `bench worker <impl> <benchmark> key=value ...` runs ONE measurement in a fresh
//! process and prints ONE JSON line of figures on stdout, exactly like the Python peers do. Fresh
//! processes keep the measurements independent (peak RSS is per measurement; may's threads never
//! share a process with a fork).

use crate::spec::Impl;
use std::fmt::Write as _;

/// `key=value` parameters of one measurement.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, u64)>);

impl Params {
    pub fn parse(args: &[String]) -> Result<Params, String> {
        let pair = |a: &String| {
            let (k, v) = a.split_once('=').ok_or(format!("expected key=value, got {a:?}"))?;
            let v = v.parse().map_err(|_| format!("{k}: not a number: {v:?}"))?;
            Ok((k.to_string(), v))
        };
        args.iter().map(pair).collect::<Result<_, String>>().map(Params)
    }

    pub fn opt(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    pub fn get(&self, key: &str) -> u64 {
        self.opt(key).unwrap_or_else(|| panic!("missing parameter {key}="))
    }
}

/// The figures of one measurement, printed as one flat JSON object.
#[derive(Debug, Default)]
pub struct Report(Vec<(&'static str, f64)>);

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    pub fn with(mut self, key: &'static str, value: f64) -> Report {
        self.0.push((key, value));
        self
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(s, "{sep}\"{k}\": {v}");
        }
        s + "}"
    }
}

/// Lateness statistics of sleepers, shared by every Rust implementation: the figures of the
/// sleepers benchmark (plus the maximum, for the curious).
pub fn sleeper_report(mut lateness_ns: Vec<u64>, wall_ns: u64) -> Report {
    lateness_ns.sort_unstable();
    let pct =
        |p: f64| lateness_ns[((lateness_ns.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    Report::new()
        .with("wall_s", wall_ns as f64 / 1e9)
        .with("p50_ms", pct(0.50))
        .with("p99_ms", pct(0.99))
        .with("max_ms", pct(1.0))
        .with("rss_mb", crate::sys::peak_rss_mb())
}

/// The figures of the parked benchmarks: `n` coroutines asleep at once. Times in ns from the
/// first spawn: all asleep at `asleep_ns`, the deadline at `deadline_ns`, all joined at `end_ns`;
/// memory (VmRSS + VmPTE, MB) before the first spawn and with all asleep.
pub fn parked_report(
    n: u64,
    asleep_ns: u64,
    deadline_ns: u64,
    end_ns: u64,
    mem: [f64; 2],
) -> Report {
    Report::new()
        .with("asleep_s", asleep_ns as f64 / 1e9)
        .with("wake_s", end_ns.saturating_sub(deadline_ns) as f64 / 1e9)
        .with("mem_mb", mem[1])
        .with("kb_per_coroutine", (mem[1] - mem[0]) * 1e6 / 1024.0 / n as f64)
}

/// The one deadline of the parked benchmarks, in `mono_ns` time. Every implementation spawns all
/// `n` coroutines, yields once (at `spawned`) so that each starts and yields back, and sets the
/// deadline when it runs again (at `started`), before any has read it: starting was the costly
/// part, and what is left (each reads the deadline and sleeps) costs less, so `slack` times the
/// starting time plus `min_sleep_ms` leaves them all asleep at once, loaded machine or not.
pub fn parked_deadline(spawned: u64, started: u64, slack: u64, min_sleep_ms: u64) -> u64 {
    started + slack * (started - spawned) + min_sleep_ms * 1_000_000
}

/// The deadline of sleeper `i` of `n`, in ns after the start: spread uniformly over
/// [start, start + spread), handed out in a scrambled order (7919 is prime and divides no n used
/// here, so `i * 7919 mod n` is a permutation) so no timer structure is fed sorted input.
pub fn sleeper_offset_ns(i: u64, n: u64, start_ms: u64, spread_ms: u64) -> u64 {
    let slot = (i * 7919) % n;
    start_ms * 1_000_000 + spread_ms * 1_000_000 * slot / n
}

/// Runs the measurement and prints its JSON line; the process exit code says whether it worked.
pub fn main(args: &[String]) -> i32 {
    let (Some(imp), Some(bench)) = (args.first(), args.get(1)) else {
        eprintln!("usage: bench worker <impl> <benchmark> key=value ...");
        return 2;
    };
    let params = match Params::parse(&args[2..]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench worker: {e}");
            return 2;
        }
    };
    let result = match Impl::from_id(imp) {
        Some(imp) if crate::http_load::BENCHES.contains(&bench.as_str()) => {
            crate::http_load::run(imp, &params)
        }
        Some(variant @ (Impl::Raw | Impl::RawBigPipe | Impl::RawReadyQueue)) => {
            crate::raw::run(variant, bench, &params).map_err(|e| e.to_string())
        }
        Some(Impl::May) => crate::may_peer::run(bench, &params),
        Some(Impl::Greenhub) => greenhub(bench, &params),
        _ => Err(format!("this program has no worker for {imp:?}")),
    };
    match result {
        Ok(report) => {
            println!("{}", report.to_json());
            0
        }
        Err(e) => {
            eprintln!("bench worker {imp} {bench}: {e}");
            1
        }
    }
}

/// greenhub's runtime benchmarks need the `greenhub-runtime` feature, its ipc ones `greenhub`.
fn greenhub(bench: &str, params: &Params) -> Result<Report, String> {
    if IPC_BENCHES.contains(&bench) {
        greenhub_ipc(bench, params)
    } else {
        greenhub_runtime(bench, params)
    }
}

const IPC_BENCHES: &[&str] = &[
    "stream1",
    "stream64k",
    "big_raw",
    "big_ser",
    "pingpong",
    "process",
    "pool",
    "pool_chunked",
    "http",
];

#[cfg(feature = "greenhub-runtime")]
fn greenhub_runtime(bench: &str, params: &Params) -> Result<Report, String> {
    crate::greenhub_peer::run(bench, params)
}

#[cfg(not(feature = "greenhub-runtime"))]
fn greenhub_runtime(_: &str, _: &Params) -> Result<Report, String> {
    Err("built without the `greenhub-runtime` feature".into())
}

#[cfg(feature = "greenhub")]
fn greenhub_ipc(bench: &str, params: &Params) -> Result<Report, String> {
    crate::greenhub_ipc_peer::run(bench, params)
}

#[cfg(not(feature = "greenhub"))]
fn greenhub_ipc(_: &str, _: &Params) -> Result<Report, String> {
    Err("built without the `greenhub` feature".into())
}
