"""Our Standard Webhooks signatures, proven with the reference `standardwebhooks` package."""

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway import billing
from gateway.errors import ConfigError, WebhookInvalid

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_" + "b3RoZXItc2VjcmV0LWZvci1yb3RhdGlvbi0xMjM0NTY="
BODY = json.dumps({"type": "payment.succeeded", "data": {"amount": "1000.00"}})


def test_reference_library_accepts_our_signature():
    now = time.time()
    headers = billing.headers(billing.parse_secrets(SECRET), "msg_1", now, BODY)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


def test_signature_matches_the_specifications_example():
    # The example in the Standard Webhooks specification (and the reference library's tests).
    keys = billing.parse_secrets(SECRET)
    body = '{"test": 2432232314}'
    assert billing.signature(keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


@pytest.mark.parametrize("part", ["id", "timestamp", "body"])
def test_reference_library_rejects_a_tampered_call(part):
    now = time.time()
    headers = billing.headers(billing.parse_secrets(SECRET), "msg_1", now, BODY)
    body = BODY
    if part == "id":
        headers["webhook-id"] = "msg_2"
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(int(now) - 1)
    else:
        body = BODY.replace("1000.00", "9000.00")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)
    with pytest.raises(WebhookInvalid):
        billing.verify(billing.parse_secrets(SECRET), headers, body, now)


def test_two_secrets_while_rotating_each_verify():
    now = time.time()
    headers = billing.headers(billing.parse_secrets(f"{SECRET} {OTHER}"), "msg_1", now, BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OTHER):
        assert Webhook(secret).verify(BODY, headers)
    assert billing.parse_secrets([SECRET, OTHER]) == billing.parse_secrets(f"{SECRET},{OTHER}")


def test_our_verifier_refuses_stale_and_missing_headers():
    keys = billing.parse_secrets(SECRET)
    headers = billing.headers(keys, "msg_1", 1000, BODY)
    assert billing.verify(keys, headers, BODY, 1000 + 300)
    with pytest.raises(WebhookInvalid):
        billing.verify(keys, headers, BODY, 1000 + 301)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = {k: v for k, v in headers.items() if k != name}
        with pytest.raises(WebhookInvalid):
            billing.verify(keys, partial, BODY, 1000)


@pytest.mark.parametrize("value, message", [
    ("", "one secret"), ("abc", "whsec_"), ("whsec_!!!", "whsec_"),
    ("whsec_" + "c2hvcnQ=", "24 random bytes"), (f"{SECRET} {SECRET} {SECRET}", "two"),
])
def test_bad_billing_secret_is_refused(value, message):
    with pytest.raises(ConfigError, match=message):
        billing.parse_secrets(value)


def test_new_secret_is_long_enough_and_parses():
    assert len(billing.parse_secrets(billing.new_secret())[0]) == 32


@given(st.text(max_size=200), st.integers(min_value=0, max_value=2**40))
def test_any_body_round_trips_through_our_verifier(body, stamp):
    keys = billing.parse_secrets(SECRET)
    headers = billing.headers(keys, "msg_x", stamp, json.dumps(body))
    assert billing.verify(keys, headers, json.dumps(body), stamp) == body


def test_event_body_is_the_contract():
    order = {"order_id": "o1", "login": "dem001", "account": "6", "amount": "1000.00",
             "paid_at": 1764324000.0}
    body = json.loads(billing.event_body(
        "paid", order, {"transaction_id": "t1", "transaction_type": "Purchase"}, 1764324000.5))
    assert body == {"type": "payment.succeeded", "timestamp": "2025-11-28T10:00:00Z", "data": {
        "order_id": "o1", "login": "dem001", "account": "6", "amount": "1000.00",
        "currency": "RUB", "transaction_id": "t1", "transaction_type": "Purchase",
        "paid_at": "2025-11-28T10:00:00Z", "external_id": "CP:t1"}}


def test_reversal_event_names_the_purchase_it_reverses():
    order = {"order_id": "o1", "login": "dem001", "account": "6", "amount": "1000.00",
             "paid_at": 1764324000.0, "transaction_id": "t1"}
    data = json.loads(billing.event_body(
        "refunded", order, {"transaction_id": "r9", "transaction_type": "Refund"}, 1764324000.5)
    )["data"]
    assert (data["external_id"], data["original_transaction_id"],
            data["original_external_id"]) == ("CP:r9", "t1", "CP:t1")


@pytest.mark.parametrize("transaction_id", ["1234567", "x" * 46, "x" * 47, "~" * 128])
def test_external_id_is_ascii_under_50_and_distinct(transaction_id):
    ext = billing.external_id(transaction_id)
    assert ext.isascii() and len(ext) < 50
    assert ext != billing.external_id(transaction_id + "a")


@pytest.mark.parametrize("stamp", ["²", "١٧٦٤٣٠٠٠٠٠", "9" * 5000, "+1764300000"])
def test_timestamp_that_is_not_ascii_digits_is_invalid_not_a_crash(stamp):
    headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": "v1,x"}
    with pytest.raises(WebhookInvalid):
        billing.verify(billing.parse_secrets(SECRET), headers, BODY, 1764300000)
