//! mini_hub: a hub in under 200 lines, built from corosensei and mio alone.
//!
//! Teaches: a coroutine suspends by handing the loop a `Request` (again; at `t`; when this fd is
//! ready); the loop keeps a ready queue, a timer queue and an epoll instance, and resumes each
//! coroutine once what it asked for has happened. Step by step: (1) the ready queue, (2) sleep,
//! (3) a readiness wait with the retry loop. `docs/mini-hub.md` walks through it.
//!
//! Run it: `cargo run --release -p examples --example mini_hub`. Expected output:
//! ```text
//! step 1, the ready queue: ping 1, pong 1, ping 2, pong 2, ping 3, pong 3
//! step 2, sleep: asked 30, 10, 20 ms; woke after 10, 20, 30 ms
//! step 3, sockets: sent "hello, hub", got back Ok("HELLO, HUB")
//! step 3, the ticker ticked while the client waited for the reply: true
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult, Yielder};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

/// What a coroutine asks the loop for when it suspends: the only way it talks to the hub.
enum Request {
    Yield,                 // step 1: run me again after the others
    Sleep(Instant),        // step 2: run me again at this instant
    Wait(RawFd, Interest), // step 3: run me again when this fd is ready
}

/// A coroutine's way to suspend (greenhub keeps it in a thread-local, so `sleep` needs no `cx`).
struct Cx<'a>(&'a Yielder<(), Request>);

impl Cx<'_> {
    fn yield_now(&self) {
        self.0.suspend(Request::Yield)
    }
    fn sleep(&self, d: Duration) {
        self.0.suspend(Request::Sleep(Instant::now() + d))
    }
    /// The retry loop every I/O call uses: try; on WouldBlock wait for readiness; try again.
    fn io<T>(&self, fd: RawFd, i: Interest, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        loop {
            match f() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.0.suspend(Request::Wait(fd, i))
                }
                result => return result,
            }
        }
    }
}

/// The hub: every live coroutine, and the three ways one can be waiting.
struct Hub {
    tasks: Vec<Option<Coroutine<(), Request, ()>>>, // by id; None once it has returned
    ready: VecDeque<usize>,                         // step 1: ids to resume, in order
    timers: BTreeSet<(Instant, usize)>,             // step 2: (deadline, id), earliest first
    poll: Poll,                     // step 3: epoll; an event's token is the waiting id
    waiting: HashMap<usize, RawFd>, // step 3: who waits on which fd
}

impl Hub {
    fn new() -> Hub {
        let (tasks, ready, timers, waiting) = Default::default();
        Hub { tasks, ready, timers, poll: Poll::new().expect("epoll_create"), waiting }
    }

    fn spawn(&mut self, body: impl FnOnce(&Cx) + 'static) {
        self.tasks.push(Some(Coroutine::new(move |yielder, ()| body(&Cx(yielder)))));
        self.ready.push_back(self.tasks.len() - 1);
    }

    /// Runs until every coroutine has returned. One turn: run everything that is ready, block
    /// in epoll until an fd event or the next deadline, make the expired sleepers ready.
    fn run(&mut self) {
        loop {
            while let Some(id) = self.ready.pop_front() {
                self.resume(id);
            }
            if self.tasks.iter().all(Option::is_none) {
                return;
            }
            self.poll_io();
            self.fire_timers();
        }
    }

    /// Switches to coroutine `id` until it suspends, then files it where its request says.
    fn resume(&mut self, id: usize) {
        match self.tasks[id].as_mut().expect("a live coroutine").resume(()) {
            CoroutineResult::Yield(Request::Yield) => self.ready.push_back(id),
            CoroutineResult::Yield(Request::Sleep(at)) => _ = self.timers.insert((at, id)),
            CoroutineResult::Yield(Request::Wait(fd, interest)) => {
                // Registering an fd that is already ready reports it at once, so no edge is lost.
                let registry = self.poll.registry();
                registry.register(&mut SourceFd(&fd), Token(id), interest).expect("epoll_ctl");
                self.waiting.insert(id, fd);
            }
            CoroutineResult::Return(()) => self.tasks[id] = None,
        }
    }

    fn fire_timers(&mut self) {
        while self.timers.first().is_some_and(|&(at, _)| at <= Instant::now()) {
            let (_, id) = self.timers.pop_first().expect("a timer");
            self.ready.push_back(id);
        }
    }

    /// Blocks in epoll until an fd event or the next deadline; wakes the fd's waiter.
    fn poll_io(&mut self) {
        let next = self.timers.first().map(|(at, _)| at.saturating_duration_since(Instant::now()));
        assert!(next.is_some() || !self.waiting.is_empty(), "deadlock: nothing can wake anyone");
        let mut events = Events::with_capacity(64);
        match self.poll.poll(&mut events, next) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            result => result.expect("epoll_wait"),
        }
        for event in &events {
            let id = event.token().0;
            let fd = self.waiting.remove(&id).expect("a waiter");
            self.poll.registry().deregister(&mut SourceFd(&fd)).expect("epoll_ctl");
            self.ready.push_back(id);
        }
    }
}

fn main() -> io::Result<()> {
    // Step 1: two coroutines that yield take turns through the ready queue.
    let said = Rc::new(RefCell::new(Vec::new()));
    let mut hub = Hub::new();
    for name in ["ping", "pong"] {
        let said = said.clone();
        hub.spawn(move |cx| {
            for round in 1..=3 {
                said.borrow_mut().push(format!("{name} {round}"));
                cx.yield_now();
            }
        });
    }
    hub.run();
    println!("step 1, the ready queue: {}", said.borrow().join(", "));

    // Step 2: three sleepers at once; the timer queue wakes them in deadline order.
    let woke = Rc::new(RefCell::new(Vec::new()));
    let mut hub = Hub::new();
    let start = Instant::now();
    for ms in [30, 10, 20] {
        let woke = woke.clone();
        hub.spawn(move |cx| {
            cx.sleep(Duration::from_millis(ms));
            let early = start.elapsed() < Duration::from_millis(ms);
            woke.borrow_mut().push(format!("{ms}{}", if early { " (early!)" } else { "" }));
        });
    }
    hub.run();
    println!("step 2, sleep: asked 30, 10, 20 ms; woke after {} ms", woke.borrow().join(", "));

    // Step 3: a server that answers after 20 ms, a client and a ticker, all on one thread.
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap())?;
    let address = listener.local_addr()?;
    let (ticks, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(false)));
    let mut hub = Hub::new();
    hub.spawn(move |cx| {
        let (mut stream, _) =
            cx.io(listener.as_raw_fd(), Interest::READABLE, || listener.accept()).unwrap();
        let mut buf = [0; 64];
        let n = cx.io(stream.as_raw_fd(), Interest::READABLE, || stream.read(&mut buf)).unwrap();
        cx.sleep(Duration::from_millis(20));
        let upper = buf[..n].to_ascii_uppercase();
        cx.io(stream.as_raw_fd(), Interest::WRITABLE, || stream.write(&upper)).unwrap();
    });
    let (client_ticks, client_done) = (ticks.clone(), done.clone());
    hub.spawn(move |cx| {
        // Non-blocking: the connection is in progress, and a write before it is up is WouldBlock.
        let mut stream = TcpStream::connect(address).unwrap();
        cx.io(stream.as_raw_fd(), Interest::WRITABLE, || stream.write(b"hello, hub")).unwrap();
        let before = client_ticks.get();
        let mut buf = [0; 64];
        let n = cx.io(stream.as_raw_fd(), Interest::READABLE, || stream.read(&mut buf)).unwrap();
        let ticked = client_ticks.get() > before;
        client_done.set(true);
        println!("step 3, sockets: sent \"hello, hub\", got back {:?}", str::from_utf8(&buf[..n]));
        println!("step 3, the ticker ticked while the client waited for the reply: {ticked}");
    });
    hub.spawn(move |cx| {
        while !done.get() {
            cx.sleep(Duration::from_millis(1)); // deadlines before the server's 20 ms one
            ticks.set(ticks.get() + 1);
        }
    });
    hub.run();
    Ok(())
}
