//! The harness side: runs every measurement in a fresh process (this program's own `worker` mode,
//! or the Python peers), interleaved A B A B across implementations, round after round, and keeps
//! every outcome for the report. A worker that fails, hangs past its time limit or prints no JSON
//! is recorded as a failure with the tail of its stderr; the run goes on.

use crate::spec::{self, Bench, Impl};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The figures of one successful measurement, or why it failed.
pub type Outcome = Result<Vec<(String, f64)>, String>;

/// Everything measured in one run.
#[derive(Debug, Default)]
pub struct Results {
    runs: HashMap<(&'static str, Impl), Vec<Outcome>>,
    /// Wall time spent on each benchmark, every round and implementation.
    seconds: HashMap<&'static str, f64>,
}

impl Results {
    /// Records one measurement and the wall time it took.
    pub fn push(&mut self, bench: &'static str, imp: Impl, outcome: Outcome, seconds: f64) {
        self.runs.entry((bench, imp)).or_default().push(outcome);
        *self.seconds.entry(bench).or_default() += seconds;
    }

    /// Wall time spent on one benchmark in this run.
    pub fn seconds(&self, bench: &str) -> f64 {
        self.seconds.get(bench).copied().unwrap_or(0.0)
    }

    /// Every successful value of one figure, in round order.
    pub fn values(&self, bench: &str, imp: Impl, key: &str) -> Vec<f64> {
        let Some(runs) =
            self.runs.iter().find(|((b, i), _)| *b == bench && *i == imp).map(|(_, r)| r)
        else {
            return Vec::new();
        };
        let find = |v: &Vec<(String, f64)>| v.iter().find(|(k, _)| k == key).map(|&(_, x)| x);
        runs.iter().filter_map(|o| o.as_ref().ok().and_then(find)).collect()
    }

    pub fn median(&self, bench: &str, imp: Impl, key: &str) -> Option<f64> {
        median(self.values(bench, imp, key))
    }

    /// The failures of one benchmark and implementation.
    pub fn failures(&self, bench: &str, imp: Impl) -> Vec<&str> {
        let runs = self.runs.iter().filter(|((b, i), _)| *b == bench && *i == imp);
        runs.flat_map(|(_, r)| r.iter().filter_map(|o| o.as_ref().err().map(String::as_str)))
            .collect()
    }

    /// How many measurements failed in the whole run.
    pub fn failure_count(&self) -> usize {
        self.runs.values().flatten().filter(|o| o.is_err()).count()
    }

    pub fn ran(&self, bench: &str, imp: Impl) -> bool {
        self.runs.keys().any(|&(b, i)| b == bench && i == imp)
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Where the pieces are, and how long a worker may take.
#[derive(Debug)]
pub struct Runner {
    pub exe: PathBuf,
    pub python: PathBuf,
    pub py_dir: PathBuf,
    pub quick: bool,
    pub timeout: Duration,
}

impl Runner {
    /// The command of one measurement.
    pub fn command(&self, bench: &Bench, imp: Impl) -> Command {
        let name = spec::python_name(bench.id);
        let params = spec::params(bench.id, imp, self.quick);
        // The HTTP rows: this program's worker starts the implementation's server and drives wrk.
        let driven_here = crate::http_load::BENCHES.contains(&bench.id);
        let mut cmd = if let Some(c) = crate::patch_rows::command(&self.exe, bench.id, imp) {
            c
        } else if imp.is_python() && !driven_here {
            let script = if imp == Impl::Gevent { "gevent_runtime.py" } else { "gipc_ipc.py" };
            let mut c = Command::new(&self.python);
            c.arg("-u").arg(self.py_dir.join(script)).arg(name);
            c
        } else {
            let mut c = Command::new(&self.exe);
            c.args(["worker", imp.id(), name]);
            c
        };
        cmd.args(params.iter().map(|(k, v)| format!("{k}={v}")));
        cmd
    }

    /// The time limit of one measurement of `bench`: the command line's, or longer for the
    /// benchmarks that need it (never shorter).
    pub fn limit(&self, bench: &Bench) -> Duration {
        let longer = if self.quick { None } else { spec::min_time_limit(bench.id) };
        longer.map_or(self.timeout, |s| self.timeout.max(Duration::from_secs(s)))
    }

    /// Runs one measurement in its own process group (so a hung worker and any children it forked
    /// can be killed together) and parses the last JSON line it printed; past `limit` it is
    /// killed.
    pub fn run(&self, mut cmd: Command, limit: Duration) -> Outcome {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let pgid = child.id() as libc::pid_t;
        let out = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() > deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for the worker: {e}")),
            }
        };
        // Whatever is left of the group (a hung worker, a stray child) goes now.
        // SAFETY: kill has no memory arguments; the group is the one this worker leads.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if status.is_none() {
            let _ = child.wait();
        }
        let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
        let tail = stderr_tail(&err);
        match status {
            None => Err(format!("timed out after {limit:?}{tail}")),
            Some(s) if !s.success() => Err(format!("worker {s}{tail}")),
            Some(_) => {
                let line = out.lines().rev().find(|l| l.trim_start().starts_with('{'));
                let line = line.ok_or_else(|| format!("no JSON line on stdout{tail}"))?;
                parse_flat_json(line).map_err(|e| format!("bad JSON line {line:?}: {e}"))
            }
        }
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn stderr_tail(err: &str) -> String {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(": {}", lines[lines.len().saturating_sub(6)..].join(" / "))
}

/// Parses a flat JSON object whose values are numbers (`{"a": 1.5, "b": 2}`); other values
/// (strings, null) are skipped.
pub fn parse_flat_json(line: &str) -> Result<Vec<(String, f64)>, String> {
    let body =
        line.trim().strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or("not an object")?;
    let mut out = Vec::new();
    for field in body.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once(':').ok_or_else(|| format!("no ':' in {field:?}"))?;
        let k = k.trim().trim_matches('"').to_string();
        if let Ok(v) = v.trim().parse::<f64>() {
            out.push((k, v));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_json() {
        let v =
            parse_flat_json(r#"{"ns_per_switch": 1.25e-05, "n": 100000, "note": "x"}"#).unwrap();
        assert_eq!(v, vec![("ns_per_switch".into(), 1.25e-5), ("n".into(), 100000.0)]);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
