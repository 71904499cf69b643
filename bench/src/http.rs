//! The HTTP row: `examples/prefork_server` (built from the root workspace) under `wrk`, as a
//! single process (`--single`) and pre-forked with 1 and 2 workers, one after the other in one
//! measurement. `wrk` is a Debian package; `setup.sh` installs it when it is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::worker::Report;

/// Runs the three servers under `wrk` for `secs` seconds each with `connections` connections.
pub fn run(secs: u64, connections: u64) -> Result<Report, String> {
    let server = build_server()?;
    let mut report = Report::new();
    let modes: [(&'static str, &[&str]); 3] = [
        ("rps_single", &["--single"]),
        ("rps_prefork1", &["--workers", "1"]),
        ("rps_prefork2", &["--workers", "2"]),
    ];
    for (key, args) in modes {
        report = report.with(key, requests_per_s(&server, args, secs, connections)?);
    }
    Ok(report)
}

/// Builds the example in release mode (a no-op when it is up to date) and returns its path.
fn build_server() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "examples", "--example", "prefork_server"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building examples/prefork_server failed: {status}"));
    }
    Ok(root.join("target/release/examples/prefork_server"))
}

/// Starts the server with `args`, runs `wrk` against it, stops it (SIGTERM: it must exit 0).
fn requests_per_s(
    server: &PathBuf,
    args: &[&str],
    secs: u64,
    connections: u64,
) -> Result<f64, String> {
    let mut child = Command::new(server)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    // The server's stdout stays open (held by `out`) until it has exited: it prints more lines.
    let mut out = BufReader::new(child.stdout.take().ok_or("the server's stdout is not piped")?);
    let outcome = port_of(&mut out).and_then(|port| wrk(port, secs, connections));
    // SAFETY: kill with our child's pid (not reaped yet) and a signal number touches no memory.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().map_err(|e| e.to_string())?;
    drop(out);
    let rps = outcome?;
    if !status.success() {
        return Err(format!("the server {args:?} ended with {status} after SIGTERM"));
    }
    Ok(rps)
}

/// The port the server prints on its first line (`port P`).
fn port_of(out: &mut impl BufRead) -> Result<u16, String> {
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    line.trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("the server's first line is not its port: {line:?}"))
}

/// `wrk -t1 -c<connections> -d<secs>s`; its `Requests/sec:` figure.
fn wrk(port: u16, secs: u64, connections: u64) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .map_err(|e| format!("cannot run wrk (bench/setup.sh installs it): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk's output:\n{text}"))
}
