"""What the load is made of: orders written with the gateway's own store, and the signed
requests (callbacks, cabinet links, confirmations) that a real peer would send."""

import re
import secrets
import time
from html import unescape
from urllib.parse import urlencode

from gateway import billing, chronopay
from gateway.payments import new_order_id
from gateway.signing import make_link
from gateway.store import Store

from .load import request
from .servers import PRODUCT

AMOUNT = "1000.00"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def pending_orders(store, count, now=None):
    """Insert `count` pending orders in one transaction (the Store's own SQL); their ids."""
    now = now or time.time()
    ids = [new_order_id(now) for _ in range(count)]
    with store.write() as tx:
        for i, order_id in enumerate(ids):
            tx.insert_order({"order_id": order_id, "nonce": secrets.token_urlsafe(16),
                             "login": f"bench{i % 5000}", "account": str(i % 5000),
                             "amount": AMOUNT, "created_at": now})
    return ids


def history(store, count, now=None):
    """`count` orders as a served past leaves them: paid, with their transaction, journal
    line and delivered billing event, so every table the callback touches has grown."""
    now = now or time.time()
    ids = pending_orders(store, count, now - 86400)
    with store.write() as tx:
        for order_id in ids:
            transaction = {"transaction_id": "h" + order_id, "transaction_type": "Purchase",
                           "order_id": order_id, "effect": "paid", "total": AMOUNT,
                           "created_at": now,
                           "signed_text": f"c-42h{order_id}Purchase{AMOUNT}"}
            tx.insert_transaction(transaction)
            tx.update_order(order_id, now, status="paid", paid_at=now,
                            transaction_id=transaction["transaction_id"])
            tx.journal({"received_at": now, "remote_addr": "127.0.0.1", "body": "x" * 400,
                        "verdict": "applied", "reason": "pending -> paid",
                        "order_id": order_id, "transaction_id": transaction["transaction_id"],
                        "transaction_type": "Purchase"})
            tx.insert_event({"event_id": billing.new_event_id(), "order_id": order_id,
                             "type": "payment.succeeded", "created_at": now,
                             "retry_until": now + 3600,
                             "body": billing.event_body("paid", tx.order(order_id),
                                                        transaction, now)})
        tx.conn.execute("UPDATE events SET status = 'delivered', delivered_at = created_at")


def open_store(config):
    return Store(config["DATABASE_URL"])


def callback_fields(config, order_id, transaction_id):
    """The form of a Purchase callback for an order, signed as ChronoPay signs it."""
    fields = {
        "transaction_type": "Purchase", "transaction_id": transaction_id,
        "customer_id": "c-42", "total": AMOUNT, "currency": "RUB", "order_id": order_id,
        "product_id": PRODUCT, "site_id": "1", "email": "payer@example.ru",
        "country": "RUS", "creditcardnumber": "411111XXXXXX1111",
    }
    fields["sign"] = chronopay.callback_sign(
        config["CHRONOPAY_SHARED_SECRET"], fields["customer_id"], transaction_id, "Purchase",
        AMOUNT)
    return fields


def callback(config, order_id, transaction_id):
    """The bytes of that callback's POST."""
    body = urlencode(callback_fields(config, order_id, transaction_id)).encode()
    return request("POST", "/chronopay/callback", body, FORM)


def callbacks(config, order_ids):
    """An endless supply: the next order's first callback, (order_id, bytes), or None."""
    pending = iter(order_ids)

    def next_request():
        order_id = next(pending, None)
        if order_id is None:
            return None
        return order_id, callback(config, order_id, "t" + secrets.token_hex(8))

    return next_request


def link_request(config, login="dem001", account="6"):
    """GET /pay with a cabinet link carrying an amount (valid for the next 25 minutes)."""
    query = make_link(config["CABINET_SECRET"], login, account, AMOUNT, int(time.time()) + 1500)
    return request("GET", "/pay?" + urlencode(query))


def confirmation(head, page):
    """The confirmation POST a browser would send from a confirmation page, or None."""
    cookie = re.search(rb"Set-Cookie: (session=[^;]+)", head, re.IGNORECASE)
    values = {name: re.search(rf'name="{name}"[^>]*value="([^"]*)"'.encode(), page)
              for name in ("csrf_token", "token")}
    if cookie is None or None in values.values():
        return None
    form = {name: unescape(match.group(1).decode()) for name, match in values.items()}
    return request("POST", "/pay/confirm", urlencode(form).encode(),
                   dict(FORM, Cookie=cookie.group(1).decode()))
