"""What a stranger sends to the callback costs bounded storage: counted, sampled, truncated."""

import logging
import os

import pytest
from conftest import NOW, callback_fields, hand_off, send_callback

from gateway import create_app, payments
from gateway.store import Store

CAP, FLOOD, SAMPLE_BYTES = 20, 300, 512


def file_size(app):
    """The database file's size once the WAL is folded back in."""
    store = app.extensions["store"]
    store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(app.config["DATABASE_URL"][len("sqlite:///"):])


def test_a_stranger_flood_is_counted_and_sampled_up_to_the_cap_not_stored(config, clock):
    app = create_app(dict(config, CALLBACK_SAMPLE_CAP=CAP))
    client, store = app.test_client(), app.extensions["store"]
    try:
        query = hand_off(client, app)
        padding = "x" * 8000  # what a stranger may send: up to MAX_CONTENT_LENGTH, each time
        for _ in range(CAP):
            fields = dict(callback_fields(app, query), padding=padding)
            assert send_callback(client, fields, remote="10.1.2.3").status_code == 403
        at_cap = file_size(app)
        for n in range(FLOOD):
            fields = dict(callback_fields(app, query), padding=padding)
            assert send_callback(client, fields, remote=f"10.1.{n % 250}.9").status_code == 403
        after = file_size(app)
        rows = store.read().callbacks(rejected=True)
        # 300 bodies of 8 kB (2.4 MB) came in; the file grew by at most a page or two.
        assert after - at_cap <= 2 * 4096, (at_cap, after)
        assert len(rows) == CAP and {r["verdict"] for r in rows} == {"forbidden_ip"}
        assert max(len(r["body"].encode()) for r in rows) <= SAMPLE_BYTES
        hours = store.read().stranger_hours()
        assert hours == [{"hour": int(clock() // 3600), "refused": CAP + FLOOD}]
        # The next hour samples again, from zero.
        clock.advance(3600)
        fields = callback_fields(app, query)
        assert send_callback(client, fields, remote="10.1.2.3").status_code == 403
        assert len(store.read().callbacks(rejected=True)) == CAP + 1
        # ChronoPay itself is journaled in full, however long its body.
        genuine = dict(callback_fields(app, query),
                       **{f"extra{i}": "y" * 500 for i in range(4)})  # 2 kB, 4 times the sample
        assert send_callback(client, genuine).status_code == 200
        row = store.read().callbacks()[0]
        assert row["verdict"] == "applied" and row["body"].count("y" * 500) == 4
        assert store.read().order(query["order_id"])["status"] == "paid"
    finally:
        store.close()


@pytest.fixture
def store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store.init_schema()
    yield store
    store.close()


def test_a_strangers_sample_keeps_what_it_claimed_cut_like_a_logged_field(store):
    fields = {"order_id": "o1", "transaction_id": "z" * 70, "transaction_type": "Purchase"}
    body = "x" + "й" * 300  # 601 bytes: the cut at 512 falls inside a letter
    assert payments.sample_stranger(store, NOW, "203.0.113.9", body, fields, cap=5)
    [row] = store.read().callbacks(rejected=True)
    assert (row["verdict"], row["reason"], row["remote_addr"]) == (
        "forbidden_ip", "address not in CHRONOPAY_CALLBACK_IPS", "203.0.113.9")
    assert (row["order_id"], row["transaction_id"], row["transaction_type"]) == (
        "o1", "z" * 64, "Purchase")
    assert row["body"] == "x" + "й" * 255


def test_reaching_the_cap_is_one_error_line_in_the_hour(store, caplog):
    def cap_lines():
        return [r for r in caplog.records if "CALLBACK_SAMPLE_CAP" in r.getMessage()]

    sampled = [payments.sample_stranger(store, NOW, "203.0.113.9", "b", {}, cap=1)
               for _ in range(2)]
    assert sampled == [True, False] and [r.levelno for r in cap_lines()] == [logging.ERROR]
    for _ in range(2):  # the first refused beyond the cap said it; the rest are only counted
        payments.sample_stranger(store, NOW, "203.0.113.9", "b", {}, cap=1)
    lines = cap_lines()
    assert len(lines) == 1
    # It names the setting with its value, and where the rest is counted.
    assert "CALLBACK_SAMPLE_CAP (1)" in lines[0].getMessage()
    assert "stranger_hours" in lines[0].getMessage()
    assert len(store.read().callbacks(rejected=True)) == 1
