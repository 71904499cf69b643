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

/// What the front of a receive buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request of `len` bytes (head and body); `close`: the client asked to close the
    /// connection after it (`Connection: close`, or HTTP/1.0 without `keep-alive`).
    Request {
        /// Bytes of the request, head and body.
        len: usize,
        /// Close after answering it.
        close: bool,
    },
    /// Not a whole request yet: read more.
    Partial,
    /// A request that gets this error status, after which the connection closes.
    Invalid(Status),
}

/// Looks at the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let Some(head_len) = head_end(buf) else {
        return if buf.len() > MAX_HEAD {
            Parsed::Invalid(Status::HeadTooLarge)
        } else {
            Parsed::Partial
        };
    };
    if head_len > MAX_HEAD {
        return Parsed::Invalid(Status::HeadTooLarge);
    }
    match parse_head(&buf[..head_len - 4]) {
        Err(status) => Parsed::Invalid(status),
        Ok(head) if head.body_len > MAX_BODY => Parsed::Invalid(Status::PayloadTooLarge),
        Ok(head) if buf.len() - head_len < head.body_len => Parsed::Partial,
        Ok(head) => Parsed::Request { len: head_len + head.body_len, close: head.close },
    }
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
                respond(output, status, true, extra_headers);
                break true;
            }
            Parsed::Request { len, close } => {
                let close = close || close_now;
                respond(output, Status::Ok, close, extra_headers);
                done += len;
                if close {
                    break true;
                }
            }
        }
    };
    input.drain(..done);
    close
}

/// Appends one response (the plaintext body for 200, the status line as body otherwise).
pub fn respond(output: &mut Vec<u8>, status: Status, close: bool, extra_headers: &str) {
    let body = if status == Status::Ok { BODY } else { status.line() };
    let connection = if close { "close" } else { "keep-alive" };
    output.extend_from_slice(b"HTTP/1.1 ");
    output.extend_from_slice(status.line().as_bytes());
    output
        .extend_from_slice(b"\r\nServer: greenhub\r\nContent-Type: text/plain\r\nContent-Length: ");
    output.extend_from_slice(body.len().to_string().as_bytes());
    output.extend_from_slice(b"\r\nConnection: ");
    output.extend_from_slice(connection.as_bytes());
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(extra_headers.as_bytes());
    output.extend_from_slice(b"\r\n");
    output.extend_from_slice(body.as_bytes());
}

/// The index just past a head's closing `\r\n\r\n` (of a request or a response).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        if at >= 3 && &buf[at - 3..=at] == b"\r\n\r\n" {
            return Some(at + 1);
        }
        from = at + 1;
    }
    None
}

/// What the server needs from a head.
struct Head {
    close: bool,
    body_len: usize,
}

/// Parses a head (without its final `\r\n\r\n`): the request line, then the headers that say
/// whether the connection stays open and how long the body is.
fn parse_head(head: &[u8]) -> Result<Head, Status> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
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
    let mut head = Head { close: http10, body_len: 0 };
    for line in lines {
        let colon = line.iter().position(|&b| b == b':').ok_or(Status::BadRequest)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(Status::BadRequest); // also a folded continuation line
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                head.close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                head.close = false;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            head.body_len = content_length(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Status::LengthRequired);
        }
    }
    Ok(head)
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
        assert_eq!(parse(GET), Parsed::Request { len: GET.len(), close: false });
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
        assert_eq!(parse(close), Parsed::Request { len: close.len(), close: true });
        let old = b"GET / HTTP/1.0\r\n\r\n";
        assert_eq!(parse(old), Parsed::Request { len: old.len(), close: true });
        let kept = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert_eq!(parse(kept), Parsed::Request { len: kept.len(), close: false });
    }

    #[test]
    fn a_body_is_waited_for_and_skipped() {
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(&post[..post.len() - 1]), Parsed::Partial);
        assert_eq!(parse(post), Parsed::Request { len: post.len(), close: false });
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
    fn stopping_answers_one_request_with_close() {
        let mut input = [GET, GET].concat();
        let mut output = Vec::new();
        assert!(answer(&mut input, &mut output, "X-Worker: 7\r\n", true));
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches("HTTP/1.1").count(), 1);
        assert!(text.contains("Connection: close\r\nX-Worker: 7\r\n\r\nHello, World!"));
    }
}
