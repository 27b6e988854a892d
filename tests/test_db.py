"""The store: its connections, its write discipline and the upgrades of older databases."""

import os
import re
import shutil
import sqlite3
import threading
import time
from urllib.parse import urlencode

import pytest

from gateway.config import DEFAULTS
from gateway.errors import StoreBusy, StoreConflict, StoreUnavailable
from gateway.store.sqlite import SCHEMA, Store


def test_a_queued_writer_gives_up_after_the_busy_timeout(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3", busy_timeout=0.05)
    store.init_schema()
    holding, release = threading.Event(), threading.Event()

    def hold():
        with store.write():
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        with pytest.raises(StoreBusy, match="locked"), store.write():
            pass
    finally:
        release.set()
        holder.join()
    with store.write() as tx:  # the lock was released: the next writer goes through
        assert tx.count("orders") == 0


def entry(n, verdict):
    return {"received_at": n, "remote_addr": "127.0.0.1", "body": "x", "verdict": verdict,
            "reason": None, "order_id": None, "transaction_id": None, "transaction_type": None}


def test_rejected_callbacks_are_listed_from_their_own_partial_index(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.init_schema()
    with store.write() as tx:
        for n, verdict in enumerate(["applied", "bad_sign", "duplicate", "ignored", "held",
                                     "applied"]):
            tx.journal(entry(n, verdict))
    assert [c["verdict"] for c in store.read().callbacks(rejected=True)] == ["held", "bad_sign"]
    conn = store.connection()
    # only the two rejected callbacks have entries: accepted ones cost no index write
    assert conn.execute("SELECT count(*) FROM callbacks INDEXED BY callbacks_rejected WHERE"
                        " verdict NOT IN ('applied', 'duplicate', 'ignored')").fetchone()[0] == 2
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM callbacks WHERE 1 = 1 AND verdict NOT"
                        " IN ('applied', 'duplicate', 'ignored') ORDER BY id DESC LIMIT 5")
    assert "USING INDEX callbacks_rejected" in " ".join(row[3] for row in plan)


def test_an_older_database_loses_the_index_no_query_used(tmp_path):
    path = tmp_path / "gateway.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE callbacks (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL"
                " NOT NULL, remote_addr TEXT, body TEXT NOT NULL, verdict TEXT NOT NULL, reason"
                " TEXT, order_id TEXT, transaction_id TEXT, transaction_type TEXT)")
    old.execute("CREATE INDEX callbacks_verdict ON callbacks (verdict, id)")
    old.close()
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    names = {row[0] for row in store.connection().execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "callbacks_verdict" not in names and "callbacks_rejected" in names


def test_a_store_takes_only_sqlite_urls():
    with pytest.raises(ValueError, match="sqlite:///"):
        Store("postgresql://db/gateway")


def test_a_connection_is_opened_with_the_settings_that_keep_money_safe(tmp_path):
    conn = Store(f"sqlite:///{tmp_path}/gateway.sqlite3", busy_timeout=2).connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2000  # reads wait too
    default = Store(f"sqlite:///{tmp_path}/default.sqlite3").connection()  # as the config's
    assert default.execute("PRAGMA busy_timeout").fetchone()[0] == \
        DEFAULTS["DB_BUSY_TIMEOUT"] * 1000
    conn.close()
    default.close()


def test_opening_a_database_another_holds_waits_the_busy_timeout_only(tmp_path):
    # A file not yet in WAL mode (made by another tool) that another connection is writing:
    # switching it to WAL waits for the lock within the store's budget, not SQLite's 5 s.
    path = tmp_path / "gateway.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (a)")
    other.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            Store(f"sqlite:///{path}", busy_timeout=0.05).connection()
    finally:
        other.execute("ROLLBACK")
    assert time.monotonic() - started < 2


def test_close_closes_this_threads_connection_and_the_next_use_reopens(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.close()  # nothing opened yet: nothing to do
    store.init_schema()
    first = store.connection()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        first.execute("SELECT 1")
    store.close()  # twice is fine
    assert store.connection() is not first
    assert store.read().count("orders") == 0
    store.close()


def test_a_new_database_passes_sqlites_integrity_check(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.init_schema()
    assert store.integrity_check() == "ok"
    store.close()


def schema(conn):
    """What a database's schema means to its users: per table, its columns (name, declared
    type, NOT NULL, default, primary key), indexes (uniqueness, partial, columns, definition)
    and foreign keys."""
    described = {}
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        columns = {row[1]: (row[2].upper(), row[3], row[4], row[5])
                   for row in conn.execute(f"PRAGMA table_info({table})")}
        indexes = {}
        for row in conn.execute(f"PRAGMA index_list({table})"):
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (row[1],)
                               ).fetchone()
            indexes[row[1]] = (row[2], row[4], [c[2] for c in conn.execute(
                f"PRAGMA index_info({row[1]})")], " ".join((sql and sql[0] or "").split()))
        keys = sorted(tuple(row[2:5]) for row in conn.execute(f"PRAGMA foreign_key_list({table})"))
        described[table] = (columns, indexes, keys)
    return described


def fresh_schema(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/fresh.sqlite3")
    store.init_schema()
    try:
        return schema(store.connection())
    finally:
        store.close()


def older_database(path, *cuts):
    """A database as an earlier release made it: today's schema without the given parts."""
    conn = sqlite3.connect(path, isolation_level=None)
    old = SCHEMA
    for cut in cuts:
        assert cut in old
        old = old.replace(cut, "")
    for statement in old.split(";"):
        if statement.strip():
            conn.execute(statement)
    return conn


# The release with partial refunds (22b9b1f): no per-order FIFO, no retry generation, no
# monotonic leases yet.
BEFORE_FIFO = tuple(
    line for line in SCHEMA.splitlines(keepends=True) if line.lstrip().startswith((
        "-- the event's place", "seq ", "-- bumped by", "generation ", "-- the lease holder",
        "-- judges the lease", "lease_boot ", "lease_mono ", "CREATE UNIQUE INDEX IF NOT"
        " EXISTS events_order_seq", "CREATE INDEX IF NOT EXISTS orders_account_paid")))
# The release before signed_text.
BEFORE_SIGNED_TEXT = ("    signed_text TEXT,\n", "CREATE UNIQUE INDEX IF NOT EXISTS"
                      " transactions_signed_text ON transactions (signed_text);")
RELEASE_DB = os.path.join(os.path.dirname(__file__), "data", "release-dd426b7.sqlite3")
# The releases before gateway/sandbox/ kept the simulators' books in the gateway's database
# (release-dd426b7 the billing ledger, later ones ChronoPay's paid orders too): demo data only.
SANDBOX_TABLES = """
CREATE TABLE sandbox_paid (order_id TEXT PRIMARY KEY, paid_at REAL NOT NULL);
CREATE TABLE sandbox_ledger (webhook_id TEXT PRIMARY KEY, type TEXT NOT NULL, order_id TEXT
    NOT NULL, amount TEXT NOT NULL, received_at REAL NOT NULL);
INSERT INTO sandbox_paid VALUES ('o1', 1);
INSERT INTO sandbox_ledger VALUES ('msg_1', 'payment.succeeded', 'o1', '1000.00', 1);
"""
# Which of them each older database has.
HAS_SANDBOX_TABLES = {"release-dd426b7": {"sandbox_ledger"},
                      "before-sandbox-package": {"sandbox_ledger", "sandbox_paid"}}


def tables(path):
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type ="
                                               " 'table'")}
    finally:
        conn.close()


@pytest.mark.parametrize("made_by", ["release-dd426b7", "before-sandbox-package", "before-fifo",
                                     "before-signed-text"])
def test_an_upgraded_database_has_the_schema_a_new_one_gets(tmp_path, made_by):
    path = tmp_path / "gateway.sqlite3"
    if made_by == "release-dd426b7":
        shutil.copy(RELEASE_DB, path)
    elif made_by == "before-sandbox-package":
        conn = older_database(path)
        conn.executescript(SANDBOX_TABLES)
        conn.close()
    else:
        older_database(path, *(BEFORE_FIFO if made_by == "before-fifo" else
                               BEFORE_SIGNED_TEXT)).close()
    assert {name for name in tables(path) if name.startswith("sandbox")} == \
        HAS_SANDBOX_TABLES.get(made_by, set())
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    store.init_schema()  # the next start finds nothing left to upgrade
    upgraded = schema(store.connection())
    store.close()
    assert upgraded == fresh_schema(tmp_path)
    # The sandbox's tables are gone: the production store holds no sandbox data.
    assert not [name for name in upgraded if "sandbox" in name]


def test_old_events_take_their_place_by_creation_and_the_first_generation(tmp_path):
    path = tmp_path / "gateway.sqlite3"
    conn = older_database(path, *BEFORE_FIFO)
    for order_id in ("a", "b"):
        conn.execute("INSERT INTO orders (order_id, nonce, login, account, amount, status,"
                     " created_at, updated_at) VALUES (?, ?, 'dem001', '6', '1000.00', 'paid',"
                     " 1, 1)", (order_id, order_id))
    for event_id, order_id, created_at in (("e1", "a", 3), ("e2", "b", 1), ("e3", "a", 2)):
        conn.execute("INSERT INTO events (event_id, order_id, type, body, status, created_at,"
                     " next_attempt_at, retry_until) VALUES (?, ?, ?, '{}', 'pending', ?, ?,"
                     " 9)", (event_id, order_id, event_id, created_at, created_at))
    conn.close()
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    events = {e["event_id"]: e for e in store.read().events()}
    assert {name: e["seq"] for name, e in events.items()} == {"e1": 2, "e2": 1, "e3": 1}
    assert {e["generation"] for e in events.values()} == {0}
    assert {(e["lease_boot"], e["lease_mono"]) for e in events.values()} == {(None, None)}
    store.close()


def signed_body(customer_id="c-42", transaction_id="70001", ttype="Purchase", total="1000.00",
                **more):
    fields = {"customer_id": customer_id, "transaction_id": transaction_id,
              "transaction_type": ttype, "total": total, "order_id": "victim", **more}
    return urlencode({name: value for name, value in fields.items() if value is not None})


def unsigned_database(path, journal=()):
    """A database of the release before signed_text: a paid order, its transaction 70001
    and these (verdict, raw body) entries in the callback journal, oldest first."""
    conn = older_database(path, *BEFORE_SIGNED_TEXT)
    conn.execute("INSERT INTO orders (order_id, nonce, login, account, amount, status,"
                 " created_at, updated_at) VALUES ('victim', 'n1', 'dem001', '6', '1000.00',"
                 " 'paid', 1, 1)")
    conn.execute("INSERT INTO transactions VALUES ('70001', 'Purchase', 'victim', 'paid',"
                 " '1000.00', 1)")
    for verdict, body in journal:
        conn.execute("INSERT INTO callbacks (received_at, body, verdict, order_id,"
                     " transaction_id, transaction_type) VALUES (1, ?, ?, 'victim', '70001',"
                     " 'Purchase')", (body, verdict))
    conn.close()
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    return store


@pytest.mark.parametrize("before", [
    # refused callbacks: anyone could have sent them, with any split of the fields
    ("forbidden_ip", signed_body(customer_id="c-4")),
    ("malformed", signed_body(customer_id="c-4")),
    ("bad_sign", signed_body(customer_id="c-4")),
    # bodies that cannot give this transaction's signed text
    ("applied", signed_body(total=None)),
    ("applied", signed_body(customer_id=None)),
    ("applied", signed_body(transaction_id="70009")),
])
def test_the_upgrade_takes_signed_text_from_the_first_journaled_body_that_carries_it(
        tmp_path, before):
    store = unsigned_database(tmp_path / "old.sqlite3", [before, ("applied", signed_body())])
    assert store.read().transaction("70001", "Purchase")["signed_text"] == \
        "c-42" + "70001" + "Purchase" + "1000.00"
    assert store.unsigned_transactions() == 0
    store.close()


def test_a_blank_customer_id_is_part_of_the_restored_signed_text(tmp_path):
    store = unsigned_database(tmp_path / "old.sqlite3", [("applied", signed_body(customer_id=""))])
    assert store.read().transaction("70001", "Purchase")["signed_text"] == "70001Purchase1000.00"
    store.close()


def test_transactions_no_journal_restores_wait_for_ops_and_are_marked_once(tmp_path):
    store = unsigned_database(tmp_path / "old.sqlite3", [("bad_sign", signed_body())])
    with store.write() as tx:  # a second, restorable one: ops' decision leaves it alone
        tx.conn.execute("INSERT INTO transactions VALUES ('80001', 'Refund', 'victim',"
                        " 'refunded', '10.00', 2, 'c-4280001Refund10.00')")
    assert store.unsigned_transactions() == 1
    assert store.accept_unsigned() == 1
    assert store.unsigned_transactions() == 0
    assert store.read().transaction("70001", "Purchase")["signed_text"] == \
        "unverifiable:70001/Purchase"
    assert store.read().transaction("80001", "Refund")["signed_text"] == "c-4280001Refund10.00"
    assert store.accept_unsigned() == 0
    store.close()


def test_a_file_that_is_not_a_database_is_store_unavailable_not_an_sqlite3_error(tmp_path):
    path = tmp_path / "gateway.sqlite3"
    path.write_bytes(b"not a database, " * 256)
    store = Store(f"sqlite:///{path}")
    with pytest.raises(StoreUnavailable, match="not a database"):
        store.read().count("orders")
    with pytest.raises(StoreUnavailable), store.write():
        pass
    with pytest.raises(StoreUnavailable):
        store.init_schema()


def test_a_refused_constraint_is_store_conflict_and_rolls_back(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.init_schema()
    order = {"order_id": "o1", "nonce": "n1", "login": "dem001", "account": "6",
             "amount": "10.00", "created_at": 1.0}
    with pytest.raises(StoreConflict, match="UNIQUE"), store.write() as tx:
        tx.insert_order(order)
        tx.insert_order(dict(order, order_id="o2"))  # the same nonce
    assert store.read().order("o1") is None
    with pytest.raises(StoreConflict), store.write() as tx:  # raw SQL in a write, too
        tx.conn.execute("INSERT INTO stranger_hours (hour, refused) VALUES (9, 1)")
        tx.conn.execute("INSERT INTO stranger_hours (hour, refused) VALUES (9, 2)")


# Where sqlite3 may be imported: the store's package, and the sandbox's own books. The sandbox
# simulates other parties (ChronoPay, billing), not the product: its file is SQLite whatever
# DATABASE_URL names, and the app never loads it without SANDBOX. Nothing else.
SQLITE3_ALLOWED = ("store" + os.sep, os.path.join("sandbox", "ledger.py"))


def test_nothing_above_the_store_package_imports_sqlite3():
    # The seam for another backend: payments, delivery and the app catch only our errors.
    root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gateway")
    importers = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), root)
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as source:
                    if re.search(r"^\s*(import|from)\s+sqlite3\b", source.read(), re.M):
                        importers.append(path)
    offenders = [path for path in importers if not path.startswith(SQLITE3_ALLOWED)]
    assert offenders == []
    # The sandbox's exception is one module: its pages speak to the ledger, not to sqlite3.
    assert [path for path in importers if path.startswith("sandbox")] == [
        os.path.join("sandbox", "ledger.py")]


def test_a_read_that_fails_after_the_connection_opened_is_store_unavailable(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.init_schema()
    reader = store.read()
    other = sqlite3.connect(store.path)
    other.execute("DROP TABLE stranger_hours")  # what a damaged or foreign file looks like
    other.commit()
    other.close()
    with pytest.raises(StoreUnavailable, match="no such table"):
        reader.stranger_hours()
