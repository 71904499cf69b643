//! The Markdown report: machine facts, versions of every peer, the exact command, one table per group
//! with greenhub/raw and greenhub/best-peer ratios and the issues' targets, the raw variants, the
//! spread over rounds, and any failure.

use crate::runner::{Results, median};
use crate::spec::{BENCHES, Bench, Better, Group, Impl, Target};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs bench/setup.sh (idempotent: creates the venv with gevent and gipc on first use) and returns
/// the versions it prints (`name version` per line), or why Python peers cannot run.
pub fn setup_python(bench_dir: &Path) -> Result<Vec<(String, String)>, String> {
    eprintln!("bench: bench/setup.sh (Python venv with gevent and gipc) ...");
    let out = Command::new("bash").arg(bench_dir.join("setup.sh")).output();
    let out = out.map_err(|e| format!("cannot run setup.sh: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprint!("{text}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        eprintln!("bench: setup.sh failed: the gevent and gipc columns will be empty");
        return Err(format!("setup.sh failed ({})", out.status));
    }
    let pair = |l: &str| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()));
    Ok(text.lines().filter_map(pair).collect())
}

/// What the reader needs to reproduce and judge the numbers.
#[derive(Debug)]
pub struct Facts {
    command: String,
    date: String,
    mode: String,
    machine: Vec<(&'static str, String)>,
    versions: Vec<(String, String)>,
    load_start: String,
    load_end: String,
    duration: Duration,
}

impl Facts {
    pub fn gather(
        args: &[String],
        groups: &[Group],
        quick: bool,
        rounds: usize,
        python: &Result<Vec<(String, String)>, String>,
    ) -> Facts {
        let mut versions = vec![("rustc".to_string(), env!("BENCH_RUSTC_VERSION").to_string())];
        for krate in ["may", "corosensei", "libc"] {
            versions.push((krate.to_string(), locked_version(krate)));
        }
        versions.push(("greenhub".into(), greenhub_version()));
        match python {
            Ok(v) => versions.extend(v.iter().cloned()),
            Err(e) => versions.push(("python peers".into(), format!("not available: {e}"))),
        }
        let groups: Vec<&str> =
            groups.iter().map(|g| if *g == Group::Runtime { "runtime" } else { "ipc" }).collect();
        Facts {
            command: format!(
                "cargo run --release --manifest-path bench/Cargo.toml -- {}",
                args.join(" ")
            ),
            date: utc_now(),
            mode: format!(
                "{}; groups: {}; {rounds} round(s), interleaved",
                if quick { "quick (smoke run: tiny counts, not a measurement)" } else { "full" },
                groups.join(", ")
            ),
            machine: machine_facts(),
            versions,
            load_start: load_average(),
            load_end: String::new(),
            duration: Duration::ZERO,
        }
    }

    pub fn finish(mut self, duration: Duration) -> Facts {
        self.load_end = load_average();
        self.duration = duration;
        self
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine_facts() -> Vec<(&'static str, String)> {
    let cpuinfo = read("/proc/cpuinfo");
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':'));
    let logical = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        ("CPU", model.map_or("unknown".into(), |(_, m)| m.trim().to_string())),
        (
            "cores",
            format!("{logical} logical CPUs in /proc/cpuinfo, {cores} available to this process"),
        ),
        ("memory", format!("{:.1} GiB", mem_kb as f64 / (1 << 20) as f64)),
        ("kernel", uname()),
    ]
}

fn uname() -> String {
    // SAFETY: an all-zero utsname is a valid value of this plain C struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {} ({})",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine),
        field(&u.version)
    )
}

fn load_average() -> String {
    read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The version of a dependency as locked in bench/Cargo.lock.
fn locked_version(krate: &str) -> String {
    let lock =
        std::fs::read_to_string(Path::new(crate::BENCH_DIR).join("Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{krate}\"\nversion = \"");
    lock.find(&needle)
        .and_then(|i| lock[i + needle.len()..].split('"').next())
        .map_or("unknown".into(), String::from)
}

fn greenhub_version() -> String {
    if !cfg!(feature = "greenhub-runtime") {
        return "not built (the `greenhub` feature is off)".into();
    }
    let root = Path::new(crate::BENCH_DIR).join("..");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(&root).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "no commit".into());
    let dirty =
        git(&["status", "--porcelain", "--", "runtime", "ipc"]).is_some_and(|s| !s.is_empty());
    let ipc = if cfg!(feature = "greenhub") { ", ../ipc" } else { "; greenhub-ipc not built" };
    format!(
        "0.1.0 (path ../runtime{ipc}; git {rev}{})",
        if dirty { " + uncommitted changes" } else { "" }
    )
}

fn utc_now() -> String {
    // SAFETY: time(NULL) only returns the time.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero tm is a valid value; gmtime_r writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    unsafe { libc::gmtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min
    )
}

// ---- numbers ------------------------------------------------------------------------------------

/// Three significant digits; large values with a k / M suffix.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// The implementation columns of a group, peers and raw.
pub fn columns(group: Group) -> &'static [Impl] {
    match group {
        Group::Runtime => &[Impl::Greenhub, Impl::May, Impl::Gevent, Impl::Raw],
        Group::Ipc => &[Impl::Greenhub, Impl::Gipc, Impl::Raw],
    }
}

/// The best raw median of a figure over the raw variants, following `raw_from`.
pub fn raw_best(results: &Results, bench: &Bench, key: &str, better: Better) -> Option<f64> {
    let id = bench.raw_from.unwrap_or(bench.id);
    let variants =
        [Impl::Raw, Impl::RawBigPipe].into_iter().filter_map(|i| results.median(id, i, key));
    better.best(variants)
}

/// The median of one cell (raw: the best raw variant).
pub fn cell(results: &Results, bench: &Bench, imp: Impl, key: &str, better: Better) -> Option<f64> {
    if imp == Impl::Raw {
        raw_best(results, bench, key, better)
    } else {
        results.median(bench.id, imp, key)
    }
}

/// The best peer median of a figure.
pub fn best_peer(
    results: &Results,
    bench: &Bench,
    key: &str,
    better: Better,
) -> Option<(Impl, f64)> {
    let peers = bench.impls.iter().filter(|i| i.is_peer());
    let medians = peers.filter_map(|&i| results.median(bench.id, i, key).map(|v| (i, v)));
    medians.reduce(|a, b| if better.score(a.1, b.1) >= 1.0 { a } else { b })
}

fn target_text(t: Target, unit: &str, better: Better, peer: Option<Impl>) -> String {
    let peer = peer.map_or("the best peer", Impl::id);
    let cmp = if better == Better::Lower { "≤" } else { "≥" };
    match t {
        Target::Abs(b) => format!("{cmp} {} {unit}", fmt_value(b)),
        Target::VsRaw(s) => match better {
            Better::Higher => format!("≥ {} × raw", fmt_ratio(s)),
            Better::Lower => format!("≤ {} × raw", fmt_ratio(1.0 / s)),
        },
        Target::VsPeer(1.0) => format!("ahead of {peer}"),
        Target::VsPeer(s) => format!("{s}× better than {peer}"),
    }
}

fn target_met(
    t: Target,
    g: f64,
    raw: Option<f64>,
    peer: Option<f64>,
    better: Better,
) -> Option<bool> {
    match t {
        Target::Abs(b) => Some(better.score(g, b) >= 1.0),
        Target::VsRaw(s) => raw.map(|r| better.score(g, r) >= s),
        Target::VsPeer(s) => peer.map(|p| better.score(g, p) >= s),
    }
}

// ---- the document -------------------------------------------------------------------------------

pub fn render(groups: &[Group], facts: &Facts, results: &Results, svg_name: &str) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks: greenhub vs gevent + gipc vs may vs the raw OS limit\n");
    let _ = writeln!(
        w,
        "Generated by the benchmark program in `bench/` (see `bench/README.md`), {}. All numbers \
         are medians over interleaved rounds (A B A B …), each measurement in a fresh process, timed \
         inside that process. Compare ratios, not absolute times: this is a small shared machine.\n",
        facts.date
    );
    let _ = writeln!(w, "- command: `{}`", facts.command.trim_end());
    let _ = writeln!(w, "- mode: {}", facts.mode);
    let _ = writeln!(
        w,
        "- took: {:.0} s; load average before: {}, after: {}",
        facts.duration.as_secs_f64(),
        facts.load_start,
        facts.load_end
    );
    for (k, v) in &facts.machine {
        let _ = writeln!(w, "- {k}: {v}");
    }
    let versions: Vec<String> = facts.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(w, "- versions: {}\n", versions.join("; "));
    let _ = writeln!(
        w,
        "![greenhub and its peers, each figure normalised to the best implementation = 1.0]({svg_name})\n"
    );
    for &group in groups {
        group_table(w, group, results);
    }
    raw_variants(w, groups, results);
    spread(w, groups, results);
    failures(w, groups, results);
    notes(w);
    md
}

fn group_table(w: &mut String, group: Group, results: &Results) {
    let cols = columns(group);
    let _ = writeln!(w, "## {}\n", group.title());
    let mut head = String::from("| figure | unit | better |");
    for c in cols {
        let _ = write!(head, " {} |", c.id());
    }
    head.push_str(" greenhub/raw | greenhub/best peer | targets (issues 2–4) |");
    let _ = writeln!(w, "{head}\n|{}", "---|".repeat(cols.len() + 6));
    for bench in BENCHES.iter().filter(|b| b.group == group) {
        if !bench.impls.iter().any(|&i| results.ran(bench.id, i)) {
            continue;
        }
        for f in bench.figures {
            let label = if bench.figures.len() > 1 {
                format!("{}: {}", bench.id, f.label)
            } else {
                f.label.into()
            };
            let mut row = format!("| {label} | {} | {} |", f.unit, f.better.word());
            for &c in cols {
                let v = cell(results, bench, c, f.key, f.better);
                let shown = match v {
                    Some(v) => fmt_value(v),
                    None if bench.impls.contains(&c)
                        || (c == Impl::Raw && bench.raw_from.is_some()) =>
                    {
                        let failures = results.failures(bench.id, c);
                        let at = failures.iter().find_map(|m| fails_at(m));
                        match (failures.is_empty(), at) {
                            (true, _) => "n/a".into(),
                            (false, Some(n)) => format!("fails at {n}"),
                            (false, None) => "failed".into(),
                        }
                    }
                    None => "—".into(),
                };
                let _ = write!(row, " {shown} |");
            }
            let g = results.median(bench.id, Impl::Greenhub, f.key);
            let raw = raw_best(results, bench, f.key, f.better);
            let peer = best_peer(results, bench, f.key, f.better);
            let ratio = |other: Option<f64>| match (g, other) {
                (Some(g), Some(o)) => fmt_ratio(g / o),
                _ => "—".into(),
            };
            let peer_ratio = match (g, peer) {
                (Some(g), Some((i, p))) => format!("{} (vs {})", fmt_ratio(g / p), i.id()),
                _ => "—".into(),
            };
            let targets: Vec<String> = crate::spec::targets(bench.id, f.key)
                .into_iter()
                .map(|t| {
                    let text = target_text(t, f.unit, f.better, peer.map(|p| p.0));
                    let mark =
                        match g.and_then(|g| target_met(t, g, raw, peer.map(|p| p.1), f.better)) {
                            Some(true) => " ✅",
                            Some(false) => " ❌",
                            None => "",
                        };
                    format!("{text}{mark}")
                })
                .collect();
            let _ = writeln!(w, "{row} {} | {peer_ratio} | {} |", ratio(raw), targets.join("; "));
        }
    }
    let _ = writeln!(
        w,
        "\nRatios are plain quotients greenhub ÷ other of the medians; read them with the `better` \
         column (for a `lower` figure 0.5 means greenhub takes half the time, for a `higher` one it \
         means half the rate). `raw` is the best raw variant (table below); `—`: the implementation \
         has no such operation; `n/a`: not measured in this run.\n"
    );
}

fn raw_variants(w: &mut String, groups: &[Group], results: &Results) {
    let benches: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| groups.contains(&b.group) && b.impls.contains(&Impl::RawBigPipe))
        .filter(|b| results.ran(b.id, Impl::Raw) || results.ran(b.id, Impl::RawBigPipe))
        .collect();
    if benches.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Raw pipe variants\n");
    let _ = writeln!(
        w,
        "| figure | unit | 64 KiB pipe, sleep in epoll when full/empty | pipe grown to 1 MiB (F_SETPIPE_SZ) |\n|---|---|---|---|"
    );
    for b in benches {
        for f in b.figures {
            let v = |i| results.median(b.id, i, f.key).map_or("n/a".into(), fmt_value);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                f.label,
                f.unit,
                v(Impl::Raw),
                v(Impl::RawBigPipe)
            );
        }
    }
    let _ = writeln!(w);
}

fn spread(w: &mut String, groups: &[Group], results: &Results) {
    let _ = writeln!(
        w,
        "## Spread over rounds\n\n<details><summary>median, min and max of every figure</summary>\n"
    );
    let _ = writeln!(
        w,
        "| benchmark | figure | implementation | median | min | max | rounds |\n|---|---|---|---|---|---|---|"
    );
    for b in BENCHES.iter().filter(|b| groups.contains(&b.group)) {
        for f in b.figures {
            for &i in b.impls {
                let v = results.values(b.id, i, f.key);
                let (Some(m), Some(lo), Some(hi)) = (
                    median(v.clone()),
                    v.iter().copied().reduce(f64::min),
                    v.iter().copied().reduce(f64::max),
                ) else {
                    continue;
                };
                let _ = writeln!(
                    w,
                    "| {} | {} ({}) | {} | {} | {} | {} | {} |",
                    b.title,
                    f.label,
                    f.unit,
                    i.id(),
                    fmt_value(m),
                    fmt_value(lo),
                    fmt_value(hi),
                    v.len()
                );
            }
        }
    }
    let _ = writeln!(w, "\n</details>\n");
}

/// "fails at N live coroutines: CAUSE, ..." in a failure message (may's parked worker says so,
/// measured when its stack allocation fails): "N: CAUSE".
fn fails_at(message: &str) -> Option<String> {
    let rest = message.split("fails at ").nth(1)?;
    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let cause = rest.split_once(": ").map(|(_, c)| c.split(';').next().unwrap_or(c));
    match cause {
        _ if n.is_empty() => None,
        Some(cause) => Some(format!("{n}: {}", cause.trim())),
        None => Some(n),
    }
}

fn failures(w: &mut String, groups: &[Group], results: &Results) {
    let mut lines = Vec::new();
    for b in BENCHES.iter().filter(|b| groups.contains(&b.group)) {
        for &i in b.impls {
            let mut f = results.failures(b.id, i);
            f.dedup();
            for msg in f {
                let msg: String = msg.chars().take(600).collect();
                lines.push(format!("- {} / {}: {}", b.id, i.id(), msg.replace('|', "\\|")));
            }
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(w, "## Failures\n\n{}\n", lines.join("\n"));
    }
}

fn notes(w: &mut String) {
    let _ = writeln!(
        w,
        "## How each figure is measured\n\n\
         - **switch**: two coroutines each yield N times to the other; time / 2N. greenhub `yield_now`, \
         may `coroutine::yield_now` (one worker), gevent `gevent.sleep(0)` (its idiomatic cooperative \
         yield: a switch to the hub and back), raw: one corosensei `resume` + `suspend`.\n\
         - **switch, monitor on**: the same with the blocking monitor on: greenhub \
         `Builder::monitor(100 ms)` (one relaxed atomic store per switch, a watchdog thread), gevent \
         `config.monitor_thread` with `max_blocking_time` 0.1 s (a greenlet trace function per switch).\n\
         - **spawn+join**: 100k no-op coroutines, spawned and joined in batches of 1,000 (so no \
         implementation needs 100k stacks at once: guard-paged stacks hit `vm.max_map_count` near 32k); \
         time per coroutine.\n\
         - **channel round trip**: two coroutines ping-pong a number over two unbounded channels \
         (greenhub `sync::channel`, may `sync::mpsc`, gevent `gevent.queue.UnboundQueue`, the fastest of its queues here).\n\
         - **select round trip**: a producer sends on channel A or B in turn and waits for an ack; the \
         consumer waits on both (greenhub `select!`; may `select!`, one coroutine per arm; gevent \
         `gevent.wait([event_a, event_b], count=1)`, each event guarding a deque), then acks.\n\
         - **Pool map**: `Pool(100).map` of 100k no-op items (greenhub `sync::Pool::map`, gevent \
         `gevent.pool.Pool.map`); time per item.\n\
         - **sleepers**: N coroutines sleep until deadlines spread uniformly over 1.0–1.5 s after the \
         start (handed out in scrambled order); wall time until all are done, lateness = wake-up − \
         deadline, peak RSS = `ru_maxrss` of the process (each N in a fresh process, so the interpreter \
         or runtime's own footprint is included: compare like with like).\n\
         - **parked (1M at 64 KiB stacks, 100k at the default size)**: N coroutines each sleep until \
         one deadline, set once all have started (each yields once when it starts): the starting time \
         + 1 s later, so that every implementation has them all asleep by then; at most 1 round (1M) and 3 \
         rounds (100k); *spawned and all asleep*: from the first spawn until the last one sleeps; \
         *woken and joined*: from the deadline until all are joined; memory: VmRSS + VmPTE \
         (`/proc/self/status`) with all asleep, and per coroutine: its growth over the process \
         before the first spawn, / N. may maps a guard page per stack, so past about \
         `vm.max_map_count` / 2 live coroutines it fails: the cell says after how many. gevent's \
         greenlets have no stacks of their own (the used part is copied to the heap on a switch).\n\
         - **TCP echo**: 100 clients and the echo server in one process and one hub/worker, each client \
         doing sequential 64-byte round trips on 127.0.0.1; total round trips / s.\n\
         - **1-byte / 64,000-byte messages**: a child writes N messages to a raw pipe (gipc \
         `encoder=None`), the parent reads them; rate from the first message received to the last.\n\
         - **100 MB message**: one message, from just before the child puts it (its monotonic clock, sent \
         ahead in a small message) until the parent's get returns; raw bytes, and serialised (greenhub \
         postcard `Vec<u8>`, gipc pickle of `bytes`; raw column: the raw bytes limit).\n\
         - **ping-pong**: the parent puts a small message on a duplex pipe and the child puts it back; \
         round trips / s after one warm-up; pinned: both processes on CPU 0 (`sched_setaffinity`).\n\
         - **process start+join**: start a child that returns at once and join it, N times; raw: \
         `fork` + `_exit(0)` + `waitpid`.\n"
    );
}
