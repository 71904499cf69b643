//! Shared helpers for the patch's integration tests: a server on a plain thread that answers
//! only once every expected request is in flight (so a test can prove that clients overlapped
//! without timing assertions), and the peak of concurrent requests it saw; a [`Ticker`]
//! coroutine and [`suspends_only_the_caller`], which show that a patched call suspends only its
//! own coroutine; and the kernel's view of an fd's flags, past the patch's `fcntl` hook.
//!
//! Every test binary of this crate links greenhub with the `patch` feature and calls
//! [`greenhub::patch::install`] first. The server threads run outside any hub, so their
//! blocking calls are libc's own.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Long enough to never matter when the code under test is right: a server gives up holding
/// its replies after this, so a broken patch fails an assertion instead of hanging the test.
pub const SAFETY_NET: Duration = Duration::from_secs(20);

/// What the server has seen.
#[derive(Debug)]
pub struct Stats {
    /// When the server started: past `SAFETY_NET` from then, nothing is held any more.
    started: Instant,
    in_flight: Mutex<usize>,
    changed: Condvar,
    peak: AtomicUsize,
    served: AtomicUsize,
    /// Set by the test (a ticker coroutine) to let the held replies go.
    release: AtomicBool,
}

impl Stats {
    /// The most requests in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replies sent.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Lets the held replies go (once `expected` are in flight and the delay has passed).
    pub fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn arrive(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        self.peak.fetch_max(*n, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Blocks (a plain thread) until `expected` requests have been in flight at once and the
    /// test released them, or the safety net (counted from the server's start) passed.
    fn hold(&self, expected: usize, delay: Duration) {
        std::thread::sleep(delay);
        let mut n = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        while (self.peak() < expected || !self.release.load(Ordering::SeqCst))
            && self.started.elapsed() < SAFETY_NET
        {
            n = self
                .changed
                .wait_timeout(n, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *n -= 1;
        self.served.fetch_add(1, Ordering::SeqCst);
    }
}

/// How the slow server speaks.
#[derive(Clone, Copy, Debug)]
pub enum Protocol {
    /// One line in, the same line back.
    Line,
    /// An HTTP/1.1 request in, `200 OK` with the request path as body back (then close).
    Http,
}

/// Starts a server on a plain thread (one thread per connection) that answers each request no
/// sooner than `delay` after it arrived, and only once `expected` requests have been in flight at
/// once and [`Stats::release`] was called (or [`SAFETY_NET`] passed).
pub fn slow_server(
    protocol: Protocol,
    expected: usize,
    delay: Duration,
) -> (SocketAddr, Arc<Stats>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test server");
    let addr = listener.local_addr().expect("its address");
    let stats = Arc::new(Stats {
        started: Instant::now(),
        in_flight: Mutex::new(0),
        changed: Condvar::new(),
        peak: AtomicUsize::new(0),
        served: AtomicUsize::new(0),
        release: AtomicBool::new(false),
    });
    let shared = stats.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let stats = shared.clone();
            std::thread::spawn(move || serve(conn, protocol, &stats, expected, delay));
        }
    });
    (addr, stats)
}

fn serve(conn: TcpStream, protocol: Protocol, stats: &Stats, expected: usize, delay: Duration) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    if let Protocol::Http = protocol {
        let mut header = String::new();
        while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
            header.clear();
        }
    }
    stats.arrive();
    stats.hold(expected, delay);
    let mut conn = conn;
    let reply = match protocol {
        Protocol::Line => first,
        Protocol::Http => {
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{path}",
                path.len()
            )
        }
    };
    let _ = conn.write_all(reply.as_bytes());
}

/// Spawns a ticker coroutine: every 10 ms until `expected` replies were served, it checks the
/// server; each tick that finds all `expected` requests in flight is counted and releases the
/// held replies. Its value is that count: at least 1 when the hub kept running while every
/// request waited.
pub fn spawn_ticker(stats: Arc<Stats>, expected: usize) -> greenhub::JoinHandle<u32> {
    greenhub::spawn(move || {
        let mut ticks_while_all_waited = 0;
        while stats.served() < expected && stats.started.elapsed() < SAFETY_NET {
            greenhub::sleep(Duration::from_millis(10));
            if stats.in_flight() == expected {
                ticks_while_all_waited += 1;
                stats.release();
            }
        }
        ticks_while_all_waited
    })
}

/// A coroutine that counts how often it ran (sleeping 1 ms in between) until stopped: a test
/// reads the count to see that the hub kept running while another coroutine waited.
#[derive(Debug)]
pub struct Ticker {
    count: Rc<Cell<u32>>,
    stop: Rc<Cell<bool>>,
    handle: greenhub::JoinHandle<()>,
}

impl Ticker {
    /// Spawns the counting coroutine (it first runs at the hub's next turn).
    pub fn start() -> Ticker {
        let (count, stop) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
        let (c, s) = (count.clone(), stop.clone());
        let handle = greenhub::spawn(move || {
            while !s.get() {
                c.set(c.get() + 1);
                greenhub::sleep(Duration::from_millis(1));
            }
        });
        Ticker { count, stop, handle }
    }

    /// How often it ran so far.
    pub fn ticks(&self) -> u32 {
        self.count.get()
    }

    /// Stops it and returns how often it ran.
    pub fn stop(self) -> u32 {
        self.stop.set(true);
        self.handle.join().expect("the ticker panicked");
        self.count.get()
    }
}

/// How long [`suspends_only_the_caller`]'s plain thread waits before it unblocks the call.
pub const UNBLOCK_AFTER: Duration = Duration::from_millis(40);

/// Makes `call` (a patched call that has to wait) in this coroutine while a plain thread runs
/// `unblock` [`UNBLOCK_AFTER`] from now, and checks that the call suspended only this coroutine:
/// it returned no sooner than it could (it waited), and a [`Ticker`] ran meanwhile. Returns the
/// call's result. If the call blocked the hub's thread instead, the plain thread still unblocks
/// it, and the check fails rather than hangs.
pub fn suspends_only_the_caller<T>(
    call: impl FnOnce() -> T,
    unblock: impl FnOnce() + Send + 'static,
) -> T {
    let ticker = Ticker::start();
    let start = Instant::now();
    let unblocker = std::thread::spawn(move || {
        std::thread::sleep(UNBLOCK_AFTER);
        unblock();
    });
    let value = call();
    let waited = start.elapsed();
    unblocker.join().expect("the unblocking thread panicked");
    let ticks = ticker.stop();
    assert!(
        waited >= UNBLOCK_AFTER / 2,
        "the call returned after {waited:?}, before it was unblocked"
    );
    assert!(ticks > 0, "no other coroutine ran while the call waited ({waited:?})");
    value
}

/// The flags of `fd` as the kernel holds them, past the patch's `fcntl` hook (a raw syscall).
pub fn kernel_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL has no memory preconditions.
    unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) as i32 }
}

/// The last OS error of this thread (errno), as a number.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
