"""A misbehaving billing on a loopback port, written on raw sockets so it can trickle.

Each connection reads one request, then answers as `mode` says: "ok" (204), "trickle-headers"
(a status line, then one header byte every `pace` seconds for ever), "trickle-body" (headers,
then one body byte every `pace` seconds), "huge" (a 256 MiB body from a generator), "chunked"
(an endless chunked body). It counts, per webhook-id, the requests in flight and the most ever
in flight at once, and notes every connection the client closed under it.
"""

import socket
import threading
from collections import Counter


class SlowBilling:
    def __init__(self, mode="ok", pace=0.2):
        self.mode, self.pace = mode, pace
        self.lock = threading.Condition()
        self.requests = Counter()
        self.in_flight = Counter()
        self.max_in_flight = Counter()
        self.closed = 0  # connections the client hung up while we were still sending
        self.stopping = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping.set()
        self.sock.close()

    def wait_for(self, predicate, timeout=30):
        """Block until predicate(self) holds, or fail after timeout seconds."""
        with self.lock:
            assert self.lock.wait_for(lambda: predicate(self), timeout), "condition not met"

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        while len(body) < int(headers.get("content-length", 0)):
            body += conn.recv(65536)
        return headers

    def _serve(self, conn):
        with conn:
            headers = self._read_request(conn)
            if headers is None:
                return
            msg_id = headers.get("webhook-id", "")
            with self.lock:
                self.requests[msg_id] += 1
                self.in_flight[msg_id] += 1
                self.max_in_flight[msg_id] = max(self.max_in_flight[msg_id],
                                                 self.in_flight[msg_id])
                self.lock.notify_all()
            try:
                self._answer(conn)
            except OSError:  # the client hung up on us
                with self.lock:
                    self.closed += 1
            finally:
                with self.lock:
                    self.in_flight[msg_id] -= 1
                    self.lock.notify_all()

    def _answer(self, conn):
        if self.mode == "ok":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            return
        if self.mode == "trickle-headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            self._trickle(conn)
        elif self.mode == "trickle-body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            self._trickle(conn)
        elif self.mode == "huge":
            size = 256 * 1024 * 1024
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for chunk in (b"x" * 65536 for _ in range(size // 65536)):
                conn.sendall(chunk)
        elif self.mode == "chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    def _trickle(self, conn):
        """One byte every pace seconds until the client closes (an OSError) or we stop."""
        while not self.stopping.wait(self.pace):
            conn.sendall(b"x")
        raise OSError("server stopped")  # never reached in a passing test
