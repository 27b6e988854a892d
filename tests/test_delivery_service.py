"""Delivery against the real SQLite store and real loopback servers, without Flask's pages:
two workers and one event, `events retry` racing a worker, the outbox's upgrade."""

import sqlite3
import threading
import time

import pytest
from conftest import pay_order
from slow_billing import SlowBilling
from test_delivery import FakeBilling

from gateway.delivery import Deliverer
from gateway.http import HttpClient
from gateway.store import Store


@pytest.fixture
def slow():
    server = SlowBilling("trickle-headers").start()
    yield server
    server.stop()


def worker(app, url, timeout=1.0, retry_base=0.2):
    """A worker as another process would have it: its own Store on the same file, real
    clocks, our real HttpClient."""
    return Deliverer(Store(app.config["DATABASE_URL"]), HttpClient(timeout), url=url,
                     keys=app.extensions["deliverer"].keys, clock=time.time,
                     retry_base=retry_base, timeout=timeout)


def test_an_attempt_against_a_trickling_billing_fails_at_its_deadline(client, app, clock,
                                                                     slow):
    clock.now = time.time()  # real clocks below: the event's window starts now
    pay_order(client, app)
    deliverer = worker(app, slow.url)
    assert list(deliverer.drain().values()) == ["failed"]
    [event] = deliverer.store.read().events()
    assert event["status"] == "pending" and "deadline" in event["last_error"]
    slow.wait_for(lambda s: s.closed == 1)


def test_two_workers_never_send_one_event_at_once(client, app, clock, slow):
    # Each send trickles until its deadline (1 s); the lease is 8.5 s. Were a send to outlive
    # its lease, the other worker would claim the event and the server would see two at once.
    clock.now = time.time()
    pay_order(client, app)
    # The retry waits 1 s: the server notices a client's hang-up only at its next trickled
    # byte (0.2 s apart, later on a loaded machine), and with a 0.2 s retry it counted our
    # abandoned request and the retry as two in flight, which our side never had at once.
    workers = [worker(app, slow.url, retry_base=1.0) for _ in range(2)]
    stop = threading.Event()

    def run(deliverer):
        while not stop.is_set():
            deliverer.drain()
            stop.wait(0.05)  # the worker's idle poll, shortened

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        slow.wait_for(lambda s: sum(s.requests.values()) >= 3
                      or max(s.max_in_flight.values(), default=0) > 1, timeout=60)
    finally:
        stop.set()
        slow.stop()  # ends any trickle still going, so the threads can end
        for thread in threads:
            thread.join(30)
    [event] = workers[0].store.read().events()
    assert slow.max_in_flight == {event["event_id"]: 1}
    attempts = workers[0].store.read().attempts(event["event_id"])
    assert {a["worker"] for a in attempts} <= {w.name for w in workers}


def test_retry_of_an_event_being_sent_says_so_and_changes_nothing(client, app, store, clock,
                                                                  runner):
    deliverer = app.extensions["deliverer"]
    seen = {}

    class RetriedWhileSending(FakeBilling):
        def post(self, url, **kwargs):
            [event] = store.read().events()
            seen["result"] = runner.invoke(args=["events", "retry", event["event_id"]])
            seen["pending"] = runner.invoke(args=["events", "retry", "--pending"])
            return super().post(url, **kwargs)

    deliverer.http = RetriedWhileSending(500)
    pay_order(client, app)
    deliverer.drain()
    assert seen["result"].exit_code == 1
    assert "being sent to billing right now" in seen["result"].output
    assert seen["pending"].exit_code == 0
    assert "0 event(s) queued" in seen["pending"].output
    assert "1 being sent right now" in seen["pending"].output
    [event] = store.read().events()  # the worker's own outcome stands: failed, in backoff
    assert event["last_error"] == "HTTP 500" and event["next_attempt_at"] > clock()


def test_a_settle_that_read_the_event_before_a_retry_cannot_undo_it(client, app, store,
                                                                    clock, runner):
    deliverer = app.extensions["deliverer"]

    class PausedPastItsLease(FakeBilling):
        def post(self, url, **kwargs):
            clock.advance(deliverer.lease + 1)  # the worker was stopped (SIGSTOP, swap)
            [event] = store.read().events()
            result = runner.invoke(args=["events", "retry", event["event_id"]])
            assert result.exit_code == 0 and "1 event(s) queued" in result.output
            return super().post(url, **kwargs)

    deliverer.http = PausedPastItsLease(410)  # billing says "never again": dead, were it kept
    pay_order(client, app)
    deliverer.drain()
    [event] = store.read().events()
    assert event["status"] == "pending" and event["generation"] == 1
    assert event["next_attempt_at"] <= clock() and event["lease_owner"] is None
    assert event["retry_until"] == clock() + app.config["BILLING_RETRY_FOR"]


def test_retry_pending_makes_every_pending_event_due_now(client, app, store, clock, runner):
    deliverer = app.extensions["deliverer"]
    deliverer.http = FakeBilling(500)
    pay_order(client, app)
    deliverer.drain()
    assert store.read().events()[0]["next_attempt_at"] > clock()
    result = runner.invoke(args=["events", "retry", "--pending"])
    assert result.exit_code == 0 and "1 event(s) queued" in result.output
    assert store.read().events()[0]["next_attempt_at"] == clock()
    assert list(deliverer.drain().values()) == ["delivered"]


def many_dead_events(store, count, now):
    with store.write() as tx:
        for n in range(count):
            tx.insert_order({"order_id": f"o{n}", "nonce": f"n{n}", "login": "dem001",
                             "account": "6", "amount": "1.00", "created_at": now})
            tx.insert_event({"event_id": f"msg_{n}", "order_id": f"o{n}",
                             "type": "payment.succeeded", "body": "{}", "created_at": now,
                             "retry_until": now})
        tx.conn.execute("UPDATE events SET status = 'dead'")


def test_retry_dead_and_list_have_no_silent_cap(app, store, clock, runner):
    many_dead_events(store, 1005, clock())
    listed = runner.invoke(args=["events", "list", "--dead", "--limit", "1000"])
    assert listed.exit_code == 0 and "(1000 rows)" in listed.output
    assert "… and 5 more (--offset 1000)" in listed.output
    rest = runner.invoke(args=["events", "list", "--dead", "--offset", "1000"])
    assert "(5 rows)" in rest.output and "more" not in rest.output
    result = runner.invoke(args=["events", "retry", "--dead"])
    assert result.exit_code == 0 and "1005 event(s) queued" in result.output
    assert store.read().count_events(status="pending") == 1005


OLD_EVENTS = """CREATE TABLE events (
    event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    retry_until REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT,
    lease_until REAL, delivered_at REAL, last_error TEXT, UNIQUE (order_id, type))"""


def test_upgrade_adds_the_outbox_columns_and_orders_old_events(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(OLD_EVENTS)
    for event_id, order_id, kind, created in (("e3", "o1", "payment.refunded", 3),
                                              ("e1", "o1", "payment.succeeded", 1),
                                              ("e2", "o2", "payment.succeeded", 2)):
        conn.execute("INSERT INTO events (event_id, order_id, type, body, status, created_at,"
                     " next_attempt_at, retry_until) VALUES (?, ?, ?, '{}', 'pending', ?, 0,"
                     " 9e9)", (event_id, order_id, kind, created))
    conn.commit()
    conn.close()
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    rows = {e["event_id"]: e for e in store.read().events()}
    assert {k: (v["seq"], v["generation"], v["lease_boot"], v["lease_mono"])
            for k, v in rows.items()} == {"e1": (1, 0, None, None), "e3": (2, 0, None, None),
                                          "e2": (1, 0, None, None)}
    with store.write() as tx:  # the refund waits for its order's payment, as new ones do
        assert [e["event_id"] for e in tx.claim_events(10, "w", 20, 10)] == ["e1", "e2"]
    store.close()
