"""Driving a live gateway over HTTP and reading its database beside it."""

import os
import runpy
import sqlite3
import time
from urllib.parse import parse_qs, urlsplit

import requests
from conftest import ROOT, hidden

from gateway import chronopay
from gateway.signing import make_link

SANDBOX = runpy.run_path(os.path.join(ROOT, "config.sandbox.py"))


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
        return (self.query("SELECT order_id, status, review, paid_at, transaction_id FROM orders"
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
                                "token": hidden(page.text, "token")})
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
