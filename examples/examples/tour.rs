//! A tour of greenhub in a few seconds: thousands of sleeping coroutines, a timeout, a TCP
//! echo server with many clients, and child processes (each with its own hub) exchanging
//! messages over pipes. It prints what happened and the rates it saw.
//!
//! Run: `cargo run --release -p examples --example tour`
//!
//! Expected output (times and rates depend on the machine and its load, so they are `{n}`;
//! `{pid}` is a child's pid):
//! ```text
//! coroutines: 10000 slept 100..200 ms at once, all done in {n} s
//! timeout:    a 10 s sleep under a 50 ms timeout gave Err(Elapsed) after {n} s
//! tcp echo:   50 clients x 200 round trips = 10000 in {n} s ({n} round trips/s)
//! processes:  started 2 children (pids {pid}, {pid}), each with its own hub
//! pipes:      1-byte messages from a child: 1000000 in {n} s ({n} M msgs/s)
//! pipes:      64,000-byte messages from a child: {n} GB in {n} s ({n} GB/s)
//! pipes:      duplex ping-pong with a child: 20000 round trips in {n} s ({n}/s)
//! processes:  both children exited with 0
//! ```
//!
//! One run on the 2-vCPU machine of record, shared with other work at the time:
//! ```text
//! coroutines: 10000 slept 100..200 ms at once, all done in 0.37 s
//! timeout:    a 10 s sleep under a 50 ms timeout gave Err(Elapsed) after 0.05 s
//! tcp echo:   50 clients x 200 round trips = 10000 in 0.26 s (38842 round trips/s)
//! processes:  started 2 children (pids 20168, 20170), each with its own hub
//! pipes:      1-byte messages from a child: 1000000 in 1.66 s (0.6 M msgs/s)
//! pipes:      64,000-byte messages from a child: 1.7 GB in 1.0 s (1.7 GB/s)
//! pipes:      duplex ping-pong with a child: 20000 round trips in 0.28 s (72067/s)
//! processes:  both children exited with 0
//! ```

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use greenhub::net::{TcpListener, TcpStream};
use greenhub_ipc::{Error, duplex, raw_pipe, start_process};

const SLEEPERS: u64 = 10_000;
const CLIENTS: usize = 50;
const ROUND_TRIPS: usize = 200;
const SMALL_MESSAGES: u64 = 1_000_000;
const BIG_MESSAGE: usize = 64_000;
const BIG_FOR: Duration = Duration::from_secs(1);
const PINGS: u64 = 20_000;

fn main() -> Result<(), Error> {
    greenhub::run(|| {
        coroutines();
        timeout();
        tcp_echo()?;
        processes_and_pipes()
    })
}

/// Many coroutines sleeping at once: the wall time is the longest sleep, not the sum.
fn coroutines() {
    let start = Instant::now();
    let sleepers: Vec<_> = (0..SLEEPERS)
        .map(|i| greenhub::spawn(move || greenhub::sleep(Duration::from_millis(100 + i % 100))))
        .collect();
    sleepers.into_iter().for_each(|s| s.join().unwrap());
    let secs = start.elapsed().as_secs_f64();
    println!("coroutines: {SLEEPERS} slept 100..200 ms at once, all done in {secs:.2} s");
}

/// gevent's Timeout: the sleep is unwound at the deadline.
fn timeout() {
    let start = Instant::now();
    let outcome = greenhub::timeout(Duration::from_millis(50), || {
        greenhub::sleep(Duration::from_secs(10));
    });
    let secs = start.elapsed().as_secs_f64();
    println!("timeout:    a 10 s sleep under a 50 ms timeout gave {outcome:?} after {secs:.2} s");
}

/// An echo server and its clients, all coroutines of this one hub.
fn tcp_echo() -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = greenhub::spawn(move || {
        loop {
            let Ok((conn, _)) = listener.accept() else { return };
            greenhub::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = (&conn).read(&mut buf) {
                    if (&conn).write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            greenhub::spawn(move || -> std::io::Result<()> {
                let mut conn = TcpStream::connect(addr)?;
                conn.set_nodelay(true)?;
                let mut echo = [0u8; 8];
                for i in 0..ROUND_TRIPS as u64 {
                    conn.write_all(&i.to_le_bytes())?;
                    conn.read_exact(&mut echo)?;
                    assert_eq!(u64::from_le_bytes(echo), i);
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client coroutine")?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = CLIENTS * ROUND_TRIPS;
    let rate = total as f64 / secs;
    println!(
        "tcp echo:   {CLIENTS} clients x {ROUND_TRIPS} round trips = {total} in {secs:.2} s \
         ({rate:.0} round trips/s)"
    );
    server.cancel();
    Ok(())
}

/// Two children, each with its own fresh hub: one streams messages to us, one plays ping-pong.
fn processes_and_pipes() -> Result<(), Error> {
    let (small_in, small_out) = raw_pipe()?;
    let (big_in, big_out) = raw_pipe()?;
    let streamer = start_process((small_out, big_out), |(small_out, big_out)| {
        let one = vec![7u8];
        for _ in 0..SMALL_MESSAGES {
            small_out.put(&one)?;
        }
        let big = vec![1u8; BIG_MESSAGE];
        let start = Instant::now();
        while start.elapsed() < BIG_FOR {
            big_out.put(&big)?;
        }
        big_out.put(&Vec::new()) // an empty message says "done"
    })?;
    let (ours, theirs) = duplex::<u64, u64>()?;
    let ponger = start_process(theirs, |pipe| {
        while let Ok(n) = pipe.get() {
            pipe.put(&(n + 1))?;
        }
        Ok::<(), Error>(())
    })?;
    println!(
        "processes:  started 2 children (pids {}, {}), each with its own hub",
        streamer.pid(),
        ponger.pid()
    );

    let start = Instant::now();
    for _ in 0..SMALL_MESSAGES {
        small_in.get()?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = SMALL_MESSAGES as f64 / secs / 1e6;
    println!(
        "pipes:      1-byte messages from a child: {SMALL_MESSAGES} in {secs:.2} s ({rate:.1} M msgs/s)"
    );

    let start = Instant::now();
    let mut bytes = 0;
    loop {
        let message = big_in.get()?;
        if message.is_empty() {
            break;
        }
        bytes += message.len();
    }
    let secs = start.elapsed().as_secs_f64();
    let (gb, rate) = (bytes as f64 / 1e9, bytes as f64 / secs / 1e9);
    println!(
        "pipes:      64,000-byte messages from a child: {gb:.1} GB in {secs:.1} s ({rate:.1} GB/s)"
    );

    let start = Instant::now();
    for i in 0..PINGS {
        ours.put(&i)?;
        assert_eq!(ours.get()?, i + 1);
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = PINGS as f64 / secs;
    println!(
        "pipes:      duplex ping-pong with a child: {PINGS} round trips in {secs:.2} s ({rate:.0}/s)"
    );
    ours.close()?; // the ponger's get() sees Eof and it returns

    let (a, b) = (streamer.join()?, ponger.join()?);
    if a.success() && b.success() {
        println!("processes:  both children exited with 0");
    } else {
        println!("processes:  exit statuses {a} and {b}");
    }
    Ok(())
}
