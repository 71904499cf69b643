//! `bench`: greenhub side by side with gevent + gipc, may (one worker) and the raw OS limit, in one
//! run on one machine, interleaved A B A B over several rounds; writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg`.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- all            # < 10 min, writes docs/
//! cargo run --release --manifest-path bench/Cargo.toml -- runtime|ipc    # one group, report in bench/target
//! cargo run --release --manifest-path bench/Cargo.toml -- all --quick    # < 1 min smoke run, report in bench/target
//! ```
//! Options: `--rounds N`, `--only switch,tcp,...`, `--impls greenhub,raw,...`, `--out DIR`,
//! `--timeout SECS`. See bench/README.md.

mod chart;
#[cfg(feature = "greenhub")]
mod greenhub_ipc_peer;
#[cfg(feature = "greenhub-runtime")]
mod greenhub_peer;
#[cfg(feature = "greenhub")]
mod http;
mod http_latency;
mod http_load;
mod http_servers;
mod may_peer;
mod patch_rows;
mod raw;
mod ready_read;
mod report;
mod runner;
mod spec;
mod sys;
mod worker;

use runner::{Results, Runner};
use spec::{BENCHES, Group, Impl};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bench/ folder, fixed at build time.
const BENCH_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Rounds per benchmark in a full run (the report shows the median).
const DEFAULT_ROUNDS: usize = 3;

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    groups: Vec<Group>,
    quick: bool,
    rounds: usize,
    only: Option<Vec<String>>,
    impls: Option<Vec<Impl>>,
    out: Option<PathBuf>,
    timeout: Option<u64>,
}

const USAGE: &str = "usage: bench [all|runtime|ipc] [--quick] [--rounds N] [--only b1,b2] \
[--impls greenhub,may,gevent,gipc,raw,raw-1mib,raw-queue] [--out DIR] [--timeout SECS]";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        groups: vec![Group::Runtime, Group::Ipc],
        quick: false,
        rounds: DEFAULT_ROUNDS,
        only: None,
        impls: None,
        out: None,
        timeout: None,
    };
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "all" => o.groups = vec![Group::Runtime, Group::Ipc],
            "runtime" => o.groups = vec![Group::Runtime],
            "ipc" => o.groups = vec![Group::Ipc],
            "--quick" => o.quick = true,
            "--rounds" => {
                rounds = Some(value("--rounds")?.parse().map_err(|_| "--rounds: a number")?)
            }
            "--only" => o.only = Some(value("--only")?.split(',').map(String::from).collect()),
            "--impls" => {
                let ids = value("--impls")?;
                let parse =
                    |id: &str| Impl::from_id(id).ok_or(format!("unknown implementation {id}"));
                o.impls = Some(ids.split(',').map(parse).collect::<Result<_, _>>()?);
            }
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--timeout" => {
                o.timeout = Some(value("--timeout")?.parse().map_err(|_| "--timeout: seconds")?)
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick { 1 } else { DEFAULT_ROUNDS }).max(1);
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("worker") => std::process::exit(worker::main(&args[1..])),
        Some("serve-http") => std::process::exit(http_servers::main(&args[1..])),
        _ => {}
    }
    let opts = match parse_options(&args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let bench_dir = Path::new(BENCH_DIR);
    let python = report::setup_python(bench_dir);
    let runner = Runner {
        exe: std::env::current_exe().expect("path of this program"),
        python: bench_dir.join(".venv/bin/python"),
        py_dir: bench_dir.join("py"),
        quick: opts.quick,
        timeout: Duration::from_secs(opts.timeout.unwrap_or(if opts.quick { 60 } else { 180 })),
    };
    let facts = report::Facts::gather(&args, &opts.groups, opts.quick, opts.rounds, &python);
    let results = measure(&runner, &opts, python.is_ok());
    let facts = facts.finish(started.elapsed());
    write_report(&opts, &facts, &results);
    // The report is written either way; the exit code tells CI whether everything ran.
    let failed = results.failure_count();
    if failed > 0 || python.is_err() {
        eprintln!(
            "bench: {failed} measurement(s) failed{}; see the Failures section of the report",
            if python.is_err() { ", and the Python peers could not be set up" } else { "" }
        );
        std::process::exit(1);
    }
}

/// Whether an implementation can run in this build and on this machine.
fn available(imp: Impl, group: Group, python_ok: bool) -> bool {
    match imp {
        Impl::Greenhub if group == Group::Runtime => cfg!(feature = "greenhub-runtime"),
        Impl::Greenhub => cfg!(feature = "greenhub"),
        Impl::Gevent | Impl::Gipc => python_ok,
        _ => true,
    }
}

/// The interleaved measurement: for each benchmark, `rounds` rounds of A B A B ...
fn measure(runner: &Runner, opts: &Options, python_ok: bool) -> Results {
    let mut results = Results::default();
    let benches = BENCHES.iter().filter(|b| opts.groups.contains(&b.group));
    let benches =
        benches.filter(|b| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == b.id)));
    for bench in benches {
        let impls: Vec<Impl> = (bench.impls.iter().copied())
            .filter(|i| opts.impls.as_ref().is_none_or(|o| o.contains(i)))
            .filter(|&i| available(i, bench.group, python_ok))
            .collect();
        let rounds = spec::rounds(bench.id, opts.rounds);
        for round in 1..=rounds {
            for &imp in &impls {
                let t = Instant::now();
                let outcome = runner.run(runner.command(bench, imp), runner.limit(bench));
                let took = t.elapsed().as_secs_f64();
                let shown = match &outcome {
                    Ok(v) => {
                        v.iter().map(|(k, x)| format!("{k}={x:.4}")).collect::<Vec<_>>().join(" ")
                    }
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!(
                    "[{}] round {round}/{rounds} {:<9} {shown}  ({took:.1} s)",
                    bench.id,
                    imp.id()
                );
                results.push(bench.id, imp, outcome, took);
            }
        }
    }
    results
}

/// Writes the Markdown report and the chart: a full `all` run into docs/, anything else (a quick
/// run, one group, a subset) into bench/target/bench-report/ unless `--out` says where.
fn write_report(opts: &Options, facts: &report::Facts, results: &Results) {
    let full = !opts.quick && opts.groups.len() == 2 && opts.only.is_none() && opts.impls.is_none();
    let dir = match &opts.out {
        Some(d) => d.clone(),
        None if full => Path::new(BENCH_DIR).join("../docs"),
        None => Path::new(BENCH_DIR).join("target/bench-report"),
    };
    std::fs::create_dir_all(&dir).expect("create the report folder");
    let svg = chart::render(&opts.groups, results);
    let md = report::render(&opts.groups, facts, results, "benchmarks.svg");
    std::fs::write(dir.join("benchmarks.svg"), svg).expect("write benchmarks.svg");
    std::fs::write(dir.join("benchmarks.md"), &md).expect("write benchmarks.md");
    if opts.quick {
        println!("{md}");
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    eprintln!("report: {}", dir.join("benchmarks.md").display());
    eprintln!("chart:  {}", dir.join("benchmarks.svg").display());
}
