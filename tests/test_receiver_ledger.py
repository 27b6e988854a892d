"""The receiver's WSGI answers, with a fake billing that records payments."""
import io
import json
import time
from datetime import UTC

import pytest
from dem_receiver.app import create_app
from dem_receiver.ledger import BillingFailed, Ledger
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class FakeBilling:
    def __init__(self):
        self.paid, self.fail = {}, 0

    def lookup(self, ext):
        return self.paid.get(ext, (None,))[0]

    def pay(self, account, amount, ext, comment):
        if self.fail:
            self.fail -= 1
            raise BillingFailed("down")
        self.paid.setdefault(ext, (f"p{len(self.paid) + 1}", account, amount))
        return self.paid[ext][0]


@pytest.fixture
def billing():
    return FakeBilling()


@pytest.fixture
def call(tmp_path, billing):
    app = create_app(SECRET, Ledger(str(tmp_path / "ledger.sqlite3"), billing))

    def post(event, msg_id="msg_1", secret=SECRET):
        body = json.dumps(event).encode()
        stamp = int(time.time())
        sig = Webhook(secret).sign(msg_id, _dt(stamp), body.decode())
        environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "HTTP_WEBHOOK_ID": msg_id,
                   "HTTP_WEBHOOK_TIMESTAMP": str(stamp), "HTTP_WEBHOOK_SIGNATURE": sig}
        statuses = []
        app(environ, lambda status, headers: statuses.append(status))
        return int(statuses[0][:3])
    return post


def _dt(stamp):
    from datetime import datetime
    return datetime.fromtimestamp(stamp, tz=UTC)


PAID = {"type": "payment.succeeded", "data": {"external_id": "CP:t1", "account": "6",
                                              "amount": "1000.00", "transaction_id": "t1"}}


def test_ping_answers_2xx_without_crediting(call, billing):
    assert call({"type": "ping", "data": {}}) == 204
    assert billing.paid == {}


def test_forged_signature_is_401_and_credits_nothing(call, billing):
    assert call(PAID, secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB") == 401
    assert billing.paid == {}


def test_billing_failure_is_503_then_retry_credits_once(call, billing):
    billing.fail = 1
    assert call(PAID) == 503
    assert call(PAID) == 204
    assert call(PAID) == 204
    assert billing.paid == {"CP:t1": ("p1", "6", "1000.00")}


def test_amount_mismatch_is_409(call, billing):
    assert call(PAID) == 204
    other = {"type": PAID["type"], "data": {**PAID["data"], "amount": "1.00"}}
    assert call(other, "msg_2") == 409


def test_malformed_event_is_400(call):
    assert call({"type": "payment.succeeded", "data": {}}) == 400


def test_concurrent_duplicates_credit_once(tmp_path):
    import threading

    class SlowBilling(FakeBilling):
        def pay(self, *args):
            barrier_wait()
            self.calls = getattr(self, "calls", 0) + 1
            return super().pay(*args)

    billing = SlowBilling()
    gate = threading.Event()

    def barrier_wait():
        gate.wait(0.2)  # lets a racing thread reach the ledger while the first is in billing

    ledger = Ledger(str(tmp_path / "ledger.sqlite3"), billing)
    threads = [threading.Thread(target=ledger.apply, args=(PAID, "msg_1")) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert billing.calls == 1
