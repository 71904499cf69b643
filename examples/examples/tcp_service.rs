//! A tiny request/response service over TCP between two greenhub processes started separately:
//! `Duplex::from_tcp` speaks the pipe protocol (framed postcard messages) over a socket, so a
//! client and a server on two hosts talk exactly as a parent and its child do over a pipe.
//!
//! It teaches `Duplex::from_tcp` on both ends, one coroutine per connection on the server, and
//! typed requests and responses (serde enums). Run without arguments, the example starts itself
//! twice, as a server (`tcp_service server`, which binds port 0 and prints the port it got) and
//! then as a client (`tcp_service client PORT`); on two hosts, run those two commands yourself
//! (bind the server to an address the client can reach instead of 127.0.0.1).
//!
//! Run: `cargo run -p examples --example tcp_service`
//!
//! Expected output:
//! ```text
//! client: sum of [1, 2, 3, 4] = 10
//! client: upper of "greenhub" = "GREENHUB"
//! client: a request the server cannot answer: the server says "no such word: 7"
//! client: 3 requests answered; asking the server to stop
//! server: 1 connection, 4 requests, stopped by a client
//! both processes exited with 0
//! ```

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::rc::Rc;

use greenhub::net::{TcpListener, TcpStream};
use greenhub_ipc::{Command, Duplex, Error};
use serde::{Deserialize, Serialize};

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Sum(Vec<i64>),
    Upper(String),
    Word(u32),
    Stop,
}

/// What the server answers.
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Sum(i64),
    Upper(String),
    Refused(String),
    Stopping,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    greenhub::run(|| match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server"] => server(),
        ["client", port] => client(port.parse()?),
        [] => both(),
        _ => Err("usage: tcp_service [server | client PORT]".into()),
    })
}

/// Starts this program as a server, then as a client of it, and waits for both.
fn both() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut server = Command::new(&exe).arg("server").stdout(Stdio::piped()).spawn()?;
    let mut server_out = BufReader::new(server.take_stdout().expect("stdout was piped"));
    let mut first = String::new();
    server_out.read_line(&mut first)?;
    let port = first.trim().strip_prefix("port ").ok_or("the server did not say its port")?;
    let client = Command::new(&exe).args(["client", port]).spawn()?;
    let client_status = client.join()?;
    let server_status = server.join()?;
    let mut rest = String::new();
    server_out.read_to_string(&mut rest)?;
    print!("{rest}");
    if client_status.success() && server_status.success() {
        println!("both processes exited with 0");
        Ok(())
    } else {
        Err(format!("client: {client_status}, server: {server_status}").into())
    }
}

/// Serves connections, one coroutine each, until a client sends `Stop`.
fn server() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    let (connections, requests) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let stop = Rc::new(greenhub::sync::Event::new());
    let acceptor = greenhub::spawn({
        let (connections, requests, stop) = (connections.clone(), requests.clone(), stop.clone());
        move || -> std::io::Result<()> {
            loop {
                let (stream, _) = listener.accept()?;
                connections.set(connections.get() + 1);
                let (requests, stop) = (requests.clone(), stop.clone());
                greenhub::spawn(move || serve(stream, &requests, &stop));
            }
        }
    });
    stop.wait();
    acceptor.cancel();
    println!(
        "server: {} connection, {} requests, stopped by a client",
        connections.get(),
        requests.get()
    );
    Ok(())
}

/// One connection: answer each request until the client closes (or asks the server to stop).
fn serve(stream: TcpStream, requests: &Cell<u32>, stop: &greenhub::sync::Event) {
    let Ok(link) = Duplex::<Response, Request>::from_tcp(stream) else { return };
    loop {
        let request = match link.get() {
            Ok(request) => request,
            Err(Error::Eof) => return,
            Err(err) => return eprintln!("server: a connection failed: {err}"),
        };
        requests.set(requests.get() + 1);
        let response = match request {
            Request::Sum(numbers) => Response::Sum(numbers.iter().sum()),
            Request::Upper(text) => Response::Upper(text.to_uppercase()),
            Request::Word(n) => Response::Refused(format!("no such word: {n}")),
            Request::Stop => Response::Stopping,
        };
        let stopping = matches!(response, Response::Stopping);
        if link.put(&response).is_err() {
            return;
        }
        if stopping {
            stop.set();
        }
    }
}

/// Connects to the server on `port`, asks three questions, then asks it to stop.
fn client(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let link = Duplex::<Request, Response>::from_tcp(TcpStream::connect(("127.0.0.1", port))?)?;
    let numbers = vec![1, 2, 3, 4];
    link.put(&Request::Sum(numbers.clone()))?;
    if let Response::Sum(total) = link.get()? {
        println!("client: sum of {numbers:?} = {total}");
    }
    link.put(&Request::Upper("greenhub".into()))?;
    if let Response::Upper(text) = link.get()? {
        println!("client: upper of \"greenhub\" = {text:?}");
    }
    link.put(&Request::Word(7))?;
    if let Response::Refused(reason) = link.get()? {
        println!("client: a request the server cannot answer: the server says {reason:?}");
    }
    println!("client: 3 requests answered; asking the server to stop");
    link.put(&Request::Stop)?;
    match link.get()? {
        Response::Stopping => Ok(()),
        other => Err(format!("unexpected answer to Stop: {other:?}").into()),
    }
}
