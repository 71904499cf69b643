//! echo_server: a TCP echo server and its clients, all coroutines of one hub on one thread.
//!
//! Teaches: `greenhub::net::Server` is gevent's `StreamServer`: it accepts connections and runs
//! a handler coroutine for each, at most `max_connections` at once (the others wait in the
//! listen backlog until a handler ends), backs off when accept runs out of fds, and stops
//! gracefully through a `StopHandle`. `greenhub::net` has std's shapes (`connect`,
//! `Read`/`Write`), but every call that would block suspends only the calling coroutine. Ten
//! clients that each pause 20 ms between twenty messages, served five at a time, take two
//! rounds of about 0.4 s each, not ten.
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example echo_server
//! ```
//!
//! Expected output (the server listens on 127.0.0.1, on a port the OS picks):
//!
//! ```text
//! server listening on 127.0.0.1, at most 5 connections at once
//! client 0 sent "client 0 message 00" and got back "client 0 message 00"
//! clients: 10 clients x 20 messages = 200 round trips, every echo intact: true
//! server: accepted 10 connections, echoed 200 messages (3800 bytes), at most 5 at once
//! server stopped gracefully: true
//! ```

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{Server, TcpStream};

const CLIENTS: usize = 10;
const MESSAGES: usize = 20;
const MAX_CONNECTIONS: usize = 5;
const PAUSE: Duration = Duration::from_millis(20);
/// Every message is "client C message MM": the same length, so the server can echo whole ones.
const MESSAGE_LEN: usize = "client 0 message 00".len();

/// What the server saw, shared by its coroutines (one thread: `Rc` and `Cell` are enough).
#[derive(Default)]
struct Stats {
    connections: Cell<usize>,
    open: Cell<usize>,
    most_open: Cell<usize>,
    messages: Cell<usize>,
    bytes: Cell<usize>,
}

fn main() {
    greenhub::run(|| {
        let server = Server::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let server = server.max_connections(MAX_CONNECTIONS).grace_period(Duration::from_secs(1));
        let addr = server.local_addr().expect("local address");
        println!(
            "server listening on {}, at most {MAX_CONNECTIONS} connections at once",
            addr.ip()
        );

        let stop = server.stop_handle();
        let stats = Rc::new(Stats::default());
        let serving = {
            let stats = stats.clone();
            greenhub::spawn(move || {
                server.serve(move |conn, _peer| handle(conn, &stats).expect("echo handler"))
            })
        };

        let clients: Vec<_> =
            (0..CLIENTS).map(|id| greenhub::spawn(move || client(id, addr))).collect();
        let mut intact = true;
        for c in clients {
            intact &= c.join().expect("client coroutine").expect("client I/O");
        }
        let round_trips = CLIENTS * MESSAGES;
        let summary =
            format!("{CLIENTS} clients x {MESSAGES} messages = {round_trips} round trips");
        println!("clients: {summary}, every echo intact: {intact}");

        // Stop: the listener closes, handlers still running get the grace period to finish.
        stop.stop();
        let stopped = serving.join().expect("server coroutine");
        // A handler counts a message right after `write_all`, with no suspension point in
        // between, so the echo a client read was already counted: the figures are final.
        println!(
            "server: accepted {} connections, echoed {} messages ({} bytes), at most {} at once",
            stats.connections.get(),
            stats.messages.get(),
            stats.bytes.get(),
            stats.most_open.get()
        );
        println!("server stopped gracefully: {}", stopped.is_ok());
    });
}

/// Echoes whole messages until the client closes the connection.
fn handle(mut conn: TcpStream, stats: &Stats) -> io::Result<()> {
    stats.connections.set(stats.connections.get() + 1);
    stats.open.set(stats.open.get() + 1);
    stats.most_open.set(stats.most_open.get().max(stats.open.get()));
    let _closed = Closed(stats);
    conn.set_nodelay(true)?;
    let mut buf = [0u8; MESSAGE_LEN];
    loop {
        match conn.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        conn.write_all(&buf)?;
        stats.messages.set(stats.messages.get() + 1);
        stats.bytes.set(stats.bytes.get() + buf.len());
    }
}

/// Counts a connection as closed when its handler ends.
struct Closed<'a>(&'a Stats);

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

/// Sends `MESSAGES` messages, pausing between them; true if every echo matched.
fn client(id: usize, addr: SocketAddr) -> io::Result<bool> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    let mut intact = true;
    for n in 0..MESSAGES {
        let message = format!("client {id} message {n:02}");
        conn.write_all(message.as_bytes())?;
        let mut echo = [0u8; MESSAGE_LEN];
        conn.read_exact(&mut echo)?;
        intact &= echo == message.as_bytes();
        if id == 0 && n == 0 {
            let echo = String::from_utf8_lossy(&echo);
            println!("client {id} sent {message:?} and got back {echo:?}");
        }
        greenhub::sleep(PAUSE);
    }
    Ok(intact) // dropping `conn` closes it: the handler sees end of file
}
