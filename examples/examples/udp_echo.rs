//! udp_echo: gevent's `udp_server.py` and `udp_client.py` in one program: a UDP echo server and
//! two clients, coroutines of one hub.
//!
//! Teaches: `greenhub::net::UdpSocket` has std's shape (`bind`, `connect`, `send_to`,
//! `recv_from`, `send`, `recv`), and `recv`/`recv_from` suspend only the calling coroutine until
//! a datagram arrives. A UDP server needs no coroutine per client: one loop answers every peer
//! at the address its datagram came from. A `timeout` around `recv` is how a client gives up on
//! a datagram that never comes (UDP does not retransmit).
//!
//! Run it:
//!
//! ```text
//! cargo run --release -p examples --example udp_echo
//! ```
//!
//! Expected output (the server binds a port the OS picks):
//!
//! ```text
//! udp echo server on 127.0.0.1:{port}
//! client a: sent "a: hello 0", got back "A: HELLO 0"
//! client b: sent "b: hello 0", got back "B: HELLO 0"
//! client a: sent "a: hello 1", got back "A: HELLO 1"
//! client b: sent "b: hello 1", got back "B: HELLO 1"
//! client a: sent "a: hello 2", got back "A: HELLO 2"
//! client b: sent "b: hello 2", got back "B: HELLO 2"
//! client a: a datagram the server drops: no answer within 50ms (timeout)
//! server: answered 6 datagrams from 2 peers
//! ```

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use greenhub::net::UdpSocket;
use greenhub::sync::Event;

const ROUNDS: usize = 3;

fn main() -> io::Result<()> {
    greenhub::run(|| {
        let server = UdpSocket::bind("127.0.0.1:0")?;
        let addr = server.local_addr()?;
        println!("udp echo server on {addr}");
        let serving = greenhub::spawn(move || serve(&server));

        let a = UdpSocket::bind("127.0.0.1:0")?;
        let b = UdpSocket::bind("127.0.0.1:0")?;
        a.connect(addr)?;
        b.connect(addr)?;
        // The two clients take turns: each round, a then b (an Event per turn keeps the output
        // in a fixed order).
        let turns: Vec<Event> = (0..2 * ROUNDS).map(|_| Event::new()).collect();
        let turns = std::rc::Rc::new(turns);
        let clients: Vec<_> = [("a", a, 0), ("b", b, 1)]
            .into_iter()
            .map(|(name, socket, first)| {
                let turns = turns.clone();
                greenhub::spawn(move || -> io::Result<UdpSocket> {
                    for round in 0..ROUNDS {
                        let turn = 2 * round + first;
                        if turn > 0 {
                            turns[turn - 1].wait();
                        }
                        let message = format!("{name}: hello {round}");
                        let reply = echo(&socket, &message)?;
                        println!("client {name}: sent {message:?}, got back {reply:?}");
                        turns[turn].set();
                    }
                    Ok(socket)
                })
            })
            .collect();
        let mut sockets = Vec::new();
        for client in clients {
            sockets.push(client.join().expect("a client panicked")?);
        }

        let a = &sockets[0];
        a.send(b"drop me")?;
        let mut buf = [0u8; 64];
        match greenhub::timeout(Duration::from_millis(50), || a.recv(&mut buf)) {
            Err(_elapsed) => {
                println!("client a: a datagram the server drops: no answer within 50ms (timeout)")
            }
            Ok(got) => println!("client a: unexpected answer {got:?}"),
        }

        a.send(b"quit")?;
        let (answered, peers) = serving.join().expect("the server panicked")?;
        println!("server: answered {answered} datagrams from {peers} peers");
        Ok(())
    })
}

/// Sends `message` on a connected socket and waits for the one datagram that answers it.
fn echo(socket: &UdpSocket, message: &str) -> io::Result<String> {
    socket.send(message.as_bytes())?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Answers every datagram with its upper-case copy, to the address it came from; ignores
/// "drop me", ends on "quit". Returns how many it answered and from how many peers.
fn serve(socket: &UdpSocket) -> io::Result<(usize, usize)> {
    let mut buf = [0u8; 1500];
    let mut peers: HashSet<SocketAddr> = HashSet::new();
    let mut answered = 0;
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        match &buf[..n] {
            b"quit" => return Ok((answered, peers.len())),
            b"drop me" => continue,
            datagram => {
                socket.send_to(&datagram.to_ascii_uppercase(), from)?;
                answered += 1;
                peers.insert(from);
            }
        }
    }
}
