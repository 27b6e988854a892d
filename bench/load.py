"""A closed-loop HTTP/1.1 load generator: N keep-alive connections driven by one thread.

One thread with a selector, prebuilt request bytes and a minimal response parser keep the
generator's own CPU cost per request far below the server's (it is reported with every run,
since on a 2-core machine the generator and the server share the CPU).
"""

import selectors
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """What one run measured: one (tag, finished at, latency s, status) per response."""

    records: list = field(default_factory=list)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    kept: list = field(default_factory=list)
    exhausted: bool = False
    started: float = 0.0  # perf_counter when the first request went out

    @property
    def rate(self):
        return len(self.records) / self.elapsed if self.elapsed else 0.0


def request(method, path, body=b"", headers=None):
    """The bytes of one HTTP/1.1 request to the loopback server."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse(buffer):
    """(status, headers block, body, rest) of the first complete response, or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buffer) < end + 4 + length:
        return None
    status = int(head[9:12])
    return status, head, buffer[end + 4:end + 4 + length], buffer[end + 4 + length:]


class _Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.tag = None
        self.started = 0.0


def drive(port, next_request, concurrency, duration, keep=False):
    """Send next_request() -> (tag, bytes) or None over `concurrency` connections for
    `duration` seconds; in-flight requests finish and count. keep=True keeps each response."""
    run = Run()
    selector = selectors.DefaultSelector()
    conns = [_Conn(port) for _ in range(concurrency)]
    cpu0, start = time.process_time(), time.perf_counter()
    run.started = start
    deadline, busy = start + duration, 0

    def send(conn):
        item = next_request()
        if item is None:
            run.exhausted = True
            return False
        conn.tag, data = item
        conn.started = time.perf_counter()
        conn.sock.sendall(data)
        return True

    for conn in conns:
        if send(conn):
            selector.register(conn.sock, selectors.EVENT_READ, conn)
            busy += 1
    while busy:
        ready = selector.select(timeout=60)
        if not ready:
            raise TimeoutError("no response for 60 s")
        for key, _ in ready:
            conn = key.data
            chunk = conn.sock.recv(262144)
            if not chunk:
                raise ConnectionError("server closed a keep-alive connection")
            conn.buffer += chunk
            reply = parse(conn.buffer)
            if reply is None:
                continue
            status, head, body, conn.buffer = reply
            now = time.perf_counter()
            run.records.append((conn.tag, now, now - conn.started, status))
            if keep:
                run.kept.append((conn.tag, head, body))
            if now >= deadline or not send(conn):
                selector.unregister(conn.sock)
                busy -= 1
    run.elapsed = time.perf_counter() - start
    run.client_cpu = time.process_time() - cpu0
    for conn in conns:
        conn.sock.close()
    selector.close()
    return run
