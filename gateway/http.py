"""Outbound HTTP, through one class: a session per thread, a total deadline always, no
redirects, no ambient proxy, and at most MAX_BODY bytes of any reply kept.

requests' timeout bounds each socket operation, not the call: a peer trickling one byte a
second would hold it for ever. So every call runs under a watchdog timer that, at the deadline,
shuts down the socket of the connection carrying it (captured by the connection classes of our
own adapter); a call whose deadline passed before it sent anything does not send at all.
"""

import socket
import threading
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import TransportError

_local = threading.local()  # the watchdog of the call this thread is making, if any


class Deadline(TransportError):
    """A call ran past its total deadline and its connection was shut down."""


@dataclass(frozen=True)
class Reply:
    """What a peer answered: status, headers (a case-insensitive mapping) and up to a few KiB
    of body."""

    status: int
    headers: dict
    text: str


class _Watchdog:
    """Shuts down the socket of the current call's connection when its deadline comes."""

    def __init__(self, seconds):
        self.lock = threading.Lock()
        self.conn = None
        self.fired = self.done = False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def attach(self, conn):
        """Watch this connection; refuse to go on if the deadline already passed."""
        with self.lock:
            if self.fired:
                raise Deadline("deadline exceeded before sending")
            self.conn = conn

    def _fire(self):
        with self.lock:
            if self.done:
                return
            self.fired = True
            sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:  # the plain socket's shutdown, under TLS too: it wakes a blocked recv/send
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self):
        with self.lock:
            self.done = True
        self.timer.cancel()


class _Watched:
    """A urllib3 connection that reports itself to the calling thread's watchdog."""

    def connect(self):
        super().connect()
        watchdog = getattr(_local, "watchdog", None)
        if watchdog is not None:
            watchdog.attach(self)  # a connect that outlived the deadline sends nothing

    def request(self, *args, **kwargs):
        watchdog = getattr(_local, "watchdog", None)
        if watchdog is not None:
            watchdog.attach(self)  # a reused connection, or a new one before connect()
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class HttpClient:
    """POSTs on behalf of the gateway; every transport failure becomes TransportError."""

    MAX_BODY = 4096

    def __init__(self, timeout):
        self.timeout = timeout
        self._local = threading.local()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # never route payments through an ambient proxy
            session.mount("http://", _Adapter())
            session.mount("https://", _Adapter())
        return session

    def post(self, url, *, data=None, headers=None, timeout=None):
        """POST and return the Reply within `timeout` seconds in total (connect, send, wait
        and read; name resolution is bounded only by the resolver's own timeout); redirects
        are answers, not hops."""
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise Deadline("deadline exceeded before sending")
        watchdog = _local.watchdog = _Watchdog(budget)
        end = time.monotonic() + budget
        watchdog.timer.start()
        response = None
        try:
            response = self._session().post(
                url, data=data, headers=headers, timeout=(budget, budget),
                allow_redirects=False, stream=True,
            )
            body = bytearray()
            for chunk in response.iter_content(1024):
                body += chunk
                if len(body) >= self.MAX_BODY:
                    break
            if len(body) >= self.MAX_BODY:
                response.close()  # the rest is never read: hang up rather than drain it
            watchdog.finish()
            if watchdog.fired:  # a reply cut short by the shutdown is no answer
                raise Deadline(f"deadline of {budget:g} s exceeded")
            # requests' headers stay case-insensitive: "retry-after" is Retry-After.
            return Reply(response.status_code, response.headers.copy(),
                         bytes(body[: self.MAX_BODY]).decode("utf-8", "replace"))
        except requests.RequestException as exc:
            if response is not None:
                response.close()
            if watchdog.fired or time.monotonic() >= end:
                raise Deadline(f"deadline of {budget:g} s exceeded") from exc
            raise TransportError(type(exc).__name__) from exc
        except Deadline:
            if response is not None:
                response.close()
            raise
        finally:
            watchdog.finish()
            _local.watchdog = None
