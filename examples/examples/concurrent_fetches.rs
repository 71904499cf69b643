//! concurrent_fetches: gevent's classic "download many URLs at once, but at most N at a time",
//! with a `sync::Pool` bounding the concurrency.
//!
//! Teaches: `greenhub::sync::Pool::new(3).map(items, f)` runs `f` on every item in coroutines of
//! its own, at most 3 at once, and gives the results in input order (gevent's `Pool.map`);
//! `imap_unordered` gives them as they complete. Each fetch is plain blocking-style code
//! (`TcpStream::connect`, `write_all`, `read_to_end`) that suspends only its own coroutine. The
//! HTTP server is in the example too (only loopback exists here): one coroutine per connection,
//! each answering after 50 ms, and counting how many requests it serves at once. Nine slow
//! fetches three at a time take three rounds of 50 ms, not nine.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example concurrent_fetches
//! ```
//!
//! Expected output (the server listens on a port the OS picks):
//!
//! ```text
//! server listening on 127.0.0.1:{port}
//! GET /item/1 -> 200, 15 bytes: "this is item 1\n"
//! GET /item/2 -> 200, 15 bytes: "this is item 2\n"
//! GET /item/3 -> 200, 15 bytes: "this is item 3\n"
//! GET /item/4 -> 200, 15 bytes: "this is item 4\n"
//! GET /item/5 -> 200, 15 bytes: "this is item 5\n"
//! GET /item/6 -> 200, 15 bytes: "this is item 6\n"
//! GET /item/7 -> 200, 15 bytes: "this is item 7\n"
//! GET /item/8 -> 200, 15 bytes: "this is item 8\n"
//! GET /item/9 -> 200, 15 bytes: "this is item 9\n"
//! GET /missing -> 404, 10 bytes: "not found\n"
//! map: 10 fetches, results in input order, never more than 3 in flight at the server: true
//! imap_unordered: the 3 fast ones, in completion order: /fast/1 /fast/2 /fast/3
//! ```

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{TcpListener, TcpStream};
use greenhub::sync::{Event, Pool};

/// How many fetches run at once.
const CONCURRENCY: usize = 3;
/// How long the server takes to answer a request under /item/.
const SLOW: Duration = Duration::from_millis(50);

fn main() -> io::Result<()> {
    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        println!("server listening on {addr}");
        let in_flight = Rc::new(Gauge::default());
        // fetched[n - 1] is set once the client has /fast/n; the server answers /fast/n after
        // /fast/(n - 1) was fetched, so the completion order is fixed whatever the machine's load.
        let fetched: Rc<[Event; 3]> = Rc::new(Default::default());
        let server = greenhub::spawn({
            let (in_flight, fetched) = (in_flight.clone(), fetched.clone());
            move || serve(listener, in_flight, fetched)
        });

        let pool = Pool::new(CONCURRENCY);
        let mut paths: Vec<String> = (1..=9).map(|i| format!("/item/{i}")).collect();
        paths.push("/missing".to_string());
        let results = pool.map(paths.clone(), move |path: String| fetch(addr, &path));
        let results = results.expect("no fetch panicked");
        for (path, result) in paths.iter().zip(&results) {
            let (status, body) =
                result.as_ref().map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
            println!("GET {path} -> {status}, {} bytes: {body:?}", body.len());
        }
        let bounded = in_flight.max.get() <= CONCURRENCY;
        println!(
            "map: {} fetches, results in input order, never more than {CONCURRENCY} in flight at \
             the server: {bounded}",
            results.len(),
        );

        // Asked for in the order 3, 2, 1; the server answers them in the order 1, 2, 3.
        let fast = [3, 2, 1];
        let fetch_fast = move |n: usize| {
            let path = format!("/fast/{n}");
            let got = fetch(addr, &path).map(|_| path);
            fetched[n - 1].set();
            got
        };
        let done: Vec<String> = pool
            .imap_unordered(fast, fetch_fast)
            .map(|r| r.expect("no fetch panicked").expect("fetched"))
            .collect();
        println!(
            "imap_unordered: the {} fast ones, in completion order: {}",
            done.len(),
            done.join(" ")
        );
        server.cancel();
        Ok(())
    })
}

/// GETs `path` from the server at `addr`: its status code and body.
fn fetch(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?; // HTTP/1.0: the server closes after the body
    let (head, body) = response.split_once("\r\n\r\n").ok_or(io::ErrorKind::InvalidData)?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    Ok((status.ok_or(io::ErrorKind::InvalidData)?, body.to_string()))
}

/// How many requests the server is answering now, and the most at once.
#[derive(Default)]
struct Gauge {
    now: Cell<usize>,
    max: Cell<usize>,
}

/// The HTTP server: a coroutine per connection (gevent's StreamServer in miniature).
fn serve(listener: TcpListener, in_flight: Rc<Gauge>, fetched: Rc<[Event; 3]>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        let (in_flight, fetched) = (in_flight.clone(), fetched.clone());
        greenhub::spawn(move || answer(stream, &in_flight, &fetched));
    }
}

/// Reads one request and answers it: after 50 ms for /item/, once /fast/(n - 1) was fetched for
/// /fast/n.
fn answer(mut stream: TcpStream, in_flight: &Gauge, fetched: &[Event; 3]) -> io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split(' ').nth(1).unwrap_or("/");
    in_flight.now.set(in_flight.now.get() + 1);
    in_flight.max.set(in_flight.max.get().max(in_flight.now.get()));
    let (status, body) = if let Some(n) = path.strip_prefix("/item/") {
        greenhub::sleep(SLOW);
        ("200 OK", format!("this is item {n}\n"))
    } else if let Some(n) = path.strip_prefix("/fast/").and_then(|n| n.parse::<usize>().ok()) {
        if let Some(before) = n.checked_sub(2).and_then(|i| fetched.get(i)) {
            before.wait();
        }
        ("200 OK", format!("fast {n}\n"))
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    in_flight.now.set(in_flight.now.get() - 1);
    let head = format!("HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}
