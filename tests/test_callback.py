"""POST /chronopay/callback: every rejection, duplicates and the journal."""

import itertools
import json
import logging
from urllib.parse import urlencode

import pytest
from conftest import NOW, callback_fields, hand_off, pay_order, send_callback

from gateway.billing import iso
from gateway.payments import BOTH_REVERSALS


def journal(store):
    return store.read().callbacks()


def test_valid_purchase_pays_the_order_once(client, app, store):
    query = hand_off(client, app)
    response = send_callback(client, callback_fields(app, query))
    assert response.status_code == 200 and response.get_data(as_text=True) == "OK"
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and order["transaction_id"] == "70001"
    assert [row["verdict"] for row in journal(store)] == ["applied"]


def test_duplicate_callback_credits_once(client, app, store):
    query = pay_order(client, app)
    paid_at = store.read().order(query["order_id"])["paid_at"]
    for _ in range(3):
        assert send_callback(client, callback_fields(app, query)).status_code == 200
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and order["paid_at"] == paid_at
    assert [r["verdict"] for r in journal(store)] == ["duplicate"] * 3 + ["applied"]
    assert store.read().count("transactions") == 1


def test_callback_from_a_foreign_address_is_403_and_journaled(client, app, store):
    query = hand_off(client, app)
    response = send_callback(client, callback_fields(app, query), remote="10.1.2.3")
    assert response.status_code == 403
    assert store.read().order(query["order_id"])["status"] == "pending"
    row = journal(store)[0]
    assert row["verdict"] == "forbidden_ip" and row["remote_addr"] == "10.1.2.3"


def test_bad_sign_is_403_and_changes_nothing(client, app, store):
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    fields["sign"] = "0" * 32
    assert send_callback(client, fields).status_code == 403
    assert store.read().order(query["order_id"])["status"] == "pending"
    assert journal(store)[0]["verdict"] == "bad_sign"


def test_empty_or_non_form_callback_is_403(client, store):
    assert client.post("/chronopay/callback").status_code == 403
    assert client.post("/chronopay/callback", json={"a": 1}).status_code == 403
    assert [r["verdict"] for r in journal(store)] == ["malformed", "malformed"]


@pytest.mark.parametrize("override, reason", [
    ({"total": "999.00"}, "total"),
    ({"currency": "USD"}, "currency"),
    ({"product_id": "999999-0001-0001"}, "product_id"),
    ({"transaction_type": "Rebill"}, "recurring payments are not supported yet"),
])
def test_mismatch_is_200_review_one_error_line(client, app, store, caplog, override, reason):
    query = hand_off(client, app)
    with caplog.at_level(logging.INFO, logger="gateway.payments"):
        response = send_callback(client, callback_fields(app, query, **override))
    assert response.status_code == 200
    order = store.read().order(query["order_id"])
    assert order["status"] == "pending" and reason in order["review"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and reason in errors[0].getMessage()
    assert journal(store)[0]["verdict"] == "review"
    # ...and a later, consistent purchase still credits: review is for a person to look,
    # so the outcome does not depend on which of the two callbacks came first.
    send_callback(client, callback_fields(app, query, transaction_id="70002"))
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and reason in order["review"]


def test_unknown_order_is_200_and_journaled(client, app, store):
    query = hand_off(client, app)
    response = send_callback(client, callback_fields(app, query, order_id="nope"))
    assert response.status_code == 200
    assert journal(store)[0]["verdict"] == "review"
    assert store.read().order(query["order_id"])["status"] == "pending"


def test_captured_callback_cannot_pay_another_order(client, app, store):
    victim = pay_order(client, app, "1000.00")
    mine = hand_off(client, app, "1000.00")
    stolen = callback_fields(app, victim)
    stolen["order_id"] = mine["order_id"]  # order_id is not covered by the sign
    assert send_callback(client, stolen).status_code == 200
    assert store.read().order(mine["order_id"])["status"] == "pending"
    assert journal(store)[0]["verdict"] == "replay"
    # Both orders involved go to review: if mine was the genuine payment that lost the race,
    # it must not sit silently pending.
    for order_id in (mine["order_id"], victim["order_id"]):
        assert "replay: transaction belongs to order" in store.read().order(order_id)["review"]
    assert store.read().order(victim["order_id"])["status"] == "paid"
    assert store.read().count("transactions") == 1 and store.read().count("events") == 1


def test_captured_callback_with_other_unsigned_fields_gains_nothing(client, app, store):
    query = pay_order(client, app)
    for override in ({"currency": "USD"}, {"product_id": "x"}, {"cs1": "evil"},
                     {"email": "a@b"}, {"extra": "1"}):
        fields = callback_fields(app, query, **override)
        assert send_callback(client, fields).status_code == 200
    assert store.read().count("transactions") == 1
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and order["review"] is None


def test_second_distinct_purchase_of_a_paid_order_is_review(client, app, store):
    query = pay_order(client, app)
    send_callback(client, callback_fields(app, query, transaction_id="70002"))
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and order["transaction_id"] == "70001"
    assert "paid order" in order["review"]


def test_refund_after_payment(client, app, store):
    query = pay_order(client, app)
    send_callback(client, callback_fields(app, query, "80001", "Refund"))
    assert store.read().order(query["order_id"])["status"] == "refunded"


def events_of(store, order_id):
    return sorted(e["type"] for e in store.read().events(order_id=order_id))


@pytest.mark.parametrize("ttype, status", [("Refund", "refunded"),
                                           ("chargeback", "chargeback")])
def test_reversal_before_its_purchase_takes_effect_when_the_purchase_arrives(
        client, app, store, ttype, status):
    # ChronoPay re-sends a callback it got no answer to, so a refund can overtake its purchase:
    # the outcome must be the one of the two in order, not an order stuck unpaid for review.
    query = hand_off(client, app)
    send_callback(client, callback_fields(app, query, "80001", ttype))
    order = store.read().order(query["order_id"])
    assert order["status"] == "pending" and order["review"] is None
    assert events_of(store, query["order_id"]) == []
    send_callback(client, callback_fields(app, query, "70001"))
    order = store.read().order(query["order_id"])
    assert order["status"] == status and order["review"] is None
    assert events_of(store, query["order_id"]) == sorted(
        ["payment.succeeded", "payment." + ("refunded" if status == "refunded" else status)])
    assert [r["verdict"] for r in journal(store)] == ["applied", "held"]


ARRIVALS = [("70001", "Purchase"), ("80001", "Refund"), ("90001", "chargeback")]


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(3))))
def test_refund_and_chargeback_end_the_same_whatever_their_arrival(client, app, store,
                                                                   arrival):
    query = hand_off(client, app)
    for i in arrival:
        send_callback(client, callback_fields(app, query, *ARRIVALS[i]))
    order = store.read().order(query["order_id"])
    assert order["status"] == "chargeback"
    assert BOTH_REVERSALS in order["review"]
    events = events_of(store, query["order_id"])
    # One credit and exactly one debit, whichever reversal came first.
    assert events.count("payment.succeeded") == 1 and len(events) == 2
    first = next(ARRIVALS[i][1] for i in arrival if i)
    assert events == sorted(["payment.succeeded", "payment." + (
        "refunded" if first == "Refund" else "chargeback")])


def test_review_keeps_every_reason_with_its_time(client, app, store):
    query = pay_order(client, app)
    send_callback(client, callback_fields(app, query, transaction_id="70002"))
    app.extensions["clock"].advance(60)
    send_callback(client, callback_fields(app, query, transaction_id="70003", currency="USD"))
    lines = store.read().order(query["order_id"])["review"].split("\n")
    assert len(lines) == 2
    assert lines[0].startswith(iso(NOW)) and "paid transaction for a paid order" in lines[0]
    assert lines[1].startswith(iso(NOW + 60)) and "currency" in lines[1]


def test_unknown_type_before_the_purchase_does_not_stop_the_credit(client, app, store):
    # In order, the purchase credits and the unknown type then asks review; reversed, the same.
    query = hand_off(client, app)
    send_callback(client, callback_fields(app, query, "60001", "Void"))
    send_callback(client, callback_fields(app, query, "70001"))
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and "unknown transaction type" in order["review"]
    assert events_of(store, query["order_id"]) == ["payment.succeeded"]


def test_journal_keeps_the_raw_body_with_unknown_fields(client, app, store):
    query = hand_off(client, app)
    send_callback(client, callback_fields(app, query, zz_new_field="значение"))
    body = journal(store)[0]["body"]
    assert "zz_new_field=" in body and "transaction_id=70001" in body


def test_logs_never_carry_the_sign_or_secret(client, app, caplog):
    query = hand_off(client, app)
    fields = callback_fields(app, query, total="1.00")
    with caplog.at_level(logging.DEBUG):
        send_callback(client, fields)
        bad = dict(fields, sign="a" * 32)
        send_callback(client, bad)
    text = caplog.text
    assert fields["sign"] not in text and "a" * 32 not in text
    assert app.config["CHRONOPAY_SHARED_SECRET"] not in text


def test_a_get_callback_is_verified_journaled_and_applied_like_a_post(client, app, store):
    # cb_type=G, or a merchant cabinet set to GET: the same fields as a query.
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    response = client.get("/chronopay/callback?" + urlencode(fields),
                          environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200 and response.get_data(as_text=True) == "OK"
    assert store.read().order(query["order_id"])["status"] == "paid"
    row = journal(store)[0]
    assert row["verdict"] == "applied" and "transaction_id=70001" in row["body"]
    again = client.get("/chronopay/callback?" + urlencode(fields),
                       environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert again.status_code == 200 and journal(store)[0]["verdict"] == "duplicate"
    assert store.read().count("events") == 1


def test_a_forged_get_callback_is_403_and_changes_nothing(client, app, store):
    query = hand_off(client, app)
    fields = dict(callback_fields(app, query), total="1.00")
    response = client.get("/chronopay/callback?" + urlencode(fields),
                          environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/plain")
    assert store.read().order(query["order_id"])["status"] == "pending"
    assert journal(store)[0]["verdict"] == "bad_sign"


def test_fields_in_both_query_and_body_are_refused(client, app, store):
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    response = client.post("/chronopay/callback?order_id=other", data=fields,
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 403
    assert store.read().order(query["order_id"])["status"] == "pending"
    assert journal(store)[0]["verdict"] == "malformed"
    assert "query and the body" in journal(store)[0]["reason"]


def test_an_empty_get_is_403_plainly(client):
    response = client.get("/chronopay/callback", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("ttype", ["purchase", "PURCHASE", "Onetime"])
def test_purchase_in_any_case_pays(client, app, store, ttype):
    query = hand_off(client, app)
    send_callback(client, callback_fields(app, query, transaction_type=ttype))
    assert store.read().order(query["order_id"])["status"] == "paid"


@pytest.mark.parametrize("currency, paid", [("RUB", True), ("rub", True), ("RUR", True),
                                            ("rur", True), (None, True), ("USD", False),
                                            ("RUBX", False)])
def test_rubles_are_rub_or_rur_in_any_case_or_no_currency(client, app, store, currency, paid):
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    if currency is None:
        del fields["currency"]
    else:
        fields["currency"] = currency
    send_callback(client, fields)
    order = store.read().order(query["order_id"])
    assert (order["status"] == "paid") == paid and (order["review"] is None) == paid


def test_the_hand_off_sends_our_order_id_as_cs1_too(client, app):
    query = hand_off(client, app)
    assert query["cs1"] == query["order_id"]


def test_a_callback_with_cs1_and_no_order_id_pays_that_order(client, app, store):
    query = hand_off(client, app)
    fields = callback_fields(app, query, cs1=query["order_id"])
    del fields["order_id"]
    send_callback(client, fields)
    assert store.read().order(query["order_id"])["status"] == "paid"
    assert journal(store)[0]["order_id"] == query["order_id"]


def test_order_id_and_cs1_naming_different_orders_is_review(client, app, store):
    mine, other = hand_off(client, app), hand_off(client, app)
    send_callback(client, callback_fields(app, mine, cs1=other["order_id"]))
    for query in (mine, other):
        assert store.read().order(query["order_id"])["status"] == "pending"
    assert "cs1" in store.read().order(mine["order_id"])["review"]


def test_rebill_is_recorded_for_review_and_credits_nothing(client, app, store):
    query = pay_order(client, app)
    send_callback(client, callback_fields(app, query, "70009", "Rebill"))
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and "recurring payments" in order["review"]
    assert store.read().count("events") == 1 and store.read().count("transactions") == 2


def test_oversize_callback_is_refused_plainly(client):
    response = client.post("/chronopay/callback", data={"x": "a" * 100_000},
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 413


def test_captured_callback_rearranged_across_signed_fields_pays_nothing(client, app, store):
    # The sign covers customer_id + transaction_id + ... with no separators, so moving
    # characters across a boundary keeps it valid while naming a "new" transaction.
    victim = pay_order(client, app, "1000.00")
    mine = hand_off(client, app, "1000.00")
    stolen = callback_fields(app, victim)
    for customer_id, transaction_id in ((stolen["customer_id"] + "7", "0001"),
                                        (stolen["customer_id"][:-1], "270001")):
        moved = dict(stolen, customer_id=customer_id, transaction_id=transaction_id)
        for order_id in (mine["order_id"], victim["order_id"]):
            assert send_callback(client, dict(moved, order_id=order_id)).status_code == 200
    assert store.read().order(mine["order_id"])["status"] == "pending"
    assert "re-split" in store.read().order(mine["order_id"])["review"]
    assert "re-split" in store.read().order(victim["order_id"])["review"]
    assert store.read().order(victim["order_id"])["status"] == "paid"
    assert store.read().count("transactions") == 1 and store.read().count("events") == 1
    assert {r["verdict"] for r in journal(store)[:4]} == {"replay"}


def test_a_database_made_before_signed_text_is_upgraded_on_start(config, tmp_path):
    import sqlite3

    from gateway import create_app

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE transactions (transaction_id TEXT NOT NULL, transaction_type TEXT"
                " NOT NULL, order_id TEXT NOT NULL, effect TEXT, total TEXT NOT NULL,"
                " created_at REAL NOT NULL, PRIMARY KEY (transaction_id, transaction_type))")
    old.close()
    app = create_app(dict(config, DATABASE_URL=f"sqlite:///{path}"))
    client = app.test_client()
    query = pay_order(client, app)
    assert app.extensions["store"].read().order(query["order_id"])["status"] == "paid"
    app.extensions["store"].close()


def test_multipart_part_without_a_name_is_403_not_a_500(client, store):
    # Found by the fuzzing scenario: a name broken by a newline leaves the part nameless, and
    # two such parts made a repeated field whose name (None) the rejection message sliced.
    nameless = b"--b\r\nContent-Disposition: form-data; name=\"\n\"\r\n\r\nx\r\n"
    body = nameless * 2 + b"--b--\r\n"
    response = client.post("/chronopay/callback", data=body,
                           content_type="multipart/form-data; boundary=b",
                           environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 403
    assert store.read().callbacks()[0]["verdict"] == "malformed"


def event_data(store, order_id):
    rows = store.read().conn.execute(
        "SELECT type, body FROM events WHERE order_id = ? ORDER BY rowid", (order_id,))
    return [json.loads(body)["data"] | {"type": kind} for kind, body in rows]


def refund(client, app, query, transaction_id, total):
    return send_callback(client, callback_fields(app, query, transaction_id, "Refund", total))


def test_a_partial_refund_takes_back_its_total_and_says_what_remains(client, app, store):
    query = pay_order(client, app)
    refund(client, app, query, "80001", "300.00")
    order = store.read().order(query["order_id"])
    assert (order["status"], order["refunded"], order["review"]) == ("paid", "300.00", None)
    last = event_data(store, query["order_id"])[-1]
    assert last["type"] == "payment.refunded" and last["amount"] == "1000.00"
    assert (last["refunded_amount"], last["remaining_amount"]) == ("300.00", "700.00")
    assert last["transaction_id"] == "80001"


def test_partial_refunds_up_to_the_amount_each_once(client, app, store):
    query = pay_order(client, app)
    for _ in range(2):
        refund(client, app, query, "80001", "300.00")
    refund(client, app, query, "80002", "700.00")
    order = store.read().order(query["order_id"])
    assert (order["status"], order["refunded"], order["review"]) == ("refunded", "1000.00", None)
    taken = [(d["refunded_amount"], d["remaining_amount"])
             for d in event_data(store, query["order_id"])[1:]]
    assert taken == [("300.00", "700.00"), ("700.00", "0.00")]


@pytest.mark.parametrize("totals", [("300.00", "800.00"), ("1000.01",), ("0.00",), ("-5.00",),
                                    ("0",)])
def test_a_refund_over_the_remainder_or_not_positive_is_review(client, app, store, totals):
    query = pay_order(client, app)
    for n, total in enumerate(totals):
        refund(client, app, query, f"8000{n}", total)
    order = store.read().order(query["order_id"])
    assert order["status"] == "paid" and order["review"]
    applied = [t for t in totals[:-1]]
    assert order["refunded"] == (applied[0] if applied else None)
    assert len(event_data(store, query["order_id"])) == 1 + len(applied)


def test_a_chargeback_after_a_partial_refund_takes_back_only_what_is_left(client, app, store):
    query = pay_order(client, app)
    refund(client, app, query, "80001", "300.00")
    send_callback(client, callback_fields(app, query, "90001", "chargeback"))
    order = store.read().order(query["order_id"])
    assert order["status"] == "chargeback" and BOTH_REVERSALS in order["review"]
    last = event_data(store, query["order_id"])[-1]
    assert last["type"] == "payment.chargeback"
    assert (last["refunded_amount"], last["remaining_amount"]) == ("700.00", "0.00")


def test_a_partial_refund_before_its_purchase_applies_with_it(client, app, store):
    query = hand_off(client, app)
    refund(client, app, query, "80001", "250.00")
    assert store.read().order(query["order_id"])["status"] == "pending"
    send_callback(client, callback_fields(app, query, "70001"))
    order = store.read().order(query["order_id"])
    assert (order["status"], order["refunded"]) == ("paid", "250.00")
    assert [d["type"] for d in event_data(store, query["order_id"])] == [
        "payment.succeeded", "payment.refunded"]


def test_a_callback_answered_503_is_logged_with_its_order_and_transaction(config, caplog):
    # The database is locked by another process past the busy budget: nothing is recorded,
    # ChronoPay gets 503 and re-sends; ops can tell which payment waits for that.
    import sqlite3

    from gateway import create_app

    app = create_app(dict(config, DB_BUSY_TIMEOUT=0.05))
    client = app.test_client()
    query = hand_off(client, app)
    holder = sqlite3.connect(app.extensions["store"].path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = send_callback(client, callback_fields(app, query))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/plain")
    lines = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 1 and query["order_id"] in lines[0] and "70001" in lines[0]
    assert app.extensions["store"].read().order(query["order_id"])["status"] == "pending"
    app.extensions["store"].close()


def test_a_sign_copied_into_a_logged_field_never_reaches_the_log(client, app, store, caplog):
    # Found by the fuzzing scenario: a sender may put a sign-shaped value into order_id.
    query = hand_off(client, app)
    fields = callback_fields(app, query)
    send_callback(client, dict(fields, order_id=fields["sign"]))
    send_callback(client, dict(fields, transaction_id=fields["sign"], sign="0" * 32))
    assert fields["sign"] not in caplog.text and "<hex>" in caplog.text
