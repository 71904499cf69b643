//! echo_server: a TCP echo server and its clients, all coroutines of one hub on one thread.
//!
//! Teaches: `greenhub::net` has std's shapes (`bind`, `accept`, `connect`, `Read`/`Write`), but
//! every call that would block suspends only the calling coroutine; the server spawns one
//! coroutine per connection (gevent's `StreamServer` pattern) and the clients run at the same
//! time, so ten clients that each pause 50 ms between twenty messages take about one second, not
//! ten; cancelling the acceptor stops the server, which is how the program ends by itself.
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
//! server listening on 127.0.0.1
//! client 0 sent "client 0 message 00" and got back "client 0 message 00"
//! clients: 10 clients x 20 messages = 200 round trips, every echo intact: true
//! server: accepted 10 connections, echoed 200 messages (3800 bytes)
//! acceptor cancelled: true
//! ```

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use greenhub::net::{TcpListener, TcpStream};

const CLIENTS: usize = 10;
const MESSAGES: usize = 20;
const PAUSE: Duration = Duration::from_millis(50);
/// Every message is "client C message MM": the same length, so the server can echo whole ones.
const MESSAGE_LEN: usize = "client 0 message 00".len();

/// What the server saw, shared by its coroutines (one thread: `Rc` and `Cell` are enough).
#[derive(Default)]
struct Stats {
    connections: Cell<usize>,
    messages: Cell<usize>,
    bytes: Cell<usize>,
}

fn main() {
    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        println!("server listening on {}", addr.ip());

        let stats = Rc::new(Stats::default());
        let acceptor = {
            let stats = stats.clone();
            greenhub::spawn(move || serve(listener, stats))
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

        // A handler counts a message right after `write_all`, with no suspension point in
        // between, so the echo a client read was already counted: the figures are final.
        println!(
            "server: accepted {} connections, echoed {} messages ({} bytes)",
            stats.connections.get(),
            stats.messages.get(),
            stats.bytes.get()
        );
        // The acceptor would wait in `accept` forever: cancel it (gevent's kill).
        acceptor.cancel();
        println!("acceptor cancelled: {}", acceptor.join().unwrap_err().is_cancelled());
    });
}

/// Accepts connections forever, one coroutine per connection.
fn serve(listener: TcpListener, stats: Rc<Stats>) {
    loop {
        let (conn, _peer) = listener.accept().expect("accept");
        stats.connections.set(stats.connections.get() + 1);
        let stats = stats.clone();
        // Detached: dropping the handle lets the handler run on its own.
        drop(greenhub::spawn(move || handle(conn, &stats).expect("echo handler")));
    }
}

/// Echoes whole messages until the client closes the connection.
fn handle(mut conn: TcpStream, stats: &Stats) -> io::Result<()> {
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
