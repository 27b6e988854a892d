"""The sandbox billing receiver: verifies like billing must, credits once per webhook-id."""

import json
import runpy
import time

import pytest

from gateway import billing, create_app

SANDBOX = runpy.run_path("config.sandbox.py")


@pytest.fixture
def sandbox(tmp_path):
    app = create_app(dict(SANDBOX, TESTING=True, BILLING_WORKER=False,
                          DATABASE_URL=f"sqlite:///{tmp_path}/s.sqlite3"))
    return app


def call(client, body, msg_id="msg_1", secret=SANDBOX["BILLING_SECRET"], stamp=None):
    keys = billing.parse_secrets(secret)
    headers = billing.headers(keys, msg_id, stamp or time.time(), body)
    return client.post("/sandbox/billing/", data=body, headers=headers)


BODY = json.dumps({"type": "payment.succeeded", "timestamp": "x", "data": {
    "order_id": "o1", "amount": "1000.00"}})


def test_verified_call_credits_once_per_webhook_id(sandbox):
    client = sandbox.test_client()
    assert call(client, BODY).status_code == 204
    assert call(client, BODY).status_code == 204
    assert len(sandbox.extensions["store"].read().ledger()) == 1
    assert "850,00" in client.get("/sandbox/cabinet/").get_data(as_text=True)


@pytest.mark.parametrize("kwargs", [
    {"secret": billing.new_secret()}, {"stamp": time.time() - 3600},
])
def test_forged_or_stale_call_is_refused_plainly(sandbox, kwargs):
    response = call(sandbox.test_client(), BODY, **kwargs)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sandbox.extensions["store"].read().ledger() == []


def test_switch_to_fail_answers_500(sandbox):
    client = sandbox.test_client()
    page = client.get("/sandbox/billing/").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/sandbox/billing/mode", data={"csrf_token": token, "mode": "fail"})
    assert call(client, BODY).status_code == 500
