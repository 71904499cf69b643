//! A pre-fork HTTP/1.1 server, gunicorn's model on greenhub: the parent binds, N worker
//! processes (default: the CPU count) each accept with their own hub, one coroutine per
//! connection; a dead worker is replaced; SIGTERM stops accepting, lets open connections finish
//! within a grace period, then exits 0 (a worker still running a second after its grace period,
//! hung or stopped, is killed).
//!
//! It teaches handing sockets to child processes (`Transfer` for `greenhub::net` listeners,
//! `try_clone` to keep the parent's copy), a supervisor coroutine per worker, a control pipe
//! per worker for a graceful stop, and SIGTERM received in a coroutine.
//!
//! How connections spread over the workers (measured on 2 vCPUs, 4 workers, a burst of 2,000
//! connections, 100 at a time, `prefork_server -- burst`, three runs): one listening socket
//! shared by every worker gives 47 to 1,239 connections per worker (each worker's epoll wakes
//! for every connection, the thundering herd, and whoever runs first takes it); one
//! `SO_REUSEPORT` socket per worker gives 476 to 533 (a fair share is 500: the kernel hashes
//! each connection to one socket). See `docs/child-processes.md`, "Scaling out". So the default is a socket per worker, all bound by the parent before any worker
//! starts, and kept open by the parent: the port is never unbound, even while a worker is being
//! replaced, and connections queued on a dead worker's socket wait for its replacement instead
//! of being reset. `--shared` uses one shared socket instead, for the comparison.
//!
//! Run: `cargo run --release -p examples --example prefork_server` (a demo: it starts itself as
//! a server, sends a burst of connections, kills a worker, then SIGTERM), or
//! `... --example prefork_server -- serve [--workers N] [--port P] [--grace-ms MS] [--shared]`
//! to serve until SIGTERM (the first line printed is `port P`; `--single` serves in one process,
//! without workers, for comparison), or `-- burst` to measure the spread of both mechanisms.
//!
//! Expected output of the demo (the worker count is your CPU count and the spread varies a
//! little, so both are `{n}`; the server's own log line about the killed worker goes to
//! stderr). On 2 CPUs, for instance, `server: 2 workers, ...` and `... (fewest by one worker: 94%
//! of a fair share)`:
//! ```text
//! server: {n} workers, one SO_REUSEPORT socket each
//! burst: 2000 connections, 2000 answered, by {n} workers (fewest by one worker: {n}% of a fair share)
//! killed a worker: 200 more connections, 200 answered, 1 worker(s) new since the burst
//! SIGTERM with a request in progress: it was answered, and the server exited with 0
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use examples::http;
use greenhub::JoinHandle;
use greenhub::net::{TcpListener, TcpStream};
use greenhub::signal::Signals;
use greenhub::sync::Event;
use greenhub_ipc::{Command, Process, ProcessBuilder, Writer};
use socket2::{Domain, Protocol, Socket, Type};

/// How long open connections may take to finish after SIGTERM, by default.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// The first delay before a failed accept (or a worker that could not be started) is retried;
/// it doubles up to `ACCEPT_MAX_DELAY`.
const ACCEPT_MIN_DELAY: Duration = Duration::from_millis(10);

/// The longest delay between accept attempts (or attempts to start a worker).
const ACCEPT_MAX_DELAY: Duration = Duration::from_secs(1);

/// How long past the grace period the parent waits for its workers to end before it kills them.
const STOP_MARGIN: Duration = Duration::from_secs(1);

/// The connections of the demo's burst.
const BURST: usize = 2000;

/// How many of them are open at once.
const BURST_PARALLEL: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    greenhub::run(|| match args.first().map(String::as_str) {
        Some("serve") => serve(&Options::parse(&args[1..])?),
        Some("burst") => measure_spread(),
        None => demo(),
        Some(other) => Err(format!("unknown mode {other:?}: serve, burst, or nothing").into()),
    })
}

// ---------------------------------------------------------------------------------------------
// The server: the parent (binds, supervises, stops) and its workers (accept, serve)

/// `serve`'s command line.
#[derive(Debug, Clone)]
struct Options {
    workers: usize,
    port: u16,
    grace: Duration,
    shared: bool,
    /// No workers: the parent serves alone (the single-process server, for comparison).
    single: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, Box<dyn std::error::Error>> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut options =
            Options { workers: cpus, port: 0, grace: DEFAULT_GRACE, shared: false, single: false };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or(format!("{arg} needs a value"));
            match arg.as_str() {
                "--workers" => options.workers = value()?.parse()?,
                "--port" => options.port = value()?.parse()?,
                "--grace-ms" => options.grace = Duration::from_millis(value()?.parse()?),
                "--shared" => options.shared = true,
                "--single" => options.single = true,
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        if options.workers == 0 {
            return Err("--workers must be at least 1".into());
        }
        Ok(options)
    }
}

/// What the parent tells a worker.
type Control = ();

/// The parent: binds every socket, starts the workers, replaces the ones that die, and on
/// SIGTERM stops them gracefully.
fn serve(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let sigterm = Sigterm::watch_until_exit()?;
    if options.single {
        let listener = TcpListener::bind(("127.0.0.1", options.port))?;
        println!("port {}", listener.local_addr()?.port());
        println!("server: a single process, no workers");
        io::stdout().flush()?;
        return Ok(accept_until_stopped(listener, || sigterm.recv(), options.grace)?);
    }
    let sockets = bind_sockets(options)?;
    let port = sockets[0].local_addr()?.port();
    println!("port {port}");
    let mechanism =
        if options.shared { "one shared socket" } else { "one SO_REUSEPORT socket each" };
    println!("server: {} workers, {mechanism}", options.workers);
    io::stdout().flush()?;
    let stopping = Rc::new(Cell::new(false));
    let slots: Vec<Rc<Slot>> = sockets
        .into_iter()
        .enumerate()
        .map(|(index, listener)| Rc::new(Slot::new(index, listener)))
        .collect();
    let supervisors: Vec<JoinHandle<()>> = slots
        .iter()
        .map(|slot| {
            let (slot, stopping, grace) = (Rc::clone(slot), Rc::clone(&stopping), options.grace);
            greenhub::spawn(move || slot.supervise(&stopping, grace))
        })
        .collect();
    sigterm.recv();
    stopping.set(true);
    for slot in &slots {
        slot.stop();
    }
    // A worker that does not end within its grace period (hung, a CPU hog, stopped) is killed:
    // the server's own stop must not wait on it forever.
    let ended = greenhub::timeout(options.grace + STOP_MARGIN, || {
        for supervisor in &supervisors {
            let _ = supervisor.wait_timeout(Duration::MAX);
        }
    });
    if ended.is_err() {
        for slot in &slots {
            slot.kill();
        }
    }
    for supervisor in supervisors {
        let _ = supervisor.join();
    }
    Ok(())
}

/// SIGTERM, received in a coroutine (`greenhub::signal::Signals`): from the moment it is
/// watched, its default action (death) does not happen in the parent; workers start with the
/// default disposition (greenhub-ipc resets every signal in a child), and stop when the parent
/// tells them to.
struct Sigterm(Signals);

impl Sigterm {
    /// Watches SIGTERM from now until the process exits. The watcher is leaked, never dropped:
    /// dropping it would put the default action back, and a second SIGTERM (a supervisor that
    /// repeats itself) arriving after the graceful stop, while `run` ends and `main` returns,
    /// would then kill the server with a signal instead of letting it exit 0.
    fn watch_until_exit() -> io::Result<&'static Sigterm> {
        Ok(Box::leak(Box::new(Sigterm(Signals::new(&[libc::SIGTERM])?))))
    }

    /// Suspends the calling coroutine until SIGTERM arrives.
    fn recv(&self) {
        while self.0.recv().is_err() {} // the wait on its eventfd does not fail in practice
    }
}

/// The listening sockets, bound here before any worker exists: one per worker with
/// `SO_REUSEPORT` (the first picks the port, the others join it), or one shared by every worker
/// (each worker gets a duplicate).
fn bind_sockets(options: &Options) -> io::Result<Vec<TcpListener>> {
    let mut addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, options.port));
    let mut sockets = Vec::new();
    for _ in 0..options.workers {
        let listener = if options.shared && !sockets.is_empty() {
            let first: &TcpListener = &sockets[0];
            first.try_clone()?
        } else {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(!options.shared)?;
            socket.bind(&addr.into())?;
            socket.listen(1024)?;
            let listener = TcpListener::from(std::net::TcpListener::from(socket));
            addr = listener.local_addr()?;
            listener
        };
        sockets.push(listener);
    }
    Ok(sockets)
}

/// One worker's place: its socket (the parent's copy, open until the server stops), and the
/// control pipe to the worker running in it now.
struct Slot {
    index: usize,
    listener: RefCell<Option<TcpListener>>,
    control: RefCell<Option<Writer<Control>>>,
    /// The worker running in this slot now.
    worker: RefCell<Option<Rc<Process>>>,
}

impl Slot {
    fn new(index: usize, listener: TcpListener) -> Slot {
        Slot {
            index,
            listener: RefCell::new(Some(listener)),
            control: RefCell::new(None),
            worker: RefCell::new(None),
        }
    }

    /// Keeps a worker running in this slot until the server stops: starts one, waits for it to
    /// end, and starts a replacement if it died while the server was not stopping.
    fn supervise(&self, stopping: &Cell<bool>, grace: Duration) {
        let mut delay = ACCEPT_MIN_DELAY;
        while !stopping.get() {
            let worker = match self.start_worker(grace) {
                Ok(worker) => worker,
                // Out of fds or processes, for now: try again later. (Giving up would leave
                // this slot's socket open with nobody accepting on it: the connections the
                // kernel hashes to it would wait forever.)
                Err(err) => {
                    eprintln!(
                        "server: cannot start worker {}: {err}; retrying in {delay:?}",
                        self.index
                    );
                    greenhub::sleep(delay);
                    delay = (delay * 2).min(ACCEPT_MAX_DELAY);
                    continue;
                }
            };
            delay = ACCEPT_MIN_DELAY;
            let worker = Rc::new(worker);
            *self.worker.borrow_mut() = Some(Rc::clone(&worker));
            let status = worker.join();
            self.worker.borrow_mut().take();
            self.control.borrow_mut().take();
            if !stopping.get() {
                let pid = worker.pid();
                eprintln!(
                    "server: worker {} (pid {pid}) ended: {status:?}; replacing it",
                    self.index
                );
            }
        }
    }

    /// Forks a worker on a duplicate of this slot's socket, with a control pipe to it.
    fn start_worker(&self, grace: Duration) -> Result<Process, Box<dyn std::error::Error>> {
        let listener =
            self.listener.borrow().as_ref().ok_or("the server is stopping")?.try_clone()?;
        let (control_reader, control_writer) = greenhub_ipc::pipe::<Control>()?;
        let process = ProcessBuilder::new()
            .name(format!("worker-{}", self.index))
            .daemon(true)
            .start((listener, control_reader), move |(listener, control)| {
                accept_until_stopped(listener, || drop(control.get()), grace)
            })?;
        *self.control.borrow_mut() = Some(control_writer);
        Ok(process)
    }

    /// Kills the slot's worker (SIGKILL), if one runs: it did not stop when told to.
    fn kill(&self) {
        if let Some(worker) = self.worker.borrow().as_ref() {
            eprintln!(
                "server: worker {} (pid {}) did not stop within its grace period; killing it",
                self.index,
                worker.pid()
            );
            let _ = worker.kill();
        }
    }

    /// Stops the slot: its socket is closed here, and its worker is told to stop (close its
    /// copy, finish its connections, exit).
    fn stop(&self) {
        self.listener.borrow_mut().take();
        if let Some(control) = self.control.borrow().as_ref() {
            let _ = control.put(&());
        }
    }
}

/// A worker's life (and the single-process server's): accepts on its socket and serves each
/// connection in a coroutine of its own, until `wait_for_stop` returns (in a worker: the parent
/// says stop, or dies); then stops accepting, gives open connections `grace` to finish.
fn accept_until_stopped(
    listener: TcpListener,
    wait_for_stop: impl FnOnce(),
    grace: Duration,
) -> io::Result<()> {
    let connections = Rc::new(Connections::default());
    let acceptor = greenhub::spawn({
        let connections = Rc::clone(&connections);
        move || {
            let mut delay = ACCEPT_MIN_DELAY;
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        delay = ACCEPT_MIN_DELAY;
                        connections.serve(stream);
                    }
                    // Out of fds (EMFILE) or memory: the connection stays queued. Giving up
                    // would leave a live worker that never accepts again (its SO_REUSEPORT
                    // socket's connections would wait forever), so back off and retry, as
                    // `greenhub::net::Server` does.
                    Err(e) => {
                        eprintln!(
                            "server: worker {}: accept failed: {e}; retrying in {delay:?}",
                            std::process::id()
                        );
                        greenhub::sleep(delay);
                        delay = (delay * 2).min(ACCEPT_MAX_DELAY);
                    }
                }
            }
        }
    });
    wait_for_stop(); // a worker: a stop message, or Eof (the parent is gone)
    acceptor.cancel(); // drops the worker's copy of the socket: no more accepts here
    connections.stop(grace);
    Ok(())
}

/// True while a connection waits for a request (no byte of one has arrived).
type Idle = Rc<Cell<bool>>;

/// The open connections of a worker, and which of them wait for a request (idle).
#[derive(Default)]
struct Connections {
    next: Cell<u64>,
    /// Each open connection's coroutine, and its idle flag.
    open: RefCell<HashMap<u64, (JoinHandle<()>, Idle)>>,
    stopping: Cell<bool>,
    all_closed: Event,
}

impl Connections {
    /// Serves `stream` in a coroutine of its own.
    fn serve(self: &Rc<Self>, stream: TcpStream) {
        let id = self.next.get();
        self.next.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        let this = Rc::clone(self);
        let handle = greenhub::spawn({
            let idle = Rc::clone(&idle);
            move || {
                // Leaves the table however the coroutine ends: returned, or cancelled (unwound).
                let _leave = Leave { connections: Rc::clone(&this), id };
                let _ = serve_http(&stream, &idle, &this.stopping);
            }
        });
        self.open.borrow_mut().insert(id, (handle, idle));
        self.all_closed.clear();
    }

    /// Graceful stop: idle connections are closed now; the others finish their request (and
    /// are closed after it) within `grace`; what is left then is cut.
    fn stop(&self, grace: Duration) {
        self.stopping.set(true);
        // Let connections whose bytes have just arrived read them first: they are not idle.
        greenhub::yield_now();
        for (handle, idle) in self.open.borrow().values() {
            if idle.get() {
                handle.cancel();
            }
        }
        if !self.open.borrow().is_empty() && !self.all_closed.wait_timeout(grace) {
            for (handle, _) in self.open.borrow().values() {
                handle.cancel();
            }
        }
    }
}

/// Takes a connection out of the table when its coroutine ends, and says when none is left.
struct Leave {
    connections: Rc<Connections>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut open = self.connections.open.borrow_mut();
        open.remove(&self.id);
        if open.is_empty() {
            self.connections.all_closed.set();
        }
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive, pipelined requests answered in one
/// write) until the client closes, asks for `Connection: close`, sends a bad request, or the
/// worker is stopping. `idle` is true while no byte of a request has arrived. The wire code
/// (parsing, responses) is `examples::http`, shared with the benchmark's HTTP rows.
fn serve_http(stream: &TcpStream, idle: &Cell<bool>, stopping: &Cell<bool>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let worker = format!("X-Worker: {}\r\n", std::process::id());
    let (mut input, mut output) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
    let mut chunk = [0u8; 4096];
    let mut socket = stream;
    loop {
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Ok(()); // the client closed
        }
        idle.set(false);
        input.extend_from_slice(&chunk[..n]);
        output.clear();
        let close = http::answer(&mut input, &mut output, &worker, stopping.get());
        socket.write_all(&output)?;
        if close {
            return Ok(());
        }
        idle.set(input.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// The demo and the spread measurement: a client that drives a server started as a program

/// A server started as a program (`prefork_server serve ...`), and the port it said.
struct Server {
    process: Process,
    port: u16,
    header: String,
}

impl Server {
    fn start(args: &[&str]) -> Result<Server, Box<dyn std::error::Error>> {
        let exe = std::env::current_exe()?;
        let mut process =
            Command::new(exe).arg("serve").args(args).stdout(Stdio::piped()).spawn()?;
        let mut out = process.take_stdout().ok_or("the server's stdout was not piped")?;
        let mut text = String::new();
        let mut byte = [0u8; 1];
        while text.matches('\n').count() < 2 && out.read(&mut byte)? == 1 {
            text.push(byte[0] as char);
        }
        let mut lines = text.lines();
        let port = lines.next().and_then(|l| l.strip_prefix("port ")).ok_or("no port line")?;
        Ok(Server { process, port: port.parse()?, header: lines.next().unwrap_or("").into() })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }
}

/// One connection: a request, its response; the pid of the worker that answered.
fn one_request(addr: SocketAddr) -> io::Result<u32> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    worker_of(&response)
}

/// The `X-Worker` header of a response.
fn worker_of(response: &str) -> io::Result<u32> {
    response
        .lines()
        .find_map(|l| l.strip_prefix("X-Worker: "))
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("not a response of ours: {response:?}")))
}

/// `n` connections, `BURST_PARALLEL` at a time; how many each worker answered.
fn burst(addr: SocketAddr, n: usize) -> io::Result<BTreeMap<u32, usize>> {
    let next = Rc::new(Cell::new(0));
    let clients: Vec<_> = (0..BURST_PARALLEL)
        .map(|_| {
            let next = Rc::clone(&next);
            greenhub::spawn(move || -> io::Result<Vec<u32>> {
                let mut pids = Vec::new();
                while next.get() < n {
                    next.set(next.get() + 1);
                    pids.push(one_request(addr)?);
                }
                Ok(pids)
            })
        })
        .collect();
    let mut per_worker = BTreeMap::new();
    for client in clients {
        for pid in client.join().map_err(|e| io::Error::other(e.to_string()))?? {
            *per_worker.entry(pid).or_default() += 1;
        }
    }
    Ok(per_worker)
}

/// The demo: a server with a worker per CPU; a burst; a worker killed and replaced; SIGTERM
/// with a request in progress.
fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::start(&[])?;
    println!("{}", server.header);
    let workers: usize = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spread = burst(server.addr(), BURST)?;
    let answered: usize = spread.values().sum();
    let fewest = spread.values().min().copied().unwrap_or(0) * workers * 100 / BURST;
    println!(
        "burst: {BURST} connections, {answered} answered, by {} workers (fewest by one worker: {fewest}% of a fair share)",
        spread.len()
    );
    let victim = *spread.keys().next().ok_or("nobody answered")?;
    kill(victim)?;
    let after = burst(server.addr(), 200)?;
    let by_new = after.keys().filter(|pid| !spread.contains_key(pid)).count();
    println!(
        "killed a worker: 200 more connections, {} answered, {by_new} worker(s) new since the burst",
        after.values().sum::<usize>()
    );
    // A keep-alive connection: one whole request (so a worker has accepted it), then half of a
    // second one, then SIGTERM, then the rest: a request in progress is finished.
    let mut open = TcpStream::connect(server.addr())?;
    open.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")?;
    read_response(&open)?;
    open.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n")?;
    server.process.terminate()?;
    open.write_all(b"\r\n")?;
    let mut response = String::new();
    open.read_to_string(&mut response)?;
    let status = server.process.join()?;
    let answered = if worker_of(&response).is_ok() { "it was answered" } else { "it was cut" };
    let code = status.code().map_or_else(|| status.to_string(), |c| c.to_string());
    println!("SIGTERM with a request in progress: {answered}, and the server exited with {code}");
    if status.success() { Ok(()) } else { Err("the server did not exit with 0".into()) }
}

/// Both mechanisms with 4 workers and a burst of 2,000 connections: each worker's share.
fn measure_spread() -> Result<(), Box<dyn std::error::Error>> {
    for mechanism in [&["--workers", "4"][..], &["--workers", "4", "--shared"]] {
        let server = Server::start(mechanism)?;
        let spread = burst(server.addr(), BURST)?;
        let shares: Vec<String> = spread.values().map(|n| n.to_string()).collect();
        println!("{}: connections per worker: {}", server.header, shares.join(" "));
        server.process.terminate()?;
        server.process.join()?;
    }
    Ok(())
}

/// Sends SIGKILL to the process `pid` (with the `kill` program: no unsafe code here).
fn kill(pid: u32) -> Result<(), Box<dyn std::error::Error>> {
    let output = Command::new("kill").args(["-KILL", &pid.to_string()]).output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("kill {pid}: {}", output.status).into())
    }
}

/// Reads one response (head and its `Content-Length` body) from a keep-alive connection.
fn read_response(mut stream: &TcpStream) -> io::Result<String> {
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if let Some(end) = http::head_end(&response) {
            let text = String::from_utf8_lossy(&response[..end]).into_owned();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            stream.read_exact(&mut body)?;
            return Ok(text + &String::from_utf8_lossy(&body));
        }
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        response.push(byte[0]);
    }
}
