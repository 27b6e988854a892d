"""A real HTTP billing receiver on a loopback port, scriptable per request, for live tests.

It verifies each call with the reference `standardwebhooks` package, answers from a script,
and records what a billing operator would need to prove "exactly once": per webhook-id, how
many calls, how many acknowledged, and the most that were ever in flight at the same moment.
"""

import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self, secret, port=0):
        self.webhook = Webhook(secret)
        self.script = []  # statuses (int) or "hang"; after it runs out, `default`
        self.default = 204
        self.delay = 0.0
        self.lock = threading.Condition()
        self.calls = []
        self.in_flight = Counter()
        self.max_in_flight = Counter()
        self.acked = Counter()
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
                try:
                    if answer == "hang":
                        receiver.release.wait(30)
                        answer = 500
                    elif receiver.delay:
                        time.sleep(receiver.delay)
                    self._send(answer)
                finally:
                    with receiver.lock:
                        receiver.in_flight[msg_id] -= 1
                        receiver.calls.append((msg_id, answer, payload["data"]["order_id"]))
                        if 200 <= answer < 300:
                            receiver.acked[msg_id] += 1
                        receiver.lock.notify_all()

            def _send(self, status):
                try:
                    self.send_response(status)
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
