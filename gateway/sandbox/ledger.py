"""The sandbox's own books: which orders its ChronoPay paid, which calls its billing booked.

They live in an SQLite file of the sandbox's own (`sandbox.sqlite3` in the instance folder),
never in the gateway's store, so the production database holds no sandbox data whichever
backend runs it. The store's habits hold here too: WAL with synchronous=FULL, BEGIN IMMEDIATE
for a write, and a primary key that books each webhook-id and pays each order once, however
many requests race (a duplicate is a no-op, not an error). Like the store it raises only our
StoreBusy / StoreUnavailable / StoreConflict, which the app answers with 503.
"""

import sqlite3
import threading
from contextlib import contextmanager

# The store's own mapping of sqlite3's errors to ours: this is an SQLite file too.
from ..store.sqlite import translated

SCHEMA = (
    # ChronoPay with payment uniqueness control pays an order_id once.
    "CREATE TABLE IF NOT EXISTS paid (order_id TEXT PRIMARY KEY, paid_at REAL NOT NULL)",
    # Billing credits a call once per webhook-id.
    "CREATE TABLE IF NOT EXISTS ledger (webhook_id TEXT PRIMARY KEY, type TEXT NOT NULL,"
    " order_id TEXT NOT NULL, amount TEXT NOT NULL, received_at REAL NOT NULL)",
)


class Ledger:
    """The sandbox's SQLite file, with one connection per thread (waitress serves from a pool)."""

    def __init__(self, path, busy_timeout=30):
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # The first connections of a new file race to switch it to WAL and make the tables;
        # SQLite answers the losers "database is locked" at once, busy timeout or not.
        self._opening = threading.Lock()

    def _connection(self):
        """This thread's connection, opened with the durability settings, the tables made if
        missing."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._opening:
                conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self):
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        for statement in SCHEMA:
            conn.execute(statement)
        return conn

    @contextmanager
    def _write(self):
        """A write transaction taken up front (BEGIN IMMEDIATE), committed or rolled back."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @translated
    def pay_once(self, order_id, now):
        """Mark an order paid unless it was; True if this call paid it."""
        with self._write() as conn:
            return conn.execute("INSERT INTO paid (order_id, paid_at) VALUES (?, ?)"
                                " ON CONFLICT (order_id) DO NOTHING", (order_id, now)
                                ).rowcount == 1

    @translated
    def paid_at(self, order_id):
        """When the order was paid, or None."""
        row = self._connection().execute("SELECT paid_at FROM paid WHERE order_id = ?",
                                         (order_id,)).fetchone()
        return None if row is None else row[0]

    @translated
    def book_once(self, entry):
        """Book a call unless its webhook-id was booked; True if this call booked it."""
        with self._write() as conn:
            return conn.execute(
                "INSERT INTO ledger (webhook_id, type, order_id, amount, received_at) VALUES"
                " (:webhook_id, :type, :order_id, :amount, :received_at)"
                " ON CONFLICT (webhook_id) DO NOTHING", entry).rowcount == 1

    @translated
    def entries(self):
        """Every booked call, in the order they arrived."""
        return [dict(row) for row in self._connection().execute(
            "SELECT * FROM ledger ORDER BY received_at, rowid")]

    def close(self):
        """Close this thread's connection, if any."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
