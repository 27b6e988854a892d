"""The state machine of orders, without a server or a database."""

import logging
import re

import pytest
from conftest import NOW

from gateway.chronopay import Callback
from gateway.payments import (
    BOTH_REVERSALS,
    decide,
    journal_entry,
    kind_of,
    log_verdict,
    new_order_id,
    result_state,
)


def order(status="pending", review=None, amount="1000.00", refunded=None):
    return {"order_id": "o1", "status": status, "review": review, "amount": amount,
            "refunded": refunded}


def prior(order_id):
    """The row of transaction t1/Purchase, recorded for an order."""
    return {"transaction_id": "t1", "transaction_type": "Purchase", "order_id": order_id}


def cb(transaction_type="Purchase", total="1000.00", currency="RUB", product_id="p",
       order_id="o1"):
    return Callback("c", "t1", transaction_type, total, order_id, product_id, currency)


@pytest.mark.parametrize("ttype", ["Purchase", "onetime", "initial"])
def test_purchase_pays_a_pending_order(ttype):
    decision = decide(order(), None, cb(ttype), "p")
    assert (decision.verdict, decision.status, decision.effect) == ("applied", "paid", "paid")


def test_purchase_pays_an_order_declined_before():
    assert decide(order("declined"), None, cb(), "p").status == "paid"


def test_repeat_of_the_same_transaction_changes_nothing():
    decision = decide(order("paid"), prior("o1"), cb(), "p")
    assert decision.verdict == "duplicate" and decision.status is None and not decision.record


def test_a_transaction_moved_to_another_order_is_a_replay():
    decision = decide(order(), prior("o0"), cb(), "p")
    assert decision.verdict == "replay" and decision.status is None and decision.review is None


def test_second_purchase_of_a_paid_order_asks_review_not_credit():
    decision = decide(order("paid"), None, cb(), "p")
    assert decision.verdict == "review" and decision.status is None and decision.effect is None


@pytest.mark.parametrize("kwargs, reason", [
    ({"total": "999.99"}, "total"),
    ({"total": "1000.001"}, "total is not an amount"),
    ({"total": "1e3"}, "total is not an amount"),
    ({"currency": "USD"}, "currency"),
    ({"product_id": "other"}, "product_id"),
    ({"transaction_type": "Rebill"}, "recurring payments are not supported yet"),
    ({"transaction_type": "Bonus"}, "unknown transaction type"),
])
def test_mismatch_marks_for_review_and_never_pays(kwargs, reason):
    decision = decide(order(), None, cb(**kwargs), "p")
    assert decision.verdict == "review" and decision.status is None and decision.effect is None
    assert reason in decision.review


@pytest.mark.parametrize("currency", ["RUB", "rub", "Rub"])
def test_currency_in_any_case_is_rubles(currency):
    assert decide(order(), None, cb(currency=currency), "p").status == "paid"


def test_total_equal_as_decimal_pays():
    assert decide(order(), None, cb(total="1000"), "p").status == "paid"


def test_review_never_stops_a_consistent_purchase():
    # Arrived the other way round, the purchase would have credited before the review.
    decision = decide(order(review="total differs"), None, cb(), "p")
    assert decision.verdict == "applied" and decision.status == "paid"


def test_unknown_order_is_review():
    decision = decide(None, None, cb(), "p")
    assert decision.verdict == "review" and not decision.record


@pytest.mark.parametrize("ttype, start, end", [
    ("Refund", "paid", "refunded"), ("refund", "paid", "refunded"),
    ("chargeback", "paid", "chargeback"),
    ("decline", "pending", "declined"),
])
def test_reversals_and_declines_move_the_order(ttype, start, end):
    assert decide(order(start), None, cb(ttype), "p").status == end


@pytest.mark.parametrize("ttype, start", [("Refund", "refunded"), ("chargeback", "chargeback")])
def test_second_reversal_of_the_same_kind_asks_review_and_moves_nothing(ttype, start):
    decision = decide(order(start, refunded="1000.00"), None, cb(ttype), "p")
    assert decision.verdict == "review" and decision.status is None and decision.review
    assert not decision.event and decision.effect is None


@pytest.mark.parametrize("ttype, start", [("chargeback", "refunded"), ("Refund", "chargeback")])
def test_refund_and_chargeback_both_end_chargeback_debited_once_for_review(ttype, start):
    # Whichever came first sent billing its debit; the other must not debit again, and the
    # order ends the same either way: chargeback (the bank's word is final), for review.
    refunded = "1000.00" if start == "refunded" else None
    decision = decide(order(start, refunded=refunded), None, cb(ttype), "p")
    assert (decision.verdict, decision.status, decision.event) == ("review", "chargeback", False)
    assert decision.review == BOTH_REVERSALS and decision.effect == kind_of(ttype)


def test_only_the_first_reversal_of_a_paid_order_informs_billing():
    assert decide(order("paid"), None, cb("Refund"), "p").event
    assert decide(order("paid"), None, cb("chargeback"), "p").event
    assert decide(order(), None, cb(), "p").event
    assert not decide(order(), None, cb("decline"), "p").event


@pytest.mark.parametrize("ttype, start, effect", [
    ("Refund", "pending", "refunded"), ("chargeback", "pending", "chargeback"),
    ("Refund", "declined", "refunded"),
])
def test_reversal_of_an_unpaid_order_is_held_for_its_purchase(ttype, start, effect):
    decision = decide(order(start), None, cb(ttype), "p")
    assert decision.verdict == "held" and decision.effect == effect
    assert decision.status is None and decision.review is None and not decision.event


def test_the_other_reversal_while_one_is_held_is_held_too():
    held = [{"transaction_id": "t0", "transaction_type": "Refund", "effect": "refunded",
             "total": "1000.00"}]
    decision = decide(order(), None, cb("chargeback"), "p", held)
    assert decision.verdict == "held" and decision.effect == "chargeback"


def test_a_second_reversal_of_one_kind_while_held_asks_review():
    held = [{"transaction_id": "t0", "transaction_type": "Refund", "effect": "refunded",
             "total": "1000.00"}]
    decision = decide(order(), None, cb("Refund"), "p", held)
    assert decision.verdict == "review" and decision.effect is None and decision.review


@pytest.mark.parametrize("ttype, start", [("decline", "paid"), ("cancel", "pending"),
                                          ("expire", "paid")])
def test_neutral_types_change_nothing(ttype, start):
    decision = decide(order(start), None, cb(ttype), "p")
    assert decision.verdict == "ignored" and decision.status is None


@pytest.mark.parametrize("status, review, outcome, state", [
    ("paid", None, "decline", "paid"), ("pending", None, "success", "waiting"),
    ("pending", None, "decline", "failed"), ("declined", None, "success", "failed"),
    ("refunded", None, "success", "reversed"), ("pending", "x", "success", "review"),
])
def test_result_page_state(status, review, outcome, state):
    assert result_state(order(status, review), outcome) == state


def test_a_third_reversal_after_both_kinds_asks_review_and_debits_nothing():
    # Found by the state machine: chargeback, Refund, Purchase, then a re-cased "refund" of
    # the same id made a second refunded effect, which the schema then refused with a 503.
    held = [{"transaction_id": "t1", "transaction_type": "chargeback", "effect": "chargeback",
             "total": "1000.00"},
            {"transaction_id": "t1", "transaction_type": "Refund", "effect": "refunded",
             "total": "1000.00"}]
    decision = decide(order("chargeback", refunded="1000.00"), None, cb("refund"), "p", held)
    assert decision.verdict == "review" and not decision.event
    assert decision.status in (None, "chargeback") and decision.refunded is None


def test_an_order_id_reads_as_the_utc_date_it_was_made_then_random_hex():
    # NOW is 2025-11-28 03:20 UTC: the id's date is the clock's, not the machine's today.
    assert re.fullmatch(r"20251128-[0-9a-f]{12}", new_order_id(NOW))


def held(*effects):
    return [{"transaction_id": f"t0{n}", "transaction_type": "x", "effect": effect,
             "total": "300.00"} for n, effect in enumerate(effects)]


def resplit(transaction_id):
    """The row of a transaction whose signed text a new callback re-split."""
    return {"transaction_id": transaction_id, "transaction_type": "Purchase", "order_id": "o1"}


LONG_ID = "9" * 70


# What each callback does, as the journal's verdict and reason and the order's change say it.
# (order, prior, callback, held) -> (verdict, reason, effect, status, review, event, record)
@pytest.mark.parametrize("args, expected", [
    ((order("paid"), prior("o1"), cb(), ()),
     ("duplicate", "transaction already recorded", None, None, None, False, False)),
    ((order(), prior("o0"), cb(), ()),
     ("replay", "transaction belongs to order o0", None, None, None, False, False)),
    ((order(), resplit("t0"), cb(), ()),
     ("replay", "signed fields of transaction 't0' re-split", None, None, None, False, False)),
    ((order(), resplit(LONG_ID), cb(), ()),  # a long id is cut at 64 characters
     ("replay", f"signed fields of transaction {LONG_ID[:64]!r} re-split", None, None, None,
      False, False)),
    ((None, None, cb(), ()), ("review", "unknown order", None, None, None, False, False)),
    ((order(), None, cb("cancel"), ()),
     ("ignored", "no effect on an order", None, None, None, False, True)),
    ((order(), None, cb(), ()), ("applied", "pending -> paid", "paid", "paid", None, True, True)),
    ((order(), None, cb("decline"), ()),
     ("applied", "pending -> declined", "declined", "declined", None, False, True)),
    ((order("paid"), None, cb("decline"), ()),
     ("ignored", "decline for a paid order", None, None, None, False, True)),
    ((order("paid"), None, cb(), ()),
     ("review", "paid transaction for a paid order", None, None,
      "paid transaction for a paid order", False, True)),
    ((order("paid"), None, cb("chargeback"), ()),
     ("applied", "paid -> chargeback", "chargeback", "chargeback", None, True, True)),
    # After partial refunds the chargeback takes back what is left, however little.
    ((order("paid", refunded="999.50"), None, cb("chargeback"), ()),
     ("review", f"paid -> chargeback: {BOTH_REVERSALS}", "chargeback", "chargeback",
      BOTH_REVERSALS, True, True)),
    ((order("chargeback"), None, cb("Refund"), ()),
     ("review", f"chargeback -> chargeback: {BOTH_REVERSALS}", "refunded", "chargeback",
      BOTH_REVERSALS, False, True)),
    ((order("paid"), None, cb("Refund", "0.50"), ()),  # a refund under one ruble is a refund
     ("applied", "paid -> paid: refunded 0.50 of 1000.00", "refunded", None, None, True, True)),
    ((order("paid", refunded="300.00"), None, cb("Refund", "700.00"), ()),
     ("applied", "paid -> refunded: refunded 1000.00 of 1000.00", "refunded", "refunded", None,
      True, True)),
    ((order("paid", refunded="300.00"), None, cb("Refund", "800.00"), ()),
     ("review", "refund of 800.00 over the remaining 700.00 of a paid order", None, None,
      "refund of 800.00 over the remaining 700.00 of a paid order", False, True)),
    ((order(), None, cb("Refund", "300.00"), ()),
     ("held", "refunded transaction for a pending order, held for its purchase", "refunded",
      None, None, False, True)),
    ((order(), None, cb("chargeback"), ()),
     ("held", "chargeback transaction for a pending order, held for its purchase", "chargeback",
      None, None, False, True)),
    ((order(), None, cb("chargeback"), held("refunded", "chargeback")),
     ("review", "second chargeback transaction for a pending order", None, None,
      "second chargeback transaction for a pending order", False, True)),
    ((order(), None, cb("Refund", "800.00"), held("refunded")),
     ("review", "refund of 800.00 over the remaining 700.00 of a pending order", None, None,
      "refund of 800.00 over the remaining 700.00 of a pending order", False, True)),
])
def test_each_callback_is_journaled_with_its_verdict_reason_and_change(args, expected):
    decision = decide(*args[:3], "p", args[3])
    assert (decision.verdict, decision.reason, decision.effect, decision.status,
            decision.review, decision.event, bool(decision.record)) == expected


@pytest.mark.parametrize("callback, problems", [
    (cb(product_id="other", currency="USD", total="999.99"),
     "product_id does not match; currency is not RUB; total '999.99' differs from the order's"
     " 1000.00"),
    (Callback("c", "t1", "Purchase", "1000.00", "o1", "p", "RUB", {"order_id": "o1",
                                                                   "cs1": "o2"}),
     "order_id and cs1 name different orders"),
    (cb(currency="usd", total="ten"), "currency is not RUB; total is not an amount"),
    (cb("Refund", "1000.01"), "refund total '1000.01' is not within the order's 1000.00"),
    (cb("Rebill"), "'Rebill': recurring payments are not supported yet"),
    (cb("B" * 50), f"unknown transaction type {'B' * 40!r}"),  # what ChronoPay sent, cut
])
def test_every_mismatch_is_one_reason_in_the_journal_and_the_review(callback, problems):
    decision = decide(order(), None, callback, "p")
    assert (decision.verdict, decision.reason, decision.review) == ("review", problems, problems)


@pytest.mark.parametrize("fields, ids", [
    ({"order_id": "o1", "cs1": "o2", "transaction_id": "t1", "transaction_type": "Refund"},
     ("o1", "t1", "Refund")),
    ({"cs1": "o2", "transaction_id": "t1"}, ("o2", "t1", None)),  # cs1 names it when alone
    ({"order_id": "", "cs1": "", "transaction_id": "", "transaction_type": ""},
     (None, None, None)),
    ({}, (None, None, None)),
])
def test_a_journal_row_carries_the_ids_the_callback_named(fields, ids):
    entry = journal_entry(NOW, "10.0.0.1", "body", "malformed", "why", fields=fields)
    assert (entry["order_id"], entry["transaction_id"], entry["transaction_type"]) == ids
    callback = Callback("c", "t9", "Purchase", "1.00", "o9", "p", "RUB", fields)
    entry = journal_entry(NOW, "10.0.0.1", "body", "applied", "why", callback)
    assert (entry["order_id"], entry["transaction_id"], entry["transaction_type"]) == ids
    assert (entry["received_at"], entry["remote_addr"], entry["verdict"]) == (
        NOW, "10.0.0.1", "applied")


@pytest.mark.parametrize("verdict, level", [
    ("applied", logging.INFO), ("duplicate", logging.INFO), ("ignored", logging.INFO),
    ("held", logging.WARNING),  # settles itself when the purchase comes
    ("review", logging.ERROR), ("replay", logging.ERROR), ("bad_sign", logging.ERROR),
])
def test_one_log_line_per_callback_at_its_level_with_its_ids(caplog, verdict, level):
    fields = {"order_id": "o-" + "z" * 70, "transaction_id": "70001",
              "transaction_type": "Refund"}
    log_verdict(journal_entry(NOW, "203.0.113.7", "body", verdict, "why", fields=fields))
    [record] = [r for r in caplog.records if r.name == "gateway.payments"]
    message = record.getMessage()
    assert record.levelno == level and verdict in message and "why" in message
    # ids a sender controls are cut at 64 characters
    assert f"order {('o-' + 'z' * 70)[:64]!r}," in message
    assert "'70001' 'Refund'" in message and "203.0.113.7" in message
