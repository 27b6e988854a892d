"""The local ledger: one row per external_id, committed before and after billing is touched."""
import sqlite3
import threading
import time
from decimal import Decimal

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    external_id TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    account     TEXT NOT NULL,
    amount      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('applying', 'applied')),
    payment_id  TEXT,
    updated_at  REAL NOT NULL
);
"""
REVERSALS = ("payment.refunded", "payment.chargeback")


class Conflict(Exception):
    """The same external_id came with another account or amount."""


class BillingFailed(Exception):
    """Billing did not take the payment; the gateway will retry."""


def movement(event):
    """(external_id, account, signed Decimal amount string) of a money event."""
    data = event["data"]
    amount = Decimal(data.get("refunded_amount") or data["amount"])
    if event["type"] in REVERSALS:
        amount = -amount
    return data["external_id"], str(data["account"]), f"{amount:.2f}"


class Ledger:
    """Applies each external_id to billing once, across retries, threads and crashes."""

    def __init__(self, path, billing):
        self.path, self.billing = path, billing
        # One apply at a time: a second thread must not see 'applying' and pay again.
        self.lock = threading.Lock()
        with self.connect() as conn:
            conn.executescript(SCHEMA)

    def connect(self):
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def apply(self, event, webhook_id):
        """The billing payment id of the event, paying it at most once."""
        ext, account, amount = movement(event)
        with self.lock:
            conn = self.connect()
            try:
                return self._apply(conn, event, webhook_id, ext, account, amount)
            finally:
                conn.close()

    def _apply(self, conn, event, webhook_id, ext, account, amount):
        row = conn.execute("SELECT account, amount, state, payment_id FROM ledger"
                           " WHERE external_id = ?", (ext,)).fetchone()
        if row and (row[0], row[1]) != (account, amount):
            raise Conflict(f"{ext}: ledger has {row[0]} {row[1]}, event {account} {amount}")
        if row and row[2] == "applied":
            return row[3]
        if row is None:
            conn.execute("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, 'applying', NULL, ?)",
                         (ext, webhook_id, event["type"], account, amount, time.time()))
        else:
            # A crash left it 'applying': billing may have it already.
            payment_id = self.billing.lookup(ext)
            if payment_id:
                return self._applied(conn, ext, payment_id)
        comment = f"ChronoPay {event['data'].get('transaction_id', '')}"
        return self._applied(conn, ext, self.billing.pay(account, amount, ext, comment))

    def _applied(self, conn, ext, payment_id):
        conn.execute("UPDATE ledger SET state = 'applied', payment_id = ?, updated_at = ?"
                     " WHERE external_id = ?", (payment_id, time.time(), ext))
        return payment_id

    def rows(self):
        """Every ledger row, for reconcile."""
        with self.connect() as conn:
            return conn.execute("SELECT external_id, account, amount, state, payment_id"
                                " FROM ledger ORDER BY updated_at").fetchall()
