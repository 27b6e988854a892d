"""Our one outbound HTTP client, against a real server on a loopback port."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import SECRETS
from receiver import Receiver
from slow_billing import SlowBilling

from gateway import billing
from gateway.errors import TransportError
from gateway.http import Deadline, HttpClient

BODY = '{"type":"payment.succeeded","data":{"order_id":"o1"}}'


@pytest.fixture
def receiver():
    receiver = Receiver(SECRETS["BILLING_SECRET"]).start()
    yield receiver
    receiver.stop()


def post(receiver):
    keys = billing.parse_secrets(SECRETS["BILLING_SECRET"])
    headers = billing.headers(keys, "msg_1", time.time(), BODY)
    return HttpClient(timeout=2).post(receiver.url, data=BODY.encode(), headers=headers)


def test_reply_headers_are_read_whatever_their_case(receiver):
    # Header names are case-insensitive; many servers and proxies send them lower-case.
    receiver.script = [(429, {"retry-after": "7"})]
    reply = post(receiver)
    assert reply.status == 429
    assert reply.headers.get("Retry-After") == "7" and reply.headers.get("RETRY-AFTER") == "7"


@pytest.mark.parametrize("answer", ["reset", "drop"])
def test_a_connection_closed_without_an_answer_is_a_transport_error(receiver, answer):
    receiver.script = [answer]
    with pytest.raises(TransportError):
        post(receiver)


@pytest.fixture
def slow():
    server = SlowBilling().start()
    yield server
    server.stop()


def post_to(server, timeout=1):
    return HttpClient(timeout=timeout).post(server.url, data=b"{}",
                                            headers={"webhook-id": "msg_1"})


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_a_trickling_billing_is_cut_off_at_the_total_deadline(slow, mode):
    # A byte every 0.2 s beats requests' per-read timeout of 1 s for ever; the deadline does
    # not care, and the connection is closed under the server.
    slow.mode = mode
    with pytest.raises(Deadline, match="deadline"):
        post_to(slow)
    slow.wait_for(lambda s: s.closed == 1)
    assert slow.requests["msg_1"] == 1


@pytest.mark.parametrize("mode", ["huge", "chunked"])
def test_a_huge_or_endless_reply_is_cut_at_max_body_and_hung_up(slow, mode):
    slow.mode = mode
    reply = post_to(slow, timeout=5)
    assert reply.status == 200 and len(reply.text) == HttpClient.MAX_BODY
    slow.wait_for(lambda s: s.closed == 1)


def test_no_time_left_sends_nothing(slow):
    with pytest.raises(Deadline):
        post_to(slow, timeout=0)
    assert slow.requests == {}


class RecordingProxy:
    """An HTTP proxy on loopback that records every request it gets and answers 502."""

    def __init__(self):
        proxy = self
        self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                proxy.seen.append(self.path)
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_CONNECT = do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_ambient_proxy_is_never_used(slow, monkeypatch):
    proxy = RecordingProxy()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert post_to(slow).status == 204
        assert proxy.seen == [] and slow.requests["msg_1"] == 1
    finally:
        proxy.stop()
