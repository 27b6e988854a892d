"""The store's write discipline: writers of one process queue, within the busy timeout."""

import sqlite3
import threading

import pytest

from gateway.db import Store


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
        with pytest.raises(sqlite3.OperationalError, match="locked"), store.write():
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
