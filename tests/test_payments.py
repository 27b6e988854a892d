"""The state machine of orders, without a server or a database."""

import pytest

from gateway.chronopay import Callback
from gateway.payments import BOTH_REVERSALS, decide, kind_of, result_state


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
