"""The SQLite backend: all SQL of the gateway, raising only the store's own errors.

Times are epoch seconds (REAL), amounts the exact decimal string ("1000.00"). Correctness rests
on the schema's constraints, not on check-then-write: a transaction is recorded once per
(transaction_id, transaction_type), an order takes each money effect at most once, and an
outcome yields at most one billing event.
"""

import functools
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs

from ..errors import StoreBusy, StoreConflict, StoreUnavailable
from ..states import CLEAN_VERDICTS, EVENT_STATUSES, ORDER_STATUSES, sql_list

ACCEPTED = sql_list(CLEAN_VERDICTS)  # verdicts of callbacks that went through cleanly

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS orders (
    order_id    TEXT PRIMARY KEY,
    nonce       TEXT NOT NULL UNIQUE,
    login       TEXT NOT NULL,
    account     TEXT NOT NULL,
    amount      TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN {sql_list(ORDER_STATUSES)}),
    review      TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    paid_at     REAL,
    transaction_id TEXT,
    link_id     TEXT,  -- the cabinet link that made it (signing.link_id), for LINK_MAX_ORDERS
    refunded    TEXT   -- the sum of its refunds applied so far ("300.00"), NULL for none
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
-- One paid and one chargeback transition per order, whatever races. Refunds may be several
-- (partial), each once by its key, and their sum is kept within the amount by payments in the
-- same write transaction as the order's row.
CREATE UNIQUE INDEX IF NOT EXISTS transactions_one_credit ON transactions (order_id, effect)
    WHERE effect IN ('paid', 'chargeback');
-- An order's transactions (Tx.reversals on every callback): SQLite cannot use the partial
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
    status      TEXT NOT NULL CHECK (status IN {sql_list(EVENT_STATUSES)}),
    created_at  REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    retry_until REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    delivered_at REAL,
    last_error  TEXT,
    -- the event's place among its order's events: they are delivered in this order
    seq         INTEGER,
    -- bumped by `events retry`: a worker's settle that read an older generation is refused
    generation  INTEGER NOT NULL DEFAULT 0,
    -- the lease holder's boot id and time.monotonic() deadline: a claimer of the same boot
    -- judges the lease by them (immune to wall-clock steps), any other by lease_until
    lease_boot  TEXT,
    lease_mono  REAL,
    transaction_id TEXT  -- the ChronoPay transaction that caused it
);
CREATE INDEX IF NOT EXISTS events_due ON events (status, next_attempt_at);
CREATE UNIQUE INDEX IF NOT EXISTS events_order_seq ON events (order_id, seq);
-- One event per order and type, but one payment.refunded per refund transaction (partial
-- refunds are several).
CREATE UNIQUE INDEX IF NOT EXISTS events_one_type ON events (order_id, type)
    WHERE type != 'payment.refunded';
CREATE UNIQUE INDEX IF NOT EXISTS events_one_refund ON events (order_id, transaction_id)
    WHERE type = 'payment.refunded';

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

-- Callbacks from addresses not in CHRONOPAY_CALLBACK_IPS, counted per hour: a stranger's
-- flood updates one row here, and only the first CALLBACK_SAMPLE_CAP of an hour are
-- journaled (truncated) in callbacks.
CREATE TABLE IF NOT EXISTS stranger_hours (
    hour        INTEGER PRIMARY KEY,
    refused     INTEGER NOT NULL
);
"""

# An order with when billing acknowledged its payment: paid at ChronoPay and acknowledged by
# billing are two facts, kept apart (billed_at comes from the outbox, not from a copy).
ORDER_COLUMNS = (
    "order_id, nonce, login, account, amount, status, review, created_at, updated_at, "
    "paid_at, transaction_id, refunded, (SELECT delivered_at FROM events WHERE events.order_id ="
    " orders.order_id AND events.type = 'payment.succeeded') AS billed_at"
)


# An event's lease is still held: judged by the monotonic deadline when the claimer is of the
# holder's boot (CLOCK_MONOTONIC is shared by one boot's processes), else by the wall clock.
# Parameters: the caller's boot id, its monotonic time, its wall time.
LEASE_LIVE = ("lease_owner IS NOT NULL AND CASE WHEN lease_boot = ? THEN lease_mono > ?"
              " ELSE lease_until > ? END")
# No earlier event of the same order is undelivered (failed, in backoff, leased or dead).
FIRST_IN_LINE = ("NOT EXISTS (SELECT 1 FROM events AS earlier WHERE earlier.order_id ="
                 " e.order_id AND earlier.seq < e.seq AND earlier.status != 'delivered')")


def upgrade(conn):
    """Bring a database made by an earlier version up to this one (CREATE TABLE IF NOT EXISTS
    leaves an existing table as it is)."""
    orders = {row[1] for row in conn.execute("PRAGMA table_info(orders)")}
    for name in ("link_id", "refunded"):
        if orders and name not in orders:
            conn.execute(f"ALTER TABLE orders ADD COLUMN {name} TEXT")
    if orders and "refunded" not in orders:
        # Refunds before partial ones existed were whole: a later chargeback takes nothing.
        conn.execute("UPDATE orders SET refunded = amount WHERE status = 'refunded'")
    # A refunded transition was once unique per order; partial refunds are several.
    conn.execute("DROP INDEX IF EXISTS transactions_one_effect")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(transactions)")}
    if columns and "signed_text" not in columns:
        conn.execute("ALTER TABLE transactions ADD COLUMN signed_text TEXT")
        backfill_signed_text(conn)
    # callbacks (verdict, id) was written on every callback and used by no query.
    conn.execute("DROP INDEX IF EXISTS callbacks_verdict")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if columns and "seq" not in columns:
        conn.execute("ALTER TABLE events ADD COLUMN seq INTEGER")
        # Old events take their order's place by creation, as they were written.
        conn.execute(
            "UPDATE events SET seq = ranked.n FROM (SELECT rowid AS rid, row_number() OVER"
            " (PARTITION BY order_id ORDER BY created_at, rowid) AS n FROM events) AS ranked"
            " WHERE events.rowid = ranked.rid")
    for name, kind in (("generation", "INTEGER NOT NULL DEFAULT 0"), ("lease_boot", "TEXT"),
                       ("lease_mono", "REAL")):
        if columns and name not in columns:
            conn.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")
    # The sandbox keeps its own books now (gateway/sandbox/ledger.py); its tables here only
    # ever held demo data, and the production store holds none.
    conn.execute("DROP TABLE IF EXISTS sandbox_ledger")
    conn.execute("DROP TABLE IF EXISTS sandbox_paid")
    # Last: the outbox's new columns are in place, so the rebuilt table keeps their values.
    rebuild_events(conn)


def rebuild_events(conn):
    """An events table made with UNIQUE (order_id, type) allows one payment.refunded per
    order; SQLite cannot drop a table constraint, so the table is made anew, rows kept."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
                       ).fetchone()
    if row is None or "UNIQUE (order_id, type)" not in row[0]:
        return
    old = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS events"):]
    create = create[:create.index(";")].replace("IF NOT EXISTS events", "events_new")
    conn.execute(create)
    new = [r[1] for r in conn.execute("PRAGMA table_info(events_new)")]
    kept = ", ".join(name for name in old if name in new)
    conn.execute(f"INSERT INTO events_new ({kept}, transaction_id) SELECT {kept},"
                 " json_extract(body, '$.data.transaction_id') FROM events")
    # attempts refer to events by name: foreign keys are off here (Store.init_schema).
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_new RENAME TO events")


# What ops set, by `transactions accept-unsigned`, on an old transaction whose signed text no
# journal row can give back: the decision is recorded, and no real signed text equals it.
UNSIGNED_MARK = "unverifiable:"


def backfill_signed_text(conn):
    """Fill signed_text of the transactions an earlier version recorded without it, from the
    raw bodies of their callbacks in the journal; returns how many stay unfilled.

    Without it a captured sign re-split across customer_id/transaction_id names a "new"
    transaction and could pay another order on an upgraded database.
    """
    rows = conn.execute(
        "SELECT transaction_id, transaction_type FROM transactions WHERE signed_text IS NULL"
    ).fetchall()
    for transaction_id, transaction_type in rows:
        text = journal_signed_text(conn, transaction_id, transaction_type)
        if text is not None:
            conn.execute(
                "UPDATE transactions SET signed_text = ? WHERE transaction_id = ? AND"
                " transaction_type = ?", (text, transaction_id, transaction_type))
    return unsigned_count(conn)


def journal_signed_text(conn, transaction_id, transaction_type):
    """The signed text of a transaction as its journaled callback carried it, or None."""
    bodies = conn.execute(
        f"SELECT body FROM callbacks WHERE transaction_id = ? AND transaction_type = ? AND"
        f" verdict NOT IN {sql_list(('forbidden_ip', 'malformed', 'bad_sign'))}"
        " ORDER BY id", (transaction_id, transaction_type)).fetchall()
    for (body,) in bodies:
        fields = parse_qs(body, keep_blank_values=True)
        parts = [fields.get(name, [None])[0] for name in
                 ("customer_id", "transaction_id", "transaction_type", "total")]
        if None not in parts and parts[1:3] == [transaction_id, transaction_type]:
            return "".join(parts)
    return None


def unsigned_count(conn):
    """How many transactions have no signed text and no decision of ops about it (on a
    database init_schema has brought up to date)."""
    return conn.execute(
        "SELECT count(*) FROM transactions WHERE signed_text IS NULL").fetchone()[0]


def ours(exc):
    """Our error for an sqlite3 one: busy, a refused constraint, or unavailable."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return StoreBusy(str(exc))  # SQLITE_BUSY and SQLITE_LOCKED both say "... is locked"
    return StoreUnavailable(str(exc))


def translated(method):
    """The method, raising our errors instead of sqlite3's."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise ours(exc) from exc
    return call


def translating(*names):
    """A class decorator: the named methods (all public ones when none) raise our errors."""
    # Runs once, at import: before mutmut switches any mutant on, so it is not mutated
    # (docs/mutation.md); the tests of StoreUnavailable on a read fail without it.
    def decorate(cls):
        for name in names or [n for n in vars(cls) if not n.startswith("_")]:  # pragma: no mutate
            setattr(cls, name, translated(vars(cls)[name]))  # pragma: no mutate
        return cls
    return decorate


@translating("init_schema", "unsigned_transactions", "accept_unsigned", "read",
             "integrity_check")
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
        """Create the tables, columns and indexes that are missing, upgrading an older
        database in the same transaction."""
        conn = self.connection()
        # A table made anew (rebuild_events) is dropped while rows refer to it: SQLite asks
        # for foreign keys off outside the transaction, and we check them before the commit.
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.write() as tx:
                upgrade(tx.conn)
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        tx.conn.execute(statement)
                # What a rebuilt events table could orphan: the attempts that refer to it.
                if tx.conn.execute("PRAGMA foreign_key_check(attempts)").fetchone():
                    raise sqlite3.IntegrityError("upgrade left attempts without their event")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def write(self):
        """A write transaction taken up front (BEGIN IMMEDIATE), committed or rolled back.

        One busy budget: the wait for this process's lock and SQLite's wait for another
        process's lock add up to DB_BUSY_TIMEOUT at most.
        """
        started = time.monotonic()
        if not self._write_lock.acquire(timeout=self.busy_timeout):
            raise StoreBusy("database is locked")  # as SQLite says it
        try:
            conn = self.connection()
            left = max(self.busy_timeout - (time.monotonic() - started), 0)
            conn.execute(f"PRAGMA busy_timeout={int(left * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ours(exc) from exc
        finally:
            self._write_lock.release()

    def unsigned_transactions(self):
        """Old transactions whose signed text could not be restored (see upgrade)."""
        return unsigned_count(self.connection())

    def accept_unsigned(self):
        """Record ops' decision on the transactions with no signed text; returns how many."""
        with self.write() as tx:
            return tx.conn.execute(
                "UPDATE transactions SET signed_text = ? || transaction_id || '/' ||"
                " transaction_type WHERE signed_text IS NULL", (UNSIGNED_MARK,)).rowcount

    def read(self):
        """A handle for reads outside a write transaction."""
        return Tx(self.connection())

    def integrity_check(self):
        """SQLite's own verdict on the file: 'ok' or the problems found."""
        return self.connection().execute("PRAGMA integrity_check").fetchone()[0]


@translating()
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
            " updated_at, link_id) VALUES (:order_id, :nonce, :login, :account, :amount,"
            " 'pending', :created_at, :created_at, :link_id)",
            dict({"link_id": None}, **order),
        )

    def orders_of_link(self, link_id):
        """How many orders one cabinet link has made."""
        return self.conn.execute(
            "SELECT count(*) FROM orders WHERE link_id = ?", (link_id,)).fetchone()[0]

    def update_order(self, order_id, now, **changes):
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        self.conn.execute(
            f"UPDATE orders SET {sets}, updated_at = :now WHERE order_id = :order_id",
            dict(changes, now=now, order_id=order_id),
        )

    def orders(self, status=None, login=None, since=None, review=False, limit=None, offset=0):
        """Orders newest first; all of them unless a limit is given."""
        sql = f"SELECT {ORDER_COLUMNS} FROM orders WHERE 1 = 1"
        args = []
        for clause, value in (("status = ?", status), ("login = ?", login),
                              ("created_at >= ?", since)):
            if value is not None:
                sql += " AND " + clause
                args.append(value)
        if review:
            sql += " AND review IS NOT NULL"
        sql += " ORDER BY created_at DESC LIMIT ? OFFSET ?"
        return self._all(sql, *args, -1 if limit is None else limit, offset)

    # transactions and the callback journal

    def transaction(self, transaction_id, transaction_type, signed_text=None):
        """The transaction with this key, or any whose sign covered the same text."""
        return self._one(
            "SELECT * FROM transactions WHERE transaction_id = ? AND transaction_type = ?"
            " OR signed_text = ?",
            transaction_id, transaction_type, signed_text,
        )

    def reversals(self, order_id):
        """The order's refund and chargeback transactions, in the order they arrived."""
        return self._all(
            "SELECT * FROM transactions WHERE order_id = ? AND effect IN ('refunded',"
            " 'chargeback') ORDER BY created_at, rowid",
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

    def callbacks(self, order_id=None, rejected=False, limit=None, offset=0):
        """The journal newest first; all of it unless a limit is given."""
        sql = "SELECT * FROM callbacks WHERE 1 = 1"
        args = []
        if order_id is not None:
            sql += " AND order_id = ?"
            args.append(order_id)
        if rejected:
            sql += f" AND verdict NOT IN {ACCEPTED}"  # as in callbacks_rejected, to use it
        return self._all(sql + " ORDER BY id DESC LIMIT ? OFFSET ?", *args,
                         -1 if limit is None else limit, offset)

    # the billing outbox

    def insert_event(self, event):
        """Queue an event behind every earlier event of its order."""
        self.conn.execute(
            "INSERT INTO events (event_id, order_id, type, body, status, created_at,"
            " next_attempt_at, retry_until, seq, transaction_id) VALUES (:event_id, :order_id,"
            " :type, :body, 'pending', :created_at, :created_at, :retry_until, (SELECT"
            " coalesce(max(seq), 0) + 1 FROM events WHERE order_id = :order_id),"
            " :transaction_id)",
            dict({"transaction_id": None}, **event),
        )

    def event(self, event_id):
        return self._one("SELECT * FROM events WHERE event_id = ?", event_id)

    @staticmethod
    def _filter(order_id, status):
        sql, args = " WHERE 1 = 1", []
        for clause, value in (("order_id = ?", order_id), ("status = ?", status)):
            if value is not None:
                sql += " AND " + clause
                args.append(value)
        return sql, args

    def events(self, order_id=None, status=None, limit=None, offset=0):
        """Events newest first; all of them unless a limit is given."""
        where, args = self._filter(order_id, status)
        return self._all("SELECT * FROM events" + where + " ORDER BY created_at DESC LIMIT ?"
                         " OFFSET ?", *args, -1 if limit is None else limit,
                         offset)

    def count_events(self, order_id=None, status=None):
        where, args = self._filter(order_id, status)
        return self.conn.execute("SELECT count(*) FROM events" + where, args).fetchone()[0]

    def claim_events(self, now, lease_token, lease_until, limit, boot=None, mono=None,
                     mono_until=None):
        """Lease up to limit due pending events, most overdue first, whose lease (if any) has
        run out and whose order has no earlier event still undelivered; returns them as
        leased."""
        ids = [row[0] for row in self.conn.execute(
            "SELECT event_id FROM events AS e WHERE status = 'pending' AND next_attempt_at <= ?"
            f" AND NOT ({LEASE_LIVE}) AND {FIRST_IN_LINE} ORDER BY next_attempt_at,"
            " created_at, rowid LIMIT ?",
            (now, boot, mono, now, limit),
        )]
        self.conn.executemany(
            "UPDATE events SET lease_owner = ?, lease_until = ?, lease_boot = ?, lease_mono = ?,"
            " attempts = attempts + 1 WHERE event_id = ?",
            [(lease_token, lease_until, boot, mono_until, event_id) for event_id in ids],
        )
        return [self.event(event_id) for event_id in ids]

    def release_event(self, event_id, lease_token, attempt_id):
        """Give back a leased event that was not attempted after all, as it was before."""
        released = self.conn.execute(
            "UPDATE events SET lease_owner = NULL, lease_until = NULL, lease_boot = NULL,"
            " lease_mono = NULL, attempts = attempts - 1 WHERE event_id = ? AND lease_owner = ?",
            (event_id, lease_token),
        ).rowcount
        if released:
            self.conn.execute("DELETE FROM attempts WHERE id = ?", (attempt_id,))

    def next_due(self):
        """When the earliest pending event that is first in its order's line is due (ignoring
        leases), or None."""
        return self.conn.execute(
            "SELECT min(max(next_attempt_at, coalesce(lease_until, 0))) FROM events AS e"
            f" WHERE status = 'pending' AND {FIRST_IN_LINE}"
        ).fetchone()[0]

    def settle_event(self, event_id, lease_token, generation, **changes):
        """Record an attempt's end; only the lease holder of the generation it claimed may
        (an `events retry` since then wins). Returns whether it held it."""
        sets = ", ".join(f"{name} = :{name}" for name in changes)
        cursor = self.conn.execute(
            f"UPDATE events SET {sets}, lease_owner = NULL, lease_until = NULL,"
            " lease_boot = NULL, lease_mono = NULL WHERE event_id = :event_id AND"
            " lease_owner = :lease_token AND generation = :generation",
            dict(changes, event_id=event_id, lease_token=lease_token, generation=generation),
        )
        return cursor.rowcount == 1

    def retry_events(self, now, retry_until, boot=None, mono=None, event_id=None,
                     status=None):
        """Put events (one, or all dead or pending) back in line for an immediate attempt with
        a fresh window, except those being sent right now (a live lease); a worker that
        settles one of them later is refused. Returns (queued, being sent) counts."""
        where, args = self._filter(None, status)
        if event_id is not None:
            where, args = where + " AND event_id = ?", [*args, event_id]
        where += " AND status != 'delivered'"
        live = self.conn.execute(
            f"SELECT count(*) FROM events{where} AND lease_owner IS NOT NULL AND ({LEASE_LIVE})",
            (*args, boot, mono, now),
        ).fetchone()[0]
        queued = self.conn.execute(
            "UPDATE events SET status = 'pending', next_attempt_at = ?, retry_until = ?,"
            " generation = generation + 1, lease_owner = NULL, lease_until = NULL,"
            f" lease_boot = NULL, lease_mono = NULL{where} AND NOT ({LEASE_LIVE})",
            (now, retry_until, *args, boot, mono, now),
        ).rowcount
        return queued, live

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

    def count(self, table):
        if table not in ("orders", "transactions", "callbacks", "events", "attempts"):
            raise ValueError(table)
        return self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608

    # strangers' callbacks

    def count_stranger(self, hour):
        """Count one refused callback in its hour; returns the hour's count so far."""
        return self.conn.execute(
            "INSERT INTO stranger_hours (hour, refused) VALUES (?, 1) ON CONFLICT (hour)"
            " DO UPDATE SET refused = refused + 1 RETURNING refused", (hour,),
        ).fetchone()[0]

    def stranger_hours(self, limit=1000):
        return self._all("SELECT * FROM stranger_hours ORDER BY hour DESC LIMIT ?", limit)

    # the subscriber's pages (appended)

    def recent_paid_order(self, account, since):
        """The account's latest order paid at or after since, or None."""
        return self._one(
            "SELECT order_id, amount, paid_at FROM orders WHERE account = ? AND paid_at >= ?"
            " AND status = 'paid' ORDER BY paid_at DESC LIMIT 1", account, since)
