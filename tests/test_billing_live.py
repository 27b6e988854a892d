"""Delivery to a real HTTP billing receiver from real gateway processes, crashes included."""

import os
import runpy
import signal
import subprocess
import sys
import time

import pytest
import requests
from conftest import ROOT, LiveServer, free_port
from receiver import Receiver

from gateway import chronopay
from gateway.signing import make_link
from gateway.store import Store

pytestmark = pytest.mark.slow
SANDBOX = runpy.run_path(os.path.join(ROOT, "config.sandbox.py"))
# pay() opens one link (same fields, same second) for many orders: lift LINK_MAX_ORDERS.
FAST = {"GATEWAY_BILLING_RETRY_BASE": "0.2", "GATEWAY_BILLING_TIMEOUT": "1",
        "GATEWAY_LINK_MAX_ORDERS": "1000000"}


def serve(tmp_path, receiver_url, **env):
    return LiveServer(tmp_path, env=dict(FAST, GATEWAY_BILLING_URL=receiver_url, **env))


def pay(server, amount="1000.00", transaction_id=None):
    """A real payment through the pages, then ChronoPay's callback; returns the order id."""
    session = requests.Session()
    query = make_link(SANDBOX["CABINET_SECRET"], "dem001", "6", amount, int(time.time()) + 600)
    page = session.get(server.url + "/pay", params=query, timeout=10).text
    csrf = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    token = page.split('name="token" type="hidden" value="')[1].split('"')[0]
    # again: these tests pay one account many times on purpose (RECENT_PAYMENT_WARNING).
    handoff = session.post(server.url + "/pay/confirm", data={"csrf_token": csrf,
                           "token": token, "again": "y"}, allow_redirects=False, timeout=10)
    order_id = handoff.headers["Location"].split("order_id=")[1].split("&")[0]
    fields = {"transaction_type": "Purchase", "transaction_id": transaction_id or order_id,
              "customer_id": "c1", "total": amount, "currency": "RUB", "order_id": order_id,
              "product_id": SANDBOX["CHRONOPAY_PRODUCT_ID"]}
    fields["sign"] = chronopay.callback_sign(SANDBOX["CHRONOPAY_SHARED_SECRET"], "c1",
                                             fields["transaction_id"], "Purchase", amount)
    answer = requests.post(server.url + "/chronopay/callback", data=fields, timeout=10)
    assert answer.status_code == 200
    return order_id


def store_of(server):
    return Store(server.env["GATEWAY_DATABASE_URL"])


def delivered(server, expected=None, timeout=30):
    """Orders whose event is marked delivered, once that is `expected` (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {e["order_id"] for e in store_of(server).read().events(status="delivered")}
        if found == expected or expected is None or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # polling another process's commit, not timing anything


def worker(server):
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "gateway", "deliver"],
                            cwd=ROOT, env=server.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.fixture
def receiver():
    receiver = Receiver(SANDBOX["BILLING_SECRET"]).start()
    yield receiver
    receiver.stop()


def test_billing_failing_then_recovering_hears_of_each_payment_once(tmp_path, receiver):
    receiver.script = [500, 503, 301, 500]
    server = serve(tmp_path, receiver.url).start()
    try:
        orders = [pay(server) for _ in range(3)]
        receiver.wait_for(lambda r: len(r.acked) == 3)
        assert set(receiver.acked.values()) == {1}
        assert {order for _, status, order in receiver.calls if status == 204} == set(orders)
        assert delivered(server, set(orders)) == set(orders)
        assert 301 in [status for _, status, _ in receiver.calls]
        assert set(receiver.paths) == {"/hook"}  # the redirect was not followed
        assert receiver.invalid == 0
    finally:
        server.stop()


def test_acknowledged_callback_survives_sigkill_while_billing_is_down(tmp_path):
    port = free_port()
    down_url = f"http://127.0.0.1:{port}/hook"  # nothing listens yet: connection refused
    server = serve(tmp_path, down_url).start()
    order_id = pay(server)
    server.stop(kill=True)
    assert store_of(server).read().order(order_id)["status"] == "paid"
    receiver = Receiver(SANDBOX["BILLING_SECRET"], port=port).start()
    try:
        restarted = serve(tmp_path, down_url)
        restarted.env = server.env
        restarted.port, restarted.url = server.port, server.url
        restarted.start()
        receiver.wait_for(lambda r: sum(r.acked.values()) == 1)
        assert delivered(server, {order_id}) == {order_id}
        restarted.stop()
        assert store_of(server).integrity_check() == "ok"
    finally:
        receiver.stop()


def test_worker_killed_mid_delivery_then_others_finish_never_two_in_flight(tmp_path, receiver):
    server = serve(tmp_path, receiver.url, GATEWAY_BILLING_WORKER="false").start()
    try:
        orders = {pay(server) for _ in range(4)}
        receiver.script = ["hang"]
        first = worker(server)
        receiver.wait_for(lambda r: sum(r.in_flight.values()) == 1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        receiver.release.set()
        others = [worker(server) for _ in range(3)]
        try:
            receiver.wait_for(lambda r: len(r.acked) == 4)
            assert delivered(server, orders) == orders
        finally:
            for process in others:
                process.kill()
                process.wait(10)
        assert max(receiver.max_in_flight.values()) == 1
        assert set(receiver.acked.values()) == {1}
    finally:
        server.stop()


def test_many_workers_in_threads_and_processes_send_each_event_once(tmp_path, receiver):
    receiver.delay = 0.02
    server = serve(tmp_path, receiver.url).start()  # its own worker thread runs too
    workers = [worker(server) for _ in range(2)]
    try:
        orders = {pay(server) for _ in range(20)}
        receiver.wait_for(lambda r: len(r.acked) == 20)
        assert delivered(server, orders) == orders
        assert max(receiver.max_in_flight.values()) == 1
        assert set(receiver.acked.values()) == {1}
        assert all(len(bodies) == 1 for bodies in receiver.bodies.values())
    finally:
        for process in workers:
            process.kill()
            process.wait(10)
        server.stop()
