//! The pre-fork server (`examples/examples/prefork_server.rs`, built here as the helper binary
//! `prefork_server`), driven with real connections: every connection is answered and both
//! workers take some, a killed worker is replaced while connections keep being answered, and
//! SIGTERM finishes a request in progress, closes idle connections, stops accepting and exits 0,
//! and a connection still open when the grace period ends is cut.
//!
//! No sleeps: the test reads the server's port from its first line, and waits for the events it
//! checks by making requests (a request answered by a new pid is the replacement).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::TcpStream;
use greenhub_ipc::{Command, Process};
use greenhub_tests::{process_lock, zombie_children};

/// A deadline no passing test comes near.
const LONG: Duration = Duration::from_secs(60);

/// Starts `prefork_server serve` with `args`; the process, its address and its header line.
fn start_server(args: &[&str]) -> (Process, SocketAddr, String) {
    start_server_with(args, Stdio::inherit())
}

/// [`start_server`], with the server's stderr as `stderr` says.
fn start_server_with(args: &[&str], stderr: Stdio) -> (Process, SocketAddr, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_prefork_server"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.take_stdout().unwrap());
    let (mut port, mut header) = (String::new(), String::new());
    out.read_line(&mut port).unwrap();
    out.read_line(&mut header).unwrap();
    let port: u16 = port.trim().strip_prefix("port ").expect("a port line").parse().unwrap();
    (server, SocketAddr::from(([127, 0, 0, 1], port)), header.trim().to_string())
}

/// Reads one response (head, then its `Content-Length` body) and returns the head and the
/// pid in its `X-Worker` header.
fn read_response(mut stream: &TcpStream) -> (String, u32) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the connection closed mid-response");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{head}"))
    };
    let mut body = vec![0; header("Content-Length: ").trim().parse().unwrap()];
    stream.read_exact(&mut body).unwrap();
    assert_eq!(body, b"Hello, World!");
    let pid = header("X-Worker: ").trim().parse().unwrap();
    (head, pid)
}

/// One connection, one request; the pid of the worker that answered.
fn one_request(addr: SocketAddr) -> u32 {
    let stream = TcpStream::connect(addr).unwrap();
    (&stream).write_all(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let (head, pid) = read_response(&stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    pid
}

/// `n` connections, 50 at a time; the pid that answered each.
fn many_requests(addr: SocketAddr, n: usize) -> Vec<u32> {
    let left = Rc::new(std::cell::Cell::new(n));
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let left = Rc::clone(&left);
            greenhub::spawn(move || {
                let mut pids = Vec::new();
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    pids.push(one_request(addr));
                }
                pids
            })
        })
        .collect();
    clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
}

#[test]
fn every_connection_is_answered_a_killed_worker_is_replaced_and_sigterm_exits_0() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let (server, addr, header) = start_server(&["--workers", "2", "--grace-ms", "30000"]);
            assert_eq!(header, "server: 2 workers, one SO_REUSEPORT socket each");

            let pids = many_requests(addr, 400);
            assert_eq!(pids.len(), 400, "every connection is answered");
            let workers: BTreeSet<u32> = pids.iter().copied().collect();
            assert_eq!(workers.len(), 2, "both workers take connections: {workers:?}");

            let victim = *workers.first().unwrap();
            // SAFETY: kill with a pid and a signal number touches no memory of ours.
            assert_eq!(unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) }, 0);
            // Connections hashed to the dead worker's socket wait for its replacement.
            let replacement = (0..2000)
                .map(|_| one_request(addr))
                .find(|pid| !workers.contains(pid))
                .expect("no replacement worker ever answered");
            assert_ne!(replacement, victim);

            // SIGTERM: a request in progress is finished, an idle connection is closed.
            let busy = TcpStream::connect(addr).unwrap();
            let idle = TcpStream::connect(addr).unwrap();
            for stream in [&busy, &idle] {
                let mut s = stream;
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                read_response(stream); // a worker has accepted it and served one request
            }
            (&busy).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap(); // half a request
            server.terminate().unwrap();
            (&busy).write_all(b"\r\n").unwrap();
            let (head, _) = read_response(&busy);
            assert!(head.contains("Connection: close"), "the last response closes: {head}");
            let mut rest = Vec::new();
            (&idle).read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty(), "the idle connection is closed without a response");
            let status = server.join().unwrap();
            assert_eq!(status.code(), Some(0), "the server exits with 0 after SIGTERM");
            let refused = TcpStream::connect(addr).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

#[test]
fn a_shared_socket_serves_every_connection_too() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let (server, addr, header) = start_server(&["--workers", "2", "--shared"]);
            assert_eq!(header, "server: 2 workers, one shared socket");
            assert_eq!(many_requests(addr, 200).len(), 200);
            server.terminate().unwrap();
            assert_eq!(server.join().unwrap().code(), Some(0));
        })
        .expect("the test hung");
    });
}

#[test]
fn a_connection_still_open_when_the_grace_period_ends_is_cut_and_the_server_exits_0() {
    const GRACE: Duration = Duration::from_millis(200);
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let grace = GRACE.as_millis().to_string();
            let (server, addr, _) = start_server(&["--workers", "1", "--grace-ms", &grace]);
            let stream = TcpStream::connect(addr).unwrap();
            (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            read_response(&stream); // the worker has accepted it and served one request
            (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap(); // never finished
            let stopped = std::time::Instant::now();
            server.terminate().unwrap();
            let mut rest = Vec::new();
            (&stream).read_to_end(&mut rest).unwrap();
            assert!(stopped.elapsed() >= GRACE, "cut before the grace period ended");
            assert!(
                rest.is_empty(),
                "cut without a response: {:?}",
                String::from_utf8_lossy(&rest)
            );
            let status = server.join().unwrap();
            assert_eq!(status.code(), Some(0), "the server exits with 0 after the grace period");
            let refused = TcpStream::connect(addr).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Regression: the parent stopped watching SIGTERM when its graceful stop was done, a moment
/// before the process ended, so a second SIGTERM in that moment (a supervisor repeating itself)
/// met the default action and the server died by the signal instead of exiting 0. Here SIGTERM
/// comes again and again, every 200 µs, until the server has exited.
#[test]
fn repeated_sigterms_during_the_stop_still_exit_0() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            for _ in 0..3 {
                let (server, addr, _) = start_server(&["--workers", "1"]);
                assert_eq!(many_requests(addr, 20).len(), 20);
                let status = loop {
                    server.terminate().unwrap();
                    if let Some(status) = server.join_timeout(Duration::from_micros(200)).unwrap() {
                        break status;
                    }
                };
                assert_eq!(status.code(), Some(0), "{status:?}: the server exits with 0");
            }
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// An fd limit under which a process can open no fd but its stdio: every new fd (an accept, a
/// dup, a pipe) fails with EMFILE, while the fds it has stay open.
const ONLY_STDIO: libc::rlim_t = 3;

/// Sets process `pid`'s soft limit of open fds to `soft` (its hard limit stays); returns the
/// old soft limit.
fn set_fd_limit(pid: u32, soft: libc::rlim_t) -> libc::rlim_t {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let pid = pid as libc::pid_t;
    // SAFETY: a null new limit only reads; `old` is a live `rlimit` for the call.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: `new` is a live `rlimit` for the call; a null old limit is not written.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// The first line of `stderr` that contains `needle`, waiting at most 10 s for it.
fn line_with(stderr: &mut impl BufRead, needle: &str) -> Result<String, greenhub::Elapsed> {
    greenhub::timeout(Duration::from_secs(10), || {
        let mut line = String::new();
        while !line.contains(needle) {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
        line
    })
}

/// Regression: a worker's acceptor ended at its first failed accept (`EMFILE` at the fd limit),
/// leaving a live worker that never accepted again: the connections of its socket waited
/// forever, and no worker was replaced. Here the worker's fd limit is set so low that its next
/// accept fails; once the server says so on stderr, the limit is put back,
/// and the same connection is answered by the same worker.
#[test]
fn a_worker_that_meets_the_fd_limit_backs_off_and_accepts_again() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let (mut server, addr, _) = start_server_with(&["--workers", "1"], Stdio::piped());
            let mut stderr = BufReader::new(server.take_stderr().unwrap());
            let first = TcpStream::connect(addr).unwrap();
            (&first).write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let (_, worker) = read_response(&first);
            (&first).read_to_end(&mut Vec::new()).unwrap(); // the worker has closed its end
            let old = set_fd_limit(worker, ONLY_STDIO);
            let stream = TcpStream::connect(addr).unwrap();
            (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let line = line_with(&mut stderr, "accept failed").expect("no accept failed");
            assert!(line.contains("Too many open files"), "{line}");
            set_fd_limit(worker, old);
            let (head, pid) = read_response(&stream);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert_eq!(pid, worker, "the same worker accepts again");
            server.terminate().unwrap();
            assert_eq!(server.join().unwrap().code(), Some(0));
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Regression: after SIGTERM the parent waited for each worker to end with no deadline, so one
/// worker that did not answer its stop (hung, a CPU hog; here stopped with SIGSTOP) kept the
/// server from ever exiting. Now a worker still running a second after the grace period is
/// killed, and the server exits 0.
#[test]
fn a_worker_that_does_not_stop_is_killed_after_the_grace_period_and_the_server_exits_0() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let (server, addr, _) = start_server(&["--workers", "1", "--grace-ms", "100"]);
            let worker = one_request(addr);
            // SAFETY: kill has no memory preconditions; `worker` is the server's live worker.
            assert_eq!(unsafe { libc::kill(worker as libc::pid_t, libc::SIGSTOP) }, 0);
            server.terminate().unwrap();
            let status = server.join_timeout(Duration::from_secs(10)).unwrap();
            let status = status.expect("the server still runs 10 s after SIGTERM");
            assert_eq!(status.code(), Some(0), "{status:?}");
            // SAFETY: as above; signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(worker as libc::pid_t, 0) } == -1;
            assert!(gone, "the stopped worker {worker} outlived the server");
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Regression: a supervisor whose replacement worker could not be started (the parent out of
/// fds or processes for a moment) gave up for good, leaving its slot's socket open with nobody
/// accepting on it. Here the server's fd limit lets it open no fd while its worker is
/// killed; once the server says it cannot start the replacement, the limit is put back, and a
/// new worker answers.
#[test]
fn a_worker_that_cannot_be_started_for_a_moment_is_started_later() {
    let _serial = process_lock();
    greenhub::run(|| {
        greenhub::timeout(LONG, || {
            let (mut server, addr, _) = start_server_with(&["--workers", "1"], Stdio::piped());
            let mut stderr = BufReader::new(server.take_stderr().unwrap());
            let worker = one_request(addr);
            let old = set_fd_limit(server.pid(), ONLY_STDIO);
            // SAFETY: kill has no memory preconditions; `worker` is the server's live worker.
            assert_eq!(unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) }, 0);
            line_with(&mut stderr, "cannot start worker").expect("no cannot start worker");
            set_fd_limit(server.pid(), old);
            let answered = greenhub::timeout(Duration::from_secs(10), || one_request(addr));
            let replacement = answered.expect("no worker answers any more");
            assert_ne!(replacement, worker);
            server.terminate().unwrap();
            assert_eq!(server.join().unwrap().code(), Some(0));
        })
        .expect("the test hung");
    });
    assert_eq!(zombie_children(), Vec::<u32>::new());
}
