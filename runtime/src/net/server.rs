//! `Server`: gevent's `StreamServer` counterpart: accept connections and run a handler
//! coroutine for each, with bounded concurrency, accept-error backoff and a graceful stop.
//!
//! Guarantee: at most `max_connections` handlers run at once (a [`Pool`]); while that many
//! run, no further connection is accepted (they wait in the listen backlog). An accept that
//! fails for lack of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) is logged on stderr and
//! retried after a delay that doubles from 10 ms to 1 s, as gevent does: the hub keeps running
//! every other coroutine, and never spins. [`StopHandle::stop`] stops accepting (the listener
//! is closed), waits up to the grace period for the running handlers, then cancels the rest.
//! Not guaranteed: the order in which handlers of connections accepted together start.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::{TcpListener, TcpStream, ToSocketAddrs};
use crate::join::JoinHandle;
use crate::spawn;
use crate::sync::{Event, Pool};

/// The first delay after a failed accept; it doubles on each further failure (gevent's
/// `min_delay`).
const MIN_DELAY: Duration = Duration::from_millis(10);

/// The longest delay between accept attempts (gevent's `max_delay`).
const MAX_DELAY: Duration = Duration::from_secs(1);

/// How long [`StopHandle::stop`] waits for running handlers by default (gevent's
/// `stop_timeout`).
const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// A TCP server that runs a handler coroutine per connection (gevent's `StreamServer`).
///
/// ```
/// use std::io::{Read, Write};
/// use greenhub::net::{Server, TcpStream};
///
/// greenhub::run(|| {
///     let server = Server::bind("127.0.0.1:0").unwrap().max_connections(100);
///     let addr = server.local_addr().unwrap();
///     let stop = server.stop_handle();
///     let client = greenhub::spawn(move || {
///         let mut conn = TcpStream::connect(addr).unwrap();
///         conn.write_all(b"ping").unwrap();
///         let mut echo = [0u8; 4];
///         conn.read_exact(&mut echo).unwrap();
///         stop.stop(); // serve() returns once the handlers have finished
///         echo
///     });
///     server
///         .serve(|mut conn, _peer| {
///             let mut buf = [0u8; 4];
///             conn.read_exact(&mut buf).unwrap();
///             conn.write_all(&buf).unwrap();
///         })
///         .unwrap();
///     assert_eq!(&client.join().unwrap(), b"ping");
/// });
/// ```
pub struct Server {
    listener: TcpListener,
    max_connections: usize,
    grace: Duration,
    stop: StopHandle,
}

impl Server {
    /// Binds a listener to `addr` (see [`TcpListener::bind`]).
    #[track_caller]
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Server> {
        TcpListener::bind(addr).map(Server::from_listener)
    }

    /// A server on a listener made elsewhere.
    #[track_caller]
    pub fn from_listener(listener: TcpListener) -> Server {
        Server {
            listener,
            max_connections: usize::MAX,
            grace: DEFAULT_GRACE,
            stop: StopHandle { state: Rc::new(StopState::default()) },
        }
    }

    /// At most `n` handlers run at once; further connections wait in the listen backlog until
    /// one ends. Unlimited by default (as gevent's default `spawn`).
    ///
    /// # Panics
    /// When `n` is 0.
    #[track_caller]
    pub fn max_connections(mut self, n: usize) -> Self {
        assert!(
            n >= 1,
            "greenhub::net::Server::max_connections(0): a server must allow at least one connection"
        );
        self.max_connections = n;
        self
    }

    /// How long a stop waits for running handlers before it cancels them (default 1 s, as
    /// gevent's `stop_timeout`).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops this server; clone it freely.
    #[track_caller]
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Accepts connections and runs `handler(stream, peer)` in a coroutine for each, until
    /// [`StopHandle::stop`]; then closes the listener, waits up to the grace period for the
    /// handlers, cancels those still running, and returns `Ok(())` once they have unwound.
    ///
    /// Accept errors: a connection that failed before it could be accepted (ECONNABORTED,
    /// ECONNRESET, EPROTO) is skipped at once; EBADF, EINVAL and ENOTSOCK (gevent's fatal
    /// errors: the listener itself is broken) stop the server as above and are returned; any
    /// other error (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...) is written to stderr and retried after
    /// a delay growing from 10 ms to 1 s, reset by the next successful accept.
    ///
    /// A handler's panic ends only its coroutine (and is printed by the panic hook). If the
    /// coroutine calling `serve` is cancelled, the acceptor and every handler are cancelled too.
    #[track_caller]
    pub fn serve<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(TcpStream, SocketAddr) + 'static,
    {
        let Server { listener, max_connections, grace, stop } = self;
        let pool = Rc::new(Pool::new(max_connections));
        let acceptor = {
            let (pool, state, handler) = (pool.clone(), stop.state.clone(), Rc::new(handler));
            spawn(move || accept_loop(&listener, &pool, &state, handler))
        };
        let running = Running { acceptor, pool };
        stop.state.requested.wait();
        // Stop accepting: the acceptor unwinds from accept, its backoff sleep or its wait for
        // a free slot, and drops (closes) the listener.
        running.acceptor.cancel();
        let _ = running.acceptor.wait_timeout(Duration::MAX);
        if !running.pool.join_timeout(grace) {
            running.pool.cancel_all();
        }
        match stop.state.fatal.borrow_mut().take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .field("max_connections", &self.max_connections)
            .field("grace", &self.grace)
            .finish()
    }
}

/// The acceptor and the handlers of a serving `Server`; cancelled if `serve` unwinds.
struct Running {
    acceptor: JoinHandle<()>,
    pool: Rc<Pool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.acceptor.cancel(); // both never suspend; after a normal stop both are done
        self.pool.cancel_now();
    }
}

/// Accepts until cancelled, or until a fatal error (recorded in `state`, which it then stops).
fn accept_loop<F>(listener: &TcpListener, pool: &Pool, state: &StopState, handler: Rc<F>)
where
    F: Fn(TcpStream, SocketAddr) + 'static,
{
    let mut delay = MIN_DELAY;
    loop {
        let slot = pool.reserve();
        match listener.accept() {
            Ok((conn, peer)) => {
                delay = MIN_DELAY;
                let handler = handler.clone();
                drop(pool.spawn_reserved(slot, move || handler(conn, peer)));
            }
            Err(e) => match classify(&e) {
                AcceptError::Skip => {}
                AcceptError::Fatal => {
                    *state.fatal.borrow_mut() = Some(e);
                    state.requested.set();
                    return;
                }
                AcceptError::BackOff => {
                    drop(slot);
                    let addr = listener.local_addr().ok();
                    crate::stderr::line(format_args!(
                        "greenhub::net::Server on {addr:?}: accept failed: {e}; retrying in \
                         {delay:?}"
                    ));
                    crate::sleep(delay);
                    delay = (delay * 2).min(MAX_DELAY);
                }
            },
        }
    }
}

/// What the accept loop does about an error.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The connection failed before it was accepted; the next one may be fine.
    Skip,
    /// The listener itself is broken.
    Fatal,
    /// Out of a resource (fds, buffers, memory): wait before trying again.
    BackOff,
}

fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO) => AcceptError::Skip,
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK) => AcceptError::Fatal,
        _ => AcceptError::BackOff,
    }
}

/// Stops a [`Server`]: `serve` stops accepting, gives running handlers the grace period, then
/// cancels them and returns. Calling it again, or before `serve` starts, is fine (a server
/// stopped before it serves returns at once).
#[derive(Clone)]
pub struct StopHandle {
    state: Rc<StopState>,
}

#[derive(Default)]
struct StopState {
    requested: Event,
    fatal: RefCell<Option<io::Error>>,
}

impl StopHandle {
    /// Asks the server to stop; does not wait (the coroutine in `serve` does the stopping).
    #[track_caller]
    pub fn stop(&self) {
        self.state.requested.set();
    }

    /// Whether a stop was asked for (by [`stop`](Self::stop) or a fatal accept error).
    #[track_caller]
    pub fn is_stopped(&self) -> bool {
        self.state.requested.is_set()
    }
}

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle").field("stopped", &self.is_stopped()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified_as_gevent_does() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::EMFILE)), AcceptError::BackOff);
        assert_eq!(classify(&os(libc::ENFILE)), AcceptError::BackOff);
        assert_eq!(classify(&os(libc::ENOBUFS)), AcceptError::BackOff);
        assert_eq!(classify(&os(libc::ENOMEM)), AcceptError::BackOff);
        assert_eq!(classify(&os(libc::ECONNABORTED)), AcceptError::Skip);
        assert_eq!(classify(&os(libc::EBADF)), AcceptError::Fatal);
        assert_eq!(classify(&os(libc::ENOTSOCK)), AcceptError::Fatal);
        assert_eq!(classify(&io::Error::other("not an OS error")), AcceptError::BackOff);
    }
}
