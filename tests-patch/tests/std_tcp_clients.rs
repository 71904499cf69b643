//! `std::net::TcpStream` clients in 50 coroutines of one hub, against a server that answers
//! 200 ms after a request arrives: with the patch they all have a request in flight at once,
//! and a ticker coroutine keeps ticking meanwhile.
//!
//! No timing assertion: the server holds every reply until all 50 requests are in flight and
//! the ticker has ticked while they were (a hub blocked by one client would never get there;
//! the server then gives up after its safety net and the assertions fail).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use greenhub_patch_tests::{Protocol, slow_server, spawn_ticker};

const CLIENTS: usize = 50;

#[test]
fn fifty_std_tcp_clients_overlap_and_a_ticker_keeps_ticking() {
    greenhub::patch::install();
    let (addr, stats) = slow_server(Protocol::Line, CLIENTS, Duration::from_millis(200));
    greenhub::run(|| {
        let ticker = spawn_ticker(stats.clone(), CLIENTS);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                greenhub::spawn(move || {
                    let mut conn = TcpStream::connect(addr).unwrap();
                    writeln!(conn, "request {i}").unwrap();
                    let mut reply = String::new();
                    BufReader::new(conn).read_line(&mut reply).unwrap();
                    reply
                })
            })
            .collect();
        for (i, client) in clients.into_iter().enumerate() {
            assert_eq!(client.join().unwrap(), format!("request {i}\n"));
        }
        let ticks = ticker.join().unwrap();
        assert!(ticks >= 1, "the ticker never ran while the requests waited");
    });
    assert_eq!(stats.peak(), CLIENTS, "the clients did not all have a request in flight at once");
    assert_eq!(stats.served(), CLIENTS);
}
