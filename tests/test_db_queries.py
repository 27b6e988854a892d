"""The store's queries on a real SQLite file: what each listing filters, pages and orders by,
what a lookup finds, what the stranger table keeps (the sandbox's books are not here:
tests/test_sandbox_billing.py)."""

import pytest


@pytest.fixture
def store(bare_store):
    return bare_store


def add_order(tx, order_id, created_at, login="dem001", account="6", **changes):
    tx.insert_order({"order_id": order_id, "nonce": "n-" + order_id, "login": login,
                     "account": account, "amount": "1000.00", "created_at": created_at})
    if changes:
        tx.update_order(order_id, created_at, **changes)


def add_event(tx, event_id, order_id, created_at, status="pending"):
    tx.insert_event({"event_id": event_id, "order_id": order_id, "type": "payment." + event_id,
                     "body": "{}", "created_at": created_at, "retry_until": created_at + 3600})
    tx.conn.execute("UPDATE events SET status = ? WHERE event_id = ?", (status, event_id))


def ids(rows, key="order_id"):
    return [row[key] for row in rows]


@pytest.fixture
def orders(store):
    """o1..o4 made 100 s apart: o2 paid by bob, o3 paid and held for review, o4 pending."""
    with store.write() as tx:
        add_order(tx, "o1", 100.0)
        add_order(tx, "o2", 200.0, login="bob", status="paid", paid_at=210.0)
        add_order(tx, "o3", 300.0, status="paid", paid_at=310.0, review="amount")
        add_order(tx, "o4", 400.0, login="bob")
    return store.read()


def test_orders_are_all_listed_newest_first_by_default(orders):
    assert ids(orders.orders()) == ["o4", "o3", "o2", "o1"]


@pytest.mark.parametrize(("filters", "expected"), [
    ({"status": "paid"}, ["o3", "o2"]),
    ({"status": "pending"}, ["o4", "o1"]),
    ({"login": "bob"}, ["o4", "o2"]),
    ({"since": 300.0}, ["o4", "o3"]),  # at or after
    ({"review": True}, ["o3"]),
    ({"status": "paid", "login": "bob"}, ["o2"]),
    ({"login": "bob", "since": 250.0}, ["o4"]),
])
def test_orders_are_filtered_by_status_login_since_and_review(orders, filters, expected):
    assert ids(orders.orders(**filters)) == expected


@pytest.mark.parametrize(("limit", "offset", "expected"), [
    (2, 0, ["o4", "o3"]), (2, 1, ["o3", "o2"]), (None, 3, ["o1"]), (1, 4, []),
])
def test_orders_are_paged_by_limit_and_offset(orders, limit, offset, expected):
    assert ids(orders.orders(limit=limit, offset=offset)) == expected


def test_recent_paid_order_is_the_account_s_latest_paid_since(store):
    with store.write() as tx:
        add_order(tx, "early", 100.0, status="paid", paid_at=150.0)
        add_order(tx, "late", 200.0, status="paid", paid_at=250.0)
        add_order(tx, "unpaid", 300.0)
        add_order(tx, "other", 300.0, account="7", status="paid", paid_at=350.0)
    tx = store.read()
    assert tx.recent_paid_order("6", 100.0) == {"order_id": "late", "amount": "1000.00",
                                                "paid_at": 250.0}
    assert tx.recent_paid_order("6", 250.0)["order_id"] == "late"  # at or after since
    assert tx.recent_paid_order("6", 251.0) is None
    assert tx.recent_paid_order("7", 0.0)["order_id"] == "other"


def test_a_transaction_is_found_by_its_key_without_a_signed_text(store):
    with store.write() as tx:
        add_order(tx, "o1", 100.0)
        tx.insert_transaction({"transaction_id": "70001", "transaction_type": "Purchase",
                               "order_id": "o1", "effect": "paid", "total": "1000.00",
                               "created_at": 110.0, "signed_text": "c-4270001Purchase1000.00"})
    tx = store.read()
    assert tx.transaction("70001", "Purchase")["order_id"] == "o1"
    assert tx.transaction("70001", "Refund") is None
    assert tx.transaction("70002", "Purchase") is None
    assert tx.transaction("x", "y", "c-4270001Purchase1000.00")["transaction_id"] == "70001"


def journal_entry(n, order_id, verdict="applied"):
    return {"received_at": float(n), "remote_addr": "127.0.0.1", "body": f"n={n}",
            "verdict": verdict, "reason": None, "order_id": order_id,
            "transaction_id": None, "transaction_type": None}


def test_callbacks_are_listed_newest_first_by_order_and_paged(store):
    with store.write() as tx:
        for n, order_id in enumerate(["o1", "o2", "o1", None, "o1"]):
            tx.journal(journal_entry(n, order_id))
    tx = store.read()
    assert ids(tx.callbacks(), "body") == ["n=4", "n=3", "n=2", "n=1", "n=0"]
    assert ids(tx.callbacks(order_id="o1"), "body") == ["n=4", "n=2", "n=0"]
    assert ids(tx.callbacks(order_id="o1", limit=1, offset=1), "body") == ["n=2"]
    assert ids(tx.callbacks(limit=2, offset=2), "body") == ["n=2", "n=1"]


@pytest.fixture
def events(store):
    """Two orders' events: o1 has a delivered and a dead one, o2 a pending and a dead one."""
    with store.write() as tx:
        add_order(tx, "o1", 100.0)
        add_order(tx, "o2", 100.0)
        add_event(tx, "e1", "o1", 100.0, "delivered")
        add_event(tx, "e2", "o2", 200.0, "pending")
        add_event(tx, "e3", "o1", 300.0, "dead")
        add_event(tx, "e4", "o2", 400.0, "dead")
    return store


def test_events_are_listed_and_counted_by_order_and_status(events):
    tx = events.read()
    assert ids(tx.events(), "event_id") == ["e4", "e3", "e2", "e1"]
    assert ids(tx.events(order_id="o1"), "event_id") == ["e3", "e1"]
    assert ids(tx.events(status="dead"), "event_id") == ["e4", "e3"]
    assert ids(tx.events(order_id="o2", status="dead"), "event_id") == ["e4"]
    assert ids(tx.events(limit=2, offset=1), "event_id") == ["e3", "e2"]
    assert tx.count_events() == 4
    assert tx.count_events(order_id="o1") == 2
    assert tx.count_events(status="dead") == 2
    assert tx.count_events(order_id="o2", status="pending") == 1


def test_retry_of_dead_events_leaves_pending_and_delivered_ones_alone(events):
    with events.write() as tx:
        assert tx.retry_events(1000.0, 5000.0, status="dead") == (2, 0)
    tx = events.read()
    retried = {e["event_id"]: e for e in tx.events() if e["generation"] == 1}
    assert sorted(retried) == ["e3", "e4"]
    assert {(e["status"], e["next_attempt_at"], e["retry_until"]) for e in retried.values()} \
        == {("pending", 1000.0, 5000.0)}
    assert tx.event("e2")["next_attempt_at"] == 200.0  # the pending one keeps its backoff


def test_a_delivered_event_is_not_retried(events):
    with events.write() as tx:
        assert tx.retry_events(1000.0, 5000.0, event_id="e1") == (0, 0)
    assert events.read().event("e1")["status"] == "delivered"
    assert events.read().event("e1")["generation"] == 0


def test_count_knows_the_gateway_s_tables_only(store):
    with store.write() as tx:
        tx.journal(journal_entry(1, None))
    assert [store.read().count(table) for table in
            ("orders", "transactions", "callbacks", "events", "attempts")] == [0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="^sqlite_master$"):
        store.read().count("sqlite_master")


def test_strangers_are_counted_per_hour_newest_hour_first(store):
    with store.write() as tx:
        assert [tx.count_stranger(hour) for hour in (7, 7, 9, 7)] == [1, 2, 1, 3]
    tx = store.read()
    assert tx.stranger_hours() == [{"hour": 9, "refused": 1}, {"hour": 7, "refused": 3}]
    assert tx.stranger_hours(limit=1) == [{"hour": 9, "refused": 1}]


def test_stranger_hours_lists_a_thousand_hours_unless_told(store):
    with store.write() as tx:
        tx.conn.executemany("INSERT INTO stranger_hours (hour, refused) VALUES (?, 1)",
                            [(hour,) for hour in range(1001)])
    hours = store.read().stranger_hours()
    assert len(hours) == 1000 and hours[-1]["hour"] == 1
