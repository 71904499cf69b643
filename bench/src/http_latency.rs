//! Latency under pipelining, measured by this program rather than by wrk.
//!
//! wrk's percentiles are not sound when it pipelines. After a run it corrects for coordinated
//! omission (`stats_correct` in its `stats.c`): for every recorded latency `n` it adds samples at
//! `n - e`, `n - 2e`, ... down to `e`, where `e` is the run time over the responses per
//! connection. Pipelining `depth` requests makes `e` `depth` times shorter than a batch's round
//! trip, so most of the samples are synthetic and many fall below the fastest real one, where
//! its percentile scan (which starts at the minimum it recorded) never counts them: the p99 comes
//! out as 0 and the p50 is taken over a distribution that is mostly made up.
//!
//! [`pipelined`] loads the server as wrk does (the same connections, the same request bytes,
//! `depth` of them in one write, the next write once all their responses are in) for a fixed
//! time, and records each request's latency, from its batch's write to the read that completed
//! its response, with nothing added.

use std::io::{self, Read as _, Write as _};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The p50 and p99 of the request latencies one load measured, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Loads `127.0.0.1:port` with `connections` keep-alive connections, each with `depth` requests in
/// flight, for `duration`; the latency percentiles of the requests answered.
pub fn pipelined(
    port: u16,
    connections: usize,
    depth: usize,
    duration: Duration,
) -> io::Result<Percentiles> {
    // What wrk sends for `wrk.format()` with no arguments.
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let batch = request.repeat(depth).into_bytes();
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
        conns.push(Connection { stream, input: Vec::new(), sent_ns: 0, waiting: 0 });
    }
    let clock = Instant::now();
    let now_ns = || clock.elapsed().as_nanos() as u64;
    let mut latencies_ns: Vec<u64> = Vec::new();
    for conn in &mut conns {
        conn.send(&batch, depth, now_ns())?;
    }
    let mut events = Events::with_capacity(connections);
    while clock.elapsed() < duration {
        poll.poll(&mut events, Some(duration.saturating_sub(clock.elapsed())))?;
        for event in &events {
            let conn = &mut conns[event.token().0];
            let answered = conn.receive()?;
            let at = now_ns();
            latencies_ns.extend(std::iter::repeat_n(at - conn.sent_ns, answered));
            conn.waiting -= answered;
            if conn.waiting == 0 {
                conn.send(&batch, depth, at)?;
            }
        }
    }
    percentiles(&mut latencies_ns)
        .ok_or_else(|| io::Error::other("no request was answered within the measurement"))
}

/// One connection: the bytes of responses not yet complete, and its batch in flight.
struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    /// When the batch in flight was written (ns since the load started).
    sent_ns: u64,
    /// Responses of that batch still to come.
    waiting: usize,
}

impl Connection {
    /// Writes a batch of `depth` requests (a fresh socket's buffer holds a batch of a few hundred
    /// bytes, and the last batch's responses are all in, so the write does not block).
    fn send(&mut self, batch: &[u8], depth: usize, now_ns: u64) -> io::Result<()> {
        self.stream.write_all(batch)?;
        self.sent_ns = now_ns;
        self.waiting = depth;
        Ok(())
    }

    /// Reads what has arrived (edge-triggered: until the socket is drained); how many responses
    /// it completed.
    fn receive(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::Error::other("the server closed a connection under load")),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut answered = 0;
        let mut start = 0;
        while let Some(len) = response_len(&self.input[start..])? {
            start += len;
            answered += 1;
        }
        self.input.drain(..start);
        if answered > self.waiting {
            return Err(io::Error::other("the server answered more requests than were sent"));
        }
        Ok(answered)
    }
}

/// The length of the complete response at the start of `bytes` (head and `Content-Length` body),
/// or `None` while it is incomplete.
fn response_len(bytes: &[u8]) -> io::Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("a malformed response: {e}"))),
    };
    if response.code != Some(200) {
        return Err(io::Error::other(format!("a response with status {:?}", response.code)));
    }
    let body = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or_else(|| io::Error::other("a response without a Content-Length"))?;
    Ok((bytes.len() >= head + body).then_some(head + body))
}

/// The p50 and p99 of `samples` (ns), nearest-rank; `None` if there are none.
fn percentiles(samples: &mut [u64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1] as f64 / 1e6
    };
    Some(Percentiles { p50_ms: at(0.50), p99_ms: at(0.99) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

    #[test]
    fn a_response_is_complete_with_its_whole_body() {
        assert_eq!(response_len(RESPONSE).unwrap(), Some(RESPONSE.len()));
        assert_eq!(response_len(&RESPONSE[..RESPONSE.len() - 1]).unwrap(), None);
        assert_eq!(response_len(&RESPONSE[..20]).unwrap(), None);
        let two = [RESPONSE, RESPONSE].concat();
        assert_eq!(response_len(&two).unwrap(), Some(RESPONSE.len()));
    }

    #[test]
    fn a_response_that_is_not_a_200_with_a_length_is_an_error() {
        assert!(response_len(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(response_len(b"garbage\r\n\r\n").is_err());
    }

    /// A server on a free loopback port, each connection on its own thread: `answer` gets what
    /// one read brought and writes the reply (or drops the stream).
    fn serve(answer: fn(&mut std::net::TcpStream, &[u8]) -> io::Result<()>) -> u16 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if answer(&mut stream, &buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    /// One response per request head in `read` (whole requests: the client writes a batch at once).
    fn answer_each(stream: &mut std::net::TcpStream, read: &[u8]) -> io::Result<()> {
        let requests = read.windows(4).filter(|w| w == b"\r\n\r\n").count();
        stream.write_all(&RESPONSE.repeat(requests))
    }

    #[test]
    fn a_pipelined_load_records_every_answered_request() {
        let port = serve(answer_each);
        let measured = pipelined(port, 3, 4, Duration::from_millis(50)).unwrap();
        assert!(measured.p50_ms > 0.0, "{measured:?}");
        assert!(measured.p99_ms >= measured.p50_ms, "{measured:?}");
        assert!(measured.p99_ms < 50.0, "no request waits past the load: {measured:?}");
    }

    #[test]
    fn a_server_that_hangs_up_or_answers_too_much_fails_the_load() {
        let closes = serve(|_, _| Err(io::Error::other("hang up")));
        let error = pipelined(closes, 2, 4, Duration::from_millis(50)).unwrap_err();
        assert!(error.to_string().contains("closed a connection"), "{error}");
        let doubles = serve(|stream, read| {
            answer_each(stream, read)?;
            answer_each(stream, read)
        });
        let error = pipelined(doubles, 1, 4, Duration::from_millis(50)).unwrap_err();
        assert!(error.to_string().contains("more requests than were sent"), "{error}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentiles(&mut samples), Some(Percentiles { p50_ms: 50.0, p99_ms: 99.0 }));
        assert_eq!(percentiles(&mut [3_000_000]), Some(Percentiles { p50_ms: 3.0, p99_ms: 3.0 }));
        assert_eq!(percentiles(&mut []), None);
    }
}
