"""The README's billing receiver examples (Python, PHP), run against calls we really sign."""

import json
import subprocess
import time
from contextlib import contextmanager
from decimal import Decimal

import pytest
from test_link_snippets import require, snippets

from gateway import billing

HEADING = "### Receiver examples"
SECRET = "whsec_" + "cmVjZWl2ZXItZXhhbXBsZS1zZWNyZXQtMDEyMzQ1Njc4OQ=="
OTHER = billing.new_secret()
BODY = json.dumps({"type": "payment.succeeded", "timestamp": "2026-11-28T10:00:00Z", "data": {
    "order_id": "o1", "login": "dem001", "account": "6", "amount": "1000.00"}})


def signed(secrets=SECRET, msg_id="msg_1", body=BODY, stamp=None):
    stamp = time.time() if stamp is None else stamp
    return billing.headers(billing.parse_secrets(secrets), msg_id, stamp, body)


class Ledger:
    """The `db` the Python example talks to: remembers ids, books amounts."""

    def __init__(self):
        self.ids, self.booked = set(), []

    @contextmanager
    def transaction(self):
        yield

    def seen(self, msg_id):
        return msg_id in self.ids

    def remember(self, msg_id):
        self.ids.add(msg_id)

    def book(self, account, sign, amount):
        self.booked.append((account, sign * Decimal(amount)))


@pytest.fixture
def python_receiver():
    [code] = snippets(HEADING)["python"]
    ledger = Ledger()
    scope = {"db": ledger}
    exec(code.replace('Webhook("whsec_…")', f"Webhook({SECRET!r})"), scope)  # noqa: S102
    return scope["receive"], ledger


def test_python_example_books_a_genuine_call_once(python_receiver):
    receive, ledger = python_receiver
    headers = signed()
    assert receive(BODY.encode(), headers) == 204
    assert receive(BODY.encode(), signed()) == 204  # the same webhook-id re-sent
    assert ledger.booked == [("6", Decimal("1000.00"))]


@pytest.mark.parametrize("forgery", ["body", "secret", "stale"])
def test_python_example_refuses_forgeries(python_receiver, forgery):
    receive, ledger = python_receiver
    body, headers = BODY, signed()
    if forgery == "body":
        body = BODY.replace("1000.00", "9000.00")
    elif forgery == "secret":
        headers = signed(OTHER)
    else:
        headers = signed(stamp=time.time() - 3600)
    assert receive(body.encode(), headers) == 401 and ledger.booked == []


def run_php(headers, body, now, secret=SECRET):
    require("php")
    [code] = snippets(HEADING)["php"]
    driver = ("$in = json_decode(stream_get_contents(STDIN), true);\n"
              "echo json_encode(verify_webhook($in['secret'], $in['headers'], $in['body'],"
              " $in['now']));\n")
    payload = json.dumps({"secret": secret, "headers": headers, "body": body, "now": int(now)})
    result = subprocess.run(["php", "-r", code.replace("<?php", "") + driver], input=payload,
                            capture_output=True, text=True, timeout=30, check=True)
    return json.loads(result.stdout)


def test_php_example_accepts_our_call_and_either_rotated_secret():
    now = time.time()
    assert run_php(signed(), BODY, now) == json.loads(BODY)
    both = signed(f"{SECRET} {OTHER}")
    assert run_php(both, BODY, now) == json.loads(BODY)
    assert run_php(both, BODY, now, secret=OTHER) == json.loads(BODY)


@pytest.mark.parametrize("forgery", ["body", "id", "secret", "stale", "no-signature"])
def test_php_example_refuses_forgeries(forgery):
    now = time.time()
    body, headers = BODY, signed()
    if forgery == "body":
        body = BODY.replace("1000.00", "9000.00")
    elif forgery == "id":
        headers["webhook-id"] = "msg_2"
    elif forgery == "secret":
        headers = signed(OTHER)
    elif forgery == "stale":
        now += 301
    else:
        del headers["webhook-signature"]
    assert run_php(headers, body, now) is None
