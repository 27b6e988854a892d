"""A real HTTP billing receiver on a loopback port, scriptable per request, for live tests.

It verifies each call with the reference `standardwebhooks` package, answers from a script,
and records what a billing operator would need to prove "exactly once": per webhook-id, how
many calls, how many acknowledged, and the most that were ever in flight at the same moment.
"""

import json
import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class ClockedWebhook(Webhook):
    """The reference verifier with its five-minute window measured on a test clock, for
    deliveries made at simulated times (the signature check is the reference's own)."""

    def __init__(self, secret, clock):
        super().__init__(secret)
        self.clock = clock

    def _Webhook__verify_timestamp(self, header):  # the private check Webhook.verify calls
        try:
            stamp = float(header)
        except ValueError as exc:
            raise WebhookVerificationError("Invalid Signature Headers") from exc
        if abs(stamp - self.clock()) > 300:
            raise WebhookVerificationError("Message timestamp out of tolerance")
        return datetime.fromtimestamp(stamp, tz=UTC)


class Receiver:
    def __init__(self, secret, port=0, clock=None):
        self.webhook = Webhook(secret) if clock is None else ClockedWebhook(secret, clock)
        # Answers, in turn: a status (int), (status, {header: value}), "hang" (until released,
        # then 500), "reset" (close with RST, not booked) or "drop" (booked, then the
        # connection closes before any answer). After the script, `default`.
        self.script = []
        self.default = 204
        self.delay = 0.0
        self.lock = threading.Condition()
        self.calls = []
        self.in_flight = Counter()
        self.max_in_flight = Counter()
        self.acked = Counter()
        self.dropped = Counter()  # booked, but the answer never left: "applied, then dropped"
        self.bodies = defaultdict(set)
        self.invalid = 0
        self.paths = []
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, timeout=60):
        """Block until predicate(self) holds (checked on every call) or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met; calls={self.calls}")
                self.lock.wait(min(left, 0.2))

    def _answer(self):
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                receiver.paths.append(self.path)
                msg_id = self.headers.get("webhook-id", "")
                try:
                    payload = receiver.webhook.verify(body, dict(self.headers))
                except WebhookVerificationError:
                    receiver.invalid += 1
                    self._send(400)
                    return
                with receiver.lock:
                    receiver.in_flight[msg_id] += 1
                    receiver.max_in_flight[msg_id] = max(receiver.max_in_flight[msg_id],
                                                         receiver.in_flight[msg_id])
                    receiver.bodies[msg_id].add(body)
                    receiver.lock.notify_all()
                answer = receiver._answer()
                headers = {}
                if isinstance(answer, tuple):
                    answer, headers = answer
                try:
                    if answer == "hang":
                        receiver.release.wait(30)
                        answer = 500
                    elif receiver.delay:
                        time.sleep(receiver.delay)
                    if answer in ("reset", "drop"):
                        self._close(reset=answer == "reset")
                    else:
                        self._send(answer, headers)
                finally:
                    with receiver.lock:
                        receiver.in_flight[msg_id] -= 1
                        receiver.calls.append((msg_id, answer, payload["data"]["order_id"]))
                        if answer == "drop":
                            receiver.dropped[msg_id] += 1
                        elif isinstance(answer, int) and 200 <= answer < 300:
                            receiver.acked[msg_id] += 1
                        receiver.lock.notify_all()

            def _close(self, reset):
                """Hang up without a status line; with reset, abort the connection (RST)."""
                self.close_connection = True
                if reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                self.connection.close()

            def _send(self, status, headers=None):
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    if status in (301, 302, 307):
                        self.send_header("Location", receiver.url + "/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the caller died or gave up; that is what some tests do

        return Handler


def order_ids(receiver):
    return {order for _, _, order in receiver.calls}


def body_of(receiver, msg_id):
    [body] = receiver.bodies[msg_id]
    return json.loads(body)
