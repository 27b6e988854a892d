"""SIGKILL the service at named points, restart it, let ChronoPay re-send: nothing is lost.

The kill points are gateway.faults.crash_point calls, armed by GATEWAY_CRASH_AT in the
server's environment ("name:n" dies on the n-th pass), except "after the 200 is written",
where the test kills the server the moment a 200 reaches it.
"""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from receiver import Receiver

from .live import SANDBOX, callback, gateway, new_orders, poll, post_callback, scalar, store_of

pytestmark = pytest.mark.slow
PAYMENTS = 8  # callbacks in flight when the kill comes
RUNS = 3  # per kill point, times RELIABILITY_SCALE
POINTS = {
    "callback.before_commit": "before the callback's commit",
    "callback.after_commit": "after the callback's commit, before the answer",
    "after_200": "after the 200 is written",
    "delivery.after_post": "after billing's POST, before it is marked delivered",
    "delivery.claim": "while claiming a batch of events",
}


@pytest.fixture
def receiver():
    receiver = Receiver(SANDBOX["BILLING_SECRET"]).start()
    yield receiver
    receiver.stop()


def serve(run_path, receiver, **env):
    return gateway(run_path, receiver.url, BILLING_RETRY_BASE=0.1, BILLING_TIMEOUT=0.5,
                   **env).start()


def call_back_at_once(server, orders, kill_on_200=False):
    """ChronoPay's callbacks for the orders, released together; their answers by order."""
    barrier = threading.Barrier(len(orders))
    killed = threading.Event()

    def send(order_id):
        barrier.wait()
        status = post_callback(server, callback(order_id), timeout=20)
        if kill_on_200 and status == 200 and not killed.is_set():
            killed.set()
            os.kill(server.process.pid, signal.SIGKILL)
        return status

    with ThreadPoolExecutor(len(orders)) as pool:
        return dict(zip(orders, pool.map(send, orders), strict=True))


def persisted(store, order_id):
    """Whether the order's purchase is recorded and the order paid, in the file on disk."""
    order = store.read().order(order_id)
    return order["status"] == "paid" and store.read().transaction(
        "t" + order_id.replace("-", ""), "Purchase") is not None


def one_run(run_path, receiver, point, nth):
    """Kill at the point, check the file, restart, re-send; returns what the run saw."""
    run_path.mkdir()
    env = {} if point == "after_200" else {"CRASH_AT": f"{point}:{nth}"}
    server = serve(run_path, receiver, **env)
    store = store_of(server)
    orders = new_orders(store, PAYMENTS)
    answers = call_back_at_once(server, orders, kill_on_200=point == "after_200")
    poll(lambda: server.process.poll() is not None, timeout=30, what="the crash")
    server.stop()
    assert server.process.returncode == -signal.SIGKILL
    acknowledged = [order for order, status in answers.items() if status == 200]
    lost = [order for order in acknowledged if not persisted(store, order)]
    checks = [store.integrity_check()]
    restarted = serve(run_path, receiver)
    try:
        # ChronoPay re-sends what got no answer; one acknowledged callback comes again, late.
        resend = [order for order in orders if answers[order] != 200] + acknowledged[:1]
        session = requests.Session()
        again = [post_callback(restarted, callback(order), session) for order in resend]
        poll(lambda: scalar(store, "SELECT count(*) FROM events WHERE status = 'delivered'")
             == PAYMENTS, timeout=60, what="every event delivered after the restart")
    finally:
        restarted.stop()
    checks.append(store.integrity_check())
    ids = {order: {msg for msg, _, of in receiver.calls if of == order} for order in orders}
    return {
        "acknowledged": len(acknowledged), "lost": lost, "resent": len(resend),
        "resent_ok": again.count(200), "checks": checks,
        "paid": scalar(store, "SELECT count(*) FROM orders WHERE status = 'paid'"),
        "events": store.read().count("events"),
        "event_orders": scalar(store, "SELECT count(DISTINCT order_id) FROM events"),
        "credits": scalar(store, "SELECT count(*) FROM transactions WHERE effect = 'paid'"),
        "ids": max(len(found) for found in ids.values()),
        "resent_to_billing": sum(1 for found in ids.values() for msg in found
                                 if len([c for c in receiver.calls if c[0] == msg]) > 1),
        "bodies": max(len(receiver.bodies[msg]) for found in ids.values() for msg in found),
    }


def healthy(run):
    return (not run["lost"] and run["resent_ok"] == run["resent"]
            and run["checks"] == ["ok", "ok"]
            and run["paid"] == run["events"] == run["event_orders"] == run["credits"] == PAYMENTS
            and run["ids"] == 1 and run["bodies"] == 1)


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_then_restart_loses_nothing_and_credits_once(tmp_path, receiver, figures,
                                                            scale, point):
    # A worker claims every due event at once, so there may be a single claim to kill.
    runs = [one_run(tmp_path / f"run{n}", receiver, point,
                    nth=1 if point == "delivery.claim" else 1 + n % 3)
            for n in range(RUNS * scale)]
    passed = sum(map(healthy, runs))
    figures(f"SIGKILL {POINTS[point]}, restart, ChronoPay re-sends", len(runs), passed,
            f"{sum(r['acknowledged'] for r in runs)} callbacks got 200 before the kill, "
            f"{sum(len(r['lost']) for r in runs)} lost; {sum(r['resent'] for r in runs)} "
            f"re-sent, all 200; paid = events = credits = {PAYMENTS} every run; "
            f"events POSTed again after the restart: {sum(r['resent_to_billing'] for r in runs)}"
            f", ≤{max(r['ids'] for r in runs)} event id per order; "
            f"integrity_check ok {sum(r['checks'] == ['ok', 'ok'] for r in runs)}/{len(runs)}")
    for run in runs:
        assert run["lost"] == []  # every callback answered 200 was on disk
        assert healthy(run), run
        if point == "delivery.after_post":  # billing had it; it comes again, same id
            assert run["resent_to_billing"] >= 1
        if point.startswith("callback."):  # the kill came while a callback was in flight
            assert run["acknowledged"] < PAYMENTS
