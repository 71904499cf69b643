//! HTTP/1.1 on the wire, just enough for a keep-alive "Hello, World!" server (TechEmpower's
//! plaintext test): find each whole request in the bytes received, decide whether the connection
//! stays open, and write the responses. Pure code over byte buffers, shared by
//! `examples/prefork_server.rs` and the benchmark's HTTP rows (`bench/src/http_servers.rs`
//! includes this file), so every server measured parses and answers with the same code.
//!
//! Guarantee: bytes from the peer are untrusted; a malformed head, a head over [`MAX_HEAD`] bytes
//! or a body over [`MAX_BODY`] gets an error response and the connection closes, never a panic or
//! an allocation the peer did not pay for. Not supported: chunked request bodies (answered with
//! `411 Length Required`), header lines folded over several lines (answered with 400).

/// The body of every successful response.
pub const BODY: &str = "Hello, World!";

/// The largest request head accepted (request line and headers), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// The largest request body accepted (it is read and ignored), in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// The status of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200: the body is [`BODY`].
    Ok,
    /// 400: the head is not HTTP/1.x.
    BadRequest,
    /// 411: a body without `Content-Length` (chunked).
    LengthRequired,
    /// 413: a body over [`MAX_BODY`].
    PayloadTooLarge,
    /// 431: a head over [`MAX_HEAD`].
    HeadTooLarge,
}

impl Status {
    /// The status line's code and reason.
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

/// What happens to the connection after a response, and what the response says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1's default: the connection stays open and the response has no `Connection`
    /// header (RFC 9112, 9.3). Sending `Connection: keep-alive` anyway costs every client a
    /// header to match: wrk's parser spent ~25% more CPU per pipelined response with it, and
    /// wrk's CPU is what limits the benchmark's requests/s.
    Persistent,
    /// An HTTP/1.0 client asked to keep the connection: `Connection: keep-alive` (HTTP/1.0
    /// closes without it).
    KeepAlive,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

/// What the front of a receive buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request of `len` bytes (head and body), and what becomes of the connection after
    /// it (`Close`: the client sent `Connection: close`, or is HTTP/1.0 without `keep-alive`).
    Request {
        /// Bytes of the request, head and body.
        len: usize,
        /// Whether the connection stays open after the answer, and the header that says so.
        connection: Connection,
    },
    /// Not a whole request yet: read more.
    Partial,
    /// A request that gets this error status, after which the connection closes.
    Invalid(Status),
}

/// Looks at the first request in `buf`, in one pass over its head: each line is checked when
/// it is found, and the first error is kept until the head's end (`\r\n\r\n`) is seen, so a head
/// that is still arriving is `Partial` whatever it holds so far.
pub fn parse(buf: &[u8]) -> Parsed {
    // Only the first MAX_HEAD bytes can hold an acceptable head.
    let mut lines = Lines { buf: &buf[..buf.len().min(MAX_HEAD)], at: 0 };
    let Some(request_line) = lines.next() else {
        return partial_or_too_large(buf);
    };
    let mut checked = check_request_line(strip_cr(request_line)).map(|http10| Head {
        http10,
        close: http10,
        body_len: 0,
    });
    let mut ended_in_cr = request_line.ends_with(b"\r");
    let head_len = loop {
        let Some(line) = lines.next() else {
            return partial_or_too_large(buf);
        };
        if line == b"\r" && ended_in_cr {
            break lines.at; // the blank line after a line ending in \r: `\r\n\r\n`
        }
        ended_in_cr = line.ends_with(b"\r");
        if let Ok(head) = &mut checked
            && let Err(status) = head.take_header(strip_cr(line))
        {
            checked = Err(status);
        }
    };
    match checked {
        Err(status) => Parsed::Invalid(status),
        Ok(head) if buf.len() - head_len < head.body_len => Parsed::Partial,
        Ok(head) => {
            Parsed::Request { len: head_len + head.body_len, connection: head.connection() }
        }
    }
}

/// No whole head in `buf`: more may come, unless it is already over [`MAX_HEAD`].
fn partial_or_too_large(buf: &[u8]) -> Parsed {
    if buf.len() > MAX_HEAD { Parsed::Invalid(Status::HeadTooLarge) } else { Parsed::Partial }
}

/// The lines of a buffer, each without its `\n` (a trailing `\r` stays, for the head's end);
/// a last line without `\n` is not one yet.
struct Lines<'a> {
    buf: &'a [u8],
    /// Where the next line starts: after the last `\n` found.
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.at..];
        let len = memchr::memchr(b'\n', rest)?;
        self.at += len + 1;
        Some(&rest[..len])
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Answers every whole request at the front of `input`, appending the responses to `output`
/// and removing the requests from `input` (a partial one stays for the next read). Each response
/// carries `extra_headers` (whole `Name: value\r\n` lines, or empty). `close_now`: answer at most
/// one more request, with `Connection: close` (the server is stopping). Returns true when the
/// connection must close once `output` is written.
pub fn answer(
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    extra_headers: &str,
    close_now: bool,
) -> bool {
    let mut done = 0;
    let close = loop {
        match parse(&input[done..]) {
            Parsed::Partial => break false,
            Parsed::Invalid(status) => {
                respond(output, status, Connection::Close, extra_headers);
                break true;
            }
            Parsed::Request { len, connection } => {
                let connection = if close_now { Connection::Close } else { connection };
                respond(output, Status::Ok, connection, extra_headers);
                done += len;
                if connection == Connection::Close {
                    break true;
                }
            }
        }
    };
    input.drain(..done);
    close
}

/// Appends one response (the plaintext body for 200, the status line as body otherwise), with
/// the `Connection` header that `connection` needs.
pub fn respond(output: &mut Vec<u8>, status: Status, connection: Connection, extra_headers: &str) {
    let body = if status == Status::Ok { BODY } else { status.line() };
    let connection_header: &[u8] = match connection {
        Connection::Persistent => b"",
        Connection::KeepAlive => b"Connection: keep-alive\r\n",
        Connection::Close => b"Connection: close\r\n",
    };
    output.extend_from_slice(b"HTTP/1.1 ");
    output.extend_from_slice(status.line().as_bytes());
    output
        .extend_from_slice(b"\r\nServer: greenhub\r\nContent-Type: text/plain\r\nContent-Length: ");
    push_decimal(output, body.len());
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(connection_header);
    output.extend_from_slice(extra_headers.as_bytes());
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(body.as_bytes());
}

/// Appends `n` in decimal, without the allocation of `to_string` (one per response).
fn push_decimal(output: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20]; // usize::MAX has 20 digits
    let mut from = digits.len();
    loop {
        from -= 1;
        digits[from] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    output.extend_from_slice(&digits[from..]);
}

/// The index just past a head's closing `\r\n\r\n` (of a request or a response).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|at| at + 4)
}

/// What the server needs from a head.
struct Head {
    /// The request is HTTP/1.0 (whose connections close unless it asks for keep-alive).
    http10: bool,
    close: bool,
    body_len: usize,
}

/// Checks a request line (without its line end); whether it is HTTP/1.0.
fn check_request_line(line: &[u8]) -> Result<bool, Status> {
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let method_ok = method.is_some_and(|m| !m.is_empty() && m.iter().all(u8::is_ascii_uppercase));
    let target_ok = target.is_some_and(|t| t.first() == Some(&b'/') || t == b"*");
    let http10 = version == Some(b"HTTP/1.0");
    if !method_ok
        || !target_ok
        || !(http10 || version == Some(b"HTTP/1.1"))
        || parts.next().is_some()
    {
        return Err(Status::BadRequest);
    }
    Ok(http10)
}

impl Head {
    fn connection(&self) -> Connection {
        match (self.close, self.http10) {
            (true, _) => Connection::Close,
            (false, true) => Connection::KeepAlive,
            (false, false) => Connection::Persistent,
        }
    }

    /// Checks one header line (without its line end) and keeps what it says about the
    /// connection and the body.
    fn take_header(&mut self, line: &[u8]) -> Result<(), Status> {
        let colon = memchr::memchr(b':', line).ok_or(Status::BadRequest)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(Status::BadRequest); // also a folded continuation line
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                self.close = false;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.body_len = content_length(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Status::LengthRequired);
        }
        Ok(())
    }
}

/// A `Content-Length` value: decimal digits only, at most [`MAX_BODY`] (larger values say 413).
fn content_length(value: &[u8]) -> Result<usize, Status> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Status::BadRequest);
    }
    let mut n: usize = 0;
    for &d in value {
        n = n * 10 + usize::from(d - b'0');
        if n > MAX_BODY {
            return Err(Status::PayloadTooLarge);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn a_whole_request_and_a_partial_one() {
        assert_eq!(
            parse(GET),
            Parsed::Request { len: GET.len(), connection: Connection::Persistent }
        );
        assert_eq!(parse(&GET[..GET.len() - 1]), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
    }

    #[test]
    fn pipelined_requests_are_answered_in_one_batch() {
        let mut input = [GET, GET, GET, &GET[..10]].concat();
        let mut output = Vec::new();
        assert!(!answer(&mut input, &mut output, "", false));
        assert_eq!(input, &GET[..10]);
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3);
        assert_eq!(text.matches(BODY).count(), 3);
    }

    #[test]
    fn connection_close_and_http10() {
        let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert_eq!(
            parse(close),
            Parsed::Request { len: close.len(), connection: Connection::Close }
        );
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(parse(old), Parsed::Request { len: old.len(), connection: Connection::Close });
        let kept = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(
            parse(kept),
            Parsed::Request { len: kept.len(), connection: Connection::KeepAlive }
        );
    }

    #[test]
    fn a_body_is_waited_for_and_skipped() {
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(&post[..post.len() - 1]), Parsed::Partial);
        assert_eq!(
            parse(post),
            Parsed::Request { len: post.len(), connection: Connection::Persistent }
        );
    }

    #[test]
    fn garbage_gets_an_error_and_closes() {
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Parsed::Invalid(Status::BadRequest), "{bad:?}");
        }
        let mut input = b"BAD\r\n\r\n".to_vec();
        let mut output = Vec::new();
        assert!(answer(&mut input, &mut output, "", false));
        assert!(output.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn oversized_heads_and_bodies_are_refused_without_allocating() {
        let huge = b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n";
        assert_eq!(parse(huge), Parsed::Invalid(Status::PayloadTooLarge));
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse(&endless), Parsed::Invalid(Status::HeadTooLarge));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(chunked), Parsed::Invalid(Status::LengthRequired));
    }

    #[test]
    fn an_error_waits_for_the_end_of_its_head() {
        let bad = b"get / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 1..bad.len() {
            assert_eq!(parse(&bad[..cut]), Parsed::Partial, "{:?}", &bad[..cut]);
        }
        assert_eq!(parse(bad), Parsed::Invalid(Status::BadRequest));
    }

    #[test]
    fn only_crlf_crlf_ends_a_head() {
        assert_eq!(parse(b"GET / HTTP/1.1\n\n"), Parsed::Partial);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\n\r\n"), Parsed::Partial);
        let bare = b"GET / HTTP/1.1\nHost: x\r\n\r\n"; // a bare \n inside is a line end
        assert_eq!(
            parse(bare),
            Parsed::Request { len: bare.len(), connection: Connection::Persistent }
        );
        let blank = b"GET / HTTP/1.1\r\n\n\r\n\r\n"; // an empty header line is no header
        assert_eq!(parse(blank), Parsed::Invalid(Status::BadRequest));
    }

    #[test]
    fn a_head_ends_where_its_first_crlf_crlf_does() {
        // Every string of up to 7 bytes over an alphabet of line-ending trouble, after a
        // request line: the head is whole exactly when `head_end` finds its end, and there.
        let alphabet = [b'\r', b'\n', b'a', b':'];
        for len in 0..=7u32 {
            for code in 0..alphabet.len().pow(len) {
                let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
                let mut c = code;
                for _ in 0..len {
                    buf.push(alphabet[c % alphabet.len()]);
                    c /= alphabet.len();
                }
                match (parse(&buf), head_end(&buf)) {
                    (Parsed::Partial, None) => {}
                    (Parsed::Request { len, .. }, Some(end)) => assert_eq!(len, end, "{buf:?}"),
                    (Parsed::Invalid(Status::BadRequest), Some(_)) => {}
                    (parsed, end) => panic!("{buf:?}: {parsed:?} but head_end {end:?}"),
                }
            }
        }
    }

    #[test]
    fn a_head_of_exactly_max_head_bytes_is_accepted() {
        let start = b"GET / HTTP/1.1\r\nX: ";
        let filler = MAX_HEAD - start.len() - 4;
        let mut head = [&start[..], &vec![b'a'; filler], b"\r\n\r\n"].concat();
        assert_eq!(head.len(), MAX_HEAD);
        assert_eq!(
            parse(&head),
            Parsed::Request { len: MAX_HEAD, connection: Connection::Persistent }
        );
        head.insert(start.len(), b'a');
        assert_eq!(parse(&head), Parsed::Invalid(Status::HeadTooLarge));
    }

    #[test]
    fn content_length_is_written_in_decimal() {
        for n in [0, 7, 13, 100, 4096, usize::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn stopping_answers_one_request_with_close() {
        let mut input = [GET, GET].concat();
        let mut output = Vec::new();
        assert!(answer(&mut input, &mut output, "X-Worker: 7\r\n", true));
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches("HTTP/1.1").count(), 1);
        assert!(text.contains("Connection: close\r\nX-Worker: 7\r\n\r\nHello, World!"));
    }

    #[test]
    fn only_a_response_that_changes_the_default_says_connection() {
        let answer_to = |request: &[u8]| {
            let (mut input, mut output) = (request.to_vec(), Vec::new());
            let close = answer(&mut input, &mut output, "", false);
            (String::from_utf8(output).unwrap(), close)
        };
        // HTTP/1.1 stays open by default: no header.
        let (text, close) = answer_to(GET);
        assert!(!close && !text.contains("Connection:"), "{text}");
        // HTTP/1.0 closes by default: a kept connection says so.
        let (text, close) = answer_to(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!close && text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
        for closing in
            [&b"GET / HTTP/1.0\r\n\r\n"[..], b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"]
        {
            let (text, close) = answer_to(closing);
            assert!(close && text.contains("\r\nConnection: close\r\n"), "{text}");
        }
        let (text, close) = answer_to(b"GET / HTTP/2\r\n\r\n");
        assert!(close && text.starts_with("HTTP/1.1 400") && text.contains("Connection: close"));
    }
}
