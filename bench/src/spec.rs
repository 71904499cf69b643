//! What is measured: the benchmarks, the figures each one reports, which implementations run it,
//! and the parameters each implementation gets (sized so that every measurement takes a few tenths
//! of a second; `--quick` shrinks them so the whole run proves only that everything still runs).

/// The two tables of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Runtime,
    Ipc,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Runtime => "Runtime: coroutines, timers, channels, sockets in one process",
            Group::Ipc => "IPC: pipes and child processes",
        }
    }
}

/// Which direction of a figure is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn word(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }

    /// The best of some values.
    pub fn best(self, values: impl Iterator<Item = f64>) -> Option<f64> {
        values.reduce(|a, b| match self {
            Better::Higher => a.max(b),
            Better::Lower => a.min(b),
        })
    }

    /// How good `v` is next to `best`: 1.0 for the best, smaller for worse.
    pub fn score(self, v: f64, best: f64) -> f64 {
        match self {
            Better::Higher => v / best,
            Better::Lower => best / v,
        }
    }
}

/// One number a benchmark reports, under `key` in the worker's JSON line.
#[derive(Debug)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

/// The implementations measured. Each runs in a fresh worker process per measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Impl {
    Greenhub,
    May,
    Gevent,
    Gipc,
    /// The raw OS limit, measured by this program; pipes at their default size (64 KiB), each side
    /// sleeping in epoll as soon as the pipe is full / empty.
    Raw,
    /// The raw limit again, with the pipe grown to 1 MiB by `F_SETPIPE_SZ`.
    RawBigPipe,
}

impl Impl {
    pub fn id(self) -> &'static str {
        match self {
            Impl::Greenhub => "greenhub",
            Impl::May => "may",
            Impl::Gevent => "gevent",
            Impl::Gipc => "gipc",
            Impl::Raw => "raw",
            Impl::RawBigPipe => "raw-1mib",
        }
    }

    pub fn from_id(id: &str) -> Option<Impl> {
        ALL_IMPLS.iter().copied().find(|i| i.id() == id)
    }

    pub fn is_peer(self) -> bool {
        matches!(self, Impl::May | Impl::Gevent | Impl::Gipc)
    }

    pub fn is_python(self) -> bool {
        matches!(self, Impl::Gevent | Impl::Gipc)
    }

    /// Colour in the chart.
    pub fn colour(self) -> &'static str {
        match self {
            Impl::Greenhub => "#2e8b57",
            Impl::May => "#e08a1e",
            Impl::Gevent | Impl::Gipc => "#3b6fb6",
            Impl::Raw => "#8c8c8c",
            Impl::RawBigPipe => "#b5b5b5",
        }
    }
}

pub const ALL_IMPLS: [Impl; 6] =
    [Impl::Greenhub, Impl::May, Impl::Gevent, Impl::Gipc, Impl::Raw, Impl::RawBigPipe];

/// One benchmark: one worker invocation per implementation and round.
#[derive(Debug)]
pub struct Bench {
    pub group: Group,
    pub id: &'static str,
    pub title: &'static str,
    pub figures: &'static [Figure],
    pub impls: &'static [Impl],
    /// Take the raw column from another benchmark (the serialised 100 MB message is compared with
    /// the raw bytes limit: there is no serialisation in the raw measurement).
    pub raw_from: Option<&'static str>,
}

const fn fig(key: &'static str, label: &'static str, unit: &'static str, better: Better) -> Figure {
    Figure { key, label, unit, better }
}

use Better::{Higher, Lower};
use Impl::{Gevent, Gipc, Greenhub, May, Raw, RawBigPipe};

const SLEEPER_FIGURES: &[Figure] = &[
    fig("wall_s", "wall time", "s", Lower),
    fig("p50_ms", "p50 lateness", "ms", Lower),
    fig("p99_ms", "p99 lateness", "ms", Lower),
    fig("rss_mb", "peak RSS", "MB", Lower),
];

const PARKED_FIGURES: &[Figure] = &[
    fig("asleep_s", "spawned and all asleep", "s", Lower),
    fig("wake_s", "woken and joined", "s", Lower),
    fig("mem_mb", "VmRSS + VmPTE, all asleep", "MB", Lower),
    fig("kb_per_coroutine", "memory per parked coroutine", "KiB", Lower),
];

pub const BENCHES: &[Bench] = &[
    Bench {
        group: Group::Runtime,
        id: "switch",
        title: "coroutine switch (two coroutines yielding to each other)",
        figures: &[fig("ns_per_switch", "switch", "ns", Lower)],
        impls: &[Greenhub, May, Gevent, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "switch_monitor",
        title: "coroutine switch with the blocking monitor on (max_blocking 100 ms)",
        figures: &[fig("ns_per_switch", "switch, monitor on", "ns", Lower)],
        impls: &[Greenhub, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "spawn",
        title: "spawn + join of 100k no-op coroutines",
        figures: &[fig("ns_per_spawn", "spawn+join", "ns", Lower)],
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "channel",
        title: "in-process channel round trip",
        figures: &[fig("ns_per_round_trip", "channel round trip", "ns", Lower)],
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "select",
        title: "select over two channels (may: select!; gevent: gevent.wait on two events), plus an ack",
        figures: &[fig("ns_per_select", "select round trip", "ns", Lower)],
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "pool_map",
        title: "Pool map of 100k no-op items, pool size 100",
        figures: &[fig("ns_per_item", "Pool map", "ns per item", Lower)],
        impls: &[Greenhub, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "sleepers10k",
        title: "10k sleepers, deadlines over 1.0-1.5 s",
        figures: SLEEPER_FIGURES,
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "sleepers30k",
        title: "30k sleepers, deadlines over 1.0-1.5 s",
        figures: SLEEPER_FIGURES,
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "parked1m",
        title: "1,000,000 sleeping coroutines at once, 64 KiB stacks",
        figures: PARKED_FIGURES,
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "parked100k",
        title: "100,000 sleeping coroutines at once, default stack size",
        figures: PARKED_FIGURES,
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "tcp",
        title: "TCP echo, 100 clients, 64-byte round trips on 127.0.0.1",
        figures: &[fig("round_trips_per_s", "TCP echo", "round trips/s", Higher)],
        impls: &[Greenhub, May, Gevent],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "patch_read",
        title: "a patched read that does not block (1 byte from a ready, blocking pipe) in a hub after patch::install(); raw: libc's read in a process without the patch",
        figures: &[fig("ns_per_read", "patched read, not blocking", "ns", Lower)],
        impls: &[Greenhub, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Runtime,
        id: "patch_tcp",
        title: "TCP echo as in `tcp`, written with std::net::TcpStream, through the patch; raw column: greenhub's own net::TcpStream (the `tcp` row, no patch)",
        figures: &[fig(
            "round_trips_per_s",
            "std TCP echo through the patch",
            "round trips/s",
            Higher,
        )],
        impls: &[Greenhub, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "stream1",
        title: "1-byte message stream, child to parent",
        figures: &[fig("msgs_per_s", "1-byte messages", "msgs/s", Higher)],
        impls: &[Greenhub, Gipc, Raw, RawBigPipe],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "stream64k",
        title: "64,000-byte message stream, child to parent",
        figures: &[fig("gb_per_s", "64,000-byte messages", "GB/s", Higher)],
        impls: &[Greenhub, Gipc, Raw, RawBigPipe],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "big_raw",
        title: "one 100 MB message, raw bytes",
        figures: &[fig("ms", "100 MB message, raw", "ms", Lower)],
        impls: &[Greenhub, Gipc, Raw, RawBigPipe],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "big_ser",
        title: "one 100 MB message, serialised (greenhub: a Vec<u8> through pipe::<Vec<u8>>(), postcard; gipc: pickle of bytes)",
        figures: &[fig("ms", "100 MB message, serialised", "ms", Lower)],
        impls: &[Greenhub, Gipc],
        raw_from: Some("big_raw"),
    },
    Bench {
        group: Group::Ipc,
        id: "pingpong",
        title: "duplex ping-pong round trip, unpinned",
        figures: &[fig("round_trips_per_s", "ping-pong, unpinned", "round trips/s", Higher)],
        impls: &[Greenhub, Gipc, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "pingpong_pinned",
        title: "duplex ping-pong round trip, both processes pinned to CPU 0",
        figures: &[fig(
            "round_trips_per_s",
            "ping-pong, pinned to one CPU",
            "round trips/s",
            Higher,
        )],
        impls: &[Greenhub, Gipc, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "process",
        title: "start a child process and join it (raw: fork + _exit + waitpid)",
        figures: &[fig("us_per_process", "process start+join", "µs", Lower)],
        impls: &[Greenhub, Gipc, Raw],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "pool",
        title: "Pool map of 100k tiny items (x + 1) on 2 workers; Python column: multiprocessing.Pool, chunksize 1",
        figures: &[fig("items_per_s", "Pool, tiny items, vs chunksize 1", "items/s", Higher)],
        impls: &[Greenhub, Gipc],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "pool_chunked",
        title: "the same; Python column: multiprocessing.Pool, chunksize 50,000 (its best of 1 to 50,000 here)",
        figures: &[fig("items_per_s", "Pool, tiny items, vs best chunksize", "items/s", Higher)],
        impls: &[Greenhub, Gipc],
        raw_from: None,
    },
    Bench {
        group: Group::Ipc,
        id: "http",
        title: "HTTP/1.1 plaintext (examples/prefork_server) under wrk, 1 thread, 50 connections: one process, pre-fork with 1 and 2 workers",
        figures: &[
            fig("rps_single", "HTTP, single process", "requests/s", Higher),
            fig("rps_prefork1", "HTTP, pre-fork, 1 worker", "requests/s", Higher),
            fig("rps_prefork2", "HTTP, pre-fork, 2 workers", "requests/s", Higher),
        ],
        impls: &[Greenhub],
        raw_from: None,
    },
];

/// The command-line parameters of one measurement, `key=value` each.
pub fn params(bench: &str, imp: Impl, quick: bool) -> Vec<(&'static str, u64)> {
    let python = imp.is_python();
    let q = |full: u64, quick_v: u64| if quick { quick_v } else { full };
    let mut p = match bench {
        "switch" | "switch_monitor" => match imp {
            Raw => vec![("n", q(20_000_000, 200_000))],
            _ if python => vec![("n", q(100_000, 5_000))],
            _ => vec![("n", q(1_000_000, 20_000))],
        },
        "spawn" => vec![("n", q(100_000, 5_000)), ("batch", 1_000)],
        "channel" => vec![("n", if python { q(100_000, 5_000) } else { q(500_000, 10_000) })],
        "select" => vec![(
            "n",
            match imp {
                _ if python => q(50_000, 2_000),
                May => q(50_000, 2_000),
                _ => q(500_000, 10_000),
            },
        )],
        "pool_map" => vec![("n", q(100_000, 5_000)), ("size", 100)],
        "sleepers10k" | "sleepers30k" => vec![
            ("n", if bench == "sleepers10k" { q(10_000, 1_000) } else { q(30_000, 3_000) }),
            ("start_ms", q(1_000, 100)),
            ("spread_ms", q(500, 50)),
        ],
        // One deadline for all, set once all have started (worker::parked_deadline): `slack`
        // times the starting time plus `min_sleep_ms` later, so every implementation has them
        // all asleep by then without an idle wait sized for the slowest one.
        "parked1m" | "parked100k" => vec![
            ("n", if bench == "parked1m" { q(1_000_000, 20_000) } else { q(100_000, 5_000) }),
            ("stack", if bench == "parked1m" { 64 * 1024 } else { 0 }),
            ("slack", 1),
            ("min_sleep_ms", q(1_000, 500)),
        ],
        "patch_read" => vec![("n", q(2_000_000, 20_000))],
        "tcp" | "patch_tcp" => vec![
            ("clients", 100),
            ("n", if python { q(500, 5) } else { q(2_000, 10) }),
            ("size", 64),
        ],
        "stream1" => vec![("n", if python { q(300_000, 5_000) } else { q(2_000_000, 20_000) })],
        "stream64k" => {
            vec![("n", if python { q(10_000, 200) } else { q(20_000, 400) }), ("size", 64_000)]
        }
        "big_raw" | "big_ser" => vec![("size", q(100_000_000, 10_000_000))],
        "pingpong" => {
            vec![("n", if python { q(10_000, 500) } else { q(20_000, 1_000) }), ("pinned", 0)]
        }
        "pingpong_pinned" => {
            vec![("n", if python { q(30_000, 500) } else { q(100_000, 1_000) }), ("pinned", 1)]
        }
        "process" => vec![("n", if python { q(100, 5) } else { q(500, 20) })],
        "pool" => vec![("n", q(100_000, 2_000)), ("workers", 2), ("chunksize", 1)],
        "pool_chunked" => {
            vec![("n", q(100_000, 2_000)), ("workers", 2), ("chunksize", q(50_000, 1_000))]
        }
        "http" => vec![("secs", q(5, 1)), ("connections", 50)],
        other => panic!("no parameters for benchmark {other}"),
    };
    if imp == RawBigPipe {
        p.push(("pipe_size", 1 << 20));
    }
    p
}

/// At most this many rounds of a benchmark, whatever `--rounds` says: the parked rows hold up to
/// a million coroutines (gevent: about 8 GB and minutes per measurement), and their figures
/// (memory above all) hardly move between rounds; this keeps the whole command in its budget.
pub fn max_rounds(bench: &str) -> usize {
    match bench {
        "parked1m" => 1,
        "parked100k" => 3,
        _ => usize::MAX,
    }
}

/// A longer time limit (seconds) for one measurement of these benchmarks in a full run: gevent
/// holding a million greenlets takes about a minute of CPU time, several on a loaded machine.
pub fn min_time_limit(bench: &str) -> Option<u64> {
    (bench == "parked1m").then_some(480)
}

/// How the Python peer names a benchmark: sleepers and ping-pong are one function each there.
pub fn python_name(bench: &str) -> &str {
    match bench {
        "sleepers10k" | "sleepers30k" => "sleepers",
        "pingpong_pinned" => "pingpong",
        "parked1m" | "parked100k" => "parked",
        other => other,
    }
}

/// A goal from the issues, checked in the report against greenhub's median.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// An absolute bound in the figure's unit (issue 2's budgets).
    Abs(f64),
    /// greenhub at least this good next to the best raw figure (score: 1.0 = as good as raw).
    VsRaw(f64),
    /// greenhub at least this good next to the best peer (1.0 = level; 5.0 = five times better).
    VsPeer(f64),
}

/// The targets that issues 2, 3 and 4 set for one figure. Every runtime and ipc figure should be
/// ahead of the peers (issue 4); the rest are the absolute budgets and raw ratios of issues 2 and 3.
pub fn targets(bench: &str, key: &str) -> Vec<Target> {
    use Target::{Abs, VsPeer, VsRaw};
    let mut t = match (bench, key) {
        ("switch", _) | ("switch_monitor", _) => vec![Abs(15.0)],
        ("spawn", _) | ("channel", _) => vec![Abs(100.0)],
        ("sleepers30k", "p99_ms") | ("sleepers10k", "p99_ms") => vec![Abs(1.0)],
        ("sleepers30k", "rss_mb") => vec![Abs(150.0)],
        // Issue 8: VmRSS + VmPTE at most 5 GiB for the million.
        ("parked1m", "mem_mb") => vec![Abs(5.0 * 1024.0 * 1024.0 * 1024.0 / 1e6)],
        ("stream1", _) => vec![Abs(2.5e6), VsPeer(5.0)],
        ("stream64k", _) => vec![VsRaw(0.9)],
        ("big_raw", _) => vec![VsRaw(0.9)],
        ("big_ser", _) => vec![VsRaw(0.7)],
        ("pingpong", _) => vec![VsRaw(1.0 / 1.2)],
        // Issue 12 item 3: at least 0.9x raw on one CPU, and within 1.5x of fork + _exit + waitpid.
        ("pingpong_pinned", _) => vec![VsRaw(0.9), VsPeer(2.5)],
        ("process", _) => vec![VsRaw(1.0 / 1.5)],
        // Issue 10: within 10% of the plain call / of greenhub's own sockets; no peer has a patch.
        ("patch_read", _) | ("patch_tcp", _) => return vec![VsRaw(1.0 / 1.1)],
        ("pool", _) => vec![VsPeer(10.0)],
        _ => vec![],
    };
    if !t.iter().any(|x| matches!(x, VsPeer(_))) {
        t.push(VsPeer(1.0));
    }
    t
}
