"""The sandbox in-process: its billing verifies like billing must and credits once per
webhook-id, its ChronoPay pays an order once, and both keep their books in the sandbox's own
file (gateway/sandbox/ledger.py), never in the gateway's store."""

import json
import logging
import runpy
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, free_port, hand_off, hidden

from gateway import billing, create_app
from gateway.errors import StoreBusy, StoreUnavailable
from gateway.sandbox.ledger import Ledger

SANDBOX = runpy.run_path("config.sandbox.py")


@pytest.fixture
def sandbox(tmp_path):
    # A port nothing listens on: the simulated ChronoPay's callbacks to it fail at once, and a
    # demo running on the config's 8080 is never called.
    public = f"http://127.0.0.1:{free_port()}"
    app = create_app(dict(SANDBOX, TESTING=True, BILLING_WORKER=False,
                          INSTANCE_PATH=str(tmp_path / "instance"),
                          DATABASE_URL=f"sqlite:///{tmp_path}/s.sqlite3", PUBLIC_URL=public,
                          CHRONOPAY_URL=public + "/sandbox/chronopay/",
                          CABINET_URL=public + "/sandbox/cabinet/",
                          BILLING_URL=public + "/sandbox/billing/"))
    yield app
    app.extensions["sandbox_ledger"].close()
    app.extensions["store"].close()


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(str(tmp_path / "sandbox.sqlite3"), busy_timeout=5)
    yield ledger
    ledger.close()


def call(client, body, msg_id="msg_1", secret=SANDBOX["BILLING_SECRET"], stamp=None):
    keys = billing.parse_secrets(secret)
    headers = billing.headers(keys, msg_id, stamp or time.time(), body)
    return client.post("/sandbox/billing/", data=body, headers=headers)


BODY = json.dumps({"type": "payment.succeeded", "timestamp": "x", "data": {
    "order_id": "o1", "amount": "1000.00"}})


def test_verified_call_credits_once_per_webhook_id(sandbox):
    client = sandbox.test_client()
    assert call(client, BODY).status_code == 204
    assert call(client, BODY).status_code == 204
    assert len(sandbox.extensions["sandbox_ledger"].entries()) == 1
    assert "850,00" in client.get("/sandbox/cabinet/").get_data(as_text=True)


@pytest.mark.parametrize("kwargs", [
    {"secret": billing.new_secret()}, {"stamp": time.time() - 3600},
])
def test_forged_or_stale_call_is_refused_plainly(sandbox, kwargs):
    response = call(sandbox.test_client(), BODY, **kwargs)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sandbox.extensions["sandbox_ledger"].entries() == []


def test_switch_to_fail_answers_500(sandbox):
    client = sandbox.test_client()
    page = client.get("/sandbox/billing/").get_data(as_text=True)
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    client.post("/sandbox/billing/mode", data={"csrf_token": token, "mode": "fail"})
    assert call(client, BODY).status_code == 500


def tables(path):
    with sqlite3.connect(path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type ="
                                                " 'table'")}
    conn.close()
    return names


def test_the_sandbox_books_in_its_own_file_and_the_store_holds_none(sandbox, tmp_path):
    assert call(sandbox.test_client(), BODY).status_code == 204
    assert tables(tmp_path / "instance" / "sandbox.sqlite3") == {"paid", "ledger"}
    assert not {name for name in tables(tmp_path / "s.sqlite3") if "sandbox" in name
                or name in ("paid", "ledger")}


def test_without_sandbox_the_factory_loads_none_of_it(tmp_path):
    # In a fresh interpreter: this one has long imported the sandbox for the other tests.
    code = ("import sys; from conftest import SECRETS; from gateway import create_app;"
            f" app = create_app(dict(SECRETS, TESTING=True, INSTANCE_PATH='{tmp_path}',"
            f" DATABASE_URL='sqlite:///{tmp_path}/g.sqlite3', PUBLIC_URL='https://pay.test',"
            " BILLING_URL='https://billing.test/', BILLING_WORKER=False));"
            " print(sorted(m for m in sys.modules if 'sandbox' in m),"
            " sorted(r.rule for r in app.url_map.iter_rules() if 'sandbox' in r.rule))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}/tests:{ROOT}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"


def ledger_entry(webhook_id, received_at, amount="1000.00"):
    return {"webhook_id": webhook_id, "type": "payment.succeeded", "order_id": "o1",
            "amount": amount, "received_at": received_at}


def test_the_ledger_books_a_webhook_id_once_in_arrival_order(ledger):
    assert ledger.book_once(ledger_entry("msg_2", 200.0)) is True
    assert ledger.book_once(ledger_entry("msg_1", 100.0)) is True
    assert ledger.book_once(ledger_entry("msg_2", 300.0, amount="5.00")) is False
    assert ledger.entries() == [ledger_entry("msg_1", 100.0), ledger_entry("msg_2", 200.0)]


def test_an_order_is_paid_once_and_keeps_the_first_time(ledger):
    assert ledger.paid_at("o1") is None
    assert ledger.pay_once("o1", 100.0) is True
    assert ledger.pay_once("o1", 200.0) is False
    assert ledger.paid_at("o1") == 100.0
    assert ledger.paid_at("o2") is None


def race(count, attempt):
    """Run attempt(n) in count threads released together; returns their results."""
    start, results = threading.Barrier(count), [None] * count

    def run(n):
        start.wait()
        results[n] = attempt(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_concurrent_copies_of_a_call_are_booked_once(ledger, tmp_path):
    # Two ledgers on one file stand for two processes; each thread has its own connection.
    other = Ledger(str(tmp_path / "sandbox.sqlite3"), busy_timeout=5)
    results = race(8, lambda n: (ledger, other)[n % 2].book_once(
        ledger_entry("msg_1", 100.0 + n)))
    other.close()
    assert sorted(results) == [False] * 7 + [True]
    assert len(ledger.entries()) == 1


def test_concurrent_payments_of_an_order_pay_it_once(ledger):
    results = race(8, lambda n: ledger.pay_once("o1", 100.0 + n))
    assert sorted(results) == [False] * 7 + [True]
    assert ledger.paid_at("o1") in [100.0 + n for n in range(8)]


def test_the_ledger_keeps_the_stores_durability_settings(ledger):
    ledger.entries()
    conn = sqlite3.connect(ledger.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    own = ledger._connection()
    assert own.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert own.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_a_held_ledger_is_store_busy_and_a_broken_file_store_unavailable(tmp_path):
    path = tmp_path / "sandbox.sqlite3"
    ledger = Ledger(str(path), busy_timeout=0.05)
    ledger.entries()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy, match="locked"):
            ledger.pay_once("o1", 1.0)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert ledger.pay_once("o1", 1.0) is True  # rolled back, not left in a transaction
    ledger.close()
    broken = tmp_path / "broken.sqlite3"
    broken.write_bytes(b"not a database, " * 256)
    with pytest.raises(StoreUnavailable, match="not a database"):
        Ledger(str(broken)).entries()


class StaleLedger(Ledger):
    """What a payment racing another sees: the order not yet paid when it checks."""

    def paid_at(self, order_id):
        return None


def test_of_two_payments_racing_past_the_check_one_calls_back(sandbox, caplog):
    client = sandbox.test_client()
    query = hand_off(client, sandbox)
    page = client.get("/sandbox/chronopay/", query_string=query).get_data(as_text=True)
    form = {"csrf_token": hidden(page, "csrf_token"), "handoff": hidden(page, "handoff"),
            "email": "dem001@example.ru", "country": "RUS", "card": "4111 1111 1111 1111",
            "expiry": "12/30", "cvc": "123"}
    real = sandbox.extensions["sandbox_ledger"]
    sandbox.extensions["sandbox_ledger"] = StaleLedger(real.path)
    try:
        first = client.post("/sandbox/chronopay/pay", data=form)
        second = client.post("/sandbox/chronopay/pay", data=form)
    finally:
        sandbox.extensions["sandbox_ledger"].close()
        sandbox.extensions["sandbox_ledger"] = real
    assert first.status_code == 303 and first.headers["Location"] == query["success_url"]
    assert second.status_code == 409 and "уже оплачен" in second.get_data(as_text=True)
    sent = [r for r in caplog.records if r.levelno == logging.WARNING
            and "callback to the gateway" in r.getMessage()]
    assert len(sent) == 1  # the one paid attempt's callback (to a port nothing listens on)
