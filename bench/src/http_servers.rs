//! The servers of the HTTP/1.1 plaintext rows: `bench serve-http raw|greenhub|may` binds
//! 127.0.0.1 on a free port, prints `port P`, and answers keep-alive "Hello, World!" requests
//! until it is killed. The raw and greenhub servers parse and answer with the same code
//! (`examples/src/http.rs`, shared with `examples/prefork_server`), read up to 16 KiB at a time
//! and answer every whole request read with one write, so the two differ only in what drives the
//! sockets: a hand-written mio loop, or one greenhub coroutine per connection. may_minihttp has its
//! own parser (httparse) and response writer; gevent's server is `py/gevent_http.py`.

use std::io::{self, Write as _};

#[path = "../../examples/src/http.rs"]
#[allow(dead_code)] // the prefork example uses more of it than these servers
pub mod wire;

/// How much one read takes at most.
const READ_CHUNK: usize = 16 * 1024;

/// Runs the server `kind` until the process is killed.
pub fn main(args: &[String]) -> i32 {
    let result = match args.first().map(String::as_str) {
        Some("raw") => raw::serve(),
        Some("greenhub") => greenhub_server(),
        Some("may") => may_server::serve(),
        _ => Err(io::Error::other("usage: bench serve-http raw|greenhub|may")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench serve-http: {e}");
            1
        }
    }
}

/// The first line every server prints: the driver reads the port from it.
fn announce(port: u16) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "port {port}")?;
    out.flush()
}

/// A raw mio/epoll server: one thread, one edge-triggered epoll, every connection a buffer pair.
mod raw {
    use super::{READ_CHUNK, announce, wire};
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    use std::io::{self, Read, Write};

    const LISTENER: Token = Token(usize::MAX);

    /// One connection: the bytes of requests not yet answered, and responses not yet written.
    /// A read shorter than the buffer proves the socket's receive queue empty (a TCP read copies
    /// every queued segment up to the buffer's end), so the loop waits for the next edge instead
    /// of reading again only to get `WouldBlock` (greenhub's `TcpStream` does the same: its
    /// `short_read_drains`), so both servers make the same syscalls per batch of requests.
    struct Conn {
        stream: TcpStream,
        input: Vec<u8>,
        output: Vec<u8>,
        written: usize,
        close_after_output: bool,
    }

    pub fn serve() -> io::Result<()> {
        let mut poll = Poll::new()?;
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("an address"))?;
        announce(listener.local_addr()?.port())?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut conns: slab::Slab<Conn> = slab::Slab::new();
        let mut events = Events::with_capacity(1024);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match poll.poll(&mut events, None) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in &events {
                if event.token() == LISTENER {
                    accept_all(&poll, &listener, &mut conns)?;
                    continue;
                }
                let key = event.token().0;
                let Some(conn) = conns.get_mut(key) else { continue };
                if !matches!(conn.on_ready(&mut chunk), Ok(true)) {
                    conns.remove(key); // closing the fd takes it out of epoll
                }
            }
        }
    }

    /// Accepts until the queue is empty (edge-triggered).
    fn accept_all(
        poll: &Poll,
        listener: &TcpListener,
        conns: &mut slab::Slab<Conn>,
    ) -> io::Result<()> {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            stream.set_nodelay(true)?;
            let entry = conns.vacant_entry();
            let interest = Interest::READABLE | Interest::WRITABLE;
            poll.registry().register(&mut stream, Token(entry.key()), interest)?;
            entry.insert(Conn {
                stream,
                input: Vec::with_capacity(READ_CHUNK),
                output: Vec::with_capacity(READ_CHUNK),
                written: 0,
                close_after_output: false,
            });
        }
    }

    impl Conn {
        /// Writes what is pending, then reads and answers until the socket has nothing more
        /// (or the output backs up: then it waits for writability). False: close it.
        fn on_ready(&mut self, chunk: &mut [u8]) -> io::Result<bool> {
            loop {
                if !self.flush()? {
                    return Ok(true); // wait for the writable edge
                }
                if self.close_after_output {
                    return Ok(false);
                }
                let n = match self.stream.read(chunk) {
                    Ok(0) => return Ok(false),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.input.extend_from_slice(&chunk[..n]);
                self.close_after_output =
                    wire::answer(&mut self.input, &mut self.output, "", false);
                if n < chunk.len() && self.flush()? && !self.close_after_output {
                    // A short TCP read emptied the receive queue: the next read would fail with
                    // WouldBlock, so skip it and wait for the next edge (one syscall fewer).
                    return Ok(true);
                }
            }
        }

        /// Writes the pending output; false if the socket took only part of it.
        fn flush(&mut self) -> io::Result<bool> {
            while self.written < self.output.len() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.output.clear();
            self.written = 0;
            Ok(true)
        }
    }
}

/// greenhub: `net::TcpListener`, one coroutine per connection, blocking-style reads and writes.
#[cfg(feature = "greenhub-runtime")]
fn greenhub_server() -> io::Result<()> {
    use greenhub::net::{TcpListener, TcpStream};
    use std::io::{Read, Write};

    fn serve_connection(mut stream: &TcpStream) -> io::Result<()> {
        let (mut input, mut output) = (Vec::with_capacity(READ_CHUNK), Vec::new());
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            input.extend_from_slice(&chunk[..n]);
            output.clear();
            let close = wire::answer(&mut input, &mut output, "", false);
            stream.write_all(&output)?;
            if close {
                return Ok(());
            }
        }
    }

    greenhub::run(|| {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        announce(listener.local_addr()?.port())?;
        loop {
            let (stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            drop(greenhub::spawn(move || serve_connection(&stream)));
        }
    })
}

#[cfg(not(feature = "greenhub-runtime"))]
fn greenhub_server() -> io::Result<()> {
    Err(io::Error::other("built without the `greenhub-runtime` feature"))
}

/// may_minihttp with one may worker, as its own examples write a hello-world service.
mod may_server {
    use super::{announce, wire};
    use may_minihttp::{HttpServer, HttpService, Request, Response};
    use std::io;

    #[derive(Clone)]
    struct Hello;

    impl HttpService for Hello {
        fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
            rsp.header("Content-Type: text/plain");
            rsp.body(wire::BODY);
            Ok(())
        }
    }

    pub fn serve() -> io::Result<()> {
        may::config().set_workers(1);
        // may_minihttp binds by itself and does not say where: take a free port first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = HttpServer(Hello).start(("127.0.0.1", port))?;
        announce(port)?;
        server.join().map_err(|_| io::Error::other("may_minihttp's server coroutine panicked"))
    }
}
