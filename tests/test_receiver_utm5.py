"""The receiver against a fake utm5_payment_tool that never refuses a duplicate."""
import json
import sqlite3
import sys

import pytest
from dem_receiver.ledger import BillingFailed, Conflict, Ledger
from dem_receiver.utm5 import UTM5

FAKE_TOOL = r'''
import os, sqlite3, sys
db = sqlite3.connect(os.environ["FAKE_UTM5_DB"], isolation_level=None)
db.execute("CREATE TABLE IF NOT EXISTS payment_transactions (id INTEGER PRIMARY KEY,"
           " account TEXT, amount TEXT, payment_ext_number TEXT)")
if sys.argv[1] == "lookup":
    row = db.execute("SELECT id FROM payment_transactions WHERE payment_ext_number = ?",
                     (sys.argv[2],)).fetchone()
    print(row[0] if row else "")
    sys.exit(0)
fails = os.environ.get("FAKE_UTM5_FAILS_FILE")
left = int(open(fails).read()) if fails else 0
if left > 0:
    open(fails, "w").write(str(left - 1))
    sys.exit(3)
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
db.execute("INSERT INTO payment_transactions (account, amount, payment_ext_number)"
           " VALUES (?, ?, ?)", (args["-a"], args["-b"], args["-e"]))
'''


@pytest.fixture
def utm5(tmp_path, monkeypatch):
    tool = tmp_path / "utm5_payment_tool.py"
    tool.write_text(FAKE_TOOL)
    monkeypatch.setenv("FAKE_UTM5_DB", str(tmp_path / "utm5.sqlite3"))
    return _adapter(tool)


def _adapter(tool):
    adapter = UTM5(sys.executable, 7, [sys.executable, str(tool), "lookup", "{external_id}"])
    adapter.tool_argv = [sys.executable, str(tool)]
    return adapter


def payments(tmp_path):
    db = sqlite3.connect(tmp_path / "utm5.sqlite3")
    return db.execute("SELECT account, amount, payment_ext_number FROM payment_transactions"
                      " ORDER BY id").fetchall()


def event(kind="payment.succeeded", ext="CP:t1", amount="1000.00", account="6", **extra):
    return {"type": kind, "data": {"external_id": ext, "account": account, "amount": amount,
                                   "transaction_id": ext[3:], **extra}}


@pytest.fixture
def ledger(tmp_path, utm5, monkeypatch):
    # The tool is the fake script run by this Python.
    monkeypatch.setattr(utm5, "tool", utm5.tool_argv[1])
    monkeypatch.setattr(utm5, "_run", _wrap(utm5._run, utm5.tool_argv[1]))
    return Ledger(str(tmp_path / "ledger.sqlite3"), utm5)


def _wrap(run, script):
    def run_script(argv):
        return run([sys.executable, *argv] if argv[0] == script else argv)
    return run_script


def test_duplicate_event_credits_once(ledger, tmp_path):
    first = ledger.apply(event(), "msg_1")
    assert ledger.apply(event(), "msg_1") == first
    assert payments(tmp_path) == [("6", "1000.00", "CP:t1")]


def test_refund_after_payment_is_a_negative_payment_with_its_own_id(ledger, tmp_path):
    ledger.apply(event(), "msg_1")
    refund = event("payment.refunded", "CP:r1", refunded_amount="300.00",
                   original_external_id="CP:t1")
    ledger.apply(refund, "msg_2")
    ledger.apply(refund, "msg_2")
    assert payments(tmp_path) == [("6", "1000.00", "CP:t1"), ("6", "-300.00", "CP:r1")]


@pytest.mark.parametrize("changed", [{"amount": "1.00"}, {"account": "7"}])
def test_same_external_id_with_other_amount_or_account_is_refused(ledger, tmp_path, changed):
    ledger.apply(event(), "msg_1")
    with pytest.raises(Conflict):
        ledger.apply(event(**changed), "msg_9")
    assert payments(tmp_path) == [("6", "1000.00", "CP:t1")]


def test_billing_failure_then_retry_credits_once(ledger, tmp_path, monkeypatch):
    fails = tmp_path / "fails"
    fails.write_text("2")
    monkeypatch.setenv("FAKE_UTM5_FAILS_FILE", str(fails))
    for _ in range(2):
        with pytest.raises(BillingFailed):
            ledger.apply(event(), "msg_1")
    ledger.apply(event(), "msg_1")
    assert payments(tmp_path) == [("6", "1000.00", "CP:t1")]


def test_crash_after_billing_insert_is_found_by_lookup_not_paid_again(ledger, tmp_path):
    # The state a crash leaves: the ledger says 'applying', UTM5 already has the payment.
    conn = ledger.connect()
    conn.execute("INSERT INTO ledger VALUES ('CP:t1', 'msg_1', 'payment.succeeded', '6',"
                 " '1000.00', 'applying', NULL, 0)")
    ledger.billing._run([ledger.billing.tool, "-a", "6", "-b", "1000.00", "-e", "CP:t1"])
    assert ledger.apply(event(), "msg_1")
    assert payments(tmp_path) == [("6", "1000.00", "CP:t1")]
    assert json.dumps(ledger.rows()).count("applied") == 1
