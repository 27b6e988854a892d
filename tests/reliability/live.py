"""Driving real gateway processes for the reliability suite: orders, signed callbacks, polls.

Orders are created either through the pages (`open_order`, for scenarios about the pages and
links) or straight in the server's SQLite file through `payments.create_order` (`new_orders`,
where the pages are not what a scenario tests); callbacks go over HTTP to `python wsgi.py`,
signed the way ChronoPay signs them, from 127.0.0.1 (the sandbox allowlist).
"""

import os
import runpy
import secrets
import sqlite3
import statistics
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import requests
from conftest import ROOT, LiveServer, hidden

from gateway import chronopay, payments
from gateway.signing import make_link
from gateway.store import Store

SANDBOX = runpy.run_path(os.path.join(ROOT, "config.sandbox.py"))
AMOUNT = "1000.00"


def gateway(tmp_path, billing_url, **env):
    """A not yet started `python wsgi.py` (sandbox config) delivering to billing_url; env
    holds config keys (BILLING_TIMEOUT=1), set as GATEWAY_* variables."""
    env = {f"GATEWAY_{key}": str(value) for key, value in env.items()}
    return LiveServer(tmp_path, env=dict(env, GATEWAY_BILLING_URL=billing_url))


def store_of(server):
    """A store of our own on the server's database file (another process, same file)."""
    return Store(server.env["GATEWAY_DATABASE_URL"])


def new_orders(store, count, amount=AMOUNT, login="dem001"):
    """Create pending orders as «Заплатить» would; returns their ids."""
    return [payments.create_order(store, nonce=secrets.token_urlsafe(16), login=login,
                                  account=str(6 + n % 50), amount=Decimal(amount),
                                  now=time.time())["order_id"] for n in range(count)]


def callback(order_id, transaction_id=None, transaction_type="Purchase", total=AMOUNT):
    """The form ChronoPay posts for a transaction on an order, correctly signed."""
    fields = {"transaction_type": transaction_type,
              "transaction_id": transaction_id or "t" + order_id.replace("-", ""),
              "customer_id": "c-42", "total": total, "currency": "RUB",
              "order_id": order_id, "product_id": SANDBOX["CHRONOPAY_PRODUCT_ID"],
              "site_id": "1"}
    fields["sign"] = chronopay.callback_sign(
        SANDBOX["CHRONOPAY_SHARED_SECRET"], fields["customer_id"], fields["transaction_id"],
        transaction_type, total)
    return fields


def post_callback(server, fields, session=requests, timeout=60):
    """ChronoPay's POST; the status, or the transport error's name when none came back."""
    try:
        return session.post(server.url + "/chronopay/callback", data=fields,
                            timeout=timeout).status_code
    except requests.RequestException as exc:
        return type(exc).__name__


def poll(probe, timeout=60, what="condition"):
    """Wait for another process's commit: probe() until truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling, not timing anything


def delivered_count(store):
    return store.read().conn.execute(
        "SELECT count(*) FROM events WHERE status = 'delivered'").fetchone()[0]


def scalar(store, sql, *args):
    return store.read().conn.execute(sql, args).fetchone()[0]


def locked_lines(server):
    """Lines of the server's log that say SQLite refused a lock."""
    return [line for line in server.output().splitlines() if "database is locked" in line]


def percentile(values, q):
    """The q-th percentile (0..100) of some latencies."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


class Database:
    """Read-only looks into a live server's SQLite file."""

    def __init__(self, path):
        self.path = str(path)

    def query(self, sql, *args):
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def count(self, table, where="1 = 1", *args):
        return self.query(f"SELECT COUNT(*) FROM {table} WHERE {where}", *args)[0][0]

    def journal_counts(self):
        """(callbacks journaled, of them carrying rawhttp's hidden request)."""
        return (self.count("callbacks"), self.count("callbacks", "body LIKE ?", "%smug%"))

    def state(self):
        """Everything a callback may change: orders, transactions and the outbox."""
        # review aside: a replay marks the orders involved for a person, on purpose.
        return (self.query("SELECT order_id, status, paid_at, transaction_id FROM orders"
                           " ORDER BY order_id"),
                self.count("transactions"), self.count("events"))


def signed_link(base_url, secret, amount="1000.00", login="dem001", account="6", ttl=600):
    query = make_link(secret, login, account, amount, int(time.time()) + ttl)
    return base_url + "/pay", query


def open_order(base_url, secret=SANDBOX["CABINET_SECRET"], amount="1000.00", session=None,
               verify=True, referer=False):
    """Open a cabinet link and confirm it; returns ChronoPay's hand-off query."""
    session = session or requests.Session()
    url, query = signed_link(base_url, secret, amount)
    page = session.get(url, params=query, timeout=10, verify=verify)
    assert page.status_code == 200, page.text
    headers = {"Referer": page.url} if referer else {}
    answer = session.post(base_url + "/pay/confirm", allow_redirects=False, timeout=10,
                          verify=verify, headers=headers,
                          data={"csrf_token": hidden(page.text, "csrf_token"),
                                "token": hidden(page.text, "token"),
                                "again": "y"})  # one account pays many times on purpose
    assert answer.status_code == 303, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["Location"]).query).items()}


def callback_for(query, secret=SANDBOX["CHRONOPAY_SHARED_SECRET"], customer_id="c-42",
                 transaction_id="70001", transaction_type="Purchase"):
    """The callback ChronoPay would send for a hand-off, as a list of (name, value) pairs."""
    total = query["product_price"]
    sign = chronopay.callback_sign(secret, customer_id, transaction_id, transaction_type, total)
    return [("transaction_type", transaction_type), ("transaction_id", transaction_id),
            ("customer_id", customer_id), ("total", total), ("currency", "RUB"),
            ("order_id", query["order_id"]), ("product_id", query["product_id"]),
            ("sign", sign)]
