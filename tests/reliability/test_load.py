"""Load and concurrency against `python wsgi.py` under waitress and a real billing receiver."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from receiver import Receiver

from .live import (
    SANDBOX,
    callback,
    delivered_count,
    gateway,
    locked_lines,
    ms,
    new_orders,
    percentile,
    poll,
    post_callback,
    scalar,
    store_of,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver():
    receiver = Receiver(SANDBOX["BILLING_SECRET"]).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def served(tmp_path, receiver):
    """Start a gateway (worker thread on) delivering to the receiver; stopped afterwards."""
    servers = []

    def start(**env):
        server = gateway(tmp_path, receiver.url, **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_200_identical_callbacks_released_at_once_pay_once(served, receiver, figures, scale):
    server = served(BILLING_RETRY_BASE=0.1)
    store = store_of(server)
    crowd, rounds, outcomes = 200, scale, []
    orders = new_orders(store, rounds)
    for order_id in orders:
        fields = callback(order_id)
        barrier = threading.Barrier(crowd)

        def fire(_, fields=fields, barrier=barrier):
            barrier.wait()
            return post_callback(server, fields)

        with ThreadPoolExecutor(crowd) as pool:
            outcomes += list(pool.map(fire, range(crowd)))
    poll(lambda: delivered_count(store) == rounds, what="the deliveries")
    server.stop()  # nothing may arrive at billing after this
    answered = sum(1 for status in outcomes if status == 200)
    paid = scalar(store, "SELECT count(*) FROM orders WHERE status = 'paid'")
    events = store.read().count("events")
    verdicts = dict(store.read().conn.execute(
        "SELECT verdict, count(*) FROM callbacks GROUP BY verdict").fetchall())
    locked = len(locked_lines(server))
    figures("200 identical callbacks for one order at once (barrier)", rounds,
            int(paid == events == len(receiver.acked) == rounds and answered == len(outcomes)),
            f"{paid} paid, {events} event, {sum(receiver.acked.values())} ack; "
            f"{answered}×200 of {len(outcomes)}; {verdicts.get('applied', 0)} applied + "
            f"{verdicts.get('duplicate', 0)} duplicate; {locked} locked")
    assert answered == len(outcomes) == crowd * rounds, set(outcomes)
    assert paid == events == rounds
    assert verdicts == {"applied": rounds, "duplicate": (crowd - 1) * rounds}
    assert len(receiver.acked) == rounds and set(receiver.acked.values()) == {1}
    assert receiver.invalid == 0 and locked == 0


def test_16_threads_of_50_orders_while_the_worker_delivers(served, receiver, figures, scale):
    server = served(BILLING_RETRY_BASE=0.1)
    store = store_of(server)
    threads, each = 16, 50 * scale
    orders = new_orders(store, threads * each)
    batches = [orders[n::threads] for n in range(threads)]
    started = time.monotonic()

    def pay_all(batch):
        session = requests.Session()
        return [post_callback(server, callback(order_id), session) for order_id in batch]

    with ThreadPoolExecutor(threads) as pool:
        outcomes = [status for batch in pool.map(pay_all, batches) for status in batch]
    callbacks_done = time.monotonic() - started
    poll(lambda: delivered_count(store) == len(orders), what="every delivery")
    drained = time.monotonic() - started
    server.stop()
    errors = sum(1 for status in outcomes if status != 200)
    paid = scalar(store, "SELECT count(*) FROM orders WHERE status = 'paid'")
    events = scalar(store, "SELECT count(DISTINCT order_id) FROM events")
    once = sum(1 for count in receiver.acked.values() if count == 1)
    locked = len(locked_lines(server))
    figures(f"{threads} threads × {each} orders' callbacks, worker delivering", 1,
            int(paid == once == len(orders) and errors == 0 == locked),
            f"{paid} paid, {events} events, {once} delivered once, {errors} errors, "
            f"{locked} locked; callbacks {callbacks_done:.1f} s, all acked at {drained:.1f} s")
    assert errors == 0, set(outcomes)
    assert paid == events == store.read().count("events") == len(orders)
    assert once == len(receiver.acked) == len(orders)
    assert max(receiver.max_in_flight.values()) == 1
    assert receiver.invalid == 0 and locked == 0


def measure(server, store, count):
    """Latencies of `count` callbacks, each paying a fresh order, over one keep-alive session."""
    session, latencies, failures = requests.Session(), [], 0
    for order_id in new_orders(store, count):
        fields = callback(order_id)
        started = time.perf_counter()
        status = post_callback(server, fields, session)
        latencies.append(time.perf_counter() - started)
        failures += status != 200
    return latencies, failures


def test_billing_hanging_its_whole_timeout_leaves_callbacks_as_fast(served, receiver, figures,
                                                                    scale):
    timeout = 1.0
    server = served(BILLING_RETRY_BASE=0.05, BILLING_TIMEOUT=timeout)
    store = store_of(server)
    count = 100 * scale
    measure(server, store, 20)  # warm-up: connections, caches, first pages of the file
    before, failed_before = measure(server, store, count)
    receiver.default = "hang"
    during, failed_during = measure(server, store, count)
    # Keep calling back until billing has held the worker for two whole timeouts at least.
    deadline = time.monotonic() + 30 * timeout
    while (timed_out := scalar(
            store, "SELECT count(*) FROM attempts WHERE error LIKE 'deadline%'")) < 2:
        assert time.monotonic() < deadline, "the worker never waited out a hanging billing"
        more, failed = measure(server, store, 10)
        during += more
        failed_during += failed
    receiver.default = 204
    receiver.release.set()
    # The backlog the hang left goes out first, so the second baseline is billing answering
    # as in the first, not the worker catching up.
    poll(lambda: delivered_count(store) == store.read().count("events"), what="the backlog")
    after, failed_after = measure(server, store, count)
    baseline = before + after
    ratio = percentile(during, 50) / percentile(baseline, 50)
    noise = percentile(before, 50) / percentile(after, 50)
    failed = failed_before + failed_during + failed_after
    figures("billing hangs its whole timeout while callbacks keep coming", 1,
            int(ratio <= 2.0 and failed == 0),
            f"p50 {ms(percentile(during, 50))} vs baseline {ms(percentile(baseline, 50))} "
            f"(×{ratio:.2f}; baseline halves ×{noise:.2f}), p95 {ms(percentile(during, 95))} "
            f"vs {ms(percentile(baseline, 95))}; {len(during)} callbacks during {timed_out} "
            f"timed-out attempts of {timeout:.0f} s; {failed} failed")
    assert failed == 0
    assert ratio <= 2.0, (percentile(during, 50), percentile(baseline, 50))
