"""Our Standard Webhooks signatures, proven with the reference `standardwebhooks` package."""

import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from receiver import ClockedWebhook
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


@pytest.mark.parametrize("value, sentence", [
    ("abc", "Set BILLING_SECRET as whsec_<base64>."),
    ("whsec_!!!", "Set BILLING_SECRET as whsec_<base64>."),
    ("whsec_" + "c2hvcnQ=", "Set BILLING_SECRET to at least 24 random bytes."),
    ("", "Set BILLING_SECRET to one secret, or two while rotating."),
    (f"{SECRET} {SECRET} {SECRET}", "Set BILLING_SECRET to one secret, or two while rotating."),
])
def test_a_bad_billing_secret_stops_the_start_with_one_sentence(value, sentence):
    # The sentence is what ops read when the service refuses to start.
    with pytest.raises(ConfigError) as raised:
        billing.parse_secrets(value)
    assert str(raised.value) == sentence


def test_an_attempt_carries_exactly_the_contracts_headers():
    keys = billing.parse_secrets(SECRET)
    assert billing.headers(keys, "msg_1", 1764300000.9, BODY) == {
        "Content-Type": "application/json", "webhook-id": "msg_1",
        "webhook-timestamp": "1764300000",
        "webhook-signature": billing.signature(keys, "msg_1", 1764300000, BODY)}


@pytest.mark.parametrize("drop, reason", [
    ("webhook-id", "webhook id or timestamp missing or out of tolerance"),
    ("webhook-timestamp", "webhook id or timestamp missing or out of tolerance"),
    ("webhook-signature", "no matching webhook signature"),
])
def test_our_verifier_says_which_check_refused(drop, reason):
    # The sandbox billing's refusal is logged with this reason (gateway_error).
    keys = billing.parse_secrets(SECRET)
    headers = billing.headers(keys, "msg_1", 1000, BODY)
    del headers[drop]
    with pytest.raises(WebhookInvalid) as raised:
        billing.verify(keys, headers, BODY, 1000)
    assert str(raised.value) == reason


def test_our_verifier_finds_a_matching_signature_among_several_of_any_spacing():
    # Standard Webhooks: space-delimited signatures; one valid among unknown ones is enough.
    keys = billing.parse_secrets(SECRET)
    good = billing.headers(keys, "msg_1", 1000, BODY)["webhook-signature"]
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1000",
               "webhook-signature": f"v1,bm9wZQ== {good}"}
    assert billing.verify(keys, headers, BODY, 1000) == json.loads(BODY)
    both = billing.parse_secrets(f"{OTHER} {SECRET}")
    assert billing.verify(both, {**headers, "webhook-signature": good}, BODY, 1000)


def test_event_ids_are_msg_and_24_hex_digits():
    ids = {billing.new_event_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"msg_[0-9a-f]{24}", event_id) for event_id in ids)


def test_a_46_character_transaction_id_is_kept_literally():
    assert billing.external_id("x" * 46) == "CP:" + "x" * 46
    assert billing.external_id("x" * 47).startswith("CPH:")


def test_a_reversal_of_an_unpaid_order_is_dated_now_and_a_paid_one_by_its_payment():
    order = {"order_id": "o1", "login": "dem001", "account": "6", "amount": "1000.00",
             "paid_at": None}
    transaction = {"transaction_id": "t1", "transaction_type": "Purchase"}
    unpaid = json.loads(billing.event_body("paid", order, transaction, 1764324000.5))
    assert unpaid["data"]["paid_at"] == "2025-11-28T10:00:00Z"
    paid = json.loads(billing.event_body("paid", {**order, "paid_at": 1764320400.0},
                                         transaction, 1764324000.5))
    assert paid["data"]["paid_at"] == "2025-11-28T09:00:00Z"


def test_event_body_is_compact_utf8_json_sent_byte_for_byte():
    order = {"order_id": "o1", "login": "дем", "account": "6", "amount": "1000.00",
             "paid_at": 1764324000.0}
    body = billing.event_body("paid", order, {"transaction_id": "t1",
                                              "transaction_type": "Purchase"}, 1764324000.0)
    assert body.startswith('{"type":"payment.succeeded","timestamp":"2025-11-28T10:00:00Z",')
    assert '"login":"дем"' in body


def test_signatures_are_separated_by_spaces_only_as_in_the_reference_library():
    keys = billing.parse_secrets(SECRET)
    headers = billing.headers(keys, "msg_1", 1000, BODY)
    headers["webhook-signature"] = "v1,bm9wZQ==\t" + headers["webhook-signature"]
    with pytest.raises((WebhookVerificationError, ValueError)):  # it splits on " " too
        ClockedWebhook(SECRET, lambda: 1000).verify(BODY, headers)
    with pytest.raises(WebhookInvalid):
        billing.verify(keys, headers, BODY, 1000)
