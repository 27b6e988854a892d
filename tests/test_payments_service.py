"""The money rules where they live: payments and the store on a real SQLite file, no Flask."""

import json
import os
import shutil
import sqlite3
import threading
import time
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from conftest import NOW, PRODUCT, SECRETS
from flask.cli import FlaskGroup

from gateway import chronopay, create_app, payments
from gateway.billing import iso
from gateway.errors import ConfigError, LinkExhausted, StoreBusy, StoreConflict
from gateway.store.sqlite import SCHEMA, Store

SECRET = SECRETS["CHRONOPAY_SHARED_SECRET"]


@pytest.fixture
def store(bare_store):
    return bare_store


def new_order(store, nonce="n1", amount="1000.00"):
    return payments.create_order(store, nonce=nonce, login="dem001", account="6",
                                 amount=Decimal(amount), now=NOW)


def callback(order_id, transaction_id="70001", ttype="Purchase", total="1000.00",
             customer_id="c-42"):
    fields = {"customer_id": customer_id, "transaction_id": transaction_id,
              "transaction_type": ttype, "total": total, "order_id": order_id,
              "product_id": PRODUCT, "currency": "RUB"}
    fields["sign"] = chronopay.callback_sign(SECRET, customer_id, transaction_id, ttype, total)
    return fields


def apply(store, fields):
    cb = chronopay.verify_callback({k: [v] for k, v in fields.items()}, SECRET)
    return payments.apply_callback(store, cb, product_id=PRODUCT, now=NOW,
                                   remote_addr="127.0.0.1", body=urlencode(fields),
                                   retry_for=3600)


def test_one_confirmation_is_one_order(store):
    assert new_order(store)["order_id"] == new_order(store)["order_id"]
    assert store.read().count("orders") == 1


def test_a_purchase_credits_once_whatever_its_copies(store):
    order = new_order(store)
    verdicts = [apply(store, callback(order["order_id"])).verdict for _ in range(3)]
    assert verdicts == ["applied", "duplicate", "duplicate"]
    assert store.read().order(order["order_id"])["status"] == "paid"
    assert [e["type"] for e in store.read().events()] == ["payment.succeeded"]


def test_concurrent_copies_of_a_purchase_credit_once(tmp_path):
    # Real threads, each with its own connection, racing one transaction on one file.
    path = f"sqlite:///{tmp_path}/race.sqlite3"
    first = Store(path)
    first.init_schema()
    order = new_order(first)
    stores = [Store(path) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    verdicts = []

    def race(store):
        barrier.wait()
        verdicts.append(apply(store, callback(order["order_id"])).verdict)

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(verdicts) == ["applied"] + ["duplicate"] * 7
    assert first.read().count("events") == 1 and first.read().count("transactions") == 1


def test_a_failed_write_leaves_nothing_and_the_store_goes_on(store):
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.insert_order({"order_id": "o1", "nonce": "n", "login": "l", "account": "1",
                         "amount": "1.00", "created_at": NOW})
        raise RuntimeError("a bug after the first statement")
    assert store.read().order("o1") is None
    with store.write() as tx:  # no transaction left open on this connection
        tx.insert_order({"order_id": "o1", "nonce": "n", "login": "l", "account": "1",
                         "amount": "1.00", "created_at": NOW})
    assert store.read().order("o1")["status"] == "pending"


def transaction(order_id, transaction_id="t1", ttype="Purchase", effect="paid",
                signed_text="c1t1Purchase1000.00"):
    return {"transaction_id": transaction_id, "transaction_type": ttype, "order_id": order_id,
            "effect": effect, "total": "1000.00", "created_at": NOW, "signed_text": signed_text}


@pytest.mark.parametrize("second", [
    {},  # the same (transaction_id, transaction_type): the primary key
    {"effect": None, "signed_text": "other"},
    {"transaction_id": "t2", "effect": None},  # the same signed text: transactions_signed_text
    {"transaction_id": "t2", "signed_text": "c1t2Purchase1000.00"},  # a second paid effect
])
def test_the_schema_refuses_a_second_record_of_one_money_fact(store, second):
    order = new_order(store)
    with store.write() as tx:
        tx.insert_transaction(transaction(order["order_id"]))
    with pytest.raises(StoreConflict), store.write() as tx:
        tx.insert_transaction(dict(transaction(order["order_id"]), **second))
    assert store.read().count("transactions") == 1


def test_a_writer_waits_one_busy_budget_in_all(tmp_path):
    # The wait for this process's lock and for another process's lock are one budget: here
    # 0.6 s queued behind a thread of ours, then another connection holds the file.
    path = f"sqlite:///{tmp_path}/busy.sqlite3"
    store = Store(path, busy_timeout=1.0)
    store.init_schema()
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    holding, release = threading.Event(), threading.Event()

    def hold():
        with store._write_lock:  # this process's queue, as a writer ahead of us holds it
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    threading.Timer(0.6, release.set).start()
    started = time.monotonic()
    with pytest.raises(StoreBusy, match="locked"), store.write():
        pass
    waited = time.monotonic() - started
    holder.join()
    other.execute("ROLLBACK")
    # Two budgets would be 1.6 s; allow generous scheduling slack short of that.
    assert waited < 1.45


OLD_SCHEMA = SCHEMA.replace("    signed_text TEXT,\n", "").replace(
    "CREATE UNIQUE INDEX IF NOT EXISTS transactions_signed_text ON transactions (signed_text);",
    "")


def old_database(path, journaled=True):
    """A database as the release before signed_text made it: a paid order, its transaction
    and (if journaled) the raw callback that paid it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in OLD_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    for order_id, nonce, status in (("victim", "n1", "paid"), ("mine", "n2", "pending")):
        conn.execute("INSERT INTO orders (order_id, nonce, login, account, amount, status,"
                     " created_at, updated_at) VALUES (?, ?, 'dem001', '6', '1000.00', ?, ?, ?)",
                     (order_id, nonce, status, NOW, NOW))
    conn.execute("INSERT INTO transactions VALUES ('70001', 'Purchase', 'victim', 'paid',"
                 " '1000.00', ?)", (NOW,))
    if journaled:
        conn.execute("INSERT INTO callbacks (received_at, remote_addr, body, verdict, order_id,"
                     " transaction_id, transaction_type) VALUES (?, '127.0.0.1', ?, 'applied',"
                     " 'victim', '70001', 'Purchase')",
                     (NOW, urlencode(callback("victim"))))
    conn.close()


def test_an_upgraded_database_refuses_a_resplit_sign_of_an_old_transaction(tmp_path):
    path = tmp_path / "old.sqlite3"
    old_database(path)
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    assert store.unsigned_transactions() == 0
    stolen = callback("mine", transaction_id="0001", customer_id="c-427")  # c-42 + 7|0001
    assert stolen["sign"] == callback("victim")["sign"]
    assert apply(store, stolen).verdict == "replay"
    assert store.read().order("mine")["status"] == "pending"
    assert store.read().count("events") == 0


def test_old_transactions_without_a_journal_stop_the_start_until_ops_decide(tmp_path, config):
    path = tmp_path / "old.sqlite3"
    old_database(path, journaled=False)
    settings = dict(config, DATABASE_URL=f"sqlite:///{path}")
    with pytest.raises(ConfigError, match="transactions accept-unsigned"):
        create_app(settings)
    # The command the sentence names runs (the CLI builds the app without the refusal).
    cli = FlaskGroup(create_app=lambda: create_app(settings))
    result = CliRunner().invoke(cli, ["transactions", "accept-unsigned"])
    assert result.exit_code == 0 and "1 transaction(s) accepted" in result.output
    assert Store(f"sqlite:///{path}").unsigned_transactions() == 0
    create_app(settings).extensions["store"].close()  # starts now


RELEASE_DB = os.path.join(os.path.dirname(__file__), "data", "release-dd426b7.sqlite3")
# Made by the release before this one (commit dd426b7) with its own code: order 0 paid,
# order 1 paid and wholly refunded, order 2 pending; three events, one attempt each.
PAID, REFUNDED = "20251128-5a619b190bc5", "20251128-068369e477ce"


def test_a_database_of_the_previous_release_upgrades_in_place(tmp_path):
    path = tmp_path / "gateway.sqlite3"
    shutil.copy(RELEASE_DB, path)
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    conn = store.connection()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.read().count("events") == 3 and store.read().count("attempts") == 3
    assert {e["transaction_id"] for e in store.read().events()} == {"70001", "70002", "80002"}
    assert sorted(e["seq"] for e in store.read().events()) == [1, 1, 2]  # FIFO kept
    # A whole refund of the old kind leaves nothing for a later chargeback to take.
    assert store.read().order(REFUNDED)["refunded"] == "1000.00"
    apply(store, callback(REFUNDED, "90002", "chargeback"))
    assert store.read().count("events") == 3
    assert store.read().order(REFUNDED)["status"] == "chargeback"
    # Partial refunds, several per order, on the upgraded outbox.
    for n, total in enumerate(("100.00", "200.00")):
        assert apply(store, callback(PAID, f"8100{n}", "Refund", total)).verdict == "applied"
    assert store.read().order(PAID)["refunded"] == "300.00"
    assert store.read().count("events") == 5
    store.close()


def test_one_cabinet_link_makes_at_most_max_orders_orders(store):
    def confirm(nonce, link_id):
        return payments.create_order(store, nonce=nonce, login="dem001", account="6",
                                     amount=Decimal("1000.00"), now=NOW, link_id=link_id,
                                     max_orders=2)

    first = confirm("n0", "L1")
    confirm("n1", "L1")
    with pytest.raises(LinkExhausted, match="^the link already made 2 orders$"):  # logged
        confirm("n2", "L1")
    # The same confirmation still yields its order; another link has its own count.
    assert confirm("n0", "L1")["order_id"] == first["order_id"]
    confirm("n3", "L2")
    assert store.read().count("orders") == 3
    assert first["order_id"].startswith("20251128-")  # NOW's UTC date, not today's


def test_a_copy_of_a_transaction_with_other_signed_fields_is_a_duplicate(store):
    # A transaction is its (transaction_id, transaction_type): a copy that signs another
    # customer_id is the same money fact, not a second purchase of a paid order.
    order = new_order(store)
    apply(store, callback(order["order_id"]))
    assert apply(store, callback(order["order_id"], customer_id="c-43")).verdict == "duplicate"
    assert store.read().count("transactions") == 1 and store.read().order(
        order["order_id"])["review"] is None


def test_a_second_chargeback_while_one_is_held_is_review_not_held(store):
    order = new_order(store)
    assert apply(store, callback(order["order_id"], "90001", "chargeback")).verdict == "held"
    assert apply(store, callback(order["order_id"], "90002", "chargeback")).verdict == "review"
    assert store.read().count("transactions") == 2 and store.read().count("events") == 0


def test_a_replay_sends_both_orders_to_review_and_the_journal_names_them(store):
    victim, mine = new_order(store, "n1")["order_id"], new_order(store, "n2")["order_id"]
    apply(store, callback(victim))
    apply(store, callback(mine, "70009", total="999.00"))  # mine is in review already
    earlier = store.read().order(mine)["review"]
    assert apply(store, callback(victim) | {"order_id": mine}).verdict == "replay"
    note = f"{iso(NOW)} replay: transaction belongs to order {victim}"
    assert store.read().order(mine)["review"] == f"{earlier}\n{note}"
    assert store.read().order(victim)["review"] == note
    row = store.read().callbacks()[0]
    assert (row["verdict"], row["reason"], row["remote_addr"]) == (
        "replay", f"transaction belongs to order {victim}; review for {mine}, {victim}",
        "127.0.0.1")


def test_a_replay_naming_no_order_sends_the_genuine_one_to_review(store):
    victim = new_order(store)["order_id"]
    apply(store, callback(victim))
    assert apply(store, callback(victim) | {"order_id": "nope"}).verdict == "replay"
    assert store.read().callbacks()[0]["reason"] == (
        f"transaction belongs to order {victim}; review for {victim}")
    assert "replay" in store.read().order(victim)["review"]


def test_reversals_held_for_a_purchase_apply_with_it_in_their_order(store):
    order_id = new_order(store)["order_id"]
    apply(store, callback(order_id, "80001", "Refund", "300.00"))
    apply(store, callback(order_id, "90001", "chargeback"))
    apply(store, callback(order_id))
    reasons = [r["reason"] for r in reversed(store.read().callbacks())]
    assert reasons == [
        "refunded transaction for a pending order, held for its purchase",
        "chargeback transaction for a pending order, held for its purchase",
        "pending -> paid -> paid by the held 'Refund' -> chargeback by the held 'chargeback'",
    ]
    order = store.read().order(order_id)
    assert (order["status"], order["refunded"]) == ("chargeback", "300.00")
    assert order["review"] == f"{iso(NOW)} {payments.BOTH_REVERSALS}"
    taken = {e["transaction_id"]: json.loads(e["body"])["data"] for e in store.read().events()}
    assert {t: (d.get("refunded_amount"), d.get("remaining_amount"))
            for t, d in taken.items()} == {
        "70001": (None, None), "80001": ("300.00", "700.00"), "90001": ("700.00", "0.00")}


def test_a_chargeback_event_takes_back_the_whole_amount_at_the_callbacks_time(store):
    order_id = new_order(store)["order_id"]
    apply(store, callback(order_id))
    apply(store, callback(order_id, "90001", "chargeback"))
    [event] = [e for e in store.read().events() if e["type"] == "payment.chargeback"]
    body = json.loads(event["body"])
    assert (event["transaction_id"], body["timestamp"]) == ("90001", iso(NOW))
    assert (body["data"]["refunded_amount"], body["data"]["remaining_amount"]) == (
        "1000.00", "0.00")


def test_a_callback_reaches_its_crash_points_before_and_after_its_commit(store, monkeypatch):
    # The crash suite kills the process at these names: the journal row must be uncommitted
    # at the first and committed at the second, as another connection sees it.
    order_id = new_order(store)["order_id"]
    outside = sqlite3.connect(store.path)
    passed = []
    monkeypatch.setattr(payments, "crash_point", lambda name: passed.append(
        (name, outside.execute("SELECT count(*) FROM callbacks").fetchone()[0])))
    try:
        apply(store, callback(order_id))
    finally:
        outside.close()
    assert passed == [("callback.before_commit", 0), ("callback.after_commit", 1)]
