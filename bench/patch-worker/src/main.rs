//! `bench-patch-worker <benchmark> key=value ...`: one measurement of greenhub's patch, printed as
//! one JSON line, like every other worker of the benchmark (`bench/src/worker.rs`).
//!
//! - `patch_read n=N`: `N` one-byte `read`s of a ready, blocking pipe inside a hub after
//!   `greenhub::patch::install()` (the loop is `bench/src/ready_read.rs`, the raw column's too);
//!   `ns_per_read_outside` is the same loop in this patched process outside any hub.
//! - `patch_tcp clients=C n=N size=S`: the `tcp` row's echo (C clients, N sequential round trips
//!   of S bytes each, server and clients in one hub) written with `std::net` types only.

#[path = "../../src/ready_read.rs"]
mod ready_read;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    greenhub::patch::install();
    match run(&args) {
        Ok(figures) => {
            let fields: Vec<String> =
                figures.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            println!("{{{}}}", fields.join(", "));
        }
        Err(e) => {
            eprintln!("bench-patch-worker {}: {e}", args.join(" "));
            std::process::exit(1);
        }
    }
}

fn run(args: &[String]) -> Result<Vec<(&'static str, f64)>, String> {
    let param = |key: &str| -> Result<u64, String> {
        let prefix = format!("{key}=");
        let value = args.iter().find_map(|a| a.strip_prefix(&prefix));
        value.and_then(|v| v.parse().ok()).ok_or(format!("missing parameter {key}="))
    };
    let io = |e: std::io::Error| e.to_string();
    match args.first().map(String::as_str) {
        Some("patch_read") => {
            let n = param("n")?;
            let inside = greenhub::run(|| ready_read::ns_per_read(n)).map_err(io)?;
            let outside = ready_read::ns_per_read(n).map_err(io)?;
            Ok(vec![("ns_per_read", inside), ("ns_per_read_outside", outside)])
        }
        Some("patch_tcp") => {
            let (clients, n, size) = (param("clients")?, param("n")?, param("size")? as usize);
            let rate = greenhub::run(|| std_tcp_echo(clients, n, size)).map_err(io)?;
            Ok(vec![("round_trips_per_s", rate)])
        }
        other => Err(format!("no benchmark {other:?} (patch_read, patch_tcp)")),
    }
}

/// The `tcp` row with `std::net` types: every accept, read, write and connect goes through the
/// patch. Returns round trips per second.
fn std_tcp_echo(clients: u64, n: u64, size: usize) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Detached; cancelled when the root returns (its accept then fails with ECANCELED).
    drop(greenhub::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            drop(greenhub::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(k) = conn.read(&mut buf) {
                    if k == 0 || conn.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            }));
        }
    }));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            greenhub::spawn(move || -> std::io::Result<()> {
                let mut conn = TcpStream::connect(addr)?;
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
    for h in handles {
        h.join().expect("a client coroutine panicked")?;
    }
    Ok((clients * n) as f64 / t0.elapsed().as_secs_f64())
}
