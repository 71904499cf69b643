//! The driver of the HTTP/1.1 plaintext rows (`http_keepalive`, `http_pipelined`): one
//! measurement starts one implementation's server (`bench serve-http raw|greenhub|may`, or
//! `py/gevent_http.py`) pinned to CPU 0 with `taskset`, loads it with `wrk --latency` pinned to
//! CPU 1 (one thread, `connections` keep-alive connections, `secs` seconds; `depth` > 1 sends
//! that many requests per write through a Lua script generated into a temporary folder), kills
//! the server, and reports requests/s, the p50 and p99 latency wrk measured (when pipelining,
//! those of a second, 1 s load by `http_latency.rs`: wrk's are not sound then), and the CPU time
//! the server used per request (from the scheduler's own count, `/proc/PID/task/*/schedstat`:
//! on a shared machine the CPU another process takes from the server lowers its requests/s but
//! not its CPU per request), and wrk's own CPU time, per request and as a share of the run (from
//! `getrusage(RUSAGE_CHILDREN)`): when wrk is at 100 % of its CPU, it is the limit, and requests/s
//! is one over its CPU per request.

use crate::http_latency::{self, Percentiles};
use crate::spec::Impl;
use crate::worker::{Params, Report};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The benchmarks this driver measures.
pub const BENCHES: &[&str] = &["http_keepalive", "http_pipelined"];

/// The CPU the server runs on, and the CPU wrk runs on.
const SERVER_CPU: &str = "0";
const WRK_CPU: &str = "1";

/// One measurement of `imp`'s server.
pub fn run(imp: Impl, p: &Params) -> Result<Report, String> {
    let script = match p.get("depth") {
        0 | 1 => None,
        depth => Some(PipelineScript::write(depth)?),
    };
    let server = Server::start(imp)?;
    let cpu_before = server.cpu_ns();
    // wrk is the only child waited for while it runs (the server is waited for after it), so
    // the growth of the waited children's CPU time is wrk's.
    let (wall_before, wrk_before) = (crate::sys::mono_ns(), crate::sys::cpu_s().1);
    let out = wrk(server.port, p.get("secs"), p.get("connections"), script.as_ref());
    let (wall, wrk_cpu) = (crate::sys::mono_ns() - wall_before, crate::sys::cpu_s().1 - wrk_before);
    let cpu = server.cpu_ns().saturating_sub(cpu_before);
    // Under pipelining wrk's percentiles are not sound (http_latency.rs says why): a second,
    // shorter load by this program's own client measures them, from the same CPU as wrk's.
    let pipelined_latency = match script {
        Some(_) if out.is_ok() => Some(pipelined_latency(server.port, p)),
        _ => None,
    };
    server.stop()?;
    let out = out?;
    let requests = requests(&out)?;
    let latency = match pipelined_latency {
        Some(measured) => measured?,
        None => wrk_percentiles(&out)?,
    };
    Ok(Report::new()
        .with("rps", figure(&out, "Requests/sec:")?)
        .with("cpu_us_per_req", cpu as f64 / 1e3 / requests)
        .with("wrk_us_per_req", wrk_cpu * 1e6 / requests)
        .with("wrk_cpu_pct", wrk_cpu * 1e9 / wall as f64 * 100.0)
        .with("p50_ms", latency.p50_ms)
        .with("p99_ms", latency.p99_ms))
}

/// wrk's p50 and p99; an error if its p99 is below its p50 (the slip it makes when pipelining,
/// http_latency.rs: such a figure would be a latency of nothing).
fn wrk_percentiles(out: &str) -> Result<Percentiles, String> {
    let (p50_ms, p99_ms) = (latency_ms(out, "50%")?, latency_ms(out, "99%")?);
    if p99_ms < p50_ms || p99_ms == 0.0 {
        return Err(format!("wrk printed a p99 of {p99_ms} ms with a p50 of {p50_ms} ms:\n{out}"));
    }
    Ok(Percentiles { p50_ms, p99_ms })
}

/// How long the pipelined rows' own latency load runs.
const LATENCY_LOAD: Duration = Duration::from_secs(1);

/// The latency percentiles of the pipelined rows: [`http_latency::pipelined`] on wrk's CPU.
fn pipelined_latency(port: u16, p: &Params) -> Result<Percentiles, String> {
    let cpu: usize = WRK_CPU.parse().map_err(|e| format!("WRK_CPU: {e}"))?;
    crate::sys::pin_to_cpu(cpu)
        .map_err(|e| format!("pinning the latency load to CPU {cpu}: {e}"))?;
    let (connections, depth) = (p.get("connections") as usize, p.get("depth") as usize);
    http_latency::pipelined(port, connections, depth, LATENCY_LOAD)
        .map_err(|e| format!("the pipelined latency load: {e}"))
}

/// How many requests wrk completed (`N requests in 3.00s, ...`).
fn requests(out: &str) -> Result<f64, String> {
    out.lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<f64>().ok())
        .filter(|&n| n > 0.0)
        .ok_or_else(|| format!("no completed requests in wrk's output:\n{out}"))
}

/// A server process and the port it announced.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(imp: Impl) -> Result<Server, String> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", SERVER_CPU]);
        match imp {
            Impl::Gevent => {
                let bench = Path::new(crate::BENCH_DIR);
                cmd.arg(bench.join(".venv/bin/python"))
                    .arg("-u")
                    .arg(bench.join("py/gevent_http.py"))
            }
            Impl::Raw | Impl::Greenhub | Impl::May => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                cmd.arg(exe).args(["serve-http", imp.id()])
            }
            other => return Err(format!("no HTTP server for {}", other.id())),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {} server ({cmd:?}): {e}", imp.id()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("the server's stdout is not piped")?;
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok());
        let mut server = Server { child, port: 0 };
        match (read, port) {
            (Ok(_), Some(port)) => {
                server.port = port;
                Ok(server)
            }
            _ => {
                let status = server.kill();
                Err(format!(
                    "the {} server did not announce its port ({status}): {line:?}",
                    imp.id()
                ))
            }
        }
    }

    /// CPU time the server's threads have used so far, in ns (`/proc/PID/task/*/schedstat`).
    fn cpu_ns(&self) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        let tasks = tasks.into_iter().flatten().flatten();
        let on_cpu = |task: std::fs::DirEntry| -> Option<u64> {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse().ok()
        };
        tasks.filter_map(on_cpu).sum()
    }

    fn kill(&mut self) -> String {
        let _ = self.child.kill();
        self.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string())
    }

    /// Kills the server; an error if it had died before.
    fn stop(mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("the server died under load: {status}")),
            _ => {
                self.kill();
                Ok(())
            }
        }
    }
}

/// wrk's pipelining script in a temporary folder, removed when dropped.
struct PipelineScript {
    dir: PathBuf,
}

impl PipelineScript {
    fn write(depth: u64) -> Result<PipelineScript, String> {
        let dir = std::env::temp_dir().join(format!("bench-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // wrk sends what `request` returns in one write and counts each response it parses.
        let lua = format!(
            "-- {depth} pipelined requests per write (generated by bench/src/http_load.rs)\n\
             init = function(args)\n  local r = {{}}\n  for i = 1, {depth} do r[i] = wrk.format() end\n  \
             req = table.concat(r)\nend\nrequest = function() return req end\n"
        );
        let script = PipelineScript { dir };
        std::fs::write(script.path(), lua).map_err(|e| format!("writing wrk's script: {e}"))?;
        Ok(script)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("pipeline.lua")
    }
}

impl Drop for PipelineScript {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `taskset -c 1 wrk -t1 -c<connections> -d<secs>s --latency [-s script]`; its output.
fn wrk(
    port: u16,
    secs: u64,
    connections: u64,
    script: Option<&PipelineScript>,
) -> Result<String, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", WRK_CPU, "wrk", "-t1", "--latency", "--timeout", "5s"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"));
    if let Some(script) = script {
        cmd.arg("-s").arg(script.path());
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wrk (bench/setup.sh installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk: {}: {}{text}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}"));
    }
    Ok(text)
}

/// The number after `label` on a line of wrk's output.
fn figure(out: &str, label: &str) -> Result<f64, String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {label} in wrk's output:\n{out}"))
}

/// A percentile of wrk's "Latency Distribution" (`     99%    1.23ms`), in ms.
fn latency_ms(out: &str, percentile: &str) -> Result<f64, String> {
    let value = out
        .lines()
        .skip_while(|l| !l.contains("Latency Distribution"))
        .find_map(|l| l.trim().strip_prefix(percentile))
        .map(str::trim)
        .ok_or_else(|| format!("no {percentile} latency in wrk's output:\n{out}"))?;
    duration_ms(value).ok_or_else(|| format!("cannot read wrk's latency {value:?}"))
}

/// wrk's durations: `312.00us`, `1.23ms`, `2.00s`, `1.00m`.
fn duration_ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let n: f64 = value[..split].parse().ok()?;
    let scale = match &value[split..] {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        _ => return None,
    };
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 100 connections\n  \
        Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.02ms  200.00us   3.00ms   90.00%\n  \
        Latency Distribution\n     50%  990.00us\n     75%    1.10ms\n     90%    1.20ms\n     99%    2.50ms\n  \
        98000 requests in 1.00s, 12.00MB read\nRequests/sec:  97999.12\nTransfer/sec:     12.00MB\n";

    #[test]
    fn reads_wrk_figures() {
        assert_eq!(figure(WRK, "Requests/sec:"), Ok(97999.12));
        assert!((latency_ms(WRK, "50%").unwrap() - 0.99).abs() < 1e-9);
        assert_eq!(requests(WRK), Ok(98000.0));
        assert_eq!(latency_ms(WRK, "99%"), Ok(2.5));
        assert_eq!(wrk_percentiles(WRK), Ok(Percentiles { p50_ms: 0.99, p99_ms: 2.5 }));
        let slipped = WRK.replace("99%    2.50ms", "99%    0.00us");
        assert!(wrk_percentiles(&slipped).is_err(), "a p99 of 0 is no latency");
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("1.5x"), None);
    }
}
