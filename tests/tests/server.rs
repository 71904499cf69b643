//! `net::Server` (gevent's StreamServer): one handler coroutine per connection, bounded
//! concurrency, EMFILE backoff (for real, under a lowered RLIMIT_NOFILE in a child process),
//! graceful stop with a grace period, and fatal accept errors.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use greenhub::net::{Server, StopHandle, TcpListener, TcpStream};
use greenhub::sync::Event;
use greenhub::{spawn, yield_now};
use greenhub_tests::{DropFlag, open_fds, process_lock, rerun_test_in_child};

const LONG: Duration = Duration::from_secs(3600);

fn settle(n: usize) {
    for _ in 0..n {
        yield_now();
    }
}

/// Runs `body` in a fresh hub holding the process lock (every test here opens fds), failing
/// instead of hanging if it is still suspended after 30 s.
fn hub_test<T>(body: impl FnOnce() -> T) -> T {
    let _serial = process_lock();
    greenhub::run(|| greenhub::timeout(Duration::from_secs(30), body).expect("the test hung"))
}

/// Echoes one byte.
fn echo_one(mut conn: TcpStream) {
    let mut b = [0u8; 1];
    if conn.read_exact(&mut b).is_ok() {
        let _ = conn.write_all(&b);
    }
}

/// Connects, sends one byte, returns what came back.
fn ping(addr: SocketAddr, byte: u8) -> io::Result<u8> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(&[byte])?;
    let mut b = [0u8; 1];
    conn.read_exact(&mut b)?;
    Ok(b[0])
}

fn start(
    server: Server,
    handler: impl Fn(TcpStream, SocketAddr) + 'static,
) -> greenhub::JoinHandle<io::Result<()>> {
    spawn(move || server.serve(handler))
}

#[test]
fn serves_each_connection_in_its_own_coroutine_until_stopped() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let serving = start(server, |conn, _| echo_one(conn));
        let clients: Vec<_> = (0..10u8).map(|i| spawn(move || ping(addr, i))).collect();
        for (i, c) in clients.into_iter().enumerate() {
            assert_eq!(c.join().unwrap().unwrap(), i as u8);
        }
        assert!(!stop.is_stopped());
        stop.stop();
        assert!(stop.is_stopped());
        serving.join().unwrap().unwrap();
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused, "the listener is closed");
    });
}

#[test]
fn at_most_max_connections_handlers_run_and_the_rest_wait_unaccepted() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap().max_connections(2);
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let gate = Rc::new(Event::new());
        let (running, peak, accepted) =
            (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let serving = {
            let (gate, running, peak, accepted) =
                (gate.clone(), running.clone(), peak.clone(), accepted.clone());
            start(server, move |conn, _| {
                accepted.set(accepted.get() + 1);
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                gate.wait();
                echo_one(conn);
                running.set(running.get() - 1);
            })
        };
        let clients: Vec<_> = (0..5u8).map(|i| spawn(move || ping(addr, i))).collect();
        settle(20);
        assert_eq!(accepted.get(), 2, "no connection is accepted while two handlers run");
        gate.set();
        for (i, c) in clients.into_iter().enumerate() {
            assert_eq!(c.join().unwrap().unwrap(), i as u8);
        }
        assert_eq!((peak.get(), accepted.get()), (2, 5));
        stop.stop();
        serving.join().unwrap().unwrap();
    });
}

#[test]
#[should_panic(expected = "at least one connection")]
fn max_connections_zero_panics_naming_the_rule() {
    let _serial = process_lock();
    let _ = greenhub::run(|| Server::bind("127.0.0.1:0").unwrap().max_connections(0));
}

#[test]
fn stop_lets_running_handlers_finish_within_the_grace_period() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap().grace_period(LONG);
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let (in_handler, release) = (Rc::new(Event::new()), Rc::new(Event::new()));
        let finished = Rc::new(Cell::new(false));
        let serving = {
            let (in_handler, release, finished) =
                (in_handler.clone(), release.clone(), finished.clone());
            start(server, move |conn, _| {
                in_handler.set();
                release.wait();
                echo_one(conn);
                finished.set(true);
            })
        };
        let client = spawn(move || ping(addr, 9));
        in_handler.wait();
        stop.stop();
        settle(5);
        assert!(!serving.is_finished(), "serve waits for the running handler");
        assert_eq!(TcpStream::connect(addr).unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
        release.set();
        serving.join().unwrap().unwrap();
        assert!(finished.get(), "the handler finished normally");
        assert_eq!(client.join().unwrap().unwrap(), 9);
    });
}

#[test]
fn handlers_still_running_after_the_grace_period_are_cancelled() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap().grace_period(Duration::from_millis(5));
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let in_handler = Rc::new(Event::new());
        let (guard, unwound) = DropFlag::new();
        let guard = Rc::new(Cell::new(Some(guard)));
        let serving = {
            let in_handler = in_handler.clone();
            start(server, move |_conn, _| {
                let _guard = guard.take();
                in_handler.set();
                greenhub::sleep(LONG);
            })
        };
        let _client = TcpStream::connect(addr).unwrap();
        in_handler.wait();
        stop.stop();
        serving.join().unwrap().unwrap();
        assert!(unwound.get(), "the handler was cancelled and unwound before serve returned");
    });
}

#[test]
fn stopped_before_serving_returns_at_once() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let stop: StopHandle = server.stop_handle();
        stop.stop();
        server.serve(|_, _| unreachable!("no connection")).unwrap();
    });
}

#[test]
fn cancelling_the_serving_coroutine_cancels_the_handlers() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let in_handler = Rc::new(Event::new());
        let (guard, unwound) = DropFlag::new();
        let guard = Rc::new(Cell::new(Some(guard)));
        let serving = {
            let in_handler = in_handler.clone();
            start(server, move |_conn, _| {
                let _guard = guard.take();
                in_handler.set();
                greenhub::sleep(LONG);
            })
        };
        let _client = TcpStream::connect(addr).unwrap();
        in_handler.wait();
        serving.cancel();
        assert!(serving.join().unwrap_err().is_cancelled());
        settle(3);
        assert!(unwound.get());
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    });
}

#[test]
fn a_panicking_handler_does_not_stop_the_server() {
    hub_test(|| {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let serving = start(server, |conn, _| {
            let mut b = [0u8; 1];
            (&conn).read_exact(&mut b).unwrap();
            if b[0] == 0 {
                panic!("handler failed on purpose");
            }
            (&conn).write_all(&b).unwrap();
        });
        assert!(ping(addr, 0).is_err(), "the failed handler closed its connection");
        assert_eq!(ping(addr, 1).unwrap(), 1);
        stop.stop();
        serving.join().unwrap().unwrap();
    });
}

#[test]
fn a_broken_listener_is_a_fatal_error_returned_by_serve() {
    hub_test(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Put a non-socket under the listener's fd number: accept fails with ENOTSOCK.
        let devnull = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: both fds are open and owned here; dup2 replaces the listener's socket with
        // another open file, which the listener then owns and closes as before.
        assert!(unsafe { libc::dup2(devnull.as_raw_fd(), listener.as_raw_fd()) } >= 0);
        let server = Server::from_listener(listener);
        let stop = server.stop_handle();
        let err = server.serve(|_, _| unreachable!("no connection")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
        assert!(stop.is_stopped());
    });
}

// ---------------------------------------------------------------------------------------------
// EMFILE, for real: in a child process whose RLIMIT_NOFILE is lowered

const EMFILE_CHILD: &str = "GREENHUB_TEST_SERVER_EMFILE_CHILD";

#[test]
fn at_the_fd_limit_the_server_backs_off_the_hub_runs_on_and_serving_resumes() {
    if std::env::var_os(EMFILE_CHILD).is_some() {
        return emfile_child();
    }
    let _serial = process_lock();
    let out = rerun_test_in_child(
        "at_the_fd_limit_the_server_backs_off_the_hub_runs_on_and_serving_resumes",
        EMFILE_CHILD,
        "1",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let phase_ms: f64 = stdout
        .lines()
        .find_map(|l| l.split("emfile phase ms: ").nth(1)) // libtest's "test ... " may precede it
        .expect("the child reports its EMFILE phase")
        .trim()
        .parse()
        .unwrap();
    let failures = stderr
        .lines()
        .filter(|l| l.contains("accept failed") && l.contains("Too many open files"))
        .count();
    assert!(failures >= 1, "the server met EMFILE and said so:\n{stderr}");
    // Delays 10, 20, 40, ... ms up to 1 s: over `phase_ms`, a few attempts, never thousands.
    let bound = 3.0 + (1.0 + phase_ms / 10.0).log2() + phase_ms / 1000.0;
    assert!(
        (failures as f64) <= bound,
        "{failures} failed accepts in {phase_ms} ms: the server spins (bound {bound:.1})\n{stderr}"
    );
}

fn emfile_child() {
    greenhub::run(|| {
        let server = Server::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let stop = server.stop_handle();
        let serving = start(server, |conn, _| echo_one(conn));
        // Lower the soft limit to a little above what is open, and connect the clients first
        // (their sockets count too): their connections wait in the backlog.
        let limit = (open_fds() + 8) as libc::rlim_t;
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit we own.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
            rl.rlim_cur = limit;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        }
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Fill every remaining fd: accept now fails with EMFILE.
        let mut ballast = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => ballast.push(f),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("unexpected error filling fds: {e}"),
            }
        }
        let started = Instant::now();
        // The hub keeps running other coroutines while the server is stuck.
        let ticks = spawn(|| {
            for _ in 0..30 {
                greenhub::sleep(Duration::from_millis(1));
            }
            30
        });
        assert_eq!(ticks.join().unwrap(), 30);
        let phase = started.elapsed();
        drop(ballast); // fds free up: the server resumes
        for (i, mut c) in clients.into_iter().enumerate() {
            c.write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], i as u8);
        }
        println!("emfile phase ms: {}", phase.as_secs_f64() * 1000.0);
        stop.stop();
        serving.join().unwrap().unwrap();
    });
}
