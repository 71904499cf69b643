"""gevent's server of the HTTP/1.1 plaintext rows (bench/src/http_load.rs).

    bench/.venv/bin/python -u bench/py/gevent_http.py

Binds 127.0.0.1 on a free port, prints `port P`, and serves keep-alive "Hello, World!" until it is
killed: gevent.server.StreamServer, one greenlet per connection, every whole request received
answered in one sendall (pipelined requests too). TCP_NODELAY is set on each connection: without
it a response written while the previous one is unacknowledged waits for the client's delayed ACK
(~40 ms). The parser follows examples/src/http.rs (the Rust servers' wire code) and the response
bytes are the same as theirs.
"""

import socket
import sys

from gevent.server import StreamServer

BODY = b"Hello, World!"
MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20


def response(status, connection):
    """`connection`: None (HTTP/1.1's default, no header), b"keep-alive" or b"close"."""
    body = BODY if status == b"200 OK" else status
    header = b"" if connection is None else b"Connection: " + connection + b"\r\n"
    return (
        b"HTTP/1.1 " + status + b"\r\nServer: greenhub\r\nContent-Type: text/plain\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + header + b"\r\n" + body
    )


OK = response(b"200 OK", None)
OK_KEEP_ALIVE = response(b"200 OK", b"keep-alive")  # an HTTP/1.0 client that asked for it
OK_CLOSE = response(b"200 OK", b"close")


def parse_head(head):
    """(close, http10, body_len) of a request head without its final CRLF CRLF, or an error
    status."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if (len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper()
            or not (parts[1].startswith(b"/") or parts[1] == b"*")
            or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0")):
        return b"400 Bad Request"
    http10 = parts[2] == b"HTTP/1.0"
    close, body_len = http10, 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            return b"400 Bad Request"
        name, value = name.lower(), value.strip()
        if name == b"connection":
            if value.lower() == b"close":
                close = True
            elif value.lower() == b"keep-alive":
                close = False
        elif name == b"content-length":
            if not value.isdigit():
                return b"400 Bad Request"
            body_len = int(value)
            if body_len > MAX_BODY:
                return b"413 Payload Too Large"
        elif name == b"transfer-encoding":
            return b"411 Length Required"
    return close, http10, body_len


def answer(buf):
    """(responses, bytes consumed, close) for the whole requests at the front of buf."""
    out, done = [], 0
    while True:
        end = buf.find(b"\r\n\r\n", done)
        if end < 0:
            if len(buf) - done > MAX_HEAD:
                out.append(response(b"431 Request Header Fields Too Large", b"close"))
                return out, done, True
            return out, done, False
        if end + 4 - done > MAX_HEAD:
            out.append(response(b"431 Request Header Fields Too Large", b"close"))
            return out, done, True
        head = parse_head(buf[done:end])
        if isinstance(head, bytes):
            out.append(response(head, b"close"))
            return out, done, True
        close, http10, body_len = head
        if len(buf) - end - 4 < body_len:
            return out, done, False
        done = end + 4 + body_len
        out.append(OK_CLOSE if close else OK_KEEP_ALIVE if http10 else OK)
        if close:
            return out, done, True


def handle(sock, _address):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        data = sock.recv(16384)
        if not data:
            return
        buf += data
        out, done, close = answer(buf)
        buf = buf[done:]
        if out:
            sock.sendall(b"".join(out))
        if close:
            return


def main():
    server = StreamServer(("127.0.0.1", 0), handle, backlog=1024)
    server.start()
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
