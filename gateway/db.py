"""All SQL of the gateway, behind a small store so another backend can replace SQLite.

Times are epoch seconds (REAL), amounts the exact decimal string ("1000.00"). Correctness rests
on the schema's constraints, not on check-then-write: a transaction is recorded once per
(transaction_id, transaction_type), an order takes each money effect at most once, and an
outcome yields at most one billing event.
"""

import os
import sqlite3
import threading
from contextlib import contextmanager

ACCEPTED = "('applied', 'duplicate', 'ignored')"  # verdicts of callbacks that went through

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orders (
    order_id    TEXT PRIMARY KEY,
    nonce       TEXT NOT NULL UNIQUE,
    login       TEXT NOT NULL,
    account     TEXT NOT NULL,
    amount      TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('pending', 'declined', 'paid', 'refunded', 'chargeback')),
    review      TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    paid_at     REAL,
    transaction_id TEXT,
    link_id     TEXT  -- the cabinet link that created it (LINK_MAX_ORDERS counts by it)
);
CREATE INDEX IF NOT EXISTS orders_login ON orders (login, created_at);
CREATE INDEX IF NOT EXISTS orders_created ON orders (created_at);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status, created_at);
-- LINK_MAX_ORDERS counts a link's orders, the confirmation page looks for a recent payment.
CREATE INDEX IF NOT EXISTS orders_link ON orders (link_id) WHERE link_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_account_paid ON orders (account, paid_at);

CREATE TABLE IF NOT EXISTS transactions (
    transaction_id   TEXT NOT NULL,
    transaction_type TEXT NOT NULL,
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    effect      TEXT CHECK (effect IN ('paid', 'refunded', 'chargeback', 'declined')),
    total       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    -- customer_id + transaction_id + transaction_type + total, as the callback sign covers
    -- them: moving characters between those fields keeps a captured sign valid.
    signed_text TEXT,
    PRIMARY KEY (transaction_id, transaction_type)
);
-- One transaction per signed text, however its fields were split.
CREATE UNIQUE INDEX IF NOT EXISTS transactions_signed_text ON transactions (signed_text);
-- One paid, one refunded and one chargeback transition per order, whatever races.
CREATE UNIQUE INDEX IF NOT EXISTS transactions_one_effect ON transactions (order_id, effect)
    WHERE effect IN ('paid', 'refunded', 'chargeback');
-- An order's transactions (Tx.reversal on every callback): SQLite cannot use the partial
-- index above for a narrower IN list, and without this it scans the table (make bench).
CREATE INDEX IF NOT EXISTS transactions_order ON transactions (order_id);

CREATE TABLE IF NOT EXISTS callbacks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    remote_addr TEXT,
    body        TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    reason      TEXT,
    order_id    TEXT,
    transaction_id   TEXT,
    transaction_type TEXT
);
CREATE INDEX IF NOT EXISTS callbacks_order ON callbacks (order_id);
-- `callbacks list --rejected`, newest first. Partial: the callbacks that applied cleanly (all
-- but a few) write no entry here, and the listing need not scan the whole journal.
CREATE INDEX IF NOT EXISTS callbacks_rejected ON callbacks (id) WHERE verdict NOT IN {ACCEPTED};

CREATE TABLE IF NOT EXISTS events (
    event_id    TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    created_at  REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    retry_until REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    delivered_at REAL,
    last_error  TEXT,
    UNIQUE (order_id, type)
);
CREATE INDEX IF NOT EXISTS events_due ON events (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL REFERENCES events (event_id),
    worker      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    http_status INTEGER,
    outcome     TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS attempts_event ON attempts (event_id, id);

-- The sandbox ChronoPay's paid order_ids: with payment uniqueness control it pays one once.
CREATE TABLE IF NOT EXISTS sandbox_paid (
    order_id    TEXT PRIMARY KEY,
    paid_at     REAL NOT NULL
);

-- The sandbox billing's ledger: one credit per webhook-id.
CREATE TABLE IF NOT EXISTS sandbox_ledger (
    webhook_id  TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    amount      TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""

# An order with when billing acknowledged its payment: paid at ChronoPay and acknowledged by
# billing are two facts, kept apart (billed_at comes from the outbox, not from a copy).
ORDER_COLUMNS = (
    "order_id, nonce, login, account, amount, status, review, created_at, updated_at, "
    "paid_at, transaction_id, (SELECT delivered_at FROM events WHERE events.order_id ="
    " orders.order_id AND events.type = 'payment.succeeded') AS billed_at"
)


def upgrade(conn):
    """Add the columns a database made by an earlier version lacks (CREATE TABLE IF NOT EXISTS
    leaves an existing table as it is)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(transactions)")}
    if columns and "signed_text" not in columns:
        conn.execute("ALTER TABLE transactions ADD COLUMN signed_text TEXT")
    # callbacks (verdict, id) was written on every callback and used by no query.
    conn.execute("DROP INDEX IF EXISTS callbacks_verdict")
    order_columns = {row[1] for row in conn.execute("PRAGMA table_info(orders)")}
    if order_columns and "link_id" not in order_columns:
        conn.execute("ALTER TABLE orders ADD COLUMN link_id TEXT")


class Store:
    """An SQLite database with one connection per thread (waitress serves from a pool)."""

    def __init__(self, url, busy_timeout=30):
        if not url.startswith("sqlite:///"):
            raise ValueError("only sqlite:/// URLs are supported")
        self.path = url[len("sqlite:///"):]
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # This process's writers queue here and the next one starts the moment the holder
        # commits; left to SQLite's busy handler they poll in sleeps of 1, 2, 5 ... 100 ms, and
        # the unlucky ones make the p99 (make bench: callback p99 122 -> 21 ms at c=8, same
        # throughput). Waiting here or for another process counts against the same busy
        # timeout. Reentrant, so a nested write fails in SQLite as before, not deadlocks here.
        self._write_lock = threading.RLock()

    def connection(self):
        """This thread's connection, opened with the durability settings on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if os.path.dirname(self.path):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self):
        """Close this thread's connection, if any."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def init_schema(self):
        """Create the tables, columns and indexes that are missing."""
        with self.write() as tx:
            upgrade(tx.conn)
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    tx.conn.execute(statement)

    @contextmanager
    def write(self):
        """A write transaction taken up front (BEGIN IMMEDIATE), committed or rolled back."""
        conn = self.connection()
        if not self._write_lock.acquire(timeout=self.busy_timeout):
            raise sqlite3.OperationalError("database is locked")  # as SQLite says it
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._write_lock.release()

    def read(self):
        """A handle for reads outside a write transaction."""
        return Tx(self.connection())

    def integrity_check(self):
        """SQLite's own verdict on the file: 'ok' or the problems found."""
        return self.connection().execute("PRAGMA integrity_check").fetchone()[0]


class Tx:
    """The statements the gateway runs, on one connection."""

    def __init__(self, conn):
        self.conn = conn

    def _one(self, sql, *args):
        row = self.conn.execute(sql, args).fetchone()
        return dict(row) if row else None

    def _all(self, sql, *args):
        return [dict(row) for row in self.conn.execute(sql, args).fetchall()]

    # orders

    def order(self, order_id):
        return self._one(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?", order_id)

    def order_by_nonce(self, nonce):
        return self._one(f"SELECT {ORDER_COLUMNS} FROM orders WHERE nonce = ?", nonce)

    def insert_order(self, order):
        self.conn.execute(
            "INSERT INTO orders (order_id, nonce, login, account, amount, status, created_at,"
            " updated_at) VALUES (:order_id, :nonce, :login, :account, :amount, 'pending',"
            " :created_at, :created_at)",
            order,
        )

    def update_order(self, order_id, now, **changes):
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        self.conn.execute(
            f"UPDATE orders SET {sets}, updated_at = :now WHERE order_id = :order_id",
            dict(changes, now=now, order_id=order_id),
        )

    def orders(self, status=None, login=None, since=None, review=False, limit=1000):
        sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1"
        args = []
        for clause, value in (("status = ?", status), ("login = ?", login),
                              ("created_at >= ?", since)):
            if value is not None:
                sql += " AND " + clause
                args.append(value)
        if review:
            sql += " AND review IS NOT NULL"
        sql += " ORDER BY created_at DESC LIMIT ?"
        return self._all(sql, *args, limit)

    # transactions and the callback journal

    def transaction(self, transaction_id, transaction_type, signed_text=None):
        """The transaction with this key, or any whose sign covered the same text."""
        return self._one(
            "SELECT * FROM transactions WHERE transaction_id = ? AND transaction_type = ?"
            " OR signed_text = ?",
            transaction_id, transaction_type, signed_text,
        )

    def reversal(self, order_id):
        """The order's refund or chargeback transaction, applied or held for its purchase."""
        return self._one(
            "SELECT * FROM transactions WHERE order_id = ? AND effect IN ('refunded',"
            " 'chargeback') ORDER BY created_at, rowid LIMIT 1",
            order_id,
        )

    def insert_transaction(self, row):
        self.conn.execute(
            "INSERT INTO transactions (transaction_id, transaction_type, order_id, effect,"
            " total, created_at, signed_text) VALUES (:transaction_id, :transaction_type,"
            " :order_id, :effect, :total, :created_at, :signed_text)",
            row,
        )

    def journal(self, entry):
        """Record one received callback with its verdict; returns its id."""
        return self.conn.execute(
            "INSERT INTO callbacks (received_at, remote_addr, body, verdict, reason, order_id,"
            " transaction_id, transaction_type) VALUES (:received_at, :remote_addr, :body,"
            " :verdict, :reason, :order_id, :transaction_id, :transaction_type)",
            entry,
        ).lastrowid

    def callbacks(self, order_id=None, rejected=False, limit=1000):
        sql = "SELECT * FROM callbacks WHERE 1 = 1"
        args = []
        if order_id is not None:
            sql += " AND order_id = ?"
            args.append(order_id)
        if rejected:
            sql += f" AND verdict NOT IN {ACCEPTED}"  # as in callbacks_rejected, to use it
        return self._all(sql + " ORDER BY id DESC LIMIT ?", *args, limit)

    # the billing outbox

    def insert_event(self, event):
        self.conn.execute(
            "INSERT INTO events (event_id, order_id, type, body, status, created_at,"
            " next_attempt_at, retry_until) VALUES (:event_id, :order_id, :type, :body,"
            " 'pending', :created_at, :created_at, :retry_until)",
            event,
        )

    def event(self, event_id):
        return self._one("SELECT * FROM events WHERE event_id = ?", event_id)

    def events(self, order_id=None, status=None, limit=1000):
        sql = "SELECT * FROM events WHERE 1 = 1"
        args = []
        for clause, value in (("order_id = ?", order_id), ("status = ?", status)):
            if value is not None:
                sql += " AND " + clause
                args.append(value)
        return self._all(sql + " ORDER BY created_at DESC LIMIT ?", *args, limit)

    def claim_events(self, now, lease_token, lease_until, limit):
        """Lease up to limit pending events, most overdue first, whose lease (if any) has run
        out; returns them as leased."""
        ids = [row[0] for row in self.conn.execute(
            "SELECT event_id FROM events WHERE status = 'pending' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY next_attempt_at LIMIT ?",
            (now, now, limit),
        )]
        self.conn.executemany(
            "UPDATE events SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"
            " WHERE event_id = ?",
            [(lease_token, lease_until, event_id) for event_id in ids],
        )
        return [self.event(event_id) for event_id in ids]

    def release_event(self, event_id, lease_token, attempt_id):
        """Give back a leased event that was not attempted after all, as it was before."""
        released = self.conn.execute(
            "UPDATE events SET lease_owner = NULL, lease_until = NULL, attempts = attempts - 1"
            " WHERE event_id = ? AND lease_owner = ?",
            (event_id, lease_token),
        ).rowcount
        if released:
            self.conn.execute("DELETE FROM attempts WHERE id = ?", (attempt_id,))

    def next_due(self):
        """When the earliest pending event is due (ignoring leases), or None."""
        return self.conn.execute(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM events"
            " WHERE status = 'pending'"
        ).fetchone()[0]

    def settle_event(self, event_id, lease_token, **changes):
        """Record an attempt's end; only the lease holder may. Returns whether it held it."""
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        cursor = self.conn.execute(
            f"UPDATE events SET {sets}, lease_owner = NULL, lease_until = NULL"
            " WHERE event_id = :event_id AND lease_owner = :lease_token",
            dict(changes, event_id=event_id, lease_token=lease_token),
        )
        return cursor.rowcount == 1

    def retry_event(self, event_id, now, retry_until):
        """Put an event (dead or pending) back in line for an immediate attempt."""
        return self.conn.execute(
            "UPDATE events SET status = 'pending', next_attempt_at = ?, retry_until = ?"
            " WHERE event_id = ? AND status != 'delivered'",
            (now, retry_until, event_id),
        ).rowcount

    def insert_attempt(self, attempt):
        return self.conn.execute(
            "INSERT INTO attempts (event_id, worker, started_at) VALUES"
            " (:event_id, :worker, :started_at)",
            attempt,
        ).lastrowid

    def finish_attempt(self, attempt_id, started_at, finished_at, http_status, outcome, error):
        self.conn.execute(
            "UPDATE attempts SET started_at = ?, finished_at = ?, http_status = ?, outcome = ?,"
            " error = ? WHERE id = ?",
            (started_at, finished_at, http_status, outcome, error, attempt_id),
        )

    def attempts(self, event_id):
        return self._all("SELECT * FROM attempts WHERE event_id = ? ORDER BY id", event_id)

    # the sandbox billing

    def credit_once(self, entry):
        """Book a webhook in the sandbox ledger unless its id was booked; True if new."""
        return self.conn.execute(
            "INSERT INTO sandbox_ledger (webhook_id, type, order_id, amount, received_at)"
            " VALUES (:webhook_id, :type, :order_id, :amount, :received_at)"
            " ON CONFLICT (webhook_id) DO NOTHING",
            entry,
        ).rowcount == 1

    def ledger(self):
        return self._all("SELECT * FROM sandbox_ledger ORDER BY received_at")

    def count(self, table):
        if table not in ("orders", "transactions", "callbacks", "events", "attempts"):
            raise ValueError(table)
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608

    # the subscriber's pages (appended)

    def count_link_orders(self, link_id):
        return self.conn.execute("SELECT count(*) FROM orders WHERE link_id = ?",
                                 (link_id,)).fetchone()[0]

    def set_link_id(self, nonce, link_id):
        self.conn.execute("UPDATE orders SET link_id = ? WHERE nonce = ?", (link_id, nonce))

    def recent_paid_order(self, account, since):
        """The account's latest order paid at or after since, or None."""
        return self._one(
            "SELECT order_id, amount, paid_at FROM orders WHERE account = ? AND paid_at >= ?"
            " AND status = 'paid' ORDER BY paid_at DESC LIMIT 1", account, since)

    def sandbox_paid(self, order_id):
        return self._one("SELECT * FROM sandbox_paid WHERE order_id = ?", order_id)

    def record_sandbox_paid(self, order_id, now):
        self.conn.execute("INSERT INTO sandbox_paid (order_id, paid_at) VALUES (?, ?)"
                          " ON CONFLICT (order_id) DO NOTHING", (order_id, now))
