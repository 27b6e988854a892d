"""Billing faults: every answer billing can give, and billing down for a simulated hour."""

import socket
import time
from collections import Counter
from itertools import pairwise

import pytest
import requests
from conftest import Clock, free_port
from receiver import Receiver

from gateway import billing
from gateway.delivery import MAX_WAIT, Deliverer
from gateway.http import HttpClient

from .live import (
    SANDBOX,
    callback,
    gateway,
    new_orders,
    poll,
    post_callback,
    scalar,
    store_of,
)

pytestmark = pytest.mark.slow
BASE = 0.1  # BILLING_RETRY_BASE of the live matrix, seconds
ASKED = 1  # the Retry-After billing sends, seconds

# (name, billing's first answer, what the contract makes of it).
MATRIX = [
    ("500", 500, "retry"),
    ("502", 502, "retry"),
    ("503 + Retry-After: 1", (503, {"Retry-After": str(ASKED)}), "retry after"),
    ("429 + Retry-After: 1", (429, {"Retry-After": str(ASKED)}), "retry after"),
    ("429 + retry-after: 1 (lower-case name)", (429, {"retry-after": str(ASKED)}), "retry after"),
    ("503 + Retry-After: ² (not a number)", (503, {"Retry-After": "\u00b2"}), "retry"),
    ("301 to elsewhere", 301, "retry"),
    ("400", 400, "retry"),
    ("409", 409, "retry"),
    ("410", 410, "dead"),
    ("hang past the timeout", "hang", "retry"),
    ("connection reset", "reset", "retry"),
    ("applied, then the connection dropped", "drop", "retry"),
]


@pytest.fixture
def receiver():
    receiver = Receiver(SANDBOX["BILLING_SECRET"]).start()
    yield receiver
    receiver.stop()


@pytest.mark.parametrize(("name", "answer", "expect"), MATRIX, ids=[row[0] for row in MATRIX])
def test_billing_answer_is_handled_as_the_contract_says(tmp_path, receiver, figures, scale,
                                                        name, answer, expect):
    server = gateway(tmp_path, receiver.url, BILLING_RETRY_BASE=BASE, BILLING_TIMEOUT=1).start()
    try:
        store = store_of(server)
        waits, passed = [], 0
        for order_id in new_orders(store, scale):
            receiver.script = [answer]
            assert post_callback(server, callback(order_id)) == 200
            [event] = poll(lambda order_id=order_id: [
                e for e in store.read().events(order_id=order_id) if e["status"] != "pending"],
                what=f"order {order_id} settled")
            attempts = store.read().attempts(event["event_id"])
            waits += [b["started_at"] - a["finished_at"] for a, b in pairwise(attempts)]
            calls = [call for call in receiver.calls if call[2] == order_id]
            ids = {msg_id for msg_id, _, _ in calls}
            assert ids == {event["event_id"]}  # one event id for the outcome, on every try
            assert len(receiver.bodies[event["event_id"]]) == 1  # byte for byte the same
            if expect == "dead":
                assert event["status"] == "dead" and len(attempts) == len(calls) == 1
            else:
                assert event["status"] == "delivered" and len(attempts) == 2
                assert receiver.acked[event["event_id"]] == 1
            passed += 1
        server.stop()
        assert set(receiver.paths) == {"/hook"}  # a redirect is an answer, never followed
        assert receiver.invalid == 0
        if expect == "retry after":
            assert all(ASKED <= wait < ASKED + 1 for wait in waits), waits
        elif expect == "retry":
            assert all(0.8 * BASE <= wait < ASKED for wait in waits), waits
    finally:
        server.stop()
    outcome = {"dead": "dead at once after 1 call",
               "retry after": "retried after the asked {wait}",
               "retry": "retried after {wait} (base {base} s)"}[expect]
    wait = f"{min(waits):.2f}–{max(waits):.2f} s" if waits else ""
    extra = ", booked once (same id and body re-sent)" if answer == "drop" else ""
    figures(f"billing answers {name}", scale, passed,
            outcome.format(wait=wait, base=BASE) + f"; 1 event id per outcome{extra}")


HOUR = 3600.0
RETRY_BASE = 10.0  # the shipped BILLING_RETRY_BASE


class Billing:
    """Billing's address through the hour: refused, then hanging, then 503, then answering."""

    def __init__(self, clock):
        self.clock, self.port = clock, free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.state, self.listener, self.receiver = "refused", None, None

    def become(self, state):
        if state == self.state:
            return
        if state == "hang":  # connections are taken by the kernel and never answered
            self.listener = socket.create_server(("127.0.0.1", self.port), backlog=4096)
        elif state == "503":
            self.listener.close()
            self.receiver = Receiver(SANDBOX["BILLING_SECRET"], self.port, self.clock).start()
            self.receiver.default = 503
        elif state == "up":
            self.receiver.default = 204
        self.state = state

    def close(self):
        if self.listener:
            self.listener.close()
        if self.receiver:
            self.receiver.stop()


def phase(elapsed):
    return "up" if elapsed >= HOUR else ("refused", "hang", "503")[int(elapsed // (HOUR / 3))]


def test_billing_down_for_a_simulated_hour_then_each_payment_acknowledged_once(
        tmp_path, figures, scale):
    count = 1000 * scale
    # A clock ahead of real time, so each event the server writes is due when it "arrives".
    clock = Clock(time.time() + 60)
    start = clock.now
    billing_ = Billing(clock)
    server = gateway(tmp_path, billing_.url, BILLING_WORKER="false").start()
    deliverer = Deliverer(store_of(server), HttpClient(timeout=5), url=billing_.url,
                          keys=billing.parse_secrets(SANDBOX["BILLING_SECRET"]), clock=clock,
                          retry_base=RETRY_BASE, timeout=5)
    store = deliverer.store
    orders = new_orders(store, count)
    arrivals = [start + n * HOUR / count for n in range(count)]
    session, answered = requests.Session(), 0
    try:
        while True:
            while arrivals and arrivals[0] <= clock.now:  # ChronoPay calls back, in real time
                arrivals.pop(0)
                answered += post_callback(server, callback(orders[answered]), session) == 200
            billing_.become(phase(clock.now - start))
            # The clock stands still during an attempt, so a hang costs no simulated time:
            # its real timeout may as well be short.
            deliverer.timeout = 0.002 if billing_.state == "hang" else 5
            while (due := store.read().next_due()) is not None and due <= clock.now:
                deliverer.run_batch()
            if due is None and not arrivals:
                break
            clock.now = max(clock.now, min([due or float("inf")] + arrivals[:1]))
    finally:
        server.stop()
        billing_.close()
    receiver = billing_.receiver
    ratios, outcomes = schedule_ratios(store), attempt_outcomes(store)
    delivered = scalar(store, "SELECT count(*) FROM events WHERE status = 'delivered'")
    once = sum(1 for n in receiver.acked.values() if n == 1)
    figures("billing down a simulated hour (20 min refused, 20 hang, 20 503) while "
            f"{count} payments arrive", 1,
            int(once == delivered == answered == count and 0.8 <= min(ratios)
                and max(ratios) <= 1.2),
            f"{once} of {count} acknowledged once; {sum(outcomes.values())} attempts "
            f"({outcomes['refused']} refused, {outcomes['hang']} hung, {outcomes['503']} 503); "
            f"{len(ratios)} retry intervals at {min(ratios):.2f}–{max(ratios):.2f}× the "
            f"doubling from {RETRY_BASE:.0f} s; virtual clock, in-process Deliverer, real HTTP")
    assert answered == count
    assert delivered == once == len(receiver.acked) == count
    assert all(len(bodies) == 1 for bodies in receiver.bodies.values())
    assert receiver.invalid == 0
    assert 0.8 - 1e-9 <= min(ratios) and max(ratios) <= 1.2 + 1e-9


def schedule_ratios(store):
    """Each wait between two attempts of an event over the wait the schedule prescribes."""
    ratios, number = [], 0
    rows = store.read().conn.execute("SELECT * FROM attempts ORDER BY event_id, id").fetchall()
    for previous, attempt in pairwise(rows):
        if previous["event_id"] != attempt["event_id"]:
            number = 0
            continue
        number += 1  # the wait after the event's number-th failed attempt
        expected = min(RETRY_BASE * 2 ** (number - 1), MAX_WAIT)
        ratios.append((attempt["started_at"] - previous["finished_at"]) / expected)
    return ratios


def attempt_outcomes(store):
    """The failed attempts by what billing did: refused, hung or 503."""
    names = {"ConnectionError": "refused", "ReadTimeout": "hang", "ConnectTimeout": "hang"}
    counts = Counter()
    for error, status in store.read().conn.execute("SELECT error, http_status FROM attempts"):
        counts[str(status) if status else names.get(error, error)] += 1
    return counts
