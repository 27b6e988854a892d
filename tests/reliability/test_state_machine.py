"""Callback sequences as a Hypothesis state machine: the outcome is a function of the set.

ChronoPay re-sends, repeats and reorders its callbacks. Whatever order the distinct
transactions of an order arrive in, with duplicates, unknown types and visits of the return
page anywhere between them, the order's state and the events billing is sent must be those
the set of distinct transactions alone determines. The rules run in-process (Flask's test
client, a recording billing): they, not the transport, are under test here.
"""

import json
from collections import Counter
from urllib.parse import urlsplit

from conftest import callback_fields, hand_off, send_callback
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gateway.chronopay import CHARGEBACK, DECLINE, NEUTRAL, PAID, REFUND
from gateway.http import Reply

TYPES = {
    "purchase": sorted(PAID), "refund": sorted(REFUND), "chargeback": sorted(CHARGEBACK),
    "decline": sorted(DECLINE), "neutral": sorted(NEUTRAL),
    "unknown": ["Rebill", "rebill", "Void"],
}
KIND = {ttype: kind for kind, ttypes in TYPES.items() for ttype in ttypes}


class RecordingBilling:
    """Billing that acknowledges everything and keeps every body it was sent."""

    def __init__(self):
        self.bodies = []

    def post(self, url, *, data=None, headers=None, timeout=None):
        self.bodies.append(json.loads(data))
        return Reply(204, {}, "")


def model(transactions):
    """What the set of distinct transactions (id, type) alone says about the order."""
    kinds = Counter(KIND[ttype] for _, ttype in transactions)
    credited = kinds["purchase"] > 0
    if not credited:
        status = "declined" if kinds["decline"] else "pending"
    elif kinds["chargeback"]:
        status = "chargeback"  # with a refund too: the bank's word is final
    else:
        status = "refunded" if kinds["refund"] else "paid"
    both = credited and kinds["refund"] and kinds["chargeback"]
    return {
        "status": status,
        # two purchases or two reversals of one order, or a type we do not know: a person looks
        "review": bool(kinds["purchase"] > 1 or kinds["refund"] > 1 or kinds["chargeback"] > 1
                       or both or kinds["unknown"] > 0),
        # one credit, and one debit of the whole amount whatever reversals came, never two
        "events": sorted(["credit"] + (["debit"] if kinds["refund"] or kinds["chargeback"]
                                       else [])) if credited else [],
    }


def observed(order, bodies):
    return {
        "status": order["status"],
        "review": order["review"] is not None,
        "events": sorted("credit" if body["type"] == "payment.succeeded" else "debit"
                         for body in bodies),
    }


def machine(app, stats):
    """The state machine class, bound to one app (its database holds every example)."""

    class CallbackSequences(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.client = app.test_client()
            self.store = app.extensions["store"]
            self.deliverer = app.extensions["deliverer"]
            self.deliverer.http = self.billing = RecordingBilling()
            self.query = hand_off(self.client, app)
            self.order_id = self.query["order_id"]
            self.prefix = self.order_id[-6:] + "-"  # transaction ids unique to this example
            self.sent, self.distinct = [], set()
            stats["sequences"] += 1

        def send(self, fields):
            assert send_callback(self.client, fields).status_code == 200
            self.sent.append(fields)
            self.distinct.add((fields["transaction_id"], fields["transaction_type"]))
            stats["callbacks"] += 1

        @rule(kind=st.sampled_from(sorted(TYPES)), data=st.data(),
              number=st.integers(1, 3))
        def callback(self, kind, data, number):
            ttype = data.draw(st.sampled_from(TYPES[kind]))
            self.send(callback_fields(app, self.query, self.prefix + str(number), ttype))
            stats[kind] += 1

        @rule(data=st.data())
        def repeat(self, data):
            if self.sent:
                self.send(dict(data.draw(st.sampled_from(self.sent))))
                stats["repeats"] += 1

        @rule(outcome=st.sampled_from(["success_url", "decline_url"]))
        def visit_return_page(self, outcome):
            before = self.store.read().order(self.order_id)
            path = urlsplit(self.query[outcome]).path
            assert self.client.get(path).status_code == 200
            assert self.store.read().order(self.order_id) == before
            stats["visits"] += 1

        @invariant()
        def outcome_is_a_function_of_the_set(self):
            self.deliverer.drain()
            order = self.store.read().order(self.order_id)
            bodies = [body for body in self.billing.bodies
                      if body["data"]["order_id"] == self.order_id]
            assert observed(order, bodies) == model(self.distinct), (
                sorted(self.distinct), order["status"], order["review"])
            # Each event names a transaction of the set and moves the order's whole amount.
            assert {(b["data"]["transaction_id"], b["data"]["transaction_type"])
                    for b in bodies} <= self.distinct
            assert {b["data"]["amount"] for b in bodies} <= {order["amount"]}

    return CallbackSequences


def test_outcome_depends_only_on_the_set_of_distinct_transactions(app, figures, scale):
    stats = Counter()
    examples = 200 * scale
    failure = None
    try:
        run_state_machine_as_test(machine(app, stats), settings=settings(
            max_examples=examples, stateful_step_count=25, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))
    except AssertionError as exc:
        failure = str(exc).splitlines()[0][:200]
        raise
    finally:
        figures("Hypothesis state machine: callback sequences in any order", stats["sequences"],
                stats["sequences"] if failure is None else 0,
                f"{stats['callbacks']} callbacks ({stats['purchase']} purchase, "
                f"{stats['refund']} refund, {stats['chargeback']} chargeback, "
                f"{stats['unknown']} unknown, {stats['repeats']} repeats), "
                f"{stats['visits']} return-page visits: state and events = f(set) after "
                "every step" if failure is None else f"counterexample: {failure}")
