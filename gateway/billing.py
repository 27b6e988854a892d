"""The call to billing: event bodies and their Standard Webhooks signatures.

https://www.standardwebhooks.com/: `webhook-signature` is `v1,` + base64 HMAC-SHA256 over
"id.timestamp.body", keyed with the base64-decoded part of a `whsec_` secret; several
space-separated signatures let a secret be rotated without downtime.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time

from .errors import ConfigError, WebhookInvalid

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
TOLERANCE = 300
EVENT_TYPES = {"paid": "payment.succeeded", "refunded": "payment.refunded",
               "chargeback": "payment.chargeback"}


def parse_secrets(value):
    """BILLING_SECRET as keys: one `whsec_…` or two (list, or separated by space or comma)."""
    items = value if isinstance(value, (list, tuple)) else re.split(r"[\s,]+", value or "")
    keys = []
    for item in filter(None, items):
        if not item.startswith(PREFIX):
            raise ConfigError("Set BILLING_SECRET as whsec_<base64>.")
        try:
            key = base64.b64decode(item[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("Set BILLING_SECRET as whsec_<base64>.") from exc
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"Set BILLING_SECRET to at least {MIN_KEY_BYTES} random bytes.")
        keys.append(key)
    if not keys or len(keys) > 2:
        raise ConfigError("Set BILLING_SECRET to one secret, or two while rotating.")
    return keys


def new_secret():
    """A fresh secret in the form billing and we share."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(keys, msg_id, timestamp, body):
    """The webhook-signature header value: one `v1,<base64>` per key."""
    payload = f"{msg_id}.{int(timestamp)}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, payload, hashlib.sha256).digest()).decode()
        for key in keys
    )


def headers(keys, msg_id, timestamp, body):
    """The headers of one attempt: the id is the event's, the timestamp this attempt's."""
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signature(keys, msg_id, timestamp, body),
    }


def verify(keys, request_headers, body, now, tolerance=TOLERANCE):
    """Check a received call the Standard Webhooks way; return the parsed body."""
    lower = {name.lower(): value for name, value in request_headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp", "")
    if not msg_id or not re.fullmatch(r"[0-9]{1,15}", stamp) or abs(now - int(stamp)) > tolerance:
        raise WebhookInvalid("webhook id or timestamp missing or out of tolerance")
    expected = [signature([key], msg_id, int(stamp), body) for key in keys]
    for given in lower.get("webhook-signature", "").split(" "):
        if any(hmac.compare_digest(given.encode(), want.encode()) for want in expected):
            return json.loads(body)
    raise WebhookInvalid("no matching webhook signature")


def iso(epoch):
    """An epoch time as the contract writes it: 2026-11-28T10:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def new_event_id():
    return "msg_" + secrets.token_hex(12)


def external_id(transaction_id):
    """The id billing de-duplicates a money movement on: ASCII and under 50 characters."""
    if len(transaction_id) <= 46:
        return "CP:" + transaction_id
    # Longer ids would not fit UTM5's or LANBilling's external number; "CPH:" keeps the
    # hashed form from ever equalling a literal "CP:" id.
    return "CPH:" + hashlib.sha256(transaction_id.encode()).hexdigest()[:45]


def event_body(effect, order, transaction, now, taken=None):
    """The JSON body of the event an effect causes; sent byte for byte on every retry.

    A reversal's `taken` is (refunded_amount, remaining_amount): what this event takes back
    and what stays credited after it (a partial refund leaves some, a chargeback none).
    """
    data = {
        "order_id": order["order_id"], "login": order["login"],
        "account": order["account"], "amount": order["amount"], "currency": "RUB",
        "transaction_id": transaction["transaction_id"],
        "transaction_type": transaction["transaction_type"],
        "paid_at": iso(order["paid_at"] if order["paid_at"] else now),
        "external_id": external_id(transaction["transaction_id"]),
    }
    if effect != "paid" and order.get("transaction_id"):
        data["original_transaction_id"] = order["transaction_id"]
        data["original_external_id"] = external_id(order["transaction_id"])
    if taken is not None:
        data["refunded_amount"], data["remaining_amount"] = taken
    return json.dumps({"type": EVENT_TYPES[effect], "timestamp": iso(now), "data": data},
                      ensure_ascii=False, separators=(",", ":"))
