//! patched_clients: an unmodified sync HTTP client crate (`ureq`) made concurrent by the patch.
//!
//! Teaches: `greenhub::patch::install()` (cargo feature `patch`) turns the blocking libc calls
//! that std and any sync crate make (`connect`, `send`, `recv`, `poll`, `nanosleep`, ...) into
//! suspension points of the calling coroutine. Ten coroutines each make one plain
//! `ureq::get(..).call()`; all ten requests are in flight at once, on one thread, while a ticker
//! coroutine keeps running. The server (on a plain thread, outside any hub, so libc's own calls)
//! answers only once all ten requests have arrived and at least 200 ms have passed.
//!
//! It is built by the `tests-patch` crate, which enables greenhub's `patch` feature (the
//! `examples` crate does not, so the other examples link no hooks). Run it:
//!
//! ```text
//! cargo run --release --manifest-path tests-patch/Cargo.toml --example patched_clients
//! ```
//!
//! Expected output:
//!
//! ```text
//! patch installed: true
//! the server saw 10 requests in flight at once
//! request 0 -> 200 "/item/0"
//! request 1 -> 200 "/item/1"
//! request 2 -> 200 "/item/2"
//! request 3 -> 200 "/item/3"
//! request 4 -> 200 "/item/4"
//! request 5 -> 200 "/item/5"
//! request 6 -> 200 "/item/6"
//! request 7 -> 200 "/item/7"
//! request 8 -> 200 "/item/8"
//! request 9 -> 200 "/item/9"
//! the ticker ran while the requests waited: true
//! ```

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const REQUESTS: usize = 10;

fn main() {
    greenhub::patch::install();
    println!("patch installed: {}", greenhub::patch::is_installed());
    let (addr, arrived) = start_server();
    greenhub::run(|| {
        let ticks = Rc::new(Cell::new(0u32));
        let stop = Rc::new(Cell::new(false));
        // The ticker stops on a flag, not `cancel`: a cancel that lands inside a patched call
        // only cuts that call short (an unwind cannot cross std's C-ABI frames), and a loop that
        // suspends nowhere but in patched calls never reaches a greenhub suspension point to
        // unwind at.
        let ticker = {
            let (ticks, stop) = (ticks.clone(), stop.clone());
            greenhub::spawn(move || {
                while !stop.get() {
                    std::thread::sleep(Duration::from_millis(5)); // patched: a greenhub sleep
                    ticks.set(ticks.get() + 1);
                }
            })
        };
        let requests: Vec<_> = (0..REQUESTS)
            .map(|i| {
                greenhub::spawn(move || {
                    let response = ureq::get(&format!("http://{addr}/item/{i}")).call().unwrap();
                    (response.status(), response.into_string().unwrap())
                })
            })
            .collect();
        let replies: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
        let peak = *arrived.0.lock().unwrap();
        println!("the server saw {peak} requests in flight at once");
        for (i, (status, body)) in replies.iter().enumerate() {
            println!("request {i} -> {status} {body:?}");
        }
        stop.set(true);
        ticker.join().unwrap();
        println!("the ticker ran while the requests waited: {}", ticks.get() > 0);
    });
}

/// A tiny HTTP server on plain threads: each reply waits until every request has arrived (or
/// 5 s have passed) and at least 200 ms. Returns its address and the count of arrivals.
fn start_server() -> (SocketAddr, Arc<(Mutex<usize>, Condvar)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new((Mutex::new(0usize), Condvar::new()));
    let shared = arrived.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let arrived = shared.clone();
            std::thread::spawn(move || serve(conn, &arrived));
        }
    });
    (addr, arrived)
}

fn serve(mut conn: TcpStream, arrived: &(Mutex<usize>, Condvar)) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut header = String::new();
    while reader.read_line(&mut header).unwrap() > 0 && header != "\r\n" {
        header.clear();
    }
    let (count, all_in) = arrived;
    *count.lock().unwrap() += 1;
    all_in.notify_all();
    std::thread::sleep(Duration::from_millis(200));
    let guard = count.lock().unwrap();
    let _ = all_in.wait_timeout_while(guard, Duration::from_secs(5), |n| *n < REQUESTS).unwrap();
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{path}",
        path.len()
    );
    conn.write_all(reply.as_bytes()).unwrap();
}
