"""Our one outbound HTTP client, against a real server on a loopback port."""

import time

import pytest
from conftest import SECRETS
from receiver import Receiver

from gateway import billing
from gateway.errors import TransportError
from gateway.http import HttpClient

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
