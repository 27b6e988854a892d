"""HTTP/1.1 as bytes on a socket: malformed requests no HTTP library would send.

Each case is aimed at POST /chronopay/callback, which journals every request that reaches the
app, so the journal's row count says whether a server let a request through.
"""

import re
import socket
import ssl
from dataclasses import dataclass

PATH = "/chronopay/callback"
FORM = "Content-Type: application/x-www-form-urlencoded\r\n"
# A complete request hidden in a body: if a server splits a stream differently from the
# proxy in front of it, this one is journaled with transaction_id=smuggled.
SMUGGLED = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{FORM}Content-Length: 19\r\n\r\n"
            "transaction_id=smug")


# In the app's CSP only: an answer that carries it was made by the app, not by the server.
APP_MARK = b"form-action"
# 5xx that are a server's protocol refusal, not an error: RFC 9112 answers an unknown
# transfer coding with 501 and an unknown HTTP version with 505.
PROTOCOL_REFUSALS = (501, 505)


@dataclass(frozen=True)
class Case:
    """One request as bytes. A control must reach the app once; others never, unless the
    server named in `tolerated` reads them leniently (then at most once, never smuggled)."""

    name: str
    payload: bytes
    control: bool = False
    tolerated: frozenset = frozenset()
    pipelined: bool = False  # what follows the body is, read that way, the client's next request


WAITRESS, NGINX = frozenset({"waitress"}), frozenset({"nginx"})


def request(head, body=b"", method="POST", path=PATH, version="HTTP/1.1", host="Host: x\r\n"):
    """A request with Connection: close, so every server answers once and hangs up."""
    start = f"{method} {path} {version}\r\n{host}Connection: close\r\n".encode("latin-1")
    if isinstance(head, str):
        head = head.encode("latin-1")
    return start + head + b"\r\n" + body


def chunked(body):
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def cases(max_body):
    """The malformed requests, plus well-formed controls that must reach the app exactly once."""
    body = b"transaction_id=1&sign=x"
    smuggle = SMUGGLED.encode()
    big = b"a=" + b"x" * (max_body + 1)
    te = "Transfer-Encoding: chunked\r\n"
    return [
        Case("control: well-formed form", request(f"{FORM}Content-Length: {len(body)}\r\n",
                                                  body), control=True),
        Case("control: well-formed chunked", request(FORM + te, chunked(body)), control=True),
        # waitress lets Transfer-Encoding win (RFC 9112 6.3) and, the connection closing, never
        # reads what follows; nginx refuses both together outright.
        Case("Content-Length + Transfer-Encoding",
             request(f"{FORM}Content-Length: 5\r\n{te}", b"0\r\n\r\n" + smuggle),
             tolerated=WAITRESS),
        Case("Transfer-Encoding + Content-Length",
             request(f"{FORM}{te}Content-Length: 60\r\n", b"0\r\n\r\n" + smuggle),
             tolerated=WAITRESS),
        # Kept alive, waitress then reads the hidden request as the next one: only a proxy
        # in front that went by Content-Length would make that smuggling, and nginx refuses.
        Case("Content-Length + Transfer-Encoding, kept alive",
             request(f"{FORM}Content-Length: 5\r\n{te}", b"0\r\n\r\n" + smuggle)
             .replace(b"Connection: close\r\n", b""), tolerated=WAITRESS, pipelined=True),
        Case("two different Content-Length",
             request(f"{FORM}Content-Length: 0\r\nContent-Length: {len(smuggle)}\r\n", smuggle)),
        Case("Content-Length list", request(f"{FORM}Content-Length: 3, 3\r\n", b"a=1")),
        Case("Content-Length +3", request(f"{FORM}Content-Length: +3\r\n", b"a=1")),
        Case("Content-Length -1", request(f"{FORM}Content-Length: -1\r\n", b"a=1")),
        Case("Content-Length hex", request(f"{FORM}Content-Length: 0x3\r\n", b"a=1")),
        Case("Content-Length 2**64", request(f"{FORM}Content-Length: {2**64}\r\n", b"a=1")),
        Case("space before colon", request(f"{FORM}Content-Length : 3\r\n", b"a=1")),
        Case("Transfer-Encoding xchunked",
             request(f"{FORM}Transfer-Encoding: xchunked\r\n", chunked(b"a=1"))),
        Case("Transfer-Encoding chunked, identity",
             request(f"{FORM}Transfer-Encoding: chunked, identity\r\n", chunked(b"a=1"))),
        Case("Transfer-Encoding twice",
             request(f"{FORM}{te}Transfer-Encoding: identity\r\n", chunked(b"a=1"))),
        # RFC 9112 5.2 lets a server unfold obs-fold; waitress does, nginx refuses.
        Case("Transfer-Encoding folded",
             request(f"{FORM}Transfer-Encoding:\r\n chunked\r\n", chunked(b"a=1")),
             tolerated=WAITRESS),
        # HTTP/1.0 has no chunked coding: waitress reads no body and closes.
        Case("chunked in HTTP/1.0", request(FORM + te, chunked(b"a=1"), version="HTTP/1.0"),
             tolerated=WAITRESS),
        Case("chunk size not hex", request(FORM + te, b"zz\r\na=1\r\n0\r\n\r\n")),
        Case("chunk size overflow", request(FORM + te, b"f" * 40 + b"\r\na=1\r\n0\r\n\r\n")),
        Case("chunk size with NUL", request(FORM + te, b"3\x00\r\na=1\r\n0\r\n\r\n")),
        Case("chunk without CRLF", request(FORM + te, b"3\r\na=1XX0\r\n\r\n")),
        Case("body over the size limit",
             request(f"{FORM}Content-Length: {len(big)}\r\n", big)),
        Case("header of 100 kB", request(f"X-Big: {'a' * 100_000}\r\n{FORM}"
                                         "Content-Length: 3\r\n", b"a=1")),
        Case("2000 headers (24 kB)", request("".join(f"X-H{i}: v\r\n" for i in range(2000))
                                             + f"{FORM}Content-Length: 3\r\n", b"a=1"),
             tolerated=WAITRESS),
        Case("4000 headers (52 kB)", request("".join(f"X-H{i}: v\r\n" for i in range(4000))
                                             + f"{FORM}Content-Length: 3\r\n", b"a=1")),
        Case("URI of 100 kB", request(f"{FORM}Content-Length: 3\r\n", b"a=1",
                                      path=PATH + "?" + "a" * 100_000)),
        # waitress passes the path on; the app's router answers 404.
        Case("NUL in request line", request(f"{FORM}Content-Length: 3\r\n", b"a=1",
                                            path=PATH + "\x00"), tolerated=WAITRESS),
        Case("space in request target", request(f"{FORM}Content-Length: 3\r\n", b"a=1",
                                                path=PATH + " x")),
        Case("method with @", request(f"{FORM}Content-Length: 3\r\n", b"a=1", method="P@ST")),
        Case("HTTP/9.9", request(f"{FORM}Content-Length: 3\r\n", b"a=1", version="HTTP/9.9"),
             tolerated=WAITRESS),
        Case("HTTP/1.1x", request(f"{FORM}Content-Length: 3\r\n", b"a=1", version="HTTP/1.1x")),
        Case("bare CR line ends", request(f"{FORM}Content-Length: 3\r\n", b"a=1")
             .replace(b"\r\n", b"\r")),
        # nginx drops an invalid header line (ignore_invalid_headers) and passes the rest.
        Case("header name with é", request(f"Cont\xe9nt-Type: x\r\n{FORM}Content-Length: 3\r\n",
                                          b"a=1"), tolerated=NGINX),
        Case("NUL in header value", request(f"X-A: a\x00b\r\n{FORM}Content-Length: 3\r\n",
                                            b"a=1")),
        Case("header line without colon", request(f"Garbage\r\n{FORM}Content-Length: 3\r\n",
                                                  b"a=1"), tolerated=NGINX),
        Case("bytes 0x80-0xff in request line",
             request(f"{FORM}Content-Length: 3\r\n", b"a=1", path=PATH + "\xff\xfe")),
        # nginx reads an HTTP/0.9 line as a GET, and a callback may come by GET
        # (cb_type=G): it reaches the app once, with no fields, and is refused as malformed.
        Case("HTTP/0.9", f"GET {PATH}\r\n".encode(), tolerated=NGINX),
        Case("TLS-less garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
    ]


@dataclass(frozen=True)
class Answer:
    """What came back: every status line in the bytes, and the bytes themselves."""

    statuses: tuple
    raw: bytes

    @property
    def server_error(self):
        return any(status >= 500 for status in self.statuses)


def exchange(host, port, payload, source="127.0.0.1", tls=None, timeout=10):
    """Send the bytes, read until the server closes; tls is an SSLContext or None."""
    sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    chunks = []
    try:
        try:
            sock.sendall(payload)
            if tls is None:
                sock.shutdown(socket.SHUT_WR)  # nothing more comes: no server waits for us
        except OSError:
            pass  # refused mid-send: the server has already answered and closed
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    raw = b"".join(chunks)
    statuses = tuple(int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw))
    return Answer(statuses, raw)


def judge(server, send, journal, max_body=64 * 1024):
    """Send every case to one server; count what was refused, tolerated, or went wrong.

    journal() returns (callbacks journaled, of them the hidden SMUGGLED request)."""
    report = {"server": server, "runs": 0, "passed": 0, "refused": 0, "protocol": 0,
              "tolerated": [], "controls": 0, "problems": [], "smuggled": 0, "pipelined": 0}
    for case in cases(max_body):
        before = journal()
        answer = send(case.payload)
        after = journal()
        journaled, hidden = after[0] - before[0], after[1] - before[1]
        from_app = APP_MARK in answer.raw
        errors = [s for s in answer.statuses
                  if s >= 500 and (from_app or s not in PROTOCOL_REFUSALS)]
        if case.control:
            ok = journaled == 1
            report["controls"] += ok
        elif server in case.tolerated:
            pipelined = hidden if case.pipelined else 0
            ok = journaled - pipelined <= 1
            report["pipelined"] += pipelined
            if journaled or from_app:
                report["tolerated"].append(case.name)
            else:
                report["refused"] += 1
        else:
            ok = journaled == 0 and not from_app
            report["refused"] += ok
        report["protocol"] += any(s in PROTOCOL_REFUSALS for s in answer.statuses)
        smuggled = hidden - (hidden if case.pipelined and server in case.tolerated else 0)
        report["smuggled"] += smuggled
        ok = ok and not errors and not smuggled
        report["runs"] += 1
        report["passed"] += ok
        if not ok:
            report["problems"].append((case.name, answer.statuses, journaled, from_app))
    return report


def summary(report):
    """The figure: what the server did with the malformed requests."""
    tolerated = report["tolerated"]
    return (f"{report['runs']} requests: {report['controls']} well-formed controls reached the "
            f"app; {report['refused']} refused by {report['server']} ({report['protocol']} of "
            f"them 501/505, RFC 9112's refusal of an unknown coding or version)"
            + (f"; {len(tolerated)} read leniently, at most once ({', '.join(tolerated)})"
               if tolerated else "")
            + (f" (a kept-alive one ran the bytes after its chunked body as the client's next "
               f"request {report['pipelined']}×)" if report["pipelined"] else "")
            + f"; {len(report['problems'])} reached the app unexpectedly or got a 5xx; "
            f"{report['smuggled']} smuggled")
