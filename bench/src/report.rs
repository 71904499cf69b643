//! The Markdown report: machine facts, versions of every peer, the exact command, one table per group
//! with greenhub/raw and greenhub/best-peer ratios and the issues' targets, the raw variants, the
//! spread over rounds, and any failure.

use crate::runner::{Results, median};
use crate::spec::{ALL_IMPLS, BENCHES, Bench, Better, Figure, Group, Impl, Role, Target};
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
        for krate in ["may", "may_minihttp", "mio", "corosensei", "libc"] {
            versions.push((krate.to_string(), locked_version(krate)));
        }
        versions.push(("greenhub".into(), greenhub_version()));
        versions.push(("wrk".into(), wrk_version()));
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
                "{}; groups: {}; {rounds} round(s), interleaved{}",
                if quick { "quick (smoke run: tiny counts, not a measurement)" } else { "full" },
                groups.join(", "),
                fewer_rounds(rounds)
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

/// The rows that run fewer rounds than asked (spec::rounds), as " (parked1m: 1)".
fn fewer_rounds(rounds: usize) -> String {
    let fewer: Vec<String> = BENCHES
        .iter()
        .filter(|b| crate::spec::rounds(b.id, rounds) < rounds)
        .map(|b| format!("{}: {}", b.id, crate::spec::rounds(b.id, rounds)))
        .collect();
    if fewer.is_empty() { String::new() } else { format!(" ({})", fewer.join(", ")) }
}

/// `wrk -v`'s first line (`wrk 4.1.0 [epoll] ...`): its version.
fn wrk_version() -> String {
    let out = Command::new("wrk").arg("-v").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let first = text.lines().next().unwrap_or("");
    let version = first.strip_prefix("wrk ").and_then(|v| v.split_whitespace().next());
    version.map_or_else(|| "not installed".into(), String::from)
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

/// The implementation columns of a group: greenhub, every peer its rows run, and one raw column
/// (the best raw variant of each row).
pub fn columns(group: Group) -> Vec<Impl> {
    let rows: Vec<&Bench> = BENCHES.iter().filter(|b| b.group == group).collect();
    let runs = |i: Impl| rows.iter().any(|b| b.impls.contains(&i));
    let mut cols: Vec<Impl> =
        ALL_IMPLS.iter().copied().filter(|&i| i.role() != Role::Raw && runs(i)).collect();
    if rows.iter().any(|b| has_raw(b)) {
        cols.push(Impl::Raw);
    }
    cols
}

/// Whether a row has a raw limit: a raw variant of its own, or another row's (`raw_from`).
pub fn has_raw(bench: &Bench) -> bool {
    bench.raw_from.is_some() || bench.impls.iter().any(|i| i.role() == Role::Raw)
}

/// The best raw median of a figure over the raw variants, following `raw_from`.
pub fn raw_best(results: &Results, bench: &Bench, key: &str, better: Better) -> Option<f64> {
    let id = bench.raw_from.unwrap_or(bench.id);
    let source = BENCHES.iter().find(|b| b.id == id).unwrap_or(bench);
    let raw = source.impls.iter().filter(|i| i.role() == Role::Raw);
    better.best(raw.filter_map(|&i| results.median(id, i, key)))
}

/// The median of one cell (the raw column: the best raw variant).
pub fn cell(results: &Results, bench: &Bench, imp: Impl, key: &str, better: Better) -> Option<f64> {
    if imp == Impl::Raw {
        raw_best(results, bench, key, better)
    } else {
        results.median(bench.id, imp, key)
    }
}

/// Whether a row has a cell in column `imp` (an implementation it runs, or its raw limit).
pub fn in_row(bench: &Bench, imp: Impl) -> bool {
    bench.impls.contains(&imp) || (imp == Impl::Raw && has_raw(bench))
}

/// The best peer median of a figure.
pub fn best_peer(
    results: &Results,
    bench: &Bench,
    key: &str,
    better: Better,
) -> Option<(Impl, f64)> {
    let peers = bench.impls.iter().filter(|i| i.role() == Role::Peer);
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

/// What the tables show for one figure of one row.
struct FigureRow {
    label: String,
    greenhub: Option<f64>,
    raw: Option<f64>,
    peer: Option<(Impl, f64)>,
    /// greenhub ÷ raw, greenhub ÷ best peer, the targets with ✅ / ❌.
    vs_raw: String,
    vs_peer: String,
    targets: String,
}

impl FigureRow {
    fn new(results: &Results, bench: &Bench, f: &Figure) -> FigureRow {
        let label = if bench.figures.len() > 1 {
            format!("{}: {}", bench.id, f.label)
        } else {
            f.label.into()
        };
        let g = results.median(bench.id, Impl::Greenhub, f.key);
        let raw = raw_best(results, bench, f.key, f.better);
        let peer = best_peer(results, bench, f.key, f.better);
        let vs_raw = match (g, raw) {
            (Some(g), Some(r)) => fmt_ratio(g / r),
            _ => "—".into(),
        };
        let vs_peer = match (g, peer) {
            (Some(g), Some((i, p))) => format!("{} (vs {})", fmt_ratio(g / p), i.id()),
            _ => "—".into(),
        };
        let targets: Vec<String> = crate::spec::targets(bench.id, f.key)
            .into_iter()
            .map(|t| {
                let text = target_text(t, f.unit, f.better, peer.map(|p| p.0));
                let met = g.and_then(|g| target_met(t, g, raw, peer.map(|p| p.1), f.better));
                let mark = match met {
                    Some(true) => " ✅",
                    Some(false) => " ❌",
                    None => "",
                };
                format!("{text}{mark}")
            })
            .collect();
        FigureRow { label, greenhub: g, raw, peer, vs_raw, vs_peer, targets: targets.join("; ") }
    }
}

/// A cell's text: its median, or why there is none.
fn cell_text(results: &Results, bench: &Bench, imp: Impl, f: &Figure) -> String {
    if let Some(v) = cell(results, bench, imp, f.key, f.better) {
        return fmt_value(v);
    }
    if !in_row(bench, imp) {
        return "—".into();
    }
    let failures = results.failures(bench.id, imp);
    match (failures.is_empty(), failures.iter().find_map(|m| fails_at(m))) {
        (true, _) => "n/a".into(),
        (false, Some(n)) => format!("fails at {n}"),
        (false, None) => "failed".into(),
    }
}

fn or_dash(v: Option<f64>) -> String {
    v.map_or("—".into(), fmt_value)
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
    summary(w, groups, results);
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
    how_measured(w, groups, results);
    where_in_the_code(w);
    md
}

/// The rows issue 12 names, with their goals: raw limit, greenhub, best peer, both ratios.
fn summary(w: &mut String, groups: &[Group], results: &Results) {
    let mut lines = Vec::new();
    for &(id, key) in crate::spec::HEADLINES {
        let Some(bench) = BENCHES.iter().find(|b| b.id == id && groups.contains(&b.group)) else {
            continue;
        };
        let Some(f) = bench.figures.iter().find(|f| f.key == key) else { continue };
        if !bench.impls.iter().any(|&i| results.ran(bench.id, i)) {
            continue;
        }
        let row = FigureRow::new(results, bench, f);
        let peer = row.peer.map_or("—".into(), |(i, v)| format!("{} {}", i.id(), fmt_value(v)));
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            f.unit,
            f.better.word(),
            or_dash(row.raw),
            or_dash(row.greenhub),
            peer,
            row.vs_raw,
            row.vs_peer,
            row.targets
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## Summary: the rows of issue 12\n\n\
         | figure | unit | better | raw limit | greenhub | best peer | greenhub/raw | greenhub/best peer | targets |\n\
         |---|---|---|---|---|---|---|---|---|\n{}\n",
        lines.join("\n")
    );
}

fn group_table(w: &mut String, group: Group, results: &Results) {
    let cols = columns(group);
    let _ = writeln!(w, "## {}\n", group.title());
    let mut head = String::from("| figure | unit | better |");
    for c in &cols {
        let _ = write!(head, " {} |", c.id());
    }
    head.push_str(" greenhub/raw | greenhub/best peer | targets (issues 2–4, 12) |");
    let _ = writeln!(w, "{head}\n|{}", "---|".repeat(cols.len() + 6));
    for bench in BENCHES.iter().filter(|b| b.group == group) {
        if !bench.impls.iter().any(|&i| results.ran(bench.id, i)) {
            continue;
        }
        for f in bench.figures {
            let row = FigureRow::new(results, bench, f);
            let mut line = format!("| {} | {} | {} |", row.label, f.unit, f.better.word());
            for &c in &cols {
                let _ = write!(line, " {} |", cell_text(results, bench, c, f));
            }
            let _ = writeln!(w, "{line} {} | {} | {} |", row.vs_raw, row.vs_peer, row.targets);
        }
    }
    let _ = writeln!(
        w,
        "\nRatios are plain quotients greenhub ÷ other of the medians; read them with the `better` \
         column (for a `lower` figure 0.5 means greenhub takes half the time, for a `higher` one it \
         means half the rate). `raw` is the best raw variant; `—`: the implementation \
         has no such operation; `n/a`: not measured in this run.\n"
    );
}

/// Rows with more than one raw variant: each variant's median.
fn raw_variants(w: &mut String, groups: &[Group], results: &Results) {
    let variants = |b: &Bench| -> Vec<Impl> {
        b.impls.iter().copied().filter(|i| i.role() == Role::Raw).collect()
    };
    let benches: Vec<&Bench> = BENCHES
        .iter()
        .filter(|b| groups.contains(&b.group) && variants(b).len() > 1)
        .filter(|b| variants(b).iter().any(|&i| results.ran(b.id, i)))
        .collect();
    if benches.is_empty() {
        return;
    }
    // One column per raw variant any of these rows runs (a row without it shows "—").
    let heads: Vec<Impl> = ALL_IMPLS
        .iter()
        .copied()
        .filter(|i| benches.iter().any(|b| variants(b).contains(i)))
        .collect();
    let _ = writeln!(w, "## Raw variants\n");
    let titles: Vec<&str> = heads.iter().map(|i| i.variant()).collect();
    let _ = writeln!(
        w,
        "| figure | unit | {} |\n|---|---|{}",
        titles.join(" | "),
        "---|".repeat(heads.len())
    );
    for b in benches {
        for f in b.figures {
            let v = |i: &Impl| {
                if b.impls.contains(i) {
                    results.median(b.id, *i, f.key).map_or("n/a".into(), fmt_value)
                } else {
                    "—".into()
                }
            };
            let cells: Vec<String> = heads.iter().map(v).collect();
            let _ = writeln!(w, "| {} | {} | {} |", f.label, f.unit, cells.join(" | "));
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

/// Every row run: its title and how it is measured, from the row's own `how` in spec.rs.
fn how_measured(w: &mut String, groups: &[Group], results: &Results) {
    let _ = writeln!(w, "## How each row is measured\n");
    for b in BENCHES.iter().filter(|b| groups.contains(&b.group)) {
        if !b.impls.iter().any(|&i| results.ran(b.id, i)) {
            continue;
        }
        let secs = results.seconds(b.id);
        let _ = writeln!(w, "- **{}** (`{}`, {secs:.0} s in this run): {}", b.title, b.id, b.how);
    }
    let _ = writeln!(w);
}

/// The files behind the figures, for the reader who wants to check one.
pub const WHERE: &[(&str, &str)] = &[
    (
        "bench/src/spec.rs",
        "every row: its figures, implementations, parameters, targets and the sentence saying how it is measured",
    ),
    ("bench/src/main.rs", "the command line and the interleaved rounds"),
    ("bench/src/runner.rs", "one fresh process per measurement, its time limit, the medians"),
    ("bench/src/worker.rs", "the worker side: one measurement, one JSON line"),
    ("bench/src/report.rs", "this document: machine facts, summary, tables, ratios"),
    ("bench/src/chart.rs", "the chart (hand-written SVG)"),
    ("bench/src/greenhub_peer.rs", "greenhub's runtime rows, through its public API"),
    ("bench/src/greenhub_ipc_peer.rs", "greenhub-ipc's rows, through its public API"),
    ("bench/src/may_peer.rs", "may's rows (one worker)"),
    ("bench/src/raw.rs", "the raw OS limit (corosensei, pipes, fork), with bench/src/sys.rs"),
    (
        "bench/src/http_load.rs",
        "the HTTP plaintext rows: servers pinned, wrk pinned, its figures read",
    ),
    ("bench/src/http_servers.rs", "the raw mio, greenhub and may_minihttp HTTP servers"),
    (
        "examples/src/http.rs",
        "the HTTP/1.1 parser and responses shared by the raw and greenhub servers and examples/prefork_server",
    ),
    ("bench/src/http.rs", "the pre-fork HTTP row (examples/prefork_server under wrk)"),
    ("bench/py/gevent_runtime.py", "gevent's runtime rows"),
    ("bench/py/gevent_http.py", "gevent's HTTP server (StreamServer, TCP_NODELAY)"),
    ("bench/py/gipc_ipc.py", "gipc's rows"),
    ("bench/setup.sh", "the Python venv (pinned gevent, gipc) and wrk"),
    ("runtime/src/hub.rs", "greenhub's loop: what every runtime row exercises"),
    ("runtime/src/io.rs", "the readiness waits and the retry loop under TCP echo and HTTP"),
    ("runtime/src/net/tcp.rs", "greenhub's TcpListener and TcpStream"),
    ("ipc/src/pipe.rs", "greenhub-ipc's pipes, under the stream, message and ping-pong rows"),
    ("ipc/src/fork.rs", "start_process's fork and the child's side, under the process row"),
    ("ipc/src/reap.rs", "waiting for a child's end (pidfd), under the process row"),
    ("ipc/src/pool/mod.rs", "greenhub-ipc's process pool, under the pool rows"),
];

fn where_in_the_code(w: &mut String) {
    let _ = writeln!(w, "## Where in the code\n");
    for (path, what) in WHERE {
        let _ = writeln!(w, "- `{path}`: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_named_in_where_in_the_code_exists() {
        let root = Path::new(crate::BENCH_DIR).join("..");
        for (path, _) in WHERE {
            assert!(root.join(path).is_file(), "{path} is named in WHERE but does not exist");
        }
    }

    #[test]
    fn every_row_says_how_it_is_measured() {
        for b in BENCHES {
            assert!(!b.how.trim().is_empty(), "row {} has no `how` sentence", b.id);
        }
    }

    #[test]
    fn every_headline_names_a_row_and_a_figure() {
        for &(id, key) in crate::spec::HEADLINES {
            let bench = BENCHES.iter().find(|b| b.id == id).expect(id);
            assert!(bench.figures.iter().any(|f| f.key == key), "{id} has no figure {key}");
        }
    }
}
